"""A function tool through livegate with the official openai SDK: the model asks for `get_weather`, this
script runs it and sends the result back, and the model answers with it.

    python examples/tools.py "What's the weather in Paris?"

The tool loop is the one OpenAI documents: declare the function in `session.tools`; when a response
carries a `function_call` item, run the function, add a `function_call_output` item with its `call_id`,
and ask for the next response. Connects to livegate at http://127.0.0.1:4000 (--url, or LIVEGATE_URL) with the key in
LIVEGATE_API_KEY, if any. A refusal is printed as livegate worded it, and the script exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Refused(Exception):
    """livegate answered with an `error` event the conversation cannot go on after."""


def close_reason(closed: ConnectionClosed) -> str:
    """A close as livegate sent it: its code and reason (the reason starts with the error's code)."""
    frame = closed.rcvd or closed.sent
    return f"{frame.reason or 'no reason given'} (close code {frame.code})" if frame else "the connection dropped"


def get_weather(city: str) -> dict[str, Any]:
    """The function the model may call (a real one would ask a weather service)."""
    return {"city": city, "temperature_c": 21, "sky": "clear"}


def websocket_base(url: str) -> str:
    """livegate's address (http://HOST:PORT) as the SDK's websocket_base_url (ws://HOST:PORT/v1)."""
    url = url.rstrip("/")
    url = "ws" + url[4:] if url.startswith("http") else url
    return url if url.endswith("/v1") else url + "/v1"



async def session_created(conn: Any) -> None:
    """Wait for session.created: a refused connection gets an `error` event instead, then closes."""
    event = await conn.recv()
    if event.type == "error":
        raise Refused(f"{event.error.code}: {event.error.message}")


async def ask(url: str, model: str, question: str) -> str:
    """Ask `question`, run every function call the model makes, and return the final answer's text."""
    client = AsyncOpenAI(api_key=os.environ.get("LIVEGATE_API_KEY", "no-key"), websocket_base_url=websocket_base(url))
    async with client.realtime.connect(model=model) as conn:
        await session_created(conn)
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": [WEATHER_TOOL], "tool_choice": "auto"})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]})
        await conn.response.create()
        async for event in conn:
            if event.type == "error":
                raise Refused(f"{event.error.code}: {event.error.message}")
            if event.type != "response.done":
                continue
            calls = [item for item in event.response.output or [] if item.type == "function_call"]
            if not calls:  # no (more) tool calls: this response is the answer
                return "".join(part.text or "" for item in event.response.output or [] if item.type == "message"
                               for part in item.content or [])
            for call in calls:
                arguments = json.loads(call.arguments or "{}")
                result = get_weather(**arguments) if call.name == "get_weather" else {"error": "unknown tool"}
                print(f"[the model called {call.name}({json.dumps(arguments)}) -> {json.dumps(result)}]")
                await conn.conversation.item.create(item={
                    "type": "function_call_output", "call_id": call.call_id, "output": json.dumps(result)})
            await conn.response.create()
    raise Refused("the session closed before the answer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What's the weather in Paris?")
    parser.add_argument("--url", default=os.environ.get("LIVEGATE_URL", "http://127.0.0.1:4000"),
                        help="livegate's address (default: $LIVEGATE_URL, else http://127.0.0.1:4000)")
    parser.add_argument("--model", default="gpt-realtime")
    args = parser.parse_args()
    try:
        print(asyncio.run(ask(args.url, args.model, args.question)))
    except Refused as refusal:
        print(f"livegate refused: {refusal}", file=sys.stderr)
        return 1
    except ConnectionClosed as closed:  # closed before an error event could be read (a refusal, a restart)
        print(f"livegate closed the session: {close_reason(closed)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach livegate at {args.url} ({exc.strerror or exc}): is it running?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

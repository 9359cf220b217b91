"""Text chat through livegate with the official openai SDK: type a line, read the answer as it streams.

    python examples/chat.py "Hello there"            # one question
    python examples/chat.py                          # a conversation: type lines, Ctrl-D to quit
    python examples/chat.py --beta "Hello"           # the older beta dialect (OpenAI-Beta: realtime=v1)

It connects to livegate at http://127.0.0.1:4000 (--url, or LIVEGATE_URL) with the key in LIVEGATE_API_KEY,
if any (a livegate with no master key takes any). After each answer it prints what the turn cost in tokens,
as Gemini counted them. A refusal (a wrong key, an unknown model, a spent budget) is printed as livegate worded
it, and the script exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed


class Refused(Exception):
    """livegate answered with an `error` event the conversation cannot go on after."""


def close_reason(closed: ConnectionClosed) -> str:
    """A close as livegate sent it: its code and reason (the reason starts with the error's code)."""
    frame = closed.rcvd or closed.sent
    return f"{frame.reason or 'no reason given'} (close code {frame.code})" if frame else "the connection dropped"


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


async def chat(url: str, model: str, beta: bool, prompts: list[str] | None, max_output_tokens: int | None) -> None:
    client = AsyncOpenAI(api_key=os.environ.get("LIVEGATE_API_KEY", "no-key"), websocket_base_url=websocket_base(url))
    realtime = client.beta.realtime if beta else client.realtime
    async with realtime.connect(model=model) as conn:
        await session_created(conn)
        if beta and max_output_tokens is not None:
            await conn.session.update(session={"modalities": ["text"], "max_response_output_tokens": max_output_tokens})
        elif beta:
            await conn.session.update(session={"modalities": ["text"]})
        elif max_output_tokens is not None:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                               "max_output_tokens": max_output_tokens})
        else:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        lines = iter(prompts) if prompts else (line.strip() for line in sys.stdin)
        for line in lines:
            if not line:
                continue
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": line}]})
            await conn.response.create()
            async for event in conn:
                if event.type in ("response.output_text.delta", "response.text.delta"):
                    print(event.delta, end="", flush=True)
                elif event.type == "error":
                    raise Refused(f"{event.error.code}: {event.error.message}")
                elif event.type == "response.done":
                    usage = event.response.usage
                    print(f"\n[{usage.input_tokens} tokens in, {usage.output_tokens} out]" if usage else "")
                    break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="*", help="what to say (default: read lines from stdin)")
    parser.add_argument("--url", default=os.environ.get("LIVEGATE_URL", "http://127.0.0.1:4000"),
                        help="livegate's address (default: $LIVEGATE_URL, else http://127.0.0.1:4000)")
    parser.add_argument("--model", default="gpt-realtime")
    parser.add_argument("--beta", action="store_true", help="use the beta dialect")
    parser.add_argument("--max-output-tokens", type=int, help="cap each answer (a key with a budget reserves "
                        "this much per answer; default: no cap of the session's own)")
    args = parser.parse_args()
    try:
        asyncio.run(chat(args.url, args.model, args.beta, [" ".join(args.prompt)] if args.prompt else None,
                         args.max_output_tokens))
    except Refused as refusal:
        print(f"\nlivegate refused: {refusal}", file=sys.stderr)
        return 1
    except ConnectionClosed as closed:  # closed before an error event could be read (a refusal, a restart)
        print(f"\nlivegate closed the session: {close_reason(closed)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach livegate at {args.url} ({exc.strerror or exc}): is it running?", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

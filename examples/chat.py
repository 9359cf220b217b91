"""Talk to livegate with the official openai SDK (text in, streamed text out).

    python examples/chat.py "Hello there"            # one question
    python examples/chat.py                          # a conversation: type lines, Ctrl-D to quit
    python examples/chat.py --beta "Hello"           # the older beta dialect (OpenAI-Beta: realtime=v1)

It connects to ws://127.0.0.1:4000/v1 (override with --url) using the key in LIVEGATE_API_KEY, if any.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from openai import AsyncOpenAI


async def chat(url: str, model: str, beta: bool, prompts: list[str] | None) -> None:
    client = AsyncOpenAI(api_key=os.environ.get("LIVEGATE_API_KEY", "no-key"), websocket_base_url=url)
    realtime = client.beta.realtime if beta else client.realtime
    async with realtime.connect(model=model) as conn:
        if beta:
            await conn.session.update(session={"modalities": ["text"]})
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
                    print(f"\n[error] {event.error.message}", file=sys.stderr)
                elif event.type == "response.done":
                    usage = event.response.usage
                    print(f"\n[{usage.input_tokens} tokens in, {usage.output_tokens} out]" if usage else "")
                    break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="*", help="what to say (default: read lines from stdin)")
    parser.add_argument("--url", default="ws://127.0.0.1:4000/v1")
    parser.add_argument("--model", default="gpt-realtime")
    parser.add_argument("--beta", action="store_true", help="use the beta dialect")
    args = parser.parse_args()
    asyncio.run(chat(args.url, args.model, args.beta, [" ".join(args.prompt)] if args.prompt else None))


if __name__ == "__main__":
    main()

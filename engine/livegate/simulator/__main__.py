"""Run the Gemini Live simulator standalone: ``python -m livegate.simulator --host 127.0.0.1 --port 9000``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl

from .server import GeminiLiveSimulator


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m livegate.simulator",
        description="livegate's deterministic Gemini Live simulator (not a model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between streamed frames")
    placements = ["with_turn_complete", "after_turn_complete"]
    parser.add_argument("--usage-placement", choices=placements, default=placements[0])
    parser.add_argument("--api-key", default=None, help="require this key (x-goog-api-key or Bearer)")
    parser.add_argument("--certfile", default=None, help="serve wss:// with this PEM certificate")
    parser.add_argument("--keyfile", default=None, help="private key for --certfile")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    context = None
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
    sim = GeminiLiveSimulator(
        chunk_delay=args.chunk_delay, usage_placement=args.usage_placement, api_key=args.api_key, ssl=context
    )
    await sim.start(args.host, args.port)
    print(f"livegate Gemini Live simulator (not a model) listening on {sim.url}", flush=True)
    try:
        await asyncio.Future()  # until Ctrl-C
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()

"""The `livegate` command.

    livegate [--config FILE] [--host HOST] [--port PORT]   run the gateway (no config: the simulator)
    livegate lint [--config FILE] [--mappings DIR]          check mappings/ and the config; exit 1 on error
    livegate simulator [--host HOST] [--port PORT]          run only the local Gemini Live simulator
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from livegate import __version__


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    import uvicorn

    from livegate.config import ConfigError, default_store_path, load_config
    from livegate.mapping import MappingError, load_mappings
    from livegate.server import create_app

    try:
        config = load_config(args.config)
        mappings = load_mappings(args.mappings)
    except (ConfigError, MappingError) as exc:
        print(f"livegate: {exc}", file=sys.stderr)
        return 1
    if not config.store.database_url and not config.store.path:  # the embedded store, created on first start
        config = dataclasses.replace(config, store=dataclasses.replace(config.store, path=default_store_path()))
    app = create_app(config, mappings)
    if args.config is None:
        print(f"livegate {__version__}: no --config given, serving every model from the local Gemini Live "
              f"simulator.\nConnect an OpenAI Realtime client to ws://{args.host}:{args.port}/v1/realtime",
              file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws_max_size=
                config.max_client_frame_bytes + 1024 * 1024, ws="websockets-sansio")
    return 0


def _lint(args: argparse.Namespace) -> int:
    from livegate.config import ConfigError, load_config
    from livegate.mapping import MappingError, load_mappings

    problems = 0
    try:
        mappings = load_mappings(args.mappings)
        print(f"mappings: {len(mappings.files)} files OK")
    except MappingError as exc:
        print(f"mappings: {exc}", file=sys.stderr)
        problems += 1
    try:
        from livegate.accounting.prices import PriceTable

        prices = PriceTable.load(Path(args.mappings) / "prices.yaml" if args.mappings else None)
        print(f"prices: {len(prices.rows)} rows OK")
    except (OSError, ValueError, TypeError) as exc:
        print(f"prices: {exc}", file=sys.stderr)
        problems += 1
    if args.config:
        try:
            config = load_config(args.config)
            print(f"config: {args.config} OK ({len(config.routes)} models)")
        except ConfigError as exc:
            print(f"config: {exc}", file=sys.stderr)
            problems += 1
    return 1 if problems else 0


def _simulator(args: argparse.Namespace) -> int:
    from livegate.simulator.__main__ import main as simulator_main

    return simulator_main(["--host", args.host, "--port", str(args.port)]) or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("serve", "lint", "simulator") else "serve"
    parser = argparse.ArgumentParser(prog=f"livegate {command}" if command != "serve" else "livegate")
    parser.add_argument("--version", action="version", version=f"livegate {__version__}")
    parser.add_argument("--config", help="config file (YAML); LiteLLM proxy configs work as they are")
    parser.add_argument("--mappings", help="mappings folder (default: the one shipped with livegate)")
    if command in ("serve", "simulator"):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=4000 if command == "serve" else 9000)
        parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return {"serve": _serve, "lint": _lint, "simulator": _simulator}[command](args)


if __name__ == "__main__":
    sys.exit(main())

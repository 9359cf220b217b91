"""The `livegate` command.

    livegate [serve] [--config FILE] [--host HOST] [--port PORT] [--workers N]
                     [--ssl-certfile CERT --ssl-keyfile KEY]  run the gateway (no config: the simulator)
    livegate lint [--config FILE] [--mappings DIR]          check mappings/ and the config; exit 1 on error
    livegate simulator [--host HOST] [--port PORT]          run only the local Gemini Live simulator
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livegate import __version__

if TYPE_CHECKING:
    from livegate.config import Config

# `--workers N` runs N uvicorn processes; each builds its app from these (uvicorn needs an import string).
CONFIG_ENV = "LIVEGATE_CONFIG"
MAPPINGS_ENV = "LIVEGATE_MAPPINGS"
LOG_LEVEL_ENV = "LIVEGATE_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def app_from_environment() -> Any:
    """The app factory of a worker process: the config and mappings named by the environment."""
    logging.basicConfig(level=os.environ.get(LOG_LEVEL_ENV, "INFO").upper(), format=LOG_FORMAT)
    from livegate.config import load_config
    from livegate.mapping import load_mappings
    from livegate.server import create_app

    app = create_app(with_default_store(load_config(os.environ.get(CONFIG_ENV) or None)),
                     load_mappings(os.environ.get(MAPPINGS_ENV) or None))
    _freeze_startup_objects()
    return app


def with_default_store(config: Config) -> Config:
    """The command's config: with no store configured, the embedded SQLite file (created on first start)."""
    import dataclasses

    from livegate.config import default_store_path

    if config.store.database_url or config.store.path:
        return config
    return dataclasses.replace(config, store=dataclasses.replace(config.store, path=default_store_path()))


def _freeze_startup_objects() -> None:
    """Keep what startup built (FastAPI, pydantic, compiled mappings: ~80k objects) out of garbage collection.

    A full collection walks every tracked object: 30-70 ms here, a stall every session feels in its
    audio. Frozen, the objects are never scanned again; what sessions allocate is collected as usual.
    """
    gc.collect()
    gc.freeze()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from livegate.config import ConfigError, load_config
    from livegate.mapping import MappingError, load_mappings
    from livegate.server.serving import uvicorn_options

    try:
        config = load_config(args.config)
        mappings = load_mappings(args.mappings)
    except (ConfigError, MappingError) as exc:
        print(f"livegate: {exc}", file=sys.stderr)
        return 1
    config = with_default_store(config)
    if args.config is None:
        print(f"livegate {__version__}: no --config given, serving every model from the local Gemini Live "
              f"simulator.\nConnect an OpenAI Realtime client to ws://{args.host}:{args.port}/v1/realtime",
              file=sys.stderr)
    transport = {**uvicorn_options(config), "loop": args.loop}
    if args.ws:
        transport["ws"] = args.ws
    if args.ssl_certfile or args.ssl_keyfile:  # wss:// for SDKs that turn a base_url into wss (README: TLS)
        if not (args.ssl_certfile and args.ssl_keyfile):
            print("livegate: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
            return 1
        transport.update(ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    if args.workers > 1:  # each worker process loads the config itself: checked above, so it loads
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve()) if args.config else ""
        os.environ[MAPPINGS_ENV] = str(Path(args.mappings).resolve()) if args.mappings else ""
        os.environ[LOG_LEVEL_ENV] = args.log_level
        uvicorn.run("livegate.cli:app_from_environment", factory=True, workers=args.workers, host=args.host,
                    port=args.port, log_level=args.log_level, **transport)
        return 0
    from livegate.server import create_app

    app = create_app(config, mappings)
    _freeze_startup_objects()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **transport)
    return 0


def _lint(args: argparse.Namespace) -> int:
    from livegate.config import ConfigError, load_config
    from livegate.mapping import MappingError, load_mappings

    problems = 0
    try:
        mappings = load_mappings(args.mappings)
        count = len(mappings.warnings)
        noted = f", {count} warning{'s' if count > 1 else ''}" if count else ""
        print(f"mappings: {len(mappings.files)} files OK{noted}")
        for warning in mappings.warnings:  # they read badly, but load: not a failure
            print(warning, file=sys.stderr)
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

    simulator_main(["--host", args.host, "--port", str(args.port)])
    return 0


SUBCOMMANDS = {
    "serve": "run the gateway (the default; no --config: every model from the local simulator)",
    "lint": "check mappings/, prices and the config; exit 1 on any error",
    "simulator": "run only the local Gemini Live simulator (a stand-in for offline use and tests)",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "serve"
    commands = "\n".join(f"  {name:<10} {what}" for name, what in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=f"livegate {command}" if command != "serve" else "livegate",
        usage=None if command != "serve" else "livegate [serve|lint|simulator] [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"subcommands (`livegate SUBCOMMAND --help` for each):\n{commands}" if command == "serve" else
        SUBCOMMANDS[command])
    parser.add_argument("--version", action="version", version=f"livegate {__version__}")
    parser.add_argument("--config", help="config file (YAML); LiteLLM proxy configs work as they are")
    parser.add_argument("--mappings", help="mappings folder (default: the one shipped with livegate)")
    if command in ("serve", "simulator"):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=4000 if command == "serve" else 9000)
        parser.add_argument("--log-level", default="info")
    if command == "serve":
        parser.add_argument("--workers", type=int, default=1,
                            help="worker processes serving sessions (default 1; about one per core)")
        parser.add_argument("--ssl-certfile", help="serve wss:// and https:// with this certificate (PEM)")
        parser.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
        parser.add_argument("--ws", default=None, help=argparse.SUPPRESS,  # uvicorn's own, for benchmarks
                            choices=["websockets", "websockets-sansio", "wsproto"])
        # uvloop when installed (the `uvloop` extra), else asyncio's own loop; forced either way for benchmarks
        parser.add_argument("--loop", default="auto", help=argparse.SUPPRESS, choices=["auto", "asyncio", "uvloop"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format=LOG_FORMAT)
    return {"serve": _serve, "lint": _lint, "simulator": _simulator}[command](args)


if __name__ == "__main__":
    sys.exit(main())

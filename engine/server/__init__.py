"""The FastAPI front door."""

from engine.server.app import create_app

__all__ = ["create_app"]

"""The FastAPI front door."""

from livegate.server.app import create_app

__all__ = ["create_app"]

"""The provider interface: a route from the config becomes a connectable upstream target.

A provider knows its backend's URL, auth headers and `setup.model` spelling; everything about the
translation is in mappings/ (backend differences sit in `mappings/tables.yaml` under `backends`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from livegate.config import Config, ModelRoute


@dataclass(frozen=True)
class UpstreamTarget:
    """Everything needed to open one upstream WebSocket. `headers` carry secrets: never log them."""

    url: str
    headers: dict[str, str] = field(repr=False)
    setup_model: str
    backend: str  # "aistudio" or "vertex": selects the row of the backend table in mappings/tables.yaml


class Provider(Protocol):
    backend: str

    def setup_model(self) -> str:
        """The `setup.model` Gemini expects for this route (`models/...` or a Vertex resource path)."""
        ...

    async def target(self) -> UpstreamTarget:
        """Resolve URL, fresh credentials and the setup model name for a new connection."""
        ...

    def generate_url(self, model: str) -> str:
        """The streamGenerateContent (SSE) URL of `model` on this backend: out-of-band responses."""
        ...


def http_base(api_base: str) -> str:
    """An `api_base` as an HTTP origin: ws(s) becomes http(s), a trailing slash is dropped."""
    base = api_base.rstrip("/")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if base.startswith(ws):
            return http + base[len(ws):]
    return base


def ws_base(api_base: str) -> str:
    """An `api_base` as a WebSocket origin: http(s) becomes ws(s), a trailing slash is dropped."""
    base = api_base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def provider_for(route: ModelRoute, config: Config, simulator_url: str | None = None) -> Provider:
    """The provider serving `route`. `simulator_url` is the in-process simulator, when one runs."""
    from livegate.upstream.aistudio import AIStudioProvider

    if route.provider == "gemini":
        return AIStudioProvider(route.model_id, api_key=route.api_key or "", api_base=route.api_base,
                                api_version=route.api_version)
    if route.provider == "simulator":
        base = route.api_base or simulator_url
        if base is None:
            raise RuntimeError("the simulator provider needs a running simulator or an api_base")
        return AIStudioProvider(route.model_id, api_key=route.api_key or "simulator", api_base=base,
                                api_version=route.api_version)
    if route.provider == "vertex_ai":
        from livegate.upstream.vertex import VertexProvider

        return VertexProvider.from_route(route, config)
    raise ValueError(f"unknown provider {route.provider!r}")

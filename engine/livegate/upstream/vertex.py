"""Vertex AI: OAuth bearer from google-auth, a regional host, model `projects/P/locations/L/publishers/google/models/M`.

The helpers here (hosts, URLs, resource names, validation of project and location) are shared with the
native passthrough routes in `engine/livegate/server/passthrough/`.
"""

from __future__ import annotations

import re

from livegate.config import Config, ConfigError, ModelRoute
from livegate.upstream import google_credentials
from livegate.upstream.base import UpstreamTarget, http_base, ws_base

VERTEX_VERSION = "v1"  # what the public docs and raw clients use (the genai SDK defaults to v1beta1)
DEFAULT_LOCATION = "us-central1"  # LiteLLM's default too
LIVE_PATH = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"

# Location and project end up in a host name and a path next to our credentials, so anything a client
# sends is checked against what Google accepts (a location like "evil.example/x#" must never build a URL).
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,62}")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,127}", re.IGNORECASE)  # includes legacy `domain.com:project`
_VERSION = re.compile(r"v[0-9][a-z0-9]{0,15}")
_MULTI_REGIONS = frozenset({"us", "eu"})  # served from aiplatform.{loc}.rep.googleapis.com


def valid_location(location: str) -> bool:
    return _LOCATION.fullmatch(location) is not None


def valid_project(project: str) -> bool:
    return _PROJECT.fullmatch(project) is not None


def valid_version(version: str) -> bool:
    return _VERSION.fullmatch(version) is not None


def vertex_host(location: str) -> str:
    """The Vertex AI host for a location: `global` has no regional prefix, `us`/`eu` are multi-region."""
    if not valid_location(location):
        raise ValueError(f"invalid Vertex AI location {location!r}")
    if location == "global":
        return "aiplatform.googleapis.com"
    if location in _MULTI_REGIONS:
        return f"aiplatform.{location}.rep.googleapis.com"
    return f"{location}-aiplatform.googleapis.com"


def live_url(location: str, version: str = VERTEX_VERSION, api_base: str | None = None) -> str:
    """The BidiGenerateContent WebSocket URL; `api_base` replaces the scheme and host (as for AI Studio)."""
    origin = ws_base(api_base) if api_base else f"wss://{vertex_host(location)}"
    return origin + LIVE_PATH.format(version=version)


def short_model_id(model: str) -> str:
    """`gemini-x` from any spelling: `gemini-x`, `models/gemini-x`, `publishers/google/models/gemini-x`,
    `projects/P/locations/L/publishers/google/models/gemini-x`."""
    return model.rsplit("models/", 1)[-1] if "models/" in model else model


def model_resource(project: str, location: str, model: str) -> str:
    """The Vertex `setup.model`: a full resource path is kept, anything shorter is completed."""
    if model.startswith("projects/"):
        return model
    if model.startswith("publishers/"):
        return f"projects/{project}/locations/{location}/{model}"
    return f"projects/{project}/locations/{location}/publishers/google/models/{short_model_id(model)}"


_RESOURCE = re.compile(r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/")


def resource_scope(model: str) -> tuple[str | None, str | None]:
    """(project, location) named by a full resource path, else (None, None)."""
    match = _RESOURCE.match(model)
    return (match["project"], match["location"]) if match else (None, None)


class VertexProvider:
    backend = "vertex"

    def __init__(self, model_id: str, *, project: str, location: str = DEFAULT_LOCATION,
                 credentials: str | None = None, api_base: str | None = None,
                 api_version: str | None = None) -> None:
        if not valid_project(project):
            raise ConfigError(f"invalid Vertex AI project id {project!r}")
        if not valid_location(location):
            raise ConfigError(f"invalid Vertex AI location {location!r}")
        self.model_id = model_id
        self.project = project
        self.location = location
        self._credentials = credentials  # a path, inline JSON (a private key!) or None for ADC: never printed
        self._api_base = api_base
        self._version = api_version or VERTEX_VERSION

    @classmethod
    def from_route(cls, route: ModelRoute, config: Config) -> VertexProvider:
        """Route settings first, then the process-wide defaults (`default_vertex_config`, env vars)."""
        project = route.vertex_project or config.vertex.project
        if not project:
            raise ConfigError(f"model {route.model_name!r} (vertex_ai/{route.model_id}): no Vertex AI project "
                              "(set `vertex_project` or `default_vertex_config.vertex_project`)")
        return cls(route.model_id, project=project,
                   location=route.vertex_location or config.vertex.location or DEFAULT_LOCATION,
                   credentials=route.vertex_credentials or config.vertex.credentials,
                   api_base=route.api_base or config.vertex.api_base, api_version=route.api_version)

    @property
    def url(self) -> str:
        return live_url(self.location, self._version, self._api_base)

    def setup_model(self) -> str:
        return model_resource(self.project, self.location, self.model_id)

    def generate_url(self, model: str) -> str:
        origin = http_base(self._api_base) if self._api_base else f"https://{vertex_host(self.location)}"
        resource = model_resource(self.project, self.location, model)
        return f"{origin}/{self._version}/{resource}:streamGenerateContent?alt=sse"

    async def target(self) -> UpstreamTarget:
        """Raises google_credentials.CredentialsError when no token can be had (its message is secret-free)."""
        token = await google_credentials.bearer_token(self._credentials)
        return UpstreamTarget(self.url, token.headers(), self.setup_model(), self.backend)

    def __repr__(self) -> str:
        return f"VertexProvider({self.setup_model()!r})"

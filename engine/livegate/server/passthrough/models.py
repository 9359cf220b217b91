"""Which configured model a passthrough client may reach, and which Vertex AI scope serves it.

The config's model list is the allow-list: a client names a model by its `model_name` or by the
upstream model id of an entry (in any spelling: `gemini-x`, `models/gemini-x`,
`publishers/google/models/gemini-x`, a full resource path). Exact names win over upstream ids,
which win over wildcard names, so a catch-all `*` entry does not shadow a specific one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from livegate.config import Config, ModelRoute
from livegate.upstream.vertex import DEFAULT_LOCATION, short_model_id


@dataclass(frozen=True)
class ModelMatch:
    route: ModelRoute
    upstream_id: str  # the model id Google gets: the entry's when matched by name, else the client's


def match_model(config: Config, model: str) -> ModelMatch | None:
    short = short_model_id(model)
    names = dict.fromkeys((model, short))
    for route in config.routes:
        if route.model_name in names:
            return ModelMatch(route, short_model_id(route.model_id))
    for route in config.routes:
        if short_model_id(route.model_id) == short:
            return ModelMatch(route, short)
    for name in names:
        wildcard = config.route(name)  # wildcard names
        if wildcard is not None:
            return ModelMatch(wildcard, short_model_id(wildcard.model_id))
    return None


@dataclass(frozen=True)
class VertexScope:
    """Project, location, credentials and host override for one Vertex AI call."""

    project: str | None
    location: str
    credentials: str | None = field(repr=False)  # a path, inline JSON or None (ADC)
    api_base: str | None
    api_version: str | None


def vertex_scope(config: Config, route: ModelRoute | None, *, project: str | None = None,
                 location: str | None = None) -> VertexScope:
    """Explicit `project`/`location` (from the client) first, then a vertex_ai entry's own settings,
    then the process-wide defaults. Entries of other providers only contribute the model id."""
    own = route if route is not None and route.provider == "vertex_ai" else None
    defaults = config.vertex
    return VertexScope(
        project=project or (own and own.vertex_project) or defaults.project,
        location=location or (own and own.vertex_location) or defaults.location or DEFAULT_LOCATION,
        credentials=(own and own.vertex_credentials) or defaults.credentials,
        api_base=(own and own.api_base) or defaults.api_base,
        api_version=own.api_version if own else None,
    )

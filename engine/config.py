"""The livegate config file.

A config written for LiteLLM's proxy works unchanged for the fields livegate shares with it:

    model_list:
      - model_name: gpt-realtime                 # what clients ask for (?model=...)
        litellm_params:                          # alias of livegate's own `livegate_params`
          model: gemini/gemini-2.5-flash-native-audio-preview-09-2025
          api_key: os.environ/GEMINI_API_KEY
          api_base: https://private-endpoint     # optional
    general_settings:
      master_key: os.environ/LIVEGATE_MASTER_KEY
    litellm_settings:
      default_vertex_config: {vertex_project: ..., vertex_location: ..., vertex_credentials: ...}

Values written `os.environ/NAME` are read from the environment when the file is loaded.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROVIDERS = ("gemini", "vertex_ai", "simulator")
ENV_PREFIX = "os.environ/"


class ConfigError(ValueError):
    """A config problem, phrased for the person who wrote the file."""


@dataclass(frozen=True)
class ModelRoute:
    """One `model_list` entry: a client-facing model name and the upstream that serves it."""

    model_name: str
    provider: str  # one of PROVIDERS
    model_id: str  # upstream model id, without the provider prefix
    api_key: str | None = None
    api_base: str | None = None
    api_version: str | None = None
    vertex_project: str | None = None
    vertex_location: str | None = None
    vertex_credentials: str | None = None
    # Capability columns overriding the model's row of mappings/models.yaml (the entry's `model_info`).
    model_info: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def __repr__(self) -> str:  # never print secrets
        return f"ModelRoute({self.model_name!r} -> {self.provider}/{self.model_id})"


@dataclass(frozen=True)
class VertexDefaults:
    project: str | None = None
    location: str | None = None
    credentials: str | None = field(default=None, repr=False)  # may be inline JSON holding a private key
    api_base: str | None = None  # livegate extension: replaces the Vertex AI host (private endpoints, tests)
    discovery_api_base: str | None = None  # the same for discoveryengine.googleapis.com (REST passthrough)


@dataclass(frozen=True)
class Config:
    routes: tuple[ModelRoute, ...] = ()
    master_key: str | None = None
    vertex: VertexDefaults = field(default_factory=VertexDefaults)
    max_client_frame_bytes: int = 15 * 1024 * 1024
    reattach_grace_s: float = 30.0  # how long a session waits for a dropped client to reattach
    source: str = "<built-in>"

    def route(self, model: str | None) -> ModelRoute | None:
        """The route serving `model`: an exact `model_name` first, then wildcard names (`*`, `gemini-*`)."""
        if not model:
            return None
        for route in self.routes:
            if route.model_name == model:
                return route
        for route in self.routes:
            if any(ch in route.model_name for ch in "*?[") and fnmatch.fnmatchcase(model, route.model_name):
                return route
        return None

    def __repr__(self) -> str:
        return f"Config({self.source}, {len(self.routes)} routes, master_key={'set' if self.master_key else 'none'})"


DEFAULT_CONFIG_TEXT = """\
# Built-in config: every model name is served by the local Gemini Live simulator, no key required.
model_list:
  - model_name: "*"
    livegate_params:
      model: simulator/livegate-simulator
"""


def _env(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]
    return value


def _opt_str(block: dict[str, Any], key: str, where: str) -> str | None:
    value = _env(block.get(key), f"{where}.{key}")
    if value is None:
        return None
    if isinstance(value, dict):  # vertex_credentials may be given inline as a JSON object
        return json.dumps(value)
    if not isinstance(value, str | int | float):
        raise ConfigError(f"{where}.{key}: expected a string")
    return str(value)


def _route(entry: Any, index: int) -> ModelRoute:
    where = f"model_list[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
        raise ConfigError(f"{where}: each entry needs a string `model_name`")
    params = entry.get("livegate_params", entry.get("litellm_params"))
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: needs `livegate_params` (or `litellm_params`) with a `model`")
    where = f"{where}.{'livegate_params' if 'livegate_params' in entry else 'litellm_params'}"
    model = params.get("model")
    if not isinstance(model, str) or "/" not in model:
        raise ConfigError(f"{where}.model: expected `<provider>/<model id>`, provider one of {PROVIDERS}")
    provider, model_id = model.split("/", 1)
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}.model: unknown provider {provider!r}; expected one of {PROVIDERS}")
    route = ModelRoute(
        model_name=entry["model_name"],
        provider=provider,
        model_id=model_id,
        api_key=_opt_str(params, "api_key", where),
        api_base=_opt_str(params, "api_base", where),
        api_version=_opt_str(params, "api_version", where),
        vertex_project=_opt_str(params, "vertex_project", where),
        vertex_location=_opt_str(params, "vertex_location", where),
        vertex_credentials=_opt_str(params, "vertex_credentials", where),
    )
    from livegate.models import check_overrides

    problem = check_overrides(entry.get("model_info"), f"model_list[{index}].model_info")
    if problem is not None:
        raise ConfigError(problem)
    if entry.get("model_info") is not None:
        route = dataclasses.replace(route, model_info=dict(entry["model_info"]))
    if provider == "gemini" and not route.api_key:
        raise ConfigError(f"{where}.api_key: required for provider gemini (Google AI Studio)")
    return route


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Build a Config from parsed YAML, raising ConfigError with the offending field's path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping")
    models = data.get("model_list") or []
    if not isinstance(models, list):
        raise ConfigError("model_list: expected a list")
    general = data.get("general_settings") or {}
    vertex_block = (data.get("litellm_settings") or {}).get("default_vertex_config") or {}
    vertex_block = {**vertex_block, **((data.get("livegate_settings") or {}).get("default_vertex_config") or {})}
    settings = data.get("livegate_settings") or {}
    where = "default_vertex_config"
    vertex = VertexDefaults(
        project=_opt_str(vertex_block, "vertex_project", where) or os.environ.get("DEFAULT_VERTEXAI_PROJECT"),
        location=_opt_str(vertex_block, "vertex_location", where)
        or os.environ.get("DEFAULT_VERTEXAI_LOCATION"),
        credentials=_opt_str(vertex_block, "vertex_credentials", where)
        or os.environ.get("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS")
        or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"),
        api_base=_opt_str(vertex_block, "api_base", where),
        discovery_api_base=_opt_str(vertex_block, "discovery_api_base", where),
    )
    max_frame = settings.get("max_client_frame_bytes", Config.max_client_frame_bytes)
    if not isinstance(max_frame, int) or max_frame <= 0:
        raise ConfigError("livegate_settings.max_client_frame_bytes: expected a positive integer")
    grace = settings.get("reattach_grace_s", Config.reattach_grace_s)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
        raise ConfigError("livegate_settings.reattach_grace_s: expected a number of seconds >= 0")
    routes = tuple(_route(entry, i) for i, entry in enumerate(models))
    for i, route in enumerate(routes):  # fail at load, not in every session
        if route.provider == "vertex_ai" and not (route.vertex_project or vertex.project):
            raise ConfigError(f"model_list[{i}] ({route.model_name!r}): vertex_ai needs a project: set "
                              "`vertex_project`, `litellm_settings.default_vertex_config.vertex_project` "
                              "or DEFAULT_VERTEXAI_PROJECT")
    return Config(
        routes=routes,
        master_key=_opt_str(general, "master_key", "general_settings"),
        vertex=vertex,
        max_client_frame_bytes=max_frame,
        reattach_grace_s=float(grace),
        source=source,
    )


def load_config(path: str | Path | None) -> Config:
    """Load a config file, or the built-in simulator config when `path` is None."""
    if path is None:
        return parse_config(yaml.safe_load(DEFAULT_CONFIG_TEXT), "<built-in simulator config>")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    return parse_config(data, str(path))

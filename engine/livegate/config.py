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

import difflib
import fnmatch
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from livegate.webrtc.settings import KEYS as WEBRTC_KEYS
from livegate.webrtc.settings import SettingsError, WebRTCSettings, parse_settings

PROVIDERS = ("gemini", "vertex_ai", "simulator")
ENV_PREFIX = "os.environ/"
log = logging.getLogger("livegate.config")

# The keys livegate reads, per block. An unknown key is an error naming the closest known one
# (`general_setings` must not silently give an open gateway). LiteLLM's own settings in its blocks are
# accepted and ignored with a warning (a LiteLLM config works unchanged), unless they look like a typo
# of a livegate key.
TOP_LEVEL_KEYS = ("model_list", "general_settings", "litellm_settings", "livegate_settings")
LITELLM_TOP_LEVEL = ("router_settings", "environment_variables", "callback_settings", "guardrails",
                     "credential_list", "mcp_servers", "vector_store_registry", "include", "files_settings",
                     "assistant_settings", "finetune_settings", "search_tools", "prompts")
GENERAL_KEYS = ("master_key", "database_url", "litellm_compat")
LITELLM_SETTINGS_KEYS = ("default_vertex_config",)
MODEL_ENTRY_KEYS = ("model_name", "litellm_params", "livegate_params", "model_info", "gemini_features")
PARAMS_KEYS = ("model", "api_key", "api_base", "api_version", "vertex_project", "vertex_location",
               "vertex_credentials", "max_session_seconds", "litellm_compat")
VERTEX_KEYS = ("vertex_project", "vertex_location", "vertex_credentials", "api_base", "discovery_api_base")
LIVEGATE_KEYS = ("max_client_frame_bytes", "client_compression", "reattach_grace_s", "store_path",
                 "key_check_seconds", "spend_buffer_rows", "default_vertex_config", "client_write_timeout_s",
                 "upstream_setup_timeout_s", "upstream_stall_timeout_s", "http_header_timeout_s",
                 "http_body_timeout_s", "max_request_body_bytes", *WEBRTC_KEYS)


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
    # The entry's `model_info`: LiteLLM's price overrides (accounting) and capability columns overriding the
    # model's row of mappings/models.yaml; and an optional cap on session length.
    model_info: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    max_session_seconds: float | None = None
    litellm_compat: bool | None = None  # None: general_settings.litellm_compat decides
    # The entry's `gemini_features`: defaults of Gemini's own features for its sessions (README "Gemini's own
    # features"), checked against the model's capabilities at load.
    gemini_features: dict[str, Any] | None = field(default=None, compare=False, hash=False)

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
class Timeouts:
    """Robustness limits (livegate_settings), in seconds unless named otherwise. See README "Timeouts and limits"."""

    client_write_s: float = 20.0  # a realtime/passthrough client that reads nothing for this long is closed (1008)
    upstream_setup_s: float = 10.0  # Gemini must answer `setup` within this
    upstream_stall_s: float = 30.0  # Gemini silent this long mid-turn: an `error`, then close 1014
    http_header_s: float = 10.0  # a request's header lines must arrive within this (slowloris)
    http_body_s: float = 60.0  # a REST passthrough request body must arrive within this (408)
    max_request_body_bytes: int = 64 * 1024 * 1024  # REST passthrough request bodies (413)


TIMEOUT_SETTINGS = {  # livegate_settings key -> Timeouts field
    "client_write_timeout_s": "client_write_s",
    "upstream_setup_timeout_s": "upstream_setup_s",
    "upstream_stall_timeout_s": "upstream_stall_s",
    "http_header_timeout_s": "http_header_s",
    "http_body_timeout_s": "http_body_s",
    "max_request_body_bytes": "max_request_body_bytes",
}


@dataclass(frozen=True)
class StoreSettings:
    """Where spend and keys are kept: `database_url` (PostgreSQL, or general_settings.database_url /
    DATABASE_URL as LiteLLM reads it), else the SQLite file `path` (None = in memory; the `livegate` command
    sets a default file, see default_store_path)."""

    database_url: str | None = field(default=None, repr=False)  # may carry a password
    path: str | None = None
    poll_seconds: float = 2.0  # how often live sessions re-read their key (deletion, expiry, spend elsewhere)
    max_buffered_rows: int = 10_000  # spend rows kept in memory while the database is unreachable


def default_store_path() -> str:
    """The SQLite file of a `livegate` run with no store configured: $LIVEGATE_DB, else
    $XDG_DATA_HOME/livegate/livegate.db (~/.local/share/livegate/livegate.db)."""
    if os.environ.get("LIVEGATE_DB"):
        return os.environ["LIVEGATE_DB"]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "livegate", "livegate.db")


@dataclass(frozen=True)
class Config:
    routes: tuple[ModelRoute, ...] = ()
    master_key: str | None = None
    vertex: VertexDefaults = field(default_factory=VertexDefaults)
    max_client_frame_bytes: int = 15 * 1024 * 1024
    client_compression: bool = False  # permessage-deflate on client WebSockets: base64 audio barely compresses
    reattach_grace_s: float = 30.0  # how long a session waits for a dropped client to reattach
    litellm_compat: bool = False  # general_settings.litellm_compat: behave as LiteLLM's proxy (README)
    source: str = "<built-in>"
    timeouts: Timeouts = field(default_factory=Timeouts)
    store: StoreSettings = field(default_factory=StoreSettings)
    webrtc: WebRTCSettings = field(default_factory=WebRTCSettings)  # livegate_settings.webrtc_* (livegate/webrtc/)

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

    def compat(self, route: ModelRoute) -> bool:
        """Whether sessions on `route` get LiteLLM's proxy behaviour (the entry's setting, else the global one)."""
        return self.litellm_compat if route.litellm_compat is None else route.litellm_compat

    def __repr__(self) -> str:
        return f"Config({self.source}, {len(self.routes)} routes, master_key={'set' if self.master_key else 'none'})"


DEFAULT_CONFIG_TEXT = """\
# Built-in config: every model name is served by the local Gemini Live simulator, no key required.
model_list:
  - model_name: "*"
    livegate_params:
      model: simulator/livegate-simulator
"""


def _suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(known)}"


def check_keys(block: Any, known: tuple[str, ...], where: str, *, foreign_ok: bool) -> None:
    """Unknown keys of `block` are errors with a did-you-mean. With `foreign_ok` (a block LiteLLM also
    reads), a key that is no near-miss of a livegate key is LiteLLM's: accepted, warned, unused."""
    if not isinstance(block, dict):
        return
    for key in block:
        if key in known:
            continue
        near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.8)
        if foreign_ok and not near:
            log.warning("%s.%s is not used by livegate (a LiteLLM setting?); ignored", where, key)
            continue
        raise ConfigError(f"{where}.{key}: unknown key{_suggest(str(key), known)}")


def _env_fallback(*names: str) -> str | None:
    """The first of LiteLLM's usual environment variables that is set."""
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


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
    check_keys(entry, MODEL_ENTRY_KEYS, where, foreign_ok=False)
    params = entry.get("livegate_params", entry.get("litellm_params"))
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: needs `livegate_params` (or `litellm_params`) with a `model`")
    where = f"{where}.{'livegate_params' if 'livegate_params' in entry else 'litellm_params'}"
    check_keys(params, PARAMS_KEYS, where, foreign_ok="livegate_params" not in entry)
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
        api_key=_opt_str(params, "api_key", where)
        or (_env_fallback("GEMINI_API_KEY", "GOOGLE_API_KEY") if provider == "gemini" else None),
        api_base=_opt_str(params, "api_base", where),
        api_version=_opt_str(params, "api_version", where),
        vertex_project=_opt_str(params, "vertex_project", where),
        vertex_location=_opt_str(params, "vertex_location", where),
        vertex_credentials=_opt_str(params, "vertex_credentials", where),
        model_info=_model_info(entry, index),
        max_session_seconds=_opt_positive(params, "max_session_seconds", where),
        litellm_compat=_opt_bool(params, "litellm_compat", where),
        gemini_features=entry.get("gemini_features"),
    )
    from livegate.translation.capabilities import check_features, check_overrides, shipped_table

    problem = check_overrides(entry.get("model_info"), f"model_list[{index}].model_info")
    if problem is None and route.gemini_features is not None:
        backend = "vertex" if provider == "vertex_ai" else "aistudio"  # the simulator speaks AI Studio
        capabilities = shipped_table().capabilities(model_id, backend, route.model_info)
        problem = check_features(route.gemini_features, capabilities, f"model_list[{index}].gemini_features")
    if problem is not None:
        raise ConfigError(problem)
    if provider == "gemini" and not route.api_key:
        raise ConfigError(f"{where}.api_key: required for provider gemini (Google AI Studio); "
                          "or set GEMINI_API_KEY")
    return route


def _opt_bool(block: dict[str, Any], key: str, where: str) -> bool | None:
    value = block.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false")
    return value


def _opt_positive(block: dict[str, Any], key: str, where: str) -> float | None:
    value = block.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}.{key}: expected a positive number")
    return float(value)


def _model_info(entry: dict[str, Any], index: int) -> dict[str, Any] | None:
    info = entry.get("model_info")
    if info is None:
        return None
    if not isinstance(info, dict):
        raise ConfigError(f"model_list[{index}].model_info: expected a mapping")
    for name, value in info.items():
        if name.endswith(("_cost_per_token", "_cost_per_audio_token", "_cost_per_image_token",
                          "_cost_per_video_token", "_cost_per_reasoning_token", "_token_cost")) and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ConfigError(f"model_list[{index}].model_info.{name}: expected a non-negative number (USD per token)")
    return info


def _store_settings(general: dict[str, Any], settings: dict[str, Any]) -> StoreSettings:
    url = _opt_str(general, "database_url", "general_settings") or os.environ.get("DATABASE_URL") or None
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError("general_settings.database_url: expected postgresql://USER:PASSWORD@HOST:PORT/DB")
    path = _opt_str(settings, "store_path", "livegate_settings")
    poll = settings.get("key_check_seconds", StoreSettings.poll_seconds)
    rows = settings.get("spend_buffer_rows", StoreSettings.max_buffered_rows)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
        raise ConfigError("livegate_settings.key_check_seconds: expected a positive number")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
        raise ConfigError("livegate_settings.spend_buffer_rows: expected a positive integer")
    return StoreSettings(database_url=url, path=path, poll_seconds=float(poll), max_buffered_rows=rows)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Build a Config from parsed YAML, raising ConfigError with the offending field's path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping")
    models = data.get("model_list") or []
    if not isinstance(models, list):
        raise ConfigError("model_list: expected a list")
    for key in data:
        if key not in TOP_LEVEL_KEYS and key not in LITELLM_TOP_LEVEL:
            raise ConfigError(f"{key}: unknown top-level key{_suggest(str(key), TOP_LEVEL_KEYS)}")
    general = data.get("general_settings") or {}
    check_keys(general, GENERAL_KEYS, "general_settings", foreign_ok=True)
    check_keys(data.get("litellm_settings"), LITELLM_SETTINGS_KEYS, "litellm_settings", foreign_ok=True)
    vertex_block = (data.get("litellm_settings") or {}).get("default_vertex_config") or {}
    vertex_block = {**vertex_block, **((data.get("livegate_settings") or {}).get("default_vertex_config") or {})}
    check_keys(vertex_block, VERTEX_KEYS, "default_vertex_config", foreign_ok=False)
    settings = data.get("livegate_settings") or {}
    check_keys(settings, LIVEGATE_KEYS, "livegate_settings", foreign_ok=False)
    where = "default_vertex_config"
    vertex = VertexDefaults(
        project=_opt_str(vertex_block, "vertex_project", where)
        or _env_fallback("DEFAULT_VERTEXAI_PROJECT", "VERTEXAI_PROJECT", "VERTEX_PROJECT"),
        location=_opt_str(vertex_block, "vertex_location", where)
        or _env_fallback("DEFAULT_VERTEXAI_LOCATION", "VERTEXAI_LOCATION", "VERTEX_LOCATION"),
        credentials=_opt_str(vertex_block, "vertex_credentials", where)
        or _env_fallback("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS", "VERTEXAI_CREDENTIALS",
                         "GOOGLE_APPLICATION_CREDENTIALS"),
        api_base=_opt_str(vertex_block, "api_base", where),
        discovery_api_base=_opt_str(vertex_block, "discovery_api_base", where),
    )
    max_frame = settings.get("max_client_frame_bytes", Config.max_client_frame_bytes)
    if not isinstance(max_frame, int) or max_frame <= 0:
        raise ConfigError("livegate_settings.max_client_frame_bytes: expected a positive integer")
    client_compression = settings.get("client_compression", Config.client_compression)
    if not isinstance(client_compression, bool):
        raise ConfigError("livegate_settings.client_compression: expected true or false")
    grace = settings.get("reattach_grace_s", Config.reattach_grace_s)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
        raise ConfigError("livegate_settings.reattach_grace_s: expected a number of seconds >= 0")
    try:
        webrtc = parse_settings(settings)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
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
        client_compression=client_compression,
        reattach_grace_s=float(grace),
        litellm_compat=bool(_opt_bool(general, "litellm_compat", "general_settings")),
        source=source,
        timeouts=_timeouts(settings),
        store=_store_settings(general, settings),
        webrtc=webrtc,
    )


def _timeouts(settings: dict[str, Any]) -> Timeouts:
    values: dict[str, Any] = {}
    for key, name in TIMEOUT_SETTINGS.items():
        if key in settings:
            value = settings[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"livegate_settings.{key}: expected a positive number")
            values[name] = int(value) if name == "max_request_body_bytes" else float(value)
    return Timeouts(**values)


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

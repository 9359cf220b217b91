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

import fnmatch
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from livegate.config_schema import ConfigError, check, suggest
from livegate.observability.guardrails import GuardrailConfigError, Guardrails, build_guardrails
from livegate.observability.redaction import ORDER, Redactor
from livegate.translation.watchdog import WatchdogSettings

__all__ = ["Config", "ConfigError", "ModelRoute", "load_config", "parse_config"]
from livegate.webrtc.settings import SettingsError, WebRTCSettings, parse_settings

PROVIDERS = ("gemini", "vertex_ai", "simulator")
log = logging.getLogger("livegate.config")

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
    # Its place in a pool (several entries sharing `model_name`; livegate/upstream/pool.py): its own limits, its
    # share of new sessions, its priority, and its name in /health and /metrics (`model_info.id`, else
    # `<model_name>#<n>`).
    rpm: int | None = None
    tpm: int | None = None
    max_parallel_requests: int | None = None
    weight: float | None = None
    order: int | None = None
    deployment: str = ""
    guardrails: tuple[str, ...] = ()  # guardrail names its sessions run besides the default-on ones
    # The entry's `voices`: OpenAI voice name -> Gemini voice, over mappings/tables.yaml's table.
    voices: dict[str, str] | None = field(default=None, compare=False, hash=False)

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
    mcp_s: float = 30.0  # an MCP server must answer a listing or a tool call within this (mcp_call failed)


TIMEOUT_SETTINGS = {  # livegate_settings key -> Timeouts field
    "client_write_timeout_s": "client_write_s",
    "upstream_setup_timeout_s": "upstream_setup_s",
    "upstream_stall_timeout_s": "upstream_stall_s",
    "http_header_timeout_s": "http_header_s",
    "http_body_timeout_s": "http_body_s",
    "max_request_body_bytes": "max_request_body_bytes",
    "mcp_timeout_s": "mcp_s",
}


WATCHDOG_SETTINGS = ("stall_timeout_ms", "empty_turns_before_reseed", "silent_audio_ms", "silent_audio_level")


@dataclass(frozen=True)
class StoreSettings:
    """Where spend and keys are kept: `database_url` (PostgreSQL, or general_settings.database_url /
    DATABASE_URL as LiteLLM reads it), else the SQLite file `path` (None = in memory; the `livegate` command
    sets a default file, see default_store_path)."""

    database_url: str | None = field(default=None, repr=False)  # may carry a password
    path: str | None = None
    poll_seconds: float = 2.0  # how often live sessions re-read their key (deletion, expiry, spend elsewhere)
    max_buffered_rows: int = 10_000  # spend rows kept in memory while the database is unreachable
    spill_dir: str | None = None  # spend rows unwritten at shutdown go here (None: derived, see spill_directory)
    admit_when_unavailable: bool = False  # general_settings.allow_requests_on_db_unavailable (LiteLLM's name)

    def spill_directory(self) -> str | None:
        """`spend_spill_dir`, else a `spill` folder beside the SQLite file (or beside the command's default
        store for PostgreSQL); None for an in-memory store (nothing would survive to replay into)."""
        if self.spill_dir:
            return self.spill_dir
        if self.database_url and self.database_url.startswith(("postgresql://", "postgres://")):
            return os.path.join(os.path.dirname(default_store_path()), "spill")
        path = self.database_url[len("sqlite:///"):] if self.database_url else self.path
        if not path or path == ":memory:":
            return None
        return os.path.join(os.path.dirname(os.path.abspath(os.path.expanduser(path))), "spill")


@dataclass(frozen=True)
class LimitSettings:
    """Where a fleet's shared counters live (rpm, tpm, leases, budget reservations: accounting/counters.py): the
    Redis of router_settings / litellm_settings (`redis_url`, or `redis_host` and `redis_port`), else the
    PostgreSQL of `database_url`, else this process; and how they behave."""

    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    redis_host: str | None = None
    redis_port: int = 6379
    redis_password: str | None = field(default=None, repr=False)
    fail_closed: bool = False  # general_settings.fail_closed_budget_enforcement
    lease_ttl_s: float = 30.0
    reservation_output_tokens: int = 8192

    @property
    def redis(self) -> bool:
        return bool(self.redis_url or self.redis_host)


def default_store_path() -> str:
    """The SQLite file of a `livegate` run with no store configured: $LIVEGATE_DB, else
    $XDG_DATA_HOME/livegate/livegate.db (~/.local/share/livegate/livegate.db)."""
    if os.environ.get("LIVEGATE_DB"):
        return os.environ["LIVEGATE_DB"]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "livegate", "livegate.db")


ROUTING_STRATEGIES = ("simple-shuffle", "least-busy")
# LiteLLM's other strategies: a LiteLLM config naming one still loads, routed by simple-shuffle (a warning says so).
LITELLM_ONLY_STRATEGIES = ("usage-based-routing", "usage-based-routing-v2", "latency-based-routing",
                           "cost-based-routing", "lar1")


@dataclass(frozen=True)
class PoolSettings:
    """How sessions spread over a pool's deployments and get past a failing one (router_settings, with
    litellm_settings' fallbacks / allowed_fails / cooldown_time, and general_settings' background checks)."""

    routing_strategy: str = "simple-shuffle"
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # model group -> model groups, in order
    allowed_fails: int = 3  # setup failures within a minute a deployment may have; one more cools it down
    cooldown_s: float = 5.0
    background_health_checks: bool = False
    health_check_interval_s: float = 300.0


@dataclass(frozen=True)
class Observability:
    """Traces, transcripts, redaction and guardrails (docs/operating/observability.md)."""

    otel_tracing: bool = False  # livegate_settings.otel_tracing (or litellm_settings.callbacks: [otel])
    store_prompts: bool = False  # general_settings.store_prompts_in_spend_logs
    transcript_max_chars: int = 32768
    redactor: Redactor = field(default_factory=Redactor, compare=False)
    guardrails: Guardrails = field(default_factory=lambda: Guardrails({}), compare=False)


@dataclass(frozen=True)
class Config:
    routes: tuple[ModelRoute, ...] = ()
    master_key: str | None = None
    # LIVEGATE_SALT_KEY (LiteLLM's LITELLM_SALT_KEY): keys the sealing of stored session state (takeover/seal.py)
    # instead of the master key. From the environment only, as LiteLLM reads it: a secret kept out of files.
    salt_key: str | None = field(default=None, repr=False)
    vertex: VertexDefaults = field(default_factory=VertexDefaults)
    max_client_frame_bytes: int = 15 * 1024 * 1024
    client_compression: bool = False  # permessage-deflate on client WebSockets: base64 audio barely compresses
    reattach_grace_s: float = 30.0  # how long a session waits for a dropped client to reattach
    drain_timeout_s: float = 30.0  # SIGTERM: the longest wait for a session's turn boundary before 1012
    litellm_compat: bool = False  # general_settings.litellm_compat: behave as LiteLLM's proxy (README)
    client_secret_mints_per_minute: int = 120  # per key, across instances (429 beyond)
    client_secret_max_session_bytes: int = 128 * 1024  # a client secret's `session`, as JSON (413 beyond)
    monitoring_needs_master_key: bool = False  # /metrics and /health/readiness only with the master key
    source: str = "<built-in>"
    timeouts: Timeouts = field(default_factory=Timeouts)
    store: StoreSettings = field(default_factory=StoreSettings)
    webrtc: WebRTCSettings = field(default_factory=WebRTCSettings)  # livegate_settings.webrtc_* (livegate/webrtc/)
    limits: LimitSettings = field(default_factory=LimitSettings)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)  # silent failures (translation/watchdog.py)
    pools: PoolSettings = field(default_factory=PoolSettings)
    observability: Observability = field(default_factory=lambda: Observability())  # traces, transcripts, guardrails

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


def _env_fallback(*names: str) -> str | None:
    """The first of LiteLLM's usual environment variables that is set."""
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _opt_str(block: dict[str, Any], key: str) -> str | None:
    value = block.get(key)
    if isinstance(value, dict):  # vertex_credentials may be given inline as a JSON object
        return json.dumps(value)
    return None if value is None else str(value)


def _route(entry: dict[str, Any], index: int) -> ModelRoute:
    """One checked `model_list` entry (types and keys were checked against the schema)."""
    where = f"model_list[{index}]"
    params = entry.get("livegate_params", entry.get("litellm_params"))
    if params is None:
        raise ConfigError(f"{where}: needs `livegate_params` (or `litellm_params`) with a `model`")
    where = f"{where}.{'livegate_params' if 'livegate_params' in entry else 'litellm_params'}"
    provider, model_id = params["model"].split("/", 1)
    max_seconds = params.get("max_session_seconds")
    route = ModelRoute(
        model_name=entry["model_name"],
        provider=provider,
        model_id=model_id,
        api_key=_opt_str(params, "api_key")
        or (_env_fallback("GEMINI_API_KEY", "GOOGLE_API_KEY") if provider == "gemini" else None),
        api_base=_opt_str(params, "api_base"),
        api_version=_opt_str(params, "api_version"),
        vertex_project=_opt_str(params, "vertex_project"),
        vertex_location=_opt_str(params, "vertex_location"),
        vertex_credentials=_opt_str(params, "vertex_credentials"),
        model_info=_model_info(entry, index),
        max_session_seconds=None if max_seconds is None else float(max_seconds),
        litellm_compat=params.get("litellm_compat"),
        gemini_features=entry.get("gemini_features"),
        rpm=params.get("rpm"),
        tpm=params.get("tpm"),
        max_parallel_requests=params.get("max_parallel_requests"),
        weight=None if params.get("weight") is None else float(params["weight"]),
        order=params.get("order"),
        deployment=str((entry.get("model_info") or {}).get("id") or ""),
        guardrails=tuple(params.get("guardrails") or ()),
        voices=entry.get("voices"),
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


def _model_info(entry: dict[str, Any], index: int) -> dict[str, Any] | None:
    info = entry.get("model_info")
    for name, value in (info or {}).items():
        if name.endswith(("_cost_per_token", "_cost_per_audio_token", "_cost_per_image_token",
                          "_cost_per_video_token", "_cost_per_reasoning_token", "_token_cost")) and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ConfigError(f"model_list[{index}].model_info.{name}: expected a non-negative number (USD per token)")
    return info


def _store_settings(general: dict[str, Any], settings: dict[str, Any]) -> StoreSettings:
    url = _opt_str(general, "database_url") or os.environ.get("DATABASE_URL") or None
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError("DATABASE_URL: expected postgresql://USER:PASSWORD@HOST:PORT/DB")
    return StoreSettings(database_url=url, path=_opt_str(settings, "store_path"),
                         poll_seconds=float(settings.get("key_check_seconds", StoreSettings.poll_seconds)),
                         max_buffered_rows=settings.get("spend_buffer_rows", StoreSettings.max_buffered_rows),
                         spill_dir=_opt_str(settings, "spend_spill_dir"),
                         admit_when_unavailable=bool(general.get("allow_requests_on_db_unavailable", False)))


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Build a Config from parsed YAML, raising ConfigError with the offending field's path."""
    data = check(data, source)  # keys and types against schemas/config.schema.json, os.environ/ read
    general = data.get("general_settings") or {}
    settings = data.get("livegate_settings") or {}
    vertex_block = {**((data.get("litellm_settings") or {}).get("default_vertex_config") or {}),
                    **(settings.get("default_vertex_config") or {})}
    vertex = VertexDefaults(
        project=_opt_str(vertex_block, "vertex_project")
        or _env_fallback("DEFAULT_VERTEXAI_PROJECT", "VERTEXAI_PROJECT", "VERTEX_PROJECT"),
        location=_opt_str(vertex_block, "vertex_location")
        or _env_fallback("DEFAULT_VERTEXAI_LOCATION", "VERTEXAI_LOCATION", "VERTEX_LOCATION"),
        credentials=_opt_str(vertex_block, "vertex_credentials")
        or _env_fallback("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS", "VERTEXAI_CREDENTIALS",
                         "GOOGLE_APPLICATION_CREDENTIALS"),
        api_base=_opt_str(vertex_block, "api_base"),
        discovery_api_base=_opt_str(vertex_block, "discovery_api_base"),
    )
    try:
        webrtc = parse_settings(settings)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    routes = _named(tuple(_route(entry, i) for i, entry in enumerate(data.get("model_list") or [])))
    for i, route in enumerate(routes):  # fail at load, not in every session
        if route.provider == "vertex_ai" and not (route.vertex_project or vertex.project):
            raise ConfigError(f"model_list[{i}] ({route.model_name!r}): vertex_ai needs a project: set "
                              "`vertex_project`, `litellm_settings.default_vertex_config.vertex_project` "
                              "or DEFAULT_VERTEXAI_PROJECT")
    return Config(
        routes=routes,
        # As LiteLLM reads LITELLM_MASTER_KEY: `LIVEGATE_MASTER_KEY=sk-... livegate` gives the built-in config a
        # master key, so keys and budgets can be tried on the simulator with the README's first command.
        master_key=_opt_str(general, "master_key") or _env_fallback("LIVEGATE_MASTER_KEY", "LITELLM_MASTER_KEY"),
        salt_key=_env_fallback("LIVEGATE_SALT_KEY", "LITELLM_SALT_KEY"),
        vertex=vertex,
        max_client_frame_bytes=settings.get("max_client_frame_bytes", Config.max_client_frame_bytes),
        client_compression=settings.get("client_compression", Config.client_compression),
        reattach_grace_s=float(settings.get("reattach_grace_s", Config.reattach_grace_s)),
        drain_timeout_s=float(settings.get("drain_timeout_s", Config.drain_timeout_s)),
        litellm_compat=bool(general.get("litellm_compat", False)),
        client_secret_mints_per_minute=settings.get("client_secret_mints_per_minute",
                                                    Config.client_secret_mints_per_minute),
        client_secret_max_session_bytes=settings.get("client_secret_max_session_bytes",
                                                     Config.client_secret_max_session_bytes),
        monitoring_needs_master_key=_monitoring_needs_master_key(data, general, settings),
        source=source,
        timeouts=_timeouts(settings),
        store=_store_settings(general, settings),
        webrtc=webrtc,
        limits=_limit_settings(data, general, settings),
        watchdog=WatchdogSettings(**{key: settings[key] for key in WATCHDOG_SETTINGS if key in settings}),
        pools=_pool_settings(data, routes),
        observability=_observability(data, general, settings, routes),
    )


def _observability(data: dict[str, Any], general: dict[str, Any], settings: dict[str, Any],
                   routes: tuple[ModelRoute, ...]) -> Observability:
    callbacks = (data.get("litellm_settings") or {}).get("callbacks") or []
    ignored = [name for name in callbacks if name != "otel"]
    if ignored:
        log.warning("litellm_settings.callbacks: livegate exports traces only (otel); ignored: %s", ", ".join(ignored))
    redaction = settings.get("redaction") or {}
    try:
        redactor = Redactor(redaction.get("detectors", ORDER), redaction.get("patterns"))
    except (ValueError, re.error) as exc:
        raise ConfigError(f"livegate_settings.redaction: {exc}") from None
    try:
        guardrails = Guardrails(build_guardrails(data.get("guardrails") or []))
    except GuardrailConfigError as exc:
        raise ConfigError(str(exc)) from None
    for i, route in enumerate(routes):
        unknown = [name for name in route.guardrails if name not in guardrails.all]
        if unknown:
            raise ConfigError(f"model_list[{i}].guardrails: no guardrail named {unknown[0]!r} "
                              f"(configured: {', '.join(guardrails.all) or 'none'})")
    return Observability(
        otel_tracing=bool(settings.get("otel_tracing", False)) or "otel" in callbacks,
        store_prompts=bool(general.get("store_prompts_in_spend_logs", False)),
        transcript_max_chars=int(settings.get("transcript_max_chars", Observability.transcript_max_chars)),
        redactor=redactor, guardrails=guardrails)


def _limit_settings(data: dict[str, Any], general: dict[str, Any], settings: dict[str, Any]) -> LimitSettings:
    """router_settings' Redis over litellm_settings', key by key (LiteLLM reads both)."""
    redis = {**{k: v for k, v in (data.get("litellm_settings") or {}).items() if k.startswith("redis_")},
             **{k: v for k, v in (data.get("router_settings") or {}).items() if k.startswith("redis_")}}
    if (redis.get("redis_url") or redis.get("redis_host")) and importlib.util.find_spec("redis") is None:
        raise ConfigError("router_settings.redis_*: a Redis for the shared counters needs redis-py: "
                          "pip install 'livegate[redis]'")
    return LimitSettings(redis_url=_opt_str(redis, "redis_url"), redis_host=_opt_str(redis, "redis_host"),
                         redis_port=int(redis.get("redis_port", LimitSettings.redis_port)),
                         redis_password=_opt_str(redis, "redis_password"),
                         fail_closed=bool(general.get("fail_closed_budget_enforcement", False)),
                         lease_ttl_s=float(settings.get("lease_ttl_seconds", LimitSettings.lease_ttl_s)),
                         reservation_output_tokens=int(settings.get("budget_reservation_output_tokens",
                                                                    LimitSettings.reservation_output_tokens)))


def _monitoring_needs_master_key(data: dict[str, Any], general: dict[str, Any], settings: dict[str, Any]) -> bool:
    """livegate's setting, or LiteLLM's `require_auth_for_metrics_endpoint` (a LiteLLM config asking for it
    must not leave /metrics open here); both need a master key to ask for."""
    litellm = bool((data.get("litellm_settings") or {}).get("require_auth_for_metrics_endpoint", False))
    wanted = bool(settings.get("require_master_key_for_monitoring", False)) or litellm
    if wanted and not general.get("master_key"):
        name = "livegate_settings.require_master_key_for_monitoring" if not litellm else \
            "litellm_settings.require_auth_for_metrics_endpoint"
        raise ConfigError(f"{name}: needs general_settings.master_key (the key /metrics and readiness would ask for)")
    return wanted


def _named(routes: tuple[ModelRoute, ...]) -> tuple[ModelRoute, ...]:
    """Each entry with its deployment name: `model_info.id`, else `<model_name>#<n>`; names are unique."""
    named: list[ModelRoute] = []
    counts: dict[str, int] = {}
    for i, route in enumerate(routes):
        counts[route.model_name] = counts.get(route.model_name, 0) + 1
        name = route.deployment or f"{route.model_name}#{counts[route.model_name]}"
        if any(r.deployment == name for r in named):
            raise ConfigError(f"model_list[{i}].model_info.id: {name!r} names another deployment already")
        named.append(replace(route, deployment=name))
    return tuple(named)


def _pool_settings(data: dict[str, Any], routes: tuple[ModelRoute, ...]) -> PoolSettings:
    """router_settings over litellm_settings, key by key (LiteLLM reads both), checked against the model list."""
    router = {**{k: v for k, v in (data.get("litellm_settings") or {}).items()
                 if k in ("fallbacks", "allowed_fails", "cooldown_time")}, **(data.get("router_settings") or {})}
    strategy = router.get("routing_strategy", PoolSettings.routing_strategy)
    if strategy in LITELLM_ONLY_STRATEGIES:
        log.warning("router_settings.routing_strategy %r is LiteLLM's: livegate routes by simple-shuffle", strategy)
        strategy = "simple-shuffle"
    elif strategy not in ROUTING_STRATEGIES:
        hint = suggest(str(strategy), ROUTING_STRATEGIES)
        raise ConfigError(f"router_settings.routing_strategy: unknown strategy {strategy!r}"
                          + (hint if "did you mean" in hint else f"; expected one of {', '.join(ROUTING_STRATEGIES)}"))
    from livegate.upstream.pool import check_pools

    problem = check_pools(routes)
    if problem is not None:
        raise ConfigError(problem)
    groups = {r.model_name for r in routes}
    fallbacks: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(router.get("fallbacks") or []):
        for group, targets in item.items():
            where = f"router_settings.fallbacks[{i}].{group}"
            if group != "*" and group not in groups:
                raise ConfigError(f"{where}: no model_list entry is named {group!r}{suggest(group, sorted(groups))}")
            for target in targets:
                if target not in groups:
                    raise ConfigError(f"{where}: no model_list entry is named {target!r}"
                                      f"{suggest(target, sorted(groups))}")
            fallbacks[group] = (*fallbacks.get(group, ()), *(t for t in targets if t != group))
    general = data.get("general_settings") or {}
    return PoolSettings(routing_strategy=strategy, fallbacks=fallbacks,
                        allowed_fails=int(router.get("allowed_fails", PoolSettings.allowed_fails)),
                        cooldown_s=float(router.get("cooldown_time", PoolSettings.cooldown_s)),
                        background_health_checks=bool(general.get("background_health_checks", False)),
                        health_check_interval_s=float(general.get("health_check_interval",
                                                                  PoolSettings.health_check_interval_s)))


def _timeouts(settings: dict[str, Any]) -> Timeouts:
    values: dict[str, Any] = {}
    for key, name in TIMEOUT_SETTINGS.items():
        if key in settings:
            values[name] = int(settings[key]) if name == "max_request_body_bytes" else float(settings[key])
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

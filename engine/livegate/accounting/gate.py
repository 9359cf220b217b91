"""The Accounting service: who may open a session or make a call (handshake checks, before any upstream
connection), what it costs while it runs (Grant), and when it must stop.

Handshake refusals (HTTP status, error code): 401 `invalid_api_key` (unknown, expired or deleted key or
client secret), 403 `model_not_allowed`, 429 `budget_exceeded`, 429 `rate_limit_exceeded` (rpm_limit),
429 `realtime_session_limit` (max_parallel_requests), 503 `store_unavailable`.

Mid-session stops close with SESSION_TOO_LONG, KEY_REVOKED or BUDGET_EXHAUSTED (livegate/close_codes.py), after
an OpenAI `error` event on /v1/realtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livegate.accounting.cost import Cost, cost_of
from livegate.accounting.database import StoreUnavailable
from livegate.accounting.keys import SECRET_PREFIX, hash_key, label
from livegate.accounting.metrics import Metrics
from livegate.accounting.prices import Price, PriceTable
from livegate.accounting.store import KeyRecord, SecretRecord, Store
from livegate.accounting.writer import SpendWriter
from livegate.close_codes import BUDGET_EXHAUSTED, KEY_REVOKED, SESSION_TOO_LONG, Refusal
from livegate.translation.observer import SessionObserver
from livegate.translation.usage import UsageLedger

log = logging.getLogger("livegate.accounting")

HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class Stop:
    close_code: int
    code: str
    message: str


@dataclass
class Principal:
    """Who is calling: the master key, anyone (open gateway), or a virtual key (maybe through a client secret)."""

    kind: str  # "master" | "open" | "key"
    token_hash: str = ""
    key: KeyRecord | None = None
    secret: SecretRecord | None = None

    @property
    def label(self) -> str:
        if self.kind == "key" and self.key is not None:
            return label(self.token_hash, self.key.key_alias)
        return self.kind

    def allows(self, *names: str | None) -> bool:
        """Is one of these model names (client name, upstream id) among the key's models? (none = all)"""
        models = self.key.models if self.key else []
        if not models or "all-proxy-models" in models or "*" in models:
            return True
        return any(name in models for name in names if name)


class Accounting:
    def __init__(self, store: Store, prices: PriceTable, *, master_key: str | None, metrics: Metrics | None = None,
                 poll_interval: float = 2.0, writer_interval: float = 0.5, max_buffered_rows: int = 10_000) -> None:
        self.store = store
        self.prices = prices
        self.master_key = master_key
        self.metrics = metrics or Metrics()
        self.poll_interval = poll_interval
        self.instance_id = secrets.token_hex(6)
        self.writer = SpendWriter(store, interval=writer_interval, max_rows=max_buffered_rows,
                                  on_flushed=self._flushed)
        self.grants: set[Grant] = set()
        self.keys: dict[str, KeyRecord] = {}  # the last known state of keys with live sessions
        self._warned_prices: set[str] = set()
        self._poller: asyncio.Task[None] | None = None
        self._last_heartbeat = 0.0
        self.store_error: str | None = None

    @property
    def master_hash(self) -> str:
        return hash_key(self.master_key) if self.master_key else ""

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self.writer.start()
        self._poller = asyncio.create_task(self._poll_loop(), name="livegate-accounting-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        held = [g.session_id for g in self.grants if g.holds_slot]
        with contextlib.suppress(StoreUnavailable):
            await self.store.release_sessions(held)
        await self.writer.stop()
        await self.store.close()

    async def readiness(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(5):
                await self.store.ping()
            reachable, error = True, None
        except (StoreUnavailable, TimeoutError) as exc:
            reachable, error = False, str(exc) or "timeout"
        writes_ok = self.writer.error is None
        return {"status": "healthy" if reachable and writes_ok else "unhealthy",
                "db": "connected" if reachable else "disconnected",
                "store": self.store.db.description.split(":", 1)[0],
                "store_error": error or self.writer.error,
                "store_backlog": self.writer.backlog,
                "store_dropped_rows": self.writer.dropped,
                "active_sessions": len(self.grants)}

    # --- who is calling ------------------------------------------------------------------------------------

    async def principal(self, key: str | None) -> Principal | Refusal:
        if self.master_key and key is not None and hmac.compare_digest(key.encode(), self.master_key.encode()):
            return Principal("master", self.master_hash)
        if key is None:
            if self.master_key:
                return Refusal(401, "Missing API key: send `Authorization: Bearer <key>`.", "invalid_api_key")
            return Principal("open")
        now = time.time()
        secret: SecretRecord | None = None
        token_hash = hash_key(key)
        try:
            if key.startswith(SECRET_PREFIX):
                secret = await self.store.get_secret(token_hash)
                if secret is None or secret.expires_at <= now:
                    return self._unknown(secret is not None and "Client secret expired.")
                if secret.token_hash is None or secret.token_hash == self.master_hash:
                    return Principal("master" if self.master_key else "open", self.master_hash, secret=secret)
                token_hash = secret.token_hash
            record = await self.store.get_key(token_hash, now)
        except StoreUnavailable as exc:
            log.error("spend store unavailable at a handshake: %s", exc)
            return Refusal(503, "The key store is unavailable; try again shortly.", "store_unavailable")
        if record is None:
            return self._unknown(None)
        if record.deleted_at is not None:
            return Refusal(401, "API key deleted.", "invalid_api_key")
        if record.expired(now):
            return Refusal(401, "API key expired.", "invalid_api_key")
        return Principal("key", token_hash, record, secret)

    def _unknown(self, message: str | bool | None) -> Principal | Refusal:
        if not self.master_key and not message:
            return Principal("open")  # an open gateway ignores keys it does not know
        return Refusal(401, message if isinstance(message, str) and message else "Invalid API key.",
                       "invalid_api_key")

    # --- admission -----------------------------------------------------------------------------------------

    async def admit(self, key: str | Principal | None, *, route: str, model: str | None = None,
                    upstream_model: str | None = None, model_info: Mapping[str, Any] | None = None,
                    headers: Mapping[str, str] | None = None, end_user: str | None = None,
                    session: bool = True, max_session_seconds: float | None = None) -> Grant | Refusal:
        """Check a new session (or REST call when `session` is False); on success it is counted and live."""
        principal = key if isinstance(key, Principal) else await self.principal(key)
        if isinstance(principal, Refusal):
            self.metrics.refusals.labels(route, principal.code).inc()
            return principal
        grant = Grant(self, principal, route, headers or {}, end_user, session, max_session_seconds)
        refusal = await grant.check_admission(model, upstream_model, model_info)
        if refusal is not None:
            self.metrics.refusals.labels(route, refusal.code).inc()
            return refusal
        grant.open()
        return grant

    def price(self, upstream_model: str | None, model_info: Mapping[str, Any] | None) -> Price | None:
        price = self.prices.lookup(upstream_model, dict(model_info) if model_info else None)
        if price is None and upstream_model not in self._warned_prices:
            self._warned_prices.add(upstream_model or "")
            log.warning("no price for model %r (mappings/prices.yaml or the entry's model_info): its cost is "
                        "recorded as unknown, not free", upstream_model)
        return price

    def key_spend(self, token_hash: str) -> float:
        key = self.keys.get(token_hash)
        return (key.spend if key else 0.0) + self.writer.unflushed_spend(token_hash)

    def _flushed(self, spend: dict[str, float]) -> None:
        for token_hash, amount in spend.items():
            if token_hash in self.keys:
                self.keys[token_hash].spend += amount
        self.metrics.store_up.set(1)

    # --- the watcher ---------------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.poll()
            except StoreUnavailable as exc:
                if self.store_error is None:
                    log.error("spend store unreachable; sessions go on, limits use the last known state: %s", exc)
                self.store_error = str(exc)
            except Exception:
                log.exception("accounting poll failed")
            else:
                self.store_error = None

    async def poll(self) -> None:
        """Refresh the keys of live sessions (deleted, expired, spent elsewhere) and heartbeat the sessions."""
        m = self.metrics
        m.store_backlog.set(self.writer.backlog)
        m.store_dropped.set(self.writer.dropped)
        m.store_up.set(0 if self.writer.error else 1)
        for grant in list(self.grants):
            grant.flush_counters()
        hashes = sorted({g.principal.token_hash for g in self.grants if g.principal.kind == "key"})
        now = time.time()
        if hashes:
            fresh = await self.store.get_keys(hashes, now)
            self.keys.update(fresh)
            for grant in list(self.grants):
                grant.check_key(fresh.get(grant.principal.token_hash), now)
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            await self.store.heartbeat([g.session_id for g in self.grants if g.holds_slot], now)


class Grant(SessionObserver):
    """One admitted session or REST call: its usage, cost, limits and, at the end, its spend row. It observes
    its session (translation/observer.py) for the metrics."""

    def __init__(self, accounting: Accounting, principal: Principal, route: str, headers: Mapping[str, str],
                 end_user: str | None, session: bool, max_session_seconds: float | None) -> None:
        self.accounting = accounting
        self.principal = principal
        self.route = route
        self.session = session
        self.session_id = "lg_" + secrets.token_hex(12)
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.model: str | None = None
        self.upstream_model: str | None = None
        self.price: Price | None = None
        # The session's usage ledger: fed by its translator (/v1/realtime) or by the passthrough's frames.
        self.meter = UsageLedger(on_change=self.usage_changed)
        self.reported_cost = 0.0
        self.stop: Stop | None = None
        self.stopped = asyncio.Event()
        self.holds_slot = False
        self.finished = False
        self.end_user = end_user or _header(headers, "x-livegate-end-user", "x-litellm-end-user-id", "x-end-user")
        header_tags = [t.strip() for t in (_header(headers, "tags", "x-litellm-tags") or "").split(",") if t.strip()]
        key_tags = principal.key.tags if principal.key else []
        self.tags = list(dict.fromkeys([*key_tags, *header_tags]))[:32]
        limits = [s for s in (max_session_seconds, principal.key.max_session_seconds if principal.key else None) if s]
        self.max_seconds = min(limits) if limits else None
        self._timer: asyncio.TimerHandle | None = None
        self._frames = {"from_client": [0, 0], "from_upstream": [0, 0]}
        self._errors = 0
        self._resumptions = 0
        self._metric_model = "-"

    # --- admission -----------------------------------------------------------------------------------------

    async def check_admission(self, model: str | None, upstream_model: str | None,
                              model_info: Mapping[str, Any] | None) -> Refusal | None:
        if model is not None:
            refusal = self.bind_model(model, upstream_model, model_info)
            if refusal is not None:
                return refusal
        key = self.principal.key
        if key is None:
            return None
        acct, now = self.accounting, time.time()
        acct.keys[key.token_hash] = key
        spend = acct.key_spend(key.token_hash)
        if key.max_budget is not None and spend >= key.max_budget:
            return Refusal(429, f"Budget has been exceeded! Current cost: {spend:.6f}, Max budget: "
                                f"{key.max_budget:.6f}", "budget_exceeded")
        try:
            if key.rpm_limit is not None and await acct.store.count_request(key.token_hash, now) > key.rpm_limit:
                return Refusal(429, f"Rate limit exceeded: rpm_limit {key.rpm_limit} new sessions or calls per "
                                    "minute for this key.", "rate_limit_exceeded")
            if self.session:
                if not await acct.store.acquire_session(key.token_hash, self.session_id, acct.instance_id, model,
                                                        self.route, key.max_parallel_requests, now):
                    return Refusal(429, f"This key already has {key.max_parallel_requests} realtime sessions open "
                                        "(max_parallel_requests).", "realtime_session_limit")
                self.holds_slot = True
        except StoreUnavailable as exc:
            log.error("spend store unavailable at a handshake: %s", exc)
            return Refusal(503, "The key store is unavailable; try again shortly.", "store_unavailable")
        return None

    def bind_model(self, model: str, upstream_model: str | None = None,
                   model_info: Mapping[str, Any] | None = None) -> Refusal | None:
        """Set the session's model (at the handshake, or at a passthrough's setup); a refusal if the key may
        not use it."""
        if not self.principal.allows(model, upstream_model):
            return Refusal(403, f"This key is not allowed to use the model '{model}'.", "model_not_allowed")
        self.model, self.upstream_model = model, upstream_model or model
        self.price = self.accounting.price(self.upstream_model, model_info)
        self.meter.cumulative = bool(self.price and self.price.cumulative_usage)
        key = self.principal.key
        if self.price is None and key is not None and key.max_budget is not None:
            return Refusal(403, f"The model '{model}' has no price on this gateway, so a key with a budget cannot "
                                "use it.", "model_not_allowed")
        # Metric labels use the upstream model id, which the config bounds (a client picks its model name).
        old, self._metric_model = self._metric_model, self.upstream_model or "-"
        if self.session and not self.finished and old != self._metric_model and self in self.accounting.grants:
            self.accounting.metrics.active_sessions.labels(old, self.route).dec()
            self.accounting.metrics.active_sessions.labels(self._metric_model, self.route).inc()
        return None

    def open(self) -> None:
        if self.session:  # REST calls are short and not watched: only sessions are tracked
            self.accounting.grants.add(self)
            self.accounting.metrics.active_sessions.labels(self._metric_model, self.route).inc()
        self.limit_duration(None)

    def limit_duration(self, seconds: float | None) -> None:
        """Cap the session's length (the smallest of the key's, the model's and this one wins)."""
        limits = [s for s in (self.max_seconds, seconds) if s]
        if not limits or not self.session:
            return
        self.max_seconds = min(limits)
        if self._timer is not None:
            self._timer.cancel()
        remaining = max(self.max_seconds - (time.monotonic() - self.started), 0)
        self._timer = asyncio.get_running_loop().call_later(remaining, self.end, Stop(
            SESSION_TOO_LONG, "session_expired",
            f"The session reached its maximum duration of {self.max_seconds:g} s."))

    # --- while it runs (no I/O here: this is the audio path) -----------------------------------------------

    def client_frame(self, frame: str | bytes) -> None:
        counts = self._frames["from_client"]
        counts[0] += 1
        counts[1] += len(frame)

    def upstream_frame(self, frame: str | bytes) -> None:
        counts = self._frames["from_upstream"]
        counts[0] += 1
        counts[1] += len(frame)
        if len(frame) < 1024 and mentions(frame, '"newHandle"'):  # resumption updates are small frames
            self._resumptions += 1

    def fixed_session(self, dialect: str) -> dict[str, Any] | None:
        """The session settings a client secret fixes (its `session`, without `model`; `type` is GA only)."""
        secret = self.principal.secret
        if secret is None or not secret.session:
            return None
        return {k: v for k, v in secret.session.items() if k != "model" and (k != "type" or dialect == "ga")}

    def fix_client_frame(self, frame: str | bytes, dialect: str) -> str | bytes:
        """A client's session.update with the secret's settings laid over it, so they stay fixed."""
        fixed = self.fixed_session(dialect)
        if not fixed or not mentions(frame, '"session.update"'):
            return frame
        try:
            event = json.loads(frame)
        except ValueError:
            return frame
        if not isinstance(event, dict) or event.get("type") != "session.update" or \
                not isinstance(event.get("session"), dict):
            return frame
        event["session"] = _overlay(event["session"], fixed)
        return json.dumps(event)

    def client_messages(self, messages: list[dict[str, Any]]) -> None:
        """Messages sent to an OpenAI client: error events are counted."""
        for message in messages:
            if message.get("type") == "error":
                self._errors += 1

    def recovery(self, kind: str) -> None:
        self.accounting.metrics.recoveries.labels(self.route, kind).inc()

    def lifecycle_violation(self, before: str, sources: tuple[str, ...], after: str) -> None:
        """A translation error: an input moved the session along a transition the lifecycle table lacks."""
        for source in sources:
            self.accounting.metrics.lifecycle_violations.labels(self.route, source).inc()

    def add_usage(self, usage_metadata: dict[str, Any]) -> None:
        """A whole report (REST calls)."""
        self.meter.report(usage_metadata)

    def cost(self) -> Cost | None:
        return cost_of(self.meter.current(), self.price)

    def usage_changed(self) -> None:
        cost = self.cost()
        key = self.principal.key
        if cost is None or key is None:
            return
        delta, self.reported_cost = cost.total - self.reported_cost, cost.total
        self.accounting.writer.add_spend(key.token_hash, delta)
        self.check_budget()

    def check_budget(self) -> None:
        key = self.principal.key
        if key is not None and key.max_budget is not None and self.session:
            known = self.accounting.keys.get(key.token_hash, key)
            spend = self.accounting.key_spend(key.token_hash)
            if spend >= (known.max_budget if known.max_budget is not None else float("inf")):
                self.end(Stop(BUDGET_EXHAUSTED, "insufficient_quota",
                              f"The key's budget is spent (spend ${spend:.6f} of ${known.max_budget:.6f})."))

    def check_key(self, fresh: KeyRecord | None, now: float) -> None:
        if self.principal.kind != "key" or not self.session:
            return
        if fresh is None or fresh.deleted_at is not None:
            self.end(Stop(KEY_REVOKED, "invalid_api_key", "The API key was deleted."))
        elif fresh.expired(now):
            self.end(Stop(KEY_REVOKED, "invalid_api_key", "The API key expired."))
        else:
            self.principal.key = fresh
            self.check_budget()

    def end(self, stop: Stop) -> None:
        if self.stop is None and not self.finished:
            self.stop = stop
            log.info("session %s stopped by accounting: %s", self.session_id, stop.code)
            self.stopped.set()

    async def wait_stopped(self) -> Stop:
        await self.stopped.wait()
        assert self.stop is not None
        return self.stop

    # --- the end -------------------------------------------------------------------------------------------

    def flush_counters(self) -> None:
        m, route = self.accounting.metrics, self.route
        for direction, counts in self._frames.items():
            if counts[0]:
                m.frames.labels(route, direction).inc(counts[0])
                m.bytes.labels(route, direction).inc(counts[1])
                counts[0] = counts[1] = 0
        if self._errors:
            m.translation_errors.labels(route).inc(self._errors)
            self._errors = 0
        if self._resumptions:
            m.resumptions.labels(route).inc(self._resumptions)
            self._resumptions = 0

    def upstream_connected(self, seconds: float) -> None:
        self.accounting.metrics.upstream_connect.labels(self.route).observe(seconds)

    async def finish(self, close_code: int | None, status: str = "success", reason: str = "",
                     extra: dict[str, Any] | None = None) -> None:
        """Write the spend row (queued), free the session slot, log the cost line. Idempotent."""
        if self.finished:
            return
        self.finished = True
        acct, m = self.accounting, self.accounting.metrics
        if self._timer is not None:
            self._timer.cancel()
        acct.grants.discard(self)
        self.flush_counters()
        self.meter.commit()
        usage = self.meter.total
        billed = usage.billed()
        cost = cost_of(usage, self.price)
        key = self.principal.key
        if key is not None and cost is not None and cost.total != self.reported_cost:
            acct.writer.add_spend(key.token_hash, cost.total - self.reported_cost)
            self.reported_cost = cost.total
        duration = time.monotonic() - self.started
        model = self.model or "-"
        if self.session:
            m.active_sessions.labels(self._metric_model, self.route).dec()
        m.sessions_ended.labels(self.route, str(close_code)).inc()
        for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if count:
                m.tokens.labels(self._metric_model, kind).inc(count)
        if cost is not None:
            m.spend.labels(self._metric_model).inc(cost.total)
        elif self.model is not None and usage.total_tokens:
            m.unknown_cost.labels(self._metric_model).inc()
        metadata = {"session_id": self.session_id, "duration_s": round(duration, 3), "close_reason": reason[:200],
                    "turns": self.meter.turns,
                    "user_api_key_alias": key.key_alias if key else None, "instance": acct.instance_id,
                    **({"client_secret": True} if self.principal.secret else {}), **(extra or {})}
        row = {"request_id": self.session_id, "api_key": self.principal.token_hash,
               "key_alias": key.key_alias if key else None, "model": self.model,
               "upstream_model": self.upstream_model, "route": self.route,
               "call_type": "realtime_session" if self.session else "pass_through_request",
               "start_time": self.started_wall, "end_time": time.time(), "status": status,
               "close_code": close_code, "spend": None if cost is None else cost.total,
               "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
               "total_tokens": usage.total_tokens,
               **{f"{name}_tokens": billed[name] + (billed[name.split("_")[0] + "_gap"]
                                                     if name in ("input_text", "output_text") else 0)
                  for name in ("input_text", "input_audio", "input_image", "input_video", "input_cached",
                               "output_text", "output_audio", "output_thinking")},
               "request_tags": _json(self.tags), "end_user": self.end_user, "metadata": _json(metadata)}
        acct.writer.add_log(row)
        if self.holds_slot:
            try:
                await acct.store.release_sessions([self.session_id])
            except StoreUnavailable:
                log.warning("could not free session %s now; it lapses after %.0f s", self.session_id, 30.0)
        if cost is None:
            money = f"session cost: unknown (no price for {self.upstream_model!r})" if self.model else \
                "session cost: unknown (no model)"
        else:
            money = f"session cost: ${cost.total:.6f} (input: ${cost.input:.6f}, output: ${cost.output:.6f})"
        log.info("%s tokens: %d, duration: %.1fs, key: %s, model: %s, route: %s", money, usage.total_tokens,
                 duration, self.principal.label, model, self.route)


def _overlay(base: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in fixed.items():
        out[name] = _overlay(out[name], value) if isinstance(value, dict) and isinstance(out.get(name), dict) \
            else value
    return out


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value[:200]
    return None


def mentions(frame: str | bytes, needle: str) -> bool:
    return (needle.encode() in frame) if isinstance(frame, bytes) else (needle in frame)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

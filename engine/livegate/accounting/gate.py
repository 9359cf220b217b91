"""The Accounting service: who may open a session or make a call (handshake checks, before any upstream
connection), what it costs while it runs (Grant), and when it must stop.

Handshake refusals (HTTP status, error code): 401 `invalid_api_key` (unknown, expired or deleted key or
client secret), 403 `model_not_allowed`, 429 `budget_exceeded`, 429 `rate_limit_exceeded` (rpm_limit),
429 `realtime_session_limit` (max_parallel_requests), 503 `store_unavailable`.

Mid-session stops (WebSocket close codes, after an OpenAI `error` event on /v1/realtime):
    4029  the key's budget is spent (`insufficient_quota`)
    4010  the key was deleted or expired (`invalid_api_key`)
    4008  the session reached its maximum duration (`session_expired`)
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

from livegate.accounting.cost import Cost, TokenUsage, TurnUsageMeter, cost_of, mentions
from livegate.accounting.database import StoreUnavailable
from livegate.accounting.keys import SECRET_PREFIX, hash_key, label
from livegate.accounting.metrics import Metrics, close_code_label
from livegate.accounting.outage import StoreOutage
from livegate.accounting.prices import Price, PriceTable
from livegate.accounting.spill import replay_spills
from livegate.accounting.store import KeyRecord, SecretRecord, Store
from livegate.accounting.writer import SpendWriter

log = logging.getLogger("livegate.accounting")

CLOSE_BUDGET_EXHAUSTED = 4029
CLOSE_KEY_REVOKED = 4010
CLOSE_SESSION_TOO_LONG = 4008
HEARTBEAT_SECONDS = 10.0
SECRET_PURGE_SECONDS = 60.0  # how often expired client secrets are deleted
SECRET_PURGE_AFTER = 600.0  # kept this long past expiry, so a late client hears "expired", not "invalid"


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    code: str

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"type": kind, "code": self.code, "message": self.message}}


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

    @property
    def secret_model(self) -> str | None:
        """The model a client secret was minted for (its `session.model`), if it names one."""
        model = self.secret.session.get("model") if self.secret is not None and self.secret.session else None
        return model if isinstance(model, str) else None

    def allows(self, *names: str | None) -> bool:
        """Is one of these model names (client name, upstream id) among the key's models? (none = all) A client
        secret minted for a model allows that model only, whoever minted it (the master key included)."""
        if self.secret_model is not None and self.secret_model not in names:
            return False
        models = self.key.models if self.key else []
        if not models or "all-proxy-models" in models or "*" in models:
            return True
        return any(name in models for name in names if name)

    def may_reattach(self, owner: Principal) -> bool:
        """May this caller take over a session `owner` opened? The same key, or the master key itself; a
        session opened with a client secret only with that same secret (sibling secrets of one key are other
        browsers), and a secret never takes over a session its key (or the master key) opened."""
        if self.kind == "master" and self.secret is None:
            return True
        if self.secret is not None or owner.secret is not None:
            return self.secret is not None and owner.secret is not None and \
                hmac.compare_digest(self.secret.secret_hash, owner.secret.secret_hash)
        return self.token_hash == owner.token_hash


class Accounting:
    def __init__(self, store: Store, prices: PriceTable, *, master_key: str | None, metrics: Metrics | None = None,
                 poll_interval: float = 2.0, writer_interval: float = 0.5, max_buffered_rows: int = 10_000,
                 spill_dir: str | None = None, admit_when_unavailable: bool = False) -> None:
        self.store = store
        self.prices = prices
        self.master_key = master_key
        self.metrics = metrics or Metrics()
        self.poll_interval = poll_interval
        self.instance_id = secrets.token_hex(6)
        self.outage = StoreOutage()  # one log line per change of the store's availability
        self.spill_dir = spill_dir
        # general_settings.allow_requests_on_db_unavailable: admit known keys from their last read state
        self.admit_when_unavailable = admit_when_unavailable
        self._local_rpm: dict[str, tuple[int, int]] = {}  # token hash -> (minute, count), while unavailable
        self.writer = SpendWriter(store, interval=writer_interval, max_rows=max_buffered_rows,
                                  on_flushed=self._flushed, outage=self.outage, spill_dir=spill_dir)
        self.grants: set[Grant] = set()
        self.keys: dict[str, KeyRecord] = {}  # the last known state of keys with live sessions
        self._warned_prices: set[str] = set()
        self._poller: asyncio.Task[None] | None = None
        self._last_heartbeat = 0.0
        self._last_purge = 0.0

    @property
    def master_hash(self) -> str:
        return hash_key(self.master_key) if self.master_key else ""

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        await replay_spills(self.store, self.spill_dir)  # rows saved at a shutdown during an outage
        self.writer.start()
        self._poller = asyncio.create_task(self._poll_loop(), name="livegate-accounting-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        held = [g.session_id for g in self.grants if g.holds_slot]
        try:
            await self.store.release_sessions(held)
        except StoreUnavailable as exc:
            self.outage.failed("freeing session slots at shutdown", exc, "they lapse after 30 s")
        await self.writer.stop()
        await self.store.close()

    async def readiness(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(5):
                await self.store.ping()  # a write: a full disk or a deleted file is unhealthy too
            reachable, error = True, None
        except (StoreUnavailable, TimeoutError) as exc:
            reachable, error = False, str(exc) or "timeout"
            self.outage.failed("readiness check", exc)
        writes_ok = self.writer.error is None
        if reachable and writes_ok:
            self.outage.recovered()
        return {"status": "healthy" if reachable and writes_ok else "unhealthy",
                "db": "connected" if reachable else "disconnected",
                "store": self.store.db.description.split(":", 1)[0],
                "store_error": error or self.writer.error,
                "store_unavailable_since": self.outage.since,
                "store_backlog": self.writer.backlog,
                "store_dropped_rows": self.writer.dropped,
                "active_sessions": len(self.grants)}

    # --- who is calling ------------------------------------------------------------------------------------

    async def principal(self, key: str | None, *, realtime: bool = False) -> Principal | Refusal:
        """Who is calling. A client secret is accepted only where `realtime` says the route opens realtime
        sessions for a browser (/v1/realtime, WebRTC): every other route refuses it (403) before any lookup."""
        if self.master_key and key is not None and hmac.compare_digest(key.encode(), self.master_key.encode()):
            return Principal("master", self.master_hash)
        if key is None:
            if self.master_key:
                return Refusal(401, "Missing API key: send `Authorization: Bearer <key>`.", "invalid_api_key")
            return Principal("open")
        if key.startswith(SECRET_PREFIX) and not realtime:
            return Refusal(403, "A client secret may only open realtime sessions (/v1/realtime); this route needs "
                                "an API key.", "forbidden")
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
            self.outage.failed("checking a key at a handshake", exc, self._handshake_consequence())
            record = self.keys.get(token_hash) if self.admit_when_unavailable and secret is None else None
            if record is None:
                return Refusal(503, "The key store is unavailable; try again shortly.", "store_unavailable")
        if record is None:
            return self._unknown(None)
        if record.deleted_at is not None:
            return Refusal(401, "API key deleted.", "invalid_api_key")
        if record.expired(now):
            return Refusal(401, "API key expired.", "invalid_api_key")
        return Principal("key", token_hash, record, secret)

    def _handshake_consequence(self) -> str:
        if self.admit_when_unavailable:
            return ("known keys are admitted from their last read state with limits counted on this instance "
                    "(allow_requests_on_db_unavailable); other handshakes get 503")
        return "virtual-key handshakes get 503 until it is back (allow_requests_on_db_unavailable is off)"

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
                self.outage.failed("refreshing the keys of live sessions", exc,
                                   "sessions go on; limits use the last known state")
            except Exception:
                log.exception("accounting poll failed")

    async def poll(self) -> None:
        """Refresh the keys of live sessions (deleted, expired, spent elsewhere) and heartbeat the sessions."""
        m = self.metrics
        m.store_backlog.set(self.writer.backlog)
        m.store_dropped.set(self.writer.dropped)
        m.store_up.set(0 if self.writer.error else 1)
        for grant in list(self.grants):
            grant.flush_counters()
        # Only the sessions live before the read are judged by it: one admitted while the read is in flight
        # was checked against the store at its admission, and the next poll reads its key too.
        watched = [g for g in self.grants if g.principal.kind == "key"]
        hashes = sorted({g.principal.token_hash for g in watched})
        now = time.time()
        if hashes:
            fresh = await self.store.get_keys(hashes, now)
            self.keys.update(fresh)
            for grant in watched:
                grant.check_key(fresh.get(grant.principal.token_hash), now)
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            await self.store.heartbeat([g.session_id for g in self.grants if g.holds_slot], now)
        if now - self._last_purge >= SECRET_PURGE_SECONDS:
            self._last_purge = now
            await self.purge_expired_secrets()

    async def purge_expired_secrets(self) -> None:
        await self.store.purge_secrets(time.time() - SECRET_PURGE_AFTER)


class Grant:
    """One admitted session or REST call: its usage, cost, limits and, at the end, its spend row."""

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
        self.meter = TurnUsageMeter()
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
            acct.outage.failed("counting a session's limits at a handshake", exc, acct._handshake_consequence())
            if not acct.admit_when_unavailable:
                return Refusal(503, "The key store is unavailable; try again shortly.", "store_unavailable")
            return self._admit_locally(key, now)
        if self.holds_slot and acct.writer.error is None:
            acct.outage.recovered()
        return None

    def _admit_locally(self, key: KeyRecord, now: float) -> Refusal | None:
        """Limits counted on this instance only, while the store cannot count them (allow_requests_on_db_
        unavailable): the key's sessions here against max_parallel_requests, its handshakes here this minute
        against rpm_limit."""
        acct = self.accounting
        minute = int(now // 60)
        seen, count = acct._local_rpm.get(key.token_hash, (minute, 0))
        count = count + 1 if seen == minute else 1
        acct._local_rpm[key.token_hash] = (minute, count)
        if key.rpm_limit is not None and count > key.rpm_limit:
            return Refusal(429, f"Rate limit exceeded: rpm_limit {key.rpm_limit} new sessions or calls per minute "
                                "for this key.", "rate_limit_exceeded")
        if self.session and key.max_parallel_requests is not None and sum(
                1 for g in acct.grants if g.session and g.principal.token_hash == key.token_hash) \
                >= key.max_parallel_requests:
            return Refusal(429, f"This key already has {key.max_parallel_requests} realtime sessions open "
                                "(max_parallel_requests).", "realtime_session_limit")
        return None

    def bind_model(self, model: str, upstream_model: str | None = None,
                   model_info: Mapping[str, Any] | None = None) -> Refusal | None:
        """Set the session's model (at the handshake, or at a passthrough's setup); a refusal if the key may
        not use it."""
        if not self.principal.allows(model, upstream_model):
            fixed = self.principal.secret_model
            if fixed is not None and fixed not in (model, upstream_model):
                return Refusal(403, f"This client secret was minted for the model '{fixed}', not '{model}'.",
                               "model_not_allowed")
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
            CLOSE_SESSION_TOO_LONG, "session_expired",
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
        if self.meter.observe(frame):
            self.usage_changed()
        elif len(frame) < 1024 and mentions(frame, '"newHandle"'):  # resumption updates are small frames
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

    def add_usage(self, usage_metadata: dict[str, Any]) -> None:
        """A whole report (REST calls)."""
        self.meter.pending = TokenUsage.from_metadata(usage_metadata)
        self.usage_changed()

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
                self.end(Stop(CLOSE_BUDGET_EXHAUSTED, "insufficient_quota",
                              f"The key's budget is spent (spend ${spend:.6f} of ${known.max_budget:.6f})."))

    def check_key(self, fresh: KeyRecord | None, now: float) -> None:
        if self.principal.kind != "key" or not self.session:
            return
        if fresh is None or fresh.deleted_at is not None:
            self.end(Stop(CLOSE_KEY_REVOKED, "invalid_api_key", "The API key was deleted."))
        elif fresh.expired(now):
            self.end(Stop(CLOSE_KEY_REVOKED, "invalid_api_key", "The API key expired."))
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
        cost = cost_of(usage, self.price)
        key = self.principal.key
        if key is not None and cost is not None and cost.total != self.reported_cost:
            acct.writer.add_spend(key.token_hash, cost.total - self.reported_cost)
            self.reported_cost = cost.total
        duration = time.monotonic() - self.started
        model = self.model or "-"
        if self.session:
            m.active_sessions.labels(self._metric_model, self.route).dec()
        m.sessions_ended.labels(self.route, close_code_label(close_code, http=not self.session)).inc()
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
               **{f"{name}_tokens": getattr(usage, name) + (getattr(usage, name.split("_")[0] + "_gap")
                                                            if name in ("input_text", "output_text") else 0)
                  for name in ("input_text", "input_audio", "input_image", "input_video", "input_cached",
                               "output_text", "output_audio", "output_thinking")},
               "request_tags": _json(self.tags), "end_user": self.end_user, "metadata": _json(metadata)}
        acct.writer.add_log(row)
        if self.holds_slot:
            try:
                await acct.store.release_sessions([self.session_id])
            except StoreUnavailable as exc:
                acct.outage.failed("freeing a session slot", exc, "slots not freed lapse after 30 s")
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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

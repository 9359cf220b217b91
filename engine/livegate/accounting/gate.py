"""The Accounting service: who may open a session or make a call (handshake checks, before any upstream
connection), what it costs while it runs (Grant), and when it must stop.

A session falls under the budgets and limits of its key, the key's team and the key's user (limits.py):
each must allow the model, have budget left and room under its limits; its spend is charged to all three.

Handshake refusals (HTTP status, error code): 401 `invalid_api_key` (unknown, expired, deleted or
regenerated key; expired client secret), 403 `key_blocked` / `team_blocked`, 403 `model_not_allowed`,
429 `budget_exceeded`, 429 `rate_limit_exceeded` (rpm_limit, tpm_limit), 429 `realtime_session_limit`
(max_parallel_requests), 503 `store_unavailable`, 503 `budget_unavailable` (the shared counters are out of
reach under fail_closed_budget_enforcement).

rpm, tpm and max_parallel_requests (leases with a TTL) are counted in the counters a fleet shares
(shared_limits.py: Redis, else PostgreSQL, else this process). Before each response of a session under a
budget or a tpm limit, its worst-case cost is reserved against every budget it falls under (Grant.
reserve_response, asked by the session core), and released once its usage was charged (settle_responses).

Mid-session stops close with these codes (livegate/close_codes.py), after an OpenAI `error` event on
/v1/realtime: BUDGET_EXHAUSTED (a budget, the key's, its team's or its user's, is spent), KEY_REVOKED (the
key was deleted, expired or regenerated), SESSION_TOO_LONG (the maximum duration), FORBIDDEN (the key or its
team was blocked, or an administrator ended the session).
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
from livegate.accounting.counters import Budget, Counters, Refused
from livegate.accounting.database import StoreUnavailable
from livegate.accounting.keys import SECRET_PREFIX, hash_key, label
from livegate.accounting.limits import Limits, Scope, spend_counter
from livegate.accounting.metrics import Metrics, close_code_label
from livegate.accounting.outage import StoreOutage
from livegate.accounting.owners import TeamRecord, UserRecord
from livegate.accounting.prices import Price, PriceTable
from livegate.accounting.recent import RecentErrors
from livegate.accounting.reservation import DEFAULT_OUTPUT_TOKENS, worst_case
from livegate.accounting.shared_limits import Granted, SharedLimits, Unavailable
from livegate.accounting.spill import replay_spills
from livegate.accounting.store import KeyRecord, SecretRecord, Store
from livegate.accounting.writer import SpendWriter
from livegate.close_codes import BUDGET_EXHAUSTED, FORBIDDEN, KEY_REVOKED, SESSION_TOO_LONG, Refusal
from livegate.translation.commands import ReservationRefused
from livegate.translation.observer import ClientMessage, SessionObserver
from livegate.translation.usage import UsageLedger

log = logging.getLogger("livegate.accounting")

HEARTBEAT_SECONDS = 10.0
SECRET_PURGE_SECONDS = 60.0  # how often expired client secrets are deleted
SECRET_PURGE_AFTER = 600.0  # kept this long past expiry, so a late client hears "expired", not "invalid"


@dataclass(frozen=True)
class Stop:
    close_code: int
    code: str
    message: str


TERMINATED = Stop(FORBIDDEN, "session_terminated", "An administrator ended this session.")
REGENERATED = Stop(KEY_REVOKED, "invalid_api_key", "The API key was regenerated: this key no longer works.")


def blocked_stop(scope: Scope) -> Stop:
    return Stop(FORBIDDEN, f"{scope.kind}_blocked", f"{scope.capitalized} was blocked by an administrator.")


@dataclass
class Principal:
    """Who is calling: the master key, anyone (open gateway), or a virtual key (maybe through a client secret)."""

    kind: str  # "master" | "open" | "key"
    token_hash: str = ""
    key: KeyRecord | None = None
    secret: SecretRecord | None = None
    team: TeamRecord | None = None  # the key's team and user, whose budgets and limits apply too
    user: UserRecord | None = None

    @property
    def label(self) -> str:
        if self.kind == "key" and self.key is not None:
            return label(self.token_hash, self.key.key_alias)
        return self.kind

    @property
    def limits(self) -> Limits:
        """Every budget and limit this caller falls under (none for the master key and an open gateway)."""
        return Limits.of(self.key, self.team, self.user) if self.key is not None else Limits()

    @property
    def secret_model(self) -> str | None:
        """The model a client secret was minted for (its `session.model`), if it names one."""
        model = self.secret.session.get("model") if self.secret is not None and self.secret.session else None
        return model if isinstance(model, str) else None

    def allows(self, *names: str | None) -> bool:
        """Is one of these model names (client name, upstream id) allowed by the key, its team and its user?
        (an empty `models` allows all) A client secret minted for a model allows that model only, whoever
        minted it (the master key included)."""
        if self.secret_model is not None and self.secret_model not in names:
            return False
        return self.limits.allows(*names)

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

    @property
    def opener(self) -> str:
        """Who opened a session, as the shared store records it for a take-over (takeover/): a client secret
        by its own hash (`secret:<hash>`), else the key's hash ('' on an open gateway). A take-over needs the
        same opener (or the master key itself), the rule of may_reattach."""
        return f"secret:{self.secret.secret_hash}" if self.secret is not None else self.token_hash

    def may_hang_up(self, owner: Principal) -> bool:
        """May this caller end a WebRTC call `owner` opened? As may_reattach, and also the parent key over its
        secrets' calls: the server that minted a browser's secret ends that browser's call (as with OpenAI,
        whose servers hang up with their API key). Sibling secrets still may not."""
        if self.secret is None and self.kind == "key" and self.token_hash == owner.token_hash:
            return True
        return self.may_reattach(owner)


class Accounting:
    def __init__(self, store: Store, prices: PriceTable, *, master_key: str | None, metrics: Metrics | None = None,
                 poll_interval: float = 2.0, writer_interval: float = 0.5, max_buffered_rows: int = 10_000,
                 limits: SharedLimits | None = None, reservation_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
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
        self.teams: dict[str, TeamRecord] = {}  # ... and of their teams and users
        self.users: dict[str, UserRecord] = {}
        self.recent_errors = RecentErrors()  # for the admin page: refusals and failed sessions, this instance
        # Upstream model ids served only by the simulator, and the capability table naming the price each one
        # is charged at (its row's `price`): a budget can be tried offline.
        self.simulated: frozenset[str] = frozenset()
        self.models: Any = None
        self._warned_prices: set[str] = set()
        self._poller: asyncio.Task[None] | None = None
        self._last_heartbeat = 0.0
        self.store_error: str | None = None
        # rpm, tpm, leases and reservations, shared by the fleet (shared_limits.py)
        self.limits = limits or SharedLimits()
        self.limits.on_state = lambda up: self.metrics.counters_up.set(1 if up else 0)
        self.reservation_output_tokens = reservation_output_tokens
        self._renewer: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    @property
    def master_hash(self) -> str:
        return hash_key(self.master_key) if self.master_key else ""

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        await self.limits.start()
        self.metrics.counters_up.set(1 if self.limits.up else 0)
        await replay_spills(self.store, self.spill_dir)  # rows saved at a shutdown during an outage
        self.writer.start()
        self._poller = asyncio.create_task(self._poll_loop(), name="livegate-accounting-poller")
        self._renewer = asyncio.create_task(self._renew_loop(), name="livegate-lease-renewer")

    async def stop(self) -> None:
        for task in (self._poller, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        held = [g.session_id for g in self.grants if g.holds_slot]
        try:
            await self.store.release_sessions(held)
        except StoreUnavailable as exc:
            self.outage.failed("freeing session slots at shutdown", exc, "they lapse after 30 s")
        for grant in list(self.grants):
            await grant.release_limits()
        await self.limits.stop()
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
                **await self.limits.readiness(),
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
        if record.regenerated_to is not None:
            return Refusal(401, "API key regenerated: this key no longer works, use the new one.", "invalid_api_key")
        if record.deleted_at is not None:
            return Refusal(401, "API key deleted.", "invalid_api_key")
        if record.expired(now):
            return Refusal(401, "API key expired.", "invalid_api_key")
        try:
            team, user = await self._owners(record, now)
        except StoreUnavailable as exc:
            self.outage.failed("reading a key's team and user at a handshake", exc, self._handshake_consequence())
            cached = self._cached_owners(record) if self.admit_when_unavailable else None
            if cached is None:
                return Refusal(503, "The key store is unavailable; try again shortly.", "store_unavailable")
            team, user = cached
        if isinstance(team, Refusal):
            return team
        who = Principal("key", token_hash, record, secret, team, user)
        blocked = who.limits.blocked()
        if blocked is not None:
            return Refusal(403, f"{blocked.capitalized} is blocked: ask an administrator.",
                           f"{blocked.kind}_blocked")
        return who

    async def _owners(self, record: KeyRecord, now: float) -> tuple[TeamRecord | Refusal | None, UserRecord | None]:
        """The key's team and user (a key whose owner is gone is refused, as it lost the budget it was given
        under)."""
        team = await self.store.get_team(record.team_id, now) if record.team_id else None
        user = await self.store.get_user(record.user_id, now) if record.user_id else None
        if (record.team_id and team is None) or (record.user_id and user is None):
            return Refusal(401, "API key deleted (its team or user no longer exists).", "invalid_api_key"), None
        return team, user

    def _cached_owners(self, record: KeyRecord) -> tuple[TeamRecord | None, UserRecord | None] | None:
        """The key's team and user as last read (None when one of them was never read here: its limits are
        unknown, so the handshake is refused)."""
        team = self.teams.get(record.team_id) if record.team_id else None
        user = self.users.get(record.user_id) if record.user_id else None
        if (record.team_id and team is None) or (record.user_id and user is None):
            return None
        return team, user

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
            self.record_refusal(route, model, key if isinstance(key, str) else None, principal)
            return principal
        grant = Grant(self, principal, route, headers or {}, end_user, session, max_session_seconds)
        refusal = await grant.check_admission(model, upstream_model, model_info)
        if refusal is not None:
            self.metrics.refusals.labels(route, refusal.code).inc()
            self.recent_errors.refusal(route, model, principal.label, refusal.status, refusal.code, refusal.message)
            return refusal
        grant.open()
        return grant

    def record_refusal(self, route: str, model: str | None, key: str | None, refusal: Refusal) -> None:
        """Keep a refusal for the admin page, naming the key by its hash prefix (an unknown key too)."""
        who = label(hash_key(key)) if key else "-"
        self.recent_errors.refusal(route, model, who, refusal.status, refusal.code, refusal.message)

    def price(self, upstream_model: str | None, model_info: Mapping[str, Any] | None) -> Price | None:
        if upstream_model in self.simulated and self.models is not None:  # priced like the model it imitates
            upstream_model = self.models.price_model(upstream_model)
        price = self.prices.lookup(upstream_model, dict(model_info) if model_info else None)
        if price is None and upstream_model not in self._warned_prices:
            self._warned_prices.add(upstream_model or "")
            log.warning("no price for model %r (mappings/prices.yaml or the entry's model_info): its cost is "
                        "recorded as unknown, not free", upstream_model)
        return price

    def key_spend(self, token_hash: str) -> float:
        key = self.keys.get(token_hash)
        return (key.spend if key else 0.0) + self.writer.unflushed_spend(token_hash)

    def spend_of(self, scope: Scope) -> float:
        """A key's, team's or user's spend this period: the last state read plus what is queued."""
        caches: dict[str, dict[str, Any]] = {"key": self.keys, "team": self.teams, "user": self.users}
        record = caches[scope.kind].get(scope.ident) or scope.record
        return record.spend + self.writer.unflushed_spend(scope.account)

    def _flushed(self, spend: dict[str, float]) -> None:
        for token_hash, amount in spend.items():
            if token_hash in self.keys:
                self.keys[token_hash].spend += amount
            elif token_hash.startswith("team:") and token_hash[5:] in self.teams:
                self.teams[token_hash[5:]].spend += amount
            elif token_hash.startswith("user:") and token_hash[5:] in self.users:
                self.users[token_hash[5:]].spend += amount
        self.metrics.store_up.set(1)

    # --- ending sessions from outside (key API, admin page, budgets shared by several sessions) -----------

    def end_sessions(self, applies: Any, stop: Stop) -> int:
        """End this instance's live sessions for which `applies(grant)` is true; how many were ended."""
        ended = 0
        for grant in list(self.grants):
            if grant.session and applies(grant):
                grant.end(stop)
                ended += 1
        return ended

    def enforce_budget(self, scope: Scope) -> None:
        """A budget shared by several sessions ran out: every session under it stops, not only the one whose
        usage crossed it."""
        for grant in list(self.grants):
            under = grant.principal.limits.scope(scope.kind)
            if grant.stop is None and under is not None and under.ident == scope.ident:
                grant.check_budget()

    async def refresh_owners(self, now: float) -> None:
        """Re-read the teams and users of live sessions (budgets spent elsewhere, blocks, changed settings)."""
        keys = [g.principal.key for g in self.grants if g.principal.key is not None]
        team_ids = sorted({k.team_id for k in keys if k.team_id})
        user_ids = sorted({k.user_id for k in keys if k.user_id})
        if team_ids:
            self.teams.update(await self.store.get_teams(team_ids, now))
        if user_ids:
            self.users.update(await self.store.get_users(user_ids, now))

    async def apply_stop_requests(self) -> None:
        """Sessions of this instance an administrator ended from another instance's admin page."""
        if any(g.holds_slot for g in self.grants):
            wanted = set(await self.store.stop_requests(self.instance_id))
            if wanted:
                self.end_sessions(lambda g: g.session_id in wanted, TERMINATED)

    async def _renew_loop(self) -> None:
        """Leases and reservations of live sessions lapse `ttl` after their last renewal: renewed three times a
        ttl, so only a dead instance's lapse."""
        while True:
            await asyncio.sleep(self.limits.ttl / 3)
            by_store: dict[Counters, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
            for lease, store in list(self.limits.standing.items()):
                by_store.setdefault(store, ([], []))[0].append(lease)
            for grant in list(self.grants):
                if grant.lease_store is not None and grant.leases:
                    by_store.setdefault(grant.lease_store, ([], []))[0].extend(grant.leases)
                for store, holds in grant.reservations.values():
                    by_store.setdefault(store, ([], []))[1].extend(holds)
            try:
                await self.limits.renew(by_store)
            except Exception:
                log.exception("renewing leases failed")

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
        await self.refresh_owners(now)
        await self.apply_stop_requests()
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
        # leases (max_parallel_requests) and response reservations, in the store that granted them
        self.lease_store: Counters | None = None
        self.leases: list[tuple[str, str]] = []
        self.reservations: dict[int, tuple[Counters, list[tuple[str, str]]]] = {}
        self.reported_tokens = 0
        self.end_user = end_user or _header(headers, "x-livegate-end-user", "x-litellm-end-user-id", "x-end-user")
        header_tags = [t.strip() for t in (_header(headers, "tags", "x-litellm-tags") or "").split(",") if t.strip()]
        key_tags = principal.key.tags if principal.key else []
        team_tags = principal.team.tags if principal.team else []
        self.tags = list(dict.fromkeys([*key_tags, *team_tags, *header_tags]))[:32]
        limits = [s for s in (max_session_seconds, principal.limits.max_session_seconds()) if s]
        self.max_seconds = min(limits) if limits else None
        self._timer: asyncio.TimerHandle | None = None
        self._frames = {"from_client": [0, 0], "from_upstream": [0, 0]}
        self._errors = 0
        self._resumptions = 0
        self._metric_model = "-"
        self.transcript: str | None = None  # the session's transcript (store_prompts_in_spend_logs), JSON
        self.client_session_id: str | None = None  # the OpenAI session id its client knows (sess_...)

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
        acct, now, limits = self.accounting, time.time(), self.principal.limits
        acct.keys[key.token_hash] = key
        if self.principal.team is not None:
            acct.teams[self.principal.team.team_id] = self.principal.team
        if self.principal.user is not None:
            acct.users[self.principal.user.user_id] = self.principal.user
        spent = limits.exhausted(acct.spend_of)
        if spent is not None:
            scope, spend = spent
            owner = "" if scope.kind == "key" else f" ({scope.name})"
            return Refusal(429, f"Budget has been exceeded{owner}! Current cost: {spend:.6f}, Max budget: "
                                f"{scope.setting('max_budget'):.6f}", "budget_exceeded")
        leases = limits.lease_scopes() if self.session else []
        try:
            answer = await acct.limits.admit(
                self.session_id, [(s.account, n) for s, n in limits.rate_limits()],
                [(s.account, n) for s, n in limits.tpm_limits()], [(name, n) for _, name, n in leases],
                budgeted=limits.budgeted())
        except Unavailable:
            return Refusal(503, "The shared budget counters cannot be reached and fail_closed_budget_enforcement is "
                                "on: this key is under a budget, so nothing can start now; try again shortly.",
                           "budget_unavailable")
        if isinstance(answer, Refused):
            return self._refusal(answer)
        self.lease_store, self.leases = answer.store, [(name, self.session_id) for _, name, _ in leases]
        if self.session:  # the registry of live sessions (the admin page, ending a session from another instance)
            try:
                await acct.store.acquire_session_slot(key.token_hash, self.session_id, acct.instance_id, model,
                                                      self.route, now, [], team_id=key.team_id, user_id=key.user_id)
            except StoreUnavailable as exc:
                acct.outage.failed("registering a session at a handshake", exc, acct._handshake_consequence())
                if not acct.admit_when_unavailable:
                    await self.release_limits()
                    return Refusal(503, "The key store is unavailable; try again shortly.", "store_unavailable")
                return None  # its limits were counted by the shared counters (this instance's while they are out)
            self.holds_slot = True
        if self.holds_slot and acct.writer.error is None:
            acct.outage.recovered()
        return None

    def _refusal(self, refused: Refused) -> Refusal:
        """The handshake refusal naming the limit that refused (the key, its team or its user)."""
        limits = self.principal.limits
        scope = next((s for s in limits.scopes if refused.name in (s.account, f"lease:{s.account}")), None)
        name = scope.name if scope is not None else refused.name
        if refused.kind == "rpm":
            return Refusal(429, f"Rate limit exceeded: rpm_limit {refused.limit:.0f} new sessions or calls per minute "
                                f"for {name}.", "rate_limit_exceeded")
        if refused.kind == "tpm":
            return Refusal(429, f"Rate limit exceeded: tpm_limit {refused.limit:.0f} tokens per minute for {name} "
                                f"({refused.used:.0f} used this minute).", "rate_limit_exceeded")
        whose = scope.capitalized if scope is not None else name
        return Refusal(429, f"{whose} already has {refused.limit:.0f} realtime sessions open "
                            "(max_parallel_requests).", "realtime_session_limit")

    # --- reservations (asked by the session core before Gemini is sent what may start a response) ----------

    @property
    def reserves(self) -> bool:
        """Must each response of this session be reserved first (a budget or a tpm limit applies)?"""
        return self.session and self.principal.limits.reserves()

    async def reserve_response(self, number: int, max_output_tokens: int | None) -> ReservationRefused | None:
        """Hold one response's worst-case cost against every budget of the session; check its tpm limits."""
        acct, limits = self.accounting, self.principal.limits
        scopes = limits.budgets()
        amount, cap = worst_case(self.price, max_output_tokens, acct.reservation_output_tokens,
                                 self.meter.last_report)
        budgets = [Budget(s.account, spend_counter(s), float(s.setting("max_budget")), acct.spend_of(s))
                   for s in scopes]
        holder = f"{self.session_id}#{number}"
        try:
            answer = await acct.limits.reserve(holder, budgets, amount,
                                               [(s.account, n) for s, n in limits.tpm_limits()])
        except Unavailable:
            acct.metrics.response_refusals.labels("budget_unavailable").inc()
            return ReservationRefused(
                "This response was not started: the shared budget counters cannot be reached and "
                "fail_closed_budget_enforcement is on. Nothing was sent to Gemini; the session goes on.",
                "budget_unavailable", "server_error")
        if isinstance(answer, Granted):
            self.reservations[number] = (answer.store, [(b.account, holder) for b in budgets])
            return None
        scope = next((s for s in limits.scopes if s.account == answer.name), None)
        name = scope.name if scope is not None else "a budget"
        if answer.kind == "tpm":
            acct.metrics.response_refusals.labels("rate_limit_exceeded").inc()
            return ReservationRefused(
                f"This response was not started: tpm_limit {answer.limit:.0f} tokens per minute for {name} is "
                f"reached ({answer.used:.0f} used this minute). Nothing was sent to Gemini.", "rate_limit_exceeded")
        acct.metrics.response_refusals.labels("budget_exceeded").inc()
        left = max(answer.limit - answer.used, 0.0)
        return ReservationRefused(
            f"This response was not started: the budget of {name} has ${left:.6f} left (max_budget "
            f"${answer.limit:.6f}, spent or held by responses under way ${answer.used:.6f}), less than this "
            f"response may cost (${amount:.6f}: up to {cap} output tokens at the model's price). Nothing was sent "
            "to Gemini; the session goes on.", "budget_exceeded")

    def settle_responses(self, numbers: tuple[int, ...]) -> None:
        """These responses are over and their usage was charged: release what they held (queued, no I/O)."""
        for number in numbers:
            held = self.reservations.pop(number, None)
            if held is not None:
                self.accounting.limits.settle(*held)

    async def release_limits(self) -> None:
        """Free the session's leases and reservations (at its end; a lost release lapses after the TTL)."""
        self.settle_responses(tuple(self.reservations))
        if self.lease_store is not None and self.leases:
            leases, self.leases = self.leases, []
            await self.accounting.limits.release(self.lease_store, leases)

    def bind_model(self, model: str, upstream_model: str | None = None,
                   model_info: Mapping[str, Any] | None = None) -> Refusal | None:
        """Set the session's model (at the handshake, or at a passthrough's setup); a refusal if the key may
        not use it."""
        fixed = self.principal.secret_model
        if fixed is not None and fixed not in (model, upstream_model):
            return Refusal(403, f"This client secret was minted for the model '{fixed}', not '{model}'.",
                           "model_not_allowed")
        refusing = self.principal.limits.refusing_model(model, upstream_model)
        if refusing is not None:
            whose = "This key is" if refusing.kind == "key" else f"This key's {refusing.name} is"
            return Refusal(403, f"{whose} not allowed to use the model '{model}'.", "model_not_allowed")
        self.model, self.upstream_model = model, upstream_model or model
        self.price = self.accounting.price(self.upstream_model, model_info)
        self.meter.cumulative = bool(self.price and self.price.cumulative_usage)
        if self.price is None and self.principal.limits.budgeted():
            return Refusal(403, f"The model '{model}' has no price on this gateway, so a key with a budget (its own, "
                                "its team's or its user's) cannot use it.", "model_not_allowed")
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

    def client_messages(self, messages: list[ClientMessage]) -> None:
        """Messages sent to an OpenAI client: error events are counted (JSON text is a wire template's, never
        an error)."""
        for message in messages:
            if type(message) is dict and message.get("type") == "error":
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
        if self.principal.key is None:
            return
        self.count_tokens()
        cost = self.cost()
        if cost is None:
            return
        delta, self.reported_cost = cost.total - self.reported_cost, cost.total
        self.charge(delta)
        exhausted = self.check_budget()
        if exhausted is not None and delta:
            self.accounting.enforce_budget(exhausted)  # other sessions under the same budget stop too

    def count_tokens(self) -> None:
        """Tokens reported since the last count go to the tpm counters of the scopes that have a tpm_limit."""
        total = self.meter.current().total_tokens
        delta, self.reported_tokens = total - self.reported_tokens, total
        scopes = self.principal.limits.tpm_limits()
        if delta > 0 and scopes:
            self.accounting.limits.charge(self._counter_store(), {}, {s.account: delta for s, _ in scopes})

    def charge(self, amount: float) -> None:
        """Spend goes to the key, its team and its user (queued, no I/O), and to the shared spend counters of
        those under a budget (a new counter starts from the spend as known before this charge)."""
        if not amount:
            return
        acct = self.accounting
        budgets = {spend_counter(s): (amount, acct.spend_of(s)) for s in self.principal.limits.budgets()}
        for scope in self.principal.limits.scopes:
            acct.writer.add_spend(scope.account, amount)
        if budgets:
            acct.limits.charge(self._counter_store(), budgets, {})

    def _counter_store(self) -> Counters | None:
        """Where this session's spend is counted: the store of its latest reservation (the holds its spend
        replaces), else the shared one."""
        return next(reversed(self.reservations.values()))[0] if self.reservations else None

    def check_budget(self) -> Scope | None:
        """The scope whose budget is spent, if one is; a session is ended then (a REST call has already run,
        but the sessions sharing its budget must stop: usage_changed)."""
        spent = self.principal.limits.exhausted(self.accounting.spend_of)
        if spent is None:
            return None
        scope, spend = spent
        if self.session:
            self.end(Stop(BUDGET_EXHAUSTED, "insufficient_quota", f"The budget of {scope.name} is spent "
                          f"(spend ${spend:.6f} of ${scope.setting('max_budget'):.6f})."))
        return scope

    def check_key(self, fresh: KeyRecord | None, now: float) -> None:
        if self.principal.kind != "key" or not self.session or fresh is None:
            return  # (None: admitted while the poll read the keys; key rows are never removed, only marked)
        if fresh.regenerated_to is not None:
            self.end(REGENERATED)
        elif fresh.deleted_at is not None:
            self.end(Stop(KEY_REVOKED, "invalid_api_key", "The API key was deleted."))
        elif fresh.expired(now):
            self.end(Stop(KEY_REVOKED, "invalid_api_key", "The API key expired."))
        else:
            acct = self.accounting
            self.principal.key = fresh
            # A key moved to another team or user: its new owner is read at the next poll (deleting an owner
            # deletes its keys, which the checks above catch).
            self.principal.team = acct.teams.get(fresh.team_id) if fresh.team_id else None
            self.principal.user = acct.users.get(fresh.user_id) if fresh.user_id else None
            blocked = self.principal.limits.blocked()
            if blocked is not None:
                self.end(blocked_stop(blocked))
            else:
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
        if key is not None:
            self.count_tokens()
        if key is not None and cost is not None and cost.total != self.reported_cost:
            self.charge(cost.total - self.reported_cost)
            self.reported_cost = cost.total
        await self.release_limits()
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
               **{f"{name}_tokens": billed[name] + (billed[name.split("_")[0] + "_gap"]
                                                     if name in ("input_text", "output_text") else 0)
                  for name in ("input_text", "input_audio", "input_image", "input_video", "input_cached",
                               "output_text", "output_audio", "output_thinking")},
               "request_tags": _json(self.tags), "end_user": self.end_user, "metadata": _json(metadata),
               "team_id": key.team_id if key else None, "user_id": key.user_id if key else None}
        if self.client_session_id is not None:
            row["session_id"] = self.client_session_id
        if self.transcript is not None:
            row["transcript"] = self.transcript  # written to livegate_transcripts (store.py)
        acct.writer.add_log(row)
        if status != "success":
            acct.recent_errors.session_failed(self.route, self.model, self.principal.label, close_code, reason,
                                              self.stop.code if self.stop else None)
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


def mentions(frame: str | bytes, needle: str) -> bool:
    return (needle.encode() in frame) if isinstance(frame, bytes) else (needle in frame)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

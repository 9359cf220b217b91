"""The session core: one OpenAI Realtime session over a succession of Gemini Live connections, sans-I/O.

Theory of operation (docs/internals/session-core.md tells it at length)
---------------------------------------------------------------------
The core owns every piece of protocol state of a session: the translator's session state, which Gemini
connection carries the session, the input held while a connection opens, Gemini's continuation held for the
client's request, the timers and what their expiry means, the recoveries. Its pump (server/realtime.py) owns
the sockets and the event loop, and decides nothing: it feeds each input in and carries out what comes back.

Inputs (each returns an `Output`: client messages, Gemini messages for `Output.link`, then commands):

    start()                          the client connected
    client_frame(frame)              one client frame (str, bytes, or an already-parsed event)
    upstream_frame(link, frame)      one frame from Gemini connection `link`
    upstream_opened(link, first)     `OpenUpstream` succeeded; `first` is Gemini's answer to the setup
    upstream_failed(link, failure)   `OpenUpstream` failed (an UpstreamFailure)
    upstream_closed(link, code, why) the connection `link` closed
    timer_expired(timer)             a timer the core armed (SetTimer) expired
    mcp_result(request, result)      an MCP request the core commanded (McpRequest) finished
    side_result(request, event)      an out-of-band response's side call (GenerateRequest) streamed
    stop(message, code, close_code)  accounting stopped the session
    reservation_answered(n, refusal) the answer to `Reserve(n)`: None (held) or a ReservationRefused
    drain(deadline)                  the gateway drains (SIGTERM): close 1012 at the next turn boundary
    take_over()                      a session restored from the store (takeover/) is carried on here
    guardrail_decided(check, decision) the guardrails decided on a held input (CheckGuardrail)

Commands (translation/commands.py): SetTimer, OpenUpstream, CloseUpstream, CloseClient, Reserve, Settle,
McpRequest, GenerateRequest, CheckGuardrail, StoreSession (with `checkpoints`: a snapshot whenever the
`checkpoint` or `between_turns` answer changes). Questions: the core reads the session state only through the
named expressions of mappings/resumption.yaml, asked again only when a key they read changed, so an audio chunk
costs two identity checks and no command.

Reservations (a session under a budget or a tokens-per-minute limit, `reserve=True`): a message that may start a
response (resumption.yaml's `reserve_before`) reaches Gemini only while the session holds a reservation. The
core asks for one (`Reserve`) and holds that content until the answer; a refused one drops it and runs
lifecycle/response_refused (the client is told why). A reservation is spent when Gemini comes to owe an answer
while it is held (`turn_pending` rises), and settled (`Settle`) once that answer is over and its usage came;
content after that needs the next one. So each response is covered by a reservation taken before Gemini was
sent what started it, and a session holds at most one reservation it has not spent. Content passes the gate
once: what waited in a connection's queue is not gated again when it opens, nor is the watchdog's re-ask of an
answer already owed (its reservation was spent by that answer).

Invariants: frames of a connection other than `link` are dropped (a connection the session moved away from
is over, whatever it still says); while a connection opens, Gemini-bound messages are queued in order (audio
bounded); once the client is being closed, nothing more is opened or sent to Gemini; time is the injected
clock's, so tests drive it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livegate.close_codes import BAD_GATEWAY, NORMAL, SERVICE_RESTART
from livegate.mapping.expressions import truthy
from livegate.translation.commands import (
    CheckGuardrail,
    CloseClient,
    CloseUpstream,
    GenerateRequest,
    McpRequest,
    OpenUpstream,
    ReservationRefused,
    Reserve,
    SetTimer,
    Settle,
    StoreSession,
    Timer,
    UpstreamFailure,
)
from livegate.translation.guarding import GuardrailCheck
from livegate.translation.observer import SessionObserver
from livegate.translation.resumption import InputQueue, ResumptionPolicy, duration_s
from livegate.translation.snapshot import Snapshot
from livegate.translation.translator import Output, Translator
from livegate.translation.watchdog import RECOVERY_KINDS, Action, Failure, Ladder, WatchdogSettings

log = logging.getLogger("livegate.session")

_EARLY = 0.005  # a timer may fire this much before its deadline (the event loop's clock resolution)
# After a refused reservation, content is dropped without asking again for this long (doubling while refusals go
# on, up to the maximum): a session streaming audio would otherwise ask once per chunk.
_REFUSED_QUIET_S = 1.0
_REFUSED_QUIET_MAX_S = 16.0

# A draining session at rest waits this long for the handle of the turn it just finished (Gemini sends it
# right after turnComplete), so that another instance resumes instead of re-seeding.
HANDLE_WAIT_S = 1.0
_UNASKED = object()
# What the client is told when the session's first connection cannot be opened: (message, error code).
_FIRST_FAILURE = {
    "timeout": ("Gemini Live did not answer the session setup in time.", "upstream_timeout"),
    "credentials": ("Gemini Live credentials failed: {detail}", "upstream_auth_failed"),
    "unreachable": ("{detail}", "upstream_unavailable"),
    "other": ("livegate could not open the Gemini Live session.", "upstream_unavailable"),
}


@dataclass(frozen=True, slots=True)
class _Opening:
    link: int
    mode: str  # "first", "handle", "fresh"
    recovering: bool  # the session lost its connection (not a goAway, not a reconfiguration)
    old: int | None  # the connection the session moves away from
    attempt: int = 0  # how many times this move was tried before (retry_after_s)
    relocate: bool = False  # to another deployment of the pool (a retry goes there too)


class SessionCore:
    def __init__(self, translator: Translator, policy: ResumptionPolicy | None = None, *,
                 stall_after_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 observer: SessionObserver | None = None, relocations: int = 0, checkpoints: bool = False,
                 reserve: bool = False, watchdog: WatchdogSettings | None = None) -> None:
        self.translator = translator
        self.policy = policy or translator.mappings.resumption or ResumptionPolicy.load()
        self.stall_after_s = stall_after_s
        self.watchdog = watchdog or WatchdogSettings()
        translator.config.setdefault("watchdog", self.watchdog.context())
        self._ladder = Ladder(self.watchdog)
        self.now = clock  # seconds; deadlines in SetTimer are on this clock
        if observer is not None:
            translator.observer = observer
        self.observer = translator.observer
        self.link: int | None = None  # the connection carrying the session: its frames are translated
        self.switches = 0  # connections the session moved to (goAway, reconfiguration, recovery)
        self.recoveries = 0  # failed connections recovered since the last new handle
        # A connection failing beyond recovery moves the session to another deployment of its pool (the pump's
        # upstream picks it), at most `relocations` times in a row; 0 without a pool.
        self.relocations_allowed = relocations
        self.relocations = 0
        self.closing = False  # the client's connection is being closed
        self._last_link = 0
        self._opening: _Opening | None = None
        self._queue: InputQueue | None = None  # Gemini-bound messages held while a connection opens
        self._stopped = False  # accounting stopped the session: nothing more reaches Gemini
        self._held: list[Any] = []  # Gemini's continuation, held for the client's response.create
        self._awaits = False  # the `awaits_request` answer (read for every Gemini frame)
        self._armed: set[Timer] = set()
        self._last_frame = clock()
        self._pending_since: float | None = None  # when Gemini came to owe an answer
        self._owed_since: float | None = None  # when Gemini came to owe an answer it has not begun (watchdog)
        self._giving_up = False  # the watchdog is ending a turn itself (its response is not Gemini's output)
        self._deadline_passed = False  # a goAway's deadline passed while a tool call waited for its output
        self._retry: _Opening | None = None  # a move waiting for Timer.RECONNECT to be tried again
        self._idle_since = 0.0
        self._user_idle_due: float | None = None
        self._recovery_mark: Any = None  # the handle when the session last recovered
        self.checkpoints = checkpoints  # hand the pump a snapshot to store at each checkpoint (takeover/)
        self._draining: float | None = None  # the drain deadline, while the gateway drains
        self._rest_since = 0.0  # when the session last came to rest (no turn in flight)
        # The questions' answers, for the session state `_seen`; `_recheck` asks for a review regardless.
        self._questions = tuple(self.policy.questions.values())
        self._watched = frozenset().union(*(q.keys for q in self._questions))
        self._answers: dict[str, Any] = {}
        self._seen: dict[str, Any] | None = None
        self._recheck = False
        # Inputs held for the guardrails, by side ("client", "upstream"): the check under way, and the inputs
        # that came after it, translated in order once it is decided.
        self._checks: dict[str, tuple[int, GuardrailCheck]] = {}
        self._parked: dict[str, deque[Any]] = {}
        self._check_seq = 0
        self._scope: dict[str, Any] = {"session": None, "config": translator.config,
                                       "tables": translator.mappings.tables}
        # Reservations (see the module docstring): the current one's number and state ("none", "asking",
        # "held"), the content waiting for the answer, spent ones awaiting their usage (number, usage reports
        # read when it was spent), and the quiet period after a refusal.
        self._reserve = reserve
        self._reservation = "none"
        self._number = 0
        self._unreserved: InputQueue | None = None
        self._unreserved_event_id: str | None = None
        self._spend_on_grant = False  # Gemini came to owe an answer while asking: the grant is spent at once
        self._spent: list[tuple[int, int]] = []
        # Gemini-bound messages of the input being handled that the gate lets by (by id): what waited in the
        # queue of a connection that opened (it passed the gate when it was queued), and the watchdog's re-ask
        # (covered by the reservation the answer it asks again spent). Gating them again would ask a second
        # reservation while the answer is owed, which no rising turn_pending would spend: held for good.
        self._covered: set[int] = set()
        self._pending = False  # turn_pending's truth, for its rising and falling edges
        self._rose = False  # it rose during this input
        self._input_event_id: str | None = None  # the event_id of the client event being handled
        self._refused: ReservationRefused | None = None
        self._refused_until = 0.0
        self._quiet_s = _REFUSED_QUIET_S

    # -- what the pump may ask ---------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self.translator.dialect

    @property
    def session_id(self) -> str | None:
        value = self._answers.get("session_id")
        return value if isinstance(value, str) else None

    def snapshot(self) -> Snapshot:
        """The session's resumable state now, for another process to carry it on (takeover/)."""
        config = self.translator.config
        return Snapshot(self.session_id or "", self.translator.dialect, config.get("intent"),
                        self.translator.resumable_state(), truthy(self._answers.get("between_turns")))

    def usage_summary(self) -> dict[str, Any]:
        """The session's token usage so far, by modality (the usage ledger's), for the session log line."""
        return self.translator.usage.current().summary()

    # -- inputs ------------------------------------------------------------------------------------

    def start(self) -> Output:
        return self._after(self.translator.start())

    def client_frame(self, frame: str | bytes | dict[str, Any]) -> Output:
        if "client" in self._checks:  # an earlier client input is under check: this one waits behind it
            self._parked["client"].append(frame)
            return Output()
        return self._after(self._client_input(frame))

    def _client_input(self, frame: str | bytes | dict[str, Any]) -> Output:
        out = self.translator.from_client(frame)
        self._input_event_id = self.translator.last_event_id
        if out.check is not None:
            self._begin_check(out)
        if self._held:  # the response.create Gemini's continuation waited for may have come
            self._settle(out)
            if self._held and not self._awaits:
                self._release(out)
        return out

    def upstream_frame(self, link: int, frame: str | bytes | dict[str, Any]) -> Output:
        if link != self.link:
            return Output()  # a connection the session moved away from
        self._last_frame = self.now()
        if "upstream" in self._checks:  # an earlier frame is under check: this one waits behind it
            self._parked["upstream"].append(frame)
            return Output()
        if self._held or self._awaits:
            out = Output()
            if not self._held:
                wait_s = self.translator.mappings.continuation_wait_ms / 1000
                self._arm(out, Timer.CONTINUATION, self._last_frame + wait_s)
            self._held.append(frame)
            return out
        return self._after(self._upstream_input(frame))

    def _upstream_input(self, frame: str | bytes | dict[str, Any]) -> Output:
        out = self.translator.from_upstream(frame)
        if out.check is not None:
            self._begin_check(out)
        return out

    def guardrail_decided(self, check: int, decision: dict[str, Any]) -> Output:
        """The guardrails decided on a held input (`decision`: verdict allow, block or rewrite, the guardrail's
        name, its refusal). A client event is translated with the decision; a Gemini frame after
        lifecycle/guardrail_blocked when it was blocked. Then the inputs that waited behind it, in order."""
        side = next((s for s, (number, _) in self._checks.items() if number == check), None)
        if side is None:
            return Output()  # superseded: the connection it came from was left
        _, held = self._checks.pop(side)
        waiting = self._parked.pop(side)
        self.observer.guardrail_decided(held.stage, decision)
        out = Output()
        if side == "client":
            out.extend(self.translator.checked_client_event(held.held, decision))
        else:
            if decision.get("verdict") == "block":
                out.extend(self.translator.guardrail_blocked(decision))
            out.extend(self.translator.from_upstream(held.held, checked=True))
        while waiting:
            if side in self._checks:  # a later input is under check now: the rest wait behind it
                self._parked[side].extendleft(reversed(waiting))
                break
            item = waiting.popleft()
            if side == "client":
                out.extend(self._client_input(item))
            else:
                out.extend(self._upstream_input(item))
        return self._after(out)

    def _begin_check(self, out: Output) -> None:
        check = out.check
        assert check is not None
        self._check_seq += 1
        self._checks[check.side] = (self._check_seq, check)
        self._parked[check.side] = deque()
        out.command(CheckGuardrail(self._check_seq, check.stage, check.text))

    def upstream_opened(self, link: int, first: str | bytes | dict[str, Any]) -> Output:
        opening = self._opening
        if opening is None or opening.link != link or self.closing:
            out = Output()
            out.command(CloseUpstream(link))  # no longer wanted
            return out
        self._opening, self.link = None, link
        self._last_frame = self.now()
        self._deadline_passed = False
        if self._owed_since is not None:
            self._owed_since = self._last_frame  # the new connection's answer is timed from now
        out = self.translator.from_upstream(first)
        if opening.old is not None:
            out.command(CloseUpstream(opening.old))
        if opening.mode != "first":
            self.switches += 1
        if opening.recovering:
            self.recoveries += 1
            self._recovery_mark = self._ask("handle")
        if self._queue is not None:  # given before Gemini's first frame: sent before what it brought
            queued, self._queue = self._queue.drain(), None
            self._covered.update(map(id, queued))
            out.upstream[:0] = queued
        self.observer.upstream_opened(link, opening.mode)
        self._recheck = True
        return self._after(out)

    def upstream_failed(self, link: int, failure: UpstreamFailure) -> Output:
        opening = self._opening
        out = Output()
        if opening is None or opening.link != link:
            return out
        self._opening = None
        self.observer.upstream_failed(link, opening.mode, failure.kind)
        if opening.mode == "first":
            self._queue = None
            if failure.kind == "closed":
                out = self.translator.upstream_closed(failure.code, failure.reason)
                self._close_after_gemini(out, failure.code)
            else:
                if failure.kind == "other":
                    log.warning("could not open the upstream: %s", failure.detail)
                message, code = _FIRST_FAILURE[failure.kind]
                self._fail(out, message.format(detail=failure.detail), code)
        else:
            if failure.kind == "closed":
                log.warning("the new upstream connection (%s) closed: %s", opening.mode, (failure.code, failure.reason))
            else:
                log.warning("could not open the new upstream connection (%s): %s", opening.mode,
                            failure.detail if failure.kind == "other" else failure.kind)
            # Gemini refused what it was sent (a handle it does not know, a 1011: the handle's session is lost):
            # a fresh session. A connection that could not be had (unreachable, slow, dropped, a backend fault
            # on a fresh one): the same again after a delay (retry_after_s), so a blip of a second or two costs
            # nothing but the wait. A refusal resuming cannot fix (never_recover) ends the session.
            closed = failure.kind == "closed"
            if opening.mode == "handle" and closed and (failure.code in self.policy.never_recover
                                                        or failure.code in self.policy.fresh_after):
                self._resume(out, "fresh", cut=False, recovering=opening.recovering, old=opening.old)
            elif (failure.kind != "credentials" and not (closed and failure.code in self.policy.never_recover)
                  and opening.attempt < len(self.policy.retry_after_s)):
                self._retry = opening
                self._arm(out, Timer.RECONNECT, self.now() + self.policy.retry_after_s[opening.attempt])
            else:
                if opening.old is not None:
                    out.command(CloseUpstream(opening.old))
                self._queue = None
                self._fail(out, "livegate could not move the session to a new Gemini Live connection"
                           + (f" (tried {opening.attempt + 1} times)." if opening.attempt else "."),
                           "upstream_unavailable")
        return self._after(out)

    def upstream_closed(self, link: int, code: int, reason: str) -> Output:
        out = Output()
        if link != self.link:
            return out  # a connection the session moved (or is moving) away from
        going_away = truthy(self._answers.get("going_away"))
        if not (self.closing or self._stopped) and (going_away or (
                code not in self.policy.never_recover and self.recoveries < self.policy.recoveries)):
            log.info("upstream closed (%s); moving the session to a new connection", code)
            self.observer.upstream_lost(link, code, True)
            self._switch(out, "fresh" if code in self.policy.fresh_after else "handle", recovering=not going_away,
                         why="go_away" if going_away else "recovery")
            if not going_away:
                self._recovered("reseeded" if self._opening and self._opening.mode == "fresh" else "resumed",
                                f"Gemini closed the connection ({code})")
            return self._after(out)
        if (not (self.closing or self._stopped) and code not in self.policy.never_recover
                and self.relocations < self.relocations_allowed):
            log.info("upstream closed (%s) beyond recovery; moving the session to another deployment", code)
            self.observer.upstream_lost(link, code, True)
            self.relocations += 1
            self.recoveries = 0  # the count is the failing deployment's
            self._switch(out, "fresh", recovering=True, why="relocate", relocate=True)
            return self._after(out)
        self.observer.upstream_lost(link, code, False)
        self.link = None
        out = self.translator.upstream_closed(code, reason)
        if self._held:  # that connection's continuation will never be asked for
            self._held.clear()
            self._disarm(out, Timer.CONTINUATION)
        self._close_after_gemini(out, code)
        return self._after(out)

    def timer_expired(self, timer: Timer) -> Output:
        out = Output()
        if timer not in self._armed:
            return out  # cancelled meanwhile
        self._armed.discard(timer)
        now = self.now()
        if timer is Timer.CONTINUATION:
            self._release(out)  # the client did not ask: served as Gemini's own
        elif timer is Timer.UPSTREAM_IDLE and truthy(self._answers.get("awaiting_idle")):
            quiet_since = max(self._last_frame, self._idle_since)
            if now + _EARLY >= quiet_since + self.translator.mappings.idle_after_ms / 1000:
                out.extend(self.translator.upstream_idle())
            else:
                self._arm(out, timer, quiet_since + self.translator.mappings.idle_after_ms / 1000)
        elif timer is Timer.USER_IDLE and self._user_idle_due is not None:
            if now + _EARLY >= self._user_idle_due:
                self._user_idle_due = None
                out.extend(self.translator.user_idle())
            else:
                self._arm(out, timer, self._user_idle_due)
        elif timer is Timer.STALL:
            self._check_stall(out, now)
        elif timer is Timer.SWITCH_DEADLINE and self.link is not None and self._opening is None and not self.closing:
            self._switch_deadline(out)
        elif timer is Timer.RECONNECT and self._retry is not None and not self.closing:
            retry, self._retry = self._retry, None
            self._recovered("retried", f"attempt {retry.attempt + 2} at a new {retry.mode} connection")
            self._resume(out, retry.mode, cut=False, recovering=retry.recovering, old=retry.old,
                         attempt=retry.attempt + 1, relocate=retry.relocate)
        elif timer is Timer.DRAIN:
            self._check_drain(out, now)
            if self._draining is not None and Timer.DRAIN not in self._armed:
                self._arm(out, Timer.DRAIN, self._draining)
        return self._after(out)

    def mcp_result(self, request: McpRequest, result: dict[str, Any]) -> Output:
        """An MCP request the core commanded finished (livegate/mcp/: {request_id, ok, tools | output | error})."""
        if self.closing:
            return Output()
        event = {"request_id": request.request_id, "server_label": request.server.get("server_label"), **result}
        return self._after(self.translator.mcp_result(request.action, event))

    def side_result(self, request: GenerateRequest, event: dict[str, Any]) -> Output:
        """An out-of-band response's side call (GenerateRequest) streamed: {delta}, {done, ...} or {error}."""
        if self.closing:
            return Output()
        return self._after(self.translator.side_result({"request_id": request.request_id, **event}))

    def stop(self, message: str, code: str, close_code: int) -> Output:
        """Accounting stopped the session (budget, key, duration): the client is told, then closed."""
        self._stopped = True
        out = self.translator.server_error(message, code)
        self._close(out, close_code, message)
        return self._after(out)

    def reservation_answered(self, number: int, refusal: ReservationRefused | None) -> Output:
        """The answer to `Reserve(number)`: the held content goes to Gemini, or is dropped and the client told."""
        out = Output()
        if number != self._number or self._reservation != "asking":
            return out  # superseded (the session is closing)
        queue, self._unreserved = self._unreserved, None
        held = queue.drain() if queue is not None else []
        if refusal is None:
            self._reservation, self._quiet_s = "held", _REFUSED_QUIET_S
            self._rose |= self._spend_on_grant  # spent once what it covers was routed (_after)
            out.upstream = held
        else:
            self._reservation = "none"
            self._refused, self._refused_until = refusal, self.now() + self._quiet_s
            self._quiet_s = min(self._quiet_s * 2, _REFUSED_QUIET_MAX_S)
            log.info("response refused (%s): %d message(s) for Gemini dropped", refusal.code, len(held))
            out.extend(self.translator.response_refused(refusal.message, refusal.code, refusal.type,
                                                        self._unreserved_event_id))
        self._spend_on_grant = False
        self._unreserved_event_id = None
        return self._after(out)

    def drain(self, deadline: float) -> Output:
        """The gateway drains (SIGTERM): at the session's next rest (at the latest at `deadline`, on the core's
        clock) its state is stored and released for another instance, then the client is closed with 1012,
        which the openai SDK answers by reconnecting (README's reconnect hook: the session is taken over)."""
        out = Output()
        if self.closing or self._draining is not None:
            return out
        self._draining = deadline
        self._arm(out, Timer.DRAIN, deadline)
        self._check_drain(out, self.now())
        return self._after(out)

    def take_over(self) -> Output:
        """The session was restored from the store (`Translator.restore`) and its client came back through this
        process. Gemini is reached again at once: through the handle when it covers the whole conversation,
        else a fresh session re-seeded with it (lifecycle/upstream_resume). A snapshot taken with a turn in
        flight cuts that turn: a response under way fails, and an answer asked for is asked for again."""
        out = Output()
        self._settle(out)
        if truthy(self._answers.get("connected")):
            mode = "handle" if self._handle_usable() and truthy(self._answers.get("handle_current")) else "fresh"
            cut = not truthy(self._answers.get("between_turns"))
            self._queue = InputQueue(self.policy.queue_audio_ms)
            self.observer.switch_started(mode, cut, "takeover")
            self._resume(out, mode, cut=cut, recovering=True, old=None)
        return self._after(out)

    # -- after every input -------------------------------------------------------------------------

    def _after(self, out: Output) -> Output:
        if self.translator.session is not self._seen or self._recheck:  # (checked here: most inputs change nothing)
            self._settle(out)
        if out.upstream:
            self._route(out)
        if self._rose:  # after routing: the content that made Gemini owe an answer went under this reservation
            self._rose = False
            if self._reservation == "held":
                self._spend(self._number)
            elif self._reservation == "asking":
                self._spend_on_grant = True
        if self._spent:
            self._settle_reservations(out)
        if self._covered:  # rarely set (a drained queue, a re-ask): an audio frame skips the call
            self._covered.clear()
        if out.client:
            self.observer.client_messages(out.client)
        self._input_event_id = None
        return out

    def _settle(self, out: Output) -> None:
        """React to what the input changed: timers, the stall clock, switching (until nothing changes)."""
        while self.translator.session is not self._seen or self._recheck:
            self._recheck = False
            self._review(self._reask(), out)

    def _reask(self) -> set[str]:
        """Ask again the questions whose keys changed; returns the names whose answer changed."""
        session, seen = self.translator.session, self._seen
        self._seen = self._scope["session"] = session
        if seen is None:
            questions: Any = self._questions
        elif seen is session:
            return set()
        else:
            keys = {key for key in self._watched if session.get(key) is not seen.get(key)}
            questions = [q for q in self._questions if not q.keys.isdisjoint(keys)] if keys else ()
        changed = set()
        runtime = self.translator.runtime
        for question in questions:
            answer = question.expression(runtime, self._scope)
            if answer != self._answers.get(question.name, _UNASKED):
                self._answers[question.name] = answer
                changed.add(question.name)
        return changed

    def _ask(self, name: str) -> Any:
        self._scope["session"] = self.translator.session
        return self.policy.questions[name].expression(self.translator.runtime, self._scope)

    def _review(self, changed: set[str], out: Output) -> None:
        answers, now = self._answers, self.now()
        if "awaits_request" in changed:
            self._awaits = truthy(answers["awaits_request"])
        if "turn_pending" in changed:
            self._pending_since = now if truthy(answers["turn_pending"]) else None
            pending = self._pending_since is not None
            self._rose |= pending and not self._pending  # Gemini came to owe an answer (see _after)
            self._pending = pending
        if "awaiting_output" in changed:
            self._owed_since = now if truthy(answers["awaiting_output"]) else None
        if "response_open" in changed and truthy(answers["response_open"]) and not self._giving_up:
            self._ladder.output_came()
        if "between_turns" in changed and truthy(answers["between_turns"]):
            self._ladder.question_over()
        if (self._pending_since is not None and Timer.STALL not in self._armed and self.link is not None
                and self._opening is None):
            self._arm(out, Timer.STALL, self._stall_due())
        if truthy(answers["empty_turn"]) and "empty_turn" in changed and self._can_act():
            self._watch(out, Failure.EMPTY_TURN)
        if truthy(answers["silent_answer"]) and "silent_answer" in changed and self._can_act():
            self._watch(out, Failure.SILENT_AUDIO)
        if "awaiting_idle" in changed:
            if truthy(answers["awaiting_idle"]):
                self._idle_since = now
                self._arm(out, Timer.UPSTREAM_IDLE, now + self.translator.mappings.idle_after_ms / 1000)
            else:
                self._disarm(out, Timer.UPSTREAM_IDLE)
        if "user_idle_at_ms" in changed:
            at_ms = answers["user_idle_at_ms"]
            if isinstance(at_ms, int | float) and not isinstance(at_ms, bool):
                self._user_idle_due = now + max(0.0, at_ms / 1000 - self.translator.helpers.clock())
                self._arm(out, Timer.USER_IDLE, self._user_idle_due)
            else:
                self._user_idle_due = None
                self._disarm(out, Timer.USER_IDLE)
        if "turn_boundary" in changed and truthy(answers["turn_boundary"]):
            self.observer.turn_boundary()
        if (self.recoveries or self.relocations) and answers["handle"] != self._recovery_mark:
            self.recoveries = self.relocations = 0  # the recovered connection completed a turn
        if "between_turns" in changed and truthy(answers["between_turns"]):
            self._rest_since = now
        if self.checkpoints and not self.closing and ("checkpoint" in changed or "between_turns" in changed):
            out.command(StoreSession(self.snapshot()))
        self._check_switch(out)
        if self._draining is not None:
            self._check_drain(out, now)

    def _check_switch(self, out: Output) -> None:
        """Start the move a goAway (or a session.update needing a new setup) asked for, at a turn boundary;
        after a goAway, by its deadline at the latest."""
        answers = self._answers
        if self._opening is not None or self.closing or self.link is None or not truthy(answers["switch_wanted"]):
            return
        if self._retry is not None:
            return
        going_away = answers["going_away"]
        if truthy(answers["turn_boundary"]):
            self._switch(out, "handle", why="go_away" if truthy(going_away) else "reconfigure")
        elif self._deadline_passed and self._handle_usable() and not truthy(answers["call_pending"]):
            # the goAway's deadline passed while a tool call waited; its output went to this connection, and
            # the handle Gemini sent after it carries the call: move now
            log.info("the tool call's output reached the connection that made the call; switching with the new handle")
            self._switch(out, "handle", why="deadline")
        elif truthy(going_away) and Timer.SWITCH_DEADLINE not in self._armed and not self._deadline_passed:
            left = duration_s(going_away) or 0.0
            self._arm(out, Timer.SWITCH_DEADLINE, self.now() + max(0.0, left - self.policy.switch_lead_s(left)))
        elif (not truthy(going_away) and truthy(answers["between_turns"]) and not self._handle_usable()
              and Timer.SWITCH_DEADLINE not in self._armed):
            # a reconfiguration with no usable handle: a moment for one to come, then a fresh session
            self._arm(out, Timer.SWITCH_DEADLINE, self.now() + self.policy.handle_wait_s)

    def _switch_deadline(self, out: Output) -> None:
        """SWITCH_DEADLINE expired: a goAway's deadline, or a reconfiguration's wait for a usable handle."""
        answers = self._answers
        if truthy(answers["going_away"]):
            if truthy(answers["call_pending"]):
                # switching now would send the call's output to a session that never saw the call (1007): it
                # goes to this connection, and the switch follows with the handle sent after it (or, if
                # Gemini closes first, a fresh session carries the call and then its output)
                self._deadline_passed = True
                self._recovered("tool_output_held", "the goAway deadline passed while a tool call waits")
                return
            log.info("no turn boundary before the goAway deadline; switching mid-turn")
            self._switch(out, "handle", why="deadline")
        elif truthy(answers["switch_wanted"]) and truthy(answers["between_turns"]) and not self._handle_usable():
            self._recovered("reconfigured_fresh", "no usable resumption handle for the new configuration")
            self._switch(out, "fresh", why="reconfigure")

    def _stall_due(self) -> float:
        """When Gemini's silence is a stall: stall_timeout_ms after the user's turn ended while no output came
        (the watchdog's), else upstream_stall_timeout_s in the middle of a response. Either counts from the
        later of Gemini's last frame and the moment it came to owe."""
        if self._owed_since is not None and self.watchdog.stall_timeout_ms > 0:
            return max(self._last_frame, self._owed_since) + self.watchdog.stall_timeout_s
        assert self._pending_since is not None
        return max(self._last_frame, self._pending_since) + self.stall_after_s

    def _check_drain(self, out: Output, now: float) -> None:
        """While draining: store, release and close (1012) once at rest, or at the deadline whatever the turn.
        At rest with a handle older than the last turn, its successor is awaited for HANDLE_WAIT_S first."""
        if self._draining is None or self.closing:
            return
        if now + _EARLY < self._draining:
            if self._opening is not None or not truthy(self._answers.get("between_turns")):
                return  # a turn in flight, or a connection opening: its end is awaited
            if self.link is not None and not truthy(self._answers.get("handle_current")):
                handle_due = self._rest_since + HANDLE_WAIT_S
                if now + _EARLY < handle_due:
                    self._arm(out, Timer.DRAIN, min(handle_due, self._draining))
                    return
        self._draining = None
        self._disarm(out, Timer.DRAIN)
        out.command(StoreSession(self.snapshot(), release=True))
        self._close(out, SERVICE_RESTART, "livegate is restarting: reconnect to carry on the session")

    def _check_stall(self, out: Output, now: float) -> None:
        if self._pending_since is None or self.link is None or self._opening is not None or self.closing:
            return
        due = self._stall_due()
        if now + _EARLY < due:
            self._arm(out, Timer.STALL, due)
        elif self.watchdog.stall_timeout_ms <= 0:  # the watchdog's stall detector is off
            self._fail(out, f"Gemini Live sent nothing for {self.stall_after_s:g} s in the middle of a turn.",
                       "upstream_timeout")
        else:
            if self._held:  # held frames are Gemini's continuation: output came
                self._owed_since = now if self._owed_since is not None else None
            else:  # before any output: asked again; in the middle of an answer: a fresh session
                self._watch(out, Failure.STALL, under_way=self._owed_since is None)
            if self._pending_since is not None and self.link is not None and self._opening is None:
                self._arm(out, Timer.STALL, self._stall_due())

    # -- the watchdog ------------------------------------------------------------------------------

    def _can_act(self) -> bool:
        return self.link is not None and self._opening is None and self._retry is None and not self.closing

    def _watch(self, out: Output, failure: Failure, *, under_way: bool = False) -> None:
        """A silent failure of the question in flight: ask again, re-seed, or give up (watchdog.Ladder)."""
        action = self._ladder.failed(failure, under_way=under_way)
        kind = f"{failure.value}_{'gave_up' if action is Action.GIVE_UP else action.value}"
        self._recovered(kind, f"watchdog: {failure.value}")
        if action is Action.REASK:
            reask = self.translator.watchdog("reask", failure.value)
            self._covered.update(map(id, reask.upstream))
            out.extend(reask)
            self._owed_since = self.now()
        elif action is Action.RESEED:
            self._ladder.reseeding()
            self._switch(out, "fresh", why=failure.value)
        else:
            self._giving_up = True
            try:
                out.extend(self.translator.watchdog("give_up", failure.value))
            finally:
                self._giving_up = False

    def _recovered(self, kind: str, detail: str) -> None:
        """Count and log a recovery once (kind: watchdog.RECOVERY_KINDS)."""
        assert kind in RECOVERY_KINDS, kind
        log.info("session %s: recovery %s (%s)", self.session_id, kind, detail)
        self.observer.recovery(kind)

    @property
    def input_backlogged(self) -> bool:
        """The first connection is still opening and queue_audio_ms of the client's audio waits for it: the pump
        reads no further client frames until it opens or fails (backpressure, not dropped audio)."""
        return (self._opening is not None and self._opening.mode == "first" and self._queue is not None
                and self._queue.full)

    def _route(self, out: Output) -> None:
        """Where this input's Gemini-bound messages go: the connection, the queue, or a first connection."""
        if self._stopped or self.closing:
            out.upstream = []
            return
        if self._reserve and self._reservation != "held":
            self._hold_for_reservation(out)
            if not out.upstream:
                return
        if self.link is not None:
            out.link = self.link
        elif self._queue is not None:
            for message in out.upstream:
                self._queue.put(message)
            out.upstream = []
            dropped = self._queue.take_dropped()
            if dropped:
                first = self._opening is not None and self._opening.mode == "first"
                waiting = ("Gemini Live set the session up" if first
                           else "livegate moved the session to a new Gemini Live connection")
                out.extend(self.translator.server_error(
                    f"{dropped:.0f} ms of input audio were dropped while {waiting} "
                    f"(at most {self.policy.queue_audio_ms:.0f} ms are held).", "input_audio_dropped"))
        else:  # the session's first content: Gemini is contacted now, its configuration fixed by `setup`
            messages, out.upstream = out.upstream, []
            if "setup" not in messages[0]:
                raise RuntimeError("the first upstream message of a session must be setup")
            # nothing is dropped before the session has begun: past queue_audio_ms the pump reads no more
            # client frames until Gemini is set up (input_backlogged), as a client streaming a file expects
            self._queue = InputQueue(self.policy.queue_audio_ms, drops=False)
            self._open(out, "first", messages, recovering=False, old=None)

    # -- reservations ------------------------------------------------------------------------------

    def _hold_for_reservation(self, out: Output) -> None:
        """Keep back the content that needs a reservation (and everything after it, in order), asking for one;
        during the quiet period after a refusal, drop it (telling the client when it asked for a response)."""
        messages, covered = out.upstream, self._covered
        if self._reservation == "asking":  # all that follows waits too (order), but what the gate let by
            first = next((i for i, m in enumerate(messages) if id(m) not in covered), len(messages))
        else:
            starts = self.policy.may_start_response
            first = next((i for i, m in enumerate(messages) if id(m) not in covered and starts(m)), len(messages))
        if first == len(messages):
            return
        out.upstream, held = messages[:first], messages[first:]
        if self._reservation == "asking":
            assert self._unreserved is not None
            for message in held:
                self._unreserved.put(message)
            self._unreserved_event_id = self._input_event_id or self._unreserved_event_id
            return
        if self._refused is not None and self.now() < self._refused_until:
            if self._pending:  # the client asked for a response that cannot start: it must not wait for it
                refused = self._refused
                out.extend(self.translator.response_refused(refused.message, refused.code, refused.type,
                                                            self._input_event_id))
            return
        self._number += 1
        self._reservation = "asking"
        self._unreserved = InputQueue(self.policy.queue_audio_ms)
        self._unreserved_event_id = self._input_event_id
        for message in held:
            self._unreserved.put(message)
        cap = self._ask("max_output_tokens")
        out.command(Reserve(self._number, int(cap) if isinstance(cap, int | float) and not isinstance(cap, bool)
                            else None))

    def _spend(self, number: int) -> None:
        """The held reservation now covers an answer Gemini owes; the next content needs another."""
        self._reservation = "none"
        self._spent.append((number, self.translator.usage.reports))

    def _settle_reservations(self, out: Output) -> None:
        """Spent reservations whose answer is over and whose usage came since are released."""
        if self._pending:
            return
        reports = self.translator.usage.reports
        done = tuple(number for number, seen in self._spent if reports > seen)
        if done:
            self._spent = [(n, seen) for n, seen in self._spent if n not in done]
            out.command(Settle(done))

    # -- moving to a new connection ----------------------------------------------------------------

    def _switch(self, out: Output, mode: str, *, recovering: bool = False, why: str, relocate: bool = False) -> None:
        """Leave the current connection: resumed with the handle if usable, else fresh and re-seeded."""
        self._disarm(out, Timer.SWITCH_DEADLINE)
        cut = not truthy(self._answers["between_turns"])  # something under way or owed is cut off
        if mode == "handle" and not self._handle_usable():
            mode = "fresh"
        old, self.link = self.link, None
        self._checks.pop("upstream", None)  # what the old connection still owed a check is over with it
        self._parked.pop("upstream", None)
        self._queue = self._queue or InputQueue(self.policy.queue_audio_ms)
        if self._held:  # the old connection's continuation: the resume asks again for what was not started
            self._held.clear()
            self._disarm(out, Timer.CONTINUATION)
        self.observer.switch_started(mode, cut, why)
        self._resume(out, mode, cut=cut, recovering=recovering, old=old, why=why, relocate=relocate)

    def _resume(self, out: Output, mode: str, *, cut: bool, recovering: bool, old: int | None, why: str = "",
                attempt: int = 0, relocate: bool = False) -> None:
        resumed = self.translator.upstream_resume(mode, cut=cut, why=why)
        messages, resumed.upstream = resumed.upstream, []
        out.extend(resumed)
        self._open(out, mode, messages, recovering=recovering, old=old, attempt=attempt, relocate=relocate)
        self._recheck = True

    def _open(self, out: Output, mode: str, messages: list[dict[str, Any]], *, recovering: bool,
              old: int | None, attempt: int = 0, relocate: bool = False) -> None:
        self._last_link += 1
        link = self._last_link
        self._opening = _Opening(link, mode, recovering, old, attempt, relocate)
        self.observer.upstream_opening(link, mode)
        out.command(OpenUpstream(link, messages[0], tuple(messages[1:]), first=mode == "first",
                                 mode=mode, relocate=relocate))  # type: ignore[arg-type]

    def _handle_usable(self) -> bool:
        arrived = self._answers.get("handle_received_at")
        return (truthy(self._answers.get("handle_usable")) and isinstance(arrived, int | float)
                and self.translator.helpers.clock() - arrived < self.policy.handle_ttl_s)

    # -- the rest ----------------------------------------------------------------------------------

    def _release(self, out: Output) -> None:
        """Translate Gemini's held continuation, in order."""
        self._disarm(out, Timer.CONTINUATION)
        held, self._held = self._held, []
        for frame in held:
            if "upstream" in self._checks:
                self._parked["upstream"].append(frame)
            else:
                out.extend(self._upstream_input(frame))

    def _fail(self, out: Output, message: str, code: str) -> None:
        out.extend(self.translator.server_error(message, code))
        self._close(out, BAD_GATEWAY, message)

    def _close_after_gemini(self, out: Output, code: int) -> None:
        if code == NORMAL:
            self._close(out, NORMAL, "Gemini Live ended the session")
        else:
            self._close(out, BAD_GATEWAY, f"Gemini Live closed the session ({code})")

    def _close(self, out: Output, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.observer.session_closing(code, reason)
            out.command(CloseClient(code, reason))

    def _arm(self, out: Output, timer: Timer, at: float) -> None:
        self._armed.add(timer)
        out.command(SetTimer(timer, at))

    def _disarm(self, out: Output, timer: Timer) -> None:
        if timer in self._armed:
            self._armed.discard(timer)
            out.command(SetTimer(timer, None))

"""The per-connection translator: sans-I/O, it owns the session state and interprets mappings/.

Theory of operation
-------------------
Feed it one input at a time and it returns an `Output`: the messages to send to the client (already
in the client's dialect, each with an `event_id`) and to Gemini. It never touches a socket or a clock
of its own, so the server, the tests and the benchmark all drive this same object. The session core
(translation/session_core.py) wraps it with the connection's timing and switching; docs/internals/
session-core.md tells the whole story.

    start()                     the client connected        -> lifecycle/connect.yaml
    from_client(frame)          one client WebSocket frame  -> validate, reshape from the dialect,
                                                               client/<type>.yaml
    from_upstream(frame)        one Gemini frame            -> upstream/<field>.yaml for each field
                                                               present, in dispatch.yaml order
    upstream_idle()             quiet for idle_after_ms     -> lifecycle/upstream_idle.yaml
    user_idle()                 turn_detection's idle time  -> lifecycle/user_idle.yaml
    response_refused(...)       a response may not start    -> lifecycle/response_refused.yaml
    mcp_result(action, result)  an MCP request finished     -> lifecycle/mcp_listed.yaml, mcp_called.yaml
    side_result(event)          an out-of-band answer streams -> lifecycle/side_response.yaml
    upstream_closed(code, why)  Gemini closed               -> lifecycle/upstream_closed.yaml
    upstream_resume(mode)       a new Gemini connection     -> lifecycle/upstream_resume.yaml
    watchdog(action, why)       a silent failure is acted on -> lifecycle/watchdog.yaml
    restore(session, dialect)   a session another process stored (resumable_state), carried on here

A frame's `usageMetadata` is read once, by the usage ledger (translation/usage.py), and the rules see that
reading as `event.usage` (per-modality counts; shapes/usage.yaml makes OpenAI's usage of them).

The lifecycle table of mappings/state.yaml runs here: after an input that changed the turn/response state,
the change must be one of the table's transitions for that input. One that is not is a translation error: an
`error` event (translation_error, with the client's event_id) when a client event caused it, otherwise a
warning in the log and the observer's `lifecycle_violation` (a Prometheus counter in the server).

Within a file, rules run top to bottom, each seeing the state the previous one left. A rule runs when
its `when` holds, once or once per `for_each` element (bound to `as`); it evaluates `let`, runs its
`transform` steps (mapping/transforms.py), then applies `set` in order (each seeing the last), then
`emit`s; `stop` ends the file. The state is replaced, never mutated in place, so a value read into a
message can't change behind it (a codec stream a transform keeps is its own object, read by no message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from livegate.mapping.expressions import Runtime, Scope
from livegate.mapping.functions import Helpers, RandomIds, SequentialIds
from livegate.mapping.loader import Mappings, Rule, RuleFile
from livegate.mapping.plan import Planner, ReadValues, Step, holds, read_values, reads_same
from livegate.mapping.transforms import Transform
from livegate.mapping.wire import WireTemplate
from livegate.translation.commands import Command, GenerateRequest, McpRequest
from livegate.translation.errors import error_event
from livegate.translation.guarding import GuardrailCheck
from livegate.translation.observer import SessionObserver
from livegate.translation.rule_code import RULE_ERRORS, applier, assign, compiled
from livegate.translation.usage import UsageLedger
from livegate.translation.validation import ClientEventValidator

log = logging.getLogger("livegate.translation.translator")

# Values whose keys are user data (function arguments, schemas), never protocol field names.
_OPAQUE_KEYS = frozenset({"args", "response", "parameters", "parametersJsonSchema", "responseJsonSchema"})


@dataclass(slots=True)
class Output:
    """What one input produced: messages for the client and for Gemini, in order, and the notes the
    rules logged (already written to livegate's log; kept here so tests can see them). The session core
    adds the commands for its pump (translation/commands.py) and the connection `upstream` is for."""

    client: list[dict[str, Any] | str] = field(default_factory=list)  # str: JSON text (a wire template's)
    upstream: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    commands: list[Command] | tuple[()] = ()
    link: int | None = None
    check: GuardrailCheck | None = None  # the input was held for the guardrails (translation/guarding.py)

    def command(self, command: Command) -> None:
        if not self.commands:
            self.commands = []
        self.commands.append(command)

    def extend(self, other: Output) -> None:
        """Append what `other` produced after what this one did."""
        self.client.extend(other.client)
        self.upstream.extend(other.upstream)
        self.log.extend(other.log)
        for command in other.commands:
            self.command(command)


def _model_output(message: dict[str, Any]) -> bool:
    """Whether a Gemini frame begins model output (a turn's usage is final once the next one begins)."""
    content = message.get("serverContent")
    return "toolCall" in message or (isinstance(content, dict) and (
        "modelTurn" in content or "outputTranscription" in content))


def camelize(value: Any) -> Any:
    """snake_case keys to camelCase at every protocol level; returns `value` itself when unchanged."""
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, item in value.items():
            new_key = key
            if "_" in key:
                head, *rest = key.split("_")
                new_key = head + "".join(p[:1].upper() + p[1:] for p in rest)
            new_item = item if new_key in _OPAQUE_KEYS else camelize(item)
            changed |= new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    if isinstance(value, list):
        items = [camelize(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


_CONTAINERS = (dict, list)


def _has_snake_key(value: Any) -> bool:
    """Whether camelize() would change anything: a key with `_` outside the opaque values. No copies."""
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key, item in node.items():
                if "_" in key:
                    return True
                if type(item) in _CONTAINERS and key not in _OPAQUE_KEYS:
                    stack.append(item)
        elif type(node) is list:
            stack.extend(item for item in node if type(item) in _CONTAINERS)
    return False


def _may_hold_snake_keys(frame: str | bytes) -> bool:
    """False when the JSON text cannot hold a key with `_`: it has neither `_` nor a backslash (which could
    escape one) anywhere. An audio frame has neither, and this scan costs a tenth of walking its objects."""
    if isinstance(frame, str):
        return "_" in frame or "\\" in frame
    return b"_" in frame or b"\\" in frame


def camelize_frame(message: dict[str, Any]) -> dict[str, Any]:
    """`camelize(message)`, checked first without copying: Gemini's own frames are camelCase already."""
    return camelize(message) if _has_snake_key(message) else message


class Translator:
    """One client connection's translation state machine."""

    def __init__(self, mappings: Mappings, *, dialect: str = "ga", context: dict[str, Any] | None = None,
                 validator: ClientEventValidator | None = None, deterministic: bool = False,
                 clock: Callable[[], float] = time.time, sniff_dialect: bool = False,
                 ledger: UsageLedger | None = None, observer: SessionObserver | None = None,
                 wire: bool = False) -> None:
        if dialect != "ga" and dialect not in mappings.dialects:
            raise ValueError(f"unknown dialect {dialect!r}")
        self.mappings = mappings
        self.dialect = dialect
        # No header chose the dialect: the first session.update's shape does (README "Connecting").
        self._sniff = sniff_dialect
        self.validator = validator or ClientEventValidator()
        ids = SequentialIds() if deterministic else RandomIds()
        self.ids = ids
        self.helpers = Helpers(ids=ids, clock=clock)
        self.runtime = Runtime(self.helpers)
        self._planner = Planner(self.runtime, compiled)
        # Client events as JSON text where the mappings have a template (mapping/wire.py): the server's mode
        # (Output.client then holds str items beside dicts); the tests' translators emit dicts.
        self.wire = wire
        # per template: (it, the state met, the config version, its layout or None, what its layout read or None)
        self._layouts: dict[int, tuple[WireTemplate, dict[str, Any], int, tuple[Any, ...] | None,
                                       ReadValues | None]] = {}
        self._config_version = 0  # the plans hold for one version of `config` (the dialect may change)
        self.config: dict[str, Any] = dict(context or {})
        self.config.setdefault("dialect", dialect)
        self.config.setdefault("features", {})  # the config entry's gemini_features (defaults of Gemini's features)
        if "capabilities" not in self.config and mappings.models is not None:  # the server passes its own
            self.config["capabilities"] = mappings.models.capabilities(
                self.config.get("setup_model") or self.config.get("model") or "", self.config.get("backend", ""))
        self.session: dict[str, Any] = {}
        self.last_event_id: str | None = None  # of the latest valid client event (a refusal echoes it)
        self.usage = ledger if ledger is not None else UsageLedger()  # the session's usage ledger
        self.observer = observer or SessionObserver()
        # The stages with guardrails (config.guardrails, from the pump): an input whose text they must check is
        # held (Output.check) before it is translated.
        stages = self.config.get("guardrails") or {}
        self._typed_check = bool(stages.get("pre_call")) and mappings.guarding is not None
        self._heard_check = self._typed_check
        self._said_check = bool(stages.get("during_call")) and mappings.guarding is not None
        self._unhandled: set[str] = set()
        # The lifecycle state (state.yaml) after the last input, and the keys it is made of.
        self._lifecycle_keys = mappings.state.lifecycle_keys
        # Keys holding a transform's codec stream: not data, so not part of a stored session (they restart).
        self._stream_keys = frozenset(name for name, spec in mappings.state.keys.items() if spec.type == "stream")
        self._turn_state: str | None = None
        self.helpers.shapes = {name: self._shape(build) for name, build in mappings.shapes.items()}
        self._set_dialect(dialect)

    def _shape(self, build: Any) -> Callable[[Any], Any]:
        """A named template as a function of `it`; it also sees the session as it is when applied."""
        return lambda value: build(self.runtime, {"it": value, "session": self.session, "config": self.config,
                                                  "tables": self.mappings.tables})

    # -- inputs ------------------------------------------------------------------------------------

    def start(self) -> Output:
        return self._lifecycle("connect", {})

    def _set_dialect(self, dialect: str) -> None:
        reshapes = self.mappings.dialects.get(dialect, {})
        self.dialect = self.config["dialect"] = dialect
        self._config_version += 1
        self._from_client = reshapes.get("from_client", {})
        self._to_client = reshapes.get("to_client", {})

    def _sniff_dialect(self, frame: str | bytes | dict[str, Any]) -> None:
        """Until the first session.update or content, a client that sent no dialect header is served in
        the dialect its session.update is written in, told by the fields only one dialect has
        (`tables.dialect_markers`: beta `modalities`, flat `voice`...; GA `type`, `audio`...)."""
        try:
            event = frame if isinstance(frame, dict) else orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in ("session.update", "conversation.item.create", "input_audio_buffer.append", "response.create"):
            return
        self._sniff = False
        session = event.get("session") if kind == "session.update" else None
        if not isinstance(session, dict) or not session:
            return
        markers = self.mappings.tables.get("dialect_markers", {})  # session fields only one dialect has
        detected = next((name for name, fields in markers.items() if not session.keys().isdisjoint(fields)), None)
        if detected is None:
            return
        if detected != self.dialect:
            log.info("session %s: no dialect header; its session.update is %s-shaped, served in that dialect",
                     self.session.get("id"), detected)
            self._set_dialect(detected)

    def from_client(self, frame: str | bytes | dict[str, Any]) -> Output:
        out = Output()
        self.last_event_id = None
        if self._sniff:
            self._sniff_dialect(frame)
        event, error = self.validator.parse(frame, self.dialect)
        if error is not None:
            self._send_client(out, error)
            return out
        assert event is not None
        self.last_event_id = event.get("event_id")
        reshape = self._from_client.get(event["type"])
        if reshape is not None:
            event = self._reshape(reshape, event)
        if self._typed_check:
            text = self.mappings.guarding.ask("typed_text", self.runtime, self._scope(event))
            if text is not None:
                out.check = GuardrailCheck("pre_call", text, event, "client")
                return out
        self._client_event(event, out)
        return out

    def checked_client_event(self, event: dict[str, Any], decision: dict[str, Any]) -> Output:
        """A client event held for the guardrails, translated with their decision (`event.guardrail`); a
        rewritten text goes in through shapes/guardrails.yaml's `rewritten_by_guardrail`."""
        out = Output()
        if decision.get("verdict") == "rewrite" and "rewritten_by_guardrail" in self.helpers.shapes:
            event = self.helpers.shapes["rewritten_by_guardrail"]({"event": event, "text": decision.get("text")})
        self._client_event({**event, "guardrail": decision}, out)
        return out

    def guardrail_blocked(self, decision: dict[str, Any]) -> Output:
        """A guardrail blocked what a Gemini frame brought (the user's transcript, or the answer):
        lifecycle/guardrail_blocked, before the held frame is translated."""
        return self._lifecycle("guardrail_blocked", decision)

    def _scope(self, event: dict[str, Any]) -> Scope:
        return {"event": event, "session": self.session, "config": self.config, "tables": self.mappings.tables}

    def _client_event(self, event: dict[str, Any], out: Output) -> None:
        self.observer.client_event(event)
        rules = self.mappings.client.get(event["type"])
        if rules is None:
            self._send_client(out, error_event(
                f"'{event['type']}' is not supported by this gateway yet; the event was not applied.",
                code="unsupported_event", param="type", event_id=event.get("event_id")))
            return
        before = self.session
        self._run(rules, event, out, event.get("event_id"))
        if self.session is not before:
            self._check_lifecycle(before, out, client=event)

    def from_upstream(self, frame: str | bytes | dict[str, Any], *, checked: bool = False) -> Output:
        """One Gemini frame; `checked`: the guardrails already decided on it (it was held for them)."""
        out = Output()
        if isinstance(frame, dict):
            message: Any = frame
        else:
            try:
                message = orjson.loads(frame)
            except orjson.JSONDecodeError:
                message = None
            if not isinstance(message, dict):
                log.warning("upstream sent a frame that is not a JSON object (%d bytes)", len(frame))
                self._send_client(out, error_event(
                    "The upstream model service sent a malformed message; it was ignored.",
                    code="upstream_protocol_error", type="server_error"))
                return out
        if isinstance(frame, dict) or _may_hold_snake_keys(frame):
            message = camelize_frame(message)
        if (self._heard_check or self._said_check) and not checked:
            check = self._upstream_check(message)
            if check is not None:
                out.check = check
                return out
        event = message
        if self.usage.pending is not None and _model_output(message):
            self.usage.model_output()  # the previous turn's latest usage report is final
        if "usageMetadata" in message and isinstance(message["usageMetadata"], dict):
            event = {**message, "usage": self.usage.report(message["usageMetadata"]).counts()}
        before, upstream = self.session, self.mappings.upstream
        if len(message) == 1:  # most frames (an audio chunk's): its one field's rules
            rules = upstream.get(next(iter(message)))
            if rules is not None:
                self._run(rules, event, out, None)
            else:
                self._note_unhandled(message)
        else:
            for name in self.mappings.upstream_fields:  # dispatch.yaml's order
                if name in message:
                    self._run(upstream[name], event, out, None)
            self._note_unhandled(message)
        if self.session is not before:
            self._check_lifecycle(before, out, upstream=message)
        return out

    def _upstream_check(self, message: dict[str, Any]) -> GuardrailCheck | None:
        """The user's transcript (pre_call) or the answer (during_call) a frame adds to, for the guardrails."""
        if "serverContent" not in message:
            return None
        guarding, scope = self.mappings.guarding, self._scope(message)
        if self._heard_check:
            text = guarding.ask("heard_text", self.runtime, scope)
            if text is not None:
                return GuardrailCheck("pre_call", text, message, "upstream")
        if self._said_check:
            text = guarding.ask("said_text", self.runtime, scope)
            if text is not None:
                return GuardrailCheck("during_call", text, message, "upstream")
        return None

    def _note_unhandled(self, message: dict[str, Any]) -> None:
        """Gemini fields no mapping handles are named in the debug log, once per session each."""
        for name in message:
            if name not in self.mappings.upstream and name not in self._unhandled:
                self._unhandled.add(name)
                log.debug("session %s: Gemini sent %r, which no mapping handles; it was dropped",
                          self.session.get("id"), name)

    def server_error(self, message: str, code: str) -> Output:
        """An `error` event (type server_error) for a failure outside the mappings, e.g. connecting."""
        out = Output()
        self._send_client(out, error_event(message, code=code, type="server_error"))
        return out

    def upstream_idle(self) -> Output:
        return self._lifecycle("upstream_idle", {})

    def upstream_closed(self, code: int, reason: str) -> Output:
        return self._lifecycle("upstream_closed", {"code": code, "reason": reason})

    def upstream_resume(self, mode: str, *, cut: bool = False, why: str = "") -> Output:
        """The session moves to a new Gemini connection: mode "handle" (resumed) or "fresh" (re-seeded); `cut`:
        mid-turn; `why`: what moved it (session_core's reasons: go_away, recovery, stall, silent_audio...)."""
        return self._lifecycle("upstream_resume", {"mode": mode, "cut": cut, "why": why})

    def watchdog(self, action: str, why: str) -> Output:
        """The session core's watchdog acts on a silent failure (`why`: stall, empty_turn, silent_audio):
        action "reask" (the answer is asked for again on the same connection) or "give_up" (the turn is
        reported as it is, with one informational error)."""
        return self._lifecycle("watchdog", {"action": action, "why": why})

    def response_refused(self, message: str, code: str, error_type: str, event_id: str | None) -> Output:
        """A response may not start (its reservation was refused: budget, tokens per minute, counters out of
        reach); what would have started it was not sent to Gemini."""
        return self._lifecycle("response_refused", {"message": message, "code": code, "error_type": error_type,
                                                    "event_id": event_id})
    def mcp_result(self, action: str, result: dict[str, Any]) -> Output:
        """An MCP request (a `McpRequest` command) finished: lifecycle/mcp_listed or lifecycle/mcp_called, with the
        result as `event` ({request_id, ok, tools | output | error})."""
        return self._lifecycle("mcp_listed" if action == "list" else "mcp_called", result)

    def side_result(self, event: dict[str, Any]) -> Output:
        """An out-of-band response's side call reported (a `GenerateRequest` command): lifecycle/side_response,
        with `event` {request_id, delta | done, finish_reason, usage_metadata | error}. Its usage is billed as its
        own, beside the live turns (the ledger's `separate`), and the rules see the reading as `event.usage`."""
        metadata = event.pop("usage_metadata", None)
        if isinstance(metadata, dict):
            event["usage"] = self.usage.separate(metadata).counts()
        return self._lifecycle("side_response", event)

    def user_idle(self) -> Output:
        """turn_detection.idle_timeout_ms passed with no user speech since the last response.done."""
        return self._lifecycle("user_idle", {})

    # -- sessions that outlive the process (livegate/takeover/) --------------------------------------

    def resumable_state(self) -> dict[str, Any]:
        """The session state another process can carry on with: all of it but codec streams (the state is
        replaced, never mutated, so the dict returned stays as it is)."""
        if self._stream_keys.isdisjoint(self.session):
            return self.session
        return {key: value for key, value in self.session.items() if key not in self._stream_keys}

    def restore(self, session: dict[str, Any], dialect: str) -> None:
        """Carry on a session another process stored (`resumable_state`), in the dialect it was speaking. The
        client has had its session.created: `start()` is not called."""
        self._set_dialect(dialect)
        self._sniff = False
        self.session = dict(session)
        self._turn_state = None

    @property
    def lifecycle_state(self) -> str | None:
        """The turn/response state (the first of state.yaml's lifecycle states whose condition holds)."""
        if self._turn_state is None:
            self._turn_state = self._state_of(self.session)
        return self._turn_state

    # -- the lifecycle table at run time ------------------------------------------------------------

    def _state_of(self, session: dict[str, Any]) -> str | None:
        scope = {"session": session, "config": self.config, "tables": self.mappings.tables}
        return self.mappings.state.lifecycle_state(self.runtime, scope)

    def _check_lifecycle(self, before: dict[str, Any], out: Output, *, client: dict[str, Any] | None = None,
                         upstream: dict[str, Any] | None = None, moment: str | None = None) -> None:
        """After an input that changed the session: a change of lifecycle state must be a listed transition."""
        after = self.session
        for key in self._lifecycle_keys:
            if after.get(key) is not before.get(key):
                break
        else:
            return  # none of the keys the states are made of changed
        old = self._turn_state if self._turn_state is not None else self._state_of(before)
        new = self._turn_state = self._state_of(after)
        if old is None or new is None or old == new:
            return
        if client is not None:
            sources: tuple[str, ...] = (f"client/{client['type']}",)
        elif upstream is not None:
            sources = tuple(f"upstream/{name}" for name in self.mappings.upstream_fields if name in upstream)
        else:
            sources = (f"lifecycle/{moment}",)
        if not any(self.mappings.state.allows(old, source, new) for source in sources):
            self._lifecycle_violation(old, sources, new, out, client)

    def _lifecycle_violation(self, before: str, sources: tuple[str, ...], after: str, out: Output,
                             client_event: dict[str, Any] | None) -> None:
        what = f"{' + '.join(sources)} moved the response from {before} to {after}, which mappings/state.yaml's " \
               "lifecycle table does not allow"
        log.warning("session %s: %s", self.session.get("id"), what)
        self.observer.lifecycle_violation(before, sources, after)
        if client_event is not None:  # the client caused it: it is told, with its event_id
            self._send_client(out, error_event(f"Internal translation error: {what}.", code="translation_error",
                                               type="server_error", event_id=client_event.get("event_id")))

    # -- the interpreter ---------------------------------------------------------------------------

    def _lifecycle(self, moment: str, event: dict[str, Any]) -> Output:
        out = Output()
        rules = self.mappings.lifecycle.get(moment)
        if rules is not None:
            before = self.session
            self._run(rules, event, out, None)
            if self.session is not before:
                self._check_lifecycle(before, out, moment=moment)
        return out

    def _run(self, rules: RuleFile, event: dict[str, Any], out: Output, event_id: str | None) -> None:
        scope: Scope = {"event": event, "session": self.session, "config": self.config,
                        "tables": self.mappings.tables}
        all_rules = rules.index.rules_for(event)  # only the rules this input's shape can trigger
        # ...and of those, only what the session state has not decided already (mapping/plan.py), as the
        # plan's generated function (translation/rule_code.py)
        plan = self._planner.plan(all_rules, scope, self._config_version)
        start = 0
        if plan is not None:
            start = plan.run(self, scope, out, event_id, scope["session"])
            if not start:
                return
        # a session state met for the first time, or the rest after a rule made the plan stale: interpreted
        self._interpret(self._planner.undecided(all_rules), start, scope, out, event_id)

    def _interpret(self, steps: tuple[Step, ...], index: int, scope: Scope, out: Output,
                   event_id: str | None) -> None:
        """The rules from `steps[index]` on, every condition evaluated, each rule whose condition holds applied
        by its generated function (rule_code.applier). Around a turn's edges most states last one input, and
        code generated for an input's whole rule list, run once, would cost more than it saves."""
        runtime = self.runtime
        while index < len(steps):
            step = steps[index]
            rule = step.rule
            index += 1
            try:
                if rule.lets_first:
                    for name, build in rule.lets:
                        scope[name] = build(runtime, scope)
                if not holds(step.rest, runtime, scope):
                    for name in rule.local_names:
                        scope.pop(name, None)
                    index += rule.skip
                    continue
                if rule.skip:  # a guarded include whose condition holds: run the rules it guards
                    continue
                applier(rule)(self, scope, out)
            except RULE_ERRORS as exc:
                self._rule_failed(rule, exc, out, event_id)
                return
            if rule.stop:
                return

    def _rule_failed(self, rule: Rule, exc: Exception, out: Output, event_id: str | None) -> None:
        # A mapping bug must not take the session down: report it, keep going.
        log.exception("rule %r (%s) failed", rule.name, rule.where, exc_info=exc)
        self._send_client(out, error_event(
            f"Internal translation error in rule '{rule.name}': {exc}", code="translation_error",
            type="server_error", event_id=event_id))

    def _transform(self, step: Transform, scope: Scope) -> None:
        """A rule's transform step: its result bound to its name, its next state kept in its session key."""
        scope[step.name], state = step(self.runtime, scope)
        if state is not self.session.get(step.state):
            self.session = assign(self.session, (step.state,), state)
            scope["session"] = self.session

    def _emit_command(self, to: str, message: Any, out: Output) -> None:
        """An emit to the pump (`generate`: an out-of-band response's call; `mcp`: an MCP request) or `log`."""
        if to == "generate":
            out.command(GenerateRequest(message["request_id"], message["model"], message["body"]))
        elif to == "mcp":
            out.command(McpRequest(message["request_id"], message["action"], message["server"],
                                   message.get("tool"), message.get("arguments")))
        else:
            note = message if isinstance(message, str) else orjson.dumps(message).decode()
            log.info("session %s: %s", self.session.get("id"), note)
            out.log.append(note)

    # -- the client edge ---------------------------------------------------------------------------

    def _wire_text(self, wire: WireTemplate, scope: Scope) -> str | None:
        """The message as JSON text, its session-decided fields serialised once per session state (kept for
        the states with the same values where they read it); None when the dict path is to build it: the first
        time the template meets a state (most of a turn's edge events go out once per state, and a layout made
        for one message costs more than the dict), or when deciding the fields raised (the dict path then
        evaluates them in order, and reports the error)."""
        session = scope["session"]
        known = self._layouts.get(id(wire))
        if known is None or known[0] is not wire or known[2] != self._config_version:
            known = None
        elif known[1] is not session:
            layout, values = known[3], known[4]
            if layout is None or values is None or not reads_same(session, values):
                known = None
            else:
                self._layouts[id(wire)] = (wire, session, self._config_version, layout, values)
        if known is None:
            self._layouts[id(wire)] = (wire, session, self._config_version, None, None)  # met once: not laid out yet
            return None
        layout = known[3]
        if layout is None:  # met again in the same state: a stream's message, laid out from now on
            try:
                layout = wire.layout(self.runtime, scope)
            except Exception:
                return None
            reads = wire.reads
            self._layouts[id(wire)] = (wire, session, self._config_version, layout,
                                       None if reads is None else read_values(session, reads))
        return wire.render(layout, self.runtime, scope, self._new_event_id)

    def _new_event_id(self) -> str:
        return self.ids.new("event")

    def _reshape(self, reshape: Any, event: dict[str, Any]) -> dict[str, Any]:
        built = reshape.build(self.runtime, {"event": event, "config": self.config,
                                             "tables": self.mappings.tables})
        merged = dict(event)
        for key in reshape.keys:
            if key in built:
                merged[key] = built[key]
            else:
                merged.pop(key, None)
        return merged

    def _send_client(self, out: Output, message: dict[str, Any]) -> None:
        """Queue a canonical (GA) event for the client: in its dialect, with an event_id."""
        reshape = self._to_client.get(message.get("type", ""))
        if reshape is not None:
            if reshape.drop:
                return
            message = self._reshape(reshape, message)
        if "event_id" not in message:
            message = {"event_id": self.ids.new("event"), **message}
        out.client.append(message)

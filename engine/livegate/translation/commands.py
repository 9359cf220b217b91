"""What the session core asks its pump to do, and what the pump reports back: small frozen dataclasses.

An `Output` (translation/translator.py) carries the messages for the client and for Gemini, then these
commands, in the order the pump carries them out: client messages, Gemini messages (on `Output.link`),
then each command. Most inputs produce no command at all (`Output.commands` is the shared empty tuple).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from livegate.translation.snapshot import Snapshot


class Timer(enum.Enum):
    """The session's timers. The pump arms one per name; its expiry is an input (`SessionCore.timer_expired`)."""

    CONTINUATION = "continuation"  # Gemini's held continuation is served after continuation_wait_ms
    UPSTREAM_IDLE = "upstream_idle"  # a response.done held for usage goes out after idle_after_ms of silence
    USER_IDLE = "user_idle"  # turn_detection.idle_timeout_ms passed since the last response.done
    STALL = "stall"  # Gemini owes an answer and said nothing: the watchdog's stall_timeout_ms before any
    # output (ask again, re-seed), upstream_stall_timeout_s in the middle of a response (an error, close 1014)
    SWITCH_DEADLINE = "switch_deadline"  # no turn boundary before goAway's deadline (resumption.yaml), or a
    # reconfiguration waited handle_wait_s at a turn boundary for a usable handle
    RECONNECT = "reconnect"  # a new connection that could not be opened is tried again (retry_after_s)
    DRAIN = "drain"  # the gateway drains: the session's turn boundary is awaited until drain_timeout_s


class CallOut:
    """A command the world outside answers (the accounting, the guardrails, an MCP server, a side model):
    the pump starts it in the background and hands each answer back to the core, which holds what waits on
    it meanwhile (server/session_services.py `answers`)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Arm `timer` to expire at `at` (seconds on the core's clock; `SessionCore.now()`), or cancel it (None).
    Arming a timer replaces its previous deadline."""

    timer: Timer
    at: float | None


@dataclass(frozen=True, slots=True)
class OpenUpstream:
    """Open a Gemini connection known as `link`: connect, send `setup`, wait for the first frame (at most
    upstream_setup_timeout_s), send `then`; report `upstream_opened(link, first)` or `upstream_failed(link,
    failure)`. The session's first connection (`first`) is opened in line (the client's input waits, as the
    session cannot go on without it); a switch is opened in the background while input is queued."""

    link: int
    setup: dict[str, Any]
    then: tuple[dict[str, Any], ...]
    first: bool
    mode: Literal["first", "handle", "fresh"]
    # The connection it replaces failed beyond recovery: open it on another deployment of the session's pool
    # (the pump's upstream picks which; the one that failed is tried last).
    relocate: bool = False


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    """Close the Gemini connection `link` (one the session moved away from); its close is no input."""

    link: int


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close the client's connection with `code` (livegate/close_codes.py) and `reason`. The session ends."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckGuardrail(CallOut):
    """Run the session's guardrails of `stage` on `text` and report the decision (`guardrail_decided(check,
    decision)`). Until then the input that brought the text, and every later input of its side, waits."""

    check: int
    stage: str
    text: str


@dataclass(frozen=True, slots=True)
class Reserve(CallOut):
    """Reserve one response's worst-case cost against every budget the session falls under (and check its
    tokens-per-minute limits) before Gemini is sent what may start it; report `reservation_answered(number,
    refusal)`. `max_output_tokens` is the session's cap (None: no cap, the configured one applies). Gemini-bound
    content waits for the answer (docs/operating/fleet.md, "Limits and budgets across instances")."""

    number: int
    max_output_tokens: int | None


@dataclass(frozen=True, slots=True)
class Settle:
    """The responses of these reservations are over and their usage was reported: release what they held
    (their cost was charged as the usage came)."""

    numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReservationRefused:
    """Why a response cannot start: `message` for the client, OpenAI's error `code` and `type`."""

    message: str
    code: str
    type: str = "invalid_request_error"


@dataclass(frozen=True, slots=True)
class McpRequest(CallOut):
    """Ask an MCP server of the session (livegate is the MCP client of the session's `{type: "mcp"}` tools):
    list its tools (`action` "list") or call one ("call"), in the background; report the outcome with
    `SessionCore.mcp_result(request_id, result)`. `server` is the session's MCP tool as the client declared it
    (server_url, headers, authorization, allowed_tools, require_approval): it carries secrets, never logged."""

    request_id: str
    action: Literal["list", "call"]
    server: dict[str, Any] = field(repr=False)
    tool: str | None = None
    arguments: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class GenerateRequest(CallOut):
    """Answer an out-of-band response (response.create with conversation "none") beside the live session: a
    streamGenerateContent call of `model` (the session model's family, models.yaml side_model) on the session's
    backend, with `body` (contents, systemInstruction, generationConfig). The stream is reported with
    `SessionCore.side_result(request, event)`: {delta}, then {done, finish_reason, usage_metadata} or {error}."""

    request_id: str
    model: str
    body: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class StoreSession:
    """Keep `snapshot` in the shared store, for another instance to take the session over (takeover/). The
    pump hands it to a background writer (nothing waits on the audio path); with `release` it waits until the
    state is written, and the session is let go: the next command closes the client."""

    snapshot: Snapshot
    release: bool = False


Command = (SetTimer | OpenUpstream | CloseUpstream | CloseClient | Reserve | Settle | McpRequest | GenerateRequest
           | StoreSession | CheckGuardrail)


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """Why a Gemini connection could not be opened, as the pump saw it (no secret in `detail`).

    kind: "unreachable" (refused or unreachable; `detail` says so), "closed" (closed during setup: `code`,
    `reason`), "timeout" (no answer to setup in time), "credentials" (`detail` names the problem), "other"
    (`detail`: the exception type, for the log only). `status`: the HTTP status of a refused handshake."""

    kind: Literal["unreachable", "closed", "timeout", "credentials", "other"]
    detail: str = ""
    code: int = 1006
    reason: str = ""
    status: int | None = None

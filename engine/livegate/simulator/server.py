"""A deterministic local stand-in for Gemini Live (BidiGenerateContent) over WebSockets.

It is a simulator, not a model: every answer is labelled `[livegate simulator]` (see script.py).
Wire behaviour follows docs/protocol-notes.md §2-3: JSON in binary frames, camelCase out, camelCase or snake_case in,
errors as WebSocket close codes (1007 for bad client input, 1011 for internal errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl as ssl_module
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from livegate.translation.capabilities import ModelTable, shipped_table

from . import audio, rest, script
from .wire import b64decode, b64encode, camel, normalize_keys, sample_rate

log = logging.getLogger("livegate.simulator")

UsagePlacement = Literal["with_turn_complete", "after_turn_complete"]
Backend = Literal["aistudio", "vertex"]
# Gemini's faults a test can switch on (GeminiLiveSimulator.inject), each consumed by the next model turn:
#   stall             the turn is never answered (nothing is sent, the socket stays open)
#   empty_turn        turnComplete with nothing in it (googleapis/python-genai#2117)
#   rejected          an empty turn with turnCompleteReason RESPONSE_REJECTED (gemini-live-api-examples#40)
#   silent_audio      the answer's audio is near-silent (mean absolute sample about 18), its transcript as usual
#   close_mid_answer  the answer's first chunk, then close 1011: the backend lost the session (its handles die)
FAULTS = ("stall", "empty_turn", "rejected", "silent_audio", "close_mid_answer")
SILENT_AUDIO_SCALE = 18 / 5215  # the reply tone's mean absolute sample (0.25 full scale) down to about 18

# {version} may be anything (the SDK uses v1 / v1beta1 by default, docs v1beta / v1).
_AISTUDIO_PATH = re.compile(
    r"/ws/google\.ai\.generativelanguage\.[^./]+\.GenerativeService\.BidiGenerateContent"
)
_VERTEX_PATH = re.compile(r"/ws/google\.cloud\.aiplatform\.[^./]+\.LlmBidiService/BidiGenerateContent")
_CLIENT_FIELDS = ("setup", "clientContent", "realtimeInput", "toolResponse", "contextUpdate")
_REALTIME_FIELDS = frozenset(
    {"audio", "video", "text", "activityStart", "activityEnd", "audioStreamEnd", "mediaChunks"}
)
_MAX_MESSAGE_BYTES = 16 * 2**20
_SCHEDULING = frozenset({"SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"})


def backend_for_path(path: str) -> Backend | None:
    """Which Gemini backend a request path addresses (query string ignored), or None if neither."""
    bare = urlsplit(path).path
    if _AISTUDIO_PATH.fullmatch(bare):
        return "aistudio"
    return "vertex" if _VERTEX_PATH.fullmatch(bare) else None


@dataclass
class SimSession:
    """What one accepted connection did; the tests' window into the simulator."""

    path: str
    headers: dict[str, str]  # lower-cased names
    backend: Backend
    session_id: str
    received: list[dict[str, Any]] = field(default_factory=list)  # parsed client messages, as sent
    sent: list[dict[str, Any]] = field(default_factory=list)  # server frames, in order
    setup: dict[str, Any] | None = None  # the setup message, keys normalised to camelCase
    capabilities: dict[str, Any] | None = None  # the model's row of mappings/models.yaml, once set up
    resumed_from: str | None = None  # the resumption handle this connection's setup resumed
    connection: Any = field(default=None, repr=False, compare=False)  # the live _Connection (for abort())

    async def abort(self, code: int = 1011, reason: str = "Internal error encountered.") -> None:
        """End the connection as a failing service would: a close `code` (1011: the session's handles die
        with it, as a backend fault is not fixed by resuming), or 1006: the TCP connection just drops."""
        if self.connection is not None:
            await self.connection.abort(code, reason)

    async def go_away(self, time_left: float | str = "10s") -> None:
        """Send goAway. `time_left` in seconds (a number): the connection then ends (1000) when they have
        passed; as Gemini's text ("10s"): the announcement only, the connection stays open."""
        if self.connection is None:
            return
        if isinstance(time_left, str):
            await self.connection._send({"goAway": {"timeLeft": time_left}})
        else:
            await self.connection.go_away(time_left)
    close_code: int | None = None  # set when the simulator closed the connection itself
    close_reason: str | None = None
    closed_at: float | None = None  # time.perf_counter() when it did (bench/bench_faults.py times from it)


class _HttpOrWebSocket(ServerConnection):
    """A connection to the simulator's port: a WebSocket handshake (GET) goes to websockets; a POST is a REST
    generateContent call (rest.py), answered here, as Google serves both on one origin."""

    sim: GeminiLiveSimulator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = b""  # bytes seen before the method was known, or the REST request so far
        self._kind: Literal["ws", "rest"] | None = None
        self._rest_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self._kind == "ws":
            super().data_received(data)
            return
        self._head += data
        if self._kind is None:
            if len(self._head) < 5 and b"POST "[: len(self._head)] == self._head:
                return  # not known yet
            self._kind = "rest" if self._head.startswith(b"POST ") else "ws"
            if self._kind == "ws":
                head, self._head = self._head, b""
                self._rest_done.set_result(None)
                super().data_received(head)
                return
        header_end = self._head.find(b"\r\n\r\n")
        if header_end < 0 or self._rest_done.done() or getattr(self, "_rest_task", None) is not None:
            return
        lines = self._head[:header_end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length") or 0)
        if len(self._head) - header_end - 4 < length:
            return
        path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
        body = self._head[header_end + 4: header_end + 4 + length]
        self._rest_task = asyncio.get_running_loop().create_task(self._answer(path, headers, body))

    async def _answer(self, path: str, headers: dict[str, str], body: bytes) -> None:
        sim = self.sim
        try:
            answer, parsed = rest.generate(path, headers, body, sim.api_key,
                                           lambda model: sim.models.row(model)["family"] != "default")
            call = rest.RestCall(path, headers, parsed, answer.status, answer.chunks)
            sim.rest_calls.append(call)
            self.transport.write(rest.http_head(answer.status, "text/event-stream" if answer.sse
                                                else "application/json"))
            for i, piece in enumerate(answer.body()):
                if i and sim.chunk_delay:
                    await asyncio.sleep(sim.chunk_delay)
                self.transport.write(piece)
            while self.transport.get_write_buffer_size():  # the answer leaves before the connection closes
                await asyncio.sleep(0.005)
        finally:
            self.transport.close()
            if not self._rest_done.done():
                self._rest_done.set_result(None)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.wait([self._rest_done, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED)
        if self._kind == "ws":
            await super().handshake(*args, **kwargs)
        # a REST call was answered (or the peer left before saying anything): no WebSocket, nothing to log


class _ClientError(Exception):
    """Bad client input: the connection is closed with 1007 and this reason."""


class _Fault(Exception):
    """A backend fault: the connection is closed with 1011 and this reason."""


class GeminiLiveSimulator:
    """Serve the Gemini Live protocol on a local port with scripted, clearly-labelled answers."""

    def __init__(
        self,
        chunk_delay: float = 0.0,
        usage_placement: UsagePlacement = "with_turn_complete",
        api_key: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        models: ModelTable | None = None,
        connection_lifetime: float | None = None,
        go_away_lead: float = 1.0,
        handle_ttl: float = 7200.0,
    ) -> None:
        """`connection_lifetime`: seconds after which a connection ends, `go_away_lead` seconds after a
        goAway (like the real ~10 min / ~60 s, shortened for tests). Resumption handles live `handle_ttl`
        seconds and carry the conversation, as Gemini's do."""
        if usage_placement not in ("with_turn_complete", "after_turn_complete"):
            raise ValueError(f"unknown usage_placement {usage_placement!r}")
        self.chunk_delay = chunk_delay
        self.usage_placement = usage_placement
        self.api_key = api_key
        self.ssl = ssl
        self.models = models or shipped_table()  # it behaves as the model named in setup
        self.connection_lifetime = connection_lifetime
        self.go_away_lead = go_away_lead
        self.handle_ttl = handle_ttl
        self.resumable: dict[str, dict[str, Any]] = {}  # handle -> what a resumed session continues with
        self.setup_delay = 0.0  # seconds before setupComplete (a slow service, for tests)
        self.faults: list[str] = []  # injected faults (FAULTS), consumed in order by the next model turns
        self.issue_handles = True  # False: no sessionResumptionUpdate at all (a backend that sends none)
        # A failing deployment, for tests: `refuse_status` answers every handshake with that HTTP status (429
        # quota, 403 access, 503 overloaded); `close_on_setup` = (code, reason) closes each connection when its
        # setup arrives, before setupComplete. `refused` counts the handshakes refused.
        self.refuse_status: int | None = None
        self.close_on_setup: tuple[int, str] | None = None
        self.refused = 0
        # What the next audio turns say, in order (a stand-in for speech recognition: tests speak a sentence with
        # espeak-ng and tell the simulator its words); an audio turn with none queued is "N.N s of audio".
        self.hearing: list[str] = []
        self.handles_issued = 0
        self.sessions: list[SimSession] = []
        self.rest_calls: list[rest.RestCall] = []  # generateContent requests (out-of-band responses)
        self._server: Server | None = None
        self._host = "127.0.0.1"

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> GeminiLiveSimulator:
        self._host = host
        self._server = await serve(
            self._handle,
            host,
            port,
            ssl=self.ssl,
            process_request=self._check_request,
            max_size=_MAX_MESSAGE_BYTES,
            create_connection=type("_SimConnection", (_HttpOrWebSocket,), {"sim": self}),
        )
        return self

    def inject(self, fault: str, times: int = 1) -> None:
        """Make the next `times` model turns (on any connection) fail with `fault` (one of FAULTS)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        self.faults += [fault] * times

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> GeminiLiveSimulator:
        return await self.start() if self._server is None else self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.ssl else 'ws'}://{host}:{self.port}"

    # --- handshake -------------------------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if backend_for_path(request.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not a Gemini Live endpoint.\n")
        if self.refuse_status is not None:
            self.refused += 1
            return connection.respond(HTTPStatus(self.refuse_status), "Refused (the simulator's refuse_status).\n")
        if self.api_key is not None:
            keys = {request.headers.get("x-goog-api-key")}
            scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
            if scheme.lower() == "bearer":
                keys.add(token.strip())
            keys.update(parse_qs(urlsplit(request.path).query).get("key", []))  # raw clients use ?key=
            if self.api_key not in keys:
                return connection.respond(HTTPStatus.UNAUTHORIZED, "Missing or invalid API key.\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # the handler only runs after a completed handshake
        backend = backend_for_path(request.path)
        assert backend is not None  # _check_request rejected every other path
        session = SimSession(
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.raw_items()},
            backend=backend,
            session_id=f"sim-session-{len(self.sessions) + 1}",
        )
        self.sessions.append(session)
        session.connection = _Connection(self, ws, session)
        try:
            await session.connection.run()
        finally:
            session.connection = None


class _Connection:
    """Protocol state of one client connection."""

    def __init__(self, sim: GeminiLiveSimulator, ws: ServerConnection, session: SimSession) -> None:
        self.sim, self.ws, self.session = sim, ws, session
        self.setup_done = False
        self.text_out = False
        self.input_transcription = self.output_transcription = False
        self.diarization = False  # inputAudioTranscription.diarization: transcripts carry speaker labels
        self.manual_activity = False
        self.functions: dict[str, dict[str, Any]] = {}
        self.behaviors: dict[str, str] = {}  # function name -> BLOCKING or NON_BLOCKING, as declared
        self.system_instruction = ""
        self.history: list[dict[str, Any]] = []
        self.pending_calls: dict[str, str] = {}  # call id -> function name, awaiting a toolResponse
        self.calls = 0
        self.lifetime_task: asyncio.Task[None] | None = None
        self.seeding = False  # historyConfig.initialHistoryInClientContent: clientContent is history until turnComplete
        self.vad = audio.EnergyVad()
        self.max_output_tokens: int | None = None  # generationConfig.maxOutputTokens: answers are cut there
        self.in_activity = False  # between activityStart and activityEnd (manual mode)
        self.activity_audio = bytearray()
        self.activity_rate = 16000
        self.answer_task: asyncio.Task[None] | None = None  # only used when chunk_delay > 0
        # Where the answer task is: "idle" (not in a model turn yet), "streaming" (model turn frames sent),
        # "finishing" (turnComplete under way: only usage / resumption frames left).
        self.phase = "idle"
        self.caps: dict[str, Any] = {}  # the model's capabilities (mappings/models.yaml), set at setup
        self.image_tokens = script.DEFAULT_IMAGE_TOKENS  # per image / video frame, by mediaResolution
        self.video_frames = 0  # realtimeInput.video frames since the last model turn (counted as VIDEO)
        self.waits_for_input = False  # extended-thinking models mark the end of a turn with waitingForInput
        self.model_turns = 0  # finished model turns

    # --- plumbing --------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                await self._on_frame(raw)
        except _ClientError as exc:
            await self._close(1007, str(exc))
        except _Fault as exc:
            await self._close(1011, str(exc))
        except ConnectionClosed:
            pass
        except Exception as exc:
            log.exception("simulator session %s failed", self.session.session_id)
            await self._close(1011, f"internal error: {exc!r}")
        finally:
            for task in (self.answer_task, self.lifetime_task):
                if task is not None:
                    task.cancel()

    async def abort(self, code: int, reason: str) -> None:
        if code == 1011:  # its handles cannot resume a session the backend lost
            for handle in [h for h, saved in self.sim.resumable.items() if saved["session"] == self.session.session_id]:
                self.sim.resumable[handle]["dead"] = True
        if code == 1006:
            self.session.close_code, self.session.close_reason = 1006, "connection dropped"
            self.session.closed_at = time.perf_counter()
            self.ws.transport.abort()
            return
        await self._close(code, reason)

    async def _live_for(self, lifetime: float) -> None:
        """The connection's lifetime: a goAway `go_away_lead` seconds before the end, then the close."""
        lead = min(self.sim.go_away_lead, lifetime)
        await asyncio.sleep(lifetime - lead)
        await self._ending(lead)

    async def go_away(self, time_left: float) -> None:
        if self.lifetime_task is not None:
            self.lifetime_task.cancel()
        self.lifetime_task = asyncio.create_task(self._ending(time_left))

    async def _ending(self, time_left: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send({"goAway": {"timeLeft": f"{time_left:g}s"}})
            await asyncio.sleep(time_left)
            await self._close(1000, "The connection reached its maximum lifetime.")

    async def _close(self, code: int, reason: str) -> None:
        reason = reason.encode()[:120].decode(errors="ignore")  # close reasons are capped at 123 bytes
        if self.session.close_code is None:
            self.session.close_code, self.session.close_reason = code, reason
            self.session.closed_at = time.perf_counter()
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, reason)

    async def _send(self, frame: dict[str, Any]) -> None:
        self.session.sent.append(frame)
        await self.ws.send(json.dumps(frame).encode())  # bytes -> binary frame, like the real service

    async def _respond(self, answer: Coroutine[Any, Any, None]) -> None:
        """Run an answer (callers _interrupt() first). With chunk_delay it streams in the background, so
        user input can barge in; without, it runs inline and frame order is fully deterministic."""
        if self.sim.chunk_delay <= 0:
            await answer
        else:
            self.answer_task = asyncio.create_task(self._guarded(answer))

    async def _guarded(self, answer: Coroutine[Any, Any, None]) -> None:
        try:
            await answer
        except ConnectionClosed:
            pass
        except Exception as exc:
            log.exception("simulator session %s failed", self.session.session_id)
            await self._close(1011, f"internal error: {exc!r}")

    async def _interrupt(self) -> None:
        """Barge-in: new user activity stops the answer being streamed (interrupted, then turnComplete)."""
        task, self.answer_task = self.answer_task, None
        if task is None or task.done():
            return
        if self.phase == "finishing":  # the turn is complete already; let its trailing frames go out
            await asyncio.wait([task])
            return
        was_streaming = self.phase == "streaming"
        task.cancel()
        await asyncio.wait([task])
        self.phase = "idle"
        if was_streaming:
            await self._send({"serverContent": {"interrupted": True}})
            await self._send({"serverContent": {"turnComplete": True}})

    async def _pause(self) -> None:
        if self.sim.chunk_delay > 0:
            await asyncio.sleep(self.sim.chunk_delay)

    # --- client messages -------------------------------------------------------------------------------

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _ClientError("Invalid JSON payload received.") from None
        if not isinstance(message, dict):
            raise _ClientError("Invalid JSON payload received: expected an object.")
        self.session.received.append(message)
        for key in message:
            if camel(key) not in _CLIENT_FIELDS:
                raise _ClientError(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
        if len(message) != 1:
            raise _ClientError(f"Exactly one of {', '.join(_CLIENT_FIELDS)} must be set per message.")
        ((name, body),) = normalize_keys(message).items()
        if not isinstance(body, dict):
            raise _ClientError(f"Invalid JSON payload received: {name} must be an object.")
        if name == "setup":
            if self.setup_done:
                raise _ClientError("setup must be sent only once, as the first message.")
            await self._on_setup(body)
        elif not self.setup_done:
            raise _ClientError("The first message must be setup.")
        elif self.caps["transcription_only"] and (name in ("clientContent", "toolResponse")
                                                  or "text" in _obj(body)):
            raise _ClientError(f"The model {self.caps['model']} only transcribes audio input.")
        elif name == "clientContent":
            if self.model_turns and not self.caps["client_content_after_first_turn"]:
                log.info("simulator: %s ignores clientContent after the first turn", self.caps["model"])
                return
            await self._on_client_content(body)
        elif name == "realtimeInput":
            await self._on_realtime_input(body)
        elif name == "toolResponse":
            await self._on_tool_response(body)
        else:
            if not self.caps["context_update"]:
                raise _ClientError(f"contextUpdate is not supported by the model {self.caps['model']}.")
            self._check_model_can(body)
            self._on_context_update(body)

    async def _on_setup(self, setup: dict[str, Any]) -> None:
        if self.sim.close_on_setup is not None:
            await self._close(*self.sim.close_on_setup)
            return
        if not isinstance(setup.get("model"), str) or not setup["model"]:
            raise _ClientError("setup.model is required.")
        # The real service defaults to AUDIO output when responseModalities is absent.
        modalities = _obj(setup.get("generationConfig")).get("responseModalities") or ["AUDIO"]
        wanted = [str(m).upper() for m in modalities] if isinstance(modalities, list) else None
        if wanted not in (["TEXT"], ["AUDIO"]):
            raise _ClientError(f"responseModalities must be [TEXT] or [AUDIO], got {modalities!r}.")
        self.text_out = wanted == ["TEXT"]
        self.caps = self.sim.models.capabilities(setup["model"], self.session.backend)
        self.session.capabilities = self.caps
        if wanted[0] not in self.caps["output_modalities"]:
            raise _ClientError(f"The requested combination of response modalities ({wanted[0]}) is not supported "
                               "by the model.")
        self._check_model_can(setup)
        resolution = _obj(setup.get("generationConfig")).get("mediaResolution")
        cap = _obj(setup.get("generationConfig")).get("maxOutputTokens")
        self.max_output_tokens = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
        self.image_tokens = script.IMAGE_TOKENS.get(str(resolution), script.DEFAULT_IMAGE_TOKENS)
        self.waits_for_input = self.caps["thinking"] == "required"
        self.input_transcription = setup.get("inputAudioTranscription") is not None
        self.diarization = bool(_obj(setup.get("inputAudioTranscription")).get("diarization"))
        self.output_transcription = setup.get("outputAudioTranscription") is not None
        detection = _obj(_obj(setup.get("realtimeInputConfig")).get("automaticActivityDetection"))
        self.manual_activity = bool(detection.get("disabled"))
        self._on_context_update(setup)
        self._resume(_obj(setup.get("sessionResumption")).get("handle"))
        self.seeding = bool(_obj(setup.get("historyConfig")).get("initialHistoryInClientContent"))
        self.session.setup = setup
        self.setup_done = True
        if self.sim.setup_delay:
            await asyncio.sleep(self.sim.setup_delay)
        await self._send({"setupComplete": {"sessionId": self.session.session_id}})
        if self.sim.connection_lifetime is not None:
            self.lifetime_task = asyncio.create_task(self._live_for(self.sim.connection_lifetime))

    def _resume(self, handle: Any) -> None:
        """Continue the conversation a handle was issued for (the new setup's configuration applies)."""
        if handle is None:
            return
        saved = self.sim.resumable.get(handle) if isinstance(handle, str) else None
        if saved is None or time.monotonic() - saved["issued"] > self.sim.handle_ttl:
            raise _ClientError("Invalid or expired session resumption handle.")
        if saved.get("dead"):
            raise _Fault("Deadline expired before operation could complete.")
        self.history = [dict(turn) for turn in saved["history"]]
        self.pending_calls = dict(saved["pending_calls"])
        self.model_turns = saved["model_turns"]
        self.session.resumed_from = handle

    def _check_model_can(self, setup: dict[str, Any]) -> None:
        """Close with 1007, as the real service does, for what the model's row says it cannot take."""
        caps, config = self.caps, _obj(setup.get("generationConfig"))
        tools = setup.get("tools")
        tools = tools.get("tools") if isinstance(tools, dict) else tools  # contextUpdate wraps the list
        declarations = [d for t in tools or [] if isinstance(t, dict) for d in t.get("functionDeclarations") or []]
        thinking = _obj(config.get("thinkingConfig"))
        proactive = _obj(setup.get("proactivity")).get("proactiveAudio")
        kinds = {key for t in tools or [] if isinstance(t, dict) for key in t}
        problems = [
            (bool(tools) and not caps["tools"], "tools are not supported by this model"),
            ("systemInstruction" in setup and not caps["instructions"], "systemInstruction is not supported"),
            (any(_obj(d).get("behavior") == "BLOCKING" for d in declarations) and not caps["blocking_tools"],
             "only NON_BLOCKING functions are supported by this model"),
            ("thinkingLevel" in thinking and caps["thinking"] not in ("level", "required"),
             "thinkingLevel is not supported by this model"),
            ("thinkingBudget" in thinking and caps["thinking"] not in ("budget", "required"),
             "thinkingBudget is not supported by this model"),
            ("googleSearch" in kinds and not caps["google_search"], "googleSearch is not supported by this model"),
            ("codeExecution" in kinds and not caps["code_execution"], "codeExecution is not supported by this model"),
            ("mediaResolution" in config and config["mediaResolution"] not in script.IMAGE_TOKENS,
             f"invalid mediaResolution {config.get('mediaResolution')!r}"),
            (caps["thinking"] == "required" and "generationConfig" in setup
             and ("thinkingLevel" in thinking) == ("thinkingBudget" in thinking),
             "exactly one of thinkingLevel and thinkingBudget is required"),
            (proactive is not None and caps["proactive_audio"] == "none", "proactivity is not supported"),
            (proactive is False and caps["proactive_audio"] == "always", "proactiveAudio cannot be disabled"),
            ("enableAffectiveDialog" in config and not caps["affective_dialog"],
             "enableAffectiveDialog is not supported"),
            (_obj(setup.get("sessionResumption")).get("transparent") is not None and not caps["transparent_resumption"],
             "transparent is not supported"),
        ]
        for failed, reason in problems:
            if failed:
                raise _ClientError(f"{reason} ({caps['model']}).")

    def _on_context_update(self, update: dict[str, Any]) -> None:
        """systemInstruction / tools, from setup or a later contextUpdate."""
        if "systemInstruction" in update:
            self.system_instruction = _text_of(update["systemInstruction"])
        tools = update.get("tools")
        if isinstance(tools, dict):  # contextUpdate wraps the list: {"tools": {"tools": [...]}}
            tools = tools.get("tools")
        if tools is not None:
            self.functions = script.declared_functions(tools)
            self.behaviors = script.declared_behaviors(tools, self.caps["default_tool_behavior"])

    async def _on_client_content(self, content: dict[str, Any]) -> None:
        turns = content.get("turns") or []
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise _ClientError("clientContent.turns must be a list of Content objects.")
        if self.seeding:  # history for a fresh session: taken as it is, nothing is answered
            self.history.extend(turns)
            self.seeding = not content.get("turnComplete")
            return
        for turn in turns:
            self._check_images(turn)
        await self._interrupt()  # clientContent always interrupts the current generation
        self.history.extend(turns)
        if not content.get("turnComplete"):
            return
        # A call's result given as content (a re-seeded session's call, answered after the re-seed): the
        # model answers with it, as it does a toolResponse
        results = [(str(part["functionResponse"].get("name")), part["functionResponse"].get("response"))
                   for turn in turns for part in turn.get("parts") or []
                   if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict)]
        if results:
            for turn in turns:
                for part in turn.get("parts") or []:
                    self.pending_calls.pop(str(_obj(_obj(part).get("functionResponse")).get("id")), None)
            tokens = {"TEXT": script.text_tokens(json.dumps([r for _, r in results]))}
            await self._respond(self._stream_turn(script.tool_answer(results), tokens))
            return
        # Answer the most recent user text in the whole history (it may have been sent earlier).
        user_texts = [_text_of(t) for t in self.history if t.get("role", "user") == "user" and _text_of(t)]
        user_text = user_texts[-1] if user_texts else ""
        prompt = "".join(_text_of(turn) for turn in turns) or user_text
        await self._user_text_turn(user_text, prompt)

    def _check_images(self, turn: dict[str, Any]) -> None:
        """Close with 1007, as the service does, for an image the model cannot take."""
        for part in turn.get("parts") or []:
            mime = str(_obj(_obj(part).get("inlineData")).get("mimeType") or "")
            if mime.startswith("image/"):
                self._check_image(mime, "image")

    def _check_image(self, mime: str, kind: str) -> None:
        """An inline image (`kind` image) or a video frame (`kind` video) the model must be able to take."""
        if not self.caps[f"{kind}_input"]:
            raise _ClientError(f"{kind} input is not supported by this model ({self.caps['model']}).")
        if mime not in script.IMAGE_MIME_TYPES:
            raise _ClientError(f"Unsupported MIME type: {mime}")

    async def _on_realtime_input(self, rt: dict[str, Any]) -> None:
        unknown = sorted(set(rt) - _REALTIME_FIELDS)
        if unknown:
            raise _ClientError(f'Unknown name "{unknown[0]}" at realtime_input: Cannot find field.')
        if ("activityStart" in rt or "activityEnd" in rt) and not self.manual_activity:
            raise _ClientError("activityStart/activityEnd require automaticActivityDetection.disabled.")
        if "activityStart" in rt:
            await self._interrupt()
            self.in_activity = True
            self.activity_audio.clear()
        blobs = rt.get("mediaChunks") or []  # deprecated list form of audio/video
        if not isinstance(blobs, list):
            raise _ClientError("realtimeInput.mediaChunks must be a list of Blobs.")
        blobs += [rt[kind] for kind in ("audio", "video") if kind in rt]
        for blob in blobs:
            await self._on_blob(blob)
        if isinstance(rt.get("text"), str):
            self.history.append({"role": "user", "parts": [{"text": rt["text"]}]})
            await self._user_text_turn(rt["text"], rt["text"])
        if "activityEnd" in rt:
            self.in_activity = False
            if self.activity_audio:
                await self._user_audio_turn(bytes(self.activity_audio), self.activity_rate)
                self.activity_audio.clear()
        if rt.get("audioStreamEnd") and not self.manual_activity and self.caps["audio_stream_end_ends_turn"]:
            pcm = self.vad.flush()  # (on 3.8 the stream's end is not the turn's: only the VAD hearing the
            if pcm:  # speaker stop ends it, models.yaml audio_stream_end_ends_turn)
                await self._user_audio_turn(pcm, self.vad.rate)

    async def _on_blob(self, blob: Any) -> None:
        if not isinstance(blob, dict) or not isinstance(blob.get("data", ""), str):
            raise _ClientError("realtimeInput media must be a Blob {mimeType, data}.")
        try:
            data = b64decode(blob.get("data", ""))
        except ValueError as exc:
            raise _ClientError(str(exc)) from None
        mime = str(blob.get("mimeType") or "")
        if mime.startswith("image/"):  # a video frame: seen by the next turn, counted as VIDEO
            self._check_image(mime, "video")
            self.video_frames += 1
            return
        if not mime.startswith("audio/"):
            raise _ClientError(f"Unsupported MIME type: {mime}")
        rate = sample_rate(mime)
        if self.manual_activity:
            if self.in_activity:  # audio outside activityStart..activityEnd is not part of any turn
                self.activity_audio += data
                self.activity_rate = rate
            return
        started, ended = self.vad.feed(data, rate)
        if started:
            await self._voice_activity("ACTIVITY_START")
            await self._interrupt()
        for pcm in ended:
            await self._voice_activity("ACTIVITY_END")
            await self._user_audio_turn(pcm, rate)

    async def _voice_activity(self, kind: str) -> None:
        if self.caps["voice_activity"]:
            await self._send({"voiceActivity": {"type": kind}})  # the wire name (the SDK says voice_activity_type)

    async def _on_tool_response(self, body: dict[str, Any]) -> None:
        responses = body.get("functionResponses") or []
        if not isinstance(responses, list):
            raise _ClientError("toolResponse.functionResponses must be a list.")
        results: list[tuple[str, Any]] = []
        interrupt = False
        for resp in responses:
            if not isinstance(resp, dict):
                raise _ClientError("functionResponses entries must be objects.")
            call_id = resp.get("id") or next(
                (cid for cid, fn in self.pending_calls.items() if resp.get("name") in (None, fn)), None
            )
            if call_id not in self.pending_calls:
                log.info("simulator: ignoring a response for unknown/cancelled call %r", resp.get("id"))
                continue
            name = self.pending_calls.pop(call_id)
            scheduling = resp.get("scheduling")
            if scheduling is not None and scheduling not in _SCHEDULING:
                raise _ClientError(f"Invalid value at 'tool_response.function_responses.scheduling': {scheduling!r}")
            if self.behaviors.get(name) == "NON_BLOCKING":
                # Gemini's asynchronous calls: SILENT is taken in without a word, INTERRUPT cuts the answer
                # under way, WHEN_IDLE (the default) waits for it to end.
                if scheduling == "SILENT":
                    self.history.append({"role": "user", "parts": [{"functionResponse": resp}]})
                    continue
                interrupt |= scheduling == "INTERRUPT"
            else:
                interrupt = True  # a blocking call's output is what the model waited for
            results.append((name, resp.get("response")))
        if results:
            if interrupt:
                await self._interrupt()
            else:
                await self._until_idle()
            tokens = {"TEXT": script.text_tokens(json.dumps([r for _, r in results]))}
            await self._respond(self._stream_turn(script.tool_answer(results), tokens))

    async def _until_idle(self) -> None:
        """Let the answer under way finish (a WHEN_IDLE function response is heard after it)."""
        task, self.answer_task = self.answer_task, None
        if task is not None and not task.done():
            await asyncio.wait([task])

    # --- turns -----------------------------------------------------------------------------------------

    async def _cancel_pending_calls(self) -> None:
        """A new user turn supersedes tool calls that were never answered."""
        if self.pending_calls:
            ids, self.pending_calls = list(self.pending_calls), {}
            await self._send({"toolCallCancellation": {"ids": ids}})

    def _visual_tokens(self) -> tuple[int, dict[str, int]]:
        """Images in the user's turn (clientContent since the last model turn) and video frames since then:
        how many images the model saw, and their tokens by modality (usageMetadata promptTokensDetails)."""
        since = next((i for i in range(len(self.history) - 1, -1, -1) if self.history[i].get("role") == "model"), -1)
        images = sum(1 for turn in self.history[since + 1:] for part in turn.get("parts") or []
                     if str(_obj(_obj(part).get("inlineData")).get("mimeType") or "").startswith("image/"))
        frames, self.video_frames = self.video_frames, 0
        return images + frames, {"IMAGE": images * self.image_tokens, "VIDEO": frames * self.image_tokens}

    async def _user_text_turn(self, user_text: str, prompt: str) -> None:
        await self._interrupt()
        await self._cancel_pending_calls()
        seen, visual = self._visual_tokens()
        tokens = {"TEXT": script.text_tokens(self.system_instruction + prompt), **visual}
        reason = script.stop_reason(user_text)
        if reason is not None:
            await self._respond(self._stopped_turn(reason, tokens))
            return
        verbatim = script.verbatim(prompt)
        if verbatim is not None:  # asked to say something exactly: it says it
            await self._respond(self._stream_turn(f"{script.PREFIX} {verbatim}", tokens))
            return
        name = script.called_function(user_text, self.functions)
        if name is None:
            said = [_text_of(t) for t in self.history if t.get("role", "user") == "user" and _text_of(t)]
            answer = (script.recall_answer(said[:-1]) if script.asks_recall(user_text)
                      else script.echo_answer(user_text, seen))
            await self._respond(self._stream_turn(answer, tokens))
            return
        self.calls += 1
        args = script.sample_args(self.functions[name])
        call: dict[str, Any] = {"id": f"call-{self.calls}", "name": name, "args": args}
        self.pending_calls[call["id"]] = name
        await self._send({"toolCall": {"functionCalls": [call]}})
        if self.behaviors.get(name) == "NON_BLOCKING":  # an asynchronous call: the model talks on
            await self._respond(self._stream_turn(script.working_answer(name), tokens))

    async def _user_audio_turn(self, pcm: bytes, rate: int) -> None:
        await self._interrupt()
        await self._cancel_pending_calls()
        seconds = audio.pcm_seconds(len(pcm), rate)
        tokens = {
            "TEXT": script.text_tokens(self.system_instruction),
            "AUDIO": script.audio_tokens(len(pcm), rate),
            **self._visual_tokens()[1],
        }
        await self._respond(self._audio_answer(seconds, tokens))

    async def _audio_answer(self, seconds: float, tokens: dict[str, int]) -> None:
        if self.caps["transcription_only"]:
            await self._transcribe_only(seconds)
            return
        heard = self.sim.hearing.pop(0) if self.sim.hearing else None
        if self.input_transcription or self.caps["input_transcription_unasked"]:
            for chunk in script.split_text(heard) if heard else script.heard_transcript(seconds):
                await self._send({"serverContent": {"inputTranscription": {"text": chunk}}})
                await self._pause()
        if heard:
            self.history.append({"role": "user", "parts": [{"text": heard}]})
        await self._stream_turn(script.echo_answer(heard) if heard else script.heard_answer(seconds), tokens)

    async def _stopped_turn(self, reason: str | None, prompt_tokens: dict[str, int]) -> None:
        """A turn Gemini ends without output, giving its reason (a safety stop, a malformed call), or none."""
        self.phase = "finishing"
        end: dict[str, Any] = {"turnComplete": True, **({"turnCompleteReason": reason} if reason else {})}
        if self.waits_for_input:
            end["waitingForInput"] = True
        usage = script.usage_metadata(self.session.backend, prompt_tokens, {})
        await self._send({"serverContent": end, **({"usageMetadata": usage} if self.caps["reports_usage"] else {})})
        self.history.append({"role": "model", "parts": []})
        self.model_turns += 1
        self.phase = "idle"

    async def _stream_turn(self, text: str, prompt_tokens: dict[str, int]) -> None:
        """Stream one model turn: content chunks, generationComplete, turnComplete + usage, new handle. An
        answer longer than maxOutputTokens stops there, as Gemini's does."""
        fault = self.sim.faults.pop(0) if self.sim.faults else None
        if fault == "stall":
            log.info("simulator: fault injected, the turn is never answered")
            return
        if fault in ("empty_turn", "rejected"):
            await self._stopped_turn("RESPONSE_REJECTED" if fault == "rejected" else None, prompt_tokens)
            return
        text = script.cut_to_tokens(text, self.max_output_tokens, audio_out=not self.text_out)
        chunks = script.split_text(text)
        self.phase = "streaming"
        if self.text_out:
            for i, chunk in enumerate(chunks):
                if i:
                    await self._pause()
                await self._send(_model_turn({"text": chunk}))
                if fault == "close_mid_answer":
                    await self.abort(1011, "Internal error encountered.")
                    return
            response_tokens = {"TEXT": script.text_tokens(text)}
        else:
            pcm_chunks = audio.reply_audio(text)
            if fault == "silent_audio":
                pcm_chunks = [audio.scaled(pcm, SILENT_AUDIO_SCALE) for pcm in pcm_chunks]
            slots = script.spread(len(chunks), len(pcm_chunks)) if self.output_transcription else []
            for i, pcm in enumerate(pcm_chunks):
                if i:
                    await self._pause()
                await self._send(
                    _model_turn({"inlineData": {"mimeType": audio.OUTPUT_MIME, "data": b64encode(pcm)}})
                )
                for chunk, slot in zip(chunks, slots, strict=False):
                    if slot == i:  # transcript text rides along with the audio it describes
                        await self._send({"serverContent": {"outputTranscription": {"text": chunk}}})
                if fault == "close_mid_answer":
                    await self.abort(1011, "Internal error encountered.")
                    return
            n_bytes = sum(len(p) for p in pcm_chunks)
            response_tokens = {"AUDIO": script.audio_tokens(n_bytes, audio.OUTPUT_RATE)}
        await self._pause()
        await self._send({"serverContent": {"generationComplete": True}})
        await self._pause()
        usage = script.usage_metadata(self.session.backend, prompt_tokens, response_tokens)
        self.phase = "finishing"  # from here on a barge-in waits for the turn instead of interrupting it
        end: dict[str, Any] = {"turnComplete": True, **({"waitingForInput": True} if self.waits_for_input else {})}
        if not self.caps["reports_usage"]:
            await self._send({"serverContent": end})
        elif self.sim.usage_placement == "with_turn_complete":
            await self._send({"serverContent": end, "usageMetadata": usage})
        else:
            await self._send({"serverContent": end})
            await self._send({"usageMetadata": usage})
        self.history.append({"role": "model", "parts": [{"text": text}]})
        self.model_turns += 1
        await self._send_handle()
        self.phase = "idle"

    async def _send_handle(self) -> None:
        if self.sim.issue_handles:
            await self._send({"sessionResumptionUpdate": {"newHandle": self._new_handle(), "resumable": True}})


    async def _transcribe_only(self, seconds: float) -> None:
        """A transcription model: the utterance's transcript (the last chunk `finished`; with diarization
        each chunk carries a speaker label and its offsets), then turnComplete. No model turn, no usage."""
        chunks = script.heard_transcript(seconds)
        self.phase = "streaming"
        for i, text in enumerate(chunks):
            if i:
                await self._pause()
            piece: dict[str, Any] = {"text": text}
            if self.diarization:
                piece |= {"speakerLabel": "A", "startOffset": f"{seconds * i / len(chunks):.3f}s",
                          "endOffset": f"{seconds * (i + 1) / len(chunks):.3f}s"}
            if i == len(chunks) - 1:
                piece["finished"] = True
            await self._send({"serverContent": {"inputTranscription": piece}})
        self.phase = "finishing"
        await self._send({"serverContent": {"turnComplete": True}})
        self.history.append({"role": "user", "parts": [{"text": "".join(chunks)}]})
        await self._send_handle()
        self.phase = "idle"

    def _new_handle(self) -> str:
        self.sim.handles_issued += 1
        handle = f"sim-handle-{self.sim.handles_issued}"
        self.sim.resumable[handle] = {"session": self.session.session_id, "issued": time.monotonic(),
                                      "history": [dict(turn) for turn in self.history],
                                      "pending_calls": dict(self.pending_calls), "model_turns": self.model_turns}
        return handle


def _model_turn(part: dict[str, Any]) -> dict[str, Any]:
    return {"serverContent": {"modelTurn": {"role": "model", "parts": [part]}}}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _texts(content: Any) -> list[str]:
    """Text parts of a Content (or of a bare string, as some clients send systemInstruction)."""
    if isinstance(content, str):
        return [content]
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _text_of(content: Any) -> str:
    return "".join(_texts(content))

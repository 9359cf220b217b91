"""What a realtime session's commands ask of the world beyond its two sockets.

A Gemini connection opened (in the session's pool, or straight to its provider), a budget reservation, a
guardrail verdict, an MCP server's answer, an out-of-band answer streamed by generateContent, the
accounting's word that the session must stop, and at the end the session's log line and spend row. Each
method is one call out; `answers` hands a command's answer to the session core and gives back what the core
made of it, for the pump (realtime.py) to write. Nothing here reads or writes the client or a Gemini
connection.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from livegate.accounting.gate import Grant, Stop
from livegate.close_codes import NORMAL
from livegate.config import Timeouts
from livegate.mcp.client import McpClients
from livegate.observability.guardrails import ALLOW
from livegate.observability.session import SessionWatch
from livegate.translation.commands import (
    CallOut,
    CheckGuardrail,
    GenerateRequest,
    McpRequest,
    OpenUpstream,
    ReservationRefused,
    Reserve,
    UpstreamFailure,
)
from livegate.translation.observer import Observers
from livegate.translation.resumption import ResumptionPolicy
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Output, Translator
from livegate.translation.watchdog import WatchdogSettings
from livegate.upstream.base import Provider
from livegate.upstream.connection import UpstreamConnection, open_link
from livegate.upstream.generate import Event, stream_generate
from livegate.upstream.pool import Placement

log = logging.getLogger("livegate.session")


class SessionServices:
    def __init__(self, provider: Provider, model: str, timeouts: Timeouts, grant: Grant | None,
                 placement: Placement | None, watch: SessionWatch) -> None:
        self.provider, self.model, self.timeouts = provider, model, timeouts
        self.grant = grant  # accounting: usage, cost, limits (None: not metered)
        self.placement = placement  # the session's deployment in its pool, which opens its connections
        self.watch = watch
        self._mcp: McpClients | None = None  # the session's MCP servers, on its first MCP request
        self.started = time.monotonic()

    def session_core(self, translator: Translator, policy: ResumptionPolicy | None, *, checkpoints: bool,
                     watchdog: WatchdogSettings | None) -> SessionCore:
        """The session's core, its usage watched by the accounting, the session's observers and its pool."""
        grant, placement = self.grant, self.placement
        if placement is not None:
            placement.watch(translator.usage)  # its tokens count against the deployment's tpm
        watchers = [o for o in (grant, *self.watch.observers) if o is not None]
        observer = watchers[0] if len(watchers) == 1 else Observers(*watchers) if watchers else None
        return SessionCore(translator, policy, stall_after_s=self.timeouts.upstream_stall_s, observer=observer,
                           relocations=placement.alternatives if placement is not None else 0,
                           checkpoints=checkpoints, reserve=grant is not None and grant.reserves, watchdog=watchdog)

    async def open(self, command: OpenUpstream) -> tuple[UpstreamConnection, str | bytes] | UpstreamFailure:
        """A Gemini connection that answered the command's setup (with its first frame), or why not."""
        connecting = time.monotonic()
        setup_s = self.timeouts.upstream_setup_s
        opened = (await self.placement.open(command, setup_s) if self.placement is not None
                  else await open_link(self.provider, command.setup, command.then, setup_s))
        if isinstance(opened, tuple) and command.first and self.grant is not None:
            self.grant.upstream_connected(time.monotonic() - connecting)
        return opened

    def connection_lost(self, code: int) -> None:
        """The session's Gemini connection closed with `code`: its pool hears of it (cooldowns)."""
        if self.placement is not None:
            self.placement.lost(code)

    async def answers(self, command: CallOut, core: SessionCore) -> AsyncIterator[Output]:
        """What the core makes of the answer to a call-out command (a reservation, a guardrail verdict, an
        MCP result, an out-of-band answer's events), as each comes."""
        match command:
            case Reserve(number):
                yield core.reservation_answered(number, await self.reserve(command))
            case CheckGuardrail(check):
                yield core.guardrail_decided(check, await self.check(command))
            case McpRequest():
                yield core.mcp_result(command, await self.ask_mcp(command))
            case GenerateRequest():
                async for event in self.generate(command):
                    yield core.side_result(command, event)

    def settle(self, numbers: tuple[int, ...]) -> None:
        """Responses whose usage is charged: their reservations are released."""
        if self.grant is not None:
            self.grant.settle_responses(numbers)

    async def reserve(self, command: Reserve) -> ReservationRefused | None:
        """The budget for one response: None when reserved, else the refusal."""
        if self.grant is None:
            return None
        return await self.grant.reserve_response(command.number, command.max_output_tokens)

    async def check(self, command: CheckGuardrail) -> dict[str, Any]:
        """The guardrails' verdict on a held text, as the event the core reads."""
        guardrails = self.watch.guardrails
        verdict = ALLOW if guardrails is None else await guardrails.check(command.stage, command.text)
        return verdict.as_event(command.stage)

    async def ask_mcp(self, request: McpRequest) -> Any:
        if self._mcp is None:
            self._mcp = McpClients(self.timeouts.mcp_s)
        return await self._mcp.request(request.server, request.action, request.tool, request.arguments)

    def generate(self, request: GenerateRequest) -> AsyncIterator[Event]:
        """An out-of-band answer's events, streamed beside the live session on the deployment carrying it now
        (its project, region or key), as its Live connection."""
        provider = self.placement.provider() if self.placement is not None else self.provider
        return stream_generate(provider, request.model, request.body, connect_s=self.timeouts.upstream_setup_s,
                               stall_s=self.timeouts.upstream_stall_s)

    async def stopped(self) -> Stop:
        """Returns once the accounting stops the session: budget spent, key deleted or expired, maximum
        duration (only for a metered session)."""
        assert self.grant is not None
        return await self.grant.wait_stopped()

    async def finish(self, ended: tuple[int, str] | None, dialect: str, session_id: str | None,
                     tokens: dict[str, Any]) -> None:
        """The session is over: its MCP servers closed, its pool slot released, its traces and transcript,
        the `session_end` log line, and its spend row."""
        if self._mcp is not None:
            await self._mcp.aclose()
        if self.placement is not None:
            await self.placement.release()
        code, reason = ended or (NORMAL, "")
        self.watch.finish(self.grant, code, reason, dialect, session_id)
        log.info("session_end %s", json.dumps({
            "model": self.model, "backend": self.provider.backend, "dialect": dialect,
            "deployment": self.placement.route.deployment if self.placement is not None else None,
            "duration_s": round(time.monotonic() - self.started, 3), "close_code": code,
            "close_reason": reason, "tokens": tokens}, sort_keys=True))
        if self.grant is not None:
            await self.grant.finish(code, "success" if code == NORMAL else "failure", reason)

"""`/v1/realtime`: one OpenAI Realtime client, one translator, one Gemini Live connection.

The pump is thin on purpose: it moves frames between the sockets and the translator and owns the
timing the translator cannot (connect, the idle timer, closes).

Gemini is contacted when the first content arrives (the translator emits `setup` then), because
Gemini's configuration is fixed by that one message. Close codes sent to the client:
    1000  the session ended normally (client or Gemini closed cleanly)
    1011  an internal livegate error
    1014  Gemini could not be reached, refused the connection, or closed it abnormally (bad gateway)
    4008, 4010, 4029  accounting stopped the session (engine/accounting/gate.py), after an `error` event
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from livegate.accounting.gate import Grant
from livegate.translator import Output, Translator
from livegate.upstream.base import Provider
from livegate.upstream.connection import UpstreamConnection, UpstreamError
from livegate.upstream.google_credentials import CredentialsError

log = logging.getLogger("livegate.session")

CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011
CLOSE_BAD_GATEWAY = 1014


class RealtimeSession:
    def __init__(self, ws: WebSocket, translator: Translator, provider: Provider, model: str,
                 grant: Grant | None = None) -> None:
        self.grant = grant  # accounting: usage, cost, limits (None: not metered)
        self.ws = ws
        self.translator = translator
        self.provider = provider
        self.model = model
        self.upstream: UpstreamConnection | None = None
        self._send_lock = asyncio.Lock()
        self._upstream_task: asyncio.Task[None] | None = None
        self._closed: tuple[int, str] | None = None
        self.started = time.monotonic()

    async def run(self) -> None:
        enforcer = asyncio.create_task(self._enforce_limits()) if self.grant else None
        try:
            await self.deliver(self.translator.start())
            fixed = self.grant.fixed_session(self.translator.dialect) if self.grant is not None else None
            if fixed:  # a client secret's session applies from the start
                await self.deliver(self.translator.from_client({"type": "session.update", "session": fixed}))
            await self._client_loop()
        except WebSocketDisconnect:
            self._closed = self._closed or (CLOSE_NORMAL, "client disconnected")
        except Exception:
            log.exception("session failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            if self._upstream_task is not None:
                self._upstream_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._upstream_task
            if self.upstream is not None:
                with contextlib.suppress(Exception):
                    await self.upstream.close()
            self._log_end()
            if enforcer is not None:
                enforcer.cancel()
            if self.grant is not None:
                code, reason = self._closed or (CLOSE_NORMAL, "")
                await self.grant.finish(code, "success" if code == CLOSE_NORMAL else "failure", reason)

    async def _enforce_limits(self) -> None:
        """Budget spent, key deleted or expired, maximum duration: an `error` event, then the close code."""
        assert self.grant is not None
        stop = await self.grant.wait_stopped()
        await self.deliver(self.translator.server_error(stop.message, stop.code))
        await self._close_client(stop.close_code, stop.message)

    async def _client_loop(self) -> None:
        while self._closed is None:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self._closed = self._closed or (message.get("code", CLOSE_NORMAL), "client disconnected")
                return
            frame = message.get("text")
            if frame is None and message.get("bytes") is not None:
                frame = message["bytes"]  # OpenAI clients send text; JSON in a binary frame is accepted too
            if frame is None:
                continue
            if self.grant is not None:
                self.grant.client_frame(frame)
                frame = self.grant.fix_client_frame(frame, self.translator.dialect)
            await self.deliver(self.translator.from_client(frame))

    async def deliver(self, out: Output) -> None:
        """Send an Output: client messages first (they are confirmations), then Gemini's."""
        if out.client:
            if self.grant is not None:
                self.grant.client_messages(out.client)
            async with self._send_lock:
                for message in out.client:
                    await self.ws.send_text(orjson.dumps(message).decode())
        if not out.upstream or (self.grant is not None and self.grant.stop is not None):
            return  # nothing more reaches Gemini once accounting has stopped the session
        messages = out.upstream
        if self.upstream is None:
            if self._closed is not None:
                return
            messages = await self._open_upstream(messages)
            if messages is None:
                return
        for message in messages:
            try:
                await self.upstream.send(message)
            except ConnectionClosed:
                return  # the upstream reader reports the close

    async def _open_upstream(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Connect, send `setup`, wait for setupComplete; returns the messages still to send."""
        setup, rest = messages[0], messages[1:]
        if "setup" not in setup:
            raise RuntimeError("the first upstream message of a session must be setup")
        try:
            connecting = time.monotonic()
            target = await self.provider.target()
            self.upstream = await UpstreamConnection.open(target)
            await self.upstream.send(setup)
            first = await asyncio.wait_for(self.upstream.recv(), timeout=30)
            if self.grant is not None:
                self.grant.upstream_connected(time.monotonic() - connecting)
        except UpstreamError as exc:
            await self._fail(str(exc), "upstream_unavailable")
            return None
        except ConnectionClosed as exc:
            code, reason = self.upstream.close_info(exc) if self.upstream else (1006, "")
            await self._upstream_closed(code, reason)
            return None
        except TimeoutError:
            await self._fail("Gemini Live did not answer the session setup in time.", "upstream_timeout")
            return None
        except CredentialsError as exc:  # its message names the problem, never a secret
            await self._fail(f"livegate could not authenticate to Gemini Live: {exc}", "upstream_auth_failed")
            return None
        except Exception as exc:  # other provider failures: no details to the client
            log.warning("could not open the upstream: %s", type(exc).__name__)
            await self._fail("livegate could not open the Gemini Live session.", "upstream_unavailable")
            return None
        await self.deliver(self.translator.from_upstream(first))
        self._upstream_task = asyncio.create_task(self._upstream_loop())
        return rest

    async def _upstream_loop(self) -> None:
        try:
            await self._pump_upstream()
        except asyncio.CancelledError:
            raise
        except Exception:  # never leave the client waiting on a reader that died
            log.exception("upstream reader failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")

    async def _pump_upstream(self) -> None:
        assert self.upstream is not None
        while True:
            timeout = self.translator.idle_timeout
            try:
                frame = await (asyncio.wait_for(self.upstream.recv(), timeout) if timeout else self.upstream.recv())
            except TimeoutError:
                await self.deliver(self.translator.upstream_idle())
                continue
            except ConnectionClosed as exc:
                await self._upstream_closed(*self.upstream.close_info(exc))
                return
            if self.grant is not None:
                self.grant.upstream_frame(frame)
            await self.deliver(self.translator.from_upstream(frame))

    async def _upstream_closed(self, code: int, reason: str) -> None:
        await self.deliver(self.translator.upstream_closed(code, reason))
        if code == CLOSE_NORMAL:
            await self._close_client(CLOSE_NORMAL, "Gemini Live ended the session")
        else:
            await self._close_client(CLOSE_BAD_GATEWAY, f"Gemini Live closed the session ({code})")

    async def _fail(self, message: str, code: str) -> None:
        await self.deliver(self.translator.server_error(message, code))
        await self._close_client(CLOSE_BAD_GATEWAY, message[:120])

    async def _close_client(self, code: int, reason: str) -> None:
        if self._closed is None:
            self._closed = (code, reason)
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason[:120])

    def _log_end(self) -> None:
        totals = self.translator.session.get("totals") or {}
        code, reason = self._closed or (CLOSE_NORMAL, "")
        log.info("session_end %s", json.dumps({
            "model": self.model,
            "backend": self.provider.backend,
            "dialect": self.translator.dialect,
            "duration_s": round(time.monotonic() - self.started, 3),
            "close_code": code,
            "close_reason": reason,
            "tokens": totals,
        }, sort_keys=True))

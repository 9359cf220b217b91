"""MCP tools end to end: the openai SDK talks to livegate, livegate to the simulator and, as the MCP client, to a
real MCP server (the `mcp` package's own server, streamable HTTP on loopback).

The session lists the server's tools (filtered by allowed_tools), Gemini calls one, livegate runs it and
returns the result to Gemini, and the client sees OpenAI's MCP events in OpenAI's order. Headers and the
authorization token reach the server and nothing else; a tool error, a server too slow for mcp_timeout_s and a
server that went away are failed calls, never a dead session. The approval flow runs through
mcp_approval_request / mcp_approval_response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.conformance import check_client_event
from tests.support import collect, serve

mcp_server = pytest.importorskip("mcp.server.mcpserver", reason="the mcp package (livegate[mcp]) is not installed")

TOKEN = "mcp-token-e2e-secret"


def _server(seen: list[dict[str, str]], gone: asyncio.Event) -> Any:
    server = mcp_server.MCPServer("e2e-tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def explode() -> str:
        """Always fails."""
        raise ValueError("the fuse blew")

    @server.tool()
    async def dawdle() -> str:
        """Answers too late."""
        await asyncio.sleep(3)
        return "late"

    @server.tool()
    def hidden() -> str:
        """Not in allowed_tools."""
        return "no"

    app = server.streamable_http_app(host="127.0.0.1")

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
            if gone.is_set():  # the server went away: what is left of it (a proxy) answers 503
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"gone"})
                return
        await app(scope, receive, send)

    return recording


@pytest.fixture
async def setup(caplog: pytest.LogCaptureFixture) -> AsyncIterator[dict[str, Any]]:
    caplog.set_level(logging.DEBUG)
    seen: list[dict[str, str]] = []
    gone = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        mcp_url = await stack.enter_async_context(serve(_server(seen, gone)))
        sim = await stack.enter_async_context(GeminiLiveSimulator(chunk_delay=0))
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
                "model": "gemini/gemini-3.8-live", "api_key": "AIza-e2e", "api_base": sim.url}}],
            "livegate_settings": {"mcp_timeout_s": 1.5},
        })
        url = await stack.enter_async_context(serve(create_app(config, simulator_chunk_delay=0)))
        yield {"ws": url.replace("http", "ws") + "/v1", "mcp": f"{mcp_url}/mcp", "seen": seen, "sim": sim,
               "gone": gone}


def _tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tools", "server_url": url, "authorization": TOKEN,
            "headers": {"X-Team": "voice"}, "allowed_tools": ["add", "explode", "dawdle"], **extra}


def _checked(events: list[Any]) -> list[str]:
    for event in events:
        check_client_event(event.to_dict())
    return [event.type for event in events]


async def _response(conn: Any) -> list[Any]:
    """A response's events up to response.done (the rate_limits.updated that follows it is read too)."""
    events = await collect(conn, "rate_limits.updated")
    assert events[-2].type == "response.done"
    return events[:-1]


async def _ask(conn: Any, text: str) -> list[Any]:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await _response(conn)


async def test_mcp_tools_listed_called_and_failing_as_openai_reports_them(
        setup: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    client = AsyncOpenAI(api_key="sk-e2e", websocket_base_url=setup["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": [_tool(setup["mcp"], require_approval="never")]})
        listing = (await collect(conn, "conversation.item.done"))[1:]  # after session.created
        assert _checked(listing) == ["session.updated", "conversation.item.added", "mcp_list_tools.in_progress",
                                     "mcp_list_tools.completed", "conversation.item.done"]
        assert "authorization" not in listing[0].session.tools[0].to_dict()  # the echo keeps the secret out
        assert sorted(tool.name for tool in listing[-1].item.tools) == ["add", "dawdle", "explode"]

        # A call that works: OpenAI's events inside the response, the result back to Gemini.
        events = await _ask(conn, "please add these")
        assert _checked(events)[-9:] == [
            "response.output_item.added", "conversation.item.added", "response.mcp_call_arguments.delta",
            "response.mcp_call_arguments.done", "response.mcp_call.in_progress", "response.mcp_call.completed",
            "conversation.item.done", "response.output_item.done", "response.done"]
        call = events[-1].response.output[0]
        assert (call.type, call.server_label, call.name, call.output) == ("mcp_call", "tools", "add", "2")
        await conn.response.create()  # Gemini's continuation, as after a function_call_output
        answer = await _response(conn)
        text = next(e.text for e in answer if e.type == "response.output_text.done")
        assert "The tool add returned" in text and "2" in text

        # A tool that fails, then one too slow for mcp_timeout_s: failed calls, the session goes on.
        for word, kind in (("explode", "tool_execution_error"), ("dawdle", "http_error")):
            events = await _ask(conn, f"please {word} now")
            assert "response.mcp_call.failed" in _checked(events)
            assert events[-1].response.output[0].error.type == kind
            await conn.response.create()
            await _response(conn)

    headers = [h for h in setup["seen"] if h.get("authorization")]
    assert headers and all(h["authorization"] == f"Bearer {TOKEN}" and h["x-team"] == "voice" for h in headers)
    assert TOKEN not in caplog.text  # never logged


async def test_a_server_gone_away_fails_the_call_and_approval_runs_it(setup: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key="sk-e2e", websocket_base_url=setup["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        # require_approval defaults to always, as at OpenAI
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "tools": [_tool(setup["mcp"])]})
        await collect(conn, "mcp_list_tools.completed")
        events = await _ask(conn, "please add these")
        request = events[-1].response.output[0]
        assert request.type == "mcp_approval_request" and request.name == "add"
        await conn.conversation.item.create(item={"type": "mcp_approval_response", "id": "approval_1",
                                                  "approval_request_id": request.id, "approve": True})
        ran = await collect(conn, "response.mcp_call.completed")
        assert _checked(ran) == ["conversation.item.added", "conversation.item.done", "conversation.item.added",
                                 "response.mcp_call.in_progress", "response.mcp_call.completed"]
        done = await collect(conn, "conversation.item.done")
        assert done[-1].item.output == "2" and done[-1].item.approval_request_id == request.id
        await conn.response.create()
        await _response(conn)

        # The MCP server goes away: the approved call fails as OpenAI reports it, the session answers on.
        setup["gone"].set()
        events = await _ask(conn, "please add again")
        request = events[-1].response.output[0]
        await conn.conversation.item.create(item={"type": "mcp_approval_response", "id": "approval_2",
                                                  "approval_request_id": request.id, "approve": True})
        failed = await collect(conn, "conversation.item.done")
        while failed[-1].item.type != "mcp_call":
            failed += await collect(conn, "conversation.item.done")
        assert "response.mcp_call.failed" in _checked(failed)
        assert failed[-1].item.error.type == "http_error"
        await conn.response.create()
        answer = await _response(conn)
        assert answer[-1].response.status == "completed"

        # A server that cannot be listed at all: mcp_list_tools.failed, and the session goes on.
        await conn.session.update(session={"type": "realtime", "tools": [
            _tool(setup["mcp"], server_label="other", require_approval="never")]})
        listing = await collect(conn, "mcp_list_tools.failed")
        assert listing[-1].type == "mcp_list_tools.failed"
        events = await _ask(conn, "just say hello")
        assert events[-1].response.status == "completed"

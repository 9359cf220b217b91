"""The MCP servers of one session: one connection per server, requests answered as plain results.

Each server gets a worker task that owns its `mcp` client (anyio's task groups must be entered and left by the
same task) and takes the session's requests to that server in order. A request's result never raises:

    list -> {"ok": True, "tools": [{name, description, input_schema, annotations, requires_approval}]}
            (filtered by the tool's `allowed_tools`; `requires_approval` from its `require_approval`)
    call -> {"ok": True, "output": "<the tool's text>"}
    any  -> {"ok": False, "error": {"type": "http_error" | "protocol_error" | "tool_execution_error",
                                    "code": int (not for tool errors), "message": str}}

A server that cannot be reached, answers an HTTP error, does not answer within `timeout_s`, or goes away is a
failed result, and the connection is dropped so the next request connects again. The session's headers and
`authorization` (sent as `Authorization: Bearer ...`) go to the server only: results and log lines name the
server by its label.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from livegate.mcp.filters import allowed, requires_approval

log = logging.getLogger("livegate.mcp")

Result = dict[str, Any]
# What the mcp package reports for an HTTP answer that carried no JSON-RPC error (the status is not kept): the
# status it stands for (502 where unknown: the server, or a proxy in front of it, failed).
_HTTP_STAND_INS = {"Server returned an error response": 502, "Not Found": 404, "Session terminated": 404}


def mcp_available() -> bool:
    """Whether the `mcp` package (the `mcp` extra) is installed."""
    return importlib.util.find_spec("mcp") is not None


def _headers(server: dict[str, Any]) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in (server.get("headers") or {}).items()}
    if server.get("authorization"):
        headers["Authorization"] = f"Bearer {server['authorization']}"
    return headers


def _failure(kind: str, message: str, code: int | None = None) -> Result:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    return {"ok": False, "error": error}


def _tool_text(result: Any) -> str:
    """A CallToolResult as OpenAI's mcp_call.output: its text parts, else its structured content as JSON."""
    texts = [block.text for block in result.content or [] if getattr(block, "type", None) == "text"]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content)
    return ""


def _listing(server: dict[str, Any], tools: list[Any]) -> Result:
    out = []
    for tool in tools:
        entry = {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema,
                 "annotations": tool.annotations.model_dump(by_alias=True, exclude_none=True)
                 if tool.annotations is not None else None}
        if allowed(server.get("allowed_tools"), entry):
            entry["requires_approval"] = requires_approval(server.get("require_approval"), entry)
            out.append({k: v for k, v in entry.items() if v is not None})
    return {"ok": True, "tools": out}


def _explain(exc: BaseException, label: str) -> Result:
    """A failure as OpenAI's mcp_call errors name them; no URL, header or token in the message."""
    from httpx2 import ConnectError, HTTPStatusError, TimeoutException  # the `mcp` package's HTTP client
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _explain(exc.exceptions[0], label)
    if isinstance(exc, MCPError):
        status = _HTTP_STAND_INS.get(exc.message)
        if status is not None:  # the mcp package's stand-in for a non-2xx answer that was no JSON-RPC error
            return _failure("http_error", f"The MCP server {label!r} answered an HTTP error ({exc.message}).", status)
        return _failure("protocol_error", exc.message, exc.code)
    if isinstance(exc, HTTPStatusError):
        return _failure("http_error", f"The MCP server {label!r} answered HTTP {exc.response.status_code}.",
                        exc.response.status_code)
    if isinstance(exc, ConnectError | OSError):
        return _failure("http_error", f"The MCP server {label!r} could not be reached.", 503)
    if isinstance(exc, TimeoutException):
        return _failure("http_error", f"The MCP server {label!r} did not answer in time.", 504)
    return _failure("protocol_error", f"The MCP server {label!r} failed: {type(exc).__name__}.", -32603)


@dataclass
class _Job:
    action: str
    tool: str | None
    arguments: dict[str, Any] | None
    done: asyncio.Future[Result] = field(repr=False)


class _Server:
    """One MCP server of the session: its worker task and connection."""

    def __init__(self, server: dict[str, Any], timeout_s: float) -> None:
        self.server = server
        self.label = str(server.get("server_label"))
        self.timeout_s = timeout_s
        self.jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.task = asyncio.create_task(self._work())

    async def request(self, action: str, tool: str | None, arguments: dict[str, Any] | None) -> Result:
        job = _Job(action, tool, arguments, asyncio.get_running_loop().create_future())
        await self.jobs.put(job)
        return await job.done

    async def _work(self) -> None:
        stack: AsyncExitStack | None = None
        client: Any = None
        try:
            while True:
                job = await self.jobs.get()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        if client is None:
                            stack = AsyncExitStack()
                            client = await self._connect(stack)
                        result = await self._run(client, job)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # anyio raises groups; a dead server must not end the session
                    if isinstance(exc, TimeoutError):
                        result = _failure("http_error", f"The MCP server {self.label!r} did not answer within "
                                                        f"{self.timeout_s:g} s.", 504)
                    else:
                        result = _explain(exc, self.label)
                    log.info("MCP server %r: %s request failed: %s", self.label, job.action, result["error"]["message"])
                    await _close(stack)
                    stack, client = None, None
                if not job.done.done():
                    job.done.set_result(result)
        finally:
            await _close(stack)

    async def _connect(self, stack: AsyncExitStack) -> Any:
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = await stack.enter_async_context(create_mcp_http_client(headers=_headers(self.server)))
        transport = streamable_http_client(str(self.server.get("server_url")), http_client=http)
        return await stack.enter_async_context(Client(transport, mode="legacy", cache=None))

    async def _run(self, client: Any, job: _Job) -> Result:
        if job.action == "list":
            tools: list[Any] = []
            cursor = None
            while True:
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return _listing(self.server, tools)
        result = await client.call_tool(job.tool or "", job.arguments or {})
        if result.is_error:
            return _failure("tool_execution_error", _tool_text(result) or f"The tool {job.tool!r} failed.")
        return {"ok": True, "output": _tool_text(result)}


async def _close(stack: AsyncExitStack | None) -> None:
    if stack is not None:
        with contextlib.suppress(BaseException):
            await stack.aclose()


class McpClients:
    """The MCP servers a session talks to, by server label (a new URL for a label is a new server)."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._servers: dict[tuple[str, str], _Server] = {}

    async def request(self, server: dict[str, Any], action: str, tool: str | None = None,
                      arguments: dict[str, Any] | None = None) -> Result:
        """List the tools of `server` (a session's `{type: "mcp"}` tool) or call one; never raises."""
        if not mcp_available():
            return _failure("protocol_error", "MCP tools need the mcp package on the gateway "
                                              "(pip install 'livegate[mcp]').", -32603)
        key = (str(server.get("server_label")), str(server.get("server_url")))
        known = self._servers.get(key)
        if known is None or known.task.done() or known.server != server:
            if known is not None:
                known.task.cancel()
            known = self._servers[key] = _Server(server, self.timeout_s)
        return await known.request(action, tool, arguments)

    async def aclose(self) -> None:
        tasks = [server.task for server in self._servers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._servers.clear()



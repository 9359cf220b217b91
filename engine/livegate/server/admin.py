"""Shared helpers of the management routes (keys, spend, client secrets): who is calling, and error bodies
in livegate's usual shape."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from livegate.accounting.gate import Principal, Refusal
from livegate.server import auth

if TYPE_CHECKING:
    from livegate.server.app import Gateway


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self) -> JSONResponse:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        error = {"type": kind, "code": self.code, "message": self.message, "param": self.param}
        return JSONResponse({"error": error}, status_code=self.status)


def refusal_response(refusal: Refusal) -> JSONResponse:
    return JSONResponse(refusal.body(), status_code=refusal.status)


async def caller(gateway: Gateway, request: Request) -> Principal:
    """The principal behind the request's key; ApiError(401/503) when it has none."""
    who = await auth.principal(gateway, auth.client_key(request.headers), route=request.url.path)
    if isinstance(who, Refusal):
        raise ApiError(who.status, who.message, who.code)
    if who.secret is not None:  # a browser's secret opens sessions, nothing else
        raise ApiError(403, "A client secret may only open realtime sessions.", "forbidden")
    return who


async def admin(gateway: Gateway, request: Request) -> Principal:
    """Key management is for the master key (LiteLLM's rule)."""
    if not gateway.config.master_key:
        raise ApiError(403, "Key management needs general_settings.master_key to be set.", "no_master_key")
    who = await caller(gateway, request)
    if who.kind != "master":
        raise ApiError(403, "Only the master key may do this.", "forbidden")
    return who


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "The body must be a JSON object.", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", "invalid_json")
    return body


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str, param: str, end_of_day: bool = False) -> float:
    """YYYY-MM-DD (a whole UTC day: the end date is inclusive) or an ISO 8601 timestamp."""
    try:
        if len(value) == 10:
            day = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            return (day + dt.timedelta(days=1 if end_of_day else 0)).timestamp()
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    except ValueError:
        raise ApiError(400, f"{param}: expected YYYY-MM-DD or an ISO 8601 time", "invalid_value", param) from None

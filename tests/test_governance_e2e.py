"""Issue 20's end-to-end test, through the official openai SDK, on SQLite and on PostgreSQL: a team with a
budget and two keys in it, parallel sessions on both keys until the team's budget stops both; a key
regenerated mid-session (its session ends 4010, the new key works); a key blocked mid-session (4003, then
403 at the handshake); and the spend report matching the spend rows."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from livegate.accounting.keys import hash_key
from tests.governance_support import Gov, governed

TEAM_BUDGET = 0.0006  # a few simulator turns on gemini-3.8-live prices


@pytest.fixture
async def gov(database_url: str) -> AsyncIterator[Gov]:
    async with governed(database_url) as served:
        yield served


def _client(gov: Gov, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, websocket_base_url=gov.ws + "/v1")


async def _talk_until_stopped(conn: Any, name: str) -> dict[str, Any]:
    """Turn after turn on an open SDK session until livegate ends it: its turns, error and close code."""
    turns, error = 0, None

    async def ask(text: str) -> None:
        with contextlib.suppress(ConnectionClosed):  # the server may be closing: its events are still read
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": text}]})
            await conn.response.create()

    await ask(f"{name} says hello")
    with contextlib.suppress(ConnectionClosed):
        async for event in conn:
            if event.type == "response.done":
                turns += 1
                await asyncio.sleep(0.05)  # let the other session take its turn
                await ask(f"{name}, turn {turns}: tell me more")
            elif event.type == "error":
                error = event.error
    return {"turns": turns, "error": error, "close_code": conn._connection.close_code}


async def _one_turn(conn: Any, text: str) -> None:
    await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": text}]})
    await conn.response.create()
    async for event in conn:
        assert event.type != "error", event
        if event.type == "response.done":
            return


async def _stopped(conn: Any) -> tuple[Any, int | None]:
    """The error event livegate sends when it ends a session, and the close code."""
    error = None
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(5):
            async for event in conn:
                if event.type == "error":
                    error = event.error
    return error, conn._connection.close_code


async def _handshake_status(gov: Gov, key: str) -> int:
    async with _client(gov, key).realtime.connect(model="gpt-realtime") as conn:
        event = await conn.recv()
        assert event.type == "error", event
        _, code = await _stopped(conn)
    assert code is not None
    return code - 4000


async def test_team_budget_regenerate_block_and_report(gov: Gov) -> None:
    await gov.ok("POST", "/team/new", {"team_id": "voice", "team_alias": "Voice agents", "max_budget": TEAM_BUDGET})
    first = await gov.key(team_id="voice", key_alias="agent-1")
    second = await gov.key(team_id="voice", key_alias="agent-2")

    # both keys open a session, then talk at once; the team's budget stops both
    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(_client(gov, key).realtime.connect(model="gpt-realtime"))
                 for key in (first, second)]
        for conn in conns:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            assert (await conn.recv()).type == "session.created"
        results = await asyncio.gather(*(_talk_until_stopped(conn, name) for conn, name in zip(
            conns, ("one", "two"), strict=True)))
    for result in results:
        assert result["close_code"] == 4029 and result["error"].code == "insufficient_quota", result
        assert "team 'Voice agents'" in result["error"].message
    assert sum(r["turns"] for r in results) >= 2
    assert await _handshake_status(gov, first) == 429
    assert await _handshake_status(gov, second) == 429
    await gov.flush()
    team = (await gov.ok("GET", "/team/info", params={"team_id": "voice"}))["team_info"]
    assert team["spend"] >= TEAM_BUDGET
    rows = await gov.ok("GET", "/spend/logs", params={"team_id": "voice"})
    assert sorted(r["close_code"] for r in rows) == [4029, 4029]
    assert sum(r["spend"] for r in rows) == pytest.approx(team["spend"])

    # more budget; the first key is regenerated while its session runs
    await gov.ok("POST", "/team/update", {"team_id": "voice", "max_budget": 1.0})
    async with _client(gov, first).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await _one_turn(conn, "before the rotation")
        fresh = await gov.ok("POST", "/key/regenerate", {"key": first})
        error, code = await _stopped(conn)
    assert code == 4010 and error.code == "invalid_api_key" and "regenerated" in error.message
    assert await _handshake_status(gov, first) == 401
    async with _client(gov, fresh["key"]).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await _one_turn(conn, "with the new key")

    # the second key is blocked while its session runs
    async with _client(gov, second).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await _one_turn(conn, "before the block")
        await gov.ok("POST", "/key/block", {"key": second})
        error, code = await _stopped(conn)
    assert code == 4003 and error.code == "key_blocked"
    assert await _handshake_status(gov, second) == 403

    # the report matches the spend rows, by key, by team, and as CSV
    await asyncio.sleep(0.1)
    await gov.flush()
    logs = await gov.ok("GET", "/spend/logs")
    sessions = [r for r in logs if r["call_type"] == "realtime_session" and r["total_tokens"]]
    assert len(sessions) == 5 and {r["api_key"] for r in sessions} == {fresh["token"], hash_key(second)}
    by_key = await gov.ok("GET", "/spend/report", params={"group_by": "key"})
    for row in by_key["rows"]:
        mine = [r for r in logs if r["api_key"] == row["api_key"]]
        assert row["sessions"] == len(mine)
        assert row["spend"] == pytest.approx(sum(r["spend"] or 0 for r in mine))
        for name in ("input_text_tokens", "output_audio_tokens", "output_text_tokens", "total_tokens"):
            assert row[name] == sum(r[name] for r in mine), name
    assert {r["key_alias"] for r in by_key["rows"]} == {"agent-1", "agent-2"}
    assert by_key["totals"]["spend"] == pytest.approx(sum(r["spend"] or 0 for r in logs))
    by_team = await gov.ok("GET", "/spend/report", params={"group_by": "team"})
    assert [(r["team_id"], r["sessions"]) for r in by_team["rows"]] == [("voice", len(logs))]
    team = (await gov.ok("GET", "/team/info", params={"team_id": "voice"}))["team_info"]
    assert by_team["rows"][0]["spend"] == pytest.approx(team["spend"])  # the team's spend is its rows' spend
    csv_rows = list(csv.DictReader(io.StringIO((await gov.http.get(
        "/spend/report", params={"group_by": "key,model", "format": "csv"})).text)))
    assert sum(float(r["spend"]) for r in csv_rows) == pytest.approx(by_key["totals"]["spend"])

"""Virtual keys, limits and spend through a running livegate: LiteLLM's key API, handshake refusals on
every route, mid-session stops (budget, deletion, duration), spend logs, client secrets, health, metrics,
and a store outage that does not end sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.keys import hash_key
from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import refusal, serve

MASTER = "sk-master-accounting-test"
GEMINI_KEY = "AIza-accounting-upstream-secret"


@dataclass
class Served:
    http: httpx.AsyncClient
    ws: str
    app: Any
    sim: GeminiLiveSimulator

    async def key(self, **settings: Any) -> str:
        response = await self.http.post("/key/generate", json=settings, headers=_auth(MASTER))
        assert response.status_code == 200, response.text
        return response.json()["key"]

    async def spend_logs(self, **query: str) -> list[dict[str, Any]]:
        await self.app.state.gateway.accounting.writer.flush()
        response = await self.http.get("/spend/logs", params=query, headers=_auth(MASTER))
        assert response.status_code == 200, response.text
        return response.json()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _config(sim_url: str, tmp_path: Path, master: str | None = MASTER, **settings: Any) -> Any:
    params = {"api_key": GEMINI_KEY, "api_base": sim_url}
    return parse_config({
        "model_list": [
            {"model_name": "gpt-realtime", "litellm_params": {"model": "gemini/gemini-3.8-live", **params}},
            {"model_name": "other-model", "litellm_params": {"model": "gemini/gemini-3.8-live", **params}},
            {"model_name": "short", "litellm_params": {"model": "gemini/gemini-3.8-live", **params,
                                                        "max_session_seconds": 0.5}},
            {"model_name": "unpriced", "litellm_params": {"model": "gemini/gemini-9-imaginary", **params}},
        ],
        "general_settings": {"master_key": master} if master else {},
        "livegate_settings": {"store_path": str(tmp_path / "spend.db"), "key_check_seconds": 0.2, **settings},
    })


@contextlib.asynccontextmanager
async def _served(tmp_path: Path, **kwargs: Any) -> AsyncIterator[Served]:
    async with GeminiLiveSimulator(chunk_delay=0, api_key=GEMINI_KEY) as sim:
        app = create_app(_config(sim.url, tmp_path, **kwargs), simulator_chunk_delay=0)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            yield Served(http, url.replace("http", "ws"), app, sim)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with _served(tmp_path) as s:
        yield s


def _connect(served: Served, key: str | None, model: str = "gpt-realtime", path: str = "/v1/realtime",
             headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return connect(f"{served.ws}{path}?model={model}", additional_headers={**(_auth(key) if key else {}),
                                                                            **(headers or {})}, **kwargs)


async def _refused(served: Served, key: str | None, model: str = "gpt-realtime", path: str = "/v1/realtime",
                   **kwargs: Any) -> tuple[int, dict[str, Any]]:
    if path in ("/v1/realtime", "/realtime"):  # an error event, then close 4000 + status
        result = await refusal(_connect(served, key, model, path, **kwargs))
    else:  # the passthrough routes refuse with HTTP
        with pytest.raises(InvalidStatus) as info:
            async with _connect(served, key, model, path, **kwargs):
                pass
        result = info.value.response.status_code, json.loads(info.value.response.body)["error"]
    assert served.sim.sessions == [] or all(s.setup for s in served.sim.sessions)  # no new upstream for a refusal
    return result


async def _text_turn(ws: ClientConnection, text: str = "Hello there") -> list[dict[str, Any]]:
    """One text turn; the events up to response.done (or up to the close)."""
    session = {"type": "realtime", "output_modalities": ["text"]}
    await ws.send(json.dumps({"type": "session.update", "session": session}))
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        events.append(event)
        if event["type"] == "response.done":
            return events


async def _events_until_close(ws: ClientConnection, timeout: float = 10) -> list[dict[str, Any]]:
    events = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return events


# --- the key API ---------------------------------------------------------------------------------------------


async def test_key_api_litellm_shapes_master_only_and_hashed(served: Served) -> None:
    http = served.http
    assert (await http.post("/key/generate", json={})).status_code == 401
    response = await http.post("/key/generate", headers=_auth(MASTER), json={
        "models": ["gpt-realtime"], "max_budget": 0.5, "budget_duration": "30d", "duration": "1h",
        "key_alias": "team-a", "metadata": {"team": "a"}, "tags": ["t1"], "max_parallel_requests": 2,
        "rpm_limit": 10})
    assert response.status_code == 200
    created = response.json()
    key = created["key"]
    assert key.startswith("sk-") and created["token"] == hash_key(key) and created["expires"]
    assert created["models"] == ["gpt-realtime"] and created["max_budget"] == 0.5 and created["spend"] == 0
    assert created["budget_reset_at"] and created["key_alias"] == "team-a"
    # a virtual key may not manage keys, only read its own info
    assert (await http.post("/key/generate", headers=_auth(key), json={})).status_code == 403
    own = (await http.get("/key/info", headers=_auth(key))).json()
    assert own["info"]["key_alias"] == "team-a" and own["info"]["max_parallel_requests"] == 2
    assert key not in json.dumps(own)  # shown once, at generation
    info = await http.get("/key/info", params={"key": key}, headers=_auth(MASTER))
    assert info.json()["info"]["token"] == hash_key(key)
    update = await http.post("/key/update", headers=_auth(MASTER), json={"key": key, "max_budget": 2, "tags": []})
    assert update.status_code == 200 and update.json()["max_budget"] == 2.0 and update.json()["tags"] == []
    bad = await http.post("/key/update", headers=_auth(MASTER), json={"key": key, "budget_duration": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "budget_duration"
    listed = (await http.get("/key/list", headers=_auth(MASTER), params={"return_full_object": "true"})).json()
    assert listed["total_count"] == 1 and listed["keys"][0]["key_alias"] == "team-a"
    deleted = await http.post("/key/delete", headers=_auth(MASTER), json={"keys": [key]})
    assert deleted.json() == {"deleted_keys": [key]}
    assert (await http.get("/key/list", headers=_auth(MASTER))).json()["keys"] == []
    assert (await http.get("/key/info", headers=_auth(key))).status_code == 401
    async with served.app.state.gateway.accounting.store.db.transaction() as tx:
        stored = json.dumps(await tx.fetch("SELECT * FROM livegate_keys"), default=str)
    assert key not in stored and MASTER not in stored


# --- handshake refusals ----------------------------------------------------------------------------------------


async def test_handshake_refusals_on_the_realtime_route(served: Served) -> None:
    assert (await _refused(served, "sk-not-a-real-key-000"))[0] == 401
    key = await served.key(models=["gpt-realtime"], max_budget=1.0)
    status, error = await _refused(served, key, model="other-model")
    assert status == 403 and error["code"] == "model_not_allowed" and "other-model" in error["message"]
    await served.http.post("/key/update", headers=_auth(MASTER), json={"key": key, "spend": 1.0})
    status, error = await _refused(served, key)
    assert status == 429 and error["code"] == "budget_exceeded"
    limited = await served.key(rpm_limit=1)
    async with _connect(served, limited):
        pass
    status, error = await _refused(served, limited)
    assert status == 429 and error["code"] == "rate_limit_exceeded"
    expiring = await served.key(duration="1s")
    await asyncio.sleep(1.1)
    status, error = await _refused(served, expiring)
    assert status == 401 and "expired" in error["message"]
    budgeted = await served.key(max_budget=1.0)
    status, error = await _refused(served, budgeted, model="unpriced")
    assert status == 403 and "no price" in error["message"]
    assert served.sim.sessions == []  # no refusal reached Gemini


async def test_max_parallel_requests_is_the_realtime_session_limit(served: Served) -> None:
    key = await served.key(max_parallel_requests=1)
    async with _connect(served, key) as first:
        await _text_turn(first)
        status, error = await _refused(served, key)
        assert status == 429 and error["code"] == "realtime_session_limit"
    await asyncio.sleep(0.2)  # the first session's end frees its slot
    async with _connect(served, key) as again:
        await _text_turn(again)


async def test_master_key_and_open_gateway_keep_working(served: Served, tmp_path: Path) -> None:
    async with _connect(served, MASTER) as ws:
        await _text_turn(ws)
    async with _served(tmp_path / "open", master=None) as open_gateway:
        async with _connect(open_gateway, None) as ws:
            await _text_turn(ws)
        response = await open_gateway.http.post("/key/generate", json={})
        assert response.status_code == 403 and response.json()["error"]["code"] == "no_master_key"


# --- during a session ------------------------------------------------------------------------------------------


async def test_budget_spent_mid_session_sends_insufficient_quota_then_4029(served: Served) -> None:
    # Two output tokens fit this budget (the response is reserved first), but the long question's input (which
    # no reservation foresees before Gemini's first usage report) takes the spend past it.
    key = await served.key(max_budget=0.00005)
    async with _connect(served, key) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 2}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello " * 40}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        events = await _events_until_close(ws)
        assert ws.close_code == 4029
    error = next(e for e in events if e["type"] == "error")
    assert error["error"]["code"] == "insufficient_quota"
    status, refusal = await _refused(served, key)
    assert status == 429 and refusal["code"] == "budget_exceeded"


async def test_a_response_the_budget_cannot_cover_is_refused_before_gemini_and_the_session_goes_on(
        served: Served) -> None:
    key = await served.key(max_budget=0.001)  # less than a response of up to 8192 output tokens may cost
    async with _connect(served, key) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                         "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}}))
        await ws.send(json.dumps({"type": "response.create", "event_id": "evt_big"}))
        while (event := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "error":
            assert event["type"] != "response.created", "no response may start"
        assert event["error"]["code"] == "budget_exceeded" and event["error"]["event_id"] == "evt_big"
        assert "up to 8192 output tokens" in event["error"]["message"]
        # a smaller cap fits: the session goes on
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 32}}))
        await asyncio.sleep(1.2)  # past the quiet period after a refusal
        events = await _text_turn(ws, "Hello again")
        assert events[-1]["type"] == "response.done" and not any(e["type"] == "error" for e in events)
    asked = [m for s in served.sim.sessions for m in s.received if (m.get("clientContent") or {}).get("turnComplete")]
    assert len(asked) == 1, "the refused response never reached Gemini"


async def test_deleted_key_is_honoured_mid_session(served: Served) -> None:
    key = await served.key()
    async with _connect(served, key) as ws:
        await _text_turn(ws)
        await served.http.post("/key/delete", headers=_auth(MASTER), json={"keys": [key]})
        started = asyncio.get_running_loop().time()
        events = await _events_until_close(ws, timeout=5)
        assert ws.close_code == 4010 and asyncio.get_running_loop().time() - started < 3
    assert any(e["type"] == "error" and e["error"]["code"] == "invalid_api_key" for e in events)


async def test_maximum_session_duration(served: Served) -> None:
    async with _connect(served, MASTER, model="short") as ws:
        events = await _events_until_close(ws, timeout=5)
        assert ws.close_code == 4008
    assert any(e["type"] == "error" and e["error"]["code"] == "session_expired" for e in events)
    key = await served.key(max_session_seconds=0.3)
    async with _connect(served, key) as ws:
        await _events_until_close(ws, timeout=5)
        assert ws.close_code == 4008


# --- spend -----------------------------------------------------------------------------------------------------


async def test_spend_logs_rows_tags_end_user_and_filters(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    key = await served.key(tags=["team-a"], key_alias="alias-a")
    headers = {"tags": "vertex-js-sdk,pass-through-endpoint", "x-end-user": "user-42"}
    with caplog.at_level(logging.INFO, logger="livegate.accounting"):
        async with _connect(served, key, headers=headers) as ws:
            events = await _text_turn(ws)
        usage = events[-1]["response"]["usage"]
        await asyncio.sleep(0.1)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("session cost: $"))
    assert re.fullmatch(r"session cost: \$\d+\.\d{6} \(input: \$\d+\.\d{6}, output: \$\d+\.\d{6}\) tokens: "
                        r"\d+, duration: \d+\.\ds, key: alias-a, model: gpt-realtime, route: /v1/realtime", line), line
    assert key not in caplog.text
    rows = await served.spend_logs(api_key=key)
    assert len(rows) == 1
    row = rows[0]
    assert row["api_key"] == hash_key(key) and row["model"] == "gpt-realtime" and row["status"] == "success"
    assert row["request_tags"] == ["team-a", "vertex-js-sdk", "pass-through-endpoint"]
    assert row["end_user"] == "user-42" and row["close_code"] == 1000 and row["call_type"] == "realtime_session"
    assert row["prompt_tokens"] == usage["input_tokens"] and row["completion_tokens"] == usage["output_tokens"]
    # gemini-3.8-live speaks only: a text client's answer is its transcript, billed as output audio
    inputs, outputs = usage["input_token_details"], usage["output_token_details"]
    expected = (inputs["text_tokens"] * 0.75 + inputs["audio_tokens"] * 3.00 + outputs["text_tokens"] * 4.50
                + outputs["audio_tokens"] * 12.00) / 1e6
    assert row["spend"] == pytest.approx(expected, rel=1e-9) and row["output_audio_tokens"] > 0
    assert row["startTime"].endswith("Z") and row["metadata"]["user_api_key_alias"] == "alias-a"
    assert row["metadata"]["turns"] == 1
    assert key not in json.dumps(rows)
    info = (await served.http.get("/key/info", headers=_auth(key))).json()["info"]
    assert info["spend"] == pytest.approx(expected, rel=1e-9)
    assert await served.spend_logs(api_key=key, model="other-model") == []
    assert len(await served.spend_logs(api_key=key, start_date=row["startTime"][:10],
                                       end_date=row["startTime"][:10])) == 1
    assert await served.spend_logs(api_key=key, start_date="2099-01-01") == []
    other = await served.key()
    mine = await served.http.get("/spend/logs", headers=_auth(other))
    assert mine.status_code == 200 and mine.json() == []  # a key sees only its own rows
    assert (await served.http.get("/spend/logs", headers=_auth(other), params={"api_key": key})).status_code == 403


async def test_spend_reads_include_the_rows_the_writer_still_holds(served: Served) -> None:
    """A session that just ended is in /spend/logs, /spend/logs/{session} and /spend/report at once, not after
    the background writer's next batch: a client reading its spend right after a session (docs/getting-started.md's
    budget example) sees it."""
    acct = served.app.state.gateway.accounting
    await acct.writer.stop()  # no batches in the background: what is queued is written only by the reads
    key = await served.key()

    async def session() -> str:
        async with _connect(served, key) as ws:
            created = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await _text_turn(ws)
        async with asyncio.timeout(10):
            while acct.grants:  # the session ends (its row queued) once the gateway saw its client go
                await asyncio.sleep(0.01)
        return str(created["session"]["id"])

    one = await served.http.get(f"/spend/logs/{await session()}", headers=_auth(MASTER))
    assert one.status_code == 200 and one.json()["total_tokens"] > 0
    await session()
    report = (await served.http.get("/spend/report", params={"api_key": key}, headers=_auth(MASTER))).json()
    assert report["totals"]["sessions"] == 2
    await session()
    rows = (await served.http.get("/spend/logs", params={"api_key": key}, headers=_auth(MASTER))).json()
    assert len(rows) == 3 and all(r["total_tokens"] > 0 for r in rows)
    info = (await served.http.get("/key/info", headers=_auth(key))).json()["info"]
    assert info["spend"] == pytest.approx(sum(r["spend"] for r in rows), rel=1e-9)


async def test_unpriced_model_is_recorded_as_unknown_cost(served: Served) -> None:
    async with _connect(served, MASTER, model="unpriced") as ws:
        await _text_turn(ws)
    await asyncio.sleep(0.1)
    row = (await served.spend_logs(model="unpriced"))[0]
    assert row["spend"] is None and row["total_tokens"] > 0


# --- client secrets --------------------------------------------------------------------------------------------


async def test_client_secret_subprotocol_parent_models_and_spend(served: Served) -> None:
    key = await served.key(models=["gpt-realtime"])
    response = await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), json={
        "expires_after": {"anchor": "created_at", "seconds": 60},
        "session": {"type": "realtime", "instructions": "Be brief."}})
    assert response.status_code == 200, response.text
    secret = response.json()
    assert secret["value"].startswith("ek_") and secret["session"]["instructions"] == "Be brief."
    protocols = ["realtime", f"openai-insecure-api-key.{secret['value']}"]
    async with _connect(served, None, subprotocols=protocols) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                         "instructions": "Ignore that."}}))
        events = await _text_turn(ws)
        assert ws.subprotocol == "realtime"
    assert any(e["type"] == "session.updated" and e["session"].get("instructions") == "Be brief." for e in events)
    # the client's own updates apply, except over what the secret fixes
    updated = [e["session"] for e in events if e["type"] == "session.updated"][-1]
    assert updated["instructions"] == "Be brief." and updated["output_modalities"] == ["text"]
    assert served.sim.sessions[-1].setup["systemInstruction"]["parts"][0]["text"] == "Be brief."
    status, _ = await _refused(served, None, model="other-model", subprotocols=protocols)
    assert status == 403  # never more than its parent
    await asyncio.sleep(0.1)
    rows = await served.spend_logs(api_key=key)
    assert len(rows) == 1 and rows[0]["metadata"]["client_secret"] is True  # spend counts against the parent
    for body, param in (({"expires_after": {"seconds": 5}}, "expires_after.seconds"),
                        ({"session": {"model": "other-model"}}, "session.model")):
        bad = await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), json=body)
        assert bad.status_code in (400, 403) and bad.json()["error"]["param"] == param
    assert (await served.http.post("/v1/realtime/client_secrets", json={})).status_code == 401
    for path in ("/key/info", "/spend/logs"):  # a secret opens sessions, nothing else
        assert (await served.http.get(path, headers=_auth(secret["value"]))).status_code == 403
    # at its expiry the secret stops opening sessions (expired a second ago: one expired longer ago than the
    # purge's grace is deleted by the next poll, and is then simply unknown)
    async with served.app.state.gateway.accounting.store.db.transaction() as tx:
        await tx.execute("UPDATE livegate_client_secrets SET expires_at = $1", time.time() - 1)
    status, error = await _refused(served, None, subprotocols=protocols)
    assert status == 401 and "expired" in error["message"]


# --- the passthrough routes ------------------------------------------------------------------------------------


async def test_passthrough_routes_enforce_keys(served: Served) -> None:
    key = await served.key(models=["gpt-realtime"], max_budget=1.0)
    setup = json.dumps({"setup": {"model": "other-model", "generationConfig": {"responseModalities": ["AUDIO"]}}})
    async with connect(f"{served.ws}/gemini/live", additional_headers={"x-goog-api-key": key}) as ws:
        await ws.send(setup)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4003 and "other-model" in ws.close_reason
    async with connect(f"{served.ws}/gemini/live", additional_headers={"x-goog-api-key": key}) as ws:
        await ws.send(setup.replace("other-model", "gpt-realtime"))
        await ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hi"}]}],
                                                    "turnComplete": True}}))
        while "turnComplete" not in (await asyncio.wait_for(ws.recv(), 5)).__str__():
            pass
    await asyncio.sleep(0.1)
    rows = sorted(await served.spend_logs(api_key=key), key=lambda r: r["close_code"])
    assert [(r["route"], r["close_code"]) for r in rows] == [("gemini/live", 1000), ("gemini/live", 4003)]
    assert rows[0]["spend"] > 0 and rows[0]["model"] == "gpt-realtime" and rows[1]["total_tokens"] == 0
    await served.http.post("/key/update", headers=_auth(MASTER), json={"key": key, "spend": 5.0})
    status, error = await _refused(served, key, path="/gemini/live", model="x")
    assert status == 429 and error["code"] == "budget_exceeded"
    rest = await served.http.post("/vertex_ai/v1/projects/p/locations/us-central1/publishers/google/models/"
                                  "other-model:generateContent", headers=_auth(key), json={})
    assert rest.status_code == 403 and rest.json()["error"]["code"] == "model_not_allowed"


# --- operations ------------------------------------------------------------------------------------------------


async def test_health_and_metrics(served: Served) -> None:
    assert (await served.http.get("/health/liveliness")).json() == "I'm alive!"
    ready = await served.http.get("/health/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "healthy" and ready.json()["db"] == "connected"
    key = await served.key(key_alias="metrics-key")
    async with _connect(served, key) as ws:
        await _text_turn(ws)
        text = (await served.http.get("/metrics")).text
        assert 'livegate_active_sessions{model="gemini-3.8-live",route="/v1/realtime"} 1.0' in text
    await _refused(served, "sk-wrong-key-0000000000")
    await asyncio.sleep(0.1)
    text = (await served.http.get("/metrics")).text
    for name in ("livegate_sessions_ended_total", "livegate_frames_total", "livegate_bytes_total",
                 "livegate_upstream_connect_seconds_bucket", "livegate_spend_usd_total", "livegate_tokens_total",
                 "livegate_store_backlog", "livegate_handshake_refusals_total", "livegate_resumptions_total"):
        assert name in text, name
    assert 'livegate_sessions_ended_total{close_code="1000",route="/v1/realtime"} 1.0' in text
    assert key not in text and hash_key(key) not in text and MASTER not in text


async def test_each_error_event_counts_once_in_the_metrics(served: Served) -> None:
    """livegate_translation_errors counts the error events sent to clients: each once (the session core's
    observer counts them; the pump used to count them again)."""
    key = await served.key(key_alias="errors-key")

    def counted(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('livegate_translation_errors_total{route="/v1/realtime"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = counted((await served.http.get("/metrics")).text)
    async with _connect(served, key) as ws:
        await ws.send(json.dumps({"type": "no.such.event", "event_id": "evt_1"}))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": 7, "event_id": "evt_2"}))
        seen = []
        while len(seen) < 2:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] == "error":
                seen.append(event["error"]["event_id"])
        assert seen == ["evt_1", "evt_2"]
    while served.app.state.gateway.accounting.grants:  # counted when the session ends
        await asyncio.sleep(0.01)
    assert counted((await served.http.get("/metrics")).text) - before == 2


async def test_store_outage_keeps_sessions_and_shows_in_readiness(served: Served, monkeypatch: Any) -> None:
    accounting = served.app.state.gateway.accounting
    key = await served.key()
    store = accounting.store

    async def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("PostgreSQL: ConnectionRefusedError")

    async with _connect(served, key) as ws:
        await _text_turn(ws)
        with monkeypatch.context() as patch:
            patch.setattr(store, "write_batch", down)
            patch.setattr(store, "ping", down)
            patch.setattr(store, "get_keys", down)
            patch.setattr(store, "release_sessions", down)
            await _text_turn(ws, "still here")  # the session goes on
            await ws.close()
            await asyncio.sleep(0.6)
            ready = await served.http.get("/health/readiness")
            assert ready.status_code == 503 and ready.json()["store_backlog"] >= 1
            assert "livegate_store_up 0.0" in (await served.http.get("/metrics")).text
        rows = await served.spend_logs(api_key=key)  # written once the store is back
    assert len(rows) == 1 and rows[0]["spend"] > 0
    assert (await served.http.get("/health/readiness")).status_code == 200

"""Issue 24's proof with real parts: three livegate processes sharing one PostgreSQL (keys, spend) and one Redis
(the counters), in front of one Gemini Live simulator. rpm, tpm and max_parallel_requests hold exactly across the
three; 20 parallel sessions of one key against a budget of a few turns overspend by at most one reservation;
`kill -9` of an instance frees its leases within the lease TTL; a Redis outage lets sessions run on one instance
(counted per instance, shown in readiness and metrics) and refuses budgeted ones on the fail-closed one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect

from tests.accounting_support import NO_REDIS
from tests.fakes.postgres import PostgresServer
from tests.fakes.redis import RedisServer, redis_bin

MASTER = "sk-master-fleet-limits"
GEMINI_KEY = "AIza-fleet-limits"
LEASE_TTL = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "did not start listening"
        time.sleep(0.05)


@dataclass
class Fleet:
    root: Path
    database_url: str
    redis: RedisServer
    sim_url: str
    procs: list[subprocess.Popen[str] | None] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def start(self, index: int, *, fail_closed: bool) -> None:
        """Instance `index` (A=0, B=1, C=2): its own config and port, the shared database and Redis."""
        port = _free_port()
        config = self.root / f"instance-{index}.yaml"
        config.write_text(yaml.safe_dump({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
                "model": "gemini/gemini-3.8-live", "api_key": GEMINI_KEY, "api_base": self.sim_url}},
                           {"model_name": "small-pool", "model_info": {"id": "small-deployment"}, "litellm_params": {
                               "model": "gemini/gemini-3.8-live", "api_key": GEMINI_KEY, "api_base": self.sim_url,
                               "max_parallel_requests": 2}}],
            "general_settings": {"master_key": MASTER, "database_url": self.database_url,
                                 "fail_closed_budget_enforcement": fail_closed},
            "router_settings": {"redis_url": self.redis.url},
            "livegate_settings": {"key_check_seconds": 0.5, "lease_ttl_seconds": LEASE_TTL},
        }))
        proc = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
                                 "--log-level", "warning"], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "LIVEGATE_DB": str(self.root / "unused.db")})
        _wait_listening(proc, port)
        url = f"http://127.0.0.1:{port}"
        if index < len(self.procs):
            self.procs[index], self.urls[index] = proc, url
        else:
            self.procs.append(proc)
            self.urls.append(url)

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[index] = None

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def fleet(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if redis_bin() is None:
        pytest.skip(NO_REDIS)
    root = tmp_path_factory.mktemp("fleet")
    redis = RedisServer()
    redis.start()
    sim_port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "livegate.simulator", "--port", str(sim_port), "--chunk-delay", "0",
                            "--api-key", GEMINI_KEY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_listening(sim, sim_port)
    fleet = Fleet(root, pg_server.create_database(), redis, f"http://127.0.0.1:{sim_port}")
    try:
        for index in range(3):  # A and B fail open (the default), C fails closed
            fleet.start(index, fail_closed=index == 2)
        yield fleet
    finally:
        fleet.stop()
        sim.terminate()
        sim.wait(timeout=30)
        redis.stop()


async def _key(fleet: Fleet, **settings: Any) -> str:
    async with httpx.AsyncClient(base_url=fleet.urls[0]) as http:
        response = await http.post("/key/generate", json=settings, headers={"Authorization": f"Bearer {MASTER}"})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


def _open(base: str, key: str, model: str = "gpt-realtime") -> Any:
    return connect(base.replace("http", "ws") + f"/v1/realtime?model={model}",
                   additional_headers={"Authorization": f"Bearer {key}"})


async def _admitted(base: str, key: str) -> tuple[int, str] | None:
    """None when a session opens (closed again at once), else the refusal's (status, code)."""
    async with _open(base, key) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] == "session.created":
            return None
    assert event["type"] == "error"
    return ws.close_code - 4000, event["error"]["code"]  # type: ignore[operator]


async def _ask(ws: Any, text: str, *, event_id: str | None = None) -> None:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create", **({"event_id": event_id} if event_id else {})}))


async def _answer(ws: Any) -> dict[str, Any]:
    """The response.done of the response asked, or the error that refused it."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if event["type"] in ("response.done", "error"):
            return dict(event)


async def _text_session(ws: Any, max_output_tokens: int = 24) -> None:
    await ws.send(json.dumps({"type": "session.update", "session": {
        "type": "realtime", "output_modalities": ["text"], "max_output_tokens": max_output_tokens}}))


async def _spend(fleet: Fleet, key: str) -> float:
    async with httpx.AsyncClient(base_url=fleet.urls[1]) as http:
        info = await http.get("/key/info", params={"key": key}, headers={"Authorization": f"Bearer {MASTER}"})
    return float(info.json()["info"]["spend"])


def _clear_of_minute_boundary() -> None:
    """rpm and tpm count the store's current minute: stay clear of its end for a count made across seconds."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.5)


# --- limits ------------------------------------------------------------------------------------------------


async def test_rpm_limit_is_exact_across_three_instances(fleet: Fleet) -> None:
    key = await _key(fleet, rpm_limit=5)
    _clear_of_minute_boundary()
    answers = await asyncio.gather(*(_admitted(fleet.urls[i % 3], key) for i in range(12)))
    assert answers.count(None) == 5
    assert {a for a in answers if a is not None} == {(429, "rate_limit_exceeded")}


async def test_max_parallel_requests_is_exact_across_three_instances(fleet: Fleet) -> None:
    key = await _key(fleet, max_parallel_requests=4)
    async with contextlib.AsyncExitStack() as stack:
        async def hold(i: int) -> bool:
            ws = await stack.enter_async_context(_open(fleet.urls[i % 3], key))
            return bool(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created")

        opened = await asyncio.gather(*(hold(i) for i in range(10)))
        assert opened.count(True) == 4
        assert await _admitted(fleet.urls[1], key) == (429, "realtime_session_limit")
    await asyncio.sleep(0.5)  # the sessions end: their leases are released
    assert await _admitted(fleet.urls[2], key) is None


async def test_tpm_limit_counts_reported_tokens_across_three_instances(fleet: Fleet) -> None:
    _clear_of_minute_boundary()
    key = await _key(fleet, tpm_limit=60)
    async with _open(fleet.urls[2], key) as waiting:
        await _text_session(waiting)
        async with _open(fleet.urls[0], key) as ws:  # one turn on A uses more than 60 tokens
            await _text_session(ws)
            await _ask(ws, "Please count the tokens of this fairly long question " * 3)
            done = await _answer(ws)
            assert done["type"] == "response.done" and done["response"]["usage"]["total_tokens"] >= 60
        await asyncio.sleep(0.3)
        assert await _admitted(fleet.urls[1], key) == (429, "rate_limit_exceeded"), "B refuses new sessions"
        await _ask(waiting, "and one more", event_id="evt_tpm")  # C refuses the next response of a live one
        refused = await _answer(waiting)
        assert refused["type"] == "error" and refused["error"]["code"] == "rate_limit_exceeded"
        assert refused["error"]["event_id"] == "evt_tpm" and "tpm_limit 60" in refused["error"]["message"]


async def test_a_deployments_max_parallel_requests_holds_across_three_instances(fleet: Fleet) -> None:
    key = await _key(fleet)
    async with contextlib.AsyncExitStack() as stack:
        for i in range(2):  # A and B each place a session on the pool's one deployment
            ws = await stack.enter_async_context(_open(fleet.urls[i], key, "small-pool"))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
        async with _open(fleet.urls[2], key, "small-pool") as ws:  # C sees both: the deployment is full
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["type"] == "error" and event["error"]["code"] == "no_deployment_available", event
        assert ws.close_code == 4429
    await asyncio.sleep(0.5)  # the sessions ended: their deployment slots were released
    async with _open(fleet.urls[2], key, "small-pool") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"


# --- budgets -----------------------------------------------------------------------------------------------


async def test_twenty_parallel_sessions_overspend_by_at_most_one_reservation(fleet: Fleet) -> None:
    budget = 0.0015  # a few turns of the sessions below (24 output tokens each, at most ~$0.0003 reserved)
    key = await _key(fleet, max_budget=budget)
    reservations: list[float] = []

    async def talk(i: int) -> int:
        """Turns until three responses were refused (after a refusal, the next try waits out its quiet period)."""
        turns = refused = 0
        async with _open(fleet.urls[i % 3], key) as ws:
            await _text_session(ws)
            while refused < 3 and turns < 6:
                await _ask(ws, f"session {i}, turn {turns}: hello")
                answer = await _answer(ws)
                if answer["type"] == "error":
                    assert answer["error"]["code"] == "budget_exceeded", answer
                    reservations.append(float(answer["error"]["message"].split("may cost ($")[1].split(":")[0]))
                    refused += 1
                    await asyncio.sleep(1.1)
                else:
                    turns += 1
        return turns

    turns = await asyncio.gather(*(talk(i) for i in range(20)))
    assert sum(turns) >= 3 and reservations, "the budget allowed a few turns, then refused responses"
    for _ in range(40):  # the sessions' spend lands in the store
        spend = await _spend(fleet, key)
        await asyncio.sleep(0.25)
        if spend == await _spend(fleet, key):
            break
    assert spend <= budget + max(reservations), f"spent {spend} of {budget}"
    assert spend > budget / 2, "the budget was used, not refused early"


# --- crashes and outages ----------------------------------------------------------------------------------------


async def test_a_killed_instance_frees_its_leases_within_the_ttl(fleet: Fleet) -> None:
    key = await _key(fleet, max_parallel_requests=2)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(_open(fleet.urls[1], key))
        second = await stack.enter_async_context(_open(fleet.urls[1], key))
        for ws in (first, second):
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
        assert await _admitted(fleet.urls[0], key) == (429, "realtime_session_limit")
        fleet.kill(1)  # kill -9: no shutdown, no release
        killed = time.monotonic()
        assert await _admitted(fleet.urls[0], key) == (429, "realtime_session_limit"), "leases outlive the crash"
        while await _admitted(fleet.urls[2], key) is not None:
            assert time.monotonic() - killed < LEASE_TTL + 2, "the dead instance's leases did not lapse"
            await asyncio.sleep(0.25)
        assert time.monotonic() - killed >= LEASE_TTL - 1.0
    fleet.start(1, fail_closed=False)


async def test_a_redis_outage_with_and_without_fail_closed(fleet: Fleet) -> None:
    key = await _key(fleet, max_budget=5.0)
    async with _open(fleet.urls[2], key) as closed_side:  # C fails closed; opened while Redis is up
        await _text_session(closed_side)
        await _ask(closed_side, "before the outage")
        assert (await _answer(closed_side))["type"] == "response.done"
        fleet.redis.halt()
        try:
            # A fails open: admitted and served, counted by A alone; readiness and metrics show the outage
            async with _open(fleet.urls[0], key) as open_side:
                await _text_session(open_side)
                await _ask(open_side, "during the outage")
                assert (await _answer(open_side))["type"] == "response.done"
            async with httpx.AsyncClient(base_url=fleet.urls[0]) as http:
                ready = (await http.get("/health/readiness")).json()
                metrics = (await http.get("/metrics")).text
            assert ready["counters"] == "redis" and ready["counters_status"] == "unreachable"
            assert ready["status"] == "healthy", "the instance still serves"
            assert "livegate_counters_up 0.0" in metrics
            # C fails closed: a live session's next response is refused and it goes on; a new session is refused
            await _ask(closed_side, "during the outage too", event_id="evt_closed")
            refused = await _answer(closed_side)
            assert refused["type"] == "error" and refused["error"]["code"] == "budget_unavailable"
            assert refused["error"]["event_id"] == "evt_closed"
            assert await _admitted(fleet.urls[2], key) == (503, "budget_unavailable")
            unbudgeted = await _key(fleet)
            assert await _admitted(fleet.urls[2], unbudgeted) is None, "a key without a budget needs no counter"
        finally:
            fleet.redis.start()
        await asyncio.sleep(1.5)  # the next call after the retry delay finds Redis again
        await _ask(closed_side, "after the outage")
        answer = await _answer(closed_side)
        if answer["type"] == "error":  # still in the quiet period after the refusal: once more
            await asyncio.sleep(2)
            await _ask(closed_side, "after the outage, again")
            answer = await _answer(closed_side)
        assert answer["type"] == "response.done", answer
    async with httpx.AsyncClient(base_url=fleet.urls[2]) as http:
        assert (await http.get("/health/readiness")).json()["counters_status"] == "connected"

"""Pools of deployments end to end (issue 24 §1, §3): the openai SDK -> livegate -> several simulators, each a
deployment; some refuse the handshake (HTTP 429/503, as a project out of quota or a failing region does) or
close before setupComplete."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from livegate.config import Config, parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.translation.commands import OpenUpstream
from livegate.upstream.pool import Placement
from tests.support import collect, refusal, serve
from tests.test_e2e_live import KEY, ask, client

AUTH = {"Authorization": f"Bearer {KEY}"}


def deployment(sim: GeminiLiveSimulator, id: str, name: str = "gpt-realtime", model: str = "gemini-3.8-live",
               **params: Any) -> dict[str, Any]:
    return {"model_name": name, "model_info": {"id": id},
            "litellm_params": {"model": f"gemini/{model}", "api_key": "AIza-e2e-secret", "api_base": sim.url,
                               **params}}


def pool_config(*entries: dict[str, Any], general: dict[str, Any] | None = None, **top: Any) -> Config:
    return parse_config({"model_list": list(entries), "general_settings": {"master_key": KEY, **(general or {})},
                         **top})


@contextlib.asynccontextmanager
async def simulators(count: int) -> AsyncIterator[list[GeminiLiveSimulator]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(GeminiLiveSimulator(chunk_delay=0)) for _ in range(count)]


@contextlib.asynccontextmanager
async def livegate(config: Config, seed: int | None = None) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    app = create_app(config, simulator_chunk_delay=0)
    if seed is not None:
        app.state.gateway.pools.rng = random.Random(seed)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        yield url.replace("http", "ws") + "/v1", http


async def one_turn(ws_url: str, text: str, model: str = "gpt-realtime") -> str:
    """A whole session: one text turn, then the client leaves; the answer's text."""
    async with client(ws_url).realtime.connect(model=model) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        events = await ask(conn, text)
    return next(e.text for e in events if e.type == "response.output_text.done")


def attempts(sim: GeminiLiveSimulator) -> int:
    """Connections livegate tried on a simulator (refused handshakes included)."""
    return sim.refused + len(sim.sessions)


def metric(text: str, name: str, **labels: str) -> float:
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(name + wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# --- a failing deployment ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["refuses the handshake", "closes before setupComplete"])
async def test_every_session_goes_to_the_healthy_deployment_and_the_failing_one_cools_down(fault: str) -> None:
    async with simulators(2) as (bad, good):
        if fault == "refuses the handshake":
            bad.refuse_status = 429
        else:
            bad.close_on_setup = (1011, "Internal error encountered.")
        # `order` puts the failing deployment first, so every session meets it until it cools down.
        config = pool_config(deployment(bad, "bad", order=1), deployment(good, "good", order=2),
                             router_settings={"allowed_fails": 1, "cooldown_time": 60})
        async with livegate(config) as (url, http):
            answers = [await one_turn(url, f"Hello {i}") for i in range(6)]
            metrics = (await http.get("/metrics")).text
    assert answers == [f"[livegate simulator] You said: Hello {i}" for i in range(6)], "no session failed"
    assert attempts(bad) == 2, "two failures (allowed_fails 1 + 1) cooled it down: no session tried it since"
    assert len(good.sessions) == 6
    assert metric(metrics, "livegate_deployment_failures_total", deployment="bad", kind="setup") == 2
    assert metric(metrics, "livegate_deployment_cooldowns_total", deployment="bad") == 1
    assert metric(metrics, "livegate_deployment_cooling_down", deployment="bad") == 1
    assert metric(metrics, "livegate_deployment_cooling_down", deployment="good") == 0
    assert metric(metrics, "livegate_deployment_placements_total", model_group="gpt-realtime", deployment="good") == 6
    assert metric(metrics, "livegate_deployment_sessions", model_group="gpt-realtime", deployment="good") == 0
    assert "AIza-e2e-secret" not in metrics


async def test_weights_spread_sessions_over_the_pool() -> None:
    async with simulators(2) as (heavy, light):
        config = pool_config(deployment(heavy, "heavy", weight=3), deployment(light, "light", weight=1))
        async with livegate(config, seed=24) as (url, _):
            for i in range(32):
                await one_turn(url, f"Hello {i}")
    # 3:1 over 32 sessions (fixed seed): 24 expected, sd 2.4; the bounds are three of them.
    assert len(heavy.sessions) + len(light.sessions) == 32
    assert 17 <= len(heavy.sessions) <= 31, (len(heavy.sessions), len(light.sessions))


async def test_a_deployment_whose_sessions_used_its_tpm_gets_no_new_one_this_minute() -> None:
    async with simulators(2) as (small, spare):
        config = pool_config(deployment(small, "small", order=1, tpm=10), deployment(spare, "spare", order=2))
        async with livegate(config) as (url, _):
            await one_turn(url, "Hello")  # the simulator reports the turn's tokens (12): more than 10
            await one_turn(url, "Hello again")
    assert (len(small.sessions), len(spare.sessions)) == (1, 1)


async def test_least_busy_balances_live_sessions() -> None:
    async with simulators(2) as sims:
        config = pool_config(*(deployment(sim, f"d{i}") for i, sim in enumerate(sims)),
                             router_settings={"routing_strategy": "least-busy"})
        async with livegate(config) as (url, _), contextlib.AsyncExitStack() as stack:
            for i in range(6):  # six sessions held open at once
                conn = await stack.enter_async_context(client(url).realtime.connect(model="gpt-realtime"))
                await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                await ask(conn, f"Hello {i}")
            assert [len(sim.sessions) for sim in sims] == [3, 3]


# --- fallbacks -----------------------------------------------------------------------------------------


async def test_a_failing_group_falls_back_to_another() -> None:
    async with simulators(2) as (bad, good):
        bad.refuse_status = 503
        config = pool_config(deployment(bad, "primary"), deployment(good, "backup", name="gpt-realtime-backup"),
                             router_settings={"fallbacks": [{"gpt-realtime": ["gpt-realtime-backup"]}],
                                              "allowed_fails": 0, "cooldown_time": 60})
        async with livegate(config) as (url, http):
            first = await one_turn(url, "Hello")  # tried primary, then the fallback at once
            second = await one_turn(url, "Hello again")  # primary cools down: the fallback from the start
            metrics = (await http.get("/metrics")).text
    assert (first, second) == ("[livegate simulator] You said: Hello", "[livegate simulator] You said: Hello again")
    assert (bad.refused, len(good.sessions)) == (1, 2)
    assert metric(metrics, "livegate_deployment_placements_total", model_group="gpt-realtime-backup",
                  deployment="backup") == 2


async def test_a_fallback_to_another_model_family_takes_new_sessions_only() -> None:
    async with simulators(2) as (bad, older):
        bad.refuse_status = 503
        config = pool_config(
            deployment(bad, "new"),
            deployment(older, "old", name="older", model="gemini-2.5-flash-native-audio-preview-12-2025"),
            router_settings={"fallbacks": [{"gpt-realtime": ["older"]}], "allowed_fails": 0, "cooldown_time": 60})
        async with livegate(config) as (url, _):
            # A session translated for gemini-3.8-live cannot move to a 2.5 model: it fails, and the deployment
            # cools down.
            async with client(url).realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                          "content": [{"type": "input_text", "text": "Hello"}]})
                await conn.response.create()
                errors = []
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    async for event in conn:
                        if event.type == "error":
                            errors.append(event.error)
            assert errors[0].code == "upstream_unavailable" and "HTTP 503" in errors[0].message
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1014
            # The next session starts on the fallback, translated for its model.
            answer = await one_turn(url, "Hello again")
    assert answer.startswith("[livegate simulator]")
    assert older.sessions[0].setup is not None
    assert older.sessions[0].setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"


async def test_a_pool_with_nothing_left_refuses_the_handshake() -> None:
    async with simulators(1) as (bad,):
        bad.refuse_status = 429
        config = pool_config(deployment(bad, "only"), router_settings={"allowed_fails": 0, "cooldown_time": 60})
        async with livegate(config) as (url, _):
            with contextlib.suppress(Exception):
                await one_turn(url, "Hello")  # fails, and cools the only deployment down
            status, error = await refusal(websockets.connect(f"{url}/realtime?model=gpt-realtime",
                                                             additional_headers=AUTH))
    assert status == 503 and error["code"] == "no_deployment_available"
    assert error["message"] == ("Every deployment of the model 'gpt-realtime' is cooling down after failing; try "
                                "again in 60 s.")


# --- a connection failing beyond recovery --------------------------------------------------------------


async def conversation_moves(first: GeminiLiveSimulator, second: GeminiLiveSimulator, url: str,
                             fail: Any) -> str:
    async with client(url).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "My name is Ada")
        await fail()
        await wait_for(lambda: bool(second.sessions) and second.sessions[0].setup is not None)
        events = await ask(conn, "What did I say before?")
    return next(e.text for e in events if e.type == "response.output_text.done")


async def test_a_deployment_that_goes_down_mid_session_hands_the_conversation_to_another() -> None:
    async with simulators(2) as (a, b):
        config = pool_config(deployment(a, "a", order=1), deployment(b, "b", order=2))
        async with livegate(config) as (url, _):
            async def fail() -> None:
                a.refuse_status = 503  # the region is gone: the recovery cannot reconnect there
                await a.sessions[0].abort(1011, "Internal error encountered.")

            answer = await conversation_moves(a, b, url, fail)
    assert answer == "[livegate simulator] Before this you said: My name is Ada"
    seed = b.sessions[0].received[1]["clientContent"]
    assert seed["turns"][0]["parts"][0]["text"] == "My name is Ada" and seed["turnComplete"] is True


async def test_after_a_move_out_of_band_answers_come_from_the_new_deployment_too() -> None:
    async with simulators(2) as (a, b):
        config = pool_config(deployment(a, "a", order=1), deployment(b, "b", order=2))
        async with livegate(config) as (url, _), client(url).realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await ask(conn, "My order is late")
            a.refuse_status = 503
            await a.sessions[0].abort(1011, "Internal error encountered.")
            await wait_for(lambda: bool(b.sessions) and b.sessions[0].setup is not None)
            await conn.response.create(response={
                "conversation": "none", "output_modalities": ["text"],
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "angry?"}]}]})
            events = await collect(conn, "response.done")
    assert "You said: angry?" in events[-1].response.output[0].content[0].text
    assert (len(a.rest_calls), len(b.rest_calls)) == (0, 1), "the side call goes where the session is carried"


async def test_a_connection_failing_beyond_recovery_reseeds_on_another_deployment() -> None:
    async with simulators(2) as (a, b):
        config = pool_config(deployment(a, "a", order=1), deployment(b, "b", order=2))
        async with livegate(config) as (url, _):
            async def fail() -> None:
                await a.sessions[0].abort(1011, "Internal error encountered.")  # recovered on a, fresh
                await wait_for(lambda: len(a.sessions) == 2 and a.sessions[1].setup is not None)
                await a.sessions[1].abort(1011, "Internal error encountered.")  # again: beyond recovery

            answer = await conversation_moves(a, b, url, fail)
    assert answer == "[livegate simulator] Before this you said: My name is Ada"
    assert len(a.sessions) == 2 and len(b.sessions) == 1, "moved to b, not tried on a a third time"


# --- /health -------------------------------------------------------------------------------------------


async def test_health_checks_each_deployment_with_a_real_handshake() -> None:
    async with simulators(2) as (bad, good):
        bad.refuse_status = 429
        config = pool_config(deployment(bad, "bad"), deployment(good, "good"),
                             deployment(good, "spare", name="gpt-realtime-spare"))
        async with livegate(config) as (_, http):
            assert (await http.get("/health")).json() == {"status": "ok"}, "without a key: no handshake"
            assert (attempts(bad), attempts(good)) == (0, 0)
            checked = (await http.get("/health", headers=AUTH)).json()
            one = (await http.get("/health?model=gpt-realtime-spare", headers=AUTH)).json()
            unknown = await http.get("/health?model=nope", headers=AUTH)
            wrong = await http.get("/health", headers={"Authorization": "Bearer sk-wrong"})
            generated = await http.post("/key/generate", headers=AUTH, json={})
            virtual = await http.get("/health", headers={"Authorization": f"Bearer {generated.json()['key']}"})
            metrics = (await http.get("/metrics")).text
    assert (checked["healthy_count"], checked["unhealthy_count"]) == (2, 1)
    assert sorted(e["deployment"] for e in checked["healthy_endpoints"]) == ["good", "spare"]
    [failing] = checked["unhealthy_endpoints"]
    assert failing["deployment"] == "bad" and failing["model"] == "gpt-realtime"
    assert "refused the connection (HTTP 429)" in failing["error"]
    assert [e["deployment"] for e in one["healthy_endpoints"]] == ["spare"] and one["unhealthy_count"] == 0
    assert good.sessions[0].setup == {"model": "models/gemini-3.8-live"}, "a real setup handshake"
    assert (unknown.status_code, wrong.status_code, virtual.status_code) == (404, 401, 403)
    assert metric(metrics, "livegate_deployment_healthy", deployment="bad") == 0
    assert metric(metrics, "livegate_deployment_healthy", deployment="good") == 1
    assert metric(metrics, "livegate_deployment_failures_total", deployment="bad", kind="health_check") == 1
    assert "AIza-e2e-secret" not in str(checked)


async def test_background_checks_cool_a_failing_deployment_down_before_any_session() -> None:
    async with simulators(2) as (bad, good):
        bad.refuse_status = 503
        config = pool_config(deployment(bad, "bad"), deployment(good, "good"),
                             general={"background_health_checks": True, "health_check_interval": 0.1},
                             router_settings={"allowed_fails": 1, "cooldown_time": 60})
        async with livegate(config, seed=3) as (url, http):
            await wait_for(lambda: bad.refused >= 2)  # two failed checks: cooling down
            answers = [await one_turn(url, f"Hello {i}") for i in range(4)]
            checked = (await http.get("/health", headers=AUTH)).json()
            metrics = (await http.get("/metrics")).text
    assert all(a.startswith("[livegate simulator]") for a in answers)
    assert metric(metrics, "livegate_deployment_failures_total", deployment="bad", kind="setup") == 0, \
        "no session was sent to the deployment the checks cooled down"
    assert metric(metrics, "livegate_deployment_cooldowns_total", deployment="bad") >= 1
    assert [e["deployment"] for e in checked["unhealthy_endpoints"]] == ["bad"]


async def test_a_session_ending_while_it_tries_another_deployment_frees_the_slot_there() -> None:
    async with simulators(2) as (a, slow):
        slow.setup_delay = 0.5  # a deployment slow to answer the setup (the session ends before it does)
        config = pool_config(deployment(a, "a", order=1), deployment(slow, "slow", order=2, max_parallel_requests=1))
        pools = create_app(config).state.gateway.pools
        placement = await pools.place(config.routes[0])
        assert isinstance(placement, Placement) and placement.route.deployment == "a"
        moving = asyncio.create_task(placement.open(OpenUpstream(
            2, {"setup": {"model": "models/gemini-3.8-live"}}, (), first=False, mode="fresh", relocate=True), 60))
        await wait_for(lambda: bool(slow.sessions))
        moving.cancel()  # the session ends (its pump cancels the open) and releases its placement
        with contextlib.suppress(asyncio.CancelledError):
            await moving
        await placement.release()
        assert await pools.counters.live(["a", "slow"]) == {"a": 0, "slow": 0}


async def test_a_key_refused_for_its_own_limits_costs_the_deployment_nothing() -> None:
    async with simulators(1) as (sim,):
        config = pool_config(deployment(sim, "only", rpm=2))
        async with livegate(config) as (url, http):
            limited = (await http.post("/key/generate", headers=AUTH, json={"rpm_limit": 1})).json()["key"]

            async def handshake(key: str) -> str:
                async with websockets.connect(f"{url}/realtime?model=gpt-realtime",
                                              additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                    return json.loads(await ws.recv())["type"]

            assert await handshake(limited) == "session.created"
            status, error = await refusal(websockets.connect(
                f"{url}/realtime?model=gpt-realtime", additional_headers={"Authorization": f"Bearer {limited}"}))
            assert (status, error["code"]) == (429, "rate_limit_exceeded")
            assert await handshake(KEY) == "session.created", "the key's refusal took none of the deployment's rpm"
            status, error = await refusal(websockets.connect(f"{url}/realtime?model=gpt-realtime",
                                                             additional_headers=AUTH))
    assert (status, error["code"]) == (429, "no_deployment_available")
    assert error["message"] == ("Every deployment of the model 'gpt-realtime' is at its rpm, tpm or "
                                "max_parallel_requests limit; try again shortly.")

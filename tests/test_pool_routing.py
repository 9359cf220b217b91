"""Pools of deployments without a network (issue 24 §1): how a new session picks a deployment (weights, rpm,
least-busy, order), the per-deployment limits, the cooldown clock, fallbacks at admission, the session core's
move to another deployment, and the config keys in LiteLLM's words."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

import pytest

from livegate.close_codes import Refusal
from livegate.config import ConfigError, parse_config
from livegate.translation.commands import CloseClient, OpenUpstream
from livegate.translation.usage import UsageLedger
from livegate.upstream.deployment_counters import LocalDeploymentCounters
from livegate.upstream.pool import Placement, Pools
from tests.test_session_core import SETUP_COMPLETE, answered_turn, commands, make, say


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def entry(name: str = "gpt-realtime", model: str = "gemini-3.8-live", *, id: str | None = None,
          **params: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"model_name": name, "litellm_params": {"model": f"gemini/{model}", "api_key": "AIza-x",
                                                                   **params}}
    if id is not None:
        item["model_info"] = {"id": id}
    return item


def pools(*entries: dict[str, Any], seed: int = 7, clock: Clock | None = None, **router: Any) -> Pools:
    config = parse_config({"model_list": list(entries), "router_settings": router})
    return Pools(config, counters=LocalDeploymentCounters(clock or Clock()), rng=random.Random(seed))


async def place(pool: Pools, name: str = "gpt-realtime") -> Placement:
    placement = await pool.place(next(r for r in pool.config.routes if r.model_name == name))
    assert isinstance(placement, Placement), placement
    return placement


async def spread(pool: Pools, sessions: int) -> Counter[str]:
    """Where `sessions` new sessions go, each ending before the next starts."""
    where: Counter[str] = Counter()
    for _ in range(sessions):
        placement = await place(pool)
        where[placement.route.deployment] += 1
        await placement.release()
    return where


# --- picking a deployment --------------------------------------------------------------------------


async def test_weights_hold_over_many_sessions() -> None:
    pool = pools(entry(id="big", weight=3), entry(id="small", weight=1), entry(id="none"))
    where = await spread(pool, 4000)
    # 3:1:0 with a fixed seed; the bounds are five standard deviations of the binomial (sd ~ 27 sessions).
    assert abs(where["big"] - 3000) < 140 and where["big"] + where["small"] == 4000
    assert where["none"] == 0, "once the pool has weights, a deployment without one gets no first pick"


async def test_rpm_weighs_the_pick_when_no_deployment_has_a_weight() -> None:
    pool = pools(entry(id="a", rpm=100_000), entry(id="b", rpm=300_000))
    where = await spread(pool, 2000)
    assert abs(where["b"] - 1500) < 100


async def test_without_weights_the_pick_is_uniform() -> None:
    where = await spread(pools(entry(id="a"), entry(id="b"), entry(id="c")), 3000)
    assert all(abs(n - 1000) < 130 for n in where.values()), where


async def test_least_busy_goes_to_the_deployment_with_fewest_live_sessions() -> None:
    pool = pools(entry(id="a"), entry(id="b"), entry(id="c"), routing_strategy="least-busy")
    live = [await place(pool) for _ in range(9)]
    assert Counter(p.route.deployment for p in live) == {"a": 3, "b": 3, "c": 3}
    for placement in [p for p in live if p.route.deployment == "b"][:2]:
        await placement.release()
    assert [(await place(pool)).route.deployment for _ in range(2)] == ["b", "b"]


async def test_order_keeps_the_others_for_when_the_first_are_full() -> None:
    pool = pools(entry(id="primary", order=1, max_parallel_requests=2), entry(id="spare", order=2))
    first = [await place(pool) for _ in range(3)]
    assert [p.route.deployment for p in first] == ["primary", "primary", "spare"]
    await first[0].release()
    assert (await place(pool)).route.deployment == "primary"


# --- the deployments' own limits ---------------------------------------------------------------------


async def test_rpm_and_parallel_limits_skip_a_full_deployment_and_refuse_when_all_are() -> None:
    clock = Clock()
    pool = pools(entry(id="a", rpm=2), entry(id="b", max_parallel_requests=1), clock=clock)
    where = [(await place(pool)).route.deployment for _ in range(3)]
    assert sorted(where) == ["a", "a", "b"]
    refused = await pool.place(pool.config.routes[0])
    assert isinstance(refused, Refusal) and refused.status == 429 and refused.code == "no_deployment_available"
    assert "rpm, tpm or max_parallel_requests limit" in refused.message
    clock.t += 61  # a new minute: a's rpm has room again (b still holds its session)
    assert (await place(pool)).route.deployment == "a"


async def test_tpm_passes_over_a_deployment_whose_sessions_used_its_tokens_this_minute() -> None:
    clock = Clock()
    pool = pools(entry(id="small", order=1, tpm=1000), entry(id="spare", order=2), clock=clock)
    placement = await place(pool)
    assert placement.route.deployment == "small"
    ledger = UsageLedger()
    placement.watch(ledger)
    ledger.report({"promptTokenCount": 400, "responseTokenCount": 200, "totalTokenCount": 600})
    assert (await place(pool)).route.deployment == "small", "600 of its 1000 tokens this minute"
    ledger.report({"promptTokenCount": 700, "responseTokenCount": 300, "totalTokenCount": 1000})  # the turn grew
    assert (await place(pool)).route.deployment == "spare", "1000 tokens: the minute's are used"
    clock.t += 61
    assert (await place(pool)).route.deployment == "small", "a new minute"


async def test_a_sessions_tokens_count_where_it_is_carried() -> None:
    counters = LocalDeploymentCounters(Clock())
    pool = Pools(parse_config({"model_list": [entry(id="a", order=1), entry(id="b", order=2)]}), counters=counters)
    placement = await place(pool)
    ledger = UsageLedger()
    placement.watch(ledger)
    ledger.report({"promptTokenCount": 50, "responseTokenCount": 50, "totalTokenCount": 100})
    ledger.commit()
    placement.route = pool.config.routes[1]  # moved to b (Placement._move)
    ledger.report({"promptTokenCount": 150, "responseTokenCount": 20, "totalTokenCount": 170})
    assert await counters.take("a", "x", rpm=None, max_parallel=None, tpm=101)
    assert not await counters.take("a", "x", rpm=None, max_parallel=None, tpm=100)
    assert await counters.take("b", "x", rpm=None, max_parallel=None, tpm=171)
    assert not await counters.take("b", "x", rpm=None, max_parallel=None, tpm=170)


async def test_over_its_tpm_a_deployment_still_resumes_its_sessions_but_starts_none_afresh(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pool = pools(entry(id="a", order=1, tpm=100), entry(id="b", order=2))
    placement = await place(pool)
    ledger = UsageLedger()
    placement.watch(ledger)
    ledger.report({"promptTokenCount": 100, "responseTokenCount": 50, "totalTokenCount": 150})
    opened_on: list[str] = []

    class Provider:
        def __init__(self, route: Any) -> None:
            self.deployment = route.deployment

        def setup_model(self) -> str:
            return "models/gemini-3.8-live"

    async def open_link(provider: Provider, *_: Any) -> tuple[object, str]:
        opened_on.append(provider.deployment)
        return object(), '{"setupComplete": {}}'

    monkeypatch.setattr(pool, "provider", Provider)
    monkeypatch.setattr("livegate.upstream.pool.open_link", open_link)
    setup = {"setup": {"model": "models/gemini-3.8-live"}}
    assert isinstance(await placement.open(OpenUpstream(2, setup, (), first=False, mode="handle"), 5), tuple)
    assert opened_on == ["a"] and placement.route.deployment == "a", "resumed where it runs"
    assert isinstance(await placement.open(OpenUpstream(3, setup, (), first=False, mode="fresh"), 5), tuple)
    assert opened_on == ["a", "b"] and placement.route.deployment == "b", "a fresh session goes where tpm allows"


async def test_tpm_weighs_the_pick_when_no_deployment_has_a_weight_or_rpm() -> None:
    where = await spread(pools(entry(id="a", tpm=100_000), entry(id="b", tpm=300_000)), 2000)
    assert abs(where["b"] - 1500) < 100


async def test_a_session_holds_one_slot_whatever_its_reconnections() -> None:
    counters = LocalDeploymentCounters(Clock())
    assert await counters.take("d", "s1", rpm=None, max_parallel=1)
    assert await counters.take("d", "s1", rpm=None, max_parallel=1), "the same session reconnecting"
    assert not await counters.take("d", "s2", rpm=None, max_parallel=1)
    await counters.release("d", "s1")
    assert await counters.take("d", "s2", rpm=None, max_parallel=1)
    assert await counters.live(["d", "e"]) == {"d": 1, "e": 0}


# --- failures and cooldowns --------------------------------------------------------------------------


async def test_more_than_allowed_fails_in_a_minute_cools_a_deployment_down() -> None:
    clock = Clock()
    counters = LocalDeploymentCounters(clock)
    assert not await counters.failed("d", allowed_fails=2, cooldown_s=30)
    clock.t += 59
    assert not await counters.failed("d", allowed_fails=2, cooldown_s=30)
    clock.t += 2  # the first failure is more than a minute old now
    assert not await counters.failed("d", allowed_fails=2, cooldown_s=30)
    assert await counters.failed("d", allowed_fails=2, cooldown_s=30), "three within a minute"
    assert await counters.cooling(["d", "e"]) == {"d": 30}
    clock.t += 29.5
    assert "d" in await counters.cooling(["d"])
    clock.t += 0.6
    assert await counters.cooling(["d"]) == {}


async def test_allowed_fails_zero_cools_down_at_the_first_failure() -> None:
    counters = LocalDeploymentCounters(Clock())
    assert await counters.failed("d", allowed_fails=0, cooldown_s=5)


async def test_a_cooling_deployment_gets_no_session_and_fallbacks_take_over() -> None:
    clock = Clock()
    pool = pools(entry(id="a"), entry("backup", id="z"), clock=clock, allowed_fails=0, cooldown_time=10,
                 fallbacks=[{"gpt-realtime": ["backup"]}])
    await pool.failed(pool.config.routes[0], "setup")
    placement = await place(pool)
    assert placement.route.deployment == "z" and placement.route.model_name == "backup"
    await pool.failed(pool.config.routes[1], "setup")
    refused = await pool.place(pool.config.routes[0])
    assert isinstance(refused, Refusal) and refused.status == 503
    assert refused.message == ("Every deployment of the model 'gpt-realtime' or 'backup' is cooling down after "
                               "failing; try again in 10 s.")
    clock.t += 10.1
    assert (await place(pool)).route.deployment == "a"


# --- the session core moves a session that fails beyond recovery ---------------------------------------


def _connected(relocations: int) -> tuple[Any, int]:
    core, _ = make()
    core.relocations_allowed = relocations
    core.start()
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    answered_turn(core, opening.link)
    return core, opening.link


def test_a_connection_failing_beyond_recovery_moves_to_another_deployment() -> None:
    core, link = _connected(relocations=1)
    [recovery] = commands(core.upstream_closed(link, 1011, "Internal error encountered."), OpenUpstream)
    assert recovery.mode == "fresh" and not recovery.relocate, "first, a recovery where the session is"
    core.upstream_opened(recovery.link, SETUP_COMPLETE)
    [move] = commands(core.upstream_closed(recovery.link, 1011, "Internal error encountered."), OpenUpstream)
    assert move.mode == "fresh" and move.relocate, "then a fresh session on another deployment"
    turns = move.then[0]["clientContent"]["turns"]
    assert [t["parts"][0]["text"] for t in turns] == ["hi", "Hello"], "re-seeded with the conversation"
    assert [seen[1] for seen in core.observer.seen if seen[-1] == "relocate"] == ["fresh"]
    core.upstream_opened(move.link, SETUP_COMPLETE)
    out = core.upstream_closed(move.link, 1011, "")
    assert commands(out, OpenUpstream) == [] and commands(out, CloseClient)[0].code == 1014, "one move in a row"


def test_without_another_deployment_the_session_ends_as_before() -> None:
    core, link = _connected(relocations=0)
    [recovery] = commands(core.upstream_closed(link, 1011, ""), OpenUpstream)
    core.upstream_opened(recovery.link, SETUP_COMPLETE)
    out = core.upstream_closed(recovery.link, 1011, "")
    assert commands(out, OpenUpstream) == [] and commands(out, CloseClient)[0].code == 1014


@pytest.mark.parametrize("code", [1000, 1007, 1008])
def test_closes_no_deployment_can_fix_are_not_moved(code: int) -> None:
    core, link = _connected(relocations=3)
    assert commands(core.upstream_closed(link, code, ""), OpenUpstream) == []


# --- the config, in LiteLLM's words ------------------------------------------------------------------


def test_router_settings_are_read_and_litellm_settings_fill_in() -> None:
    config = parse_config({
        "model_list": [entry(rpm=10, tpm=5000, max_parallel_requests=5, weight=2.5, order=1), entry(),
                       entry("backup")],
        "litellm_settings": {"fallbacks": [{"gpt-realtime": ["backup"]}], "allowed_fails": 1, "cooldown_time": 60},
        "router_settings": {"routing_strategy": "least-busy", "cooldown_time": 30},
        "general_settings": {"background_health_checks": True, "health_check_interval": 60}})
    first = config.routes[0]
    assert (first.rpm, first.tpm, first.max_parallel_requests, first.weight, first.order) == (10, 5000, 5, 2.5, 1)
    assert [r.deployment for r in config.routes] == ["gpt-realtime#1", "gpt-realtime#2", "backup#1"]
    settings = config.pools
    assert (settings.routing_strategy, settings.fallbacks, settings.allowed_fails, settings.cooldown_s) == (
        "least-busy", {"gpt-realtime": ("backup",)}, 1, 30.0)
    assert settings.background_health_checks and settings.health_check_interval_s == 60


def test_litellms_other_strategies_and_router_keys_load_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "livegate.config"):
        config = parse_config({"model_list": [entry()], "router_settings": {
            "routing_strategy": "latency-based-routing", "num_retries": 2, "redis_host": "cache"}})
    assert config.pools.routing_strategy == "simple-shuffle"
    text = caplog.text
    assert "latency-based-routing" in text and "router_settings.num_retries is not used" in text


@pytest.mark.parametrize(("data", "message"), [
    ({"router_settings": {"routing_stratgy": "least-busy"}},
     "router_settings.routing_stratgy: unknown key; did you mean `routing_strategy`?"),
    ({"router_settings": {"routing_strategy": "least-bussy"}},
     "router_settings.routing_strategy: unknown strategy 'least-bussy'; did you mean `least-busy`?"),
    ({"router_settings": {"routing_strategy": "x"}},
     "router_settings.routing_strategy: unknown strategy 'x'; expected one of simple-shuffle, least-busy"),
    ({"router_settings": {"fallbacks": [{"gpt-realtim": ["gpt-realtime"]}]}},
     "router_settings.fallbacks[0].gpt-realtim: no model_list entry is named 'gpt-realtim'; did you mean "
     "`gpt-realtime`?"),
    ({"router_settings": {"fallbacks": {"gpt-realtime": "x"}}},
     "router_settings.fallbacks: expected a list of {model_name: [model_name, ...]}"),
    ({"router_settings": {"allowed_fails": -1}}, "router_settings.allowed_fails: expected an integer >= 0"),
    ({"livegate_settings": {"cooldown_time": 5}}, "livegate_settings.cooldown_time: unknown key"),
])
def test_router_keys_that_are_wrong_are_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"model_list": [entry()], **data})
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_pool_serves_one_model_family_on_one_backend() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"model_list": [entry(), entry(model="gemini-2.5-flash-native-audio-preview-12-2025")]})
    assert str(raised.value).startswith("model_list[1] (gemini/gemini-2.5-flash-native-audio-preview-12-2025) "
                                        "cannot join model_list[0] (gemini/gemini-3.8-live) in the pool "
                                        "'gpt-realtime'")
    vertex = {"model_name": "gpt-realtime", "litellm_params": {"model": "vertex_ai/gemini-3.8-live",
                                                               "vertex_project": "p"}}
    with pytest.raises(ConfigError, match="one model family on one backend"):
        parse_config({"model_list": [entry(), vertex]})


def test_deployment_ids_are_unique() -> None:
    with pytest.raises(ConfigError, match=r"model_list\[1\].model_info.id: 'eu' names another deployment"):
        parse_config({"model_list": [entry(id="eu"), entry(id="eu")]})

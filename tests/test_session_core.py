"""The session core, sans-I/O: every decision the pump used to make from session keys, driven here with a
fake clock and no socket (switch timing, the continuation hold, the stall clock, recoveries, the timers,
the first connection, accounting stops, lifecycle violations at run time)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from livegate.mapping import load_mappings
from livegate.translation.commands import CloseClient, CloseUpstream, OpenUpstream, SetTimer, Timer, UpstreamFailure
from livegate.translation.observer import SessionObserver
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Output, Translator
from livegate.translation.watchdog import WatchdogSettings
from tests import conftest

MAPPINGS = load_mappings()
WALL = 1_767_225_600.0  # the translator's Unix clock at core time 0
AUDIO = "AAAAAA=="  # 4 bytes of PCM16
SETUP_COMPLETE = b'{"setupComplete": {}}'
TEXT = b'{"serverContent": {"outputTranscription": {"text": "Hello"}}}'
TURN_DONE = b'{"serverContent": {"turnComplete": true}, "usageMetadata": {"promptTokenCount": 3, ' \
            b'"responseTokenCount": 2}}'
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder(SessionObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def lifecycle_violation(self, before: str, sources: tuple[str, ...], after: str) -> None:
        self.seen.append(("violation", before, sources, after))

    def switch_started(self, mode: str, cut: bool, why: str) -> None:
        self.seen.append(("switch", mode, cut, why))

    def recovery(self, kind: str) -> None:
        self.seen.append(("recovery", kind))


def make(mappings: Any = MAPPINGS, *, stall_after_s: float = 5.0, watchdog: WatchdogSettings | None = None,
         **policy: Any) -> tuple[SessionCore, Clock]:
    clock = Clock()
    translator = Translator(mappings, deterministic=True, clock=lambda: WALL + clock.t, context={
        "model": "gpt-realtime", "setup_model": "models/gemini-3.8-live", "backend": "aistudio",
        "capabilities": mappings.models.capabilities("gemini-3.8-live", "aistudio")})
    base = mappings.resumption
    core = SessionCore(translator, dataclasses.replace(base, **policy) if policy else base,
                       stall_after_s=stall_after_s, clock=clock, observer=Recorder(),
                       watchdog=watchdog or WatchdogSettings(stall_timeout_ms=2000))
    return core, clock


def commands(out: Output, kind: type) -> list[Any]:
    return [c for c in out.commands if isinstance(c, kind)]


def types(out: Output) -> list[str]:
    return [m["type"] for m in out.client]


def say(text: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                         "content": [{"type": "input_text", "text": text}]}}


def frame(**message: Any) -> bytes:
    return orjson.dumps(message)


def connected(*, watchdog: WatchdogSettings | None = None, **session: Any) -> tuple[SessionCore, Clock, int]:
    """A session whose first Gemini connection is open (link 1), between turns."""
    core, clock = make(watchdog=watchdog)
    core.start()
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                                             **session}})
    out = core.client_frame(say("hi"))
    [opening] = commands(out, OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    return core, clock, opening.link


def answered_turn(core: SessionCore, link: int, handle: str = "h1") -> None:
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    core.upstream_frame(link, TURN_DONE)
    core.upstream_frame(link, frame(sessionResumptionUpdate={"newHandle": handle, "resumable": True}))


# --- the first connection ----------------------------------------------------------------------------


def test_the_first_content_opens_gemini_in_line_and_later_input_waits_for_it() -> None:
    core, _ = make()
    assert commands(core.start(), OpenUpstream) == []
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    out = core.client_frame(say("hi"))
    [opening] = commands(out, OpenUpstream)
    assert opening.first and opening.mode == "first" and "setup" in opening.setup
    assert [next(iter(m)) for m in opening.then] == ["clientContent"] and out.upstream == []
    asked = core.client_frame({"type": "response.create"})
    assert asked.upstream == [] and asked.link is None, "held while the connection opens"
    opened = core.upstream_opened(opening.link, SETUP_COMPLETE)
    assert opened.link == opening.link and core.link == opening.link
    assert opened.upstream == [{"clientContent": {"turnComplete": True}}], "the held input follows the setup"


def test_audio_streamed_before_the_first_setup_is_held_whole_and_the_pump_told_to_stop_reading() -> None:
    core, _ = make(queue_audio_ms=100)
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    chunk = base64.b64encode(bytes(2400)).decode()  # 50 ms of 24 kHz PCM16
    [opening] = commands(core.client_frame({"type": "input_audio_buffer.append", "audio": chunk}), OpenUpstream)
    assert not core.input_backlogged
    outs = [core.client_frame({"type": "input_audio_buffer.append", "audio": chunk}) for _ in range(3)]
    assert core.input_backlogged, "queue_audio_ms held: the pump reads no more until Gemini is set up"
    assert not any(types(o) for o in outs), "no audio dropped (and no input_audio_dropped error) before the start"
    opened = core.upstream_opened(opening.link, SETUP_COMPLETE)
    assert len([m for m in opened.upstream if "audio" in m.get("realtimeInput", {})]) == 3, "all of it follows"
    assert not core.input_backlogged


@pytest.mark.parametrize(("failure", "code", "message"), [
    (UpstreamFailure("timeout"), "upstream_timeout", "Gemini Live did not answer the session setup in time."),
    (UpstreamFailure("credentials", "the key file is unreadable"), "upstream_auth_failed",
     "Gemini Live credentials failed: the key file is unreadable"),
    (UpstreamFailure("unreachable", "Gemini Live refused the connection (HTTP 403)"), "upstream_unavailable",
     "Gemini Live refused the connection (HTTP 403)"),
    (UpstreamFailure("other", "KeyError"), "upstream_unavailable", "livegate could not open the Gemini Live session."),
])
def test_a_first_connection_that_fails_is_an_error_then_1014(failure: UpstreamFailure, code: str,
                                                             message: str) -> None:
    core, _ = make()
    core.start()
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    out = core.upstream_failed(opening.link, failure)
    [error] = out.client
    assert (error["error"]["code"], error["error"]["message"]) == (code, message)
    assert commands(out, CloseClient) == [CloseClient(1014, message)]
    assert core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO}).upstream == [], \
        "nothing more reaches Gemini"


def test_a_first_connection_closed_by_gemini_reports_its_code() -> None:
    core, _ = make()
    core.start()
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    out = core.upstream_failed(opening.link, UpstreamFailure("closed", code=1007, reason="bad setup"))
    assert out.client[-1]["error"]["code"] == "upstream_closed" and "1007" in out.client[-1]["error"]["message"]
    assert commands(out, CloseClient) == [CloseClient(1014, "Gemini Live closed the session (1007)")]


# --- the audio path ----------------------------------------------------------------------------------


def test_audio_costs_no_command() -> None:
    core, _, link = connected()
    up = core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})
    down = core.upstream_frame(link, frame(serverContent={"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": AUDIO}}]}}))
    assert up.commands == () and down.commands == (), "no command object per chunk"
    assert up.link == link and "realtimeInput" in up.upstream[0]


# --- switching ---------------------------------------------------------------------------------------


def test_go_away_at_a_turn_boundary_switches_at_once_and_queues_input_meanwhile() -> None:
    core, _, link = connected()
    answered_turn(core, link)
    out = core.upstream_frame(link, frame(goAway={"timeLeft": "50s"}))
    [opening] = commands(out, OpenUpstream)
    assert not opening.first and opening.mode == "handle"
    assert opening.setup["setup"]["sessionResumption"] == {"handle": "h1"}
    assert core.link is None and ("switch", "handle", False, "go_away") in core.observer.seen  # type: ignore[attr-defined]
    queued = core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})
    assert queued.upstream == [] and queued.link is None
    assert core.upstream_frame(link, TEXT).client == [], "the old connection is over, whatever it still says"
    opened = core.upstream_opened(opening.link, SETUP_COMPLETE)
    assert commands(opened, CloseUpstream) == [CloseUpstream(link)]
    assert opened.link == opening.link and "realtimeInput" in opened.upstream[0], "the queued audio follows"
    assert core.switches == 1


def test_go_away_mid_turn_waits_for_the_boundary_and_cancels_its_deadline() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)  # a response is under way
    out = core.upstream_frame(link, frame(goAway={"timeLeft": "50s"}))
    assert commands(out, OpenUpstream) == []
    assert commands(out, SetTimer) == [SetTimer(Timer.SWITCH_DEADLINE, clock.t + 50 - 10)]
    done = core.upstream_frame(link, TURN_DONE)
    assert types(done)[-2:] == ["response.done", "rate_limits.updated"]
    assert commands(done, OpenUpstream)[0].mode == "handle"
    assert SetTimer(Timer.SWITCH_DEADLINE, None) in done.commands


def test_no_boundary_by_the_deadline_switches_mid_turn_and_fails_the_cut_response() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    out = core.upstream_frame(link, frame(goAway={"timeLeft": "12s"}))
    assert commands(out, SetTimer) == [SetTimer(Timer.SWITCH_DEADLINE, clock.t + 6)], "half the time left, not 10 s"
    clock.t += 6
    switched = core.timer_expired(Timer.SWITCH_DEADLINE)
    done = next(m for m in switched.client if m["type"] == "response.done")
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["code"] == "upstream_reconnected"
    assert commands(switched, OpenUpstream)[0].mode == "handle"


def test_a_handle_after_a_tool_call_is_stale_so_the_switch_waits_for_the_next_one() -> None:
    core, _, link = connected(tools=[TOOL])
    answered_turn(core, link)
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, frame(toolCall={"functionCalls": [{"id": "c1", "name": "lookup", "args": {}}]},
                                    usageMetadata={"promptTokenCount": 1, "responseTokenCount": 1}))
    out = core.upstream_frame(link, frame(goAway={"timeLeft": "50s"}))
    assert commands(out, OpenUpstream) == [], "the handle predates the call"
    core.client_frame({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                                   "call_id": "c1", "output": "{}"}})
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    core.upstream_frame(link, TURN_DONE)
    assert core.link == link, "still no handle after the output"
    out = core.upstream_frame(link, frame(sessionResumptionUpdate={"newHandle": "h2", "resumable": True}))
    assert commands(out, OpenUpstream)[0].setup["setup"]["sessionResumption"] == {"handle": "h2"}


def test_a_handle_past_its_ttl_reseeds_a_fresh_session() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    clock.t += 7000  # past handle_ttl_s (6900)
    out = core.upstream_frame(link, frame(goAway={}))
    [opening] = commands(out, OpenUpstream)
    assert opening.mode == "fresh"
    assert opening.setup["setup"]["historyConfig"] == {"initialHistoryInClientContent": True}
    assert opening.then[0]["clientContent"]["turnComplete"] is True


def test_a_handle_that_does_not_take_falls_back_to_fresh_then_retries_then_gives_up() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    [handle] = commands(core.upstream_frame(link, frame(goAway={})), OpenUpstream)
    retry = core.upstream_failed(handle.link, UpstreamFailure("closed", code=1008, reason="expired handle"))
    [fresh] = commands(retry, OpenUpstream)
    assert fresh.mode == "fresh" and fresh.link != handle.link, "a refused handle: a fresh session at once"
    for delay in (0.25, 1.0, 2.0):  # resumption.yaml retry_after_s: unreachable is tried again, later
        out = core.upstream_failed(fresh.link, UpstreamFailure("unreachable", "unreachable"))
        assert out.client == [] and commands(out, SetTimer) == [SetTimer(Timer.RECONNECT, clock.t + delay)]
        clock.t += delay
        [fresh] = commands(core.timer_expired(Timer.RECONNECT), OpenUpstream)
        assert fresh.mode == "fresh"
        assert fresh.setup["setup"]["historyConfig"] == {"initialHistoryInClientContent": True}
    out = core.upstream_failed(fresh.link, UpstreamFailure("unreachable", "unreachable"))
    error = out.client[-1]["error"]
    assert error["code"] == "upstream_unavailable" and "tried 4 times" in error["message"]
    assert commands(out, CloseUpstream) == [CloseUpstream(link)]
    assert commands(out, CloseClient)[0].code == 1014
    assert core.observer.seen.count(("recovery", "retried")) == 3  # type: ignore[attr-defined]


# --- recoveries --------------------------------------------------------------------------------------


def test_a_dropped_connection_resumes_once_until_a_new_handle_proves_it() -> None:
    core, _, link = connected()
    answered_turn(core, link)
    [again] = commands(core.upstream_closed(link, 1006, ""), OpenUpstream)
    assert again.mode == "handle" and ("switch", "handle", False, "recovery") in core.observer.seen  # type: ignore[attr-defined]
    core.upstream_opened(again.link, SETUP_COMPLETE)
    assert core.recoveries == 1
    out = core.upstream_closed(again.link, 1006, "")
    assert commands(out, OpenUpstream) == [] and commands(out, CloseClient)[0].code == 1014, "no second recovery"
    assert out.client[-1]["error"]["code"] == "upstream_closed"


def test_a_new_handle_restarts_the_recovery_count() -> None:
    core, _, link = connected()
    answered_turn(core, link)
    [again] = commands(core.upstream_closed(link, 1006, ""), OpenUpstream)
    core.upstream_opened(again.link, SETUP_COMPLETE)
    answered_turn(core, again.link, handle="h2")
    assert core.recoveries == 0
    assert commands(core.upstream_closed(again.link, 1006, ""), OpenUpstream), "recovered again"


@pytest.mark.parametrize(("code", "mode"), [(1011, "fresh"), (1006, "handle"), (1001, "handle")])
def test_which_connection_a_failure_recovers_with(code: int, mode: str) -> None:
    core, _, link = connected()
    answered_turn(core, link)
    assert commands(core.upstream_closed(link, code, ""), OpenUpstream)[0].mode == mode


@pytest.mark.parametrize(("code", "close"), [(1000, 1000), (1007, 1014), (1008, 1014)])
def test_closes_resuming_cannot_fix_end_the_session(code: int, close: int) -> None:
    core, _, link = connected()
    answered_turn(core, link)
    out = core.upstream_closed(link, code, "why")
    assert commands(out, OpenUpstream) == [] and commands(out, CloseClient)[0].code == close


def test_a_close_after_go_away_is_expected_and_recovered_whatever_its_code() -> None:
    core, _, link = connected()
    answered_turn(core, link)
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    core.upstream_frame(link, frame(goAway={"timeLeft": "30s"}))
    out = core.upstream_closed(link, 1000, "")
    assert commands(out, OpenUpstream) and core.recoveries == 0


# --- Gemini's continuation after a tool output -------------------------------------------------------


def _tool_output_sent(core: SessionCore, link: int) -> None:
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, frame(toolCall={"functionCalls": [{"id": "c1", "name": "lookup", "args": {}}]},
                                    usageMetadata={"promptTokenCount": 1, "responseTokenCount": 1}))
    core.client_frame({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                                   "call_id": "c1", "output": "{}"}})


def test_the_continuation_waits_for_the_clients_request_and_opens_with_its_metadata() -> None:
    core, clock, link = connected(tools=[TOOL])
    _tool_output_sent(core, link)
    held = core.upstream_frame(link, TEXT)
    assert held.client == [] and commands(held, SetTimer) == [SetTimer(Timer.CONTINUATION, clock.t + 1.0)]
    assert core.upstream_frame(link, TEXT).commands == (), "one timer for the whole continuation"
    out = core.client_frame({"type": "response.create", "response": {"metadata": {"topic": "weather"}}})
    created = next(m for m in out.client if m["type"] == "response.created")
    assert created["response"]["metadata"] == {"topic": "weather"}
    assert types(out).count("response.output_text.delta") == 2, "both held frames, in order"
    assert SetTimer(Timer.CONTINUATION, None) in out.commands


def test_an_unrequested_continuation_is_served_after_the_wait() -> None:
    core, clock, link = connected(tools=[TOOL])
    _tool_output_sent(core, link)
    core.upstream_frame(link, TEXT)
    clock.t += 1.0
    out = core.timer_expired(Timer.CONTINUATION)
    assert types(out)[0] == "response.created" and "response.output_text.delta" in types(out)


# --- the stall clock ---------------------------------------------------------------------------------


def test_gemini_silent_mid_response_is_a_stall_that_ends_the_session_with_the_watchdog_off() -> None:
    core, clock, link = connected(watchdog=WatchdogSettings(stall_timeout_ms=0))
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)  # the response is under way: upstream_stall_timeout_s (5 s here) applies
    clock.t += 3
    core.upstream_frame(link, TEXT)  # Gemini speaks: the silence starts again
    clock.t += 2
    later = core.timer_expired(Timer.STALL)
    assert later.client == [] and commands(later, SetTimer) == [SetTimer(Timer.STALL, clock.t + 3)]
    clock.t += 3
    out = core.timer_expired(Timer.STALL)
    assert out.client[0]["error"]["code"] == "upstream_timeout" and "5 s" in out.client[0]["error"]["message"]
    assert commands(out, CloseClient)[0].code == 1014


def test_quiet_between_turns_is_not_a_stall() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    clock.t += 60
    out = core.timer_expired(Timer.STALL)
    assert out.client == [] and out.commands == ()


def test_a_turn_requested_after_a_long_quiet_is_not_already_stalled() -> None:
    core, clock, _ = connected()
    clock.t += 60
    out = core.client_frame({"type": "response.create"})
    assert commands(out, SetTimer) == [SetTimer(Timer.STALL, clock.t + 2.0)], "the watchdog's stall_timeout_ms"


# --- the idle timers ---------------------------------------------------------------------------------


def test_a_held_response_done_goes_out_after_idle_after_ms_of_silence() -> None:
    core, clock, link = connected()
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    out = core.upstream_frame(link, b'{"serverContent": {"turnComplete": true}}')
    assert "response.done" not in types(out) and SetTimer(Timer.UPSTREAM_IDLE, clock.t + 0.25) in out.commands
    clock.t += 0.2
    core.upstream_frame(link, frame(sessionResumptionUpdate={"newHandle": "h", "resumable": True}))
    clock.t += 0.05
    rearmed = core.timer_expired(Timer.UPSTREAM_IDLE)
    assert rearmed.client == [] and commands(rearmed, SetTimer) == [SetTimer(Timer.UPSTREAM_IDLE, clock.t + 0.2)]
    clock.t += 0.2
    done = core.timer_expired(Timer.UPSTREAM_IDLE)
    assert types(done) == ["response.done", "rate_limits.updated"] and "usage" not in done.client[0]["response"]


def test_the_user_idle_timer_prompts_gemini() -> None:
    core, clock, link = connected(audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 300}}})
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    out = core.upstream_frame(link, TURN_DONE)
    assert [c.at for c in commands(out, SetTimer) if c.timer is Timer.USER_IDLE] == [pytest.approx(clock.t + 0.3)]
    clock.t += 0.3
    prompted = core.timer_expired(Timer.USER_IDLE)
    assert types(prompted) == ["input_audio_buffer.timeout_triggered"]
    assert prompted.link == link and "clientContent" in prompted.upstream[0]


# --- accounting --------------------------------------------------------------------------------------


def test_an_accounting_stop_tells_the_client_closes_it_and_sends_gemini_nothing_more() -> None:
    core, _, _ = connected()
    out = core.stop("The key's budget is spent.", "insufficient_quota", 4029)
    assert out.client[0]["error"]["code"] == "insufficient_quota"
    assert commands(out, CloseClient) == [CloseClient(4029, "The key's budget is spent.")]
    assert core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO}).upstream == []


# --- the lifecycle table at run time -----------------------------------------------------------------


def _without(mappings: Path, row: str) -> Any:
    path = mappings / "state.yaml"
    text = path.read_text()
    assert row in text
    path.write_text(text.replace(row, ""))
    return load_mappings(mappings)


@pytest.fixture
def unreported(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests break the table on purpose: the suite's own guard must not fail them for it."""
    monkeypatch.setattr(Translator, "_lifecycle_violation", conftest._report_violation)


@pytest.mark.expects_translation_error
def test_a_client_event_outside_the_table_is_an_error_naming_it(mappings: Path, unreported: None,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    broken = _without(mappings, "    - {from: idle, on: [client/response.create], to: requested}\n")
    core, _ = make(broken)
    core.start()
    out = core.client_frame({"type": "response.create", "event_id": "evt_7"})
    error = out.client[-1]["error"]
    assert error["code"] == "translation_error" and error["event_id"] == "evt_7"
    assert "client/response.create moved the response from idle to requested" in error["message"]
    assert ("violation", "idle", ("client/response.create",), "requested") in core.observer.seen  # type: ignore[attr-defined]


def test_a_gemini_frame_outside_the_table_is_logged_and_counted(mappings: Path, unreported: None,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    broken = _without(mappings, "    - {from: requested, on: [upstream/serverContent, upstream/toolCall], "
                                "to: responding}\n")
    core, _ = make(broken)
    core.start()
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    core.client_frame({"type": "response.create"})
    with caplog.at_level(logging.WARNING):
        out = core.upstream_frame(opening.link, TEXT)
    assert "error" not in types(out), "the client did nothing wrong"
    assert ("violation", "requested", ("upstream/serverContent",), "responding") in core.observer.seen  # type: ignore[attr-defined]
    assert any("upstream/serverContent moved the response from requested to responding" in r.getMessage()
               for r in caplog.records)


def test_the_server_counts_violations_in_prometheus() -> None:
    from livegate.accounting.database import open_database
    from livegate.accounting.gate import Accounting, Grant, Principal
    from livegate.accounting.prices import PriceTable
    from livegate.accounting.store import Store

    accounting = Accounting(Store(open_database(None, None)), PriceTable.load(), master_key=None)
    grant = Grant(accounting, Principal("open"), "/v1/realtime", {}, None, True, None)
    grant.lifecycle_violation("idle", ("upstream/toolCall",), "holding_done")
    assert accounting.metrics.registry.get_sample_value(
        "livegate_lifecycle_violations_total", {"route": "/v1/realtime", "input": "upstream/toolCall"}) == 1.0


class Spy:
    """A question's expression that records each time it is asked."""

    def __init__(self, name: str, expression: Any, asked: list[str]) -> None:
        self.name, self.expression, self.asked = name, expression, asked

    def __call__(self, runtime: Any, scope: Any) -> Any:
        self.asked.append(self.name)
        return self.expression(runtime, scope)


def test_questions_are_asked_again_only_when_a_key_they_read_changed() -> None:
    asked: list[str] = []
    policy = MAPPINGS.resumption
    questions = {name: dataclasses.replace(q, expression=Spy(name, q.expression, asked))
                 for name, q in policy.questions.items()}
    spied = dataclasses.replace(policy, questions=questions)
    core, _ = make(dataclasses.replace(MAPPINGS, resumption=spied))
    core.start()
    assert sorted(asked) == sorted(policy.questions), "all asked once at the start"
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    asked.clear()
    core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})
    core.upstream_frame(opening.link, frame(serverContent={"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": AUDIO}}]}}))
    assert asked == [], "audio changes no key a question reads"
    core.client_frame({"type": "response.create"})
    assert "turn_pending" in asked and "session_id" not in asked and "handle" not in asked


def test_the_log_line_counts_what_the_ledger_counts() -> None:
    core, _, link = connected()
    answered_turn(core, link)
    assert json.loads(json.dumps(core.usage_summary()))["total_tokens"] == 5


# --- livegate lint: what the core relies on ------------------------------------------------------------


def _lint(mappings: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from livegate.cli import main

    code = main(["lint", "--mappings", str(mappings)])
    return code, capsys.readouterr().err


def test_renaming_a_key_the_core_reads_fails_lint_where_it_is_read(mappings: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # The rename is carried out everywhere but in the questions: before, switching silently stopped.
    for path in mappings.rglob("*.yaml"):
        if path.name != "resumption.yaml":
            path.write_text(path.read_text().replace("go_away", "going_away_in"))
    code, err = _lint(mappings, capsys)
    line = next(i for i, text in enumerate((mappings / "resumption.yaml").read_text().splitlines(), 1)
                if text.startswith("  switch_wanted:"))
    assert code == 1
    assert f"mappings/resumption.yaml:{line}:" in err and "session.go_away is read but not declared" in err


def test_a_question_the_core_asks_must_be_there(mappings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mappings / "resumption.yaml"
    path.write_text(path.read_text().replace("  turn_pending:", "  turn_in_flight:"))
    code, err = _lint(mappings, capsys)
    assert code == 1
    assert "questions.turn_pending is missing" in err
    assert "questions.turn_in_flight: the session core asks no such question" in err


def test_the_shipped_mappings_lint_clean(capsys: pytest.CaptureFixture[str]) -> None:
    from livegate.paths import MAPPINGS_DIR

    assert _lint(MAPPINGS_DIR, capsys)[0] == 0


# --- Gemini's faults (issue 17 §1) ---------------------------------------------------------------------


def recoveries(core: SessionCore) -> list[str]:
    return [seen[1] for seen in core.observer.seen if seen[0] == "recovery"]  # type: ignore[attr-defined]


def test_a_1011_mid_answer_asks_the_question_again_on_a_fresh_session_without_the_cut_answer() -> None:
    core, _, link = connected()
    answered_turn(core, link)
    core.client_frame(say("And tomorrow?"))
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, frame(serverContent={"outputTranscription": {"text": "Tomor"}}))
    out = core.upstream_closed(link, 1011, "Internal error encountered.")
    done = next(m for m in out.client if m["type"] == "response.done")
    assert (done["response"]["status"], done["response"]["status_details"]["error"]["code"]) == \
        ("failed", "upstream_reconnected")
    [fresh] = commands(out, OpenUpstream)
    assert fresh.mode == "fresh" and fresh.setup["setup"]["historyConfig"] == {"initialHistoryInClientContent": True}
    history, question = (m["clientContent"] for m in fresh.then)
    assert [t["parts"][0]["text"] for t in history["turns"]] == ["hi", "Hello"], "the cut 'Tomor' is left out"
    assert history["turnComplete"] is True, "closes the history without calling the model"
    assert question == {"turns": [{"role": "user", "parts": [{"text": "And tomorrow?"}]}], "turnComplete": True}
    assert recoveries(core) == ["reseeded"]
    opened = core.upstream_opened(fresh.link, SETUP_COMPLETE)
    answer = core.upstream_frame(fresh.link, TEXT)
    assert types(answer)[0] == "response.created", "a new response follows by itself"
    assert opened.client == [] and commands(opened, CloseClient) == []


def _call_made(core: SessionCore, link: int) -> None:
    answered_turn(core, link)
    core.client_frame(say("Look it up"))
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, frame(toolCall={"functionCalls": [{"id": "c1", "name": "lookup", "args": {}}]},
                                    usageMetadata={"promptTokenCount": 1, "responseTokenCount": 1}))


def _output(core: SessionCore) -> Output:
    return core.client_frame({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "c1", "output": '{"found": true}'}})


def test_a_short_go_away_during_a_tool_call_sends_the_output_to_the_connection_that_made_the_call() -> None:
    core, clock, link = connected(tools=[TOOL])
    _call_made(core, link)
    out = core.upstream_frame(link, frame(goAway={"timeLeft": "2s"}))
    assert commands(out, SetTimer) == [SetTimer(Timer.SWITCH_DEADLINE, clock.t + 1.0)], \
        "the deadline comes from timeLeft: half of it, not at once"
    clock.t += 1.0
    held = core.timer_expired(Timer.SWITCH_DEADLINE)
    assert commands(held, OpenUpstream) == [] and core.link == link, "no move while the call waits"
    assert recoveries(core) == ["tool_output_held"]
    sent = _output(core)
    assert sent.link == link and "toolResponse" in sent.upstream[0], "to the session that made the call"
    core.client_frame({"type": "response.create"})
    assert commands(core.upstream_frame(link, TEXT), OpenUpstream) == [], "the old handle would lose the call"
    core.upstream_frame(link, TURN_DONE)
    out = core.upstream_frame(link, frame(sessionResumptionUpdate={"newHandle": "h2", "resumable": True}))
    [moved] = commands(out, OpenUpstream)
    assert moved.mode == "handle" and moved.setup["setup"]["sessionResumption"] == {"handle": "h2"}


def test_a_connection_gone_before_the_tool_output_reseeds_the_call_and_its_output_asks_for_the_answer() -> None:
    core, clock, link = connected(tools=[TOOL])
    _call_made(core, link)
    core.upstream_frame(link, frame(goAway={"timeLeft": "2s"}))
    clock.t += 1.0
    core.timer_expired(Timer.SWITCH_DEADLINE)
    out = core.upstream_closed(link, 1000, "The connection reached its maximum lifetime.")
    [fresh] = commands(out, OpenUpstream)
    assert fresh.mode == "fresh", "the handle predates the call"
    [history] = (m["clientContent"] for m in fresh.then)
    assert history["turns"][-1] == {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "lookup",
                                                                                 "args": {}}}]}
    core.upstream_opened(fresh.link, SETUP_COMPLETE)
    sent = _output(core)
    assert sent.link == fresh.link
    assert sent.upstream == [{"clientContent": {"turns": [{"role": "user", "parts": [{"functionResponse": {
        "id": "c1", "name": "lookup", "response": {"output": {"found": True}}}}]}], "turnComplete": True}}], \
        "not a toolResponse the fresh session never asked for: history, and the answer is asked for"


def test_a_reconfiguration_with_no_handle_is_applied_through_a_fresh_session_within_handle_wait_s() -> None:
    core, clock, link = connected()
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    core.upstream_frame(link, TURN_DONE)  # Gemini sends no handle
    out = core.client_frame({"type": "session.update", "session": {"type": "realtime",
                                                                   "audio": {"output": {"voice": "coral"}}}})
    assert commands(out, SetTimer) == [SetTimer(Timer.SWITCH_DEADLINE, clock.t + 2.0)], "bounded"
    clock.t += 2.0
    moved = core.timer_expired(Timer.SWITCH_DEADLINE)
    [fresh] = commands(moved, OpenUpstream)
    assert fresh.mode == "fresh" and fresh.setup["setup"]["generationConfig"]["speechConfig"] == {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Aoede"}}}
    assert [t["parts"][0]["text"] for t in fresh.then[0]["clientContent"]["turns"]] == ["hi", "Hello"]
    assert recoveries(core) == ["reconfigured_fresh"]


def test_a_handle_arriving_within_handle_wait_s_resumes_instead() -> None:
    core, _, link = connected()
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    core.upstream_frame(link, TURN_DONE)
    core.client_frame({"type": "session.update", "session": {"type": "realtime",
                                                             "audio": {"output": {"voice": "coral"}}}})
    out = core.upstream_frame(link, frame(sessionResumptionUpdate={"newHandle": "h9", "resumable": True}))
    assert commands(out, OpenUpstream)[0].setup["setup"]["sessionResumption"] == {"handle": "h9"}
    assert SetTimer(Timer.SWITCH_DEADLINE, None) in out.commands


# --- the watchdog --------------------------------------------------------------------------------------


def test_a_stall_is_asked_again_then_reseeded_then_given_up_and_the_session_goes_on() -> None:
    core, clock, link = connected()
    out = core.client_frame({"type": "response.create"})
    assert commands(out, SetTimer) == [SetTimer(Timer.STALL, clock.t + 2.0)]
    clock.t += 2.0
    asked = core.timer_expired(Timer.STALL)
    assert asked.client == [] and asked.link == link and asked.upstream == [{"clientContent": {"turnComplete": True}}]
    assert commands(asked, SetTimer) == [SetTimer(Timer.STALL, clock.t + 2.0)]
    clock.t += 2.0
    reseeded = core.timer_expired(Timer.STALL)
    [fresh] = commands(reseeded, OpenUpstream)
    assert reseeded.client == [] and fresh.mode == "fresh"
    assert fresh.then[-1] == {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}],
                                                "turnComplete": True}}, "the question, asked again"
    clock.t += 0.5
    opened = core.upstream_opened(fresh.link, SETUP_COMPLETE)
    assert commands(opened, SetTimer) == [SetTimer(Timer.STALL, clock.t + 2.0)], "timed from the new connection"
    clock.t += 2.0
    gave_up = core.timer_expired(Timer.STALL)
    assert types(gave_up) == ["error", "response.created", "response.done", "rate_limits.updated"]
    assert gave_up.client[0]["error"]["code"] == "upstream_stalled" and commands(gave_up, CloseClient) == []
    assert recoveries(core) == ["stall_reask", "stall_reseed", "stall_gave_up"]
    again = core.client_frame({"type": "response.create"})
    assert again.link == fresh.link
    clock.t += 2.0
    assert core.timer_expired(Timer.STALL).upstream == [{"clientContent": {"turnComplete": True}}]
    assert recoveries(core)[-1] == "stall_reask", "a new question starts the ladder again"


def test_output_before_the_stall_timeout_is_no_stall() -> None:
    core, clock, link = connected()
    core.client_frame({"type": "response.create"})
    clock.t += 1.5
    core.upstream_frame(link, TEXT)
    clock.t += 0.5
    out = core.timer_expired(Timer.STALL)
    assert out.upstream == [] and out.client == [] and recoveries(core) == []


def test_the_stall_watch_off_leaves_the_old_stall_close() -> None:
    core, clock, _ = connected(watchdog=WatchdogSettings(stall_timeout_ms=0))
    out = core.client_frame({"type": "response.create"})
    assert commands(out, SetTimer) == [SetTimer(Timer.STALL, clock.t + 5.0)]
    clock.t += 5.0
    assert core.timer_expired(Timer.STALL).client[0]["error"]["code"] == "upstream_timeout"


def test_a_stall_in_the_middle_of_an_answer_moves_the_question_to_a_fresh_session() -> None:
    core, clock, link = connected()
    core.client_frame({"type": "response.create"})
    core.upstream_frame(link, TEXT)
    clock.t += 5.0  # upstream_stall_timeout_s (5 s here) in the middle of a response
    out = core.timer_expired(Timer.STALL)
    done = next(m for m in out.client if m["type"] == "response.done")
    assert done["response"]["status_details"]["error"]["code"] == "upstream_reconnected"
    [fresh] = commands(out, OpenUpstream)
    assert fresh.mode == "fresh" and commands(out, CloseClient) == []
    assert recoveries(core) == ["stall_reseed"]


def _empty(core: SessionCore, link: int, reason: str | None = None) -> Output:
    end: dict[str, Any] = {"turnComplete": True, **({"turnCompleteReason": reason} if reason else {})}
    return core.upstream_frame(link, frame(serverContent=end))


def test_empty_turns_are_asked_again_until_the_run_reseeds() -> None:
    core, _, link = connected(watchdog=WatchdogSettings(empty_turns_before_reseed=3))
    core.client_frame({"type": "response.create"})
    for reason in (None, "RESPONSE_REJECTED"):
        out = _empty(core, link, reason)
        assert out.client == [] and out.upstream == [{"clientContent": {"turnComplete": True}}]
    out = _empty(core, link, "RESPONSE_REJECTED")
    [fresh] = commands(out, OpenUpstream)
    assert out.client == [] and fresh.mode == "fresh"
    assert recoveries(core) == ["empty_turn_reask", "empty_turn_reask", "empty_turn_reseed"]
    core.upstream_opened(fresh.link, SETUP_COMPLETE)
    answer = core.upstream_frame(fresh.link, TEXT)
    assert types(answer)[0] == "response.created"
    assert types(core.upstream_frame(fresh.link, TURN_DONE))[-2:] == ["response.done", "rate_limits.updated"]


def test_an_empty_turn_answered_after_one_reask_is_one_response() -> None:
    core, _, link = connected()
    core.client_frame({"type": "response.create"})
    _empty(core, link)
    core.upstream_frame(link, TEXT)
    out = core.upstream_frame(link, TURN_DONE)
    assert types(out)[-2:] == ["response.done", "rate_limits.updated"]
    assert recoveries(core) == ["empty_turn_reask"]


def test_empty_turns_off_report_them_as_they_are() -> None:
    core, _, link = connected(watchdog=WatchdogSettings(empty_turns_before_reseed=0))
    core.client_frame({"type": "response.create"})
    out = _empty(core, link)
    assert types(out) == ["response.created"] and commands(out, OpenUpstream) == []
    assert types(core.timer_expired(Timer.UPSTREAM_IDLE)) == [], "not yet due"
    assert recoveries(core) == []


SILENCE = base64.b64encode(bytes(48_000)).decode()  # 1 s at 24 kHz of digital zero
SPEECH = base64.b64encode(b"\x10\x27" * 24_000).decode()  # 1 s at a level of 10,000


def _audio(data: str) -> bytes:
    return frame(serverContent={"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                                       "data": data}}]}})


def test_a_near_silent_answer_is_replaced_by_one_asked_again_on_a_fresh_session() -> None:
    core, _, link = connected(output_modalities=["audio"])
    core.client_frame({"type": "response.create"})
    out = core.upstream_frame(link, _audio(SILENCE))
    done = next(m for m in out.client if m["type"] == "response.done")
    assert done["response"]["status_details"]["error"]["code"] == "silent_audio"
    [fresh] = commands(out, OpenUpstream)
    assert fresh.mode == "fresh" and fresh.then[-1]["clientContent"]["turns"] == [
        {"role": "user", "parts": [{"text": "hi"}]}]
    core.upstream_opened(fresh.link, SETUP_COMPLETE)
    healthy = core.upstream_frame(fresh.link, _audio(SPEECH))
    assert types(healthy)[0] == "response.created" and recoveries(core) == ["silent_audio_reseed"]


def test_a_near_silent_answer_again_is_delivered_with_one_error() -> None:
    core, _, link = connected(output_modalities=["audio"])
    core.client_frame({"type": "response.create"})
    [fresh] = commands(core.upstream_frame(link, _audio(SILENCE)), OpenUpstream)
    core.upstream_opened(fresh.link, SETUP_COMPLETE)
    out = core.upstream_frame(fresh.link, _audio(SILENCE))
    assert [m["error"]["code"] for m in out.client if m["type"] == "error"] == ["silent_audio"]
    assert commands(out, OpenUpstream) == [] and "response.output_audio.delta" in types(out)
    assert types(core.upstream_frame(fresh.link, TURN_DONE))[-2:] == ["response.done", "rate_limits.updated"]
    assert recoveries(core) == ["silent_audio_reseed", "silent_audio_gave_up"]


def test_a_loud_answer_is_left_alone() -> None:
    core, _, link = connected(output_modalities=["audio"])
    core.client_frame({"type": "response.create"})
    out = core.upstream_frame(link, _audio(SPEECH))
    assert commands(out, OpenUpstream) == [] and recoveries(core) == []


# --- retries back off (issue 18 item 6) ----------------------------------------------------------------


def test_a_network_blip_costs_the_session_nothing_but_the_wait() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    [first] = commands(core.upstream_closed(link, 1006, ""), OpenUpstream)
    out = core.upstream_failed(first.link, UpstreamFailure("unreachable", "connection refused"))
    assert out.client == [] and commands(out, SetTimer) == [SetTimer(Timer.RECONNECT, clock.t + 0.25)]
    queued = core.client_frame(say("still there?"))
    assert queued.upstream == [] and queued.link is None, "input is held meanwhile"
    clock.t += 0.25
    [second] = commands(core.timer_expired(Timer.RECONNECT), OpenUpstream)
    assert second.mode == "handle" and second.setup["setup"]["sessionResumption"] == {"handle": "h1"}
    opened = core.upstream_opened(second.link, SETUP_COMPLETE)
    assert opened.link == second.link and "clientContent" in opened.upstream[0]
    assert recoveries(core) == ["resumed", "retried"]


def test_a_fresh_session_refused_with_1011_is_tried_again_later() -> None:
    core, clock, link = connected()
    answered_turn(core, link)
    [fresh] = commands(core.upstream_closed(link, 1011, ""), OpenUpstream)
    out = core.upstream_failed(fresh.link, UpstreamFailure("closed", code=1011, reason="Internal error"))
    assert commands(out, SetTimer) == [SetTimer(Timer.RECONNECT, clock.t + 0.25)] and out.client == []

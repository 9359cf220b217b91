"""Budget reservations in the session core, sans-I/O: a session under a budget sends Gemini nothing that may start
a response before its pump answered `Reserve`; a reservation is spent by the answer it covers and settled once that
answer's usage came; a refused one drops the content and tells the client (lifecycle/response_refused.yaml), and the
session goes on."""

from __future__ import annotations

from typing import Any

from livegate.translation.commands import OpenUpstream, ReservationRefused, Reserve, SetTimer, Settle, Timer
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Translator
from tests.test_session_core import (
    AUDIO,
    MAPPINGS,
    SETUP_COMPLETE,
    TEXT,
    TURN_DONE,
    WALL,
    Clock,
    Recorder,
    commands,
    say,
    types,
)

BUDGET = ReservationRefused("This response was not started: the budget of the key has $0.000100 left.",
                            "budget_exceeded")


def make(reserve: bool = True, **session: Any) -> tuple[SessionCore, Clock]:
    clock = Clock()
    translator = Translator(MAPPINGS, deterministic=True, clock=lambda: WALL + clock.t, context={
        "model": "gpt-realtime", "setup_model": "models/gemini-3.8-live", "backend": "aistudio",
        "capabilities": MAPPINGS.models.capabilities("gemini-3.8-live", "aistudio")})
    core = SessionCore(translator, MAPPINGS.resumption, stall_after_s=5.0, clock=clock, observer=Recorder(),
                       reserve=reserve)
    core.start()
    core.client_frame({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                                                             **session}})
    return core, clock


def test_what_may_start_a_response_waits_for_its_reservation_which_that_response_spends() -> None:
    core, _ = make(max_output_tokens=64)
    out = core.client_frame(say("hi"))
    [opening] = commands(out, OpenUpstream)
    assert [next(iter(m)) for m in opening.then] == ["clientContent"], "an item starts nothing: it goes at once"
    assert commands(out, Reserve) == []
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    asked = core.client_frame({"type": "response.create"})
    assert asked.upstream == [] and commands(asked, Reserve) == [Reserve(1, 64)], "turnComplete waits"
    granted = core.reservation_answered(1, None)
    assert granted.upstream == [{"clientContent": {"turnComplete": True}}] and granted.link == opening.link
    core.upstream_frame(opening.link, TEXT)
    done = core.upstream_frame(opening.link, TURN_DONE)
    assert "response.done" in types(done) and commands(done, Settle) == [Settle((1,))]
    assert core.client_frame(say("again")).upstream != []
    nxt = core.client_frame({"type": "response.create"})
    assert nxt.upstream == [] and commands(nxt, Reserve) == [Reserve(2, 64)], "the next response needs its own"


def test_a_refused_reservation_drops_the_content_tells_the_client_and_the_session_goes_on() -> None:
    core, clock = make()
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    core.client_frame({"type": "response.create"})
    core.reservation_answered(1, None)
    core.upstream_frame(opening.link, TEXT)
    assert commands(core.upstream_frame(opening.link, TURN_DONE), Settle) == [Settle((1,))]
    core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})  # asks reservation 2 (no cap: None)
    out = core.client_frame({"type": "response.create", "event_id": "evt_ask"})
    assert out.upstream == [] and commands(out, Reserve) == [], "one question at a time: queued behind it"
    refused = core.reservation_answered(2, BUDGET)
    assert refused.upstream == []
    [error] = refused.client
    assert error["type"] == "error" and error["error"]["code"] == "budget_exceeded"
    assert error["error"]["event_id"] == "evt_ask", "the latest client event whose content was held"
    assert core.translator.lifecycle_state == "idle", "no answer is owed for what was not sent"
    assert not any(isinstance(c, SetTimer) and c.timer is Timer.STALL and c.at for c in refused.commands)
    # within the quiet period a new request is refused again at once, without asking
    again = core.client_frame({"type": "response.create", "event_id": "evt_again"})
    assert commands(again, Reserve) == [] and again.upstream == []
    assert [e["error"]["event_id"] for e in again.client if e["type"] == "error"] == ["evt_again"]
    clock.t += 1.5
    core.client_frame(say("later"))
    later = core.client_frame({"type": "response.create"})
    assert commands(later, Reserve) == [Reserve(3, None)], "after the quiet period it asks again"
    assert core.reservation_answered(3, None).upstream == [{"clientContent": {"turnComplete": True}}]


def test_streamed_audio_waits_in_order_and_a_response_under_way_needs_one_new_reservation() -> None:
    core, _ = make(audio={"input": {"turn_detection": {"type": "server_vad"}}})
    first = core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})
    [opening] = commands(first, OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    queued = core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})
    assert queued.upstream == [] and commands(queued, Reserve) == []
    granted = core.reservation_answered(1, None)
    assert [m["realtimeInput"]["audio"]["data"] for m in granted.upstream] == [AUDIO, AUDIO]
    assert core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO}).upstream != []
    core.upstream_frame(opening.link, TEXT)  # Gemini answers: reservation 1 is spent by that response
    during = core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO})
    assert during.upstream == [] and commands(during, Reserve) == [Reserve(2, None)]
    assert commands(core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO}), Reserve) == []
    assert len(core.reservation_answered(2, None).upstream) == 2
    assert commands(core.client_frame({"type": "input_audio_buffer.append", "audio": AUDIO}), Reserve) == [], \
        "reservation 2 covers the next response, not each chunk"
    assert commands(core.upstream_frame(opening.link, TURN_DONE), Settle) == [Settle((1,))]


def test_a_session_without_budget_never_asks() -> None:
    core, _ = make(reserve=False)
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    out = core.client_frame({"type": "response.create"})
    assert commands(out, Reserve) == [] and out.upstream == [{"clientContent": {"turnComplete": True}}]


# --- content queued while a connection opens, and the watchdog's re-ask, are not reserved twice --------------------
# The first connection opens in the background: a client's item and response.create come before Gemini's
# setupComplete. What waited in the connection's queue had passed the reservation gate already; gating it again
# when the queue drained asked a second reservation while the answer was owed (turn_pending already up), which
# nothing spent: it stayed held, unsettled, and the next response went without asking (a fleet under a budget
# saw every session hold one, and a fail-closed instance answered a response during a counter outage).


def test_content_reserved_while_the_first_connection_opens_is_sent_once_under_that_reservation() -> None:
    core, _ = make(max_output_tokens=64)
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    asked = core.client_frame({"type": "response.create", "event_id": "evt_1"})
    assert commands(asked, Reserve) == [Reserve(1, 64)]
    granted = core.reservation_answered(1, None)
    assert granted.upstream == [] and granted.link is None, "queued for the connection still opening"
    opened = core.upstream_opened(opening.link, SETUP_COMPLETE)
    assert commands(opened, Reserve) == [], "reserved already: not asked again"
    assert opened.upstream == [{"clientContent": {"turnComplete": True}}] and opened.link == opening.link
    core.upstream_frame(opening.link, TEXT)
    assert commands(core.upstream_frame(opening.link, TURN_DONE), Settle) == [Settle((1,))]
    core.client_frame(say("again"))
    nxt = core.client_frame({"type": "response.create"})
    assert nxt.upstream == [] and commands(nxt, Reserve) == [Reserve(2, 64)], "no reservation is left held"


def test_the_first_connection_opening_before_the_grant_sends_the_queue_first_and_the_held_content_after() -> None:
    core, _ = make(max_output_tokens=64)
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)  # sent with the setup
    assert core.client_frame(say("and more")).upstream == [], "queued for the connection opening"
    core.client_frame({"type": "response.create"})
    opened = core.upstream_opened(opening.link, SETUP_COMPLETE)
    [item] = opened.upstream
    assert item["clientContent"]["turns"][0]["parts"] == [{"text": "and more"}], \
        "the item queued before the response.create goes now, not behind the content awaiting the grant"
    assert commands(opened, Reserve) == []
    granted = core.reservation_answered(1, None)
    assert granted.upstream == [{"clientContent": {"turnComplete": True}}] and granted.link == opening.link
    core.upstream_frame(opening.link, TEXT)
    assert commands(core.upstream_frame(opening.link, TURN_DONE), Settle) == [Settle((1,))]
    core.client_frame(say("again"))
    assert commands(core.client_frame({"type": "response.create"}), Reserve) == [Reserve(2, 64)]


def test_the_watchdogs_reask_goes_under_the_reservation_the_owed_answer_spent() -> None:
    core, clock = make(max_output_tokens=64)
    [opening] = commands(core.client_frame(say("hi")), OpenUpstream)
    core.upstream_opened(opening.link, SETUP_COMPLETE)
    core.client_frame({"type": "response.create"})
    core.reservation_answered(1, None)
    clock.t += core.watchdog.stall_timeout_s + 0.1
    reask = core.timer_expired(Timer.STALL)
    assert reask.upstream == [{"clientContent": {"turnComplete": True}}] and reask.link == opening.link, \
        "Gemini is asked again at once"
    assert commands(reask, Reserve) == [], "the owed answer's reservation covers asking for it again"
    core.upstream_frame(opening.link, TEXT)
    assert commands(core.upstream_frame(opening.link, TURN_DONE), Settle) == [Settle((1,))]
    core.client_frame(say("again"))
    assert commands(core.client_frame({"type": "response.create"}), Reserve) == [Reserve(2, 64)]

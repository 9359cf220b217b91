"""The rule plan (mapping/plan.py) never changes what a session does: random sessions run with plans (their
generated functions, translation/rule_code.py) and interpreted with every condition evaluated give the same
events, messages and session state; and in a streaming session the plan leaves an audio frame only the rules
it needs."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from livegate.mapping import load_mappings
from livegate.mapping.expressions import Expression
from livegate.mapping.plan import Planner, session_reads
from livegate.translation.translator import Translator
from tests.test_rule_index import CLIENT, UPSTREAM, replay

MAPPINGS = load_mappings()
MORE_CLIENT = [  # telephony audio, manual turns, the beta dialect, transcription settings
    {"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}},
    {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": {"type": "server_vad"}}}}},
    {"type": "session.update", "session": {"modalities": ["text", "audio"], "voice": "alloy"}},
    {"type": "input_audio_buffer.append", "audio": "AAAA"},
    {"type": "input_audio_buffer.clear"},
    {"type": "output_audio_buffer.clear"},
]
APPEND = {"type": "input_audio_buffer.append", "audio": "AAAA" * 20}
AUDIO_FRAME = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
    "mimeType": "audio/pcm;rate=24000", "data": "AAAAAAAA"}}]}}}


def _session(seed: int) -> list[Any]:
    """Random inputs, with runs of audio both ways (where a plan is reused) between the other events."""
    rng = random.Random(seed)
    clients = CLIENT + MORE_CLIENT
    inputs: list[Any] = [("client", rng.choice(clients[:3] + MORE_CLIENT[:3])), ("client", CLIENT[3])]
    for _ in range(40):
        roll = rng.random()
        if roll < 0.3:
            inputs.append(("client", rng.choice(clients)))
        elif roll < 0.45:
            inputs.extend([("client", CLIENT[3]), ("upstream", AUDIO_FRAME)] * rng.randrange(1, 4))
        elif roll < 0.95:
            inputs.append(("upstream", rng.choice(UPSTREAM)))
        else:
            inputs.append(("idle", None))
    return inputs


def _run(inputs: list[Any]) -> list[Any]:
    translator = Translator(MAPPINGS, deterministic=True, clock=lambda: 1_700_000_000.0, sniff_dialect=True,
                            context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    outputs = replay(translator, inputs)
    # A codec's stream state (a transform's, in a G.711 session) is compared by its kind: two runs hold two objects.
    session = {key: value if isinstance(value, _JSON) else type(value).__name__
               for key, value in translator.session.items()}
    return [(out.client, out.upstream, out.log) for out in outputs] + [session]


_JSON = (dict, list, str, int, float, bool, type(None))


def _interpreted(self: Planner, rules: tuple[Any, ...], scope: dict[str, Any], config_version: int) -> None:
    """No plan, ever: every input's rules interpreted, every condition evaluated (Translator._interpret)."""
    return None


def test_planned_rules_give_the_same_session_as_every_condition_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = [_session(seed) for seed in range(80)]
    planned = [_run(inputs) for inputs in sessions]
    monkeypatch.setattr(Planner, "plan", _interpreted)
    interpreted = [_run(inputs) for inputs in sessions]
    for seed, (a, b) in enumerate(zip(planned, interpreted, strict=True)):
        assert a == b, f"seed {seed}"


def _streaming() -> Translator:
    translator = Translator(MAPPINGS, context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    translator.start()
    translator.from_client(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
    assert translator.from_client(json.dumps(APPEND)).upstream[0].keys() == {"setup"}
    translator.from_upstream(orjson.dumps({"setupComplete": {}}))
    translator.from_upstream(orjson.dumps(AUDIO_FRAME))  # the response and its audio item are open now
    return translator


def _steps(translator: Translator, rules: Any, event: dict[str, Any]) -> list[str]:
    scope = {"event": event, "session": translator.session, "config": translator.config,
             "tables": MAPPINGS.tables}
    plan = translator._planner.make(rules.index.rules_for(event), scope, translator._config_version)
    return [step.rule.name for step in plan.steps]


def test_while_audio_streams_each_frame_runs_only_the_rules_it_needs() -> None:
    translator = _streaming()
    delta = translator.from_upstream(orjson.dumps(AUDIO_FRAME))
    assert [m["type"] for m in delta.client] == ["response.output_audio.delta"]
    assert _steps(translator, MAPPINGS.upstream["serverContent"], AUDIO_FRAME) == ["audio delta"]
    assert _steps(translator, MAPPINGS.client["input_audio_buffer.append"], APPEND) == [
        "audio that is not base64", "PCM16 audio that ends in half a sample", "forward the audio"]


def test_a_plan_is_remade_when_the_session_changes() -> None:
    translator = _streaming()
    rules = MAPPINGS.upstream["serverContent"]
    translator.from_upstream(orjson.dumps({"serverContent": {"turnComplete": True}}))  # the response ends
    steps = _steps(translator, rules, AUDIO_FRAME)
    # With no response open, the audio delta rule is decided out; once "open a response" changed the session
    # the plan no longer holds, and the rest of the file runs undecided: the delta is sent.
    assert "open a response" in steps and "audio delta" not in steps
    after = translator.from_upstream(orjson.dumps(AUDIO_FRAME))
    types = [m["type"] for m in after.client]
    assert "response.created" in types and types[-1] == "response.output_audio.delta"


def test_a_state_gets_its_plan_when_an_input_meets_it_again() -> None:
    translator = _streaming()
    rules = MAPPINGS.upstream["serverContent"].index.rules_for(AUDIO_FRAME)
    translator.from_upstream(orjson.dumps({"serverContent": {"turnComplete": True}}))  # a new session state
    scope = {"event": AUDIO_FRAME, "session": translator.session, "config": translator.config,
             "tables": MAPPINGS.tables}
    planner, version = translator._planner, translator._config_version
    assert planner.plan(rules, scope, version) is None, "met once: its rules run undecided, no plan made"
    plan = planner.plan(rules, scope, version)
    assert plan is not None and plan.session is translator.session
    assert planner.plan(rules, scope, version) is plan, "the plan holds for as long as the state does"


def _reads(expression: str) -> Any:
    return session_reads(Expression(expression).ast)


def test_a_condition_reads_the_session_through_the_paths_it_names() -> None:
    assert _reads("session.item.kind == 'audio'") == (("item", "kind"),)
    assert _reads("session.items[0].id") == (("items",),), "the path ends where it stops being plain"
    assert _reads("length(session.items[?kind == session])") == (("items",),), "inside a filter: the element's"
    assert _reads("config.watchdog.silent_audio_ms && tables.x") == ()
    assert _reads("session") is None and _reads("keys(session)") is None, "the whole session"
    assert _reads("merge(session, `{}`).item") is None


def test_a_plan_serves_every_state_with_the_same_values_where_its_decisions_read() -> None:
    translator = _streaming()
    rules = MAPPINGS.upstream["serverContent"].index.rules_for(AUDIO_FRAME)
    planner, version = translator._planner, translator._config_version

    def plan_now() -> Any:
        return planner.plan(rules, {"event": AUDIO_FRAME, "session": translator.session,
                                    "config": translator.config, "tables": MAPPINGS.tables}, version)

    for _ in range(3):  # a turn of audio: the answer opens, is judged by the watchdog, streams
        translator.from_upstream(orjson.dumps(AUDIO_FRAME))
    streaming = plan_now()
    assert streaming is not None and [step.rule.name for step in streaming.steps] == ["audio delta"]
    assert (("item", "kind"), "audio", False) in streaming.reads
    assert (("response",), True, True) in streaming.reads, "an open response: its truth, not which one"
    translator.from_upstream(orjson.dumps({"serverContent": {"turnComplete": True}}))
    for _ in range(3):  # the next answer: new response and item objects, new ids
        translator.from_upstream(orjson.dumps(AUDIO_FRAME))
    assert plan_now() is streaming, "the next turn's stream reuses the plan, made for another session object"
    translator.session = {**translator.session, "output_codec": "pcmu"}
    assert plan_now() is None, "a value its decisions read changed: no plan until the state is met again"

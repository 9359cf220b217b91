"""Snapshot tests per mapping file, from the cases in fixtures/.

`fixtures/<folder>/<mapping name>/<case>.yaml` is a case for `mappings/<folder>/<mapping name>.yaml`
(`fixtures/dialects/beta/` for the beta dialect). A case is a conversation, fed to a deterministic
Translator one step at a time:

    description: what the case shows
    dialect: ga | beta                    (default ga)
    backend: aistudio | vertex            (default aistudio)
    model: gemini-3.8-live                (default DEFAULT_MODEL; selects the row of mappings/models.yaml)
    model_info: {column: value}           (optional: capability overrides, as a config entry's model_info)
    litellm_compat: false                 (the config's LiteLLM compatibility setting for the session)
    transport: webrtc                     (optional: a WebRTC call, where livegate plays the audio)
    sniff_dialect: false                  (no dialect header: the first session.update's shape decides)
    gemini_features: {name: value}        (optional: the config entry's gemini_features defaults)
    watchdog: {empty_turns: 3, ...}       (optional: config.watchdog, as the session core gives it; absent: off)
    voices: {openai: gemini}              (optional: the config entry's voice table overrides)
    show_connect: false                   (include the session.created step in the snapshot)
    snapshot: true                        (false: the expectations say it all; no whole-conversation snapshot)
    steps:
      - client: {type: ...}               a client event (also `client_raw: "text"` for a raw frame)
        expect_client: [...]              optional: the client events this step must produce, in order;
                                          each an event type, or {type: ..., <path>: <value>, ...} where
                                          a path is dotted (`response.usage.total_tokens`, `item.content.0.text`:
                                          a number indexes a list) and null means absent
        expect_upstream: [...]            optional: the Gemini messages, each a top-level field name, a path
                                          it must have (`realtimeInput.audio`) or {<path>: <value>, ...}
        expect_session: {<path>: <value>} optional: the session state after the step (null: absent)
        expect_usage: {<path>: <value>}   optional: the session's usage so far, as the usage ledger counts it
                                          (input_tokens, output_tokens, total_tokens, input_audio...)
        expect_log: [text, ...]           optional: the notes the rules log at this step (each contains the text)
      - upstream: {serverContent: ...}    a Gemini frame (`upstream_raw:` text frame, `upstream_binary:`
                                          the same as a binary frame)
      - idle: true                        Gemini stayed quiet past idle_after_ms
      - user_idle: true                   turn_detection.idle_timeout_ms passed (the pump's timer)
      - upstream_closed: {code: 1011, reason: "..."}
      - upstream_resume: {mode: handle | fresh, cut: false, why: ...}   livegate moves to a new Gemini connection
      - watchdog: {action: reask | give_up, why: stall | empty_turn | silent_audio}   the watchdog acts
      - mcp_listed: {request_id, server_label, ok, tools | error}   an MCP server answered a tool listing
      - mcp_called: {request_id, server_label, ok, output | error}  an MCP call livegate ran finished
        expect_mcp: [{<field>: <value>}]  optional: the MCP requests this step commands (request_id, action,
                                          server.server_url, tool, arguments...)
      - side_response: {request_id, delta | done, finish_reason, usage_metadata | error}   an out-of-band
        response's generateContent call streamed
        expect_generate: [{<field>: <value>}]  optional: the side calls this step commands (request_id, model,
                                               body.contents...)
      - client_checked: {event: {...}, decision: {verdict: block, name: ..., refusal: ...}}   a client event
                                          held for the guardrails, translated with their decision
      - guardrail_blocked: {stage: pre_call | during_call, name: ..., refusal: ...}   a guardrail blocked
                                          what a Gemini frame brought (lifecycle/guardrail_blocked)

Every output is checked against the SDK types (tests/conftest.py). Cases whose behaviour is best read
as a whole conversation are snapshotted (tests/__snapshots__/test_mappings/); the others say what they
mean with expectations. A mapping file without a case fails the suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from syrupy.extensions.json import JSONSnapshotExtension

from livegate.mapping import load_mappings
from livegate.translation.commands import GenerateRequest, McpRequest
from livegate.translation.translator import Output, Translator

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAPPINGS = load_mappings()
CLOCK = 1_767_225_600  # 2026-01-01T00:00:00Z
# The Gemini model a case runs against (`model:` in a case): by default a legacy model that produces TEXT
# natively, so cases about the text path see it without emulation. `model_info:` overrides its row.
DEFAULT_MODEL = "gemini-2.0-flash-live-001"


def _covered_files() -> set[str]:
    files = {f"{folder}/{name}" for folder in ("client", "upstream", "lifecycle")
             for name in getattr(MAPPINGS, folder)}
    return files | {f"dialects/{name}" for name in MAPPINGS.dialects}


def _cases() -> list[Path]:
    return sorted(FIXTURES.glob("*/*/*.yaml"))


def _target(case: Path) -> str:
    return f"{case.parent.parent.name}/{case.parent.name}"


def _feed(translator: Translator, step: dict[str, Any]) -> Output:
    if "client" in step:
        return translator.from_client(step["client"])
    if "client_raw" in step:
        return translator.from_client(step["client_raw"])
    if "upstream" in step:
        return translator.from_upstream(step["upstream"])
    if "upstream_raw" in step:
        return translator.from_upstream(step["upstream_raw"])
    if "upstream_binary" in step:
        return translator.from_upstream(step["upstream_binary"].encode())
    if "idle" in step:
        return translator.upstream_idle()
    if "user_idle" in step:
        return translator.user_idle()
    if "upstream_resume" in step:
        resume = step["upstream_resume"]
        return translator.upstream_resume(resume["mode"], cut=resume.get("cut", False), why=resume.get("why", ""))
    if "watchdog" in step:
        return translator.watchdog(step["watchdog"]["action"], step["watchdog"]["why"])
    if "mcp_listed" in step:
        return translator.mcp_result("list", step["mcp_listed"])
    if "mcp_called" in step:
        return translator.mcp_result("call", step["mcp_called"])
    if "side_response" in step:
        return translator.side_result(dict(step["side_response"]))
    if "upstream_closed" in step:
        return translator.upstream_closed(step["upstream_closed"]["code"], step["upstream_closed"].get("reason", ""))
    if "client_checked" in step:
        return translator.checked_client_event(step["client_checked"]["event"], step["client_checked"]["decision"])
    if "guardrail_blocked" in step:
        return translator.guardrail_blocked({"verdict": "block", **step["guardrail_blocked"]})
    if "response_refused" in step:
        refused = step["response_refused"]
        return translator.response_refused(refused["message"], refused["code"],
                                           refused.get("type", "invalid_request_error"), refused.get("event_id"))
    raise AssertionError(f"unknown step {sorted(step)}")


_MISSING = object()


def at(value: Any, path: str) -> Any:
    """The value at a dotted path (`a.b.0.c`: a number indexes a list), or _MISSING."""
    for part in path.split("."):
        if part.lstrip("-").isdigit():
            index = int(part)
            if not isinstance(value, list) or not -len(value) <= index < len(value):
                return _MISSING
            value = value[index]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def check_fields(what: str, actual: Any, expected: dict[str, Any]) -> None:
    for path, want in expected.items():
        got = at(actual, path)
        if want is None:
            assert got is _MISSING or got is None, f"{what}: {path} should be absent, is {got!r}"
        else:
            assert got is not _MISSING, f"{what}: {path} is missing (expected {want!r})"
            assert got == want, f"{what}: {path} is {got!r}, expected {want!r}"


def check_client(what: str, actual: list[dict[str, Any]], expected: list[Any]) -> None:
    """Entries: an event type, or {type: ..., path: value, ...}."""
    names = [m.get("type") for m in actual]  # a message without one fails the comparison
    want = [e["type"] if isinstance(e, dict) else e for e in expected]
    assert names == want, f"{what}: produced {names}, expected {want}"
    for index, (message, entry) in enumerate(zip(actual, expected, strict=True)):
        if isinstance(entry, dict):
            check_fields(f"{what} [{index}] {names[index]}", message, {k: v for k, v in entry.items() if k != "type"})


def check_upstream(what: str, actual: list[dict[str, Any]], expected: list[Any]) -> None:
    """Entries: a top-level field, a path the message must have (`realtimeInput.audio`), or {path: value}."""
    names = [next(iter(m)) for m in actual]
    want = [(next(iter(e)) if isinstance(e, dict) else e).split(".")[0] for e in expected]
    assert names == want, f"{what}: produced {names}, expected {want}"
    for index, (message, entry) in enumerate(zip(actual, expected, strict=True)):
        fields = entry if isinstance(entry, dict) else {}
        check_fields(f"{what} [{index}] {names[index]}", message, fields)
        if isinstance(entry, str):
            assert at(message, entry) is not _MISSING, f"{what} [{index}]: {entry} is missing"


def run_case(case: dict[str, Any], mappings: Any = None) -> list[dict[str, Any]]:
    backend = case.get("backend", "aistudio")
    model = case.get("model", DEFAULT_MODEL)
    setup_model = (f"projects/demo-project/locations/us-central1/publishers/google/models/{model}"
                   if backend == "vertex" else f"models/{model}")
    mappings = mappings or MAPPINGS
    capabilities = mappings.models.capabilities(model, backend, case.get("model_info"))
    translator = Translator(mappings, dialect=case.get("dialect", "ga"), deterministic=True, clock=lambda: CLOCK,
                            sniff_dialect=case.get("sniff_dialect", False),
                            context={"model": "gpt-realtime", "setup_model": setup_model, "backend": backend,
                                     "capabilities": capabilities, "features": case.get("gemini_features", {}),
                                     "litellm_compat": case.get("litellm_compat", False),
                                     "voices": case.get("voices", {}),
                                     **({"intent": case["intent"]} if "intent" in case else {}),
                                     **({"watchdog": case["watchdog"]} if "watchdog" in case else {}),
                                     **({"transport": case["transport"]} if "transport" in case else {})})
    transcript = []
    connect = translator.start()
    if "expect_connect" in case:
        check_client("connect to client", connect.client, case["expect_connect"])
    if case.get("show_connect"):
        transcript.append({"step": "connect", "to_client": connect.client, "to_upstream": connect.upstream})
    for index, step in enumerate(case["steps"]):
        out = _feed(translator, step)
        if "expect_client" in step:
            check_client(f"step {index} to client", out.client, step["expect_client"])
        if "expect_upstream" in step:
            check_upstream(f"step {index} to Gemini", out.upstream, step["expect_upstream"])
        if "expect_log" in step:
            assert len(out.log) == len(step["expect_log"]) and all(
                want in note for want, note in zip(step["expect_log"], out.log, strict=True)
            ), f"step {index} log: {out.log}, expected {step['expect_log']}"
        if "expect_session" in step:
            check_fields(f"step {index} session", translator.session, step["expect_session"])
        if "expect_mcp" in step:
            requests = [{"request_id": c.request_id, "action": c.action, "server": c.server, "tool": c.tool,
                         "arguments": c.arguments} for c in out.commands if isinstance(c, McpRequest)]
            assert len(requests) == len(step["expect_mcp"]), f"step {index} MCP requests: {requests}"
            for request, want in zip(requests, step["expect_mcp"], strict=True):
                check_fields(f"step {index} MCP request", request, want)
        if "expect_generate" in step:
            calls = [{"request_id": c.request_id, "model": c.model, "body": c.body}
                     for c in out.commands if isinstance(c, GenerateRequest)]
            assert len(calls) == len(step["expect_generate"]), f"step {index} generate requests: {calls}"
            for call, want in zip(calls, step["expect_generate"], strict=True):
                check_fields(f"step {index} generate request", call, want)
        if "expect_usage" in step:
            usage = translator.usage.current()
            counted = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                       "total_tokens": usage.total_tokens, **usage.billed()}
            check_fields(f"step {index} usage", counted, step["expect_usage"])
        inputs = {k: v for k, v in step.items() if not k.startswith("expect_")}
        entry = {"step": index, "input": inputs, "to_client": out.client, "to_upstream": out.upstream}
        transcript.append({**entry, "log": out.log} if out.log else entry)
    return transcript


@pytest.fixture
def snapshot_json(snapshot: Any) -> Any:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("path", _cases(), ids=lambda p: f"{_target(p).replace('/', '__')}__{p.stem}")
def test_case(path: Path, snapshot_json: Any) -> None:
    case = yaml.safe_load(path.read_text())
    assert case.get("description"), f"{path}: every case says what it shows"
    transcript = run_case(case)
    if case.get("snapshot", True):
        assert snapshot_json == transcript
    else:
        assert any(set(step) & {"expect_client", "expect_upstream", "expect_session", "expect_usage"}
                   for step in case["steps"]), \
            f"{path}: a case without a snapshot must state expectations"


def test_every_mapping_has_a_case() -> None:
    covered = {_target(case) for case in _cases()}
    missing = sorted(_covered_files() - covered)
    assert not missing, f"mapping files without a fixture case in fixtures/: {missing}"


def test_every_case_names_a_mapping() -> None:
    orphans = sorted({_target(case) for case in _cases()} - _covered_files())
    assert not orphans, f"fixture folders that match no mapping file: {orphans}"

"""The JSON Schemas of OpenAI Realtime client events (schemas/openai/).

Checks that every client event the openai SDK knows has a schema in its dialect, that realistic events
(built from the SDK's own models) pass, and that bad events fail with the error on the offending field and
the keyword livegate turns into an OpenAI error code.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import ValidationError, best_match
from openai.types import realtime as ga
from openai.types.beta import realtime as beta
from openai.types.beta.realtime import session_update_event as beta_session
from openai.types.beta.realtime import transcription_session_update as beta_tsession
from openai.types.beta.realtime.conversation_item_with_reference import Content as BetaRefContent
from openai.types.beta.realtime.response_create_event import Response as BetaResponse
from openai.types.beta.realtime.response_create_event import ResponseTool as BetaResponseTool
from openai.types.realtime import realtime_audio_formats as fmt
from openai.types.realtime import realtime_audio_input_turn_detection as td
from openai.types.realtime import realtime_conversation_item_assistant_message as assistant_msg
from openai.types.realtime import realtime_conversation_item_system_message as system_msg
from openai.types.realtime import realtime_conversation_item_user_message as user_msg
from openai.types.realtime import realtime_mcp_list_tools as mcp_list
from openai.types.realtime import realtime_response_create_audio_output as resp_audio
from openai.types.realtime import realtime_tools_config_union as tools_union
from openai.types.realtime.realtime_audio_config_input import NoiseReduction
from openai.types.realtime.realtime_audio_config_output import VoiceID
from openai.types.realtime.realtime_tracing_config import TracingConfiguration
from openai.types.realtime.realtime_truncation_retention_ratio import TokenLimits
from openai.types.responses import (
    ResponseInputImage,
    ResponseInputText,
    ResponsePrompt,
    ToolChoiceFunction,
    ToolChoiceMcp,
)
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "openai"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://livegate.local/schemas/openai/"


# ------------------------------------------------------------------------------------------------- helpers
# The same loading convention as livegate: every *.json under schemas/openai/ goes into one registry,
# keyed by its $id; a beta event without its own file falls back to the GA one.


@cache
def documents() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text()) for path in sorted(SCHEMAS.rglob("*.json"))}


@cache
def registry() -> Registry:
    return Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents().values()
    )


def schema_file(dialect: str, event_type: str) -> Path:
    if dialect == "beta" and (SCHEMAS / "beta" / f"{event_type}.json").exists():
        return SCHEMAS / "beta" / f"{event_type}.json"
    return SCHEMAS / f"{event_type}.json"


@cache
def validator(dialect: str, event_type: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(documents()[schema_file(dialect, event_type)], registry=registry())


def param_path(error: ValidationError) -> str:
    """The OpenAI `param` for an error: its instance path, plus the property name for the keywords that
    jsonschema reports on the parent object (a missing or an unknown property)."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        path.append(next(name for name in error.validator_value if name not in error.instance))
    elif error.validator in ("additionalProperties", "unevaluatedProperties"):
        # The schemas close objects with additionalProperties only, so the allowed names are right there.
        allowed = error.schema.get("properties", {})
        path.append(sorted(name for name in error.instance if name not in allowed)[0])
    return ".".join(path)


def first_error(event: dict[str, Any], dialect: str = "ga") -> tuple[str, str] | None:
    """(param path, JSON Schema keyword) of the error livegate would report, or None if valid."""
    error = best_match(validator(dialect, event["type"]).iter_errors(event))
    return None if error is None else (param_path(error), error.validator)


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def client_event_types(union: Any) -> set[str]:
    members = typing.get_args(typing.get_args(union)[0])  # Annotated[Union[...], PropertyInfo]
    return {typing.get_args(m.model_fields["type"].annotation)[0] for m in members}


# ------------------------------------------------------------------------------------- files and coverage


def test_every_ga_client_event_has_a_schema() -> None:
    types = client_event_types(ga.RealtimeClientEvent)
    assert len(types) == 11
    missing = sorted(t for t in types if not (SCHEMAS / f"{t}.json").exists())
    assert not missing


def test_every_beta_client_event_has_a_schema() -> None:
    types = client_event_types(beta.RealtimeClientEvent)
    assert "transcription_session.update" in types
    missing = sorted(t for t in types if not schema_file("beta", t).exists())
    assert not missing


def test_beta_files_only_for_events_whose_shape_differs() -> None:
    beta_files = {p.name for p in (SCHEMAS / "beta").glob("*.json")}
    assert beta_files == {"common.json", "session.update.json", "conversation.item.create.json",
                          "response.create.json", "transcription_session.update.json"}


@pytest.mark.parametrize("path", sorted(SCHEMAS.rglob("*.json")), ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_schema_file_is_well_formed(path: Path) -> None:
    doc = documents()[path]
    assert doc["$schema"] == DRAFT_2020_12
    assert doc["$id"] == ID_BASE + path.relative_to(SCHEMAS).as_posix()
    jsonschema.Draft202012Validator.check_schema(doc)
    if path.name != "common.json":
        event_type = path.name.removesuffix(".json")
        assert doc["properties"]["type"] == {"const": event_type}
        assert doc["properties"]["event_id"] == {"type": "string"}
        assert "type" in doc["required"] and "event_id" not in doc["required"]
        assert doc["additionalProperties"] is False


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves() -> None:
    for doc in documents().values():
        resolver = registry().resolver(base_uri=doc["$id"])
        for ref in _refs(doc):
            resolver.lookup(ref)  # raises if the target file or $def is missing


def test_append_schema_stays_cheap() -> None:
    doc = documents()[SCHEMAS / "input_audio_buffer.append.json"]
    assert doc["properties"]["audio"] == {"type": "string"}
    assert "$ref" not in json.dumps(doc)


# ------------------------------------------------------------------------------------------ valid: GA

SDK_SENDS_GA = [  # docs/protocol-notes.md §1, as serialized by the SDK
    {"type": "session.update", "session": {"type": "realtime", "instructions": "hi",
                                           "output_modalities": ["audio"],
                                           "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                               "turn_detection": {"type": "server_vad"}}}}},
    {"type": "input_audio_buffer.append", "audio": "AAAAAA=="},
    {"type": "response.create"},
]
SDK_SENDS_BETA = [
    {"type": "session.update", "session": {"modalities": ["text", "audio"], "voice": "alloy",
                                           "input_audio_format": "pcm16", "turn_detection": {"type": "server_vad"}}},
    {"type": "input_audio_buffer.append", "audio": "AAAAAA=="},
    {"type": "response.create"},
]

FUNCTION_TOOL = ga.RealtimeFunctionTool(
    type="function", name="get_weather", description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
MCP_TOOL = tools_union.Mcp(
    type="mcp", server_label="deepwiki", server_url="https://mcp.deepwiki.com/mcp",
    allowed_tools=["read_wiki_structure"], require_approval="never", headers={"X-Key": "k"},
)
MCP_TOOL_FILTERS = tools_union.Mcp(
    type="mcp", server_label="crm", connector_id="connector_gmail", authorization="tok",
    allowed_tools=tools_union.McpAllowedToolsMcpToolFilter(read_only=True, tool_names=["search"]),
    require_approval=tools_union.McpRequireApprovalMcpToolApprovalFilter(
        always=tools_union.McpRequireApprovalMcpToolApprovalFilterAlways(tool_names=["send"]),
        never=tools_union.McpRequireApprovalMcpToolApprovalFilterNever(read_only=True)),
    allowed_callers=["direct"], defer_loading=False,
)


def ga_sessions() -> list[Any]:
    full = ga.RealtimeSessionCreateRequest(
        type="realtime", model="gpt-realtime", instructions="Be brief.", output_modalities=["text"],
        audio=ga.RealtimeAudioConfig(
            input=ga.RealtimeAudioConfigInput(
                format=fmt.AudioPCMU(type="audio/pcmu"),
                noise_reduction=NoiseReduction(type="near_field", strength=0.5),
                transcription=ga.AudioTranscription(model="gpt-4o-transcribe", language="en", prompt="names",
                                                    languages=["en", "de"], keywords=["livegate"]),
                turn_detection=td.ServerVad(type="server_vad", threshold=0.5, prefix_padding_ms=300,
                                            silence_duration_ms=500, idle_timeout_ms=6000,
                                            create_response=True, interrupt_response=True)),
            output=ga.RealtimeAudioConfigOutput(format=fmt.AudioPCM(type="audio/pcm", rate=24000),
                                                voice="marin", speed=1.2)),
        include=["item.input_audio_transcription.logprobs"],
        tools=[FUNCTION_TOOL, MCP_TOOL, MCP_TOOL_FILTERS], tool_choice="auto", parallel_tool_calls=True,
        max_output_tokens=4096,
        prompt=ResponsePrompt(id="pmpt_1", version="2", variables={
            "city": "Paris", "greeting": ResponseInputText(type="input_text", text="hello"),
            "logo": ResponseInputImage(type="input_image", detail="auto", image_url="data:image/png;base64,AA")}),
        reasoning=ga.RealtimeReasoning(effort="low"),
        tracing=TracingConfiguration(workflow_name="support", group_id="g1", metadata={"a": 1}),
        truncation=ga.RealtimeTruncationRetentionRatio(type="retention_ratio", retention_ratio=0.8,
                                                       token_limits=TokenLimits(post_instructions=5000)),
    )
    return [
        full,
        ga.RealtimeSessionCreateRequest(type="realtime"),
        ga.RealtimeSessionCreateRequest(
            type="realtime", max_output_tokens="inf", tracing="auto", truncation="disabled",
            tool_choice=ToolChoiceFunction(type="function", name="get_weather"),
            audio=ga.RealtimeAudioConfig(
                input=ga.RealtimeAudioConfigInput(format=fmt.AudioPCMA(type="audio/pcma"),
                                                  turn_detection=td.SemanticVad(type="semantic_vad",
                                                                                eagerness="high")),
                output=ga.RealtimeAudioConfigOutput(format=fmt.AudioPCMA(type="audio/pcma"),
                                                    voice=VoiceID(id="voice_123")))),
        ga.RealtimeSessionCreateRequest(type="realtime", truncation="auto", tools=[],
                                        tool_choice=ToolChoiceMcp(type="mcp", server_label="deepwiki",
                                                                  name="ask_question")),
        ga.RealtimeSessionCreateRequest(type="realtime", tool_choice="required"),
        ga.RealtimeSessionCreateRequest(type="realtime", tool_choice="none"),
        ga.RealtimeTranscriptionSessionCreateRequest(
            type="transcription", include=["item.input_audio_transcription.logprobs"],
            audio=ga.RealtimeTranscriptionSessionAudio(input=ga.RealtimeTranscriptionSessionAudioInput(
                format=fmt.AudioPCM(type="audio/pcm", rate=24000),
                transcription=ga.AudioTranscription(model="gpt-realtime-whisper", delay="low"),
                noise_reduction={"type": "far_field"}))),
    ]


def ga_items() -> list[Any]:
    return [
        ga.RealtimeConversationItemSystemMessage(
            type="message", role="system", content=[system_msg.Content(type="input_text", text="Be nice.")]),
        ga.RealtimeConversationItemUserMessage(
            type="message", role="user", id="item_1", object="realtime.item", status="completed",
            content=[user_msg.Content(type="input_text", text="What is this?"),
                     user_msg.Content(type="input_audio", audio="AAAAAA==", transcript="hello"),
                     user_msg.Content(type="input_image", image_url="data:image/jpeg;base64,AAAAAA==",
                                      detail="low")]),
        ga.RealtimeConversationItemAssistantMessage(
            type="message", role="assistant",
            content=[assistant_msg.Content(type="output_text", text="Hi!"),
                     assistant_msg.Content(type="output_audio", audio="AAAAAA==", transcript="Hi!")]),
        ga.RealtimeConversationItemFunctionCall(type="function_call", name="get_weather", call_id="call_1",
                                                arguments='{"city": "Paris"}', status="completed"),
        ga.RealtimeConversationItemFunctionCallOutput(type="function_call_output", call_id="call_1",
                                                      output='{"temp_c": 21}'),
        ga.RealtimeMcpApprovalResponse(type="mcp_approval_response", id="item_2", approval_request_id="mcpr_1",
                                       approve=False, reason="not allowed"),
        ga.RealtimeMcpApprovalRequest(type="mcp_approval_request", id="mcpr_1", server_label="deepwiki",
                                      name="ask_question", arguments="{}"),
        ga.RealtimeMcpListTools(type="mcp_list_tools", server_label="deepwiki", tools=[
            mcp_list.Tool(name="ask_question", description="Ask", input_schema={"type": "object"},
                          annotations={"readOnlyHint": True})]),
        ga.RealtimeMcpToolCall(type="mcp_call", id="mcp_1", server_label="deepwiki", name="ask_question",
                               arguments="{}", output="42",
                               error=ga.RealtimeMcpToolExecutionError(type="tool_execution_error",
                                                                      message="boom")),
        ga.RealtimeMcpToolCall(type="mcp_call", id="mcp_2", server_label="deepwiki", name="ask_question",
                               arguments="{}", error=ga.RealtimeMcphttpError(type="http_error", code=502,
                                                                              message="bad gateway")),
    ]


def ga_valid_events() -> list[dict[str, Any]]:
    events = [*SDK_SENDS_GA]
    events += [dump(ga.SessionUpdateEvent(type="session.update", event_id=f"evt_s{i}", session=session))
               for i, session in enumerate(ga_sessions())]
    events += [dump(ga.ConversationItemCreateEvent(type="conversation.item.create", item=item,
                                                   previous_item_id="root"))
               for item in ga_items()]
    events += [
        dump(ga.InputAudioBufferAppendEvent(type="input_audio_buffer.append", audio="UklGRg==", event_id="e1")),
        dump(ga.InputAudioBufferCommitEvent(type="input_audio_buffer.commit")),
        dump(ga.InputAudioBufferClearEvent(type="input_audio_buffer.clear", event_id="e2")),
        dump(ga.OutputAudioBufferClearEvent(type="output_audio_buffer.clear")),
        dump(ga.ConversationItemRetrieveEvent(type="conversation.item.retrieve", item_id="item_1")),
        dump(ga.ConversationItemTruncateEvent(type="conversation.item.truncate", item_id="item_1",
                                              content_index=0, audio_end_ms=1500)),
        dump(ga.ConversationItemDeleteEvent(type="conversation.item.delete", item_id="item_1")),
        dump(ga.ResponseCancelEvent(type="response.cancel")),
        dump(ga.ResponseCancelEvent(type="response.cancel", response_id="resp_1", event_id="e3")),
        dump(ga.ResponseCreateEvent(type="response.create", response=ga.RealtimeResponseCreateParams(
            output_modalities=["audio"], instructions="Answer in French.", max_output_tokens="inf",
            audio=ga.RealtimeResponseCreateAudioOutput(output=resp_audio.Output(
                format=fmt.AudioPCM(type="audio/pcm"), voice="cedar")),
            tools=[FUNCTION_TOOL], tool_choice=ToolChoiceFunction(type="function", name="get_weather"),
            conversation="none", metadata={"topic": "weather"}, parallel_tool_calls=False,
            reasoning=ga.RealtimeReasoning(effort="minimal"), prompt=ResponsePrompt(id="pmpt_1"),
            input=ga_items()))),
        dump(ga.ResponseCreateEvent(type="response.create", response=ga.RealtimeResponseCreateParams(
            max_output_tokens=1, conversation="auto", tool_choice="none",
            audio=ga.RealtimeResponseCreateAudioOutput(output=resp_audio.Output(
                voice=resp_audio.OutputVoiceID(id="voice_1")))))),
        # ResponseCreateEventWithReferencesParam: response input may point at existing items.
        {"type": "response.create", "response": {"conversation": "none", "input": [
            {"type": "item_reference", "id": "item_1"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Summarize."}]}]}},
        # Explicit nulls the SDK documents as "set to null to turn off / clear".
        {"type": "session.update", "session": {"type": "realtime", "tracing": None, "prompt": None, "audio": {
            "input": {"turn_detection": None, "noise_reduction": None, "transcription": None}}}},
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "idle_timeout_ms": None}}}}},
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "turn_detection": None, "noise_reduction": None, "transcription": None}}}},
        {"type": "response.create", "response": {"metadata": None, "prompt": None}},
        {"type": "session.update", "session": {"type": "realtime", "tools": [{
            "type": "mcp", "server_label": "x", "allowed_tools": None, "require_approval": None,
            "headers": None, "allowed_callers": None}]}},
        {"type": "conversation.item.create", "item": {
            "type": "mcp_call", "id": "m", "server_label": "s", "name": "n", "arguments": "{}",
            "error": None, "output": None, "approval_request_id": None}},
    ]
    return events


# ---------------------------------------------------------------------------------------- valid: beta


def beta_valid_events() -> list[dict[str, Any]]:
    content = beta.ConversationItemContent
    items = [
        beta.ConversationItem(type="message", role="system", content=[content(type="input_text", text="Be nice.")]),
        beta.ConversationItem(type="message", role="user", id="item_1", object="realtime.item", status="completed",
                              content=[content(type="input_text", text="hi"),
                                       content(type="input_audio", audio="AAAAAA==", transcript="hi")]),
        beta.ConversationItem(type="message", role="assistant",
                              content=[content(type="text", text="Hello"),
                                       content(type="audio", transcript="Hello")]),
        beta.ConversationItem(type="function_call", name="get_weather", call_id="call_1", arguments="{}"),
        beta.ConversationItem(type="function_call_output", call_id="call_1", output='{"temp_c": 21}'),
    ]
    events: list[dict[str, Any]] = [*SDK_SENDS_BETA]
    events += [dump(beta.ConversationItemCreateEvent(type="conversation.item.create", item=item,
                                                     previous_item_id="root")) for item in items]
    events += [
        dump(beta.SessionUpdateEvent(type="session.update", event_id="evt_1", session=beta_session.Session(
            model="gpt-4o-realtime-preview", modalities=["text"], instructions="Be brief.", voice="verse",
            speed=1.0, temperature=0.8, max_response_output_tokens="inf",
            input_audio_format="g711_ulaw", output_audio_format="g711_alaw",
            input_audio_transcription=beta_session.SessionInputAudioTranscription(model="whisper-1",
                                                                                   language="en"),
            input_audio_noise_reduction=beta_session.SessionInputAudioNoiseReduction(type="far_field"),
            turn_detection=beta_session.SessionTurnDetection(type="semantic_vad", eagerness="low",
                                                             create_response=True, interrupt_response=False),
            tools=[beta_session.SessionTool(type="function", name="get_weather", description="Weather",
                                            parameters={"type": "object", "properties": {}})],
            tool_choice="get_weather",
            tracing=beta_session.SessionTracingTracingConfiguration(workflow_name="w"),
            client_secret=beta_session.SessionClientSecret(expires_after=beta_session.SessionClientSecretExpiresAfter(
                anchor="created_at", seconds=600))))),
        dump(beta.SessionUpdateEvent(type="session.update", session=beta_session.Session(
            turn_detection=beta_session.SessionTurnDetection(type="server_vad", threshold=0.6,
                                                             prefix_padding_ms=200, silence_duration_ms=800),
            max_response_output_tokens=1024, tool_choice="required", tracing="auto"))),
        dump(beta.TranscriptionSessionUpdate(type="transcription_session.update", session=beta_tsession.Session(
            input_audio_format="pcm16", include=["item.input_audio_transcription.logprobs"], modalities=["text"],
            input_audio_transcription=beta_tsession.SessionInputAudioTranscription(model="gpt-4o-transcribe",
                                                                                    prompt="names"),
            input_audio_noise_reduction=beta_tsession.SessionInputAudioNoiseReduction(type="near_field"),
            turn_detection=beta_tsession.SessionTurnDetection(type="server_vad"),
            client_secret=beta_tsession.SessionClientSecret(expires_at=beta_tsession.SessionClientSecretExpiresAt(
                anchor="created_at", seconds=60))))),
        dump(beta.ResponseCreateEvent(type="response.create", response=BetaResponse(
            modalities=["text", "audio"], instructions="Answer in French.", voice="alloy",
            output_audio_format="pcm16", temperature=0.6, max_response_output_tokens=300, conversation="none",
            metadata={"topic": "weather"}, tool_choice="auto",
            tools=[BetaResponseTool(type="function", name="get_weather", parameters={"type": "object"})],
            input=[beta.ConversationItemWithReference(type="item_reference", id="item_1"),
                   beta.ConversationItemWithReference(type="message", role="user", content=[
                       BetaRefContent(type="input_text", text="Summarize."),
                       BetaRefContent(type="item_reference", id="item_0")]),
                   beta.ConversationItemWithReference(type="message", role="assistant", content=[
                       BetaRefContent(type="text", text="Sure.")])]))),
        # Events whose shape is the same in both dialects go through the GA file.
        dump(beta.ConversationItemTruncateEvent(type="conversation.item.truncate", item_id="item_1",
                                                content_index=0, audio_end_ms=0)),
        dump(beta.InputAudioBufferCommitEvent(type="input_audio_buffer.commit", event_id="e")),
        {"type": "output_audio_buffer.clear"},
        # Explicit nulls.
        {"type": "session.update", "session": {"turn_detection": None, "input_audio_noise_reduction": None,
                                               "input_audio_transcription": None, "tracing": None}},
        {"type": "transcription_session.update", "session": {"turn_detection": None,
                                                             "input_audio_noise_reduction": None}},
    ]
    return events


VALID = [("ga", e) for e in ga_valid_events()] + [("beta", e) for e in beta_valid_events()]


@pytest.mark.parametrize(("dialect", "event"), VALID, ids=lambda v: v if isinstance(v, str) else v["type"])
def test_valid_event_passes(dialect: str, event: dict[str, Any]) -> None:
    errors = [f"{param_path(e)}: {e.message}" for e in validator(dialect, event["type"]).iter_errors(event)]
    assert not errors


# Objects whose keys are the client's own (maps, embedded JSON Schemas): no unknown-field check there.
FREE_FORM = {"parameters", "input_schema", "annotations", "metadata", "headers", "variables"}
MAPS = {"variables"}  # ...but their values are checked


def _object_paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        key = path[-1] if path else None
        if key not in FREE_FORM:
            yield path
        if key in FREE_FORM and key not in MAPS:
            return
        for k, v in node.items():
            yield from _object_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _object_paths(v, (*path, i))


@pytest.mark.parametrize(("dialect", "event"), VALID, ids=lambda v: v if isinstance(v, str) else v["type"])
def test_unknown_field_is_rejected_at_every_level(dialect: str, event: dict[str, Any]) -> None:
    for path in _object_paths(event):
        bad = json.loads(json.dumps(event))
        node = bad
        for step in path:
            node = node[step]
        node["zz_typo"] = 1
        expected = ".".join(str(p) for p in (*path, "zz_typo"))
        assert first_error(bad, dialect) == (expected, "additionalProperties"), expected


# --------------------------------------------------------------------------------------------- invalid

def _session(**fields: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **fields}}


def _input_audio(**fields: Any) -> dict[str, Any]:
    return _session(audio={"input": fields})


def _item(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": item}


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return _item({"type": "message", "role": "user", "content": list(parts)})


def _response(**fields: Any) -> dict[str, Any]:
    return {"type": "response.create", "response": fields}


INVALID_GA = [
    # the cases livegate's error mapping is built around
    ("missing session.type",
     {"type": "session.update", "session": {"instructions": "hi"}}, ("session.type", "required")),
    ("append without audio", {"type": "input_audio_buffer.append"}, ("audio", "required")),
    ("append audio not a string", {"type": "input_audio_buffer.append", "audio": 5}, ("audio", "type")),
    ("unknown session field", _session(voicee="alloy"), ("session.voicee", "additionalProperties")),
    ("pcm rate other than 24000", _input_audio(format={"type": "audio/pcm", "rate": 16000}),
     ("session.audio.input.format.rate", "const")),
    ("unknown item type", _item({"type": "messages", "role": "user", "content": []}), ("item.type", "enum")),
    ("assistant part in a user message", _user({"type": "output_text", "text": "hi"}),
     ("item.content.0.type", "enum")),
    # events
    ("unknown event field", {"type": "input_audio_buffer.commit", "foo": 1}, ("foo", "additionalProperties")),
    ("event_id not a string", {"type": "input_audio_buffer.clear", "event_id": 7}, ("event_id", "type")),
    ("truncate without content_index", {"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": 1},
     ("content_index", "required")),
    ("truncate negative ms", {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
                              "audio_end_ms": -1}, ("audio_end_ms", "minimum")),
    ("retrieve item_id not a string", {"type": "conversation.item.retrieve", "item_id": 1}, ("item_id", "type")),
    ("create without item", {"type": "conversation.item.create"}, ("item", "required")),
    ("session not an object", {"type": "session.update", "session": "realtime"}, ("session", "type")),
    # session
    ("unknown session type", _session(type="realtimee"), ("session.type", "enum")),
    ("beta field in a GA session", _session(temperature=0.8), ("session.temperature", "additionalProperties")),
    ("beta format in a GA session", _session(input_audio_format="pcm16"),
     ("session.input_audio_format", "additionalProperties")),
    ("realtime field in a transcription session", {"type": "session.update", "session": {
        "type": "transcription", "instructions": "x"}}, ("session.instructions", "additionalProperties")),
    ("output audio in a transcription session", {"type": "session.update", "session": {
        "type": "transcription", "audio": {"output": {}}}}, ("session.audio.output", "additionalProperties")),
    ("unknown audio format type", _input_audio(format={"type": "audio/opus"}),
     ("session.audio.input.format.type", "enum")),
    ("rate on a G.711 format", _input_audio(format={"type": "audio/pcmu", "rate": 8000}),
     ("session.audio.input.format.rate", "additionalProperties")),
    ("format without type", _input_audio(format={"rate": 24000}), ("session.audio.input.format.type", "required")),
    ("rate as a string", _input_audio(format={"type": "audio/pcm", "rate": "24000"}),
     ("session.audio.input.format.rate", "type")),
    ("unknown turn_detection type", _input_audio(turn_detection={"type": "client_vad"}),
     ("session.audio.input.turn_detection.type", "enum")),
    ("server_vad field on semantic_vad", _input_audio(turn_detection={"type": "semantic_vad", "threshold": 0.5}),
     ("session.audio.input.turn_detection.threshold", "additionalProperties")),
    ("turn_detection without type", _input_audio(turn_detection={"threshold": 0.5}),
     ("session.audio.input.turn_detection.type", "required")),
    ("threshold above 1", _input_audio(turn_detection={"type": "server_vad", "threshold": 1.5}),
     ("session.audio.input.turn_detection.threshold", "maximum")),
    ("bad eagerness", _input_audio(turn_detection={"type": "semantic_vad", "eagerness": "eager"}),
     ("session.audio.input.turn_detection.eagerness", "enum")),
    ("bad noise reduction", _input_audio(noise_reduction={"type": "mid_field"}),
     ("session.audio.input.noise_reduction.type", "enum")),
    ("unknown transcription field", _input_audio(transcription={"model": "whisper-1", "temperature": 0}),
     ("session.audio.input.transcription.temperature", "additionalProperties")),
    ("speed too high", _session(audio={"output": {"speed": 3}}), ("session.audio.output.speed", "maximum")),
    ("voice object without id", _session(audio={"output": {"voice": {}}}),
     ("session.audio.output.voice.id", "required")),
    ("voice not a string", _session(audio={"output": {"voice": 3}}), ("session.audio.output.voice", "type")),
    ("two output modalities", _session(output_modalities=["text", "audio"]),
     ("session.output_modalities", "maxItems")),
    ("unknown modality", _session(output_modalities=["video"]), ("session.output_modalities.0", "enum")),
    ("max_output_tokens 0", _session(max_output_tokens=0), ("session.max_output_tokens", "minimum")),
    ("max_output_tokens too big", _session(max_output_tokens=5000), ("session.max_output_tokens", "maximum")),
    ("max_output_tokens bad string", _session(max_output_tokens="infinite"),
     ("session.max_output_tokens", "const")),
    ("max_output_tokens float", _session(max_output_tokens=1.5), ("session.max_output_tokens", "type")),
    ("bad include", _session(include=["item.logprobs"]), ("session.include.0", "enum")),
    ("bad truncation", _session(truncation="sometimes"), ("session.truncation", "enum")),
    ("retention_ratio above 1", _session(truncation={"type": "retention_ratio", "retention_ratio": 2}),
     ("session.truncation.retention_ratio", "maximum")),
    ("bad tracing", _session(tracing="on"), ("session.tracing", "const")),
    ("prompt without id", _session(prompt={"version": "1"}), ("session.prompt.id", "required")),
    ("bad reasoning effort", _session(reasoning={"effort": "max"}), ("session.reasoning.effort", "enum")),
    # tools
    ("bad tool_choice string", _session(tool_choice="any"), ("session.tool_choice", "enum")),
    ("function tool_choice without name", _session(tool_choice={"type": "function"}),
     ("session.tool_choice.name", "required")),
    ("unknown tool_choice type", _session(tool_choice={"type": "file_search"}),
     ("session.tool_choice.type", "enum")),
    ("tool without type", _session(tools=[{"name": "f"}]), ("session.tools.0.type", "required")),
    ("function tool without name", _session(tools=[{"type": "function"}]), ("session.tools.0.name", "required")),
    ("unknown function tool field", _session(tools=[{"type": "function", "name": "f", "strict": True}]),
     ("session.tools.0.strict", "additionalProperties")),
    ("parameters not an object", _session(tools=[{"type": "function", "name": "f", "parameters": "{}"}]),
     ("session.tools.0.parameters", "type")),
    ("mcp tool without server_label", _session(tools=[{"type": "mcp"}]),
     ("session.tools.0.server_label", "required")),
    ("bad require_approval", _session(tools=[{"type": "mcp", "server_label": "s", "require_approval": "sometimes"}]),
     ("session.tools.0.require_approval", "enum")),
    # items
    ("message without role", _item({"type": "message", "content": []}), ("item.role", "required")),
    ("unknown role", _item({"type": "message", "role": "tool", "content": []}), ("item.role", "enum")),
    ("message without content", _item({"type": "message", "role": "user"}), ("item.content", "required")),
    ("user part in an assistant message", _item({"type": "message", "role": "assistant", "content": [
        {"type": "input_text", "text": "x"}]}), ("item.content.0.type", "enum")),
    ("beta part type in a GA assistant message", _item({"type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "x"}]}), ("item.content.0.type", "enum")),
    ("audio in a system message", _item({"type": "message", "role": "system", "content": [
        {"type": "input_audio", "audio": "AAAAAA=="}]}), ("item.content.0.type", "enum")),
    ("part without type", _user({"text": "hi"}), ("item.content.0.type", "required")),
    ("field of another part type", _user({"type": "input_text", "text": "hi", "audio": "AAAAAA=="}),
     ("item.content.0.audio", "additionalProperties")),
    ("bad image detail", _user({"type": "input_image", "image_url": "data:,", "detail": "max"}),
     ("item.content.0.detail", "enum")),
    ("bad item status", _item({"type": "function_call_output", "call_id": "c", "output": "o", "status": "done"}),
     ("item.status", "enum")),
    ("function_call arguments as an object", _item({"type": "function_call", "name": "f", "arguments": {}}),
     ("item.arguments", "type")),
    ("function_call_output without call_id", _item({"type": "function_call_output", "output": "o"}),
     ("item.call_id", "required")),
    ("item_reference as a new item", _item({"type": "item_reference", "id": "item_1"}), ("item.type", "enum")),
    ("mcp_call with bad error type", _item({"type": "mcp_call", "id": "m", "server_label": "s", "name": "n",
                                            "arguments": "{}", "error": {"type": "oops", "message": "x"}}),
     ("item.error.type", "enum")),
    # response.create
    ("GA response with beta fields", _response(modalities=["text"]), ("response.modalities", "additionalProperties")),
    ("response voice outside audio.output", _response(voice="alloy"), ("response.voice", "additionalProperties")),
    ("item_reference without id", _response(input=[{"type": "item_reference"}]), ("response.input.0.id", "required")),
    ("bad item in response input", _response(input=[{"type": "message", "role": "user", "content": [
        {"type": "output_audio"}]}]), ("response.input.0.content.0.type", "enum")),
    ("metadata value not a string", _response(metadata={"n": 1}), ("response.metadata.n", "type")),
    ("conversation not a string", _response(conversation=None), ("response.conversation", "type")),
    ("response format rate", _response(audio={"output": {"format": {"type": "audio/pcm", "rate": 48000}}}),
     ("response.audio.output.format.rate", "const")),
    ("prompt variable of unknown type", _response(prompt={"id": "p", "variables": {"v": {"type": "input_video"}}}),
     ("response.prompt.variables.v.type", "enum")),
]

INVALID_BETA = [
    ("GA discriminator in a beta session", {"type": "session.update", "session": {"type": "realtime"}},
     ("session.type", "additionalProperties")),
    ("GA audio block in a beta session", {"type": "session.update", "session": {"audio": {}}},
     ("session.audio", "additionalProperties")),
    ("unknown beta session field", {"type": "session.update", "session": {"voicee": "alloy"}},
     ("session.voicee", "additionalProperties")),
    ("bad beta audio format", {"type": "session.update", "session": {"input_audio_format": "pcm24"}},
     ("session.input_audio_format", "enum")),
    ("GA format object in beta", {"type": "session.update", "session": {"output_audio_format": {
        "type": "audio/pcm"}}}, ("session.output_audio_format", "enum")),
    ("temperature out of range", {"type": "session.update", "session": {"temperature": 2}},
     ("session.temperature", "maximum")),
    ("bad beta turn_detection type", {"type": "session.update", "session": {"turn_detection": {"type": "none"}}},
     ("session.turn_detection.type", "enum")),
    ("unknown beta turn_detection field", {"type": "session.update", "session": {"turn_detection": {
        "type": "server_vad", "idle_timeout": 5}}}, ("session.turn_detection.idle_timeout", "additionalProperties")),
    ("client_secret seconds too small", {"type": "session.update", "session": {"client_secret": {
        "expires_after": {"anchor": "created_at", "seconds": 5}}}},
     ("session.client_secret.expires_after.seconds", "minimum")),
    ("beta tool with unknown field", {"type": "session.update", "session": {"tools": [{
        "type": "function", "name": "f", "strict": True}]}}, ("session.tools.0.strict", "additionalProperties")),
    ("realtime field in a transcription session", {"type": "transcription_session.update", "session": {
        "voice": "alloy"}}, ("session.voice", "additionalProperties")),
    ("bad transcription model", {"type": "transcription_session.update", "session": {
        "input_audio_transcription": {"model": "gpt-5"}}}, ("session.input_audio_transcription.model", "enum")),
    ("transcription session without session", {"type": "transcription_session.update"},
     ("session", "required")),
    ("GA item shape in beta", _item({"type": "mcp_call", "id": "m"}), ("item.type", "enum")),
    ("GA part type in a beta assistant message", _item({"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "x"}]}), ("item.content.0.type", "enum")),
    ("user part in a beta assistant message", _item({"type": "message", "role": "assistant", "content": [
        {"type": "input_text", "text": "x"}]}), ("item.content.0.type", "enum")),
    ("assistant part in a beta user message", _item({"type": "message", "role": "user", "content": [
        {"type": "text", "text": "x"}]}), ("item.content.0.type", "enum")),
    ("unknown beta item field", _item({"type": "message", "role": "user", "foo": 1}),
     ("item.foo", "additionalProperties")),
    ("beta response with GA field", _response(output_modalities=["text"]),
     ("response.output_modalities", "additionalProperties")),
    ("beta item_reference without id", _response(input=[{"type": "item_reference"}]),
     ("response.input.0.id", "required")),
    ("beta response max tokens", _response(max_response_output_tokens=0),
     ("response.max_response_output_tokens", "minimum")),
]


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in INVALID_GA], ids=[c[0] for c in INVALID_GA])
def test_invalid_ga_event_points_at_the_bad_field(event: dict[str, Any], expected: tuple[str, str]) -> None:
    assert first_error(event, "ga") == expected


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in INVALID_BETA], ids=[c[0] for c in INVALID_BETA])
def test_invalid_beta_event_points_at_the_bad_field(event: dict[str, Any], expected: tuple[str, str]) -> None:
    assert first_error(event, "beta") == expected


def test_ga_session_without_type_is_accepted_by_beta_only() -> None:
    event = {"type": "session.update", "session": {"instructions": "hi", "voice": "alloy"}}
    assert first_error(event, "beta") is None
    assert first_error(event, "ga") == ("session.type", "required")

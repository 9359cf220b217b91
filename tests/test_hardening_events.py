"""Client events that once raised inside a mapping rule (issue 18): each gets an `error` event naming the
field and echoing the event_id, in both dialects, and nothing is logged as a failure."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from google.genai import types as genai_types
from hypothesis import given, settings
from hypothesis import strategies as st

from livegate.mapping import load_mappings
from livegate.mapping.functions import b64_standard, is_base64
from livegate.translation.translator import Translator
from livegate.translation.validation import ClientEventValidator
from tests.conformance import check_client_event

CONTEXT = {"model": "m", "setup_model": "models/m", "backend": "aistudio"}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize("item", [{"type": "message", "role": "user"}, {"type": "message", "role": "assistant"},
                                  {"type": "message", "role": "system"}, {"type": "message"}])
def test_message_item_without_content(dialect: str, item: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """The beta types leave `content` optional: such an item raised in "a message joins Gemini's history"
    (a `server_error` and a traceback, 9-13 times a minute in the fuzz)."""
    translator = Translator(load_mappings(), dialect=dialect, context=CONTEXT, validator=ClientEventValidator())
    translator.start()
    with caplog.at_level(logging.WARNING):
        out = translator.from_client(json.dumps({"type": "conversation.item.create", "event_id": "ev_1", "item": item}))
    assert [m["type"] for m in out.client] == ["error"] and not out.upstream
    error = out.client[0]["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "missing_required_parameter"
    expected = "item.content" if "role" in item or dialect == "beta" else "item.role"  # GA's schema: role first
    assert error["param"] == expected and error["event_id"] == "ev_1"
    check_client_event(out.client[0], dialect)
    assert not caplog.records


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize(("audio", "sent"), [("AAA", "AAA="), ("AAAAAA", "AAAAAA=="), ("-_-_-_-_", "+/+/+/+/"),
                                             ("secret/hash", "secret/hasg="), ("QUJ", "QUI="), ("AAAA", None)])
def test_audio_base64_reaches_gemini_padded_and_standard(dialect: str, audio: str, sent: str | None) -> None:
    """Unpadded, URL-safe or non-canonical base64 (spare bits set in the last character) is valid input
    (is_base64 accepts it) but was forwarded as it came: not valid base64 for Gemini's types (found by the fuzz
    campaigns: realtimeInput.audio.data 'set', then 'secret/hash=')."""
    translator = Translator(load_mappings(), dialect=dialect, context=CONTEXT, validator=ClientEventValidator())
    translator.start()
    out = translator.from_client(json.dumps({"type": "input_audio_buffer.append", "event_id": "ev_2", "audio": audio}))
    forwarded = [m["realtimeInput"]["audio"]["data"] for m in out.upstream if "audio" in m.get("realtimeInput", {})]
    if sent is None:  # 3 bytes: half a sample, refused
        assert not forwarded and out.client[0]["error"]["param"] == "audio"
    else:
        assert forwarded == [sent] and not out.client


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=", max_size=24))
@settings(max_examples=500, deadline=None, derandomize=True, database=None)
def test_b64_standard_makes_any_accepted_base64_valid_for_gemini_with_the_same_bytes(text: str) -> None:
    if not is_base64(text):
        return
    standard = b64_standard(text)
    genai_types.Blob.model_validate({"data": standard})  # strict: padding, alphabet, spare bits
    body = text.translate(str.maketrans("-_", "+/")).rstrip("=")
    assert base64.b64decode(standard) == base64.b64decode(body + "=" * (-len(body) % 4))  # lenient: same bytes

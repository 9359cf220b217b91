"""Client events that once raised inside a mapping rule (issue 18): each gets an `error` event naming the
field and echoing the event_id, in both dialects, and nothing is logged as a failure."""

from __future__ import annotations

import json
import logging

import pytest

from livegate.mapping import load_mappings
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

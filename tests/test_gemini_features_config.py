"""`model_list[].gemini_features`: the defaults of Gemini's own features per config entry, checked at load
against their schema and against what the model can do (mappings/models.yaml), naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from livegate.config import ConfigError, parse_config


def _entry(model: str, features: Any, provider: str = "gemini", **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"model": f"{provider}/{model}", "api_key": "k"}
    if provider == "vertex_ai":
        params = {"model": f"vertex_ai/{model}", "vertex_project": "p", "vertex_location": "us-central1"}
    return {"model_name": "m", "litellm_params": params, "gemini_features": features, **extra}


def test_features_a_model_has_are_kept() -> None:
    features = {"google_search": True, "code_execution": True, "affective_dialog": True, "proactive_audio": True,
                "thinking_budget": 1024, "include_thoughts": False, "media_resolution": "low",
                "start_of_speech_sensitivity": "high", "end_of_speech_sensitivity": "low"}
    route = parse_config({"model_list": [_entry("gemini-2.5-flash-native-audio-preview-09-2025", features)]}).routes[0]
    assert route.gemini_features == features


@pytest.mark.parametrize(("model", "features", "where", "provider"), [
    ("gemini-3.8-live", {"code_execution": True}, "code_execution: the model gemini-3.8-live has no codeExecution",
     "gemini"),
    ("gemini-3.8-live", {"affective_dialog": True}, "affective_dialog: .* on this backend", "gemini"),
    ("gemini-3.8-live", {"proactive_audio": False}, "proactive_audio: .* always has proactive audio", "gemini"),
    ("gemini-2.0-flash-live-001", {"proactive_audio": True}, "proactive_audio: .* takes no proactivity", "gemini"),
    ("gemini-3.8-live", {"thinking_level": "low"}, "thinking_level: .* takes no thinkingLevel", "gemini"),
    ("gemini-3.1-flash-live-preview", {"thinking_budget": 10}, "thinking_budget: .* takes no thinkingBudget",
     "gemini"),
    ("gemini-3.8-live-extended-thinking", {"thinking_budget": 10, "thinking_level": "low"}, "not both", "gemini"),
    ("gemini-3.8-live", {"include_thoughts": True}, "include_thoughts: .* no thinking setting", "gemini"),
    ("gemini-3.5-transcribe-live", {"media_resolution": "low"}, "media_resolution: .* no images", "gemini"),
    ("gemini-3.5-transcribe-live", {"google_search": True}, "google_search: .* no googleSearch", "gemini"),
    ("gemini-3.8-live", {"media_resolution": "huge"}, r"media_resolution: 'huge' is not one of", "gemini"),
    ("gemini-3.8-live", {"search": True}, "Additional properties", "gemini"),
    ("gemini-3.8-live", ["google_search"], "expected a mapping", "gemini"),
])
def test_what_a_model_cannot_do_is_a_config_error(model: str, features: Any, where: str, provider: str) -> None:
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.gemini_features.*" + where):
        parse_config({"model_list": [_entry(model, features, provider)]})


def test_backend_and_model_info_decide() -> None:
    vertex = parse_config({"model_list": [_entry("gemini-3.8-live", {"affective_dialog": True}, "vertex_ai")]})
    assert vertex.routes[0].gemini_features == {"affective_dialog": True}
    declared = _entry("gemini-3.8-live", {"code_execution": True}, model_info={"code_execution": True})
    assert parse_config({"model_list": [declared]}).routes[0].gemini_features == {"code_execution": True}

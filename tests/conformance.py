"""Conformance oracles: the real SDKs' types.

Every event livegate sends a client must validate against the openai SDK's pydantic union for its
dialect; every message it sends Gemini against google-genai's types. The openai SDK itself never
validates what it receives (it constructs unchecked), so these checks are what catch a malformed event.
"""

from __future__ import annotations

from typing import Any

from google.genai import types as genai_types
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import TypeAdapter

_SERVER_EVENTS = {"ga": TypeAdapter(GAServerEvent), "beta": TypeAdapter(BetaServerEvent)}


def check_client_event(event: dict[str, Any], dialect: str = "ga") -> None:
    """Raise if `event` is not a valid OpenAI Realtime server event of `dialect`."""
    parsed = _SERVER_EVENTS[dialect].validate_python(event)
    if parsed.type != event["type"]:
        raise AssertionError(f"{event['type']} parsed as {parsed.type}")


def check_upstream_message(message: dict[str, Any]) -> None:
    """Raise if `message` is not a valid Gemini Live client message.

    `LiveClientSetup` in google-genai lacks fields the SDK itself puts in `setup` on the wire (its
    converters build setup from `LiveConnectConfig`, e.g. realtimeInputConfig), so a setup is checked
    as a LiveConnectConfig plus `model`.
    """
    if len(message) != 1:
        raise AssertionError(f"a Gemini client message has exactly one top-level field, got {sorted(message)}")
    if "setup" in message:
        setup = dict(message["setup"])
        if not isinstance(setup.pop("model", None), str):
            raise AssertionError("setup.model must be a string")
        genai_types.LiveConnectConfig.model_validate(setup)
    else:
        genai_types.LiveClientMessage.model_validate(message)

"""Conformance oracles: the real SDKs' types.

Every event livegate sends a client must validate against the openai SDK's pydantic union for its
dialect; every message it sends Gemini against google-genai's types. The openai SDK itself never
validates what it receives (it constructs unchecked), so these checks are what catch a malformed event.
"""

from __future__ import annotations

import typing
from typing import Any

from google.genai import types as genai_types
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import BaseModel, ValidationError


def _members(union: Any) -> dict[str, type[BaseModel]]:
    """The union's event models by their `type` literal, so an event is checked against its own model
    (a failure then names one field, not 'N validation errors for union[...]')."""
    out: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(typing.get_args(union)[0] if typing.get_origin(union) is typing.Annotated
                                  else union):
        for literal in typing.get_args(member.model_fields["type"].annotation):
            out[literal] = member
    return out


_SERVER_EVENTS = {"ga": _members(GAServerEvent), "beta": _members(BetaServerEvent)}


class NonConforming(AssertionError):
    """One line: the event type and its first failing field."""


def check_client_event(event: dict[str, Any], dialect: str = "ga") -> None:
    """Raise if `event` is not a valid OpenAI Realtime server event of `dialect`."""
    event_type = event.get("type")
    model = _SERVER_EVENTS[dialect].get(event_type) if isinstance(event_type, str) else None
    if model is None:
        raise NonConforming(f"{event_type!r} is not a server event type of the {dialect} dialect")
    try:
        model.model_validate(event)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(event)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise NonConforming(f"{event_type} ({dialect}): {where}: {first['msg']}{more}") from None


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

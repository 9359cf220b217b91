"""The transcript of a session, kept in the spend store when `general_settings.store_prompts_in_spend_logs` is
on (LiteLLM's name; off by default): the instructions and tool definitions in force, each user turn (typed,
or its input transcript when transcription is on), each answer (its text or audio transcript, status and
tool calls) and each tool output, in order. Everything is redacted first, and the whole is bounded
(`livegate_settings.transcript_max_chars`): entries past the bound are dropped and the transcript says so.

It is read from the session's OpenAI events (both dialects), like the turns (turns.py), so it holds what the
client sent and was sent: a user message a guardrail rewrote is kept rewritten, a blocked one is marked.
"""

from __future__ import annotations

import json
import time
from typing import Any

from livegate.observability.redaction import Redactor
from livegate.translation.observer import ClientMessage, SessionObserver, message_dict, message_type

_SESSION_EVENTS = frozenset({"session.created", "session.updated"})
_USER_TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
_READ = _SESSION_EVENTS | {_USER_TRANSCRIPT, "response.done"}


class TranscriptRecorder(SessionObserver):
    def __init__(self, redactor: Redactor, max_chars: int) -> None:
        self.redactor = redactor
        self.max_chars = max_chars
        self.instructions: str | None = None
        self.tools: list[Any] = []
        self.turns: list[dict[str, Any]] = []
        self.truncated = False
        self._size = 0

    # --- what the client sent --------------------------------------------------------------------------

    def client_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "conversation.item.create":
            return  # audio appends end here
        item = event.get("item") or {}
        if item.get("type") == "function_call_output":
            self._add({"role": "tool", "call_id": item.get("call_id"), "output": self._text(item.get("output"))})
        elif item.get("type") == "message" and item.get("role") in ("user", "system"):
            text = "".join(str(p.get("text") or "") for p in item.get("content") or [] if isinstance(p, dict))
            entry: dict[str, Any] = {"role": item["role"], "text": self.redactor.redact(text)}
            guardrail = event.get("guardrail") or {}
            if guardrail.get("verdict") == "block":
                entry["blocked_by"] = guardrail.get("name")
            self._add(entry)

    # --- what the client was sent ----------------------------------------------------------------------

    def client_messages(self, messages: list[ClientMessage]) -> None:
        for message in messages:
            kind = message_type(message)
            if kind not in _READ:
                continue
            message = message_dict(message)
            if kind in _SESSION_EVENTS:
                session = message.get("session") or {}
                if "instructions" in session:
                    self.instructions = self.redactor.redact(str(session.get("instructions") or ""))
                if "tools" in session:
                    self.tools = self.redactor.redact_value(session.get("tools") or [])
            elif kind == _USER_TRANSCRIPT:
                self._add({"role": "user", "audio": True, "text": self.redactor.redact(str(message.get("transcript")))})
            elif kind == "response.done":
                self._answer(message.get("response") or {})

    def _answer(self, response: dict[str, Any]) -> None:
        text, calls = [], []
        for item in response.get("output") or []:
            if item.get("type") == "function_call":
                calls.append({"name": item.get("name"), "call_id": item.get("call_id"),
                              "arguments": self._text(item.get("arguments"))})
            for part in item.get("content") or []:
                said = part.get("transcript") if part.get("transcript") is not None else part.get("text")
                if said:
                    text.append(str(said))
        entry: dict[str, Any] = {"role": "assistant", "response_id": response.get("id"),
                                 "status": response.get("status"), "text": self.redactor.redact("".join(text))}
        reason = (response.get("status_details") or {}).get("reason")
        if reason:
            entry["reason"] = reason
        if calls:
            entry["tool_calls"] = calls
        self._add(entry)

    # --- bounds ----------------------------------------------------------------------------------------

    def _text(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        try:  # JSON arguments and outputs are redacted value by value, so they stay JSON
            return json.dumps(self.redactor.redact_value(json.loads(text)))
        except ValueError:
            return self.redactor.redact(text)

    def _add(self, entry: dict[str, Any]) -> None:
        if self.truncated:
            return
        entry["at"] = round(time.time(), 3)
        size = len(json.dumps(entry))
        if self._size + size > self.max_chars:
            self.truncated = True
            return
        self._size += size
        self.turns.append(entry)

    def result(self) -> dict[str, Any]:
        fixed = len(json.dumps(self.instructions or "")) + len(json.dumps(self.tools))
        return {"instructions": self.instructions if fixed <= self.max_chars else None,
                "tools": self.tools if fixed <= self.max_chars else [], "turns": self.turns,
                "truncated": self.truncated or fixed > self.max_chars}

"""What the guardrails read (mappings/guardrails.yaml): the text of an input to check, asked before the
input is translated, and the reshape of a typed user turn a guardrail rewrote.

The session core holds an input whose text is under check (and every later input of the same side, in
order) until the guardrails decide (a `CheckGuardrail` command its pump carries out); then the input is
translated with the decision (`event.guardrail` for a client event), or lifecycle/guardrail_blocked runs
first. Which text to check is event-specific, so it is declared in YAML, like the session core's questions
in resumption.yaml, and checked at load the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livegate.mapping.errors import MappingError
from livegate.mapping.expressions import Expression, Runtime, compile_expression, truthy
from livegate.mapping.fields import session_paths
from livegate.mapping.state import StateSpec
from livegate.mapping.yamlpos import Located
from livegate.paths import MAPPINGS_DIR

# The questions, and when the translator asks them.
QUESTIONS = {
    "typed_text": "the text of a client event to check before it is translated (pre_call)",
    "heard_text": "the user's transcript so far, when a Gemini frame brings more of it (pre_call)",
    "said_text": "the answer's text so far, when a Gemini frame brings more of it (during_call)",
}


@dataclass(frozen=True)
class GuardrailCheck:
    """An input held for a check: `stage`, the `text` to check, and the input itself (`held`: the client event
    as validated, or the Gemini frame as parsed)."""

    stage: str
    text: str
    held: dict[str, Any]
    side: str  # "client" or "upstream"


@dataclass(frozen=True)
class GuardQuestions:
    typed_text: Expression
    heard_text: Expression
    said_text: Expression

    @classmethod
    def load(cls, root: str | Path | None = None, state: StateSpec | None = None) -> GuardQuestions:
        path = Path(root or MAPPINGS_DIR) / "guardrails.yaml"
        doc = Located(f"{path.parent.name}/{path.name}", path.read_text())
        asked = doc.data.get("questions") if isinstance(doc.data, dict) else None
        if not isinstance(asked, dict):
            raise MappingError(doc.position(()), "questions: expected a mapping of names to expressions")
        compiled: dict[str, Expression] = {}
        for name, why in QUESTIONS.items():
            source = asked.get(name)
            where = doc.position(("questions", name) if name in asked else ("questions",))
            if not isinstance(source, str) or not source.startswith("="):
                raise MappingError(where, f"questions.{name}: expected an expression (=...) answering {why}")
            expression = compile_expression(doc, ("questions", name), source)
            for steps in dict.fromkeys(session_paths(expression.ast)):
                wrong = state.misuse(steps, "read") if state is not None else None
                if wrong is not None:
                    raise MappingError(where, f"questions.{name}: {wrong[1]}")
            compiled[name] = expression
        for name in asked:
            if name not in QUESTIONS:
                raise MappingError(doc.position(("questions", name)),
                                   f"questions.{name}: livegate asks no such question ({', '.join(QUESTIONS)})")
        return cls(**compiled)

    def ask(self, name: str, runtime: Runtime, scope: dict[str, Any]) -> str | None:
        answer = getattr(self, name)(runtime, scope)
        return answer if isinstance(answer, str) and truthy(answer) and answer.strip() else None

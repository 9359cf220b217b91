"""The simulator's deterministic "script": what it answers, how it splits answers, what usage it reports.

Pure functions, no I/O. Every answer is labelled with PREFIX so nobody mistakes the simulator for a model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

PREFIX = "[livegate simulator]"
AUDIO_TOKENS_PER_SECOND = 32  # Gemini's published audio tokenisation rate
CHARS_PER_TEXT_TOKEN = 4

_WORDS = re.compile(r"\S+\s*|\s+")


# --- answers -------------------------------------------------------------------------------------------


def echo_answer(user_text: str, images: int = 0) -> str:
    seen = f"I see {images} image{'s' if images != 1 else ''}. " if images else ""
    return f"{PREFIX} {seen}You said: {user_text}"


# Phrases in the user's text that make the simulator end the turn as Gemini does when it stops one
# (serverContent.turnCompleteReason), with no output: for tests of what a client sees then.
STOP_TRIGGERS = {
    "[sim:safety]": "PROHIBITED_INPUT_CONTENT",
    "[sim:malformed-call]": "MALFORMED_FUNCTION_CALL",
}


def stop_reason(user_text: str) -> str | None:
    """The turnCompleteReason a trigger phrase in the user's text asks for, if any."""
    return next((reason for phrase, reason in STOP_TRIGGERS.items() if phrase in user_text), None)


# Tokens Gemini counts per image or video frame, by generationConfig.mediaResolution.
IMAGE_TOKENS = {"MEDIA_RESOLUTION_LOW": 66, "MEDIA_RESOLUTION_MEDIUM": 258, "MEDIA_RESOLUTION_HIGH": 258}
DEFAULT_IMAGE_TOKENS = 258
IMAGE_MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif")


def asks_recall(user_text: str) -> bool:
    """A question whose answer depends on the conversation so far ("What did I say before?")."""
    return "what did i say" in user_text.lower()


def recall_answer(earlier: list[str]) -> str:
    """Every earlier user turn, in order: an answer only a session that kept its history can give."""
    return f"{PREFIX} Before this you said: " + " | ".join(earlier) if earlier else f"{PREFIX} You said nothing before."


_VERBATIM = re.compile(r"Say exactly(?: this)?[^:]*:\s*(?P<said>.+?)\)?\s*$", re.DOTALL)


def verbatim(prompt: str) -> str | None:
    """What a turn asks to be said exactly ("... Say exactly this ...: <words>"), if it asks."""
    match = _VERBATIM.search(prompt)
    return match["said"].strip() if match else None


def heard_answer(seconds: float) -> str:
    return f"{PREFIX} I heard {seconds:.1f} s of audio."


def heard_transcript(seconds: float) -> list[str]:
    """Input transcription of an audio turn, in two chunks (clients must concatenate them)."""
    return [f"{PREFIX} heard ", f"{seconds:.1f} s of audio"]


def working_answer(name: str) -> str:
    """What the simulator says while an asynchronous (NON_BLOCKING) call runs: the model talks on."""
    return f"{PREFIX} I am running {name} in the background; let us carry on meanwhile."


def declared_behaviors(tools: Any, default: str) -> dict[str, str]:
    """name -> BLOCKING or NON_BLOCKING, from `tools[].functionDeclarations` (a declaration without `behavior`
    gets the model's `default`)."""
    behaviors: dict[str, str] = {}
    for tool in tools if isinstance(tools, list) else []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for decl in declarations if isinstance(declarations, list) else []:
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                behaviors[decl["name"]] = str(decl.get("behavior") or default)
    return behaviors


def tool_answer(results: Iterable[tuple[str, Any]]) -> str:
    """`results` = (function name, its `response` object) pairs."""
    said = "; ".join(f"The tool {name} returned: {json.dumps(response)}" for name, response in results)
    return f"{PREFIX} {said}"


# --- tools ---------------------------------------------------------------------------------------------


def declared_functions(tools: Any) -> dict[str, dict[str, Any]]:
    """name -> parameter schema, from `tools[].functionDeclarations` (camelCase-normalised setup)."""
    functions: dict[str, dict[str, Any]] = {}
    for tool in tools if isinstance(tools, list) else []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for decl in declarations if isinstance(declarations, list) else []:
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                schema = decl.get("parameters") or decl.get("parametersJsonSchema") or {}
                functions[decl["name"]] = schema if isinstance(schema, dict) else {}
    return functions


_VERBS = frozenset({"get", "set", "fetch", "lookup", "look", "find", "check", "search", "query", "call", "do", "run"})
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def topic_words(name: str) -> list[str]:
    """What a function is about: its name's words without a leading verb (`get_weather` -> weather)."""
    words = [w.lower() for w in _NAME_WORDS.findall(name)]
    while len(words) > 1 and words[0] in _VERBS:
        words = words[1:]
    return words


def called_function(user_text: str, functions: dict[str, dict[str, Any]]) -> str | None:
    """The first declared function the user's text asks for: its name occurs in the text, or every word
    of its topic does (`get_weather` for "What's the weather in Paris?"), case-insensitive."""
    lowered = user_text.lower()
    said = set(re.findall(r"[a-z0-9]+", lowered))
    return next((name for name in functions if name.lower() in lowered), None) or next(
        (name for name in functions if (words := topic_words(name)) and all(w in said for w in words)), None)


def sample_args(schema: dict[str, Any]) -> dict[str, Any]:
    """Deterministic arguments: every *required* parameter gets a placeholder of its type."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    args: dict[str, Any] = {}
    for name in required if isinstance(required, list) else []:
        prop = properties.get(name)
        kind = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(kind, list):  # JSON Schema allows ["string", "null"]
            kind = next((k for k in kind if k != "null"), None)
        # OpenAPI Schema types are upper-case on the wire (STRING), JSON Schema ones lower-case.
        kind = kind.lower() if isinstance(kind, str) else None
        if kind == "string":
            args[name] = "sample"
        elif kind in ("integer", "number"):
            args[name] = 1
        elif kind == "boolean":
            args[name] = True
        else:
            args[name] = None
    return args


# --- streaming -----------------------------------------------------------------------------------------


def split_text(text: str) -> list[str]:
    """Split an answer into 3-6 word-aligned chunks (fewer if it has fewer words); ''.join() == text."""
    words = _WORDS.findall(text)
    if not words:
        return [text] if text else []
    count = min(len(words), max(3, min(6, math.ceil(len(words) / 3))))
    return ["".join(words[i * len(words) // count : (i + 1) * len(words) // count]) for i in range(count)]


def spread(n_items: int, n_slots: int) -> list[int]:
    """Slot index for each of n_items spread evenly over n_slots (used to interleave transcripts)."""
    return [i * n_slots // n_items for i in range(n_items)] if n_slots else [0] * n_items


# --- usage ---------------------------------------------------------------------------------------------


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)


def audio_tokens(n_bytes: int, rate: int) -> int:
    return math.ceil(n_bytes / (2 * rate) * AUDIO_TOKENS_PER_SECOND)


def usage_metadata(backend: str, prompt: dict[str, int], response: dict[str, int]) -> dict[str, Any]:
    """usageMetadata of one turn. `prompt`/`response` map a modality (TEXT, AUDIO) to a token count.

    AI Studio spells the output side `responseTokenCount`/`responseTokensDetails`, Vertex
    `candidatesTokenCount`/`candidatesTokensDetails` (docs/protocol-notes.md §4).
    """
    out_name = "candidates" if backend == "vertex" else "response"
    prompt_total, response_total = sum(prompt.values()), sum(response.values())

    def details(counts: dict[str, int]) -> list[dict[str, Any]]:
        return [{"modality": m, "tokenCount": n} for m, n in counts.items() if n]

    return {
        "promptTokenCount": prompt_total,
        f"{out_name}TokenCount": response_total,
        "totalTokenCount": prompt_total + response_total,
        "promptTokensDetails": details(prompt),
        f"{out_name}TokensDetails": details(response),
    }

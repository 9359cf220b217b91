"""The model capability table (`mappings/models.yaml`): which Gemini Live model can do what.

The table is data; this module only matches a model id to its row, applies a config entry's
`model_info` overrides and resolves the backend-dependent columns. The translator sees the result as
`config.capabilities`, and the simulator behaves by the same rows.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from livegate.mapping.errors import MappingError
from livegate.mapping.yamlpos import Located
from livegate.paths import MAPPINGS_DIR, SCHEMAS_DIR

# Columns listing the backends where something holds; a session sees them as booleans for its backend.
BACKEND_COLUMNS = ("transparent_resumption", "affective_dialog")


@cache
def _schema() -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "models.schema.json").read_text())


def short_model_id(model: str) -> str:
    """`gemini-x` from `gemini-x`, `models/gemini-x` or a Vertex resource path."""
    return model.rsplit("models/", 1)[-1] if "models/" in model else model


@dataclass(frozen=True)
class ModelTable:
    default: dict[str, Any]
    rows: tuple[dict[str, Any], ...]

    @classmethod
    def load(cls, path: str | Path | None = None, *, file_label: str | None = None) -> ModelTable:
        """Read and check a models.yaml; raises MappingError naming file:line:column."""
        path = Path(path) if path else MAPPINGS_DIR / "models.yaml"
        doc = Located(file_label or str(path), path.read_text())
        validator = jsonschema.Draft202012Validator(_schema())
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc.data))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            raise MappingError(doc.position(tuple(error.absolute_path)), f"{where}: {error.message}")
        return cls(default=doc.data["default"], rows=tuple(doc.data["models"]))

    def row(self, model: str) -> dict[str, Any]:
        """The row for a model id in any spelling: the first matching pattern, else the default row."""
        name = short_model_id(model)
        for row in self.rows:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in row["match"]):
                return row
        return {**self.default, "family": "default"}

    def price_model(self, model: str) -> str:
        """The model whose price the simulator charges when imitating `model`: its row's `price` (the default
        row's for a model no row matches); a row whose price is null: the model itself (an unknown cost)."""
        return str(self.row(model).get("price") or model)

    def capabilities(self, model: str, backend: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a session on `model` over `backend` can use, with `model_info` overrides applied."""
        row = {k: v for k, v in self.row(model).items() if k not in ("match", "price")}
        row.update(known_overrides(overrides))
        for column in BACKEND_COLUMNS:
            row[column] = backend in row[column]
        row["model"] = short_model_id(model)
        return row


def known_overrides(model_info: dict[str, Any] | None) -> dict[str, Any]:
    """The capability columns in a config entry's `model_info` (other keys, e.g. LiteLLM's, are ignored)."""
    columns = _schema()["$defs"]["columns"]
    return {k: v for k, v in (model_info or {}).items() if k in columns}


def check_overrides(model_info: Any, where: str) -> str | None:
    """A message naming the first invalid capability column of `model_info`, or None when it is fine."""
    if model_info is None:
        return None
    if not isinstance(model_info, dict):
        return f"{where}: expected a mapping"
    schema = _schema()
    for key, value in known_overrides(model_info).items():
        column = {"$defs": schema["$defs"], **schema["$defs"]["columns"][key]}
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(column).iter_errors(value))
        if error is not None:
            return f"{where}.{key}: {error.message}"
    return None


@cache
def _features_schema() -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "gemini_features.schema.json").read_text())


def check_features(features: Any, capabilities: dict[str, Any], where: str) -> str | None:
    """A message naming the first `gemini_features` entry that is malformed or that the model cannot take
    (by its capability row), or None when all is well."""
    if features is None:
        return None
    if not isinstance(features, dict):
        return f"{where}: expected a mapping"
    validator = jsonschema.Draft202012Validator(_features_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(features))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        return f"{where}{'.' + path if path else ''}: {error.message}"
    caps, model = capabilities, capabilities.get("model", "?")
    thinking = caps["thinking"]
    problems = [
        ("google_search", features.get("google_search") and not caps["google_search"], "has no googleSearch tool"),
        ("code_execution", features.get("code_execution") and not caps["code_execution"], "has no codeExecution tool"),
        ("affective_dialog", "affective_dialog" in features and not caps["affective_dialog"],
         "takes no enableAffectiveDialog on this backend"),
        ("proactive_audio", "proactive_audio" in features and caps["proactive_audio"] == "none",
         "takes no proactivity"),
        ("proactive_audio", features.get("proactive_audio") is False and caps["proactive_audio"] == "always",
         "always has proactive audio on (false is refused)"),
        ("thinking_level", "thinking_level" in features and thinking not in ("level", "required"),
         "takes no thinkingLevel"),
        ("thinking_budget", "thinking_budget" in features and thinking not in ("budget", "required"),
         "takes no thinkingBudget"),
        ("thinking_budget", "thinking_budget" in features and "thinking_level" in features,
         "takes one of thinkingLevel and thinkingBudget, not both"),
        ("include_thoughts", "include_thoughts" in features and thinking == "none", "has no thinking setting"),
        ("media_resolution", "media_resolution" in features and not (caps["image_input"] or caps["video_input"]),
         "takes no images or video"),
        ("function_behavior", features.get("function_behavior") == "non_blocking" and not caps["non_blocking_tools"],
         "takes no NON_BLOCKING (asynchronous) functions"),
        ("function_behavior", features.get("function_behavior") == "blocking" and not caps["blocking_tools"],
         "takes only NON_BLOCKING (asynchronous) functions"),
    ]
    for name, failed, reason in problems:
        if failed:
            return f"{where}.{name}: the model {model} {reason}"
    return None


@cache
def shipped_table() -> ModelTable:
    """The table shipped in mappings/ (what the simulator reads)."""
    return ModelTable.load()

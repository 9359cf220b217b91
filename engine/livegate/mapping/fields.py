"""The declared shape of the session state, below its keys: what `session.item.output_index` may name.

mappings/state.yaml declares every key; an object key also says what it holds, in one of four ways:

    fields: {name: {type, meaning}, ...}    ours, closed: only these fields (each may nest the same way)
    values: {type, meaning}                 a map from data keys (call ids, item ids) to values like this
    schema: openai/common.json#/$defs/...   a shape someone else defines: the fields that JSON schema declares
    open: <why>                             not checked (Gemini's usage, as it came)

An array may declare its elements with `items:`. The loader walks every session path a rule, shape or
fragment reads or writes through these declarations, so a typo anywhere along the path is a load error
with a did-you-mean; the test suite checks the values the rules actually store against the `fields`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

ELEMENT = "[]"  # a path step into an array's elements (`x[0]`, `x[*]`, `x[?...]`)
Step = str
Walkable = Union["FieldSpec", "SchemaFields", None]  # None: open, nothing below is checked

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}
_DATA = (str, bool, int, float, dict, list)


class Undeclared(Exception):
    """A path step the declarations do not allow; the message completes "session.a.b ..."."""


def did_you_mean(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class FieldSpec:
    """A declared value: its type, and for an object or array what it holds."""

    type: str
    meaning: str = ""
    fields: dict[str, FieldSpec] | None = None
    values: FieldSpec | None = None
    schema: SchemaFields | None = None
    items: FieldSpec | None = None

    def child(self, step: Step) -> Walkable:
        if self.type == "stream":
            raise Undeclared("holds a transform's state, which has no fields")
        if step == ELEMENT:
            return self.items if self.type == "array" else None
        if self.type != "object":
            raise Undeclared(f"is declared as {self.type}, not an object with fields")
        if self.fields is not None:
            if step not in self.fields:
                raise Undeclared(f"has no field {step} in mappings/state.yaml{did_you_mean(step, self.fields)}")
            return self.fields[step]
        if self.values is not None:
            return self.values
        if self.schema is not None:
            return self.schema.child(step)
        return None

    def problems(self, value: Any, where: str) -> list[str]:
        """What is wrong with a stored `value` against this declaration (type, undeclared fields)."""
        if self.type == "stream":
            return [] if not isinstance(value, _DATA) else [f"{where} should hold a transform's state, holds data"]
        if not isinstance(value, JSON_TYPES[self.type]) or (self.type != "boolean" and isinstance(value, bool)):
            return [f"{where} should be {self.type}, holds {type(value).__name__}: {value!r:.80}"]
        found: list[str] = []
        if self.fields is not None and isinstance(value, dict):
            for name, item in value.items():
                spec = self.fields.get(name)
                if spec is None:
                    found.append(f"{where}.{name} is not a declared field in mappings/state.yaml")
                elif item is not None:
                    found += spec.problems(item, f"{where}.{name}")
        elif self.values is not None and isinstance(value, dict):
            for name, item in value.items():
                found += self.values.problems(item, f"{where}.{name}")
        elif self.items is not None and isinstance(value, list):
            for index, item in enumerate(value):
                found += self.items.problems(item, f"{where}[{index}]")
        return found


def walk(spec: Walkable, steps: tuple[Step, ...]) -> tuple[int, str] | None:
    """(index of the offending step, what is wrong) for a path below a declared value, None if it is fine."""
    for index, step in enumerate(steps):
        if spec is None:
            return None
        try:
            spec = spec.child(step)
        except Undeclared as exc:
            return index, str(exc)
    return None


class SchemaFiles:
    """JSON schema files under schemas/, loaded once, for the `schema:` declarations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, Any] = {}

    def document(self, file: str) -> Any:
        if file not in self._files:
            self._files[file] = json.loads((self.root / file).read_text())
        return self._files[file]

    def resolve(self, file: str, ref: str) -> tuple[str, Any]:
        """`common.json#/$defs/x` or `#/$defs/x`, relative to `file`: (its file, the schema there)."""
        target, _, pointer = ref.partition("#")
        if target:
            file = str(Path(file).parent / target)
        node = self.document(file)
        for part in filter(None, pointer.split("/")):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return file, node

    def fields(self, ref: str) -> SchemaFields:
        """The declaration `schema: <file>#<pointer>` names (raises KeyError or OSError when it names nothing)."""
        file, _, pointer = ref.partition("#")
        return SchemaFields(self, (self.resolve(file, f"#{pointer}"),))


@dataclass(frozen=True)
class SchemaFields:
    """The values a JSON schema allows at one place, walked by field name.

    A name is declared when some branch (`$ref`, `allOf`/`anyOf`/`oneOf`, `if`/`then`/`else`) lists it
    under `properties`; a schema's `additionalProperties` schema declares every other name; `true`, or
    `patternProperties`, leaves the names open.
    """

    files: SchemaFiles = field(repr=False, compare=False)
    nodes: tuple[tuple[str, Any], ...]

    def _branches(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        pending = list(self.nodes)
        seen: set[int] = set()
        while pending:
            file, node = pending.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            seen.add(id(node))
            out.append((file, node))
            if "$ref" in node:
                pending.append(self.files.resolve(file, node["$ref"]))
            for key in ("allOf", "anyOf", "oneOf"):
                pending += [(file, branch) for branch in node.get(key, ())]
            pending += [(file, node[key]) for key in ("then", "else") if key in node]
        return out

    def child(self, step: Step) -> Walkable:
        branches = self._branches()
        if step == ELEMENT:
            items = [(file, node["items"]) for file, node in branches if isinstance(node.get("items"), dict)]
            return SchemaFields(self.files, tuple(items)) if items else None
        found = [(file, node["properties"][step]) for file, node in branches if step in node.get("properties", {})]
        if found:
            return SchemaFields(self.files, tuple(found))
        if any(node.get("additionalProperties") is True or "patternProperties" in node for _, node in branches):
            return None
        extra = [(file, node["additionalProperties"]) for file, node in branches
                 if isinstance(node.get("additionalProperties"), dict)]
        if extra:
            return SchemaFields(self.files, tuple(extra))
        names = {name for _, node in branches for name in node.get("properties", {})}
        if not names:
            raise Undeclared(f"has no fields in its schema ({step} is not one)")
        raise Undeclared(f"has no field {step} in its schema{did_you_mean(step, names)}")


# -- the session paths an expression reads ------------------------------------------------------------

def session_paths(node: dict[str, Any], aliases: dict[str, tuple[Step, ...]] | None = None
                  ) -> list[tuple[Step, ...]]:
    """The `session.<key>...` paths a JMESPath AST reads, as steps (`session.items[0].id` is
    ("items", ELEMENT, "id")); a path stops where a step is not a plain field or index. `aliases` maps
    `let` names bound to a session path (`closing: "=session.item"`) to that path."""
    found: list[tuple[Step, ...]] = []
    _collect(node, found, aliases or {})
    return found


def _collect(node: dict[str, Any], found: list[tuple[Step, ...]], aliases: dict[str, tuple[Step, ...]]) -> None:
    children = node.get("children", [])
    if node["type"] == "subexpression" and children:
        head = children[0]
        root = head["value"] if head["type"] == "field" else None
        prefix = () if root == "session" else aliases.get(root) if root else None
        if prefix is not None:
            steps = list(prefix)
            for child in children[1:]:
                if not _step(child, steps):
                    break
            if len(steps) > len(prefix):
                found.append(tuple(steps))
    for child in children:
        if isinstance(child, dict):
            _collect(child, found, aliases)


def _step(node: dict[str, Any], steps: list[Step]) -> bool:
    """Append what `node` (one step of a dotted path) names; False when the path cannot be followed further."""
    kind, children = node["type"], node.get("children", [])
    if kind == "field":
        steps.append(node["value"])
        return True
    if kind == "index_expression":  # `items[0]`: one element; a slice keeps the array, and the path ends
        if not _step(children[0], steps):
            return False
        for child in children[1:]:
            if child["type"] != "index":
                return False
            steps.append(ELEMENT)
        return True
    if kind in ("projection", "filter_projection", "value_projection", "flatten") and children:
        _step(children[0], steps)  # the right-hand side reads each element: not followed
    return False


def session_path_of(node: dict[str, Any]) -> tuple[Step, ...] | None:
    """The path of an expression that is nothing but `session.a.b` (a `let` alias), else None."""
    if node["type"] != "subexpression" or node["children"][0] != {"type": "field", "children": [], "value": "session"}:
        return None
    rest = node["children"][1:]
    if not all(child["type"] == "field" for child in rest):
        return None
    return tuple(child["value"] for child in rest)

"""Loading `mappings/`: schema check, expression compilation, include expansion, all at startup.

Layout (the folder decides what a file is):
    client/<event type>.yaml      rules for one OpenAI client event type
    upstream/<field>.yaml         rules for one top-level field of a Gemini frame
    lifecycle/<moment>.yaml       rules for connection moments (connect, upstream_idle, upstream_closed, user_idle,
                                  upstream_resume, response_refused, guardrail_blocked...)
    shared/<name>.yaml            rule fragments, inlined by `- include: <name>`
    shapes/<topic>.yaml           named templates, applied with `shape('name', value)`
    dialects/<name>.yaml          a client dialect as a reshape table over the canonical GA events
    tables.yaml                   plain data visible to expressions as `tables`
    models.yaml                   capabilities (livegate.translation.capabilities), seen as `config.capabilities`
    resumption.yaml               the session core's questions and switching policy (livegate.translation.resumption)
    guardrails.yaml               what the guardrails check (livegate.translation.guarding)
    dispatch.yaml                 the order of fields within one Gemini frame
    state.yaml                    the session state keys, their writers, and the lifecycle table

Checked here, besides the schema: every `session.<key>...` path read or written is declared in
state.yaml down to its last field (mapping/fields.py), every `set` and `transform` comes from a file
allowed to write its key, and rules use `let`, `transform`, `refuse` and `for_each` together only in
ways that mean what they say. Long expressions are noted as lint warnings (`Mappings.warnings`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jmespath
import jsonschema

from livegate.mapping.errors import MappingError, MappingWarning, Position
from livegate.mapping.expressions import (
    WHEN_KEY,
    Build,
    Expression,
    compile_expression,
    compile_template,
    is_expression,
    object_fields,
)
from livegate.mapping.fields import (
    ELEMENT,
    FieldSpec,
    SchemaFiles,
    Step,
    Undeclared,
    did_you_mean,
    session_path_of,
    session_paths,
    walk,
)
from livegate.mapping.index import RuleIndex
from livegate.mapping.plan import Condition
from livegate.mapping.state import KeySpec, StateSpec
from livegate.mapping.transforms import STEPS, Transform
from livegate.mapping.wire import WireTemplate, compile_wire
from livegate.mapping.yamlpos import Located, Path_
from livegate.paths import MAPPINGS_DIR, SCHEMAS_DIR

RULE_FOLDERS = ("client", "upstream", "lifecycle")
_HOLDS = ("fields", "values", "schema", "open")  # how a state.yaml object says what it holds
LIFECYCLE_MOMENTS = ("connect", "upstream_idle", "upstream_closed", "upstream_resume", "user_idle", "mcp_listed",
                     "mcp_called", "side_response", "guardrail_blocked", "response_refused",
                     "watchdog")


@dataclass(frozen=True)
class Emit:
    to: str  # "client", "upstream", "log", "mcp" (a request to an MCP server) or "generate" (an out-of-band
    # response's generateContent call): the last two are commands the pump carries out
    when: Expression | None
    message: Build
    wire: WireTemplate | None = None  # a client message pre-serialised (mapping/wire.py)


@dataclass(frozen=True)
class Rule:
    name: str
    where: str  # file:line, for traces and errors
    when: Expression | None = None
    for_each: Expression | None = None
    as_: str = "item"
    lets: tuple[tuple[str, Build], ...] = ()
    sets: tuple[tuple[tuple[str, ...], Build], ...] = ()
    transforms: tuple[Transform, ...] = ()  # stateful steps, after the lets (mapping/transforms.py)
    emits: tuple[Emit, ...] = ()
    stop: bool = False
    skip: int = 0  # a guarded include: when `when` is false, skip this many following rules
    lets_first: bool = False  # `when` reads a `let` name: evaluate the lets before the condition
    local_names: tuple[str, ...] = ()  # the `let` and `transform` names, dropped from the scope after the rule


@dataclass(frozen=True)
class RuleFile:
    on: str
    file: str
    rules: tuple[Rule, ...]

    @cached_property
    def index(self) -> RuleIndex:
        """The rules an input can trigger, by the input's shape (mapping/index.py); built at first use."""
        return RuleIndex(self.rules)


@dataclass(frozen=True)
class Reshape:
    drop: bool = False
    build: Build | None = None  # a template merged over the event
    keys: tuple[str, ...] = ()  # the fields the template sets (or removes, when they come out null)


@dataclass
class Mappings:
    """Everything in mappings/, compiled. Shared, read-only, by every translator."""

    root: Path
    client: dict[str, RuleFile] = field(default_factory=dict)
    upstream: dict[str, RuleFile] = field(default_factory=dict)
    lifecycle: dict[str, RuleFile] = field(default_factory=dict)
    shapes: dict[str, Build] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    dialects: dict[str, dict[str, dict[str, Reshape]]] = field(default_factory=dict)
    upstream_fields: tuple[str, ...] = ()
    idle_after_ms: int = 250
    continuation_wait_ms: int = 1000
    state: StateSpec = field(default_factory=StateSpec)
    files: list[str] = field(default_factory=list)
    warnings: list[MappingWarning] = field(default_factory=list)  # lint's: the mappings load, but read badly
    models: Any = None  # livegate.translation.capabilities.ModelTable, from models.yaml
    resumption: Any = None  # livegate.translation.resumption.ResumptionPolicy, from resumption.yaml
    guarding: Any = None  # livegate.translation.guarding.GuardQuestions, from guardrails.yaml

    def rule_files(self) -> list[RuleFile]:
        return [*self.client.values(), *self.upstream.values(), *self.lifecycle.values()]


@cache
def _mapping_schema() -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / "mapping.schema.json").read_text())


def _check(doc: Located, kind: str) -> None:
    schema = {**_mapping_schema(), "$ref": f"#/$defs/{kind}"}
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc.data))
    if error is not None:
        path = tuple(error.absolute_path)
        where = ".".join(str(p) for p in path) or "(top level)"
        raise MappingError(doc.position(path), f"{where}: {error.message}")


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.result = Mappings(root=root)
        self.fragments: dict[str, Located] = {}
        self.problems: list[MappingError] = []  # state errors: all reported at once, in file order
        self.docs: list[Located] = []
        self.streams: dict[str, tuple[str, str]] = {}  # state key -> (the state its steps keep, first step's file:line)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)

    def read(self, path: Path, kind: str) -> Located:
        doc = Located(self.rel(path), path.read_text())
        _check(doc, kind)
        self.result.files.append(doc.file)
        self.docs.append(doc)
        return doc

    def load(self) -> Mappings:
        root = self.root
        if not root.is_dir():
            raise MappingError(None, f"mappings folder not found: {root}")
        tables = root / "tables.yaml"
        if tables.exists():
            doc = self.read(tables, "tables_file")
            self.result.tables = doc.data or {}
        self.load_state(self.read(root / "state.yaml", "state_file"))
        from livegate.translation.capabilities import (
            ModelTable,  # here: livegate.translation.capabilities imports this package
        )
        from livegate.translation.resumption import ResumptionPolicy

        models = root / "models.yaml"
        self.result.models = ModelTable.load(models, file_label=self.rel(models)) if models.exists() else None
        if (root / "resumption.yaml").exists():
            self.result.resumption = ResumptionPolicy.load(root, self.result.state)
        if (root / "guardrails.yaml").exists():
            from livegate.translation.guarding import GuardQuestions

            self.result.guarding = GuardQuestions.load(root, self.result.state)
        dispatch = self.read(root / "dispatch.yaml", "dispatch_file")
        self.result.upstream_fields = tuple(dispatch.data["upstream_fields"])
        self.result.idle_after_ms = dispatch.data.get("idle_after_ms", self.result.idle_after_ms)
        self.result.continuation_wait_ms = dispatch.data.get("continuation_wait_ms", self.result.continuation_wait_ms)
        for path in sorted((root / "shared").glob("*.yaml")):
            self.fragments[path.stem] = self.read(path, "fragment_file")
        for path in sorted((root / "shapes").glob("*.yaml")):
            doc = self.read(path, "shapes_file")
            for name, template in doc.data["shapes"].items():
                if name in self.result.shapes:
                    raise MappingError(doc.position(("shapes", name)), f"shape {name!r} is defined twice")
                self.result.shapes[name] = compile_template(doc, ("shapes", name), template)
                self.check_reads(doc, ("shapes", name), template)
        for folder in RULE_FOLDERS:
            target: dict[str, RuleFile] = getattr(self.result, folder)
            for path in sorted((root / folder).glob("*.yaml")):
                doc = self.read(path, "rules_file")
                on = doc.data["on"]
                if on != path.stem:
                    raise MappingError(doc.position(("on",)), f"`on: {on}` must match the file name {path.name}")
                target[on] = RuleFile(on, doc.file, tuple(self.rules(doc, ("rules",), doc.data["rules"], ())))
        for path in sorted((root / "dialects").glob("*.yaml")):
            self.load_dialect(self.read(path, "dialect_file"))
        self.cross_check(dispatch)
        # A fragment is compiled once per include: note each warning once.
        warnings = {str(w): w for doc in self.docs for w in doc.warnings}.values()
        self.result.warnings = sorted(warnings, key=lambda w: (w.position.file, w.position.line, w.position.column))
        if self.problems:  # fragments are checked once per include: report each problem once
            unique = list(dict.fromkeys(str(p) for p in self.problems))
            first = self.problems[0]
            raise MappingError(first.position, "\n".join(unique)[len(str(first.position)) + 2:])
        return self.result

    def load_state(self, doc: Located) -> None:
        state = self.result.state
        schemas = SchemaFiles(SCHEMAS_DIR)
        for name, spec in doc.data["keys"].items():
            state.keys[name] = KeySpec(name=name, writers=frozenset(spec["writers"]),
                                       **self.declaration(doc, ("keys", name), spec, schemas))
        lifecycle = doc.data["lifecycle"]
        state.states = tuple((name, compile_expression(doc, ("lifecycle", "states", name), condition))
                             for name, condition in lifecycle["states"].items())
        for name, condition in lifecycle["states"].items():
            self.check_reads(doc, ("lifecycle", "states", name), condition)
        names = set(lifecycle["states"])
        for i, row in enumerate(lifecycle["transitions"]):
            for end in ("from", "to"):
                if row[end] not in names:
                    raise MappingError(doc.position(("lifecycle", "transitions", i, end)),
                                       f"{row[end]!r} is not one of the lifecycle states {sorted(names)}")
            for source in row["on"]:
                key = (row["from"], source)
                state.transitions[key] = state.transitions.get(key, frozenset()) | {row["to"]}

    def declaration(self, doc: Located, path: Path_, raw: dict[str, Any], schemas: SchemaFiles) -> dict[str, Any]:
        """The FieldSpec arguments of a declaration in state.yaml: a key, or a field at any depth."""
        kinds = [kind for kind in _HOLDS if kind in raw]
        name = ".".join(str(step) for step in path if step not in ("keys", "fields"))
        if raw["type"] == "object" and len(kinds) != 1:
            raise MappingError(doc.position(path), f"session.{name} is an object: say what it holds with one of "
                               "`fields` (ours, closed), `values` (a map from ids), `schema` (a shape someone else "
                               f"defines) or `open: true`{'; it has ' + ', '.join(kinds) if kinds else ''}")
        if raw["type"] != "object" and kinds:
            raise MappingError(doc.position((*path, kinds[0])), f"session.{name} is {raw['type']}: only an object "
                               f"has `{kinds[0]}`")
        if "items" in raw and raw["type"] != "array":
            raise MappingError(doc.position((*path, "items")), f"session.{name} is {raw['type']}: only an array "
                               "has `items`")
        args: dict[str, Any] = {"type": raw["type"], "meaning": raw.get("meaning", "")}
        if "fields" in raw:
            args["fields"] = {name: FieldSpec(**self.declaration(doc, (*path, "fields", name), spec, schemas))
                              for name, spec in raw["fields"].items()}
        for part in ("values", "items"):
            if part in raw:
                args[part] = FieldSpec(**self.declaration(doc, (*path, part), raw[part], schemas))
        if "schema" in raw:
            try:
                args["schema"] = schemas.fields(raw["schema"])
            except (OSError, KeyError, TypeError, ValueError) as exc:
                raise MappingError(doc.position((*path, "schema")), f"schema {raw['schema']!r} names no schema "
                                   f"under schemas/ ({type(exc).__name__}: {exc})") from exc
        return args

    # -- declared state: every session path read or written --------------------------------------------------

    def check_reads(self, doc: Located, path: Path_, value: Any, aliases: dict[str, tuple[Step, ...]] | None = None
                    ) -> None:
        """Every `session.<key>...` path an expression in `value` reads must be declared, to its last field.

        `aliases` are the rule's `let` names bound to a session path: `closing.id` reads session.<path>.id."""
        if isinstance(value, dict):
            for key, item in value.items():
                self.check_reads(doc, (*path, key), item, aliases)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check_reads(doc, (*path, i), item, aliases)
        elif is_expression(value):
            try:
                parsed = jmespath.compile(value[1:]).parsed
            except jmespath.exceptions.JMESPathError:
                return  # compiling it reports the syntax error, with a caret
            for steps in dict.fromkeys(session_paths(parsed, aliases)):
                problem = self.undeclared(steps, "read")
                if problem is not None:
                    index, message = problem
                    self.problems.append(self.located_in_expression(doc, path, steps, index, message))

    def undeclared(self, steps: tuple[Step, ...], verb: str) -> tuple[int, str] | None:
        """(offending step, message) for a session path that is not declared (or not to be read or written)."""
        state = self.result.state
        problem = state.misuse(steps, verb)
        if problem is None and state.keys[steps[0]].type == "stream":
            return 0, (f"session.{steps[0]} holds a transform's state: only a `transform` step names it "
                       "(as its `state:`); no expression reads it and no `set` writes it")
        return problem

    def located_in_expression(self, doc: Located, path: Path_, steps: tuple[Step, ...], index: int,
                              message: str) -> MappingError:
        """The error at the offending field inside the expression at `path`, with a caret when it is found."""
        bad = steps[index]
        fields: list[str] = []
        for step in reversed(steps[: index + 1]):  # the dotted run of fields that ends at the offending one
            if step == ELEMENT:
                break
            fields.insert(0, step)
        for text in (f".{'.'.join(fields)}", f".{bad}"):
            found = doc.find_text(path, text)
            if found is not None:
                column = found.column + len(text) - len(bad)
                return MappingError(Position(doc.file, found.line, column), message, doc.source_line(found.line),
                                    column)
        return MappingError(doc.position(path), message)

    def check_writes(self, doc: Located, path: Path_, target: str, value: Any) -> None:
        """A `set` of `session.<key>...` must name a declared key this file may write and a declared field
        path below it (no phantom objects); an object it writes must hold declared fields only."""
        keys = tuple(target.split(".")[1:])
        here = (*path, "set", target)
        where = doc.key_position(here)
        if not keys:
            self.problems.append(MappingError(where, f"`set: {target}`: the session as a whole cannot be replaced"))
            return
        spec = self.result.state.keys.get(keys[0])
        writer = _in_root(doc.file)
        if spec is None:
            problem = (f"`set: {target}`: session.{keys[0]} is not declared in mappings/state.yaml"
                       f"{did_you_mean(keys[0], self.result.state.keys)}")
        elif spec.type == "stream":
            problem = f"`set: {target}`: session.{keys[0]} holds a transform's state; only its transform steps write it"
        elif writer not in spec.writers:
            problem = (f"`set: {target}`: {writer} may not write session.{keys[0]} "
                       f"(writers in mappings/state.yaml: {', '.join(sorted(spec.writers))})")
        else:
            nested = walk(spec, keys[1:])
            if nested is None:
                self.check_written_fields(doc, here, value, self.spec_at(spec, keys[1:]), target)
                return
            index, reason = nested
            column = where.column + len("session.") + len(".".join(keys[: index + 1])) + 1
            where = Position(where.file, where.line, column)
            problem = f"`set: {target}`: session.{'.'.join(keys[: index + 1])} {reason}"
            self.problems.append(MappingError(where, problem, doc.source_line(where.line), column))
            return
        self.problems.append(MappingError(where, problem))

    @staticmethod
    def spec_at(spec: Any, steps: tuple[Step, ...]) -> Any:
        for step in steps:
            if spec is None:
                break
            spec = spec.child(step)
        return spec

    def check_written_fields(self, doc: Located, path: Path_, value: Any, spec: Any, target: str) -> None:
        """The fields of an object a `set` writes (a YAML template, or a `{a: ..., b: ...}` expression)
        must be declared below `spec`."""
        if spec is None:
            return
        if isinstance(value, dict):
            names = [(key, doc.key_position((*path, key)), item) for key, item in value.items() if key != WHEN_KEY]
        elif is_expression(value):
            try:
                parsed = jmespath.compile(value[1:]).parsed
            except jmespath.exceptions.JMESPathError:
                return
            if parsed["type"] != "multi_select_dict":
                return
            names = [(child["value"], doc.find_text(path, f"{child['value']}:") or doc.position(path), None)
                     for child in parsed["children"]]
        else:
            return
        for name, where, item in names:
            try:
                inner = spec.child(name)
            except Undeclared as exc:
                self.problems.append(MappingError(where, f"`set: {target}` writes {name}, but {target} {exc}"))
                continue
            self.check_written_fields(doc, (*path, name), item, inner, f"{target}.{name}")

    def rules(self, doc: Located, path: Path_, rules: list[dict[str, Any]], including: tuple[str, ...]):
        for i, raw in enumerate(rules):
            here = (*path, i)
            if "include" in raw:
                name = raw["include"]
                if name in including:
                    raise MappingError(doc.position(here), f"include cycle: {' -> '.join((*including, name))}")
                fragment = self.fragments.get(name)
                if fragment is None:
                    raise MappingError(doc.position((*here, "include")), f"no fragment mappings/shared/{name}.yaml")
                included = list(self.rules(fragment, ("rules",), fragment.data["rules"], (*including, name)))
                if "when" in raw:  # checked once, before the first included rule
                    pos = doc.position(here)
                    yield Rule(name=f"include {name}", where=f"{doc.file}:{pos.line}", skip=len(included),
                               when=compile_expression(doc, (*here, "when"), raw["when"], Condition))
                yield from included
                continue
            yield self.rule(doc, here, raw)

    def rule(self, doc: Located, path: Path_, raw: dict[str, Any]) -> Rule:
        pos = doc.position(path)

        def expr(key: str, kind: type[Expression] = Expression) -> Expression | None:
            return compile_expression(doc, (*path, key), raw[key], kind) if key in raw else None

        aliases = _aliases(raw.get("let", {}))
        self.check_reads(doc, path, {k: v for k, v in raw.items() if k not in ("set", "transform")}, aliases)
        for target, value in raw.get("set", {}).items():
            self.check_writes(doc, path, target, value)
            self.check_reads(doc, (*path, "set", target), value, aliases)
        lets_first = bool(set(raw.get("let", {})) & _root_names(raw.get("when")))
        if lets_first and "for_each" in raw:
            raise MappingError(doc.position((*path, "when")), "`when` is checked once, before `for_each`, so it "
                               "cannot read a `let` (evaluated per element); test the element in `for_each`'s filter")
        transforms = self.transforms(doc, path, raw, aliases)
        if "refuse" in raw:
            raw = self.refusal(doc, path, raw)
        emits = tuple(
            _emit(e, compile_expression(doc, (*path, "emit", j, "when"), e["when"]) if "when" in e else None,
                  compile_template(doc, (*path, "emit", j, "message"), e["message"]))
            for j, e in enumerate(raw.get("emit", []))
        )
        return Rule(
            name=raw["name"],
            where=f"{doc.file}:{pos.line}",
            when=expr("when", Condition),
            for_each=expr("for_each"),
            as_=raw.get("as", "item"),
            lets=tuple((k, compile_template(doc, (*path, "let", k), v)) for k, v in raw.get("let", {}).items()),
            sets=tuple(
                (tuple(k.split(".")[1:]), compile_template(doc, (*path, "set", k), v))
                for k, v in raw.get("set", {}).items()
            ),
            transforms=transforms,
            emits=emits,
            stop=raw.get("stop", False),
            lets_first=lets_first,
            local_names=(*raw.get("let", {}), *(step.name for step in transforms)),
        )

    def transforms(self, doc: Located, path: Path_, raw: dict[str, Any], aliases: dict[str, tuple[Step, ...]]
                   ) -> tuple[Transform, ...]:
        """`transform: {name: {step, state: session.<key>, <input>: <template>...}}`, checked and compiled."""
        out = []
        lets = set(raw.get("let", {}))
        for name, spec in raw.get("transform", {}).items():
            here = (*path, "transform", name)
            if name in lets:
                raise MappingError(doc.key_position(here), f"`{name}` is both a `let` and a `transform` name")
            kind = STEPS.get(spec["step"])
            if kind is None:
                raise MappingError(doc.position((*here, "step")), f"no transform step {spec['step']!r}"
                                   f"{did_you_mean(spec['step'], STEPS)}; the steps: {', '.join(sorted(STEPS))}")
            given = [key for key in spec if key not in ("step", "state")]
            for unknown in [key for key in given if key not in kind.inputs]:
                raise MappingError(doc.key_position((*here, unknown)), f"transform step {kind.name} takes no "
                                   f"`{unknown}`{did_you_mean(unknown, kind.inputs)} "
                                   f"(its inputs: {', '.join(kind.inputs)})")
            for missing in [key for key in kind.inputs if key not in spec]:
                raise MappingError(doc.position(here), f"transform step {kind.name} needs `{missing}` "
                                   f"(its inputs: {', '.join(kind.inputs)})")
            key = self.stream_key(doc, here, spec["state"], kind)
            self.check_reads(doc, here, {k: spec[k] for k in given}, aliases)
            inputs = tuple((k, compile_template(doc, (*here, k), spec[k])) for k in given)
            out.append(Transform(name, kind, key, inputs))
        readers = {"when": _root_names(raw.get("when")), **{f"let {k}": _root_names(v)
                                                              for k, v in raw.get("let", {}).items()}}
        for where, names in readers.items():
            early = names & {step.name for step in out}
            if early:
                raise MappingError(doc.position((*path, *where.split(" "))), f"`{where}` reads {sorted(early)[0]}, "
                                   "a transform's result: transforms run after `when` and `let`, "
                                   "before `set` and `emit`")
        return tuple(out)

    def stream_key(self, doc: Located, here: Path_, state: str, kind: Any) -> str:
        """The session key a transform keeps its state in: declared `type: stream`, writable by this file, and
        holding one kind of state."""
        key = state.removeprefix("session.")
        spec = self.result.state.keys.get(key)
        where = doc.position((*here, "state"))
        if not state.startswith("session.") or "." in key:
            raise MappingError(where, f"a transform's `state:` is one session key (`session.<key>`), not {state!r}")
        if spec is None:
            raise MappingError(where, f"session.{key} is not declared in mappings/state.yaml"
                               f"{did_you_mean(key, self.result.state.keys)}")
        if spec.type != "stream":
            raise MappingError(where, f"session.{key} is declared as {spec.type}: a transform's state is a key "
                               "declared `type: stream`")
        writer = _in_root(doc.file)
        if writer not in spec.writers:
            raise MappingError(where, f"{writer} may not use session.{key} (writers in mappings/state.yaml: "
                               f"{', '.join(sorted(spec.writers))})")
        first = self.streams.setdefault(key, (kind.stream, f"{doc.file}:{where.line}"))
        if first[0] != kind.stream:
            raise MappingError(where, f"session.{key} holds a {first[0]} ({first[1]}); {kind.name} keeps a "
                               f"{kind.stream}: give it a key of its own")
        return key

    def refusal(self, doc: Located, path: Path_, raw: dict[str, Any]) -> dict[str, Any]:
        """`refuse: {code, param, message}` is an OpenAI error event echoing the client's event_id, then stop."""
        misuse = [key for key in ("emit", "set", "transform", "stop", "for_each") if key in raw]
        if misuse:
            raise MappingError(doc.position((*path, misuse[0])), f"a `refuse` rule cannot also {misuse[0]}: "
                               "a refused event changes nothing and ends the file")
        if not _in_root(doc.file).startswith(("client/", "shared/")):
            raise MappingError(doc.position((*path, "refuse")), "`refuse` answers a client event; "
                               "it belongs in client/ rules (or fragments they include)")
        spec = raw["refuse"]
        error = {"type": spec.get("type", "invalid_request_error"), "code": spec["code"],
                 "message": spec["message"], "param": spec.get("param"), "event_id": "=event.event_id"}
        message = {"type": "error", "error": {k: v for k, v in error.items() if v is not None}}
        return {**{k: v for k, v in raw.items() if k != "refuse"},
                "emit": [{"to": "client", "message": message}], "stop": True}

    def load_dialect(self, doc: Located) -> None:
        tables: dict[str, dict[str, Reshape]] = {}
        for direction in ("from_client", "to_client"):
            table: dict[str, Reshape] = {}
            for event_type, spec in (doc.data.get(direction) or {}).items():
                here = (direction, event_type)
                if spec == "drop":
                    table[event_type] = Reshape(drop=True)
                else:
                    keys = tuple(k for k in spec if k != "$when")
                    table[event_type] = Reshape(build=compile_template(doc, here, spec), keys=keys)
            tables[direction] = table
        self.result.dialects[doc.data["dialect"]] = tables

    def cross_check(self, dispatch: Located) -> None:
        for i, name in enumerate(self.result.upstream_fields):
            if name not in self.result.upstream:
                raise MappingError(dispatch.position(("upstream_fields", i)), f"no mappings/upstream/{name}.yaml")
        for name in self.result.upstream:
            if name not in self.result.upstream_fields:
                raise MappingError(None, f"mappings/upstream/{name}.yaml is not listed in dispatch.yaml")
        for name in self.result.lifecycle:
            if name not in LIFECYCLE_MOMENTS:
                raise MappingError(None, f"mappings/lifecycle/{name}.yaml: unknown moment; one of {LIFECYCLE_MOMENTS}")


def _aliases(lets: dict[str, Any]) -> dict[str, tuple[Step, ...]]:
    """The `let` names bound to nothing but a session path (`closing: "=session.item"`), to that path."""
    out = {}
    for name, value in lets.items():
        if is_expression(value):
            try:
                path = session_path_of(jmespath.compile(value[1:]).parsed)
            except jmespath.exceptions.JMESPathError:
                continue
            if path:
                out[name] = path
    return out


def _in_root(file: str) -> str:
    """`mappings/shared/x.yaml` -> `shared/x`: a file as state.yaml's `writers` name it."""
    return file.split("/", 1)[-1].removesuffix(".yaml")


def _emit(raw: dict[str, Any], when: Expression | None, message: Build) -> Emit:
    """An emit; a client message also gets its pre-serialised form (mapping/wire.py), from the same compiled
    fields as the message (compiling them twice cost about 1.2 MB of idle memory)."""
    wire = None
    if raw["to"] == "client":
        built = object_fields(message)
        wire = compile_wire(raw["message"], built.__getitem__) if built is not None else None
    return Emit(to=raw["to"], when=when, message=message, wire=wire)


def _root_names(source: Any) -> set[str]:
    """The names an expression reads from its scope (`event`, `session`, a `let` name...)."""
    if not is_expression(source):
        return set()
    try:
        return _roots(jmespath.compile(source[1:]).parsed, True)
    except jmespath.exceptions.JMESPathError:
        return set()  # compiling it reports the syntax error, with a caret


def _roots(node: dict[str, Any], at_root: bool) -> set[str]:
    kind, children = node["type"], [c for c in node.get("children", []) if isinstance(c, dict)]
    if kind == "field":
        return {node["value"]} if at_root else set()
    if kind in ("subexpression", "index_expression", "projection", "filter_projection", "value_projection",
                "flatten", "pipe"):  # the first child reads the scope, the rest read its result
        return _roots(children[0], at_root) if children else set()
    found: set[str] = set()
    for child in children:
        found |= _roots(child, at_root)
    return found


def load_mappings(root: str | Path | None = None) -> Mappings:
    """Load and compile every mapping file; raises MappingError naming file:line:column."""
    return _Loader(Path(root) if root else MAPPINGS_DIR).load()

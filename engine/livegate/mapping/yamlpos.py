"""YAML loading that remembers where every value came from, so errors can name file:line:column."""

from __future__ import annotations

from typing import Any

import yaml

from livegate.mapping.errors import MappingError, MappingWarning, Position

Path_ = tuple[str | int, ...]
# libyaml's parser when PyYAML has it (the wheels do): the same nodes and marks, about 5x faster, which
# is most of livegate's start-up spent on mappings/.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Located:
    """Plain data from a YAML file plus the position of each value, keyed by its path."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = text.splitlines()
        self.positions: dict[Path_, tuple[Position, str | None]] = {}
        self.key_positions: dict[Path_, Position] = {}  # where each mapping key is written
        self.last_lines: dict[Path_, int] = {}  # the last line of each scalar (folded ones span several)
        self.warnings: list[MappingWarning] = []  # lint's, noted while compiling
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            self.data: Any = self._build(loader, node, ()) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            pos = Position(file, mark.line + 1, mark.column + 1) if mark else None
            raise MappingError(pos, f"invalid YAML: {exc.problem}") from exc
        finally:
            loader.dispose()

    def _pos(self, node: yaml.Node) -> Position:
        return Position(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def _build(self, loader: yaml.SafeLoader, node: yaml.Node, path: Path_) -> Any:
        style = getattr(node, "style", None)
        self.positions[path] = (self._pos(node), style)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                # Keys are names, taken verbatim: YAML 1.1 would read `on:` as the boolean true.
                if isinstance(key_node, yaml.ScalarNode):
                    key = key_node.value
                else:
                    raise MappingError(self._pos(key_node), "keys must be plain names")
                if key in out:
                    raise MappingError(self._pos(key_node), f"duplicate key {key!r}")
                self.key_positions[(*path, key)] = self._pos(key_node)
                out[key] = self._build(loader, value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(loader, child, (*path, i)) for i, child in enumerate(node.value)]
        self.last_lines[path] = node.end_mark.line + 1
        return loader.construct_object(node, deep=True)

    def position(self, path: Path_) -> Position:
        """The position of the value at `path`, or of its nearest located ancestor."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (Position(self.file, 1, 1), None))[0]

    def key_position(self, path: Path_) -> Position:
        """Where the key of the value at `path` is written (the value's own position if it has no key)."""
        return self.key_positions.get(path) or self.position(path)

    def find_text(self, path: Path_, text: str) -> Position | None:
        """Where `text` first occurs in the scalar at `path` (which may span lines), or None."""
        start = self.position(path)
        last = self.last_lines.get(path, start.line)
        for line in range(start.line, max(last, start.line) + 1):
            source = self.source_line(line)
            column = source.find(text, start.column - 1 if line == start.line else 0)
            if column >= 0:
                return Position(self.file, line, column + 1)
        return None

    def quoted(self, path: Path_) -> bool:
        return self.positions.get(path, (None, None))[1] in ("'", '"')

    def source_line(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

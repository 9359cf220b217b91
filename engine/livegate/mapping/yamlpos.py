"""YAML loading that remembers where every value came from, so errors can name file:line:column."""

from __future__ import annotations

from typing import Any

import yaml

from livegate.mapping.errors import MappingError, Position

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
                out[key] = self._build(loader, value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(loader, child, (*path, i)) for i, child in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def position(self, path: Path_) -> Position:
        """The position of the value at `path`, or of its nearest located ancestor."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (Position(self.file, 1, 1), None))[0]

    def quoted(self, path: Path_) -> bool:
        return self.positions.get(path, (None, None))[1] in ("'", '"')

    def source_line(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

"""Load-time errors that point at the YAML: file:line:column, with a caret under expressions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class MappingError(Exception):
    """A mapping that cannot load. `str()` is ready to print: position, message, optional caret."""

    def __init__(self, position: Position | None, message: str, source_line: str | None = None,
                 caret_column: int | None = None) -> None:
        self.position = position
        self.message = message
        text = f"{position}: {message}" if position else message
        if source_line is not None and caret_column is not None:
            text += f"\n    {source_line}\n    {' ' * (caret_column - 1)}^"
        super().__init__(text)

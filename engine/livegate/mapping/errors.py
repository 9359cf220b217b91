"""Load-time errors and lint warnings that point at the YAML: file:line:column, with a caret under
expressions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def _located(position: Position | None, message: str, source_line: str | None, caret_column: int | None) -> str:
    text = f"{position}: {message}" if position else message
    if source_line is not None and caret_column is not None:
        text += f"\n    {source_line}\n    {' ' * (caret_column - 1)}^"
    return text


class MappingError(Exception):
    """A mapping that cannot load. `str()` is ready to print: position, message, optional caret."""

    def __init__(self, position: Position | None, message: str, source_line: str | None = None,
                 caret_column: int | None = None) -> None:
        self.position = position
        self.message = message
        super().__init__(_located(position, message, source_line, caret_column))


@dataclass(frozen=True)
class MappingWarning:
    """A mapping that loads but reads badly (`livegate lint` prints these; the server does not)."""

    position: Position
    message: str

    def __str__(self) -> str:
        return _located(self.position, f"warning: {self.message}", None, None)

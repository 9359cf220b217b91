"""The manual's tables that copy livegate's own data, rendered so they cannot drift.

Each block sits in a page (README.md or docs/) between a begin marker and an end marker. The suite
(tests/test_docs.py) re-renders every block and fails on any difference; after changing a source, run

    python -m livegate.docgen            # rewrites every block in place, from the repository's root

Blocks: the configuration reference (schemas/config.schema.json), the acceptance table (mappings/tables.yaml),
the session state (mappings/state.yaml), the model capability table (mappings/models.yaml) and the close
codes (livegate/close_codes.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Block:
    name: str
    begin: str  # the whole first line of the block, as rendered
    end: str
    render: Callable[[], str]  # the whole block, markers included


def _config_reference() -> str:
    from livegate.config_schema import render_reference

    return "\n".join([CONFIG_BEGIN, "", render_reference().rstrip("\n"), "", CONFIG_END])


def _acceptance() -> str:
    from livegate.mapping import load_mappings
    from livegate.mapping.policy import render

    return render(load_mappings().tables)


def _state() -> str:
    from livegate.mapping.policy import render_state, state_data

    return render_state(state_data())


def _column_meanings(text: str) -> dict[str, str]:
    """The `# Columns` comment of models.yaml: column name -> meaning (names may share one meaning)."""
    meanings: dict[str, str] = {}
    names: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("# Columns"):
            inside = True
            continue
        if inside and not line.startswith("#"):
            break
        if not inside:
            continue
        body = line[1:]
        if body.startswith("   ") and not body.startswith("    "):  # a column name (then, maybe, its meaning)
            head, _, meaning = body.strip().partition("  ")
            names = [n.strip() for n in head.split(",")]
            meaning = meaning.strip()
        else:
            meaning = body.strip()
        for name in names:
            if meaning:
                meanings[name] = f"{meanings[name]} {meaning}" if name in meanings else meaning
    return meanings


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, int) and value >= 1 << 20:
        return f"{value / (1 << 20):g} MiB"
    return str(value)


def _models() -> str:
    from livegate.paths import MAPPINGS_DIR

    text = (MAPPINGS_DIR / "models.yaml").read_text()
    data = yaml.safe_load(text)
    rows = [*data["models"], {"family": "default", **data["default"]}]
    meanings = _column_meanings(text)
    lines = [MODELS_BEGIN, "", "| family | model ids (`*` any text) |", "|---|---|"]
    lines += [f"| `{row['family']}` | {', '.join(f'`{m}`' for m in row.get('match', [])) or 'any other model'} |"
              for row in rows]
    lines += ["", "| column | meaning | " + " | ".join(f"`{row['family']}`" for row in rows) + " |",
              "|---|---|" + "---|" * len(rows)]
    for column in data["default"]:
        meaning = meanings.get(column, "").replace("|", "\\|")
        lines.append(f"| `{column}` | {meaning} | " + " | ".join(_cell(row[column]) for row in rows) + " |")
    return "\n".join([*lines, "", MODELS_END])


def _close_codes() -> str:
    from livegate.close_codes import TABLE

    where = {"realtime": "`/v1/realtime`", "passthrough": "the Live passthroughs", "both": "both"}
    lines = [CLOSES_BEGIN, "", "| code | on | meaning |", "|---|---|---|"]
    lines += [f"| {c.code} | {where[c.route]} | {c.meaning.replace('|', chr(92) + '|')} |"
              for c in sorted(TABLE, key=lambda c: (c.code, c.route))]
    return "\n".join([*lines, "", CLOSES_END])


CONFIG_BEGIN = "<!-- config-reference: rendered from schemas/config.schema.json by `python -m livegate.docgen` -->"
CONFIG_END = "<!-- /config-reference -->"
MODELS_BEGIN = "<!-- models-table: rendered from mappings/models.yaml by `python -m livegate.docgen` -->"
MODELS_END = "<!-- /models-table -->"
CLOSES_BEGIN = "<!-- close-codes: rendered from engine/livegate/close_codes.py by `python -m livegate.docgen` -->"
CLOSES_END = "<!-- /close-codes -->"


def blocks() -> list[Block]:
    from livegate.mapping.policy import BEGIN, END, STATE_BEGIN, STATE_END

    return [Block("config-reference", CONFIG_BEGIN, CONFIG_END, _config_reference),
            Block("acceptance-table", BEGIN, END, _acceptance),
            Block("state-tables", STATE_BEGIN, STATE_END, _state),
            Block("models-table", MODELS_BEGIN, MODELS_END, _models),
            Block("close-codes", CLOSES_BEGIN, CLOSES_END, _close_codes)]


def _pattern(block: Block) -> re.Pattern[str]:
    return re.compile(re.escape(block.begin) + r".*?" + re.escape(block.end), re.DOTALL)


def found(text: str) -> list[Block]:
    """The blocks a page holds (by their begin marker)."""
    return [block for block in blocks() if block.begin in text]


def rendered(text: str) -> str:
    """`text` with every block it holds rendered afresh."""
    for block in found(text):
        fresh = block.render()
        text = _pattern(block).sub(lambda _: fresh, text)  # noqa: B023 (used at once) a function: no escapes
    return text


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    changed = 0
    for page in pages(root):
        text = page.read_text()
        fresh = rendered(text)
        if fresh != text:
            page.write_text(fresh)
            print(f"rewrote {page.relative_to(root)}")
            changed += 1
    print(f"{changed} page(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The code blocks of README.md and docs/, and how the suite runs each (tests/test_docs.py).

Every fenced block says what it is with a marker comment on the line right above it, invisible on GitHub
and in the built manual: `<!-- test: KIND [ARG] -->`. Without one, `sh` and `python` blocks are `run`,
`yaml` blocks `config` and `diff` blocks `patch`; any other block must be marked. The kinds:

    run [exit=N]   commands (sh) or a script (python), run in a scratch copy of the repository against the
                   page's livegate; must exit 0 (or N)
    server         a command starting livegate: run in the background until the page ends (or the next
                   `server`), on a free port
    output         what the block before printed (stdout and stderr); `...` stands for any text
    config         a livegate config (or a part of one): parsed and checked as livegate loads its config
    file PATH      the content of PATH in the scratch copy (a tutorial's new file)
    patch          a diff applied to the scratch copy (a tutorial's edit)
    google         needs a real Google account or project: never run (a config is still checked)
    setup          one of the README's two set-up commands (test_docs checks them against .ci/run; the
                   first one's `livegate` is started as a `server`, without the install before it)
    suite          runs tests or a benchmark: the files and options it names are checked, it is not run
    diagram        the architecture diagram: every module it names must exist
    illustration   a ```text drawing or protocol sketch that is neither code nor output: not run
    excerpt PATH   lines of the repository's PATH as they are there (`...` for lines left out), so a quoted
                   mapping stays true to the shipped one

So that a page's commands run as a reader types them, the runner rewrites only this: `.venv/bin/` and
`.venv-test/bin/` name the test's own environment, port 4000 is the page's free port (a `server` command
without `--port` gets one), and LIVEGATE_URL points the examples at that port. Variables a shell block
exports are set in the page's later shell blocks, as in the reader's terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"run", "server", "output", "config", "file", "patch", "google", "setup", "suite", "diagram", "illustration",
         "excerpt"}
DEFAULT_KIND = {"sh": "run", "bash": "run", "python": "run", "yaml": "config", "diff": "patch"}
MARKER = re.compile(r"^<!-- test: ([a-z]+)(?: (.*?))? -->$")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")

# Pages other engineers are writing while this test is written; the lead brings each under it when merging
# (their blocks then need markers like every other page's).
NOT_YET_COVERED: set[str] = set()


@dataclass(frozen=True)
class CodeBlock:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    kind: str
    arg: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in found if str(p.relative_to(ROOT)) not in NOT_YET_COVERED]


def code_blocks(page: Path) -> list[CodeBlock]:
    lines = page.read_text().splitlines()
    blocks: list[CodeBlock] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, lang = opening.groups()
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        body = [line[len(indent):] for line in lines[index + 1:end]]
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        kind, arg = (marker.group(1), marker.group(2) or "") if marker else (DEFAULT_KIND.get(lang, ""), "")
        blocks.append(CodeBlock(str(page.relative_to(ROOT)), index + 1, lang, kind, arg, "\n".join(body) + "\n"))
        index = end + 1
    return blocks


def matches(expected: str, actual: str) -> bool:
    """`actual` is `expected`, where `...` stands for any text (trailing spaces and blank edges ignored)."""
    def tidy(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip().splitlines())

    pattern = ".*?".join(re.escape(piece) for piece in tidy(expected).split("..."))
    return re.fullmatch(pattern, tidy(actual), re.DOTALL) is not None

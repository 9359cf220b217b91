"""The front page and the manual stay true: every code block runs (tests/docs_blocks.py says how), generated
tables match their sources, links and the modules the architecture names exist, the site builds strictly,
the README keeps its two set-up commands and .ci/run runs its test command."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from livegate import docgen
from livegate.config import parse_config
from tests.docs_blocks import KINDS, ROOT, CodeBlock, code_blocks, matches, pages

README = ROOT / "README.md"
ALL_BLOCKS = [block for page in pages() for block in code_blocks(page)]
RUNNABLE = {"run", "server", "output", "file", "patch"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the README's set-up ------------------------------------------------------------------------------------

def _setup_commands() -> list[str]:
    return [b.code.strip() for b in code_blocks(README) if b.kind == "setup"]


def test_the_readme_has_two_setup_commands_and_ci_runs_the_test_command() -> None:
    run, test = _setup_commands()  # exactly two: one runs livegate offline, one runs the tests
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command == test, ".ci/run must run exactly the README's test command"
    # Separate environments: running the tests never reinstalls the livegate a reader has running.
    envs = [re.match(r"python3 -m venv (\S+) && \1/bin/pip install -q -e '\.\[([\w,]+)\]' && \1/bin/", c) for c in
            (run, test)]
    assert all(envs), (run, test)
    assert envs[0] and envs[1] and envs[0].group(1) != envs[1].group(1)
    extras = set(_pyproject()["project"]["optional-dependencies"])
    for env in envs:
        assert env and set(env.group(2).split(",")) <= extras, env.group(2)
    assert run.endswith("/bin/livegate") and test.endswith("/bin/python -m pytest -q")


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_run_command_serves_the_simulator_with_a_store_of_its_own(tmp_path: Path) -> None:
    """The first command's `livegate`, as it starts there: no config, the simulator, the embedded store."""
    port = _free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("LIVEGATE_DB")
    with _process([sys.executable, "-m", "livegate.cli", "--port", str(port)], env, tmp_path) as proc:
        _wait_listening(port, proc)
        answer = subprocess.run([sys.executable, str(ROOT / "examples" / "chat.py"), "hi"], capture_output=True,
                                text=True, timeout=60, env={**env, "LIVEGATE_URL": f"http://127.0.0.1:{port}"})
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("[livegate simulator] You said: hi")
    assert (tmp_path / "data" / "livegate" / "livegate.db").exists()


# -- generated tables, links, words -----------------------------------------------------------------------

def test_generated_tables_match_their_sources() -> None:
    seen: set[str] = set()
    for page in docgen.pages(ROOT):
        text = page.read_text()
        seen |= {block.name for block in docgen.found(text)}
        assert docgen.rendered(text) == text, f"{page.relative_to(ROOT)} is stale: run `python -m livegate.docgen`"
    assert seen == {block.name for block in docgen.blocks()}, "every generated table has a page"


def _slug(heading: str) -> str:
    """The anchor MkDocs (and GitHub) give a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def test_the_readme_links_resolve() -> None:
    """The manual's own links are checked by the strict build; the README is outside it."""
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = (ROOT / path) if path else README
        assert target.exists(), link
        if anchor:
            assert anchor in _anchors(target), f"README links to {link}: no such heading"


@pytest.mark.parametrize("topic", ["real Gemini key", "Vertex", "virtual key", "spend", "playground",
                                   "adding an event"])
def test_the_front_page_leads_to_each_topic(topic: str) -> None:
    """A reader finds each from the front page: a README link whose text names it, into the manual."""
    links = re.findall(r"\[([^\]]+)\]\((docs/[^)]+)\)", README.read_text())
    assert any(topic.lower() in text.lower() for text, _ in links), f"no README link about {topic!r}"


def test_no_internal_shorthand_and_no_files_outside_the_repository() -> None:
    for page in pages():
        text = page.read_text()
        where = page.relative_to(ROOT)
        assert not re.search(r"\bissue \d+|\bPROTOCOLS\.md|/work/|§ ?\d", text.replace("protocol-notes §", "")), where
        for path in re.findall(r"`((?:engine|mappings|schemas|tests|bench|examples|fixtures|docs|\.ci)/[^`\s<>{}*]+)`",
                               text):
            assert (ROOT / path.rstrip("/")).exists(), f"{where} names {path}, which does not exist"


# -- the architecture ---------------------------------------------------------------------------------------

def test_the_architecture_names_only_modules_that_exist() -> None:
    page = ROOT / "docs" / "architecture.md"
    diagrams = [b for b in code_blocks(page) if b.kind == "diagram"]
    assert diagrams, "the architecture page has its diagram"
    named = set(re.findall(r"\b((?:engine/livegate|mappings|schemas|fixtures|tests|bench)(?:/[\w.]+)*/?)",
                           page.read_text()))
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path.rstrip("/.")).exists(), f"docs/architecture.md names {path}, which does not exist"
    packages = {p.name for p in (ROOT / "engine" / "livegate").iterdir() if (p / "__init__.py").exists()}
    shown = diagrams[0].code
    assert all(f"{name}/" in shown for name in packages), f"the diagram shows every package: {sorted(packages)}"


# -- the site -----------------------------------------------------------------------------------------------

def test_the_manual_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is in the test extra: pip install -e '.[test]'")
    pytest.importorskip("material", reason="mkdocs-material is in the test extra: pip install -e '.[test]'")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                            "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "configuration-reference" / "index.html").exists()
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)["nav"]
    assert "getting-started.md" in str(nav)


# -- the code blocks ----------------------------------------------------------------------------------------

def test_every_code_block_says_how_it_is_tested() -> None:
    for block in ALL_BLOCKS:
        assert block.kind in KINDS, f"{block.where}: a ```{block.lang} block needs a `<!-- test: KIND -->` marker"
        if block.kind in ("output", "illustration"):
            assert block.lang == "text", f"{block.where}: {block.kind} blocks are ```text"


def _with_env_placeholders(code: str) -> dict[str, str]:
    return {name: f"placeholder-{name.lower()}" for name in re.findall(r"os\.environ/(\w+)", code)
            if name not in os.environ}


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.kind in ("config", "google") and b.lang == "yaml"],
                         ids=lambda b: b.where)
def test_config_blocks_load(block: CodeBlock, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _with_env_placeholders(block.code).items():
        monkeypatch.setenv(name, value)
    parse_config(yaml.safe_load(block.code))


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.kind == "excerpt"], ids=lambda b: b.where)
def test_excerpts_quote_the_shipped_files(block: CodeBlock) -> None:
    source = ROOT / block.arg
    assert source.is_file(), f"{block.where}: {block.arg} does not exist"
    assert matches(f"...\n{block.code}\n...", source.read_text()), f"{block.where}: not what {block.arg} holds"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.kind == "suite"], ids=lambda b: b.where)
def test_suite_commands_name_what_exists(block: CodeBlock) -> None:
    named = re.findall(r"\b((?:tests|bench)/[\w/.]+\.py)", block.code)
    assert named, block.where
    for path in named:
        assert (ROOT / path).exists(), f"{block.where}: {path} does not exist"


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited: {proc.stdout.read() if proc.stdout else ''}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "the server did not start listening"
        time.sleep(0.05)


# Programs a page runs that only some machines have (.ci/run installs them), with their Debian package: a page
# needing one is skipped, saying so, where it is absent (Debian puts haproxy in /usr/sbin, on root's PATH only).
OPTIONAL_TOOLS = {"haproxy": "haproxy"}


class PageRun:
    """One page's blocks, in order, in a scratch copy of the repository (see tests/docs_blocks.py)."""

    def __init__(self, tmp: Path) -> None:
        self.scratch = tmp / "repo"
        shutil.copytree(ROOT, self.scratch, ignore=shutil.ignore_patterns(
            ".git", ".venv*", "site", "__pycache__", "node_modules", ".hypothesis", "*.egg-info"))
        self.port = _free_port()
        self.bin = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PYTHONPATH": str(self.scratch / "engine"),
                    "LIVEGATE_URL": f"http://127.0.0.1:{self.port}", "LIVEGATE_DB": str(tmp / "livegate.db"),
                    "PATH": os.pathsep.join([self.bin, os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])}
        self.stack = contextlib.ExitStack()
        self.server: contextlib.ExitStack | None = None
        self.output: str | None = None

    def rewrite(self, code: str) -> str:
        code = re.sub(r"(?<![\w/.])\.venv(?:-test)?/bin/", lambda _: f"{self.bin}/", code)
        return re.sub(r"\b(127\.0\.0\.1|localhost):4000\b", rf"\1:{self.port}", code)

    def run(self, block: CodeBlock) -> None:
        code = self.rewrite(block.code)
        if block.kind == "output":
            assert self.output is not None, f"{block.where}: an output block follows no command"
            assert matches(block.code, self.output), f"{block.where}: the command printed\n{self.output}"
        elif block.kind == "file":
            target = self.scratch / block.arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        elif block.kind == "patch":
            applied = subprocess.run(["git", "apply", "--verbose", "-"], input=block.code, text=True,
                                     capture_output=True, cwd=self.scratch)
            assert applied.returncode == 0, f"{block.where}: the diff does not apply: {applied.stderr}"
        elif block.kind == "server":
            self.start_server(block, code)
        elif block.kind == "setup" and code.strip().endswith("/bin/livegate"):
            self.start_server(block, code.split("&&")[-1])  # the README's first command, once installed
        elif block.kind == "run":
            self.run_command(block, code)

    def start_server(self, block: CodeBlock, code: str) -> None:
        if self.server is not None:
            self.server.close()
        command = code.strip()
        if "--port" not in command:
            command += f" --port {self.port}"
        self.server = contextlib.ExitStack()
        proc = self.server.enter_context(_process(["bash", "-c", command], self.env, self.scratch))
        _wait_listening(self.port, proc)
        self.output = None

    def run_command(self, block: CodeBlock, code: str) -> None:
        expected = int(block.arg.removeprefix("exit=")) if block.arg.startswith("exit=") else 0
        if block.lang == "python":
            script = self.scratch / "docs_block.py"
            script.write_text(code)
            command = [sys.executable, str(script)]
        else:  # what a block exports is there for the page's next blocks, as in the reader's shell
            program = code.split()[0] if code.split() else ""
            if program in OPTIONAL_TOOLS and shutil.which(program, path=self.env["PATH"]) is None:
                pytest.skip(f"{block.where}: {program} is not installed: apt-get install {OPTIONAL_TOOLS[program]} "
                            "(.ci/run does)")
            exported = self.scratch.parent / "exported.sh"
            command = ["bash", "-eo", "pipefail", "-c",
                       f"[ ! -f {exported} ] || source {exported}\n{code}\nexport -p > {exported}"]
        done = subprocess.run(command, cwd=self.scratch, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=180)
        self.output = done.stdout
        assert done.returncode == expected, f"{block.where}: exit {done.returncode}, printed\n{done.stdout}"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _runnable_pages() -> list[str]:
    return sorted({b.page for b in ALL_BLOCKS if b.kind in RUNNABLE})


@pytest.mark.parametrize("page", _runnable_pages())
def test_the_page_runs_as_written(page: str, tmp_path: Path) -> None:
    run = PageRun(tmp_path)
    try:
        for block in code_blocks(ROOT / page):
            run.run(block)
    finally:
        run.close()

"""Snapshot tests per mapping file, from the cases in fixtures/.

`fixtures/<folder>/<mapping name>/<case>.yaml` is a case for `mappings/<folder>/<mapping name>.yaml`
(`fixtures/dialects/beta/` for the beta dialect). A case is a conversation, fed to a deterministic
Translator one step at a time:

    description: what the case shows
    dialect: ga | beta                    (default ga)
    backend: aistudio | vertex            (default aistudio)
    model: gemini-3.8-live                (default DEFAULT_MODEL; selects the row of mappings/models.yaml)
    model_info: {column: value}           (optional: capability overrides, as a config entry's model_info)
    show_connect: false                   (include the session.created step in the snapshot)
    steps:
      - client: {type: ...}               a client event (also `client_raw: "text"` for a raw frame)
        expect_client: [event types]      optional: the client events this step must produce, in order
        expect_upstream: [field names]    optional: the top-level fields of the Gemini messages produced
      - upstream: {serverContent: ...}    a Gemini frame (`upstream_raw:` text frame, `upstream_binary:`
                                          the same as a binary frame)
      - idle: true                        Gemini stayed quiet past idle_after_ms
      - upstream_closed: {code: 1011, reason: "..."}
      - upstream_resume: {mode: handle | fresh, cut: false}   livegate moves to a new Gemini connection

Every output is checked against the SDK types (tests/conftest.py) and the whole conversation is
snapshotted (tests/__snapshots__/test_mappings/). A mapping file without a case fails the suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from syrupy.extensions.json import JSONSnapshotExtension

from livegate.mapping import load_mappings
from livegate.translator import Output, Translator

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAPPINGS = load_mappings()
CLOCK = 1_767_225_600  # 2026-01-01T00:00:00Z
# The Gemini model a case runs against (`model:` in a case): by default a legacy model that produces TEXT
# natively, so cases about the text path see it without emulation. `model_info:` overrides its row.
DEFAULT_MODEL = "gemini-2.0-flash-live-001"


def _covered_files() -> set[str]:
    files = {f"{folder}/{name}" for folder in ("client", "upstream", "lifecycle")
             for name in getattr(MAPPINGS, folder)}
    return files | {f"dialects/{name}" for name in MAPPINGS.dialects}


def _cases() -> list[Path]:
    return sorted(FIXTURES.glob("*/*/*.yaml"))


def _target(case: Path) -> str:
    return f"{case.parent.parent.name}/{case.parent.name}"


def _feed(translator: Translator, step: dict[str, Any]) -> Output:
    if "client" in step:
        return translator.from_client(step["client"])
    if "client_raw" in step:
        return translator.from_client(step["client_raw"])
    if "upstream" in step:
        return translator.from_upstream(step["upstream"])
    if "upstream_raw" in step:
        return translator.from_upstream(step["upstream_raw"])
    if "upstream_binary" in step:
        return translator.from_upstream(step["upstream_binary"].encode())
    if "idle" in step:
        return translator.upstream_idle()
    if "upstream_resume" in step:
        resume = step["upstream_resume"]
        return translator.upstream_resume(resume["mode"], cut=resume.get("cut", False))
    if "upstream_closed" in step:
        return translator.upstream_closed(step["upstream_closed"]["code"], step["upstream_closed"].get("reason", ""))
    raise AssertionError(f"unknown step {sorted(step)}")


def run_case(case: dict[str, Any]) -> list[dict[str, Any]]:
    backend = case.get("backend", "aistudio")
    model = case.get("model", DEFAULT_MODEL)
    setup_model = (f"projects/demo-project/locations/us-central1/publishers/google/models/{model}"
                   if backend == "vertex" else f"models/{model}")
    capabilities = MAPPINGS.models.capabilities(model, backend, case.get("model_info"))
    translator = Translator(MAPPINGS, dialect=case.get("dialect", "ga"), deterministic=True, clock=lambda: CLOCK,
                            context={"model": "gpt-realtime", "setup_model": setup_model, "backend": backend,
                                     "capabilities": capabilities})
    transcript = []
    connect = translator.start()
    if case.get("show_connect"):
        transcript.append({"step": "connect", "to_client": connect.client, "to_upstream": connect.upstream})
    for index, step in enumerate(case["steps"]):
        out = _feed(translator, step)
        if "expect_client" in step:
            assert [m["type"] for m in out.client] == step["expect_client"], f"step {index}"
        if "expect_upstream" in step:
            assert [next(iter(m)) for m in out.upstream] == step["expect_upstream"], f"step {index}"
        inputs = {k: v for k, v in step.items() if not k.startswith("expect_")}
        transcript.append({"step": index, "input": inputs, "to_client": out.client, "to_upstream": out.upstream})
    return transcript


@pytest.fixture
def snapshot_json(snapshot: Any) -> Any:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("path", _cases(), ids=lambda p: f"{_target(p).replace('/', '__')}__{p.stem}")
def test_case(path: Path, snapshot_json: Any) -> None:
    case = yaml.safe_load(path.read_text())
    assert case.get("description"), f"{path}: every case says what it shows"
    assert snapshot_json == run_case(case)


def test_every_mapping_has_a_case() -> None:
    covered = {_target(case) for case in _cases()}
    missing = sorted(_covered_files() - covered)
    assert not missing, f"mapping files without a fixture case in fixtures/: {missing}"


def test_every_case_names_a_mapping() -> None:
    orphans = sorted({_target(case) for case in _cases()} - _covered_files())
    assert not orphans, f"fixture folders that match no mapping file: {orphans}"

"""`livegate lint`: the shipped mappings pass; broken ones are reported with file:line(:column)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livegate.cli import main
from livegate.mapping import MappingError, load_mappings
from tests.conftest import replace_in


def test_shipped_mappings_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint"]) == 0
    assert "OK" in capsys.readouterr().out


def test_expression_syntax_error_has_line_column_and_caret(mappings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = mappings / "shared" / "request_response.yaml"
    replace_in(path, '"=session.turn_started"', '"=session.turn_started &&"')
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if '"=session.turn_started &&"' in text)
    assert main(["lint", "--mappings", str(mappings)]) == 1
    err = capsys.readouterr().err
    assert f"mappings/shared/request_response.yaml:{line}:" in err
    assert "expression syntax error" in err
    source_line, caret_line = err.strip().splitlines()[-2:]
    caret_at = caret_line.index("^")
    assert source_line[caret_at - 2 : caret_at] == "&&", "the caret points just past the dangling operator"


def test_schema_violation_names_file_and_line(mappings: Path) -> None:
    path = mappings / "upstream" / "goAway.yaml"
    replace_in(path, "  - name: remember the notice\n", "  - name: remember the notice\n    emitt: []\n")
    with pytest.raises(MappingError) as error:
        load_mappings(mappings)
    assert str(error.value).startswith("mappings/upstream/goAway.yaml:")
    assert "emitt" in str(error.value)


def test_unknown_include_and_misnamed_file(mappings: Path) -> None:
    replace_in(mappings / "upstream" / "toolCall.yaml", "include: open_response", "include: open_respons")
    with pytest.raises(MappingError, match=r"toolCall.yaml:\d+:\d+: no fragment mappings/shared/open_respons.yaml"):
        load_mappings(mappings)


def test_on_must_match_the_file_name(mappings: Path) -> None:
    replace_in(mappings / "upstream" / "goAway.yaml", "on: goAway", "on: goaway")
    with pytest.raises(MappingError, match=r"goAway.yaml:1:\d+: `on: goaway` must match"):
        load_mappings(mappings)


def test_config_errors_fail_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model_list:\n  - model_name: x\n    litellm_params: {model: openai/gpt-4o}\n")
    assert main(["lint", "--config", str(config)]) == 1
    assert "model_list[0].litellm_params.model: expected a string (`<provider>/<model id>`)" in capsys.readouterr().err

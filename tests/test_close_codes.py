"""One table of close codes and one way to refuse (livegate/close_codes.py)."""

from __future__ import annotations

import re
from pathlib import Path

from livegate import close_codes

ENGINE = Path(close_codes.__file__).resolve().parent


def test_every_code_livegate_sends_has_a_meaning() -> None:
    sent = {name: value for name, value in vars(close_codes).items()
            if name.isupper() and isinstance(value, int) and name not in ("REFUSAL_BASE", "ABNORMAL",
                                                                          "MAX_CLOSE_REASON_BYTES")}
    for name, code in sent.items():
        assert close_codes.meaning(code, "realtime") or close_codes.meaning(code, "passthrough"), name
    assert close_codes.meaning(close_codes.BAD_GATEWAY).startswith("Gemini could not be reached")
    assert close_codes.meaning(4403, "realtime") and close_codes.meaning(4403, "passthrough") is None
    assert all(close_codes.sendable(c.code) for c in close_codes.TABLE), "every listed code can be sent"


def test_no_other_module_spells_a_close_code_or_refuses_by_itself() -> None:
    for path in ENGINE.rglob("*.py"):
        if path.name == "close_codes.py" or "simulator" in path.parts:  # the simulator speaks as Gemini
            continue
        text = path.read_text()
        assert "send_denial_response" not in text, f"{path}: refuse through close_codes.refuse"
        assert not re.search(r"close\(\s*(code=)?\s*[14]\d{3}\b", text), f"{path}: a close code as a number"
        assert not re.search(r"^(CLOSE_\w+)\s*=\s*\d{4}", text, re.M), f"{path}: a close code defined here"


def test_close_reasons_fit_a_close_frame() -> None:
    reason = close_codes.close_reason("é" * 100)
    assert len(reason.encode()) <= 123 and reason == "é" * 61

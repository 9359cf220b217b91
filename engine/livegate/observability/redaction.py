"""Redaction: personal data found in text is replaced, before the text is stored, exported or logged, by a
placeholder that says what was removed (`[EMAIL]`, `[CARD]`...).

Built-in detectors (each a regex, plus a checksum where the format has one, so an order number is not taken
for a card):
- `email`: an address with a dotted domain;
- `phone`: an international number (`+` and 8-15 digits) or a national one in groups (`(555) 123-4567`,
  `020 7946 0958`): at least 9 digits written with separators;
- `card`: 13-19 digits, optionally in groups of spaces or dashes, passing the Luhn check;
- `iban`: a country code, two check digits and groups of up to four capitals or digits (spaced or not),
  passing ISO 13616's mod-97 check;
- `national_id`: a US Social Security number (`123-45-6789`, not 000/666/9xx areas) or a UK National
  Insurance number (`QQ 12 34 56 C`).
Custom patterns (a name and a regex) add their own placeholder, `[<NAME>]`.

A `Redactor` is built once from the config and shared; `redact()` is pure and cheap on text without
digits or `@` (most of it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,4}(?![\w-])"
                    r"|(?<![\w+])\+\d{8,15}(?!\w)")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_NINO = re.compile(r"(?<![A-Za-z0-9])(?![DFIQUV])[A-Z](?![DFIQUVO])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers (A=10), mod 97 must be 1."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


@dataclass(frozen=True)
class Detector:
    """One kind of personal data: where it may be (`pattern`) and whether a match really is one (`accept`)."""

    name: str
    placeholder: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool] | None = None
    needs: str = ""  # a character the text must contain for the pattern to have a chance (a cheap pre-test)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in self.pattern.finditer(text)
                if self.accept is None or self.accept(m.group())]


def _phone(text: str) -> bool:
    digits = _digits(text)
    return 9 <= len(digits) <= 15 and (text.startswith("+") or any(sep in text for sep in " .-()"))


BUILTIN: dict[str, list[Detector]] = {
    "email": [Detector("email", "[EMAIL]", _EMAIL, needs="@")],
    "card": [Detector("card", "[CARD]", _CARD, lambda t: luhn_valid(_digits(t)))],
    "iban": [Detector("iban", "[IBAN]", _IBAN, iban_valid)],
    "national_id": [Detector("national_id", "[NATIONAL_ID]", _SSN),
                    Detector("national_id", "[NATIONAL_ID]", _NINO)],
    "phone": [Detector("phone", "[PHONE]", _PHONE, _phone)],
}
# Checked in this order: a card or an IBAN is not also read as a phone number.
ORDER = ("email", "card", "iban", "national_id", "phone")


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


class Redactor:
    """Finds and replaces personal data. Built from `livegate_settings.redaction` (config.py)."""

    def __init__(self, detectors: Iterable[str] = ORDER, patterns: Mapping[str, str] | None = None) -> None:
        chosen = set(detectors)
        unknown = chosen - set(BUILTIN)
        if unknown:
            raise ValueError(f"unknown PII detector(s) {sorted(unknown)}; known: {', '.join(ORDER)}")
        self.names = tuple(name for name in ORDER if name in chosen) + tuple(patterns or ())
        self._detectors = [d for name in ORDER if name in chosen for d in BUILTIN[name]]
        for name, regex in (patterns or {}).items():
            self._detectors.append(Detector(name, f"[{name.upper()}]", re.compile(regex)))

    @property
    def enabled(self) -> bool:
        return bool(self._detectors)

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings, in text order (earlier detectors win an overlap)."""
        found: list[Finding] = []
        for detector in self._detectors:
            if detector.needs and detector.needs not in text:
                continue
            for start, end in detector.spans(text):
                if not any(f.start < end and start < f.end for f in found):
                    found.append(Finding(detector.name, start, end))
        return sorted(found, key=lambda f: f.start)

    def redact(self, text: str) -> str:
        if not self._detectors or not text:
            return text
        findings = self.find(text)
        if not findings:
            return text
        placeholders = {d.name: d.placeholder for d in self._detectors}
        out, last = [], 0
        for finding in findings:
            out.append(text[last:finding.start])
            out.append(placeholders[finding.kind])
            last = finding.end
        out.append(text[last:])
        return "".join(out)

    def redact_value(self, value: Any) -> Any:
        """Every string inside a JSON-like value, redacted (tool arguments, outputs)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact_value(item) for item in value]
        return value


NO_REDACTION = Redactor(())


_log_redactor: Redactor = NO_REDACTION
_factory_installed = False


def _redact_record(record: logging.LogRecord) -> None:
    redactor = _log_redactor
    if isinstance(record.msg, str):
        record.msg = redactor.redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(redactor.redact(a) if isinstance(a, str) else a for a in record.args)


def install_log_redaction(redactor: Redactor) -> None:
    """Redact every log record of livegate's loggers (`livegate` and its children) with `redactor` from now
    on. A record factory, not a filter: a logger's filters do not see its children's records, and handlers
    (uvicorn's, a test's) come and go."""
    global _log_redactor, _factory_installed
    _log_redactor = redactor
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _log_redactor.enabled and (record.name == "livegate" or record.name.startswith("livegate.")):
            _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)

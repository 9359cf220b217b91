"""Suite-wide guard: every message any Translator produces, in any test, is checked against the SDKs.

Violations are collected (a failing check inside the server must not just close a socket) and fail
the test that produced them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest

from engine.translator import Output, Translator
from tests.conformance import check_client_event, check_upstream_message

_violations: list[str] = []


def _checked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: Translator, *args: Any, **kwargs: Any) -> Output:
        out = method(self, *args, **kwargs)
        for event in out.client:
            try:
                check_client_event(event, self.dialect)
            except Exception as exc:
                _violations.append(f"client event {event.get('type')!r} ({self.dialect}): {exc}")
        for message in out.upstream:
            try:
                check_upstream_message(message)
            except Exception as exc:
                _violations.append(f"upstream message {sorted(message)}: {exc}")
        return out

    return wrapper


for _name in ("start", "from_client", "from_upstream", "upstream_idle", "upstream_closed"):
    setattr(Translator, _name, _checked(getattr(Translator, _name)))


@pytest.fixture(autouse=True)
def sdk_conformance() -> Iterator[None]:
    _violations.clear()
    yield
    if _violations:
        found = list(_violations)
        _violations.clear()
        pytest.fail("messages that do not conform to the SDK types:\n" + "\n".join(found[:20]))

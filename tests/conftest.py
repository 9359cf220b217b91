"""Suite-wide guard: every message any Translator produces, in any test, is checked against the SDKs.

Violations are collected (a failing check inside the server must not just close a socket) and fail
the test that produced them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livegate.translator import Output, Translator
from livegate.upstream import google_credentials
from tests.conformance import check_client_event, check_upstream_message
from tests.fakes.google import FakeTokenEndpoint, write_service_account

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


for _name in ("start", "from_client", "from_upstream", "upstream_idle", "upstream_closed", "upstream_resume"):
    setattr(Translator, _name, _checked(getattr(Translator, _name)))


@pytest.fixture(autouse=True)
def sdk_conformance() -> Iterator[None]:
    _violations.clear()
    yield
    if _violations:
        found = list(_violations)
        _violations.clear()
        pytest.fail("messages that do not conform to the SDK types:\n" + "\n".join(found[:20]))


# Google settings a developer's shell may carry: no test may see (or use) real credentials.
GOOGLE_ENV = ("DEFAULT_VERTEXAI_PROJECT", "DEFAULT_VERTEXAI_LOCATION", "DEFAULT_GOOGLE_APPLICATION_CREDENTIALS",
              "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION",
              "GOOGLE_CLOUD_QUOTA_PROJECT", "GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
              "GOOGLE_GENAI_API_VERSION")


@pytest.fixture(autouse=True)
def clean_google_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in GOOGLE_ENV:
        monkeypatch.delenv(name, raising=False)
    google_credentials.clear_cache()
    yield
    google_credentials.clear_cache()


@pytest.fixture
def tokens() -> Iterator[FakeTokenEndpoint]:
    """A local OAuth token endpoint that verifies google-auth's signed JWTs."""
    with FakeTokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def sa_file(tmp_path: Path, tokens: FakeTokenEndpoint) -> Path:
    """A service-account JSON with a fresh RSA key whose token_uri is `tokens`."""
    return write_service_account(tmp_path / "sa.json", tokens.url)

"""Suite-wide guards, applied to every Translator in every test (also inside a running server):

- every message it produces is checked against the SDKs' types;
- a `translation_error` (a rule that failed at runtime) fails the test, unless the test is marked
  `@pytest.mark.expects_translation_error`;
- after every input the session state matches mappings/state.yaml (declared keys, declared types);
- a change of lifecycle state the table does not list (the translator checks it at run time, and
  reports it to its observer) fails the test.

Violations are collected (a failing check inside the server must not just close a socket) and fail
the test that produced them.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from livegate.paths import MAPPINGS_DIR
from livegate.translation.translator import Output, Translator
from livegate.upstream import google_credentials
from tests.conformance import check_client_event, check_upstream_message
from tests.fakes.google import FakeTokenEndpoint, write_service_account

# Nothing the suite starts may write to the user's own spend store (~/.local/share/livegate/livegate.db):
# a `livegate` process with no store setting uses $LIVEGATE_DB, else $XDG_DATA_HOME. Tests that start one
# pass their own tmp_path; this is the net under the ones that forget.
_SCRATCH = tempfile.mkdtemp(prefix="livegate-tests-")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ["LIVEGATE_DB"] = os.path.join(_SCRATCH, "livegate.db")
os.environ["XDG_DATA_HOME"] = _SCRATCH

_violations: list[str] = []
_translation_errors: list[str] = []
# LIVEGATE_RECORD_TRANSITIONS=FILE appends every observed (from, input, to) there (to review the table).
_RECORD = os.environ.get("LIVEGATE_RECORD_TRANSITIONS")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _sources(method: str, args: tuple[Any, ...]) -> list[str]:
    """The inputs a call is, as state.yaml's transitions name them (`client/<type>`, `upstream/<field>`...)."""
    if method == "start":
        return ["lifecycle/connect"]
    if method in ("upstream_idle", "upstream_closed", "upstream_resume", "user_idle", "guardrail_blocked",
                  "watchdog"):
        return [f"lifecycle/{method}"]
    if method == "checked_client_event":
        return [f"client/{args[0].get('type')}"]
    frame = args[0]
    try:
        message = frame if isinstance(frame, dict) else orjson.loads(frame)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(message, dict):
        return []
    if method == "from_client":
        return [f"client/{message.get('type')}"]
    return [f"upstream/{_camel(key)}" for key in message]


def _checked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: Translator, *args: Any, **kwargs: Any) -> Output:
        before = self.lifecycle_state if _RECORD else None
        out = method(self, *args, **kwargs)
        for problem in self.mappings.state.check_types(self.session):
            _violations.append(f"after {method.__name__}: {problem}")
        if _RECORD and before != self.lifecycle_state:
            with open(_RECORD, "a") as record:
                record.write(f"{before} {_sources(method.__name__, args)} {self.lifecycle_state}\n")
        for sent in out.client:
            event = orjson.loads(sent) if isinstance(sent, str) else sent  # JSON text: a wire template's
            if event.get("type") == "error" and event.get("error", {}).get("code") == "translation_error":
                _translation_errors.append(event["error"].get("message", ""))
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


for _name in ("start", "from_client", "from_upstream", "upstream_idle", "upstream_closed", "upstream_resume",
              "user_idle", "checked_client_event", "guardrail_blocked", "watchdog"):
    setattr(Translator, _name, _checked(getattr(Translator, _name)))

_report_violation = Translator._lifecycle_violation


def _lifecycle_violation(self: Translator, before: str, sources: tuple[str, ...], after: str, *args: Any) -> None:
    _violations.append(f"lifecycle {before} -> {after} on {' + '.join(sources)} is not a transition "
                       "in mappings/state.yaml")
    _report_violation(self, before, sources, after, *args)


Translator._lifecycle_violation = _lifecycle_violation  # type: ignore[method-assign]


class _OtherTestsClientCleanup(logging.Filter):
    """The openai SDK's HTTP client, left open by a test, closes itself when garbage-collected by starting
    `aclose()` on whatever loop is running then: in a later test, whose loop is not the one the client's
    connections belong to, so the task fails with "Event loop is closed" and asyncio logs it at ERROR in
    that later test. The record says nothing of the test it lands in (or of livegate): it is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage().startswith("Task exception was never retrieved")
                    and "aclose()" in record.getMessage()
                    and isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed")


logging.getLogger("asyncio").addFilter(_OtherTestsClientCleanup())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "expects_translation_error: the test provokes a failing rule on purpose")


@pytest.fixture(autouse=True)
def sdk_conformance(request: pytest.FixtureRequest) -> Iterator[None]:
    _violations.clear()
    _translation_errors.clear()
    yield
    found, errors = list(_violations), list(_translation_errors)
    _violations.clear()
    _translation_errors.clear()
    if found:
        pytest.fail("messages or state that do not conform (SDK types, mappings/state.yaml):\n"
                    + "\n".join(found[:20]), pytrace=False)
    if errors and request.node.get_closest_marker("expects_translation_error") is None:
        pytest.fail("a rule failed at runtime (translation_error):\n" + "\n".join(errors[:5]), pytrace=False)


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


@pytest.fixture
def mappings(tmp_path: Path) -> Path:
    """A copy of the shipped mappings/ to break on purpose."""
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, target)
    return target


def replace_in(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in a file (which must contain it)."""
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


from tests.accounting_support import database_url, pg_server, redis_service, store  # noqa: E402, F401  (fixtures)

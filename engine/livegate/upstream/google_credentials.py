"""Google OAuth access tokens for Vertex AI, through google-auth (scope cloud-platform).

A credential source is what the config says: a path to a service-account or authorized-user JSON file,
that JSON itself, or None for Application Default Credentials. Each source is loaded once per process
and its token refreshed in a worker thread (google-auth is blocking) when google-auth reports it missing,
expired or within its refresh threshold of expiry; concurrent callers share one refresh.

Nothing secret leaves this module except the token handed to the caller: errors name the problem and
the file, never key material or tokens, and they are raised without their google-auth cause attached
(token endpoint replies and key parse errors can quote what they were given).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import weakref
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# google-auth and its requests transport are imported when a credential is first used, so a gateway
# without Vertex routes does not pay for them at startup.
if TYPE_CHECKING:
    import google.auth.credentials

log = logging.getLogger("livegate.credentials")

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TOKEN_REQUEST_TIMEOUT = 20.0  # seconds per HTTP call to the token endpoint (google-auth's default is 120)
REFRESH_TIMEOUT = 45.0  # the whole load + refresh, retries included: callers must never hang on it


class CredentialsError(Exception):
    """No usable Vertex credentials. The message is safe to show an operator and a client."""


class BearerToken(NamedTuple):
    token: str
    quota_project: str | None

    def headers(self) -> dict[str, str]:
        """Upstream auth headers: the bearer, and the project billed for quota when the credentials name one."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.quota_project:
            headers["x-goog-user-project"] = self.quota_project
        return headers

    def __repr__(self) -> str:
        return f"BearerToken(token=<redacted>, quota_project={self.quota_project!r})"


@cache
def _request_class() -> type:
    from google.auth.transport import requests as google_requests

    class _Request(google_requests.Request):
        """google-auth's requests transport with a timeout a gateway can live with."""

        def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                     timeout: float | None = None, **kwargs: Any) -> Any:
            return super().__call__(url, method=method, body=body, headers=headers,
                                    timeout=min(timeout or TOKEN_REQUEST_TIMEOUT, TOKEN_REQUEST_TIMEOUT), **kwargs)

    return _Request


def describe(source: str | None) -> str:
    """How a credential source is named in messages: the file path, never inline JSON. Messages put it last,
    so a close reason cut at 123 bytes keeps the cause."""
    if source is None:
        return "Application Default Credentials"
    return "(inline JSON)" if _is_inline(source) else source


def _is_inline(source: str) -> bool:
    return source.lstrip().startswith("{")


class _Entry:
    """One credential source: its google-auth object, a thread lock and one asyncio lock per event loop."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.credentials: google.auth.credentials.Credentials | None = None
        self.thread_lock = threading.Lock()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<credentials {describe(self.source)}>"

    def lock(self) -> asyncio.Lock:
        # asyncio locks belong to one loop; tests (and embedders) may run several loops in one process.
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def refresh(self) -> google.auth.credentials.Credentials:
        """Load if needed and refresh unless fresh. Runs in a worker thread."""
        import google.auth.exceptions

        with self.thread_lock:
            if self.credentials is None:
                self.credentials = _load(self.source)
            credentials = self.credentials
            if _fresh(credentials):
                return credentials
            try:
                credentials.refresh(_request_class()())
            except google.auth.exceptions.RefreshError as exc:
                raise CredentialsError(f"Google rejected the Vertex credentials ({_first_line(exc)}): "
                                       f"{describe(self.source)}") from None
            except google.auth.exceptions.TransportError as exc:
                cause = type(exc.__cause__ or exc).__name__
                raise CredentialsError(f"Google's token endpoint is unreachable ({cause})") from None
            if credentials.token is None:
                raise CredentialsError(f"Google returned no access token: {describe(self.source)}")
            return credentials


_entries: dict[str, _Entry] = {}
_entries_lock = threading.Lock()


def _key(source: str | None) -> str:
    # Inline JSON holds a private key: the cache is keyed by its digest, so no dict dump can show it.
    return "adc" if source is None else hashlib.sha256(source.encode()).hexdigest()


def _entry(source: str | None) -> _Entry:
    key = _key(source)
    with _entries_lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(source)
        return entry


def clear_cache() -> None:
    """Forget every loaded credential (tests; a config reload)."""
    with _entries_lock:
        _entries.clear()


async def bearer_token(source: str | None) -> BearerToken:
    """A valid access token for `source` (see the module docstring) and the credentials' quota project.

    Raises CredentialsError (secret-free message) when the source is missing, unreadable, invalid,
    rejected by Google, or the token endpoint does not answer within REFRESH_TIMEOUT.
    """
    entry = _entry(source)
    credentials = entry.credentials
    if credentials is None or not _fresh(credentials):
        async with entry.lock():  # one refresh in flight per credential; the others wait for its result
            credentials = entry.credentials
            if credentials is None or not _fresh(credentials):
                credentials = await _refresh(entry)
    assert credentials.token is not None
    return BearerToken(credentials.token, getattr(credentials, "quota_project_id", None))


async def _refresh(entry: _Entry) -> google.auth.credentials.Credentials:
    try:
        async with asyncio.timeout(REFRESH_TIMEOUT):
            return await asyncio.to_thread(entry.refresh)
    except CredentialsError as exc:
        stale = entry.credentials
        if stale is not None and _usable(stale):  # a failed early refresh: the old token still works
            log.warning("%s; using the current token until it expires", exc)
            return stale
        log.warning("%s", exc)
        raise
    except TimeoutError:
        message = f"Google's token endpoint did not answer within {REFRESH_TIMEOUT:.0f} s"
        log.warning("%s", message)
        raise CredentialsError(message) from None


def _fresh(credentials: google.auth.credentials.Credentials) -> bool:
    """google-auth's own verdict: a token that is not within its refresh threshold of expiry."""
    import google.auth.credentials

    return credentials.token_state == google.auth.credentials.TokenState.FRESH


def _usable(credentials: google.auth.credentials.Credentials) -> bool:
    """Not fresh any more, but not yet past its real expiry (google-auth calls this STALE)."""
    import google.auth.credentials

    return credentials.token_state == google.auth.credentials.TokenState.STALE


def _load(source: str | None) -> google.auth.credentials.Credentials:
    import google.auth
    import google.auth.exceptions

    if source is None:
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except google.auth.exceptions.DefaultCredentialsError:
            raise CredentialsError(
                "Vertex credentials not configured: no vertex_credentials and no Application Default "
                "Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login)") from None
        return credentials
    if _is_inline(source):
        text = source
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise CredentialsError(f"Vertex credentials file not found: {source}") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise CredentialsError(f"Vertex credentials file cannot be read ({reason}): {source}") from None
    try:
        info = json.loads(text)
    except ValueError:
        raise CredentialsError(f"Vertex credentials are not valid JSON: {describe(source)}") from None
    if not isinstance(info, dict):
        raise CredentialsError(f"Vertex credentials are not a JSON object: {describe(source)}")
    kind = info.get("type")
    loader = _LOADERS.get(kind) if isinstance(kind, str) else None
    if loader is None:
        raise CredentialsError(f"Vertex credentials have an unsupported type {kind!r} (expected one of "
                               f"{', '.join(sorted(_LOADERS))}): {describe(source)}")
    try:
        return loader(info)
    except (google.auth.exceptions.DefaultCredentialsError, ValueError, TypeError, KeyError) as exc:
        raise CredentialsError(f"Vertex credentials of type {kind!r} are not usable ({_first_line(exc)}): "
                               f"{describe(source)}") from None


# One loader per credential type, rather than google-auth's generic loader (deprecated: it would load any
# type it is handed). External accounts (workload identity federation) pick their flavour by source.
def _service_account(info: dict[str, Any]) -> google.auth.credentials.Credentials:
    from google.oauth2 import service_account

    return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)


def _authorized_user(info: dict[str, Any]) -> google.auth.credentials.Credentials:
    from google.oauth2 import credentials

    return credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES)


def _impersonated(info: dict[str, Any]) -> google.auth.credentials.Credentials:
    from google.auth import impersonated_credentials

    return impersonated_credentials.Credentials.from_impersonated_service_account_info(info, scopes=SCOPES)


def _external_account(info: dict[str, Any]) -> google.auth.credentials.Credentials:
    from google.auth import aws, identity_pool, pluggable

    credential_source = info.get("credential_source") or {}
    if str(credential_source.get("environment_id", "")).startswith("aws"):
        return aws.Credentials.from_info(info, scopes=SCOPES)
    if "executable" in credential_source:
        return pluggable.Credentials.from_info(info, scopes=SCOPES)
    return identity_pool.Credentials.from_info(info, scopes=SCOPES)


def _external_authorized_user(info: dict[str, Any]) -> google.auth.credentials.Credentials:
    from google.auth import external_account_authorized_user

    return external_account_authorized_user.Credentials.from_info(info, scopes=SCOPES)


_LOADERS = {
    "service_account": _service_account,
    "authorized_user": _authorized_user,
    "impersonated_service_account": _impersonated,
    "external_account": _external_account,
    "external_account_authorized_user": _external_authorized_user,
}


def _first_line(exc: BaseException) -> str:
    """google-auth's own message without the details it attaches (token endpoint response bodies); for a
    wrapped parse error, the parser's message (missing fields, bad key format: they never quote the key)."""
    text = str(exc.args[0]) if exc.args else ""
    cause = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(cause, ValueError | TypeError | KeyError) and cause.args:
        text = f"{text}: {cause.args[0]}" if text else str(cause.args[0])
    text = text.strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["SCOPES", "BearerToken", "CredentialsError", "bearer_token", "clear_cache", "describe"]

"""Google's side of the wire, on 127.0.0.1, for tests that use the real google-auth and Google clients.

- `FakeTokenEndpoint` (and `FakeTokenServer`, the same with awaitable start/stop): an OAuth 2.0 token
  endpoint. It verifies the RS256 signature, audience and scope of the JWT a service account signs
  (google-auth's real JWT-bearer grant) and serves refresh-token grants for authorized-user credentials.
  It records grants and issues numbered tokens (`ya29.fake-1`, ...).
- `write_service_account` / `write_authorized_user`: credential JSON files whose `token_uri` points at it,
  service accounts signed with a freshly generated RSA key.
- `tls_files` / `server_ssl_context`: a self-signed certificate for 127.0.0.1 (google-genai insists on TLS).
- `FakeVertexRest`: an HTTP server standing in for `*-aiplatform.googleapis.com` / discoveryengine; it
  records requests and answers with whatever Starlette response the test's `respond` returns.
- `RecordingLiveUpstream`: a Gemini Live endpoint that records frames byte for byte and echoes them.

    with FakeTokenEndpoint() as tokens:
        write_service_account(tmp_path / "sa.json", tokens.url)
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from google.auth import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_AUDIENCE = "https://oauth2.googleapis.com/token"  # google-auth signs for Google's endpoint whatever token_uri is


# --- keys and credential files ---------------------------------------------------------------------------


@functools.cache
def rsa_key_pem() -> tuple[str, str]:
    """(private PKCS#8 PEM, public PEM) of an RSA key generated once per test process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def service_account_info(token_uri: str, *, project_id: str = "fake-project",
                         client_email: str = "livegate-test@fake-project.iam.gserviceaccount.com") -> dict[str, Any]:
    private, _ = rsa_key_pem()
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "fake-key-1",
        "private_key": private,
        "client_email": client_email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return info


def write_service_account(path: str | Path, token_uri: str, **kwargs: Any) -> Path:
    """A service-account key file (see service_account_info for the keyword arguments)."""
    path = Path(path)
    path.write_text(json.dumps(service_account_info(token_uri, **kwargs)))
    return path


def write_authorized_user(path: str | Path, token_uri: str, *, quota_project_id: str | None = None,
                          refresh_token: str = "fake-refresh-token") -> Path:
    """What `gcloud auth application-default login` writes, pointed at the fake endpoint."""
    info = {"type": "authorized_user", "client_id": "fake-client.apps.googleusercontent.com",
            "client_secret": "fake-client-secret", "refresh_token": refresh_token, "token_uri": token_uri}
    if quota_project_id:
        info["quota_project_id"] = quota_project_id
    path = Path(path)
    path.write_text(json.dumps(info))
    return path


# --- the token endpoint ----------------------------------------------------------------------------------


@dataclass
class Grant:
    """One token request the endpoint answered or refused."""

    grant_type: str
    claims: dict[str, Any] = field(default_factory=dict)  # the verified JWT claims (service accounts)
    token: str | None = None  # what was issued, None if refused


class FakeTokenEndpoint:
    """An OAuth token endpoint on 127.0.0.1 in a thread of its own (google-auth calls it from worker threads).

    Attributes tests may change at any time: `expires_in` (seconds, per issued token), `delay` (seconds before
    answering), `fail` (an (HTTP status, JSON body) to answer instead of a token)."""

    def __init__(self, *, expires_in: int = 3600, delay: float = 0.0) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.fail: tuple[int, dict[str, Any]] | None = None
        self.grants: list[Grant] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "token endpoint not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    @property
    def issued(self) -> list[str]:
        return [g.token for g in self.grants if g.token]

    def start(self) -> FakeTokenEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = endpoint._answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fake-token-endpoint",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def token_uri(self) -> str:
        return self.url

    def __enter__(self) -> FakeTokenEndpoint:
        return FakeTokenEndpoint.start(self)

    def __exit__(self, *exc: object) -> None:
        FakeTokenEndpoint.stop(self)

    def _answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.delay:
            time.sleep(self.delay)
        grant = Grant(form.get("grant_type", ""))
        with self._lock:
            self.grants.append(grant)
            if self.fail is not None:
                return self.fail
            if grant.grant_type == JWT_BEARER:
                try:  # what Google checks: the signature with the account's public key, audience, expiry
                    grant.claims = jwt.decode(form.get("assertion", ""), certs=rsa_key_pem()[1], audience=JWT_AUDIENCE)
                except ValueError as exc:
                    return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
                if CLOUD_PLATFORM not in grant.claims.get("scope", "").split():
                    return 400, {"error": "invalid_scope", "error_description": "cloud-platform scope missing"}
            elif grant.grant_type == "refresh_token":
                if not form.get("refresh_token") or not form.get("client_secret"):
                    return 400, {"error": "invalid_grant", "error_description": "Bad refresh token"}
            else:
                return 400, {"error": "unsupported_grant_type", "error_description": grant.grant_type}
            grant.token = f"ya29.fake-{len(self.issued) + 1}"
            return 200, {"access_token": grant.token, "expires_in": self.expires_in, "token_type": "Bearer"}


class FakeTokenServer(FakeTokenEndpoint):
    """FakeTokenEndpoint with awaitable `start()` / `stop()`, for async fixtures."""

    async def start(self) -> FakeTokenServer:  # type: ignore[override]
        FakeTokenEndpoint.start(self)
        return self

    async def stop(self) -> None:  # type: ignore[override]
        FakeTokenEndpoint.stop(self)


# --- TLS -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # also the CA to trust: point SSL_CERT_FILE at it
    key: Path


def tls_files(folder: str | Path, host: str = "127.0.0.1") -> TlsFiles:
    """A self-signed certificate (its own CA) for an IP address, written as PEM files into `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(folder)
    files = TlsFiles(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return context


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(files.cert))


# --- Vertex AI REST --------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw, still percent-encoded
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


Responder = Callable[[RecordedRequest], Awaitable[Response] | Response]


class FakeVertexRest:
    """An ASGI app answering every path; serve it with `tests.fakes.serve_app`. `respond` (sync or async)
    builds the answer, by default a generateContent-shaped JSON with Vertex usage."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.respond: Responder = lambda _: JSONResponse(generate_content_response("ok"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        recorded = RecordedRequest(
            method=request.method, path=scope.get("raw_path", b"").decode("latin-1") or scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()}, body=await request.body())
        self.requests.append(recorded)
        response = self.respond(recorded)
        if not isinstance(response, Response):
            response = await response
        await response(scope, receive, send)


def generate_content_response(text: str, prompt_tokens: int = 3, output_tokens: int = 5) -> dict[str, Any]:
    """A Vertex generateContent answer (usage spelled `candidatesTokenCount`)."""
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": output_tokens}],
        },
    }


# --- a byte-exact Gemini Live endpoint -------------------------------------------------------------------


class RecordingLiveUpstream:
    """A Gemini Live endpoint (any path) that records every frame exactly as it arrived, text or binary,
    answers the first with `setup_reply`, and echoes the rest back in the same frame type. A frame equal to
    `close_on` makes it close with `close_code`/`close_reason` instead (to test that closes are relayed)."""

    def __init__(self, setup_reply: str | bytes = b'{"setupComplete": {}}') -> None:
        self.setup_reply = setup_reply
        self.frames: list[str | bytes] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.close_on: str | bytes | None = None
        self.close_code, self.close_reason = 1011, "Deadline expired"
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RecordingLiveUpstream:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.paths.append(ws.request.path)
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        first = True
        try:
            async for frame in ws:
                self.frames.append(frame)
                if frame == self.close_on:
                    await ws.close(self.close_code, self.close_reason)
                    return
                await ws.send(self.setup_reply if first else frame)
                first = False
        except ConnectionClosed:
            pass

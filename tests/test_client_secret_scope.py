"""Client secrets open realtime sessions for their models and nothing else (issue 18, item 2): no REST or
native passthrough, no key API, no reattach of a session another secret (or its key) opened; a secret
minted by the master key is scoped the same way. Minting is rate-limited per key and size-limited, and
expired secrets are purged (item 3)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from livegate.accounting.keys import hash_key
from livegate.accounting.store import SecretRecord, Store
from tests.support import refusal as _refusal
from tests.test_accounting_api import MASTER, Served, _auth, _served, _text_turn

REST = "/vertex_ai/v1/projects/p/locations/us-central1/publishers/google/models/gpt-realtime:generateContent"


async def refusal(connecting: Any) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(10):  # an accepted connection would wait for the error event forever
        return await _refusal(connecting)


async def _mint(served: Served, key: str, **session: Any) -> str:
    body = {"expires_after": {"anchor": "created_at", "seconds": 60}, "session": {"type": "realtime", **session}}
    response = await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["value"])


def _open(served: Served, secret: str, query: str = "model=gpt-realtime") -> Any:
    return connect(f"{served.ws}/v1/realtime?{query}",
                   subprotocols=["realtime", f"openai-insecure-api-key.{secret}"])  # type: ignore[list-item]


@pytest.fixture
async def served(tmp_path: Path) -> Any:
    async with _served(tmp_path, reattach_grace_s=5) as s:
        yield s


async def test_a_secret_opens_no_passthrough_and_no_management_route(served: Served) -> None:
    key = await served.key(models=["gpt-realtime"])
    for secret in (await _mint(served, key), await _mint(served, MASTER)):
        rest = await served.http.post(REST, headers=_auth(secret), json={"contents": []})
        assert rest.status_code == 403 and "realtime sessions" in rest.json()["error"]["message"], rest.text
        for path in ("/gemini/live", "/vertex_ai/live"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{served.ws}{path}", additional_headers={"x-goog-api-key": secret}):
                    pass
            assert refused.value.response.status_code == 403
        for method, path in (("GET", "/key/info"), ("GET", "/spend/logs"), ("POST", "/key/generate"),
                             ("GET", "/key/list"), ("POST", "/v1/realtime/client_secrets")):
            response = await served.http.request(method, path, headers=_auth(secret), json={})
            assert response.status_code == 403, (path, response.text)
    assert served.sim.sessions == []  # nothing reached Gemini


async def test_a_secret_minted_for_a_model_opens_that_model_only(served: Served) -> None:
    for parent in (MASTER, await served.key()):
        secret = await _mint(served, parent, model="gpt-realtime")
        status, error = await refusal(_open(served, secret, "model=other-model"))
        assert status == 403 and error["code"] == "model_not_allowed" and "gpt-realtime" in error["message"]
        async with _open(served, secret, "") as ws:  # no ?model=: the secret's model
            await _text_turn(ws)
        async with _open(served, secret) as ws:
            await _text_turn(ws)


async def _dropped_session(served: Served, secret: str) -> str:
    """A session opened with `secret` whose client's network dropped (1006): its id, waiting for a reattach."""
    ws = await _open(served, secret)
    created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    ws.transport.abort()
    detached = served.app.state.gateway.detached
    for _ in range(200):
        if created["session"]["id"] in detached:
            return str(created["session"]["id"])
        await asyncio.sleep(0.02)
    raise AssertionError("the session did not wait for its client")


async def test_only_the_secret_that_opened_a_session_reattaches_it(served: Served) -> None:
    key = await served.key()
    mine, sibling, masters = await _mint(served, key), await _mint(served, key), await _mint(served, MASTER)
    session_id = await _dropped_session(served, mine)
    query = f"model=gpt-realtime&session_id={session_id}"
    for other in (sibling, masters):  # another browser of the same key; a secret the master key minted
        status, error = await refusal(_open(served, other, query))
        assert status == 404 and error["code"] == "session_not_found"
    status, _ = await refusal(connect(f"{served.ws}/v1/realtime?{query}", additional_headers=_auth(key)))
    assert status == 404  # nor the parent key: the browser's session is the browser's
    async with _open(served, mine, query) as ws:  # the secret that opened it takes it back
        events = await _text_turn(ws)
        assert events[-1]["response"]["status"] == "completed"
    # and a secret never takes over its key's session
    opened_by_key = await connect(f"{served.ws}/v1/realtime?model=gpt-realtime", additional_headers=_auth(key))
    created = json.loads(await opened_by_key.recv())
    opened_by_key.transport.abort()
    await asyncio.sleep(0.3)
    status, _ = await refusal(_open(served, mine, f"model=gpt-realtime&session_id={created['session']['id']}"))
    assert status == 404


# --- minting limits (item 3) -------------------------------------------------------------------------------


async def test_minting_is_rate_limited_per_key(tmp_path: Path) -> None:
    async with _served(tmp_path, client_secret_mints_per_minute=5) as served:
        key, other = await served.key(), await served.key()
        codes = [(await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), json={})).status_code
                 for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        refused = await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), json={})
        assert refused.json()["error"]["code"] == "rate_limit_exceeded" and "5" in refused.json()["error"]["message"]
        assert (await served.http.post("/v1/realtime/client_secrets", headers=_auth(other), json={})).status_code == 200


async def test_the_session_body_is_size_limited(served: Served) -> None:
    key = await served.key()
    big = {"session": {"type": "realtime", "instructions": "x" * (200 * 1024)}}
    response = await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), json=big)
    assert response.status_code == 413 and response.json()["error"]["param"] == "session", response.text
    huge = b'{"session": {"instructions": "' + b"y" * (30 * 1024 * 1024) + b'"}}'
    response = await served.http.post("/v1/realtime/client_secrets", headers=_auth(key), content=huge)
    assert response.status_code == 413
    async with served.app.state.gateway.accounting.store.db.transaction() as tx:
        assert (await tx.fetch("SELECT COUNT(*) AS n FROM livegate_client_secrets"))[0]["n"] == 0


async def test_expired_secrets_are_purged(served: Served) -> None:
    accounting = served.app.state.gateway.accounting
    key = await served.key()
    live, expired = await _mint(served, key), await _mint(served, key)
    async with accounting.store.db.transaction() as tx:
        await tx.execute("UPDATE livegate_client_secrets SET expires_at = $1 WHERE secret_hash = $2",
                         time.time() - 3600, hash_key(expired))
    await accounting.purge_expired_secrets()
    async with accounting.store.db.transaction() as tx:
        left = await tx.fetch("SELECT secret_hash FROM livegate_client_secrets")
    assert len(left) == 1
    async with _open(served, live) as ws:
        await _text_turn(ws)


async def test_a_webrtc_call_is_hung_up_by_its_opener_or_its_key_only(served: Served) -> None:
    """POST /v1/realtime/calls/{id}/hangup: a call a client secret opened is ended by that secret or by its
    parent key (the server that minted it), never by a sibling secret (another browser) or another key."""
    key, other = await served.key(), await served.key()
    mine, sibling = await _mint(served, key), await _mint(served, key)
    opener = await served.app.state.gateway.accounting.principal(mine, realtime=True)
    ended: list[str] = []

    class _Call:  # a call in the registry as the calls route sees it (a real one needs a WebRTC peer)
        grant = type("Grant", (), {"principal": opener})

        def hang_up(self) -> None:
            ended.append("ended")

    calls = served.app.state.webrtc_calls.calls
    calls["rtc_scope"] = _Call()
    try:
        for caller in (sibling, other):
            response = await served.http.post("/v1/realtime/calls/rtc_scope/hangup", headers=_auth(caller))
            assert response.status_code == 404 and response.json()["error"]["code"] == "call_not_found"
        assert not ended
        for caller in (mine, key):
            response = await served.http.post("/v1/realtime/calls/rtc_scope/hangup", headers=_auth(caller))
            assert response.status_code == 200, response.text
        assert ended == ["ended", "ended"]
    finally:
        del calls["rtc_scope"]


async def test_a_stored_session_is_taken_over_by_its_opener_only(store: Store) -> None:
    """Take-over from the shared store (a session another instance held) follows the reattach rule: a session
    a client secret opened goes to that secret only, not to a sibling secret, its parent key or a secret the
    master key minted; a secret never takes over its key's session; the master key itself may take any."""
    from livegate.accounting.gate import Principal
    from livegate.takeover.service import Takeover
    from livegate.takeover.store import RELEASED, SessionStateStore, Write
    from livegate.translation.snapshot import Snapshot

    def with_secret(kind: str, token_hash: str, name: str, parent: str | None) -> Principal:
        return Principal(kind, token_hash, secret=SecretRecord(hash_key(name), parent, time.time() + 60, None,
                                                               time.time()))

    mine = with_secret("key", "hash-1", "ek_mine", "hash-1")
    sibling = with_secret("key", "hash-1", "ek_sibling", "hash-1")
    masters = with_secret("master", "hash-m", "ek_master", None)
    parent, master = Principal("key", "hash-1"), Principal("master", "hash-m")
    rows = SessionStateStore(store.db)
    for session_id, opener in (("sess_secret", mine), ("sess_key", parent), ("sess_other", mine)):
        snapshot = Snapshot(session_id, "ga", None, {"id": session_id, "items": []}, True)
        await rows.apply([Write(session_id, opener.opener, "gpt-realtime", "a", 0, RELEASED, None, snapshot)],
                         time.time())
    takeover = Takeover(store.db, "b", grace_s=30, drain_timeout_s=5)
    for session_id, caller in (("sess_secret", sibling), ("sess_secret", parent), ("sess_secret", masters),
                               ("sess_key", mine)):
        refused = await takeover.claim(session_id, caller, "gpt-realtime")
        assert getattr(refused, "code", None) == "session_not_found", (session_id, caller)
    for session_id, caller in (("sess_secret", mine), ("sess_key", parent), ("sess_other", master)):
        claimed = await takeover.claim(session_id, caller, "gpt-realtime")
        assert getattr(claimed, "owner", None) == "b", (session_id, caller, claimed)

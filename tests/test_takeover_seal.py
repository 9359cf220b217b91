"""Session state sealed at rest (livegate/takeover/seal.py), on both backends: the row holds no MCP token and no
conversation text, any instance with the fleet's key opens it, and a row that does not open (another key,
altered, moved to another session) is not resumable: the take-over answers as for an unknown session. An
open gateway stores the state without the MCP tools' credentials, and says why their calls fail."""

from __future__ import annotations

import logging
import time

import pytest

from livegate.accounting.gate import Principal
from livegate.accounting.store import Store
from livegate.config import parse_config
from livegate.takeover.seal import PREFIX, Sealer, Unsealable
from livegate.takeover.service import Takeover
from livegate.takeover.store import RELEASED, SessionStateStore, Write
from livegate.translation.snapshot import Snapshot

TOKEN = "sk-mcp-secret-4f1c9a"
MCP_TOOL = {"type": "mcp", "server_label": "crm", "server_url": "http://127.0.0.1:9/mcp", "authorization": TOKEN,
            "headers": {"X-Api-Key": "hdr-secret-77"}, "require_approval": "never"}


def snap(session_id: str = "sess_1") -> Snapshot:
    session = {"id": session_id, "config": {"tools": [MCP_TOOL]},
               "mcp": {"crm": {"item_id": "item_1", "server": MCP_TOOL, "status": "listed", "tools": []}},
               "items": [{"type": "message", "text": "my card ends in 4242"}]}
    return Snapshot(session_id, "ga", None, session, True)


MISSED = ['{"type":"response.output_text.delta","delta":"it ends in 4242"}']


def write(session_id: str = "sess_1", token_hash: str = "hash-1") -> Write:
    return Write(session_id, token_hash, "gpt-realtime", "a", 0, RELEASED, None, snap(session_id), MISSED)


async def raw_state(store: Store, session_id: str = "sess_1", column: str = "state") -> str:
    """A column as the database holds it (not through the store's own reading)."""
    async with store.db.transaction() as tx:
        rows = await tx.fetch(f"SELECT {column} FROM livegate_session_state WHERE session_id = $1", session_id)
    return str(rows[0][column])


async def test_a_sealed_row_holds_no_secret_and_opens_on_any_instance_with_the_key(store: Store) -> None:
    await SessionStateStore(store.db, Sealer(None, "sk-master")).apply([write()], time.time())
    stored, missed = await raw_state(store), await raw_state(store, column="missed")
    assert stored.startswith(PREFIX) and missed.startswith(PREFIX)
    for secret in (TOKEN, "hdr-secret-77", "4242", "crm"):
        assert secret not in stored and secret not in missed
    other_instance = SessionStateStore(store.db, Sealer(None, "sk-master"))
    row = await other_instance.load("sess_1")
    assert row is not None and row.unsealable is None
    assert Snapshot.decode(row.state) == snap(), "the whole state comes back, MCP credentials included"
    assert row.missed == MISSED


async def test_the_salt_key_keys_the_seal_rather_than_the_master_key(store: Store) -> None:
    await SessionStateStore(store.db, Sealer("salt-1", "sk-master")).apply([write()], time.time())
    rotated_master = await SessionStateStore(store.db, Sealer("salt-1", "sk-master-rotated")).load("sess_1")
    assert rotated_master is not None and rotated_master.unsealable is None
    without_salt = await SessionStateStore(store.db, Sealer(None, "sk-master")).load("sess_1")
    assert without_salt is not None and without_salt.unsealable is not None


async def test_a_row_sealed_with_another_key_is_not_resumable(store: Store,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    await SessionStateStore(store.db, Sealer(None, "sk-master-old")).apply([write()], time.time())
    takeover = Takeover(store.db, "b", grace_s=30, drain_timeout_s=5, sealer=Sealer(None, "sk-master-new"))
    with caplog.at_level(logging.WARNING, logger="livegate.takeover"):
        refused = await takeover.claim("sess_1", Principal("master", ""), "gpt-realtime")
    unknown = await takeover.claim("sess_unknown", Principal("master", ""), "gpt-realtime")
    assert getattr(refused, "code", None) == "session_not_found"
    assert (refused.status, refused.message.replace("sess_1", "X")) == (  # type: ignore[union-attr]
        unknown.status, unknown.message.replace("sess_unknown", "X"))  # type: ignore[union-attr]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sess_1" in m and "not resumable" in m for m in warned), warned
    assert not any("sk-master" in m for m in caplog.messages), "no key in the log"
    row = await SessionStateStore(store.db, Sealer(None, "sk-master-old")).load("sess_1")
    assert row is not None and row.owner == "a" and row.epoch == 0, "the row is left as it was, not claimed"


async def test_an_altered_or_moved_row_is_refused(store: Store) -> None:
    sealer = Sealer(None, "sk-master")
    rows = SessionStateStore(store.db, sealer)
    await rows.apply([write(), write("sess_2", token_hash="hash-2")], time.time())
    stored = await raw_state(store)
    body = bytearray(stored[len(PREFIX):].encode())
    body[40] = ord("A") if body[40] != ord("A") else ord("B")  # one character of the ciphertext
    async with store.db.transaction() as tx:
        await tx.execute("UPDATE livegate_session_state SET state = $1 WHERE session_id = 'sess_1'",
                         PREFIX + body.decode())
        await tx.execute("UPDATE livegate_session_state SET state = $1 WHERE session_id = 'sess_2'", stored)
    altered, moved = await rows.load("sess_1"), await rows.load("sess_2")
    assert altered is not None and altered.unsealable is not None and altered.state == {}
    assert moved is not None and moved.unsealable is not None, "sess_1's state does not open in sess_2's row"
    await rows.apply([write("sess_3")], time.time())
    async with store.db.transaction() as tx:  # the sealed missed events put in the state column
        await tx.execute("UPDATE livegate_session_state SET state = missed WHERE session_id = 'sess_3'")
    swapped = await rows.load("sess_3")
    assert swapped is not None and swapped.unsealable is not None
    reassigned = ("sess_1", "hash-attacker", "gpt-realtime")
    with pytest.raises(Unsealable):
        sealer.open(sealer.seal(snap(), ("sess_1", "hash-1", "gpt-realtime")), reassigned)


async def test_an_open_gateway_stores_the_state_without_mcp_credentials(store: Store) -> None:
    rows = SessionStateStore(store.db, Sealer(None, None))
    await rows.apply([write()], time.time())
    stored = await raw_state(store)
    assert TOKEN not in stored and "hdr-secret-77" not in stored
    row = await rows.load("sess_1")
    assert row is not None and row.unsealable is None
    session = Snapshot.decode(row.state).session
    assert session["items"] == snap().session["items"], "the conversation is kept"
    assert session["config"]["tools"][0] == {k: v for k, v in MCP_TOOL.items() if k not in ("headers", "authorization")}
    assert session["mcp"]["crm"]["server"]["credentials_dropped"] is True
    keyed = await SessionStateStore(store.db, Sealer(None, "sk-master")).load("sess_1")
    assert keyed is not None and keyed.unsealable is not None, "a keyed gateway takes no unsealed state"


def test_a_sealed_state_does_not_open_on_an_open_gateway() -> None:
    row = ("sess_1", "hash-1", "gpt-realtime")
    sealed = Sealer(None, "sk-master").seal(snap(), row)
    with pytest.raises(Unsealable, match="no master key or salt key"):
        Sealer(None, None).open(sealed, row)
    plain = Snapshot("sess_1", "ga", None, {"id": "sess_1", "items": []}, True)
    assert Sealer(None, None).seal(plain, row) == plain.encode(), "a session without MCP tools is stored as it is"


def test_the_salt_key_is_read_from_the_environment_as_litellm_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEGATE_SALT_KEY", raising=False)
    monkeypatch.setenv("LITELLM_SALT_KEY", "salt-litellm")
    assert parse_config({}).salt_key == "salt-litellm"
    monkeypatch.setenv("LIVEGATE_SALT_KEY", "salt-livegate")
    config = parse_config({})
    assert config.salt_key == "salt-livegate" and "salt-livegate" not in repr(config)


async def test_an_mcp_call_without_its_stored_credentials_says_why_it_failed() -> None:
    pytest.importorskip("mcp", reason="the mcp package (livegate[mcp]) is not installed")
    from livegate.mcp import McpClients

    clients = McpClients(timeout_s=5)
    server = {k: v for k, v in MCP_TOOL.items() if k not in ("headers", "authorization")}
    result = await clients.request({**server, "credentials_dropped": True}, "call", "lookup", {})
    assert result["ok"] is False and result["error"]["type"] == "http_error"
    assert "'crm'" in result["error"]["message"] and "not stored" in result["error"]["message"]
    await clients.aclose()

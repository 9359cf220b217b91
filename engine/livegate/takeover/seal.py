"""Session state sealed at rest: what `livegate_session_state.state` holds (store.py).

A session's snapshot carries its conversation and its MCP tools' `headers` and `authorization` (bearer tokens
for third-party servers), and it sits in a database other systems may back up or read. So it is sealed, as
LiteLLM seals the credentials it stores:

- **Keyed gateway** (a master key, or LIVEGATE_SALT_KEY / LITELLM_SALT_KEY): AES-256-GCM with a key derived by
  HKDF-SHA256 from the salt key if set, else the master key. Every instance of a fleet shares these, so any of
  them opens any row. The row's session id, owning key hash and model are authenticated with it (a sealed
  state copied into another session's row, or a row re-assigned to another key, does not open). Stored as
  `sealed:1:<base64 of nonce + ciphertext>`.
- **Open gateway** (neither key): nothing to key with. The state is stored as plain JSON with the MCP tools'
  `headers` and `authorization` left out; such a server is marked `credentials_dropped`, so its calls after
  a take-over fail naming it and why (livegate/mcp/client.py).

A row that does not open here (another key, tampered, sealed while this gateway is open, plain while it is
keyed) is `Unsealable`: not resumable (takeover/service.py answers as for an unknown session).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from livegate.translation.snapshot import Snapshot

PREFIX = "sealed:1:"
_INFO = b"livegate session state v1"  # HKDF's context: this key seals nothing else
_NONCE_BYTES = 12
_SECRETS = ("headers", "authorization")  # of a {type: mcp} tool
_ITEM_STORES = frozenset({"items", "unsent_items"})  # the session's conversation items (mappings/state.yaml)


class Unsealable(ValueError):
    """A stored state this gateway cannot open (its reason names no secret)."""


def derive_key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


class Sealer:
    """Seals and opens session states with this gateway's key (None: an open gateway). `row` is what a sealed
    value is bound to: (session id, owning key hash, model)."""

    def __init__(self, salt_key: str | None, master_key: str | None) -> None:
        secret = salt_key or master_key
        self._aead = AESGCM(derive_key(secret)) if secret else None

    @property
    def keyed(self) -> bool:
        return self._aead is not None

    def seal(self, snapshot: Snapshot, row: tuple[str, str, str]) -> str:
        """The stored text of `snapshot` (the `state` column)."""
        plain = snapshot.encode_bytes()
        if self._aead is None:
            return without_mcp_credentials(plain).decode()
        return self._seal(plain, row, "state")

    def seal_missed(self, missed: list[str], row: tuple[str, str, str]) -> str:
        """The stored text of the events a handed-over session's client missed (the `missed` column): they carry
        the conversation too."""
        plain = orjson.dumps(missed)
        return plain.decode() if self._aead is None else self._seal(plain, row, "missed")

    def open(self, stored: str, row: tuple[str, str, str]) -> dict[str, Any]:
        """The snapshot's JSON object, or Unsealable."""
        value = self._open(stored, row, "state")
        if not isinstance(value, dict):
            raise Unsealable("not a JSON object")
        return value

    def open_missed(self, stored: str, row: tuple[str, str, str]) -> list[str]:
        value = self._open(stored, row, "missed")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Unsealable("not a list of events")
        return value

    def _seal(self, plain: bytes, row: tuple[str, str, str], column: str) -> str:
        assert self._aead is not None
        nonce = os.urandom(_NONCE_BYTES)
        return PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, plain, _aad(row, column))).decode("ascii")

    def _open(self, stored: str, row: tuple[str, str, str], column: str) -> Any:
        if not stored.startswith(PREFIX):
            if self._aead is not None:
                raise Unsealable("stored unsealed, and this gateway only accepts sealed state")
            return _json(stored.encode())
        if self._aead is None:
            raise Unsealable("sealed, and this gateway has no master key or salt key to open it with")
        try:
            raw = base64.b64decode(stored[len(PREFIX):], validate=True)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(row, column))
        except (InvalidTag, binascii.Error, ValueError):
            raise Unsealable("it does not open with this gateway's key (the key changed, or the row was "
                             "altered)") from None
        return _json(plain)


def _aad(row: tuple[str, str, str], column: str) -> bytes:
    """The row and column a sealed value belongs to: it opens nowhere else."""
    return "\x00".join((*row, column)).encode()


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Unsealable("not JSON") from None


def without_mcp_credentials(encoded: bytes) -> bytes:
    """The encoded snapshot with every {type: mcp} tool's headers and authorization left out (a session with no
    MCP tool is returned as it is: in compact JSON, `"type":"mcp"` with bare quotes is a key and its value)."""
    if b'"type":"mcp"' not in encoded:
        return encoded
    data = orjson.loads(encoded)
    session = data.get("session")
    if not isinstance(session, dict):
        return encoded
    for entry in (session.get("mcp") or {}).values():
        server = entry.get("server") if isinstance(entry, dict) else None
        if isinstance(server, dict) and any(server.get(k) for k in _SECRETS):
            server["credentials_dropped"] = True  # its calls after a take-over say why they fail
    _strip(session)
    return orjson.dumps(data)


def _strip(session: dict[str, Any]) -> None:
    """Leave out, in place, the credentials of each {type: mcp} tool wherever it sits (the session's tools, a
    response's own, the listed servers). The item store, the bulk of a long session, is not walked: a
    conversation item is never a tool definition."""
    pending: list[Any] = [v for k, v in session.items() if k not in _ITEM_STORES and isinstance(v, dict | list)]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if value.get("type") == "mcp":
                for key in _SECRETS:
                    value.pop(key, None)
            pending.extend(v for v in value.values() if isinstance(v, dict | list))
        else:
            pending.extend(v for v in value if isinstance(v, dict | list))

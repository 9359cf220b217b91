"""Spend rows that could not be written before shutdown (the store unreachable, its file gone, the disk
full) are saved to a local spill file and written at the next start, exactly once.

A spill file is JSON lines: a header naming the database it belongs to (Database.identity) and a random
id, then the key spend deltas and the spend log rows. It holds key hashes, never keys. Replay writes the
rows and records the id in `livegate_spill_replays` in one transaction, then deletes the file: a crash in
between, or two instances sharing the folder, cannot count a spill twice. Files of another database are
left alone (and named in the log)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.store import Store

log = logging.getLogger("livegate.accounting")

FORMAT = 1


def write_spill(directory: str, identity: str, spend: dict[str, float], logs: list[dict[str, Any]]) -> Path:
    """Save rows to a new spill file (written whole, then renamed into place); returns its path."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    spill_id = uuid.uuid4().hex
    path = folder / f"spill-{int(time.time())}-{spill_id[:12]}.jsonl"
    partial = path.with_suffix(".partial")
    lines = [{"livegate_spill": FORMAT, "id": spill_id, "store": identity, "created": time.time()},
             {"spend": spend}, *({"log": row} for row in logs)]
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        for line in lines:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return path


async def replay_spills(store: Store, directory: str | None) -> int:
    """Write the spill files of this database found in `directory`; returns the spend log rows written."""
    folder = Path(directory).expanduser() if directory else None
    if folder is None or not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.glob("spill-*.jsonl")):
        try:
            written += await _replay(store, path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("spill file %s could not be read (%s); it is left in place", path, type(exc).__name__)
    return written


async def _replay(store: Store, path: Path) -> int:
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another instance is replaying it
        except BlockingIOError:
            return 0
        lines = [json.loads(line) for line in handle if line.strip()]
        header = lines[0]
        if header.get("livegate_spill") != FORMAT:
            raise ValueError("not a livegate spill file")
        if header["store"] != store.db.identity:
            log.warning("spill file %s belongs to %s, not this store (%s): left in place", path, header["store"],
                        store.db.identity)
            return 0
        spend: dict[str, float] = next((line["spend"] for line in lines[1:] if "spend" in line), {})
        logs = [line["log"] for line in lines[1:] if "log" in line]
        try:
            fresh = await store.replay_spill(header["id"], spend, logs, time.time())
        except StoreUnavailable as exc:
            log.error("spill file %s not replayed, the store is unavailable (%s); it is kept for the next start",
                      path, exc)
            return 0
        path.unlink()
    if fresh:
        log.warning("replayed spill file %s: %d spend log rows and the spend of %d keys saved at a shutdown during "
                    "a store outage", path.name, len(logs), len(spend))
    return len(logs) if fresh else 0

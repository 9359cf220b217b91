"""Sessions that outlive the gateway process: stored at each turn's edges, drained on SIGTERM, taken over by any
instance sharing the store.

Theory of operation (docs/operating/failures.md "The gateway's own faults" tells it for operators)
-------------------------------------------------------------------------------------------------
- **Snapshots.** The session core hands its pump a `StoreSession` whenever the `checkpoint` or `between_turns`
  answer of mappings/resumption.yaml changes: the configuration, the item store, the resumption handle, a
  question asked, a response opened or finished. The pump gives it to this session's `Keeper`, which queues
  it for the `StateWriter` (one background task, latest state per session, one transaction per batch): no I/O
  and no encoding on the audio path.
- **Rows and fencing.** `livegate_session_state` (store.py) holds one row per session: owner instance, epoch,
  status (live, detached, claimed, released), the owning key's hash, the snapshot. A take-over bumps the
  epoch; a write is applied only while owner and epoch still match, so a former owner cannot overwrite the
  session it lost.
- **Drain (SIGTERM).** `drain.DrainOnSigterm` (in front of uvicorn's own handler) runs `Takeover.drain` before
  uvicorn stops listening: readiness says 503, new sessions are refused with HTTP 503 `server_draining` (the
  balancer retries elsewhere, as does the SDK), and each session closes with 1012 at its next rest, after its
  state is written as released (at the latest after `drain_timeout_s`).
- **Take-over.** A client reconnecting with `?session_id=` to an instance that does not hold it gets the
  stored session (`Takeover.claim`): released, owned by a dead instance (silent for `STALE_S`), or handed
  over by a live owner that holds it detached (the client dropped there: it stores it at its next rest with
  the events the client missed). The translator is restored (`Translator.restore`), and `SessionCore.take_over`
  reaches Gemini again: resumed with the handle when it covers the conversation, else re-seeded; a turn that
  was in flight is cut and asked again. The client gets no second `session.created`.
"""

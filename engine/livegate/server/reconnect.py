"""A reconnecting client (`?session_id=`) whose session this process does not hold: taken over from the shared
store (livegate/takeover/), wherever it was, if its key owns it.

The WebSocket is accepted first, because the claim may wait a few seconds (for a dead owner to be known
dead, or for a live owner to hand a detached session over); a refusal then is the same `error` event and
close code as at any handshake. The session's admission is checked again (key, budget, limits), in the
place of the slot it held on its former instance; its spend from here on is metered here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import WebSocket

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.gate import Principal
from livegate.close_codes import Refusal, refuse
from livegate.config import ModelRoute
from livegate.server import auth
from livegate.server.realtime import RealtimeSession
from livegate.takeover.service import DRAINING, not_found
from livegate.translation.snapshot import Snapshot, SnapshotError

if TYPE_CHECKING:
    from livegate.server.app import Gateway

log = logging.getLogger("livegate.takeover")


async def take_over(ws: WebSocket, gateway: Gateway, who: Principal, model: str, route: ModelRoute,
                    session_id: str, subprotocol: str | None) -> None:
    from livegate.server.app import place, session_translator

    takeover = gateway.takeover
    if takeover.draining:
        await refuse(ws, DRAINING, "openai", subprotocol=subprotocol)
        return
    await ws.accept(subprotocol=subprotocol)
    claimed = await takeover.claim(session_id, who, model)
    if isinstance(claimed, Refusal):
        await refuse(ws, claimed, "openai", accepted=True)
        return
    try:
        snapshot = Snapshot.decode(claimed.state)
    except SnapshotError as exc:
        log.error("session %s: its stored state cannot be restored: %s", session_id, exc)
        await refuse(ws, not_found(session_id), "openai", accepted=True)
        return
    keeper = takeover.keeper(claimed.token_hash, model, None, claimed.epoch)
    assert keeper is not None  # a claim succeeds only when sessions are stored
    if claimed.slot_id:  # the session's place among its key's parallel sessions moves here with it
        try:
            await gateway.accounting.store.release_sessions([claimed.slot_id])
        except StoreUnavailable:
            log.warning("session %s: its former slot could not be freed; it lapses by itself", session_id)
    grant = await auth.admit(gateway, who, route="/v1/realtime", model_route=route, model=model, headers=ws.headers)
    if isinstance(grant, Refusal):
        await keeper.release(snapshot, claimed.missed)  # left for a later try, as it was
        await refuse(ws, grant, "openai", accepted=True)
        return
    placement = await place(gateway, route, model, grant)  # a deployment of the model's pool, as a new session
    if isinstance(placement, Refusal):
        await keeper.release(snapshot, claimed.missed)
        await refuse(ws, placement, "openai", accepted=True)
        return
    keeper.slot_id = grant.session_id
    log.info("session %s taken over (epoch %d, %s)", session_id, claimed.epoch,
             "at rest" if snapshot.at_rest else "a turn in flight")
    provider = gateway.pools.provider(placement.route)
    translator = session_translator(gateway, placement.route, model, provider, grant,
                                    beta=snapshot.dialect == "beta", intent=snapshot.intent)
    translator.restore(snapshot.session, snapshot.dialect)
    await RealtimeSession(ws, translator, provider, model, gateway.config.timeouts, grant=grant,
                          policy=gateway.resumption, detached=gateway.detached,
                          reattach_grace_s=gateway.config.reattach_grace_s, placement=placement, takeover=takeover,
                          keeper=keeper, missed=claimed.missed, watchdog=gateway.config.watchdog).run()

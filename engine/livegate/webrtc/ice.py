"""Where a call's ICE host candidates live: which local addresses, which UDP ports.

aioice (aiortc's ICE) binds every interface but loopback, each on an ephemeral port; a deployment behind a
firewall wants a known port range, and a one-machine setup (the tests) wants 127.0.0.1. aioice 0.13 has no
option for either, so aiortc's ICE connections are made from `RangedConnection`, which binds host candidates
as the `IcePolicy` of the current context says (`with ice_policy(...)` around creating and answering a peer
connection) and otherwise does exactly what aioice does. STUN and TURN candidates are aioice's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiortc.rtcicetransport
from aioice import ice, turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

log = logging.getLogger("livegate.webrtc")


@dataclass(frozen=True)
class IcePolicy:
    addresses: tuple[str, ...] | None = None  # None: aioice's choice (every interface but loopback)
    ports: tuple[int, int] | None = None  # inclusive; None: an ephemeral port


_POLICY: contextvars.ContextVar[IcePolicy | None] = contextvars.ContextVar("livegate_ice_policy", default=None)


@contextlib.contextmanager
def ice_policy(policy: IcePolicy) -> Iterator[None]:
    """Peer connections created (and candidates gathered) inside this block follow `policy`."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


class RangedConnection(ice.Connection):
    """An aioice Connection whose host candidates follow the IcePolicy in force when it was created."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._policy = _POLICY.get()

    async def get_component_candidates(self, component: int, addresses: list[str],
                                       timeout: int = 5) -> list[Candidate]:
        policy = self._policy
        if policy is None or (policy.addresses is None and policy.ports is None):
            return await super().get_component_candidates(component, addresses, timeout)
        if policy.addresses is not None:
            addresses = [a for a in policy.addresses if (ipaddress.ip_address(a).version == 4 and self._use_ipv4)
                         or (ipaddress.ip_address(a).version == 6 and self._use_ipv6)]
        protocols = [p for p in [await self._bind(address, component, policy.ports) for address in addresses] if p]
        self._protocols += protocols
        candidates = [p.local_candidate for p in protocols]
        # Server-reflexive candidates of our sockets (aioice's STUN query), and a TURN relay (aioice's own
        # gathering, given no address to bind).
        queries = [ice.server_reflexive_candidate(p, self.stun_server) for p in protocols
                   if self.stun_server and ipaddress.ip_address(p.local_candidate.host).version == 4]
        for result in await _gather_within(queries, timeout):
            candidates.append(result)
        if self.turn_server:
            candidates += await super().get_component_candidates(component, [], timeout)
        return candidates

    async def _bind(self, address: str, component: int, ports: tuple[int, int] | None) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        for port in range(ports[0], ports[1] + 1) if ports else (0,):
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: ice.StunProtocol(self), local_addr=(address, port))
            except OSError:
                continue  # taken: the next port of the range
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, turn.UDP_SOCKET_BUFFER_SIZE)
            host, bound = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
                priority=candidate_priority(component, "host"), host=host, port=bound, type="host")
            return protocol
        log.warning("no free UDP port on %s in %s: no host candidate there", address,
                    f"{ports[0]}-{ports[1]}" if ports else "the ephemeral range")
        return None


async def _gather_within(coroutines: list[Any], timeout: float) -> list[Candidate]:
    import asyncio

    if not coroutines:
        return []
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    return [task.result()[0] for task in done if task.exception() is None]


# aiortc makes its ICE connections from this module attribute.
aiortc.rtcicetransport.Connection = RangedConnection  # type: ignore[misc]

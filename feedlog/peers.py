"""The peer book: peers this node has seen on the LAN or been given by hand, and how syncing
with them went (README "LAN"; ``feedlog peers`` prints it).

It is a thin layer over the Store's peer methods that reads the clock, so the stores stay
clock-free and testable. A peer is keyed by its feed id: the same person moving to another
address updates one row. ``note_state`` on a peer never seen (one that dialled us) creates a
row with source "inbound" and no address. A connection (state "connected" or "synced") also
counts as seeing the peer: ``last_seen`` is then the time it was noted.
"""

from __future__ import annotations

import time

from feedlog.core.errors import LocalError
from feedlog.core.ids import FeedId
from feedlog.store.base import PeerRecord, Store

__all__ = ["SOURCES", "STATES", "PeerRecord", "list_peers", "note_seen", "note_state"]

SOURCES = frozenset({"lan", "manual", "inbound"})
STATES = frozenset({"discovered", "connecting", "connected", "synced", "disconnected",
                    "unreachable"})


def _now_ms() -> int:
    return int(time.time() * 1000)


async def note_seen(store: Store, feed: FeedId, host: str, port: int, source: str) -> None:
    """Record that ``feed`` was seen at ``host:port`` now (a LAN announcement, or the user)."""
    if source not in SOURCES:
        raise LocalError(f"unknown peer source {source!r}", code="bad-peer-source")
    if not 0 <= port <= 0xFFFF:
        raise LocalError(f"port {port} is out of range", code="bad-port")
    await store.peer_seen(feed, host, port, source, _now_ms())


async def note_state(store: Store, feed: FeedId, state: str, *, synced: bool = False) -> None:
    """Record the connection state of ``feed``; ``synced`` also stamps ``last_synced`` now."""
    if state not in STATES:
        raise LocalError(f"unknown peer state {state!r}", code="bad-peer-state")
    await store.peer_state(feed, state, _now_ms(), synced=synced)


async def list_peers(store: Store) -> list[PeerRecord]:
    """Every known peer, ordered by feed id."""
    return await store.peers()

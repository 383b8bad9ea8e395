"""``feedlog serve --lan``: LAN discovery wired to live replication (README "LAN").

``LanSync`` advertises this node's port and feed id with ``LanDiscovery``; every same-network
peer it finds goes into the peer book (``note_seen``) and to a ``PeerManager``, which dials the
peers the dial rule gives us (the smaller feed id dials, never itself, one connection per pair)
with ``Replicator.connect(..., live=True)`` and reconnects with its backoff when the link ends.
A dead link is noticed by the live session's idle timeout (peers ping every ``ping_interval``)
or by discovery dropping the peer, whichever comes first.

Messages another process writes into the same home (``feedlog publish`` while serve runs) are
not announced to this process: a ``StoreWatcher`` (feedlog/net/watch.py) looks for them every
``poll`` seconds and hands any advance to the replicator, which pushes it to live peers.

Events go to ``on_event(dict)``: ``peer-found``, ``peer-lost``, ``peer-connected``,
``peer-synced``, ``peer-disconnected``, ``peer-unreachable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from feedlog.core.discovery import should_dial
from feedlog.core.errors import FeedlogError
from feedlog.core.ids import FeedId, feed_id_text
from feedlog.lan import DEFAULT_REANNOUNCE, DEFAULT_TTL, LanDiscovery, LanPeer, PeerManager
from feedlog.net.replicator import Link, Replicator
from feedlog.net.transport import Address
from feedlog.net.watch import POLL, StoreWatcher
from feedlog.peers import note_seen, note_state

log = logging.getLogger("feedlog.lan_sync")

Event = dict[str, Any]


class LanSync:
    """Discovery + peer manager + head polling around one serving ``Replicator``."""

    def __init__(
        self,
        rep: Replicator,
        port: int,
        *,
        on_event: Callable[[Event], None] | None = None,
        interfaces: Sequence[str] | None = None,
        ttl: int = DEFAULT_TTL,
        reannounce: float = DEFAULT_REANNOUNCE,
        poll: float = POLL,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.rep = rep
        self.node = rep.node
        self.on_event = on_event
        self.watcher = StoreWatcher(rep, poll)
        self.discovery = LanDiscovery(rep.config.network_key, self.node.id, port,
                                      on_peer=self._found, on_remove=self._lost,
                                      interfaces=interfaces, ttl=ttl, reannounce=reannounce)
        self.manager = PeerManager(self.node.id, self._connect, base=backoff_base,
                                   cap=backoff_cap, on_state=self._state)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbound_reported: set[int] = set()  # id(link) of inbound links told "connected"

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.watcher.start()
        await self.discovery.start()

    async def stop(self) -> None:
        await self.watcher.stop()
        await self.manager.stop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.discovery.stop()

    def inbound_progress(self, link: Link) -> None:
        """``Replicator.serve(on_progress=...)``: report peers that dialled us."""
        key = id(link)
        if key not in self._inbound_reported:
            self._inbound_reported.add(key)
            self._emit("peer-connected", link.peer, remote=link.result.remote, inbound=True)
            self._spawn(self._note(link.peer, "connected"))
        if link.caught_up.is_set() and -key not in self._inbound_reported:
            self._inbound_reported.add(-key)
            self._emit("peer-synced", link.peer, received=link.result.added,
                       sent=link.result.sent, inbound=True)
            self._spawn(self._note(link.peer, "synced", synced=True))

    def inbound_ended(self, link: Link) -> None:
        self._inbound_reported.discard(id(link))
        self._inbound_reported.discard(-id(link))

    # --- internals -------------------------------------------------------------------------

    def _emit(self, event: str, feed: FeedId, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event({"event": event, "peer": feed_id_text(feed), **fields})

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _note(self, feed: FeedId, state: str, *, synced: bool = False) -> None:
        try:
            await note_state(self.node.store, feed, state, synced=synced)
        except FeedlogError as exc:  # the peer book must never stop syncing
            log.warning("peer book: %s", exc.message)

    def _found(self, peer: LanPeer) -> None:
        dial = should_dial(self.node.id, peer.feed)
        self._emit("peer-found", peer.feed, host=peer.host, port=peer.port, dial=dial)

        async def book() -> None:
            with contextlib.suppress(FeedlogError):
                await note_seen(self.node.store, peer.feed, peer.host, peer.port, "lan")
                await note_state(self.node.store, peer.feed, "discovered")
            self.manager.peer_seen(peer)

        self._spawn(book())

    def _lost(self, peer: LanPeer) -> None:
        self._emit("peer-lost", peer.feed)
        self.manager.peer_gone(peer)

    async def _state(self, feed: FeedId, state: str) -> None:
        # "connecting" / "disconnected" / "unreachable" from the manager
        if state != "connecting":
            self._emit(f"peer-{state}", feed)
        await self._note(feed, state)

    async def _connect(self, peer: LanPeer) -> None:
        synced: list[asyncio.Task[None]] = []

        def on_link(link: Link) -> None:
            self._emit("peer-connected", peer.feed, remote=link.result.remote, inbound=False)
            self._spawn(self._note(peer.feed, "connected"))

            async def wait_synced() -> None:
                await link.caught_up.wait()
                self._emit("peer-synced", peer.feed, received=link.result.added,
                           sent=link.result.sent, inbound=False)
                await self._note(peer.feed, "synced", synced=True)

            synced.append(asyncio.ensure_future(wait_synced()))

        try:
            result = await self.rep.connect(Address(peer.host, peer.port, peer.feed), live=True,
                                            on_link=on_link)
        finally:
            for t in synced:
                t.cancel()
        log.info("link to %s ended: %s", feed_id_text(peer.feed), result.error)

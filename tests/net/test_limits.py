"""Limits of the replication server (issue 8 item 3): ``per_peer_buffered_bytes`` bounds what
one flooding peer makes the node hold, and pending handshakes are bounded apart from the peers
served (the oldest of the busiest host is dropped for a newcomer), so neither starves a good peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from feedlog.core.crypto import Keypair
from feedlog.core.handshake import ClientHandshake
from feedlog.core.ids import FeedId
from feedlog.core.wire import msgs_frames
from feedlog.net.replicator import Replicator
from feedlog.net.transport import DEFAULT_NETWORK_KEY, SOCKET_READ, Address
from feedlog.node import Node
from tests.net.test_hostile import (
    GOOD_MESSAGES,
    World,
    _flood,
    chain,
    config,
    connect,
    hold_hostile_appends,
    opening,
)

KiB = 1024


async def _world(**cfg: Any) -> tuple[World, asyncio.Server]:
    node = Node.in_memory()
    hostile = Keypair.from_seed(os.urandom(32))
    await node.follow(FeedId(hostile.public))
    await node.publish_many([f"n{i}" for i in range(GOOD_MESSAGES - 1)])
    rep = Replicator(node, dataclasses.replace(config(), **cfg))
    server = await rep.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return World(node, rep, Address("127.0.0.1", port, node.id), hostile), server


async def _good_peer(w: World) -> None:
    g = Node.in_memory()
    await g.follow(w.node.id)
    res = await Replicator(g, config()).connect(w.address)
    assert res.error is None and res.caught_up, res
    info = await g.feed_info(w.node.id)
    assert info is not None and info.seq == GOOD_MESSAGES
    await g.close()


async def test_per_peer_buffered_bytes_bounds_what_a_flood_makes_us_hold() -> None:
    """The store is held shut while a peer writes 8 MiB of valid messages. With
    per_peer_buffered_bytes = 256 KiB the node keeps under 128 KiB of them in the verify/store
    pipeline and under 256 KiB + one frame + one socket read in all (spec/replication.md §10.2);
    the defaults (8 MiB) would let it take in more than 1 MiB here."""
    budget = 256 * KiB
    w, server = await _world(max_buffered=budget)
    try:
        msgs = chain(w.hostile, 100, pad=4000)
        frames = msgs_frames([m.raw for m in msgs], max_size=64 * KiB)
        biggest = max(map(len, frames))
        gate = hold_hostile_appends(w)
        ch = await connect(w)
        await opening(ch, w, len(msgs))
        await ch.send_frames(frames)
        writes = asyncio.create_task(
            _flood(ch, frames, 8 * 1024 * KiB // sum(map(len, frames)) + 1))
        await asyncio.sleep(0.3)
        link = next(iter(w.rep.links))
        assert link.channel.read_size == budget // 8
        most_pending = most_held = 0
        for _ in range(15):  # sampled while the flood goes on and nothing is stored
            await asyncio.sleep(0.1)
            assert link._ingestor is not None
            most_pending = max(most_pending, link._ingestor.pending_bytes)
            held = link.channel.counters.bytes_in + len(link.channel.reader._buffer)  # type: ignore[attr-defined]
            most_held = max(most_held, held)
        assert 0 < most_pending <= budget // 2, most_pending
        assert most_held <= budget + biggest + SOCKET_READ, most_held
        await _good_peer(w)  # others are served meanwhile
        writes.cancel()
        ch.writer.transport.abort()
        gate.set()
        res = await w.finished()
        # the abort (inside a frame, most likely), nothing else
        assert res.error in ("truncated-frame", "connection-lost", "unexpected-eof"), res
        assert [m.raw for m in await w.node.feed(w.hid)] == [m.raw for m in msgs]
    finally:
        server.close()
        w.rep.close()
        await w.node.close()


async def test_pending_handshakes_are_bounded_and_the_oldest_is_dropped() -> None:
    """Six silent connections against max_pending = 3 with max_peers = 1: the three oldest are
    dropped (``handshake-evicted``) long before the 5 s handshake timeout, and a good peer
    that arrives behind them is still served."""
    w, server = await _world(max_pending=3, max_peers=1, handshake_timeout=5.0)
    try:
        silent = []
        for _ in range(6):
            silent.append(await asyncio.open_connection(w.address.host, w.address.port))
            await asyncio.sleep(0.02)  # arrival order = age
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # the three oldest see the node hang up; the three newest are still waiting
        for reader, _ in silent[:3]:
            assert await asyncio.wait_for(reader.read(), 2) == b""
        assert loop.time() - t0 < 2
        assert len(w.rep.handshaking) == 3
        codes = [r.error for r in w.rep.finished if r.peer == "?"]
        assert codes == ["handshake-evicted"] * 3
        await _good_peer(w)  # evicts one more silent connection on its way in
        assert len(w.rep.handshaking) <= 3
        for _, writer in silent:
            writer.close()
    finally:
        server.close()
        w.rep.close()
        await w.node.close()


async def test_a_flooding_host_evicts_only_its_own_pending_handshakes() -> None:
    """A good peer (127.0.0.3) is half way through its handshake when another host
    (127.0.0.2) opens 12 connections that never handshake, against max_pending = 4. Full, the
    node drops the oldest pending handshake of the host holding the most: the flooder's own,
    never the good peer's, whose handshake then completes (before, the oldest of all was
    dropped: the good peer first)."""
    w, server = await _world(max_pending=4, max_peers=4, handshake_timeout=5.0)
    flood: list[asyncio.StreamWriter] = []
    try:
        hs = ClientHandshake(DEFAULT_NETWORK_KEY, Keypair.from_seed(os.urandom(32)),
                             w.address.feed, os.urandom(32))
        reader, writer = await asyncio.open_connection(
            w.address.host, w.address.port, local_addr=("127.0.0.3", 0))
        writer.write(hs.data_to_send())  # the client hello; the rest waits for the flood
        await writer.drain()
        for _ in range(12):
            _, fw = await asyncio.open_connection(
                w.address.host, w.address.port, local_addr=("127.0.0.2", 0))
            flood.append(fw)
            await asyncio.sleep(0.02)
        assert len(w.rep.handshaking) == 4
        while not hs.done:  # finish the handshake: the node still answers us
            data = await asyncio.wait_for(reader.read(hs.bytes_needed()), 3)
            assert data, "the node dropped the good peer's pending handshake"
            hs.receive_data(data)
            out = hs.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
        evicted = [r for r in w.rep.finished if r.error == "handshake-evicted"]
        assert len(evicted) == 9 and all(r.remote.startswith("127.0.0.2:") for r in evicted)
        writer.close()
    finally:
        for fw in flood:
            fw.close()
        server.close()
        w.rep.close()
        await w.node.close()

"""The restore fence (spec/forks.md): persisted, refuses every publishing command, lifted by a
sync or an import that brought the node's own feed head, or by an explicit unfence."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedlog.bundle import export_bundle, import_bundle
from feedlog.core.errors import LocalError
from feedlog.net.replicator import Replicator
from feedlog.net.transport import Address
from feedlog.node import Node


async def test_fresh_identity_is_not_fenced(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    assert not await a.fenced()
    assert (await a.publish("hi")).seq == 1
    assert (await a.status())["fenced"] is False
    await a.close()


async def test_restored_key_is_fenced_until_unfenced_and_it_persists(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    b = await Node.init(tmp_path / "b", keys=a.keys)
    other = await Node.init(tmp_path / "o")
    assert await b.fenced() and (await b.status())["fenced"] is True
    for attempt in (b.publish("x"), b.follow(other.id), b.set_name("B"),
                    b.create_group("g"), b.block(other.id)):
        with pytest.raises(LocalError) as err:
            await attempt
        assert err.value.code == "fenced"
    assert await b.feed_info(b.id) is None  # nothing was written
    await b.close()
    b = await Node.open(tmp_path / "b")  # the fence is in the store, not in memory
    assert await b.fenced()
    assert await b.unfence() is True
    assert await b.unfence() is False
    assert (await b.publish("now")).seq == 1
    await b.close()
    b = await Node.open(tmp_path / "b")
    assert not await b.fenced()
    for n in (a, b, other):
        await n.close()


async def test_sync_with_a_peer_holding_our_feed_lifts_the_fence(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    old = await a.publish_many(["1", "2", "3"])
    c = await Node.init(tmp_path / "c")
    await c.follow(a.id)
    await c.ingestor().ingest([m.raw for m in old])
    empty = await Node.init(tmp_path / "e")
    await empty.follow(a.id)  # replicates our feed but holds nothing of it
    r = await Node.init(tmp_path / "r", keys=a.keys)
    for peer in (empty, c):
        rep = Replicator(peer)
        server = await rep.serve("127.0.0.1", 0)
        addr = Address("127.0.0.1", server.sockets[0].getsockname()[1], peer.id)
        res = await Replicator(r).connect(addr)
        assert res.caught_up and res.error is None
        server.close()
        if peer is empty:
            # caught up, but the peer knew of no message of ours: still fenced
            assert await r.fenced()
    assert not await r.fenced()
    m = await r.publish("4")
    assert m.seq == 4 and m.previous == old[-1].id
    for n in (a, c, empty, r):
        await n.close()


async def test_import_of_a_stick_with_our_feed_lifts_the_fence(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    old = await a.publish_many(["1", "2"])
    other = await Node.init(tmp_path / "o")
    await other.publish("not ours")
    r = await Node.init(tmp_path / "r", keys=a.keys)
    for d in ("stick1", "stick2"):
        (tmp_path / d).mkdir()
    await export_bundle(other, tmp_path / "stick1")
    await import_bundle(r, tmp_path / "stick1", all_feeds=True)
    assert await r.fenced()  # a stick without our feed proves nothing
    await export_bundle(a, tmp_path / "stick2")
    await import_bundle(r, tmp_path / "stick2", dry_run=True)
    assert await r.fenced()  # a dry run stores nothing
    await import_bundle(r, tmp_path / "stick2")
    assert not await r.fenced()
    m = await r.publish("3")
    assert m.seq == 3 and m.previous == old[-1].id
    for n in (a, other, r):
        await n.close()

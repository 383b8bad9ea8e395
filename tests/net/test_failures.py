"""Our own side failing under a running link: a full disk, a store error in the writer, a
shutdown, a store written while a link is being set up. Each ends the link with a code (the
peer told), nothing hangs, the node serves others, and a later sync completes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from feedlog.core import content
from feedlog.core.errors import StoreError
from feedlog.core.ids import FeedId
from feedlog.net.replicator import Replicator, SyncResult
from feedlog.node import Node
from feedlog.store.sqlite import SqliteStore
from tests.conftest import keypair
from tests.net.test_hostile import chain
from tests.net.test_sync import _caught_up, seq_of, serve


async def nodes(tmp_path: Path, *names: str) -> list[Node]:
    return [await Node.init(tmp_path / n) for n in names]


async def fill_disk(node: Node, spare_pages: int) -> None:
    store = node.store
    assert isinstance(store, SqliteStore)
    pages = (await store._rows("PRAGMA page_count"))[0][0]
    await store.set_max_pages(pages + spare_pages)


async def free_disk(node: Node) -> None:
    store = node.store
    assert isinstance(store, SqliteStore)
    await store.set_max_pages(10**7)


def hold_set_up(node: Node, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event,
                                                                      asyncio.Event]:
    """Hold each link ``node`` sets up after its snapshot of this node's feeds (reading the
    peer's baseline): the first event is set once one is held, setting the second lets go."""
    real = node.store.peer_baseline
    held, go_on = asyncio.Event(), asyncio.Event()

    async def slow_baseline(*args: Any) -> Any:
        held.set()
        await go_on.wait()
        return await real(*args)

    monkeypatch.setattr(node.store, "peer_baseline", slow_baseline)
    return held, go_on


async def test_a_full_disk_in_a_long_catch_up_ends_the_link_and_nothing_hangs(
        tmp_path: Path) -> None:
    """The disk fills while batches wait for storing (the ingest queue full): B ends the link
    with disk-full and tells A, at once; A serves C meanwhile; with space again, B completes."""
    a, b, c = await nodes(tmp_path, "a", "b", "c")
    x = keypair("long feed")
    xid = FeedId(x.public)
    for n in (a, b, c):
        await n.follow(xid)
    msgs = chain(x, 12000, pad=300)
    await a.ingestor().ingest([m.raw for m in msgs])
    srv = await serve(a)
    await fill_disk(b, 300)
    res = await asyncio.wait_for(Replicator(b).connect(srv.address), 30)
    assert res.error == "disk-full" and not res.caught_up, res
    (theirs,) = await srv.ended()
    assert theirs.error == "peer-disk-full", theirs
    held = await seq_of(b, xid)
    assert 0 < held < len(msgs)
    assert (await Replicator(c).connect(srv.address)).added >= len(msgs)
    await free_disk(b)
    again = await asyncio.wait_for(Replicator(b).connect(srv.address), 30)
    assert again.error is None and again.added == len(msgs) - held
    srv.server.close()
    for n in (a, b, c):
        await n.close()


async def test_a_store_error_in_the_writer_ends_the_link_with_its_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saving the peer's baseline fails (the writer's own store call): ``connect`` returns a
    result with the code, the socket is closed, and A is told (not left to time out)."""
    a, b = await nodes(tmp_path, "a", "b")
    others = [FeedId(keypair(f"followed {i}").public) for i in range(50)]
    await a.publish_many([content.contact("follow", f) for f in [b.id, *others]])
    await b.publish_many([content.contact("follow", f) for f in [a.id, *others]])

    async def boom(*args: Any, **kwargs: Any) -> None:
        raise StoreError("disk full (simulated)", code="disk-full")

    monkeypatch.setattr(b.store, "update_peer_baseline", boom)
    srv = await serve(a)
    res = await asyncio.wait_for(Replicator(b).connect(srv.address), 20)
    assert isinstance(res, SyncResult) and res.error == "disk-full", res
    (theirs,) = await srv.ended(limit=5)
    assert theirs.error == "peer-disk-full", theirs
    srv.server.close()
    for n in (a, b):
        await n.close()


async def test_a_failed_commit_of_live_pushes_ends_the_link_at_once(tmp_path: Path) -> None:
    """Live, the peer may send nothing more for hours: a commit that fails (full disk) ends
    the link then, so the peer does not count the lost messages as stored."""
    a, b = await nodes(tmp_path, "a", "b")
    await a.follow(b.id)
    await b.follow(a.id)
    srv = await serve(a)
    rb = Replicator(b)
    task = asyncio.create_task(rb.connect(srv.address, live=True))
    await asyncio.wait_for(_caught_up(rb), 10)
    await fill_disk(b, 2)
    await a.publish_many([f"live {i} " + "x" * 500 for i in range(2000)])
    res = await asyncio.wait_for(task, 10)
    assert res.error == "disk-full", res
    (theirs,) = await srv.ended()
    assert theirs.error == "peer-disk-full", theirs
    await free_disk(b)
    again = await Replicator(b).connect(srv.address)
    assert again.error is None and await seq_of(b, a.id) == await seq_of(a, a.id)
    srv.server.close()
    for n in (a, b):
        await n.close()


async def test_a_shutdown_waits_for_each_link_to_end(tmp_path: Path) -> None:
    """What `serve` does on Ctrl-C: every link is ended with shutting-down, and has finished
    (its result recorded) before the store is closed."""
    a, b = await nodes(tmp_path, "a", "b")
    await a.follow(b.id)
    await b.follow(a.id)
    srv = await serve(a)
    ended: list[bool] = []
    closed = False
    srv.rep.on_link_end = lambda link: ended.append(closed)
    rb = Replicator(b)
    task = asyncio.create_task(rb.connect(srv.address, live=True))
    await asyncio.wait_for(_caught_up(rb), 10)
    srv.server.close()
    for link in list(srv.rep.links):
        link.fail("shutting-down", "the server is shutting down")
    assert await srv.rep.wait_links(5)
    srv.rep.close()
    await a.close()
    closed = True
    res = await asyncio.wait_for(task, 10)
    assert res.error == "peer-shutting-down", res
    assert ended == [False]  # ended before the store closed
    await b.close()


async def test_what_is_stored_while_a_link_is_set_up_is_pushed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message stored after the link took its snapshot of this node's feeds but before the
    session began reaches the live peer all the same."""
    a, b = await nodes(tmp_path, "a", "b")
    await a.follow(b.id)
    await b.follow(a.id)
    srv = await serve(a)
    in_set_up, published = hold_set_up(a, monkeypatch)
    rb = Replicator(b)
    task = asyncio.create_task(rb.connect(srv.address, live=True))
    await asyncio.wait_for(in_set_up.wait(), 10)
    late = await a.publish("stored during the set-up")
    published.set()
    await asyncio.wait_for(_caught_up(rb), 10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while await seq_of(b, a.id) < late.seq:
        assert loop.time() - t0 < 5, "the message stored during the set-up never arrived"
        await asyncio.sleep(0.02)
    task.cancel()
    srv.server.close()
    for n in (a, b):
        await n.close()


async def test_a_link_failed_during_its_set_up_ends_with_that_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shutdown that comes while a link is still being set up: the link ends with the code
    as soon as its session begins, and the peer is told."""
    a, b = await nodes(tmp_path, "a", "b")
    await a.follow(b.id)
    await b.follow(a.id)
    srv = await serve(a)
    in_set_up, go_on = hold_set_up(a, monkeypatch)
    task = asyncio.create_task(Replicator(b).connect(srv.address, live=True))
    await asyncio.wait_for(in_set_up.wait(), 10)
    for link in list(srv.rep.links):
        link.fail("shutting-down", "the server is shutting down")
    go_on.set()
    res = await asyncio.wait_for(task, 10)
    assert res.error == "peer-shutting-down", res
    (theirs,) = await srv.ended()
    assert theirs.error == "shutting-down", theirs
    srv.server.close()
    for n in (a, b):
        await n.close()

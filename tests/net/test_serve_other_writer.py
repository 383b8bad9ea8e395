"""A serving node whose home another process writes to (`feedlog sync` or `post` in the home
`feedlog serve` runs in): the server's cached feed heads must not make it refuse what a peer
sends next (it used to end the link with seq-gap)."""

from __future__ import annotations

from pathlib import Path

from feedlog.net.replicator import Replicator
from feedlog.node import Node
from tests.net.test_sync import serve


async def test_serve_takes_feeds_another_writer_advanced_meanwhile(tmp_path: Path) -> None:
    a, b = await Node.init(tmp_path / "a"), await Node.init(tmp_path / "b")
    await a.follow(b.id)
    await b.follow(a.id)
    await b.publish_many(["b1", "b2"])
    srv = await serve(a)
    first = await Replicator(b).connect(srv.address)
    assert first.caught_up and first.error is None  # a's process caches b's head now
    other = await Node.open(tmp_path / "a")  # another process on a's home
    await b.publish_many(["b3", "b4"])
    info = await b.feed_info(b.id)
    assert info is not None
    added = await other.ingestor().ingest(await b.store.range(b.id, 1, info.seq))
    assert added.added == 2
    await other.close()
    await b.publish("b5")
    res = await Replicator(b).connect(srv.address)
    assert res.error is None and res.caught_up, res
    mine, theirs = await a.feed_info(b.id), await b.feed_info(b.id)
    assert mine is not None and theirs is not None and mine.seq == theirs.seq == info.seq + 1
    srv.server.close()
    await srv.server.wait_closed()
    await a.close()
    await b.close()

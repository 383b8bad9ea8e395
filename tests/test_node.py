"""The Node facade and the ingest pipeline, on real SQLite homes."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from feedlog import Node
from feedlog.core import content
from feedlog.core.errors import LocalError, StoreError
from feedlog.core.message import create
from feedlog.identity import KEY_FILE


async def two_nodes(tmp_path: Path) -> tuple[Node, Node]:
    return await Node.init(tmp_path / "a"), await Node.init(tmp_path / "b")


async def test_publish_follow_name_feed(tmp_path: Path) -> None:
    a, b = await two_nodes(tmp_path)
    await a.set_name("Alice")
    await a.follow(b.id)
    await a.publish("hello")
    msgs = await a.feed()
    assert [m.seq for m in msgs] == [1, 2, 3]
    assert [m.type for m in msgs] == ["about", "follow", "post"]
    assert await a.following() == [b.id]
    assert (await a.replication()).wanted == {a.id, b.id}
    assert await a.name_of(a.id) == "Alice"
    assert [m.seq for m in await a.feed(limit=1)] == [3]
    st = await a.status()
    assert st["seq"] == 3 and st["following"] == 1 and st["name"] == "Alice"
    with pytest.raises(LocalError):
        await a.follow(a.id)
    await a.close()
    await b.close()


async def test_key_file_mode_and_permissions(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    await a.close()
    key = tmp_path / "a" / KEY_FILE
    assert (key.stat().st_mode & 0o777) == 0o600
    os.chmod(key, 0o640)
    with pytest.raises(LocalError) as e:
        await Node.open(tmp_path / "a")
    assert e.value.code == "key-permissions"
    with pytest.raises(LocalError) as e:
        await Node.init(tmp_path / "a")
    assert e.value.code == "key-exists"


async def test_ingest_other_feed_and_verify(tmp_path: Path) -> None:
    a, b = await two_nodes(tmp_path)
    await a.publish_many([f"m{i}" for i in range(1500)])
    raws = [m.raw for m in await a.feed()]
    ing = b.ingestor()
    for i in range(0, len(raws), 400):
        await ing.put(raws[i : i + 400])
    rep = await ing.finish()
    assert rep.added == 1500 and rep.rejected == 0
    again = await b.ingestor().ingest(raws[-3:])
    assert again.duplicates == 3 and again.added == 0
    assert [m.raw for m in await b.feed(a.id)] == raws
    v = await b.verify()
    assert v.ok and v.messages == 1500
    await a.close()
    await b.close()


async def test_forged_signature_stops_the_feed_keeps_the_valid_prefix(tmp_path: Path) -> None:
    a, b = await two_nodes(tmp_path)
    msgs = await a.publish_many([f"m{i}" for i in range(10)])
    raws = [m.raw for m in msgs]
    bad = bytearray(raws[5])
    sig_at = bad.index(msgs[5].signature)
    bad[sig_at] ^= 1
    raws[5] = bytes(bad)
    rep = await b.ingestor().ingest(raws)
    r = rep.feeds[a.id]
    assert r.added == 5 and r.rejected.get("bad-signature") == 1
    assert r.rejected.get("feed-refused") == 4
    info = await b.feed_info(a.id)
    assert info is not None and info.seq == 5
    assert (await b.verify()).ok
    await a.close()
    await b.close()


async def test_fork_is_recorded_with_proof_and_feed_frozen(tmp_path: Path) -> None:
    a, b = await two_nodes(tmp_path)
    msgs = await a.publish_many(["1", "2", "3"])
    await b.ingestor().ingest([m.raw for m in msgs])
    twin = create(a.keys, msgs[1].state, content.post("evil twin"), 5)
    rep = await b.ingestor().ingest([twin.raw])
    assert rep.feeds[a.id].forked and len(rep.forks) == 1
    info = await b.feed_info(a.id)
    assert info is not None and info.forked_seq == 3
    later = create(a.keys, msgs[2].state, content.post("4"), 6)
    rep2 = await b.ingestor().ingest([later.raw])
    assert rep2.feeds[a.id].rejected == {"feed-forked": 1}
    st = await b.status()
    assert st["forked"][0]["seq"] == 3
    v = await b.verify()
    assert v.ok and v.forks == 1
    await a.close()
    await b.close()


async def test_junk_and_unwanted_feeds_are_rejected_with_codes(tmp_path: Path) -> None:
    a, b = await two_nodes(tmp_path)
    m = await a.publish("x")
    rep = await b.ingestor(only_wanted=[b.id]).ingest([m.raw, b"\x00junk", m.raw[:-2]])
    assert rep.feeds[a.id].rejected == {"not-wanted": 1}
    assert rep.codes() == {"not-wanted": 1, "trailing-bytes": 1, "malformed": 1}
    assert await b.feed_info(a.id) is None
    await a.close()
    await b.close()


async def test_own_feed_restored_from_elsewhere_continues_chain(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    msgs = await a.publish_many(["1", "2"])
    keys = a.keys
    await a.close()
    c = await Node.init(tmp_path / "c", keys=keys, fenced=False)
    await c.ingestor().ingest([m.raw for m in msgs])
    m3 = await c.publish("3")
    assert m3.seq == 3 and m3.previous == msgs[1].id
    await c.close()


async def test_publish_many_is_all_or_nothing_and_chains_on(tmp_path: Path) -> None:
    a = await Node.init(tmp_path / "a")
    first = await a.publish_many([f"m{i}" for i in range(300)] + [{"type": "x-note", "n": 1}])
    assert [m.seq for m in first] == list(range(1, 302))
    # a bad item after several signing jobs were started: nothing of the batch is stored
    items: list[str | dict[str, object]] = [f"n{i}" for i in range(700)]
    items.insert(500, {"type": "about", "name": ""})
    with pytest.raises(LocalError) as info:
        await a.publish_many(items)
    assert info.value.code == "bad-content"
    assert (await a.status())["seq"] == 301
    more = await a.publish_many([f"k{i}" for i in range(1000)])  # several jobs, one batch
    assert [m.seq for m in more] == list(range(302, 1302))
    assert more[0].previous == first[-1].id
    assert all(m.previous == p.id for p, m in itertools.pairwise(more))
    assert [m.raw for m in await a.feed(since=301)] == [m.raw for m in more]
    report = await a.verify()
    assert report.ok and report.messages == 1301
    await a.close()


async def test_publish_many_on_a_full_store_stores_nothing_and_goes_on(tmp_path: Path) -> None:
    from feedlog.store.sqlite import SqliteStore

    a = await Node.init(tmp_path / "a")
    first = await a.publish_many([f"m{i}" for i in range(5)])
    store = a.store
    assert isinstance(store, SqliteStore)
    pages = (await store._rows("PRAGMA page_count"))[0][0]
    await store.set_max_pages(pages + 2)
    with pytest.raises(StoreError) as info:  # chunks are written as they are signed
        await a.publish_many([f"big {i} " + "x" * 300 for i in range(2000)])
    assert info.value.code == "disk-full"
    assert (await a.status())["seq"] == 5
    await store.set_max_pages(10**7)
    more = await a.publish_many([f"n{i}" for i in range(300)])
    assert more[0].seq == 6 and more[0].previous == first[-1].id
    assert (await a.verify()).ok
    await a.close()

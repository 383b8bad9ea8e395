"""Group conversations at the node and store level (feedlog/groups.py, feedlog/group_order.py):
the API, completeness as feeds arrive, the stored order kept incrementally, and properties of
random conversations among real nodes that exchange signed messages through ingest sessions.
The pure ordering itself is tested in tests/core/test_view.py; here the question is whether
what nodes store, place and show always equals it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedlog import Node
from feedlog import group_order as go
from feedlog.core.errors import LocalError
from feedlog.core.ids import MsgId, msg_id_text
from feedlog.core.view import GroupView, order_group
from feedlog.groups import show_json
from tests.conftest import keypair

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def transfer(src: Node, dst: Node, authors: Iterable[bytes] | None = None) -> int:
    """Give ``dst`` what ``src`` holds and ``dst`` lacks (only ``authors``' feeds if given),
    through an ingest session, as replication would."""
    wanted = None if authors is None else set(authors)
    raws: list[bytes] = []
    for info in await src.store.feeds():
        if wanted is not None and info.author not in wanted:
            continue
        have = await dst.store.feed(info.author)
        raws += await src.store.range(info.author, (have.seq if have else 0) + 1, info.seq)
    if raws:
        rep = await dst.ingestor().ingest(raws)
        assert rep.rejected == 0, rep.codes()
    return len(raws)


async def full_view(node: Node, gid: bytes) -> GroupView:
    """order_group over everything the node stores for the group: the reference result."""
    root = await node.store.group_root(gid)
    return order_group(root, [p for _, p in await node.store.group_posts(gid)])


async def shown_ids(node: Node, gid: bytes) -> list[bytes]:
    return [r.id for r in (await go.display(node.store, gid))[1]]


async def check_node(node: Node, gid: bytes) -> GroupView:
    """The stored order, the in-memory index and order_group agree, flags and tips included."""
    ref = await full_view(node, gid)
    state, rows = await go.display(node.store, gid)
    assert [r.id for r in rows] == list(ref.order)
    for row, e in zip(rows, ref.entries, strict=True):
        assert go.unpack_flags(row.flags) == (e.missing_refs, e.reply_missing, e.ignored_refs)
    assert {r.id for r in state.tips} == ({r.id for r in ref.tips} if ref.entries else set())
    assert state.missing == set(ref.missing_refs)
    assert (await node.group_view(MsgId(gid))) == ref
    return ref


def nodes(n: int) -> list[Node]:
    return [Node.in_memory(keypair(f"groups-{i}")) for i in range(n)]


async def close(ns: Iterable[Node]) -> None:
    for n in ns:
        await n.close()


# --- API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_create_post_reply_list_show(kind: str, tmp_path: Path) -> None:
    if kind == "memory":
        a, b = nodes(2)
    else:
        a, b = await Node.init(tmp_path / "a"), await Node.init(tmp_path / "b")
    await a.set_name("Alice")
    root = await a.create_group("Tea", [b.id])
    gid = MsgId(root.id)
    p1 = await a.post_to_group(gid, "kettle on?")
    assert p1.value is not None and p1.value["refs"] == [[a.id, root.seq, root.id]]
    await transfer(a, b)
    [summary] = await b.groups()
    assert (summary.root.title if summary.root else None, summary.unread) == ("Tea", 1)
    assert summary.member and not summary.posted
    r1 = await b.reply(MsgId(p1.id), "yes please")
    assert r1.value is not None and r1.value["refs"] == [[a.id, p1.seq, p1.id]]
    assert r1.value["reply"] == [a.id, p1.seq, p1.id]
    data = await show_json(b, gid)
    assert [(e["n"], e["text"], e["reply_n"], e["name"]) for e in data["entries"]] == [
        (1, "kettle on?", None, "Alice"), (2, "yes please", 1, None)]
    assert data["complete"] and data["missing_count"] == 0 and data["title"] == "Tea"
    assert data["tips"] == [msg_id_text(r1.id)]
    assert (await b.groups())[0].unread == 0  # showing marked it read
    await transfer(b, a)
    assert (await a.groups())[0].unread == 1
    await a.mark_group_read(gid)
    assert (await a.groups())[0].unread == 0
    assert await shown_ids(a, gid) == await shown_ids(b, gid) == [p1.id, r1.id]
    await b.reply(gid, "answering the root itself")
    assert (await show_json(b, gid))["entries"][-1]["reply_n"] == 0

    plain = await a.publish("not a group post")
    for call, code in [
        (a.post_to_group(MsgId(plain.id), "x"), "unknown-group"),
        (a.reply(MsgId(plain.id), "x"), "not-in-group"),
        (a.reply(MsgId(b"\x01" * 32), "x"), "unknown-message"),
        (a.post_to_group(gid, "   "), "bad-content"),
        (a.create_group(""), "bad-content"),
    ]:
        with pytest.raises(LocalError) as e:
            await call
        assert e.value.code == code
    await close([a, b])


async def test_groups_lists_yours_unless_all() -> None:
    a, b, c = nodes(3)
    root = await a.create_group("a and c only", [c.id])
    await transfer(a, b)
    assert await b.groups() == []
    assert [g.group_id for g in await b.groups(everything=True)] == [root.id]
    await b.post_to_group(MsgId(root.id), "gatecrashing")
    assert [g.posted for g in await b.groups()] == [True]
    await close([a, b, c])


# --- completeness ---------------------------------------------------------------------------


async def test_missing_parts_are_reported_by_feed_and_filled_by_ingest() -> None:
    a, b, c, reader = nodes(4)
    await c.set_name("Carol")
    gid = MsgId((await a.create_group("plans")).id)
    await a.post_to_group(gid, "a1", timestamp=10)
    for n in (b, c):
        await transfer(a, n)
    await c.post_to_group(gid, "c1", timestamp=20)
    await c.post_to_group(gid, "c2", timestamp=21)
    await transfer(c, b)
    await b.post_to_group(gid, "b1 after seeing carol", timestamp=30)
    await reader.follow(a.id)
    await reader.follow(b.id)
    await transfer(a, reader, [a.id])
    await transfer(b, reader, [b.id])  # carol's feed is not followed, so not taken
    data = await show_json(reader, gid)
    assert [e["text"] for e in data["entries"]] == ["a1", "b1 after seeing carol"]
    assert data["entries"][1]["missing_refs"] and not data["complete"]
    [gap] = data["missing"]
    assert gap["author"] == c.id_text and gap["following"] is False and gap["held_seq"] == 0
    assert gap["max_seq"] == 3 and data["missing_count"] == 1
    await check_node(reader, gid)
    await transfer(c, reader, [c.id])
    data = await show_json(reader, gid)
    assert [e["text"] for e in data["entries"]] == ["a1", "c1", "c2", "b1 after seeing carol"]
    assert data["complete"] and all(not e["missing_refs"] for e in data["entries"])
    await check_node(reader, gid)
    await close([a, b, c, reader])


async def test_root_arriving_last() -> None:
    a, b, reader = nodes(3)
    gid = MsgId((await a.create_group("root later")).id)
    await transfer(a, b)
    await b.post_to_group(gid, "b first")
    await transfer(b, reader, [b.id])
    data = await show_json(reader, gid)
    assert data["root"] is None and data["missing"][0]["author"] == a.id_text
    assert (await reader.reply(MsgId((await reader.store.group_posts(gid))[0][1].id), "hi"))
    await check_node(reader, gid)
    await transfer(a, reader, [a.id])
    assert (await show_json(reader, gid))["complete"]
    await check_node(reader, gid)
    await close([a, b, reader])


# --- the stored order -----------------------------------------------------------------------


async def test_order_is_kept_incrementally(tmp_path: Path) -> None:
    a, b = await Node.init(tmp_path / "a"), await Node.init(tmp_path / "b")
    gid = MsgId((await a.create_group("steady")).id)
    await transfer(a, b)
    for i in range(40):  # alternate, each having seen everything: always appended
        who = (a, b)[i % 2]
        await who.post_to_group(gid, f"m{i}", timestamp=1000 + i)
        await transfer(who, (b, a)[i % 2])
        await go.catch_up(a.store, gid)
    assert (await go.catch_up(a.store, gid)).rebuilds == 1  # the first look only
    for i in range(10):  # concurrent: b posts without seeing a's last posts, dated earlier
        await a.post_to_group(gid, f"a-late{i}", timestamp=5000 + i)
        await b.post_to_group(gid, f"b-conc{i}", timestamp=4000 + i)
        await transfer(b, a)
        await go.catch_up(a.store, gid)
        await transfer(a, b)
    assert (await go.catch_up(a.store, gid)).rebuilds == 1
    ref = await check_node(a, gid)
    assert await shown_ids(b, gid) == list(ref.order)
    await close([a, b])


async def test_no_room_between_positions_renumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(go, "GAP", 4)
    a, b, reader = nodes(3)
    gid = MsgId((await a.create_group("crowded")).id)
    await transfer(a, b)
    await transfer(a, reader)
    await a.post_to_group(gid, "late", timestamp=10_000)
    await transfer(a, reader, [a.id])
    for i in range(6):  # each lands before the previous one: the gap halves every time
        await b.post_to_group(gid, f"early {i}", timestamp=9000 - i)
    await transfer(b, reader, [b.id])
    await go.catch_up(reader.store, gid)
    for i in range(6, 12):
        await b.post_to_group(gid, f"early {i}", timestamp=9000 - i)
        await transfer(b, reader, [b.id])
        await go.catch_up(reader.store, gid)
    await check_node(reader, gid)
    assert (await go.catch_up(reader.store, gid)).rebuilds >= 2
    await close([a, b, reader])


# --- properties -----------------------------------------------------------------------------


async def converse(rng: random.Random, authors: list[Node], posts: int) -> MsgId:
    """A random conversation: before each post its author may pull from other authors (so it
    has seen some of what exists); posts are concurrent whenever authors have not synced, and
    some are replies. Timestamps are drawn from a small range so ties happen."""
    gid = MsgId((await authors[0].create_group("random", [n.id for n in authors[1:]],)).id)
    clock = 100
    for _ in range(posts):
        a = rng.choice(authors)
        for other in authors:
            if other is not a and rng.random() < 0.4:
                await transfer(other, a)
        if await a.store.group_root(gid) is None and not await a.store.group_posts(gid):
            await transfer(authors[0], a)
        clock += rng.randint(0, 3)
        held = [p for _, p in await a.store.group_posts(gid)]
        if held and rng.random() < 0.3:
            await a.reply(MsgId(rng.choice(held).id), "re", timestamp=clock)
        else:
            await a.post_to_group(gid, f"p{clock}", timestamp=clock + rng.randint(-2, 2))
    return gid


def check_constraints(ids: list[bytes], view: GroupView) -> None:
    pos = {i: k for k, i in enumerate(ids)}
    assert len(pos) == len(ids)
    for e in view.entries:
        m = e.message
        for r in (*m.refs, *((m.reply,) if m.reply else ())):
            if r.id in pos:
                assert pos[r.id] < pos[m.id]


async def _arrival(seed: int, n_authors: int, posts: int) -> None:
    rng = random.Random(seed)
    authors = nodes(n_authors)
    gid = await converse(rng, authors, posts)
    for n in authors[1:]:
        await transfer(n, authors[0])
    truth = await full_view(authors[0], gid)
    # A reader takes the feeds in a random interleaving of random chunks, looking in between.
    reader = Node.in_memory(keypair(f"reader-{seed}"))
    feeds = {i.author: await authors[0].store.range(i.author, 1, i.seq)
             for i in await authors[0].store.feeds()}
    while feeds:
        author = rng.choice(sorted(feeds))
        k = rng.randint(1, 4)
        chunk, feeds[author] = feeds[author][:k], feeds[author][k:]
        if not feeds[author]:
            del feeds[author]
        await reader.ingestor().ingest(chunk)
        if rng.random() < 0.5:
            await check_node(reader, gid)
    final = await check_node(reader, gid)
    assert final == truth
    ids = await shown_ids(reader, gid)
    assert sorted(ids) == sorted(m.id for m in (p for _, p in
                                                await authors[0].store.group_posts(gid)))
    check_constraints(ids, final)
    await close([*authors, reader])


@PROPS
@given(st.integers(0, 10**6), st.integers(3, 6), st.integers(1, 30))
def test_every_arrival_order_gives_the_same_order(seed: int, n_authors: int,
                                                  posts: int) -> None:
    asyncio.run(_arrival(seed, n_authors, posts))


async def _split(seed: int, n_authors: int, posts: int, n_nodes: int) -> None:
    rng = random.Random(seed)
    authors = nodes(n_authors)
    gid = await converse(rng, authors, posts)
    for n in authors[1:]:
        await transfer(n, authors[0])
    truth = await full_view(authors[0], gid)
    # Each node gets a random prefix of each feed (one of them all of it), shows what it has,
    # then they all exchange.
    homes = [Node.in_memory(keypair(f"home-{seed}-{i}")) for i in range(n_nodes)]
    everything = set(truth.order) | {gid}
    feeds = await authors[0].store.feeds()
    whole = {info.author: rng.randrange(n_nodes) for info in feeds}
    for i, h in enumerate(homes):
        for info in feeds:
            k = info.seq if whole[info.author] == i else rng.randint(0, info.seq)
            if k:
                await h.ingestor().ingest(await authors[0].store.range(info.author, 1, k))
        if await h.store.group_root(gid) or await h.store.group_posts(gid):
            partial = await check_node(h, gid)
            check_constraints(await shown_ids(h, gid), partial)
            assert {r.id for r in partial.missing_refs} <= everything
    for _ in range(2):
        for x in homes:
            for y in homes:
                if x is not y:
                    await transfer(x, y)
    for h in homes:
        assert await check_node(h, gid) == truth
        assert await shown_ids(h, gid) == list(truth.order)
    await close([*authors, *homes])


@PROPS
@given(st.integers(0, 10**6), st.integers(3, 6), st.integers(1, 30), st.integers(2, 3))
def test_every_split_across_nodes_merges_to_the_same_order(seed: int, n_authors: int,
                                                           posts: int, n_nodes: int) -> None:
    asyncio.run(_split(seed, n_authors, posts, n_nodes))



# --- the order is made on sync and import, not at the first show -----------------------------


async def _rebuilds(node: Node, gid: bytes) -> int | None:
    blob = await node.store.group_order_state(gid)
    return None if blob is None else go.OrderState.decode(blob).rebuilds


async def test_a_sync_places_what_it_brought_so_the_first_show_only_reads(
        tmp_path: Path) -> None:
    from feedlog.net.replicator import Replicator
    from tests.net.test_sync import serve

    a, b = await Node.init(tmp_path / "a"), await Node.init(tmp_path / "b")
    await a.follow(b.id)
    await b.follow(a.id)
    gid = MsgId((await a.create_group("big")).id)
    for i in range(go.BATCH + 20):  # more than BATCH new posts: placed by one rebuild
        await a.post_to_group(gid, f"a{i}", timestamp=1000 + i)
    assert await a.store.unplaced_groups() == [gid]  # a's newest post is not placed yet
    srv = await serve(a)
    res = await Replicator(b).connect(srv.address)
    assert res.caught_up and res.added > go.BATCH
    assert await b.store.unplaced_groups() == []
    assert await _rebuilds(b, gid) == 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await a.store.unplaced_groups():  # the server settles once b said it is done
        assert loop.time() < deadline, "the serving side never placed its newest post"
        await asyncio.sleep(0.02)
    data = await show_json(b, gid)
    assert [e["text"] for e in data["entries"]] == [f"a{i}" for i in range(go.BATCH + 20)]
    assert await _rebuilds(b, gid) == 1  # the show read the order the sync made
    assert await check_node(b, gid) == await check_node(a, gid)
    srv.server.close()
    await srv.server.wait_closed()
    await close([a, b])


async def test_an_import_places_what_it_brought_a_dry_run_writes_nothing(
        tmp_path: Path) -> None:
    from feedlog.bundle import export_bundle, import_bundle

    a, c = await Node.init(tmp_path / "a"), await Node.init(tmp_path / "c")
    await c.follow(a.id)
    gid = MsgId((await a.create_group("stick")).id)
    for i in range(5):
        await a.post_to_group(gid, f"p{i}", timestamp=1000 + i)
    (tmp_path / "stick").mkdir()
    await export_bundle(a, tmp_path / "stick")
    await import_bundle(c, tmp_path / "stick", dry_run=True)
    assert await c.store.group_order_state(gid) is None and not await c.store.group_posts(gid)
    await import_bundle(c, tmp_path / "stick")
    assert await c.store.unplaced_groups() == [] and await _rebuilds(c, gid) == 1
    assert [e["text"] for e in (await show_json(c, gid))["entries"]] == [
        f"p{i}" for i in range(5)]
    assert await _rebuilds(c, gid) == 1
    await check_node(c, gid)
    await close([a, c])

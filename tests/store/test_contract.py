"""One contract, two stores: every test runs against MemoryStore and SqliteStore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from feedlog.core import content
from feedlog.core.crypto import Keypair
from feedlog.core.errors import StoreError
from feedlog.core.fork import make_fork_proof
from feedlog.core.group_content import group_content, post_content
from feedlog.core.ids import FeedId
from feedlog.core.message import FeedState, Message, create
from feedlog.core.view import MsgRef
from feedlog.store import MemoryStore, PeerRecord, SqliteStore, Store
from tests.conftest import keypair


def chain(keys: Keypair, n: int, start: FeedState | None = None, tag: str = "") -> list[Message]:
    s = start or FeedState(FeedId(keys.public))
    out = []
    for i in range(n):
        m = create(keys, s, content.post(f"{tag}{s.seq + 1}"), 1000 + i)
        out.append(m)
        s = m.state
    return out


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else await SqliteStore.open(
        tmp_path / "db.sqlite3")
    yield s
    await s.close()


class TestStoreContract:
    async def test_empty(self, store: Store, alice: Keypair) -> None:
        assert await store.feed(FeedId(alice.public)) is None
        assert await store.feeds() == []
        assert await store.count() == 0
        assert await store.get_seq(FeedId(alice.public), 1) is None

    async def test_append_and_read_back_exact_bytes(self, store: Store, alice: Keypair) -> None:
        msgs = chain(alice, 10)
        await store.append(msgs)
        a = FeedId(alice.public)
        info = await store.feed(a)
        assert info is not None and info.seq == 10 and info.head == msgs[-1].id
        assert await store.range(a, 1, 10) == [m.raw for m in msgs]
        assert await store.range(a, 4, 6) == [m.raw for m in msgs[3:6]]
        assert await store.get(msgs[4].id) == msgs[4].raw
        assert await store.get_seq(a, 7) == msgs[6].raw
        assert await store.count() == 10

    async def test_batch_of_several_feeds_and_runs(self, store: Store, alice: Keypair,
                                                   bob: Keypair) -> None:
        a, b = chain(alice, 4), chain(bob, 2)
        await store.append([a[0], a[1], b[0], a[2], b[1], a[3]])
        assert sorted(f.seq for f in await store.feeds()) == [2, 4]
        assert await store.range(FeedId(alice.public), 1, 4) == [m.raw for m in a]
        fa = await store.feed(FeedId(alice.public))
        fb = await store.feed(FeedId(bob.public))
        assert fa is not None and fa.seq == 4 and fb is not None and fb.seq == 2

    async def test_gap_refused_atomically(self, store: Store, alice: Keypair, bob: Keypair) -> None:
        a, b = chain(alice, 3), chain(bob, 2)
        with pytest.raises(StoreError) as e:
            await store.append([b[0], b[1], a[0], a[2]])  # gap in alice's run
        assert e.value.code == "not-contiguous"
        assert await store.count() == 0  # bob's valid run was not half-applied
        await store.append(a[:2])
        with pytest.raises(StoreError):
            await store.append([a[0]])  # duplicate seq
        with pytest.raises(StoreError):  # a second, conflicting seq 2
            await store.append([create(alice, a[0].state, content.post("evil"), 5)])
        info = await store.feed(FeedId(alice.public))
        assert info is not None and info.seq == 2 and info.head == a[1].id

    async def test_fork_proof_marks_feed_and_freezes(self, store: Store, alice: Keypair) -> None:
        a = chain(alice, 3)
        await store.append(a)
        twin = create(alice, a[1].state, content.post("twin"), 9)
        proof = make_fork_proof(a[2], twin)
        assert await store.record_fork(proof) is True
        assert await store.record_fork(proof) is False
        info = await store.feed(FeedId(alice.public))
        assert info is not None and info.forked_seq == 3 and info.seq == 3
        assert await store.fork_proofs() == [proof.encode()]
        assert await store.fork_proofs(FeedId(alice.public)) == [proof.encode()]
        with pytest.raises(StoreError) as e:
            await store.append(chain(alice, 1, a[2].state))
        assert e.value.code == "feed-forked"
        assert await store.get_seq(FeedId(alice.public), 3) == a[2].raw  # both kept

    async def test_contacts_and_names_keep_the_latest(self, store: Store, alice: Keypair,
                                                      bob: Keypair) -> None:
        s = FeedState(FeedId(alice.public))
        msgs = []
        for c in [content.contact("follow", bob.public), content.about("A"),
                  content.contact("unfollow", bob.public), content.about("Alice")]:
            m = create(alice, s, c, 1)
            msgs.append(m)
            s = m.state
        await store.append(msgs[:2])
        await store.append(msgs[2:])
        rows = await store.contacts()
        assert [(r.target, r.kind, r.seq) for r in rows] == [(bob.public, "unfollow", 3)]
        info = await store.feed(FeedId(alice.public))
        assert info is not None and info.name == "Alice"

    async def test_meta(self, store: Store) -> None:
        assert await store.get_meta("k") is None
        await store.set_meta("k", "v")
        await store.set_meta("k", "w")
        assert await store.get_meta("k") == "w"
        await store.set_meta("k", None)
        assert await store.get_meta("k") is None

    async def test_peer_notes_are_per_peer_and_direction(self, store: Store, alice: Keypair,
                                                         bob: Keypair) -> None:
        a, b = FeedId(alice.public), FeedId(bob.public)
        assert await store.peer_notes(a, "sent") == {}
        await store.update_peer_notes(a, "sent", {a: (10, None), b: (3, 2)}, [])
        await store.update_peer_notes(a, "recv", {b: (7, None)}, [])
        assert await store.peer_notes(a, "sent") == {a: (10, None), b: (3, 2)}
        assert await store.peer_notes(a, "recv") == {b: (7, None)}
        assert await store.peer_notes(b, "sent") == {}
        await store.update_peer_notes(a, "sent", {a: (12, None)}, [b])
        assert await store.peer_notes(a, "sent") == {a: (12, None)}

    async def test_peer_baselines_keep_heads(self, store: Store, alice: Keypair,
                                             bob: Keypair) -> None:
        a, b = FeedId(alice.public), FeedId(bob.public)
        h1, h2 = b"\x01" * 8, b"\x02" * 8
        # a baseline saved without heads (as before heads existed) reads back with none
        await store.update_peer_notes(a, "sent", {a: (10, None)}, [])
        assert await store.peer_baseline(a, "sent") == {a: (10, None, None)}
        await store.update_peer_baseline(a, "sent", {a: (12, None, h1), b: (5, 2, h2)}, [])
        await store.update_peer_baseline(a, "recv", {b: (0, None, None)}, [])
        assert await store.peer_baseline(a, "sent") == {a: (12, None, h1), b: (5, 2, h2)}
        assert await store.peer_notes(a, "sent") == {a: (12, None), b: (5, 2)}
        assert await store.peer_baseline(a, "recv") == {b: (0, None, None)}
        assert await store.peer_baseline(b, "sent") == {}
        # a head is replaced with its entry, dropped with it, and an entry without one has none
        await store.update_peer_baseline(a, "sent", {a: (14, None, h2)}, [b])
        assert await store.peer_baseline(a, "sent") == {a: (14, None, h2)}
        await store.update_peer_baseline(a, "sent", {b: (6, None, h1)}, [])
        await store.update_peer_notes(a, "sent", {a: (16, None)}, [])
        assert await store.peer_baseline(a, "sent") == {a: (16, None, None), b: (6, None, h1)}
        await store.update_peer_baseline(a, "sent", {}, [a, b])
        await store.update_peer_baseline(a, "sent", {a: (2, None, None)}, [])
        assert await store.peer_baseline(a, "sent") == {a: (2, None, None)}
    async def test_peer_book(self, store: Store, alice: Keypair, bob: Keypair) -> None:
        a, b = FeedId(alice.public), FeedId(bob.public)
        assert await store.peers() == []
        await store.peer_seen(a, "10.0.0.1", 8008, "lan", 1000)
        assert await store.peers() == [PeerRecord(a, "10.0.0.1", 8008, "lan", 1000, None,
                                                  "discovered")]
        await store.peer_state(a, "connected", 1100, synced=False)
        await store.peer_state(a, "synced", 1200, synced=True)
        rows = {r.feed: r for r in await store.peers()}
        assert rows[a] == PeerRecord(a, "10.0.0.1", 8008, "lan", 1200, 1200, "synced")
        await store.peer_seen(a, "10.0.0.9", 9000, "lan", 1300)  # moved: address and time only
        await store.peer_state(a, "unreachable", 1400, synced=False)  # keeps both times
        # a peer that dialled us: a row with no address, seen when it connected
        await store.peer_state(b, "connected", 1500, synced=False)
        await store.peer_state(b, "disconnected", 1550, synced=False)
        rows = {r.feed: r for r in await store.peers()}
        assert rows[a] == PeerRecord(a, "10.0.0.9", 9000, "lan", 1300, 1200, "unreachable")
        assert rows[b] == PeerRecord(b, "", 0, "inbound", 1500, None, "disconnected")
        assert [r.feed for r in await store.peers()] == sorted([a, b])
        await store.peer_seen(b, "10.0.0.2", 8008, "manual", 1600)
        rows = {r.feed: r for r in await store.peers()}
        assert rows[b] == PeerRecord(b, "10.0.0.2", 8008, "manual", 1600, None, "disconnected")


async def test_sqlite_persists_and_refuses_foreign_files(tmp_path: Path) -> None:
    k = keypair("persist")
    p = tmp_path / "db.sqlite3"
    s = await SqliteStore.open(p)
    await s.append(chain(k, 3))
    await s.close()
    s = await SqliteStore.open(p)
    info = await s.feed(FeedId(k.public))
    assert info is not None and info.seq == 3
    await s.close()

    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError) as e:
        await SqliteStore.open(junk)
    assert e.value.code == "store-corrupt"

    import sqlite3

    foreign = tmp_path / "foreign.sqlite3"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    with pytest.raises(StoreError) as e:
        await SqliteStore.open(foreign)
    assert e.value.code == "foreign-store"

    c = sqlite3.connect(p)
    c.execute("PRAGMA user_version = 99")
    c.commit()
    c.close()
    with pytest.raises(StoreError) as e:
        await SqliteStore.open(p)
    assert e.value.code == "store-too-new"


async def test_changes_moves_only_for_another_connections_commits(tmp_path: Path) -> None:
    """``changes`` (what a StoreWatcher polls): our own writes leave it alone, a commit by
    another connection (another process) moves it; a MemoryStore has no other writers."""
    k = keypair("changes")
    first = chain(k, 2)
    mem = MemoryStore()
    before = await mem.changes()
    await mem.append(first)
    assert await mem.changes() == before
    s = await SqliteStore.open(tmp_path / "db.sqlite3")
    before = await s.changes()
    await s.append(first)
    assert await s.changes() == before
    other = await SqliteStore.open(tmp_path / "db.sqlite3")
    await other.append(chain(k, 1, first[-1].state))
    await other.close()
    assert await s.changes() != before
    await s.close()


async def test_sqlite_closed_store_refuses_with_a_code(tmp_path: Path) -> None:
    k = keypair("closed")
    s = await SqliteStore.open(tmp_path / "db.sqlite3")
    await s.append(chain(k, 2))
    await s.close()
    await s.close()  # again: nothing
    calls = [s.feed(FeedId(k.public)), s.append(chain(k, 1)), s.range(FeedId(k.public), 1, 2),
             s.set_meta("k", "v"), s.group_summaries(FeedId(k.public))]
    for call in calls:
        with pytest.raises(StoreError) as e:
            await call
        assert e.value.code == "store-closed"
    s = await SqliteStore.open(tmp_path / "db.sqlite3")  # what was stored is there
    info = await s.feed(FeedId(k.public))
    assert info is not None and info.seq == 2
    await s.close()
    # a statement already on its way when the store closed meets sqlite3's own error
    import sqlite3

    from feedlog.store.sqlite import _store_error

    exc = sqlite3.ProgrammingError("Cannot operate on a closed database.")
    assert _store_error(exc, tmp_path / "db.sqlite3").code == "store-closed"
    # ... or aiosqlite's, once the connection is gone; other ValueErrors stay what they are
    gone = s._closed_under_us(ValueError("Connection closed"))
    assert isinstance(gone, StoreError) and gone.code == "store-closed"
    other = ValueError("something else")
    assert s._closed_under_us(other) is other


async def test_sqlite_full_disk_keeps_store_intact(tmp_path: Path) -> None:
    k = keypair("full")
    p = tmp_path / "db.sqlite3"
    s = await SqliteStore.open(p)
    first = chain(k, 5)
    await s.append(first)
    pages = (await s._rows("PRAGMA page_count"))[0][0]
    await s.set_max_pages(pages + 2)
    more = chain(k, 2000, first[-1].state)
    with pytest.raises(StoreError) as e:
        await s.append(more)
    assert e.value.code == "disk-full"
    info = await s.feed(FeedId(k.public))
    assert info is not None and info.seq == 5
    await s.set_max_pages(10**7)
    await s.append(more)
    info = await s.feed(FeedId(k.public))
    assert info is not None and info.seq == 2005
    await s.close()


async def test_sqlite_peer_book_persists_and_old_stores_gain_the_table(tmp_path: Path) -> None:
    import sqlite3

    k = keypair("peer")
    p = tmp_path / "db.sqlite3"
    s = await SqliteStore.open(p)
    await s.peer_seen(FeedId(k.public), "10.1.1.1", 8008, "lan", 5)
    await s.close()
    c = sqlite3.connect(p)
    c.execute("DROP TABLE peers")  # as a store made before the peer book existed
    c.commit()
    c.close()
    s = await SqliteStore.open(p)
    assert await s.peers() == []
    await s.peer_seen(FeedId(k.public), "10.1.1.1", 8008, "lan", 7)
    await s.close()
    s = await SqliteStore.open(p)
    assert [r.last_seen for r in await s.peers()] == [7]
    await s.close()


# --- the group index (store/groups.py) ------------------------------------------------------


def _group_feed(keys: Keypair, bob: Keypair) -> tuple[list[Message], MsgRef]:
    """A root, two posts (the second a reply), a plain post and a malformed group post."""
    s = FeedState(FeedId(keys.public))
    out: list[Message] = []

    def add(c: dict[str, object]) -> Message:
        nonlocal s
        m = create(keys, s, c, 1000 + len(out))
        out.append(m)
        s = m.state
        return m

    root = add(group_content("tea", [keys.public, bob.public]))
    gref = MsgRef(root.author, root.seq, root.id)
    p1 = add(post_content(gref, [gref], "first"))
    r1 = MsgRef(p1.author, p1.seq, p1.id)
    add(post_content(gref, [r1], "second", reply=r1))
    add(content.post("not in a group"))
    add({"type": "post", "text": "bad refs", "group": [root.author, 1, root.id], "refs": 3})
    return out, gref


class TestGroupIndex:
    async def test_roots_and_posts_are_indexed_on_append(self, store: Store, alice: Keypair,
                                                         bob: Keypair) -> None:
        msgs, gref = _group_feed(alice, bob)
        await store.append(msgs[:2])
        await store.append(msgs[2:])
        root = await store.group_root(gref.id)
        assert root is not None and root.title == "tea" and root.members == (alice.public,
                                                                              bob.public)
        posts = await store.group_posts(gref.id)
        assert [p.text for _, p in posts] == ["first", "second"]  # plain/malformed left out
        rxs = [rx for rx, _ in posts]
        assert rxs == sorted(rxs) and len(set(rxs)) == 2
        assert [p.text for _, p in await store.group_posts(gref.id, rxs[0])] == ["second"]
        second = await store.group_post(msgs[2].id)
        assert second is not None and second.reply is not None
        assert second.reply.id == msgs[1].id and second.refs == (second.reply,)
        assert await store.group_post(msgs[3].id) is None
        assert await store.group_root(msgs[1].id) is None

    async def test_summaries_unread_and_read_marker(self, store: Store, alice: Keypair,
                                                    bob: Keypair) -> None:
        msgs, gref = _group_feed(alice, bob)
        await store.append(msgs)
        [mine] = await store.group_summaries(FeedId(alice.public))
        assert (mine.posts, mine.unread, mine.posted, mine.member) == (2, 0, True, True)
        assert mine.last_timestamp == msgs[2].timestamp
        [theirs] = await store.group_summaries(FeedId(bob.public))
        assert (theirs.unread, theirs.posted, theirs.member, theirs.read_rx) == (2, False, True, 0)
        first_rx = (await store.group_posts(gref.id))[0][0]
        await store.set_group_read(gref.id, first_rx)
        await store.set_group_read(gref.id, first_rx - 1)  # never moves back
        [theirs] = await store.group_summaries(FeedId(bob.public))
        assert (theirs.unread, theirs.read_rx) == (1, first_rx)

    async def test_reindex_rebuilds_the_same_index(self, store: Store, alice: Keypair,
                                                   bob: Keypair) -> None:
        msgs, gref = _group_feed(alice, bob)
        await store.append(msgs)
        before = await store.group_posts(gref.id)
        assert await store.reindex_groups() == 3
        assert await store.group_posts(gref.id) == before
        assert await store.group_root(gref.id) is not None

    async def test_stored_order_and_its_guard(self, store: Store, alice: Keypair,
                                              bob: Keypair) -> None:
        msgs, gref = _group_feed(alice, bob)
        await store.append(msgs)
        ids = [msgs[1].id, msgs[2].id]
        assert await store.group_display(gref.id) == []
        assert await store.save_group_order(gref.id, b"s1", [(ids[1], 20, None)], expect=None)
        assert not await store.save_group_order(gref.id, b"x", [(ids[0], 9, None)], expect=None)
        assert await store.group_order_state(gref.id) == b"s1"
        assert await store.group_placed(gref.id, ids) == {ids[1]}
        assert await store.save_group_order(gref.id, b"s2", [(ids[0], 10, b"f")], expect=b"s1")
        shown = await store.group_display(gref.id)
        assert [r.id for r in shown] == ids and [r.flags for r in shown] == [b"f", None]
        assert [r.pos for r in await store.group_tail(gref.id, 1)] == [20]
        assert await store.save_group_order(gref.id, b"s3", [(ids[1], 5, None)], expect=b"s2",
                                            reset=True)
        assert [r.id for r in await store.group_display(gref.id)] == [ids[1]]
        assert await store.group_placed(bob.public, ids) == set()  # another group

    async def test_unplaced_groups_are_those_with_posts_not_in_the_order(
            self, store: Store, alice: Keypair, bob: Keypair) -> None:
        msgs, gref = _group_feed(alice, bob)
        assert await store.unplaced_groups() == []
        await store.append(msgs[:2])  # the root and the first post
        assert await store.unplaced_groups() == [gref.id]
        assert await store.save_group_order(gref.id, b"s1", [(msgs[1].id, 1, None)],
                                            expect=None)
        assert await store.unplaced_groups() == []
        await store.append(msgs[2:])  # the second post (a reply) arrives
        assert await store.unplaced_groups() == [gref.id]
        assert await store.save_group_order(gref.id, b"s2", [(msgs[2].id, 2, None)],
                                            expect=b"s1")
        assert await store.unplaced_groups() == []


async def test_sqlite_store_made_before_groups_is_indexed_on_open(tmp_path: Path,
                                                                  alice: Keypair,
                                                                  bob: Keypair) -> None:
    import sqlite3

    msgs, gref = _group_feed(alice, bob)
    p = tmp_path / "db.sqlite3"
    s = await SqliteStore.open(p)
    await s.append(msgs)
    await s.close()
    c = sqlite3.connect(p)  # what a store written by an older feedlog looks like
    for table in ("group_roots", "group_posts", "group_reads", "group_orders"):
        c.execute(f"DROP TABLE {table}")
    c.execute("DELETE FROM meta WHERE key = 'group-index'")
    c.commit()
    c.close()
    s = await SqliteStore.open(p)
    assert [p.text for _, p in await s.group_posts(gref.id)] == ["first", "second"]
    assert await s.group_root(gref.id) is not None
    await s.close()


def parts_store(store: Store) -> MemoryStore | SqliteStore:
    assert isinstance(store, MemoryStore | SqliteStore)  # the two that have append_parts
    return store


class TestAppendParts:
    """``append_parts``: one atomic batch given as awaitables, written as they resolve."""

    async def test_parts_are_stored_in_order_whenever_they_resolve(
            self, store: Store, alice: Keypair, bob: Keypair) -> None:
        s = parts_store(store)
        msgs = chain(alice, 5)
        named = create(alice, msgs[-1].state, content.about("Alice"), 9)
        follow = create(alice, named.state, content.contact("follow", bob.public), 9)
        more = [*msgs, named, follow, *chain(alice, 4, follow.state)]
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        task = asyncio.ensure_future(s.append_parts(futures))
        futures[2].set_result(more[8:])  # the last part is ready first
        await asyncio.sleep(0.01)
        futures[1].set_result(more[3:8])
        futures[0].set_result(more[:3])
        assert await task == more
        a = FeedId(alice.public)
        assert await s.range(a, 1, 11) == [m.raw for m in more]
        info = await s.feed(a)
        assert info is not None and info.seq == 11 and info.head == more[-1].id
        assert info.name == "Alice"
        assert [(c.target, c.kind) for c in await s.contacts()] == [(bob.public, "follow")]
        await s.append(chain(alice, 1, more[-1].state))  # the next batch continues it
        assert await s.count() == 12

    async def test_a_failed_part_stores_nothing(self, store: Store, alice: Keypair) -> None:
        s = parts_store(store)
        msgs = chain(alice, 6)

        loop = asyncio.get_running_loop()

        def ok(part: list[Message]) -> asyncio.Future[list[Message]]:
            f: asyncio.Future[list[Message]] = loop.create_future()
            f.set_result(part)
            return f

        def broken() -> asyncio.Future[list[Message]]:
            f: asyncio.Future[list[Message]] = loop.create_future()
            f.set_exception(RuntimeError("signing failed"))
            return f

        with pytest.raises(RuntimeError):
            await s.append_parts([ok(msgs[:3]), broken(), ok(msgs[3:])])
        with pytest.raises(RuntimeError):
            await s.append_parts([broken(), ok(msgs)])
        assert await s.count() == 0 and await s.feed(FeedId(alice.public)) is None
        with pytest.raises(StoreError) as e:  # a gap between two parts
            await s.append_parts([ok(msgs[:2]), ok(msgs[3:])])
        assert e.value.code == "not-contiguous"
        assert await s.count() == 0
        assert await s.append_parts([ok(msgs[:2]), ok(msgs[2:])]) == msgs
        assert await s.count() == 6

    async def test_a_cancelled_append_stores_nothing(self, store: Store, alice: Keypair) -> None:
        s = parts_store(store)
        msgs = chain(alice, 4)
        loop = asyncio.get_running_loop()
        first: asyncio.Future[list[Message]] = loop.create_future()
        first.set_result(msgs[:2])
        never: asyncio.Future[list[Message]] = loop.create_future()
        task = asyncio.ensure_future(s.append_parts([first, never]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await s.count() == 0
        await s.append(msgs)  # the store takes the next batch
        assert await s.count() == 4

    async def test_nobody_reads_a_part_before_the_commit(self, store: Store,
                                                        alice: Keypair) -> None:
        s = parts_store(store)
        msgs = chain(alice, 6)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(2)]
        futures[0].set_result(msgs[:3])
        task = asyncio.ensure_future(s.append_parts(futures))
        await asyncio.sleep(0.05)  # the first part is written by now (SQLite)
        reads = [asyncio.ensure_future(s.count()),
                 asyncio.ensure_future(s.get(msgs[0].id))]
        await asyncio.sleep(0.05)
        futures[1].set_result(msgs[3:])
        await task
        count, raw = await asyncio.gather(*reads)
        # the reads waited for the commit (SQLite) or came before the batch (memory)
        assert (count, raw) in ((0, None), (6, msgs[0].raw))

"""Schema 1 or 2 -> 3 of the SQLite store (store/sqlite.py ``_migrate``).

An older store is made by taking a schema-3 store and rebuilding its messages table the way
that schema defined it (schema 1: ``UNIQUE (id)``, no ``idp``; schema 2: ``idp``; both with the
author, id and timestamp as columns, and no ``feed_keys``): the other tables did not change.
Opening it for writing must migrate it in place, keeping every message, its rx (arrival order,
which group read markers point into) and the indexes reads use; an interrupted migration must
leave the old schema intact; an old store opened read-only is read as it is.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from feedlog.core import content
from feedlog.core.errors import StoreError
from feedlog.core.group_content import group_content, post_content
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import FeedState, Message, create
from feedlog.core.validate import decode_message
from feedlog.core.view import MsgRef
from feedlog.store import SqliteStore
from feedlog.store.sqlite import id_prefix
from tests.conftest import keypair

OLD_MESSAGES = {
    1: """CREATE TABLE messages (
        rx INTEGER PRIMARY KEY,
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        id BLOB NOT NULL UNIQUE,
        timestamp INTEGER NOT NULL,
        type TEXT,
        raw BLOB NOT NULL,
        UNIQUE (author, seq)
    )""",
    2: """CREATE TABLE messages (
        rx INTEGER PRIMARY KEY,
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        id BLOB NOT NULL,
        idp INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        type TEXT,
        raw BLOB NOT NULL,
        UNIQUE (author, seq)
    )""",
}
OLD = pytest.mark.parametrize("version", [1, 2])


def feed_with_group(n: int) -> list[Message]:
    k = keypair("migrate")
    st = FeedState(FeedId(k.public))
    out: list[Message] = []
    root = create(k, st, group_content("room", []), 1000)
    out.append(root)
    st = root.state
    ref = MsgRef(root.author, root.seq, root.id)
    for i in range(n):
        body = (post_content(ref, [], f"in room {i}") if i % 3 == 0
                else content.post(f"post {i}"))
        m = create(k, st, body, 1001 + i)
        out.append(m)
        st = m.state
    return out


def other_feeds(n: int) -> list[Message]:
    """Two more feeds of ``n`` posts each (so feed keys are not all 1), in stored order."""
    out: list[Message] = []
    for name in ("other-1", "other-2"):
        k = keypair(name)
        st = FeedState(FeedId(k.public))
        for i in range(n):
            m = create(k, st, content.post(f"{name} {i}"), 2000 + i)
            out.append(m)
            st = m.state
    return out


async def store_interleaved(path: Path, msgs: list[Message], others: list[Message]) -> None:
    """The feeds appended in small interleaved batches (rx mixes the feeds)."""
    s = await SqliteStore.open(path)
    half = len(others) // 2
    for i in range(0, max(len(msgs), half), 7):
        await s.append(msgs[i : i + 7])
        await s.append(others[i : min(i + 7, half)])
        await s.append(others[half + i : half + i + 7])
    await s.close()


def downgrade(path: Path, version: int) -> None:
    """Schema ``version``'s messages table, with gaps in rx (as messages of a feed refused
    later leave) so that a migration renumbering the rows would show."""
    c = sqlite3.connect(path, isolation_level=None)
    rows = c.execute("SELECT rx, type, raw FROM messages ORDER BY rx").fetchall()
    c.execute("BEGIN")
    c.execute("DROP TABLE messages")
    c.execute("DROP TABLE feed_keys")
    c.execute(OLD_MESSAGES[version])
    for rx, typ, raw in rows:
        m = decode_message(raw)
        if version == 1:
            c.execute("INSERT INTO messages (rx, author, seq, id, timestamp, type, raw) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (3 * rx, m.author, m.seq, m.id, m.timestamp, typ, raw))
        else:
            c.execute("INSERT INTO messages (rx, author, seq, id, idp, timestamp, type, raw) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (3 * rx, m.author, m.seq, m.id, id_prefix(m.id), m.timestamp, typ, raw))
    if version == 2:
        c.execute("CREATE INDEX messages_by_idp ON messages (idp)")
    c.execute("UPDATE group_posts SET rx = 3 * rx")
    c.execute(f"PRAGMA user_version = {version}")
    c.execute("COMMIT")
    c.execute("VACUUM")  # no free pages left over from the rebuild
    c.close()


def inspect(path: Path) -> dict[str, Any]:
    c = sqlite3.connect(path)
    version = c.execute("PRAGMA user_version").fetchone()[0]
    rows = ("SELECT rx, author, seq, type, raw FROM messages" if version < 3 else
            "SELECT m.rx, k.author, m.seq, m.type, m.raw FROM messages m "
            "JOIN feed_keys k ON k.n = m.feed")
    out = {
        "version": version,
        "columns": [r[1] for r in c.execute("PRAGMA table_info(messages)")],
        "indexes": sorted(r[1] for r in c.execute("PRAGMA index_list(messages)")),
        "rows": c.execute(rows + " ORDER BY rx").fetchall(),
        "posts": c.execute("SELECT rx, id FROM group_posts ORDER BY rx").fetchall(),
        "integrity": c.execute("PRAGMA integrity_check").fetchone()[0],
    }
    c.close()
    return out


async def make_old(tmp_path: Path, n: int, version: int
                   ) -> tuple[Path, list[Message], list[Message], dict[str, Any]]:
    """A schema-``version`` store holding a feed of ``n + 1`` messages with a group and two
    other feeds, interleaved; those messages and what the store holds."""
    path = tmp_path / "db.sqlite3"
    msgs, others = feed_with_group(n), other_feeds(n // 2)
    await store_interleaved(path, msgs, others)
    downgrade(path, version)
    before = inspect(path)
    assert before["version"] == version and "feed" not in before["columns"]
    assert ("idp" in before["columns"]) == (version == 2)
    assert len(before["rows"]) == len(msgs) + len(others) and before["posts"]
    assert len({r[1] for r in before["rows"][:30]}) == 3  # the feeds really are mixed
    return path, msgs, others, before


@OLD
async def test_an_old_store_is_migrated_when_opened(tmp_path: Path, version: int) -> None:
    path, msgs, others, before = await make_old(tmp_path, 60, version)

    s = await SqliteStore.open(path)
    assert s.version == 3
    # compacted after the copy: the old table's pages are given back, not left free
    assert await s._scalar("PRAGMA freelist_count") == 0
    for m in msgs + others:  # found through the new indexes
        assert await s.get(m.id) == m.raw
        assert await s.get_seq(m.author, m.seq) == m.raw
    assert await s.range(msgs[0].author, 5, 9) == [m.raw for m in msgs[4:9]]
    half = len(others) // 2  # the second of the other feeds
    assert await s.range(others[-1].author, 5, 9) == [m.raw for m in others[half + 4 : half + 9]]
    assert await s.get(MsgId(bytes(32))) is None
    more = feed_with_group(90)[61:]  # the same feed, continued
    await s.append(more)
    assert await s.get(more[-1].id) == more[-1].raw
    assert await s.integrity_check() == []
    await s.close()

    after = inspect(path)
    assert after["version"] == 3 and after["integrity"] == "ok"
    assert after["columns"] == ["rx", "feed", "seq", "idp", "type", "raw"]
    assert after["rows"][: len(before["rows"])] == before["rows"]  # same rx, author, bytes
    assert before["rows"][1][0] == 6  # the gaps were there to keep
    assert after["posts"][: len(before["posts"])] == before["posts"]
    assert len(after["posts"]) > len(before["posts"])
    # the idp index and the (feed, seq) one, which lookups by id and reads of a feed use
    c = sqlite3.connect(path)
    cols = {name: [r[2] for r in c.execute(f"PRAGMA index_info('{name}')")]
            for name in after["indexes"]}
    idps = c.execute("SELECT idp, raw FROM messages").fetchall()
    plan = " ".join(str(r) for r in c.execute(
        "EXPLAIN QUERY PLAN SELECT raw FROM messages WHERE idp = ?", (1,)))
    # every group post, old or appended after the migration, has its message's rx
    mismatched = c.execute(
        "SELECT count(*) FROM group_posts g LEFT JOIN feed_keys k ON k.author = g.author "
        "LEFT JOIN messages m ON m.feed = k.n AND m.seq = g.seq "
        "WHERE m.rx IS NOT g.rx").fetchone()[0]
    c.close()
    assert sorted(cols.values()) == [["feed", "seq"], ["idp"]]
    assert all(idp == id_prefix(decode_message(raw).id) for idp, raw in idps)
    assert "messages_by_idp" in plan
    assert mismatched == 0
    # opening again changes nothing
    s = await SqliteStore.open(path)
    await s.close()
    assert inspect(path) == after


@OLD
async def test_a_migration_that_runs_out_of_space_leaves_the_old_schema_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    path, msgs, _, before = await make_old(tmp_path, 300, version)
    original = SqliteStore._migrate
    ran: list[str] = []

    async def on_a_full_disk(self: SqliteStore, version: int) -> None:
        pages = await self._scalar("PRAGMA page_count")
        # room for the new tables and part of the copy: it fails in the middle of the rows
        await self._db.execute(f"PRAGMA max_page_count = {pages + pages // 4}")
        await self._db.set_trace_callback(ran.append)
        await original(self, version)

    monkeypatch.setattr(SqliteStore, "_migrate", on_a_full_disk)
    with pytest.raises(StoreError) as e:
        await SqliteStore.open(path)
    assert e.value.code == "disk-full"
    copy = [i for i, sql in enumerate(ran) if sql.startswith("INSERT INTO messages_v3")]
    assert copy and ran[copy[0] + 1 :] == ["ROLLBACK"]  # the copy itself ran out of space
    assert inspect(path) == before

    monkeypatch.setattr(SqliteStore, "_migrate", original)
    s = await SqliteStore.open(path)
    assert s.version == 3 and await s.get(msgs[-1].id) == msgs[-1].raw
    await s.close()


@OLD
async def test_an_old_store_opened_read_only_is_read_as_it_is(tmp_path: Path,
                                                               version: int) -> None:
    path, msgs, others, before = await make_old(tmp_path, 10, version)
    s = await SqliteStore._open_immutable(path)
    assert s.version == version
    every = msgs + others
    assert [await s.get(m.id) for m in every] == [m.raw for m in every]
    assert await s.get(MsgId(bytes(32))) is None
    assert [await s.get_seq(m.author, m.seq) for m in every] == [m.raw for m in every]
    assert await s.range(msgs[0].author, 2, 4) == [m.raw for m in msgs[1:4]]
    assert await s.range(others[0].author, 2, 4) == [m.raw for m in others[1:4]]
    assert await s.count() == len(every)
    assert await s.integrity_check() == []
    await s.close()
    assert inspect(path) == before


async def test_a_wrong_idp_is_reported_by_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    msgs = feed_with_group(5)
    s = await SqliteStore.open(path)
    await s.append(msgs)
    assert await s.integrity_check() == []
    await s._db.execute("UPDATE messages SET idp = idp + 1 WHERE seq = 3")
    assert await s.get(msgs[2].id) is None  # what a wrong idp does: the message is not found
    assert await s.integrity_check() == ["1 messages with an idp that is not their id's"]
    await s.close()


async def test_a_wrong_feed_key_is_reported_by_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    msgs = feed_with_group(5)
    s = await SqliteStore.open(path)
    await s.append(msgs)
    await s._db.execute("UPDATE messages SET feed = feed + 1 WHERE seq = 3")
    assert await s.get_seq(msgs[2].author, 3) is None  # filed under a feed that is not its
    assert await s.get(msgs[2].id) == msgs[2].raw  # still found by its id
    assert await s.integrity_check() == ["1 messages with a feed key that is not their author's"]
    await s.close()


@OLD
async def test_two_processes_opening_an_old_store_at_once_both_get_it(tmp_path: Path,
                                                                      version: int) -> None:
    path, msgs, _, _ = await make_old(tmp_path, 30, version)
    # each open runs on its own connection thread: the second reads the old version, then
    # waits for the first one's migration to commit
    a, b = await asyncio.gather(SqliteStore.open(path), SqliteStore.open(path))
    for s in (a, b):
        assert s.version == 3 and await s.get(msgs[-1].id) == msgs[-1].raw
        await s.close()
    assert inspect(path)["version"] == 3


async def test_lookups_by_id_keep_the_row_whose_id_matches_its_prefix(tmp_path: Path) -> None:
    msgs = feed_with_group(5)
    s = await SqliteStore.open(tmp_path / "db.sqlite3")
    await s.append(msgs)
    # two messages sharing an id prefix, as 2^64 prefixes make rare but possible
    await s._db.execute("UPDATE messages SET idp = ? WHERE seq = 4", (id_prefix(msgs[1].id),))
    assert await s.get(msgs[1].id) == msgs[1].raw
    assert await s.get(msgs[3].id) is None  # filed under another prefix: the integrity check
    assert await s.integrity_check() == ["1 messages with an idp that is not their id's"]
    same_prefix = MsgId(msgs[1].id[:8] + bytes(24))
    assert await s.get(same_prefix) is None
    await s.close()


async def test_damaged_content_keeps_its_row_found_and_only_the_header_is_checked(
        tmp_path: Path) -> None:
    msgs = feed_with_group(5)
    s = await SqliteStore.open(tmp_path / "db.sqlite3")
    await s.append(msgs)
    bad = bytearray(msgs[2].raw)
    bad[-3] ^= 1  # in the content: the id and author are the header's, unchanged
    await s._db.execute("UPDATE messages SET raw = ? WHERE seq = 3", (bytes(bad),))
    assert await s.get(msgs[2].id) == bytes(bad)
    assert await s.integrity_check() == []  # `feedlog verify` finds the content mismatch
    await s._db.execute("UPDATE messages SET seq = 9 WHERE seq = 3")
    await s._db.execute("UPDATE messages SET raw = 'not bytes' WHERE seq = 4")
    assert await s.integrity_check() == [
        "1 messages with an idp that is not their id's",
        "1 messages with a feed key that is not their author's",
        "2 messages with a seq that is not their header's"]
    await s.close()

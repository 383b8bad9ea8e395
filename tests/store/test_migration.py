"""Schema 1 -> 2 of the SQLite store (store/sqlite.py ``_migrate_from_1``).

A schema-1 store is made by taking a schema-2 store and rebuilding its messages table the way
schema 1 defined it (``UNIQUE (id)``, no ``idp``): the other tables did not change between the
two. Opening it for writing must migrate it in place, keeping every message, its rx (arrival
order, which group read markers point into) and the indexes that read by id; an interrupted
migration must leave schema 1 intact; a schema-1 store opened read-only is read as it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from feedlog.core import content
from feedlog.core.errors import StoreError
from feedlog.core.group_content import group_content, post_content
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import FeedState, Message, create
from feedlog.core.view import MsgRef
from feedlog.store import SqliteStore
from feedlog.store.sqlite import id_prefix
from tests.conftest import keypair

SCHEMA_1_MESSAGES = """CREATE TABLE messages (
        rx INTEGER PRIMARY KEY,
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        id BLOB NOT NULL UNIQUE,
        timestamp INTEGER NOT NULL,
        type TEXT,
        raw BLOB NOT NULL,
        UNIQUE (author, seq)
    )"""


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


def downgrade_to_1(path: Path) -> None:
    """Schema 1's messages table, with gaps in rx (as messages of a feed refused later leave)
    so that a migration renumbering the rows would show."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("BEGIN")
    c.execute(SCHEMA_1_MESSAGES.replace("TABLE messages", "TABLE messages_v1"))
    c.execute("INSERT INTO messages_v1 (rx, author, seq, id, timestamp, type, raw) "
              "SELECT 3 * rx, author, seq, id, timestamp, type, raw FROM messages")
    c.execute("UPDATE group_posts SET rx = 3 * rx")
    c.execute("DROP TABLE messages")
    c.execute("ALTER TABLE messages_v1 RENAME TO messages")
    c.execute("PRAGMA user_version = 1")
    c.execute("COMMIT")
    c.execute("VACUUM")  # no free pages left over from the rebuild
    c.close()


def inspect(path: Path) -> dict[str, Any]:
    c = sqlite3.connect(path)
    out = {
        "version": c.execute("PRAGMA user_version").fetchone()[0],
        "columns": [r[1] for r in c.execute("PRAGMA table_info(messages)")],
        "indexes": sorted(r[1] for r in c.execute("PRAGMA index_list(messages)")),
        "rows": c.execute("SELECT rx, author, seq, id, timestamp, type, raw FROM messages "
                          "ORDER BY rx").fetchall(),
        "posts": c.execute("SELECT rx, id FROM group_posts ORDER BY rx").fetchall(),
        "integrity": c.execute("PRAGMA integrity_check").fetchone()[0],
    }
    c.close()
    return out


async def make_v1(tmp_path: Path, n: int) -> tuple[Path, list[Message], dict[str, Any]]:
    """A schema-1 store holding a feed of ``n + 1`` messages with a group; what it holds."""
    path = tmp_path / "db.sqlite3"
    msgs = feed_with_group(n)
    s = await SqliteStore.open(path)
    await s.append(msgs)
    await s.close()
    downgrade_to_1(path)
    before = inspect(path)
    assert before["version"] == 1 and "idp" not in before["columns"]
    assert len(before["rows"]) == len(msgs) and before["posts"]
    return path, msgs, before


async def test_a_schema_1_store_is_migrated_when_opened(tmp_path: Path) -> None:
    path, msgs, before = await make_v1(tmp_path, 60)

    s = await SqliteStore.open(path)
    assert s.version == 2
    # compacted after the copy: the old table's pages are given back, not left free
    assert await s._scalar("PRAGMA freelist_count") == 0
    for m in msgs:  # found through the new index
        assert await s.get(m.id) == m.raw
    assert await s.get(MsgId(bytes(32))) is None
    more = feed_with_group(90)[61:]  # the same feed, continued
    await s.append(more)
    assert await s.get(more[-1].id) == more[-1].raw
    assert await s.integrity_check() == []
    await s.close()

    after = inspect(path)
    assert after["version"] == 2 and after["integrity"] == "ok"
    assert after["rows"][: len(msgs)] == before["rows"]  # same rx, same bytes
    assert before["rows"][1][0] == 6  # the gaps were there to keep
    assert after["posts"][: len(before["posts"])] == before["posts"]
    assert len(after["posts"]) > len(before["posts"])
    # no unique index on id any more, one on idp instead, which lookups by id use
    c = sqlite3.connect(path)
    cols = {name: [r[2] for r in c.execute(f"PRAGMA index_info('{name}')")]
            for name in after["indexes"]}
    idps = dict(c.execute("SELECT id, idp FROM messages"))
    plan = " ".join(str(r) for r in c.execute(
        "EXPLAIN QUERY PLAN SELECT raw FROM messages WHERE idp = ? AND id = ?", (1, b"")))
    # every group post, old or appended after the migration, has its message's rx
    mismatched = c.execute("SELECT count(*) FROM group_posts g LEFT JOIN messages m "
                           "ON m.id = g.id WHERE m.rx IS NOT g.rx").fetchone()[0]
    c.close()
    assert ["id"] not in cols.values() and ["idp"] in cols.values()
    assert all(idp == id_prefix(i) for i, idp in idps.items())
    assert "messages_by_idp" in plan
    assert mismatched == 0
    # opening again changes nothing
    s = await SqliteStore.open(path)
    await s.close()
    assert inspect(path) == after


async def test_a_migration_that_runs_out_of_space_leaves_schema_1_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, msgs, before = await make_v1(tmp_path, 300)
    original = SqliteStore._migrate_from_1

    async def on_a_full_disk(self: SqliteStore) -> None:
        pages = await self._scalar("PRAGMA page_count")
        await self._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        await original(self)

    monkeypatch.setattr(SqliteStore, "_migrate_from_1", on_a_full_disk)
    with pytest.raises(StoreError) as e:
        await SqliteStore.open(path)
    assert e.value.code == "disk-full"
    assert inspect(path) == before

    monkeypatch.setattr(SqliteStore, "_migrate_from_1", original)
    s = await SqliteStore.open(path)
    assert s.version == 2 and await s.get(msgs[-1].id) == msgs[-1].raw
    await s.close()


async def test_a_schema_1_store_opened_read_only_is_read_as_it_is(tmp_path: Path) -> None:
    path, msgs, before = await make_v1(tmp_path, 10)
    s = await SqliteStore._open_immutable(path)
    assert s.version == 1
    assert [await s.get(m.id) for m in msgs] == [m.raw for m in msgs]
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

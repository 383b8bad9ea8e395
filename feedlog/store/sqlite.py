"""SQLite Store (store/base.py contract). The only module with SQL in it.

One file per node, WAL journal, ``synchronous=FULL`` (a published message that a peer has seen
must survive a power cut, or its author would fork themselves; with batches of 1000 the fsync
costs nothing measurable). The schema is versioned with ``PRAGMA user_version`` and marked as
ours with ``PRAGMA application_id``, so a foreign or newer database is refused instead of being
written to. Batches are one transaction of a few ``executemany`` calls, never one await per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import aiosqlite

from feedlog.core.errors import StoreError
from feedlog.core.fork import ForkProof
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import Message
from feedlog.core.validate import decode_message, stored_fields
from feedlog.core.view import GroupMessage, GroupRoot
from feedlog.store.base import (
    IN_CONTACT,
    BaselineTable,
    ContactRow,
    FeedInfo,
    NoteTable,
    PeerRecord,
    derived_rows,
    plan_append,
)
from feedlog.store.groups import (
    GROUP_INDEX_VERSION,
    DisplayRow,
    GroupSummary,
    PlacedRow,
    RefReader,
    group_rows,
    is_member,
    pack_members,
    pack_ref,
    pack_refs,
    unpack_members,
    unpack_ref,
    unpack_refs,
)

log = logging.getLogger("feedlog.store")

APPLICATION_ID = 0x46444C47  # "FDLG"
SCHEMA_VERSION = 3  # 3: messages filed under a local integer per feed, without id or timestamp
PAGE_SIZE = 16384  # for new stores; an existing store keeps its own
CACHE_BYTES = 32 * 1024 * 1024  # page cache of a connection by default (SQLite's is 2 MiB)

# Schema 3. A message is looked up by ``idp`` (id_prefix): the id is a hash, so any index of
# it takes random keys and each commit rewrites most of the index pages it touched; an 8-byte
# integer key makes that index about a third of the size of one on the 32-byte id (schema 1's
# ``UNIQUE (id)``). The id itself, the author and the timestamp are all in ``raw`` (a lookup by
# id checks the id of the rows its prefix finds), so the row holds only what is searched on:
# the feed as a small local integer (``feed_keys``) instead of its 32-byte key, and the seq.
# Schema 2 kept author, id and timestamp beside raw: about 70 bytes more per message, and a
# quarter more CPU per row appended. ``UNIQUE (feed, seq)`` also keeps two stored messages
# from sharing an id (it hashes the header, which holds the author and seq).
_MESSAGES_TABLE = """CREATE TABLE {name} (
        rx INTEGER PRIMARY KEY,
        feed INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        idp INTEGER NOT NULL,
        type TEXT,
        raw BLOB NOT NULL,
        UNIQUE (feed, seq)
    )"""
_FEED_KEYS_TABLE = """CREATE TABLE feed_keys (
        n INTEGER PRIMARY KEY,
        author BLOB NOT NULL UNIQUE
    )"""
_MESSAGES_INDEX = "CREATE INDEX messages_by_idp ON messages (idp)"

_SCHEMA = [
    _MESSAGES_TABLE.format(name="messages"),
    _MESSAGES_INDEX,
    _FEED_KEYS_TABLE,
    """CREATE TABLE feeds (
        author BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        head BLOB,
        forked_seq INTEGER
    ) WITHOUT ROWID""",
    """CREATE TABLE forks (
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        proof BLOB NOT NULL,
        PRIMARY KEY (author, seq, proof)
    ) WITHOUT ROWID""",
    """CREATE TABLE contacts (
        author BLOB NOT NULL,
        target BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (author, target)
    ) WITHOUT ROWID""",
    """CREATE TABLE names (
        author BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
]

# Tables of feature modules (peers, indexes, ...): idempotent statements run at every open,
# inside a schema version, so a store made before a feature landed gains its tables.
_FEATURE_TABLES: list[str] = [
    # replication baselines (spec/replication.md §7); dir 0 = sent, 1 = received
    """CREATE TABLE IF NOT EXISTS peer_notes (
        peer BLOB NOT NULL,
        dir INTEGER NOT NULL,
        feed BLOB NOT NULL,
        note INTEGER NOT NULL,
        forked INTEGER,
        PRIMARY KEY (peer, dir, feed)
    ) WITHOUT ROWID""",
    # the head prefix of a baseline entry (spec/replication.md §5.2, §7): a row of peer_notes
    # without one here has no head (seq 0, or a baseline saved before heads existed)
    """CREATE TABLE IF NOT EXISTS peer_heads (
        peer BLOB NOT NULL,
        dir INTEGER NOT NULL,
        feed BLOB NOT NULL,
        head BLOB NOT NULL,
        PRIMARY KEY (peer, dir, feed)
    ) WITHOUT ROWID""",
    # peer book (feedlog/peers.py)
    """CREATE TABLE IF NOT EXISTS peers (
        feed BLOB PRIMARY KEY,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        source TEXT NOT NULL,
        last_seen INTEGER,
        last_synced INTEGER,
        state TEXT NOT NULL
    ) WITHOUT ROWID""",
    # groups (store/groups.py): rx is the message's own rx, so arrival order and read markers
    # survive a re-index; grp, refs and reply are packed msgrefs.
    """CREATE TABLE IF NOT EXISTS group_roots (
        id BLOB PRIMARY KEY,
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        title TEXT NOT NULL,
        members BLOB
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS group_posts (
        rx INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE,
        group_id BLOB NOT NULL,
        grp BLOB NOT NULL,
        author BLOB NOT NULL,
        seq INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        refs BLOB NOT NULL,
        reply BLOB,
        text TEXT NOT NULL,
        pos INTEGER,
        flags BLOB
    )""",
    "CREATE INDEX IF NOT EXISTS group_posts_by_group ON group_posts (group_id, rx)",
    "CREATE INDEX IF NOT EXISTS group_posts_by_pos ON group_posts (group_id, pos)",
    """CREATE TABLE IF NOT EXISTS group_orders (
        group_id BLOB PRIMARY KEY,
        state BLOB NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS group_reads (
        group_id BLOB PRIMARY KEY,
        rx INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # posts not yet in their group's stored order: what settling after a sync has to place
    "CREATE INDEX IF NOT EXISTS group_posts_unplaced ON group_posts (group_id) WHERE pos IS NULL",
]
_DIRS = {"sent": 0, "recv": 1}


def id_prefix(msg_id: bytes) -> int:
    """The ``idp`` column of a message: its id's first 8 bytes as a signed big-endian integer
    (SQLite's integers are signed 64-bit)."""
    return int.from_bytes(msg_id[:8], "big", signed=True)


# Older stores are migrated when opened for writing; one opened read-only (a read-only mount,
# see _open_immutable) keeps its schema and is read with that schema's statements.
def _by_id(version: int, msg_id: bytes) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters for the raw of message ``msg_id``: in schema 3, of every
    message with its id's prefix (``get`` keeps the one whose id it is)."""
    if version == 1:
        return "SELECT raw FROM messages WHERE id = ?", (msg_id,)
    if version == 2:
        return "SELECT raw FROM messages WHERE idp = ? AND id = ?", (id_prefix(msg_id), msg_id)
    return "SELECT raw FROM messages WHERE idp = ?", (id_prefix(msg_id),)


def _of_feed(version: int) -> str:
    """The condition selecting one feed's messages, its author the statement's first
    parameter."""
    return "author = ?" if version < 3 else "feed = (SELECT n FROM feed_keys WHERE author = ?)"


def _fields(raw: object) -> tuple[MsgId, FeedId, int] | None:
    """What a stored row's bytes say it is (from the header alone: a message whose content was
    damaged keeps its id); None for bytes that do not begin as a message."""
    return stored_fields(raw) if isinstance(raw, bytes) else None


def _id_of(raw: object) -> MsgId | None:
    f = _fields(raw)
    return None if f is None else f[0]


def _author_of(raw: object) -> FeedId | None:
    f = _fields(raw)
    return None if f is None else f[1]


def _seq_of(raw: object) -> int | None:
    f = _fields(raw)
    return None if f is None else f[2]


def _id_prefix_or_null(msg_id: bytes | None) -> int | None:
    return None if msg_id is None else id_prefix(msg_id)


def _closed(path: Path) -> StoreError:
    """The one error for any use of a closed store (spec/feed.md §10)."""
    return StoreError(f"{path} is closed", code="store-closed")


def _store_error(exc: BaseException, path: Path) -> StoreError:
    text = str(exc)
    name = str(getattr(exc, "sqlite_errorname", ""))
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        return StoreError(f"{path} is not a feedlog database (corrupt or foreign)",
                          code="store-corrupt")
    # A full disk shows as SQLITE_FULL while writing, but as an I/O error (the lock file next
    # to the store cannot grow) when the store is opened on a disk that is already full.
    if name == "SQLITE_FULL" or "database or disk is full" in text or (
            name.startswith("SQLITE_IOERR") and _free_bytes(path) < _NEARLY_FULL):
        return StoreError(f"disk full while using {path}; nothing was changed (free some "
                          "space and run the command again)", code="disk-full")
    if "readonly" in text or "read-only" in text or (
            name.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR")) and _read_only(path.parent)):
        return StoreError(f"{path.parent} is read-only; feedlog needs to write there, even to "
                          "read (SQLite keeps its lock files next to the store)",
                          code="store-read-only")
    if "closed database" in text:  # closed while a statement was on its way
        return _closed(path)
    if "malformed" in text or "corrupt" in text:
        return StoreError(f"{path} is corrupt: {text}", code="store-corrupt")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path} is locked by another process", code="store-busy")
    return StoreError(f"{path}: {text}", code="store-error")


_NEARLY_FULL = 1 << 20


class _Closed:
    """Stands in for the connection of a closed store: any use is a StoreError with a code,
    not aiosqlite's ValueError (e.g. a link that ends after its node was closed)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise _closed(self._path)


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return _NEARLY_FULL
    return st.f_bavail * st.f_frsize


def _readable_as_immutable(path: Path) -> bool:
    """On a read-only mount, with no WAL holding commits not yet merged into the store."""
    try:
        mounted_ro = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
        wal = Path(str(path) + "-wal")
        return mounted_ro and path.exists() and (not wal.exists() or wal.stat().st_size == 0)
    except (OSError, AttributeError):
        return False


def _read_only(directory: Path) -> bool:
    """The folder is on a read-only mount, or we may not write to it."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except (OSError, AttributeError):
        pass
    return not os.access(directory, os.W_OK)


_COMMIT = object()  # append_parts: the last part was given
_ABORT = object()  # append_parts: a part failed; roll back


class _Batch:
    """One append transaction on the connection's thread, fed one or more runs of messages.

    ``add`` checks each run against the heads stored or added before it (store/base.py
    ``plan_append``) and writes its rows; ``commit`` writes the new heads and commits. Any
    failure leaves the batch to ``rollback``: nothing of it is stored.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.heads: dict[FeedId, FeedInfo | None] = {}  # stored or planned head of each feed
        self.planned: dict[FeedId, FeedInfo] = {}  # the heads this batch moves
        self.keys: dict[FeedId, int] = {}  # feed_keys.n of each feed seen
        conn.execute("BEGIN IMMEDIATE")

    def _lookup(self, authors: Sequence[FeedId]) -> None:
        conn = self.conn
        for i in range(0, len(authors), 500):
            chunk = authors[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for a in chunk:
                self.heads[a] = None
            for a, s, h, fk in conn.execute(
                    f"SELECT author, seq, head, forked_seq FROM feeds "
                    f"WHERE author IN ({marks})", chunk):
                self.heads[FeedId(a)] = FeedInfo(FeedId(a), s, h, fk)
            self.keys.update(conn.execute(
                f"SELECT author, n FROM feed_keys WHERE author IN ({marks})", chunk))
        for a in authors:  # a feed's first messages: its key (rolled back with the batch)
            if a not in self.keys:
                cur = conn.execute("INSERT INTO feed_keys (author) VALUES (?)", (a,))
                self.keys[a] = cast(int, cur.lastrowid)

    def add(self, msgs: Sequence[Message]) -> None:
        if not msgs:
            return
        heads = self.heads
        new = sorted({m.author for m in msgs if m.author not in heads})
        if new:
            self._lookup(new)
        moved = plan_append(heads.__getitem__, msgs)
        conn = self.conn
        key = self.keys.__getitem__
        conn.executemany(
            "INSERT INTO messages (feed, seq, idp, type, raw) VALUES (?, ?, ?, ?, ?)",
            [(key(m.author), m.seq, id_prefix(m.id), m.type, m.raw) for m in msgs])
        contacts, names = derived_rows(msgs)
        if contacts:
            conn.executemany(
                "INSERT INTO contacts (author, target, seq, kind) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (author, target) DO UPDATE SET seq = excluded.seq, "
                "kind = excluded.kind WHERE excluded.seq > contacts.seq",
                [(c.author, c.target, c.seq, c.kind) for c in contacts])
        if names:
            conn.executemany(
                "INSERT INTO names (author, seq, name) VALUES (?, ?, ?) "
                "ON CONFLICT (author) DO UPDATE SET seq = excluded.seq, "
                "name = excluded.name WHERE excluded.seq > names.seq", names)
        _index_groups_sync(conn, msgs)
        heads.update(moved)
        self.planned.update(moved)

    def commit(self) -> None:
        if self.planned:
            self.conn.executemany(
                "INSERT INTO feeds (author, seq, head) VALUES (?, ?, ?) "
                "ON CONFLICT (author) DO UPDATE SET seq = excluded.seq, head = excluded.head",
                [(h.author, h.seq, h.head) for h in self.planned.values()])
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        # SQLite rolls back by itself on some errors (a full disk among them).
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


class SqliteStore:
    def __init__(self, conn: aiosqlite.Connection, path: Path,
                 cache_bytes: int = CACHE_BYTES) -> None:
        self._db = conn
        self.path = path
        self.cache_bytes = cache_bytes
        # one connection is shared by every task of the node (peers, publish, import):
        # write transactions take turns
        self._write_lock = asyncio.Lock()
        self.version = SCHEMA_VERSION  # of the open store's schema (1 only when read-only)

    @classmethod
    async def open(cls, path: Path, *, create: bool = True,
                   cache_bytes: int = CACHE_BYTES) -> SqliteStore:
        """Open (and, when ``create``, initialise) the store at ``path``, with a page cache of
        at most ``cache_bytes`` (``Limits.store_cache_size``)."""
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(f"no store at {path}", code="no-store")
        try:
            conn = await aiosqlite.connect(str(path), isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise _store_error(exc, path) from None
        store = cls(conn, path, cache_bytes)
        try:
            await store._setup()
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                error = _store_error(exc, path)
                if error.code == "store-read-only" and _readable_as_immutable(path):
                    return await cls._open_immutable(path)
                raise error from None
            raise
        return store

    @classmethod
    async def _open_immutable(cls, path: Path) -> SqliteStore:
        """Open a store on a read-only mount for reading only.

        SQLite cannot open a WAL database where it may not create its lock files, unless told
        the file is immutable; that is safe only because nobody can write to a read-only mount
        and no WAL with unmerged commits is left (``_readable_as_immutable``). Every write then
        fails with ``store-read-only``.
        """
        uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
        try:
            conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            store = cls(conn, path)
            await store._add_functions()
            app = await store._scalar("PRAGMA application_id")
            version = await store._scalar("PRAGMA user_version")
        except sqlite3.Error as exc:
            raise _store_error(exc, path) from None
        if app != APPLICATION_ID or version > SCHEMA_VERSION:
            await conn.close()
            raise StoreError(f"{path} is not a feedlog store this version can read",
                             code="foreign-store")
        store.version = version
        return store

    async def _add_functions(self) -> None:
        """SQL functions of this connection: ``feedlog_id_prefix(id)`` is ``id_prefix`` (the
        migration from schema 1 fills ``idp`` with it); ``feedlog_id_of(raw)``,
        ``feedlog_author_of(raw)`` and ``feedlog_seq_of(raw)`` read a stored message's header
        (``integrity_check`` checks each row against them; NULL for bytes that are not a
        message)."""
        db = self._db
        await db.create_function("feedlog_id_prefix", 1, _id_prefix_or_null, deterministic=True)
        await db.create_function("feedlog_id_of", 1, _id_of, deterministic=True)
        await db.create_function("feedlog_author_of", 1, _author_of, deterministic=True)
        await db.create_function("feedlog_seq_of", 1, _seq_of, deterministic=True)

    async def _setup(self) -> None:
        db = self._db
        await self._add_functions()
        await db.execute("PRAGMA busy_timeout = 5000")
        app = await self._scalar("PRAGMA application_id")
        version = await self._scalar("PRAGMA user_version")
        tables = await self._scalar("SELECT count(*) FROM sqlite_master")
        if app == 0 and version == 0 and tables == 0:
            # 16 KiB pages: the id-prefix index takes random keys, and every commit rewrites
            # each index page it touched; fewer, larger pages cost less CPU per message than
            # 8 KiB ones (about 0.4 us of 8 per row appended here) or SQLite's 4 KiB.
            await db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                await db.execute(stmt)
            await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            await db.execute("COMMIT")
        elif app != APPLICATION_ID:
            raise StoreError(f"{self.path} is a SQLite database of another program",
                             code="foreign-store")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}; this feedlog knows up to {SCHEMA_VERSION}: "
                "upgrade feedlog", code="store-too-new")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        # the id index takes random keys: a large cache keeps more of it in memory. This is
        # also what bounds the store's memory (the cache fills up and then stays that size).
        await db.execute(f"PRAGMA cache_size = -{max(1, self.cache_bytes // 1024)}")
        await db.execute("PRAGMA foreign_keys = ON")
        if version in (1, 2):
            await self._migrate(version)
        if _FEATURE_TABLES:
            await db.execute("BEGIN IMMEDIATE")
            for stmt in _FEATURE_TABLES:
                await db.execute(stmt)
            await db.execute("COMMIT")
        if await self._scalar("SELECT value FROM meta WHERE key = 'group-index'") is None:
            await self.reindex_groups()  # a store made before groups were indexed

    async def _migrate(self, version: int) -> None:
        """Schema 1 or 2 -> 3 in one transaction: each feed gets its key in ``feed_keys`` and
        the messages table is rebuilt as schema 3 defines it (SQLite cannot drop a column
        that a constraint names), rows and their rx kept (group read markers point into rx).
        Interrupted or out of disk space, it rolls back: the store is left as it was, and is
        migrated at the next open. The copy needs about as much free space as the messages
        take, and so does compacting the file afterwards (VACUUM; when that fails, the freed
        pages are reused by later appends). An older feedlog refuses the migrated store
        (``store-too-new``)."""
        log.info("migrating %s from store schema %d to %d", self.path, version, SCHEMA_VERSION)
        idp = "feedlog_id_prefix(m.id)" if version == 1 else "m.idp"  # schema 1 had no idp
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated it since our caller read the version
            if await self._scalar("PRAGMA user_version") != version:
                await db.execute("ROLLBACK")
                return
            await db.execute(_FEED_KEYS_TABLE)
            await db.execute("INSERT INTO feed_keys (author) SELECT author FROM messages "
                             "GROUP BY author ORDER BY min(rx)")
            await db.execute(_MESSAGES_TABLE.format(name="messages_v3"))
            await db.execute(
                "INSERT INTO messages_v3 (rx, feed, seq, idp, type, raw) "
                f"SELECT m.rx, k.n, m.seq, {idp}, m.type, m.raw "
                "FROM messages m JOIN feed_keys k ON k.author = m.author ORDER BY m.rx")
            await db.execute("DROP TABLE messages")
            await db.execute("ALTER TABLE messages_v3 RENAME TO messages")
            await db.execute(_MESSAGES_INDEX)
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        # The old table's pages are free now, which leaves the file about twice the size of
        # its data; give them back (best effort: it needs as much free space once more).
        try:
            await db.execute("VACUUM")
        except sqlite3.Error as exc:
            log.warning("%s: migrated, but could not compact it (%s)", self.path, exc)

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            async with self._db.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None
        except ValueError as exc:
            raise self._closed_under_us(exc) from None

    def _closed_under_us(self, exc: ValueError) -> BaseException:
        """aiosqlite's ValueError for a statement that met the connection closed (a close
        while it was on its way) is ``store-closed``; any other ValueError stays itself."""
        if str(exc) in ("Connection closed", "no active connection"):
            return _closed(self.path)
        return exc

    async def close(self) -> None:
        """Close the connection (again: nothing). Statements already started finish; any
        use after raises StoreError ``store-closed``."""
        db = self._db
        if isinstance(db, _Closed):
            return
        self._db = cast(aiosqlite.Connection, _Closed(self.path))
        await db.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; any SQLite failure becomes a StoreError with a code.

        SQLite rolls back by itself on some errors (a full disk among them), so ROLLBACK is
        issued only while a transaction is still open, and never hides the original error.
        """
        db = self._db
        async with self._write_lock, self._transaction_unlocked(db) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction_unlocked(self, db: aiosqlite.Connection
                                    ) -> AsyncIterator[aiosqlite.Connection]:
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None
        except ValueError as exc:
            raise self._closed_under_us(exc) from None

    async def set_max_pages(self, pages: int) -> None:
        """Cap the database size (tests of a full disk)."""
        await self._db.execute(f"PRAGMA max_page_count = {int(pages)}")

    async def set_max_bytes(self, size: int) -> None:
        """Cap the database at about ``size`` bytes (``Limits.max_store_bytes``)."""
        page = int(await self._scalar("PRAGMA page_size"))
        await self.set_max_pages(max(1, size // page))

    async def changes(self) -> int:
        # SQLite: changes when another connection commits, not when this one does
        rows = await self._rows("PRAGMA data_version")
        return int(rows[0][0])

    async def feed(self, author: FeedId) -> FeedInfo | None:
        rows = await self._rows(
            "SELECT f.seq, f.head, f.forked_seq, n.name FROM feeds f "
            "LEFT JOIN names n ON n.author = f.author WHERE f.author = ?", (author,))
        if not rows:
            return None
        seq, head, forked, name = rows[0]
        return FeedInfo(author, seq, None if head is None else MsgId(head), forked, name)

    async def feeds(self) -> list[FeedInfo]:
        rows = await self._rows(
            "SELECT f.author, f.seq, f.head, f.forked_seq, n.name FROM feeds f "
            "LEFT JOIN names n ON n.author = f.author ORDER BY f.author")
        return [FeedInfo(FeedId(a), s, None if h is None else MsgId(h), fk, n)
                for a, s, h, fk, n in rows]

    async def append(self, msgs: Sequence[Message]) -> None:
        if not msgs:
            return
        # The whole transaction is one job on the connection's thread: one round trip through
        # the event loop instead of one per statement, so a busy loop (decoding the next batch)
        # does not hold the commit back, and the commit overlaps with the loop's work. Other
        # writers' transactions span several awaits, so the write lock is still taken.
        try:
            async with self._write_lock:
                await self._in_thread(self._append_sync, msgs)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on the connection's own thread.

        aiosqlite has no public call for this; ``_execute`` is how its own methods do it (and
        has been since 0.17). The store contract tests exercise this path on every run.
        """
        db = self._db
        run = cast(Callable[[Callable[[], Any]], Awaitable[Any]], db._execute)
        return await run(lambda: fn(db._conn, *args))

    @staticmethod
    def _append_sync(conn: sqlite3.Connection, msgs: Sequence[Message]) -> None:
        batch = _Batch(conn)
        try:
            batch.add(msgs)
            batch.commit()
        except BaseException:
            batch.rollback()
            raise

    async def append_parts(self, parts: Iterable[Awaitable[Sequence[Message]]]
                           ) -> list[Message]:
        """``append`` of the messages the awaitables resolve to, in order, as one batch.

        The transaction is one job on the connection's thread that takes the parts from a
        queue as they come, each written as soon as it and every part before it are ready, so
        writing overlaps with computing the later parts (publish_many: signing them); it
        commits after the last. Being one job, no other statement of this connection runs
        inside it, so nobody reads a message before it is committed; the parts must therefore
        not wait for this store themselves. If a part fails, or this task is cancelled, the
        transaction is rolled back and nothing is stored.
        """
        feed: queue.SimpleQueue[Sequence[Message] | object] = queue.SimpleQueue()
        out: list[Message] = []
        try:
            async with self._write_lock:
                job = asyncio.ensure_future(self._in_thread(self._append_fed, feed))
                try:
                    for part in parts:
                        msgs = await part
                        out.extend(msgs)
                        feed.put(msgs)
                        if job.done():  # it failed: the rest would not be read
                            break
                    feed.put(_COMMIT)
                except BaseException:
                    feed.put(_ABORT)
                    # the rollback has run before the lock is let go (unless cancelled again)
                    with contextlib.suppress(Exception):
                        await job
                    raise
                await job
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None
        return out

    @staticmethod
    def _append_fed(conn: sqlite3.Connection,
                    feed: queue.SimpleQueue[Sequence[Message] | object]) -> None:
        batch = _Batch(conn)
        try:
            while True:
                item = feed.get()
                if item is _COMMIT:
                    batch.commit()
                    return
                if item is _ABORT:
                    batch.rollback()
                    return
                batch.add(cast(Sequence[Message], item))
        except BaseException:
            batch.rollback()
            raise

    async def get(self, msg_id: MsgId) -> bytes | None:
        sql, args = _by_id(self.version, msg_id)
        for (raw,) in await self._rows(sql, args):
            if self.version < 3 or _id_of(raw) == msg_id:
                return bytes(raw)
        return None

    async def get_seq(self, author: FeedId, seq: int) -> bytes | None:
        rows = await self._rows(
            f"SELECT raw FROM messages WHERE {_of_feed(self.version)} AND seq = ?", (author, seq))
        return bytes(rows[0][0]) if rows else None

    async def range(self, author: FeedId, first: int, last: int) -> list[bytes]:
        rows = await self._rows(
            f"SELECT raw FROM messages WHERE {_of_feed(self.version)} AND seq BETWEEN ? AND ? "
            "ORDER BY seq", (author, first, last))
        return [bytes(r[0]) for r in rows]

    async def count(self) -> int:
        rows = await self._rows("SELECT count(*) FROM messages")
        return int(rows[0][0])

    async def record_fork(self, proof: ForkProof) -> bool:
        async with self._transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO forks (author, seq, proof) VALUES (?, ?, ?)",
                (proof.author, proof.seq, proof.encode()))
            added = cur.rowcount > 0
            await db.execute(
                "INSERT INTO feeds (author, seq, head, forked_seq) VALUES (?, 0, NULL, ?) "
                "ON CONFLICT (author) DO UPDATE SET forked_seq = "
                "min(coalesce(forked_seq, excluded.forked_seq), excluded.forked_seq)",
                (proof.author, proof.seq))
        return added

    async def fork_proofs(self, author: FeedId | None = None) -> list[bytes]:
        if author is None:
            rows = await self._rows("SELECT proof FROM forks ORDER BY author, seq, proof")
        else:
            rows = await self._rows(
                "SELECT proof FROM forks WHERE author = ? ORDER BY seq, proof", (author,))
        return [bytes(r[0]) for r in rows]

    async def contacts(self) -> list[ContactRow]:
        rows = await self._rows(
            "SELECT author, target, seq, kind FROM contacts ORDER BY author, target")
        return [ContactRow(FeedId(a), FeedId(t), s, k) for a, t, s, k in rows]

    async def get_meta(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str | None) -> None:
        try:
            if value is None:
                await self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                await self._db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None

    async def peer_seen(self, feed: FeedId, host: str, port: int, source: str,
                        when: int) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO peers (feed, host, port, source, last_seen, state) "
                "VALUES (?, ?, ?, ?, ?, 'discovered') ON CONFLICT (feed) DO UPDATE SET "
                "host = excluded.host, port = excluded.port, source = excluded.source, "
                "last_seen = excluded.last_seen", (feed, host, port, source, when))

    async def peer_state(self, feed: FeedId, state: str, when: int, *, synced: bool) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO peers (feed, host, port, source, last_seen, last_synced, state) "
                "VALUES (?, '', 0, 'inbound', ?, ?, ?) ON CONFLICT (feed) DO UPDATE SET "
                "state = excluded.state, "
                "last_seen = coalesce(excluded.last_seen, peers.last_seen), "
                "last_synced = coalesce(excluded.last_synced, peers.last_synced)",
                (feed, when if state in IN_CONTACT else None, when if synced else None, state))

    async def peers(self) -> list[PeerRecord]:
        rows = await self._rows(
            "SELECT feed, host, port, source, last_seen, last_synced, state FROM peers "
            "ORDER BY feed")
        return [PeerRecord(FeedId(bytes(f)), h, p, src, ls, sy, st)
                for f, h, p, src, ls, sy, st in rows]
    # --- group index (store/groups.py) --------------------------------------------------------

    async def group_root(self, group_id: bytes) -> GroupRoot | None:
        rows = await self._rows(
            "SELECT author, seq, timestamp, title, members FROM group_roots WHERE id = ?",
            (group_id,))
        if not rows:
            return None
        a, s, ts, title, members = rows[0]
        return GroupRoot(group_id, a, s, ts, title, unpack_members(members))

    async def group_posts(self, group_id: bytes, after: int = 0) -> list[tuple[int, GroupMessage]]:
        rows = await self._rows(
            "SELECT rx, id, grp, author, seq, timestamp, refs, reply, text FROM group_posts "
            "WHERE group_id = ? AND rx > ? ORDER BY rx", (group_id, after))
        refs_of = RefReader()  # one MsgRef per distinct ref: most are named several times
        return [(rx, GroupMessage(i, a, s, ts, refs_of.one(g), refs_of.many(refs),
                                  None if reply is None else refs_of.one(reply), text))
                for rx, i, g, a, s, ts, refs, reply, text in rows]

    async def group_post(self, msg_id: bytes) -> GroupMessage | None:
        rows = await self._rows(
            "SELECT grp, author, seq, timestamp, refs, reply, text FROM group_posts "
            "WHERE id = ?", (msg_id,))
        if not rows:
            return None
        g, a, s, ts, refs, reply, text = rows[0]
        return GroupMessage(msg_id, a, s, ts, unpack_ref(g), unpack_refs(refs),
                            None if reply is None else unpack_ref(reply), text)

    async def group_summaries(self, me: FeedId) -> list[GroupSummary]:
        roots = {
            bytes(i): GroupRoot(i, a, s, ts, title, unpack_members(members))
            for i, a, s, ts, title, members in await self._rows(
                "SELECT id, author, seq, timestamp, title, members FROM group_roots")
        }
        reads = {bytes(g): rx for g, rx in await self._rows("SELECT group_id, rx FROM group_reads")}
        stats = {
            bytes(g): rest for g, *rest in await self._rows(
                "SELECT p.group_id, count(*), max(p.timestamp), max(p.rx), "
                "total(p.rx > coalesce(r.rx, 0) AND p.author != ?), max(p.author = ?) "
                "FROM group_posts p LEFT JOIN group_reads r ON r.group_id = p.group_id "
                "GROUP BY p.group_id", (me, me))
        }
        out = []
        for gid in sorted(set(roots) | set(stats)):
            root = roots.get(gid)
            n, last_ts, last_rx, unread, posted = stats.get(gid, (0, None, 0, 0, 0))
            stamps = [t for t in (last_ts, root.timestamp if root else None) if t is not None]
            out.append(GroupSummary(gid, root, n, max(stamps) if stamps else None, last_rx,
                                    reads.get(gid, 0), int(unread), bool(posted),
                                    is_member(me, root)))
        return out

    async def set_group_read(self, group_id: bytes, rx: int) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO group_reads (group_id, rx) VALUES (?, ?) ON CONFLICT (group_id) "
                "DO UPDATE SET rx = excluded.rx WHERE excluded.rx > group_reads.rx",
                (group_id, rx))

    async def group_order_state(self, group_id: bytes) -> bytes | None:
        rows = await self._rows("SELECT state FROM group_orders WHERE group_id = ?", (group_id,))
        return bytes(rows[0][0]) if rows else None

    async def group_tail(self, group_id: bytes, limit: int) -> list[PlacedRow]:
        rows = await self._rows(
            "SELECT pos, id, timestamp FROM group_posts WHERE group_id = ? AND pos IS NOT NULL "
            "ORDER BY pos DESC LIMIT ?", (group_id, limit))
        return [PlacedRow(p, bytes(i), t) for p, i, t in reversed(rows)]

    async def group_placed(self, group_id: bytes, ids: Sequence[bytes]) -> set[bytes]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = await self._rows(
            f"SELECT id FROM group_posts WHERE group_id = ? AND pos IS NOT NULL "
            f"AND id IN ({marks})", (group_id, *ids))
        return {bytes(r[0]) for r in rows}

    async def save_group_order(self, group_id: bytes, state: bytes,
                               places: Sequence[tuple[bytes, int, bytes | None]],
                               *, expect: bytes | None, reset: bool = False) -> bool:
        """Store a group's order if its state is still ``expect`` (None: no state yet);
        False, writing nothing, when another writer got there first."""
        async with self._transaction() as db:
            async with db.execute("SELECT state FROM group_orders WHERE group_id = ?",
                                  (group_id,)) as cur:
                row = await cur.fetchone()
            if (None if row is None else bytes(row[0])) != expect:
                return False
            if reset:
                await db.execute("UPDATE group_posts SET pos = NULL, flags = NULL "
                                 "WHERE group_id = ?", (group_id,))
            await db.executemany("UPDATE group_posts SET pos = ?, flags = ? WHERE id = ?",
                                 [(pos, flags, i) for i, pos, flags in places])
            await db.execute(
                "INSERT INTO group_orders (group_id, state) VALUES (?, ?) "
                "ON CONFLICT (group_id) DO UPDATE SET state = excluded.state", (group_id, state))
        return True

    async def unplaced_groups(self) -> list[bytes]:
        # the partial index holds only unplaced posts (the planner would scan a whole index)
        rows = await self._rows("SELECT DISTINCT group_id FROM group_posts "
                                "INDEXED BY group_posts_unplaced WHERE pos IS NULL")
        return sorted(bytes(r[0]) for r in rows)

    async def group_display(self, group_id: bytes) -> list[DisplayRow]:
        rows = await self._rows(
            "SELECT rx, id, author, seq, timestamp, text, reply, flags FROM group_posts "
            "WHERE group_id = ? AND pos IS NOT NULL ORDER BY pos", (group_id,))
        return [DisplayRow(*r) for r in rows]

    async def reindex_groups(self) -> int:
        """Rebuild the group index from the stored messages (read markers are kept)."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM group_roots")
            await db.execute("DELETE FROM group_posts")
            await db.execute("DELETE FROM group_orders")
            async with db.execute(
                "SELECT raw FROM messages WHERE type IN ('group', 'post') ORDER BY rx"
            ) as cur:
                while batch := await cur.fetchmany(1000):
                    await self._in_thread(_index_groups_sync,
                                          [decode_message(bytes(r[0])) for r in batch])
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('group-index', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (GROUP_INDEX_VERSION,))
            async with db.execute(
                "SELECT (SELECT count(*) FROM group_roots) + (SELECT count(*) FROM group_posts)"
            ) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def integrity_check(self) -> list[str]:
        rows = await self._rows("PRAGMA integrity_check")
        problems = [str(r[0]) for r in rows if r[0] != "ok"]
        # A wrong idp hides its message from lookups by id, a wrong feed key or seq from reads
        # of its feed. In schema 3 they are checked against the header in the stored bytes
        # (``feedlog verify`` checks the rest of each message).
        checks = {
            2: {"an idp that is not their id's":
                "SELECT count(*) FROM messages WHERE idp != feedlog_id_prefix(id)"},
            3: {"an idp that is not their id's":
                "SELECT count(*) FROM messages WHERE idp IS NOT "
                "feedlog_id_prefix(feedlog_id_of(raw))",
                "a feed key that is not their author's":
                "SELECT count(*) FROM messages m LEFT JOIN feed_keys k ON k.n = m.feed "
                "WHERE k.author IS NOT feedlog_author_of(m.raw)",
                "a seq that is not their header's":
                "SELECT count(*) FROM messages WHERE seq IS NOT feedlog_seq_of(raw)"},
        }
        for what, sql in checks.get(self.version, {}).items():
            n = (await self._rows(sql))[0][0]
            if n:
                problems.append(f"{n} messages with {what}")
        return problems

    async def peer_notes(self, peer: FeedId, direction: str) -> NoteTable:
        rows = await self._rows(
            "SELECT feed, note, forked FROM peer_notes WHERE peer = ? AND dir = ?",
            (peer, _DIRS[direction]))
        return {FeedId(bytes(f)): (n, k) for f, n, k in rows}

    async def update_peer_notes(self, peer: FeedId, direction: str,
                                upserts: NoteTable,
                                removes: Sequence[FeedId]) -> None:
        await self.update_peer_baseline(
            peer, direction, {f: (n, k, None) for f, (n, k) in upserts.items()}, removes)

    async def peer_baseline(self, peer: FeedId, direction: str) -> BaselineTable:
        rows = await self._rows(
            "SELECT n.feed, n.note, n.forked, h.head FROM peer_notes n LEFT JOIN peer_heads h "
            "ON h.peer = n.peer AND h.dir = n.dir AND h.feed = n.feed "
            "WHERE n.peer = ? AND n.dir = ?", (peer, _DIRS[direction]))
        return {FeedId(bytes(f)): (n, k, None if h is None else bytes(h)) for f, n, k, h in rows}

    async def update_peer_baseline(self, peer: FeedId, direction: str,
                                   upserts: BaselineTable,
                                   removes: Sequence[FeedId]) -> None:
        if not upserts and not removes:
            return
        d = _DIRS[direction]
        gone = [(peer, d, f) for f in removes]
        gone += [(peer, d, f) for f, (_, _, h) in upserts.items() if h is None]
        async with self._transaction() as db:
            if removes:
                await db.executemany(
                    "DELETE FROM peer_notes WHERE peer = ? AND dir = ? AND feed = ?",
                    [(peer, d, f) for f in removes])
            if gone:
                await db.executemany(
                    "DELETE FROM peer_heads WHERE peer = ? AND dir = ? AND feed = ?", gone)
            if upserts:
                await db.executemany(
                    "INSERT INTO peer_notes (peer, dir, feed, note, forked) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (peer, dir, feed) DO UPDATE SET note = excluded.note, "
                    "forked = excluded.forked",
                    [(peer, d, f, n, k) for f, (n, k, _) in upserts.items()])
                heads = [(peer, d, f, h) for f, (_, _, h) in upserts.items() if h is not None]
                if heads:
                    await db.executemany(
                        "INSERT INTO peer_heads (peer, dir, feed, head) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (peer, dir, feed) DO UPDATE SET head = excluded.head",
                        heads)


def _index_groups_sync(conn: sqlite3.Connection, msgs: Sequence[Message]) -> None:
    """Group index rows of ``msgs`` (store/groups.py), inside the append's transaction."""
    roots, posts = group_rows(msgs)
    if roots:
        conn.executemany(
            "INSERT OR IGNORE INTO group_roots (id, author, seq, timestamp, title, members) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(r.id, r.author, r.seq, r.timestamp, r.title, pack_members(r.members))
             for r in roots])
    if posts:
        conn.executemany(
            "INSERT OR IGNORE INTO group_posts (rx, id, group_id, grp, author, seq, "
            "timestamp, refs, reply, text) "
            "VALUES ((SELECT rx FROM messages WHERE seq = ? AND "
            "feed = (SELECT n FROM feed_keys WHERE author = ?)), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(p.seq, p.author, p.id, p.group.id, pack_ref(p.group), p.author, p.seq,
              p.timestamp, pack_refs(p.refs), None if p.reply is None else pack_ref(p.reply),
              p.text)
             for p in posts])

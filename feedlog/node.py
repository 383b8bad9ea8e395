"""The facade the CLI and library users call (README "Library").

A Node is one identity (key pair), one store and the policies around them: what it publishes,
which feeds it replicates, and how received messages are validated (ingest.py). All methods are
coroutines; a Node is used from one event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedlog import groups as _groups
from feedlog.config import Limits, load_limits
from feedlog.core import content as contents
from feedlog.core.crypto import Keypair
from feedlog.core.errors import InvalidMessage, LocalError, StoreError
from feedlog.core.fork import ForkProof, decode_fork_proof
from feedlog.core.graph import Contact, Replication, replication_set
from feedlog.core.ids import FeedId, MsgId, feed_id_text, msg_id_text
from feedlog.core.message import SIGN_TAG, Chain, FeedState, Message
from feedlog.core.validate import Link, check_signature, decode_message, link
from feedlog.core.view import GroupView
from feedlog.identity import DB_FILE, KEY_FILE, read_key, write_key
from feedlog.ingest import Ingestor
from feedlog.store.base import FeedInfo, Store
from feedlog.store.groups import GroupSummary
from feedlog.store.memory import MemoryStore
from feedlog.store.sqlite import SqliteStore
from feedlog.verify_pool import VerifyPool

FENCE_KEY = "fenced"  # store meta: set (to when) while the node is fenced


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class VerifyReport:
    feeds: int = 0
    messages: int = 0
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # (feed, seq, code)
    forks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class Node:
    SIGN_CHUNK = 128  # messages per signing job of publish_many

    def __init__(self, keys: Keypair, store: Store, home: Path | None = None,
                 *, workers: int | None = None, limits: Limits | None = None) -> None:
        self.keys = keys
        self.store = store
        self.home = home
        self.limits = limits or Limits()
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="feedlog-verify")
        # big batches (sync, import) are checked on worker processes, started on first use
        self._pool = VerifyPool(min(self.workers, os.cpu_count() or 1), self._executor)
        self._publish_lock = asyncio.Lock()
        self._own: FeedState | None = None
        self.hops = 2
        # every message stored (published or received from any source) is announced here, in
        # commit order: the replicator pushes them to live peers
        self.listeners: list[Callable[[Sequence[Message]], None]] = []
        # committed heads shared by every ingest session, so concurrent sources agree
        self._heads: dict[FeedId, FeedInfo | None] = {}
        self.group_book = _groups.GroupBook(store)
        self._unfenced = False  # known not fenced (cached: a node is never fenced again)

    # --- opening -------------------------------------------------------------------------

    @classmethod
    async def init(cls, home: Path, *, keys: Keypair | None = None,
                   fenced: bool | None = None) -> Node:
        """Create a new identity (or bring in ``keys``) and an empty store in ``home``.

        A key brought in may already have a feed elsewhere, so the node starts *fenced*
        (spec/forks.md): it refuses to publish until it has fetched its own feed's head from a
        peer or a stick, or ``unfence`` is called. ``fenced`` overrides that default."""
        home = Path(home)
        if (home / KEY_FILE).exists():
            raise LocalError(f"{home} already has an identity", code="key-exists")
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise LocalError(f"cannot create {home}: {exc.strerror}",
                             code="home-unwritable") from None
        limits = load_limits(home)
        if fenced is None:
            fenced = keys is not None  # a key brought in may have a feed elsewhere
        if keys is None:
            keys = Keypair.from_seed(os.urandom(32))
        store = await cls._open_store(home, limits)
        if fenced:
            await store.set_meta(FENCE_KEY, str(now_ms()))
        # the key is written last: a home without a key is not an identity yet
        try:
            write_key(home / KEY_FILE, keys)
        except BaseException:
            await store.close()
            raise
        return cls(keys, store, home, limits=limits)

    @classmethod
    async def open(cls, home: Path) -> Node:
        """Open an existing home (identity and store)."""
        home = Path(home)
        if not home.is_dir():
            raise LocalError(f"no feedlog home at {home}: run `feedlog init` first",
                             code="no-home")
        keys = read_key(home / KEY_FILE)
        limits = load_limits(home)
        store = await cls._open_store(home, limits)
        return cls(keys, store, home, limits=limits)

    @staticmethod
    async def _open_store(home: Path, limits: Limits) -> SqliteStore:
        store = await SqliteStore.open(home / DB_FILE, create=True,
                                       cache_bytes=limits.store_cache_size)
        if limits.max_store_bytes:
            try:
                await store.set_max_bytes(limits.max_store_bytes)
            except BaseException:
                await store.close()
                raise
        return store

    @classmethod
    def in_memory(cls, keys: Keypair | None = None) -> Node:
        return cls(keys or Keypair.from_seed(os.urandom(32)), MemoryStore())

    async def close(self) -> None:
        await self.store.close()
        self._pool.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def id(self) -> FeedId:
        return FeedId(self.keys.public)

    @property
    def id_text(self) -> str:
        return feed_id_text(self.keys.public)

    # --- publishing ----------------------------------------------------------------------

    async def _own_state(self) -> FeedState:
        if self._own is None:
            info = await self.store.feed(self.id)
            if info is not None and info.forked_seq is not None:
                raise LocalError("your own feed is forked; publishing would make it worse",
                                 code="feed-forked")
            self._own = info.state if info else FeedState(self.id)
        return self._own

    async def publish(self, content: Mapping[str, Any] | str,
                      *, timestamp: int | None = None) -> Message:
        """Sign and store the next message of this node's feed. A str publishes a post."""
        return (await self.publish_many([content], timestamp=timestamp))[0]

    async def publish_many(self, items: Iterable[Mapping[str, Any] | str],
                           *, timestamp: int | None = None) -> list[Message]:
        """Sign several messages and store them in one atomic batch."""
        async with self._publish_lock:
            await self._check_fence()
            state = await self._own_state()
            ts = now_ms() if timestamp is None else timestamp
            chain = Chain(self.keys.public, state, ts)
            # Chained here in order, signed on the pool a chunk at a time as soon as the chunk
            # is chained, so the workers sign while this loop chains the next chunk.
            loop = asyncio.get_running_loop()
            jobs: list[asyncio.Future[list[Message]]] = []
            step = self.SIGN_CHUNK
            try:
                for item in items:
                    chain.add(item)
                    n = len(chain)
                    if n % step == 0:
                        jobs.append(loop.run_in_executor(self._executor, _sign_range,
                                                         self.keys, chain, n - step, n))
            except BaseException:  # e.g. a bad content: nothing is published
                for job in jobs:
                    job.cancel()
                raise
            n = len(chain)
            try:
                if not jobs:
                    msgs = _sign_range(self.keys, chain, 0, n)
                    await self.store.append(msgs)
                else:
                    if n % step:
                        jobs.append(loop.run_in_executor(self._executor, _sign_range,
                                                         self.keys, chain, n - n % step, n))
                    if isinstance(self.store, SqliteStore):
                        # each chunk is written as soon as it is signed, in one transaction
                        # committed after the last: storing overlaps with signing
                        msgs = await self.store.append_parts(jobs)
                    else:
                        msgs = [m for part in await asyncio.gather(*jobs) for m in part]
                        await self.store.append(msgs)
            except BaseException:
                for job in jobs:
                    job.cancel()
                self._own = None
                self._heads.pop(self.id, None)
                raise
            self._own = chain.state
            self._heads.pop(self.id, None)
            self._announce(msgs)
            return msgs

    # --- the restore fence (spec/forks.md) -------------------------------------------------

    async def fenced(self) -> bool:
        """True while this node must not publish: its key was brought in and its own feed's
        latest head has not been fetched from a peer or a stick yet."""
        if self._unfenced:
            return False
        fenced = await self.store.get_meta(FENCE_KEY) is not None
        self._unfenced = not fenced  # nothing fences a node again once it is clear
        return fenced

    async def _check_fence(self) -> None:
        if await self.fenced():
            raise LocalError(
                "this key was restored and its feed's latest messages have not been fetched "
                "yet; publishing now could fork your feed. Run `feedlog sync` with a peer or "
                "`feedlog import` a stick that has your feed, or, if this key never published "
                "anywhere else, `feedlog unfence --confirm`", code="fenced")

    async def unfence(self) -> bool:
        """Lift the fence (the user confirms no newer copy of the feed exists). True if the
        node was fenced."""
        was = await self.fenced()
        if was:
            await self.store.set_meta(FENCE_KEY, None)
            self._own = None
            self._unfenced = True
        return was

    async def own_head_confirmed(self) -> bool:
        """Called by a sync or an import that fetched this node's own feed up to the head a
        peer or stick holds: the fence lifts. True if the node was fenced."""
        return await self.unfence()

    async def follow(self, feed: FeedId) -> Message:
        return await self._contact("follow", feed)

    async def unfollow(self, feed: FeedId) -> Message:
        return await self._contact("unfollow", feed)

    async def block(self, feed: FeedId) -> Message:
        return await self._contact("block", feed)

    async def unblock(self, feed: FeedId) -> Message:
        return await self._contact("unblock", feed)

    async def _contact(self, kind: str, feed: FeedId) -> Message:
        if feed == self.id and kind in ("follow", "block"):
            raise LocalError(f"you cannot {kind} yourself", code="self-contact")
        return await self.publish(contents.contact(kind, feed))

    async def set_name(self, name: str) -> Message:
        return await self.publish(contents.about(name))

    # --- reading -------------------------------------------------------------------------

    async def feed(self, author: FeedId | None = None, *, limit: int | None = None,
                   since: int = 0) -> list[Message]:
        """Messages of ``author`` (default: this node) in seq order: the last ``limit`` of them,
        or all after seq ``since``."""
        a = author or self.id
        info = await self.store.feed(a)
        if info is None or info.seq == 0:
            return []
        first = since + 1
        if limit is not None:
            first = max(first, info.seq - limit + 1)
        return [decode_message(r) for r in await self.store.range(a, first, info.seq)]

    async def contacts(self) -> list[Contact]:
        return [Contact(c.author, c.target, c.kind) for c in await self.store.contacts()]

    async def following(self) -> list[FeedId]:
        return sorted(c.target for c in await self.contacts()
                      if c.author == self.id and c.kind == "follow")

    async def blocked(self) -> list[FeedId]:
        return sorted(c.target for c in await self.contacts()
                      if c.author == self.id and c.kind == "block")

    async def replication(self) -> Replication:
        return replication_set(self.id, await self.contacts(), self.hops)

    async def feed_info(self, author: FeedId) -> FeedInfo | None:
        return await self.store.feed(author)

    async def name_of(self, author: FeedId) -> str | None:
        info = await self.store.feed(author)
        return info.name if info else None

    async def status(self) -> dict[str, Any]:
        feeds = await self.store.feeds()
        own = next((f for f in feeds if f.author == self.id), None)
        rep = await self.replication()
        return {
            "id": self.id_text,
            "name": own.name if own else None,
            "home": str(self.home) if self.home else None,
            "seq": own.seq if own else 0,
            "feeds": len(feeds),
            "messages": await self.store.count(),
            "following": len(await self.following()),
            "replicating": len(rep.wanted),
            "blocked": len(rep.blocked),
            "fenced": await self.fenced(),
            "forked": [await self.fork_info(f.author) for f in feeds if f.forked_seq is not None],
        }

    async def fork_info(self, author: FeedId) -> dict[str, Any] | None:
        """How ``author``'s feed is forked, from the stored proof(s): None if it is not.
        ``seq`` is where the chains differ, ``ids`` the two message ids of the first proof,
        ``kind`` its kind, ``frozen_at`` the last seq kept, ``proofs`` how many are held."""
        info = await self.store.feed(author)
        if info is None or info.forked_seq is None:
            return None
        raws = await self.store.fork_proofs(author)
        proofs = sorted((decode_fork_proof(r) for r in raws), key=lambda p: p.seq)
        first = proofs[0] if proofs else None
        return {
            "feed": feed_id_text(author),
            "seq": info.forked_seq,
            "kind": first.kind if first else None,
            "ids": [msg_id_text(first.first.id), msg_id_text(first.second.id)] if first else [],
            "seqs": [first.first.seq, first.second.seq] if first else [],
            "frozen_at": info.seq,
            "proofs": len(proofs),
        }

    # --- groups (feedlog/groups.py, spec/view.md) ------------------------------------------

    async def create_group(self, title: str, members: Iterable[FeedId] | None = None) -> Message:
        """Publish a group root; its message id is the group id. ``members`` (optional) are
        listed with this node first."""
        return await _groups.create_group(self, title, members)

    async def post_to_group(self, group_id: MsgId, text: str,
                            *, timestamp: int | None = None) -> Message:
        """Post in a group; its causal refs are the tips this node holds."""
        return await _groups.post(self, group_id, text, timestamp=timestamp)

    async def reply(self, msg_id: MsgId, text: str, *, timestamp: int | None = None) -> Message:
        """Answer a group post (or a group root) in its group."""
        return await _groups.reply(self, msg_id, text, timestamp=timestamp)

    async def groups(self, *, everything: bool = False) -> list[GroupSummary]:
        """Your groups (all known ones with ``everything``), most recently active first."""
        return await _groups.groups(self, everything=everything)

    async def group_view(self, group_id: MsgId) -> GroupView:
        """The group's posts in display order with flags, tips and what is missing."""
        return await self.group_book.view(group_id)

    async def settle_groups(self) -> list[bytes]:
        """Bring the stored order of every group with new posts up to date (after a sync or
        an import: incremental view maintenance on ingest); returns those groups."""
        return await _groups.settle(self.store)

    async def mark_group_read(self, group_id: MsgId) -> None:
        await _groups.mark_read(self, group_id)

    # --- receiving -----------------------------------------------------------------------

    def ingestor(self, *, only_wanted: Iterable[FeedId] | None = None,
                 allowed: Callable[[FeedId], bool] | None = None,
                 dropped: Callable[[FeedId], bool] | None = None,
                 on_append: Callable[[Sequence[Message]], None] | None = None,
                 on_commit: Callable[[], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None,
                 store: Store | None = None) -> Ingestor:
        """An ingest session (one per source). ``only_wanted`` (a set) or ``allowed`` (a
        predicate) restricts accepted feeds (``dropped``: those refused without blame, Ingestor);
        ``on_append`` sees each committed batch first;
        ``on_commit`` is told when each batch is settled, ``on_failure`` when storing failed
        (Ingestor).
        ``store`` replaces this node's store (e.g. a dry-run overlay): then nothing is
        announced to listeners and the shared head cache is not used."""
        if only_wanted is not None:
            wanted = frozenset(only_wanted)
            allowed = wanted.__contains__
        if store is not None:
            return Ingestor(store, executor=self._executor, allowed=allowed, dropped=dropped,
                            on_append=on_append, on_commit=on_commit,
                            on_failure=on_failure, pool=self._pool)

        def appended(msgs: Sequence[Message]) -> None:
            if on_append is not None:
                on_append(msgs)
            self._on_append(msgs)

        return Ingestor(self.store, executor=self._executor, allowed=allowed, dropped=dropped,
                        on_append=appended, on_commit=on_commit, on_failure=on_failure,
                        cache=self._heads,
                        pool=self._pool)

    def forget_heads(self, feeds: Iterable[FeedId]) -> None:
        """Drop cached heads (and our own feed state) after another process wrote to the store."""
        for f in feeds:
            self._heads.pop(f, None)
            if f == self.id:
                self._own = None

    def refresh_heads(self, stored: Iterable[FeedInfo]) -> None:
        """Raise cached heads that are behind ``stored`` (the store's heads): another process
        may have appended since they were cached, e.g. `feedlog sync` or `post` in the home a
        `feedlog serve` runs in. Only raised: a cached head ahead of the store is a batch being
        committed right now."""
        for info in stored:
            if info.author not in self._heads:
                continue
            cached = self._heads[info.author]
            if cached is None or cached.seq < info.seq:
                self._heads[info.author] = info
                if info.author == self.id:
                    self._own = None

    async def record_fork(self, proof: ForkProof) -> bool:
        """Keep a fork proof (already verified: ForkProof values come from make_fork_proof or
        decode_fork_proof) and mark its feed forked; False if it was known."""
        added = await self.store.record_fork(proof)
        self._heads.pop(proof.author, None)
        if proof.author == self.id:
            self._own = None
        return added

    def _on_append(self, msgs: Sequence[Message]) -> None:
        if any(m.author == self.id for m in msgs):
            self._own = None  # somebody brought our own feed back (e.g. after a restore)
        self._announce(msgs)

    def _announce(self, msgs: Sequence[Message]) -> None:
        for listener in list(self.listeners):
            listener(msgs)

    # --- checking ------------------------------------------------------------------------

    async def verify(self) -> VerifyReport:
        """Re-check every stored message, chain and fork proof from the stored bytes."""
        report = VerifyReport()
        loop = asyncio.get_running_loop()
        if isinstance(self.store, SqliteStore):
            for problem in await self.store.integrity_check():
                report.problems.append(("-", 0, f"store-corrupt: {problem}"))
        for info in await self.store.feeds():
            report.feeds += 1
            state = FeedState(info.author)
            name = feed_id_text(info.author)
            for start in range(1, info.seq + 1, 1000):
                raws = await self.store.range(info.author, start, min(info.seq, start + 999))
                msgs: list[Message] = []
                for raw in raws:
                    try:
                        m = decode_message(raw)
                        if link(state, m) is not Link.APPEND:
                            raise InvalidMessage("chain broken", code="broken-chain")
                    except InvalidMessage as exc:
                        report.problems.append((name, state.seq + 1, exc.code))
                        break
                    msgs.append(m)
                    state = m.state
                results = await asyncio.gather(*[
                    loop.run_in_executor(self._executor, _check_sigs, msgs[i : i + 256])
                    for i in range(0, len(msgs), 256)
                ])
                for bad in results:
                    report.problems.extend((name, seq, "bad-signature") for seq in bad)
                report.messages += len(msgs)
                if len(msgs) < len(raws):
                    break
            if state.seq != info.seq or state.head != info.head:
                report.problems.append((name, info.seq, "head-mismatch"))
        for raw in await self.store.fork_proofs():
            report.forks += 1
            try:
                decode_fork_proof(raw)
            except InvalidMessage as exc:
                report.problems.append(("-", 0, f"bad-fork-proof: {exc.code}"))
        return report


def _sign_range(keys: Keypair, chain: Chain, start: int, stop: int) -> list[Message]:
    return chain.messages(start, stop, keys.sign_many(SIGN_TAG, chain.headers[start:stop]))


def _check_sigs(msgs: Sequence[Message]) -> list[int]:
    bad = []
    for m in msgs:
        try:
            check_signature(m)
        except InvalidMessage:
            bad.append(m.seq)
    return bad


__all__ = ["Node", "StoreError", "VerifyReport"]

"""In-memory Store: the twin of SqliteStore for tests and the simulator (store/base.py)."""

from __future__ import annotations

from collections.abc import Sequence

from feedlog.core.fork import ForkProof
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import Message
from feedlog.store.base import (
    ContactRow,
    FeedInfo,
    NoteTable,
    PeerRecord,
    derived_rows,
    plan_append,
)


class MemoryStore:
    def __init__(self) -> None:
        self._feeds: dict[FeedId, FeedInfo] = {}
        self._raw: dict[FeedId, list[bytes]] = {}
        self._by_id: dict[MsgId, tuple[FeedId, int]] = {}
        self._forks: dict[tuple[FeedId, int, bytes], ForkProof] = {}
        self._contacts: dict[tuple[FeedId, FeedId], ContactRow] = {}
        self._names: dict[FeedId, tuple[int, str]] = {}
        self._meta: dict[str, str] = {}
        self._notes: dict[tuple[FeedId, str], NoteTable] = {}
        self._peers: dict[FeedId, PeerRecord] = {}

    async def close(self) -> None:
        return None

    async def feed(self, author: FeedId) -> FeedInfo | None:
        info = self._feeds.get(author)
        if info is None:
            return None
        name = self._names.get(author)
        return FeedInfo(info.author, info.seq, info.head, info.forked_seq,
                        name[1] if name else None)

    async def feeds(self) -> list[FeedInfo]:
        out = []
        for a in sorted(self._feeds):
            info = await self.feed(a)
            if info is not None:
                out.append(info)
        return out

    async def append(self, msgs: Sequence[Message]) -> None:
        # Check everything first so the batch is all-or-nothing.
        heads = plan_append(self._feeds.get, msgs)
        for m in msgs:
            self._raw.setdefault(m.author, []).append(m.raw)
            self._by_id[m.id] = (m.author, m.seq)
        self._feeds.update(heads)
        contacts, names = derived_rows(msgs)
        for c in contacts:
            key = (c.author, c.target)
            if key not in self._contacts or self._contacts[key].seq < c.seq:
                self._contacts[key] = c
        for author, seq, name in names:
            if author not in self._names or self._names[author][0] < seq:
                self._names[author] = (seq, name)

    async def get(self, msg_id: MsgId) -> bytes | None:
        where = self._by_id.get(msg_id)
        return None if where is None else self._raw[where[0]][where[1] - 1]

    async def get_seq(self, author: FeedId, seq: int) -> bytes | None:
        raws = self._raw.get(author, [])
        return raws[seq - 1] if 1 <= seq <= len(raws) else None

    async def range(self, author: FeedId, first: int, last: int) -> list[bytes]:
        raws = self._raw.get(author, [])
        return raws[max(first, 1) - 1 : max(last, 0)]

    async def count(self) -> int:
        return sum(len(r) for r in self._raw.values())

    async def record_fork(self, proof: ForkProof) -> bool:
        key = (proof.author, proof.seq, proof.encode())
        if key in self._forks:
            return False
        self._forks[key] = proof
        old = self._feeds.get(proof.author)
        forked = proof.seq if old is None or old.forked_seq is None else min(old.forked_seq,
                                                                              proof.seq)
        self._feeds[proof.author] = FeedInfo(
            proof.author, old.seq if old else 0, old.head if old else None, forked
        )
        return True

    async def fork_proofs(self, author: FeedId | None = None) -> list[bytes]:
        return [p.encode() for k, p in sorted(self._forks.items(), key=lambda kv: kv[0])
                if author is None or k[0] == author]

    async def contacts(self) -> list[ContactRow]:
        return [self._contacts[k] for k in sorted(self._contacts)]

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._meta.pop(key, None)
        else:
            self._meta[key] = value

    async def peer_notes(self, peer: FeedId, direction: str) -> NoteTable:
        return dict(self._notes.get((peer, direction), {}))

    async def update_peer_notes(self, peer: FeedId, direction: str,
                                upserts: NoteTable,
                                removes: Sequence[FeedId]) -> None:
        table = self._notes.setdefault((peer, direction), {})
        for f in removes:
            table.pop(f, None)
        table.update(upserts)
    async def peer_seen(self, feed: FeedId, host: str, port: int, source: str,
                        when: int) -> None:
        old = self._peers.get(feed)
        self._peers[feed] = PeerRecord(
            feed, host, port, source, when, old.last_synced if old else None,
            old.state if old else "discovered")

    async def peer_state(self, feed: FeedId, state: str, when: int, *, synced: bool) -> None:
        old = self._peers.get(feed) or PeerRecord(feed, "", 0, "inbound", None, None, state)
        self._peers[feed] = PeerRecord(
            feed, old.host, old.port, old.source, old.last_seen,
            when if synced else old.last_synced, state)

    async def peers(self) -> list[PeerRecord]:
        return [self._peers[f] for f in sorted(self._peers)]

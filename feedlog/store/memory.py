"""In-memory Store: the twin of SqliteStore for tests and the simulator (store/base.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence

from feedlog.core.fork import ForkProof
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import Message
from feedlog.core.validate import decode_message
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
    DisplayRow,
    GroupSummary,
    PlacedRow,
    group_rows,
    is_member,
    pack_ref,
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
        self._heads: dict[tuple[FeedId, str], dict[FeedId, bytes]] = {}
        self._peers: dict[FeedId, PeerRecord] = {}
        self._arrival: list[tuple[FeedId, int]] = []  # every message, in the order appended
        self._rx_of: dict[MsgId, int] = {}  # 1 + its place in _arrival, as SQLite's rx
        self._clear_groups()

    def _clear_groups(self) -> None:
        self._group_roots: dict[bytes, GroupRoot] = {}
        self._group_posts: dict[bytes, list[tuple[int, GroupMessage]]] = {}
        self._group_post_ids: dict[bytes, GroupMessage] = {}
        self._group_reads: dict[bytes, int] = {}
        self._group_places: dict[bytes, tuple[int, bytes | None]] = {}  # post id -> pos, flags
        self._group_orders: dict[bytes, bytes] = {}

    async def close(self) -> None:
        return None

    async def changes(self) -> int:
        return 0  # nobody else can write to it

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
            self._arrival.append((m.author, m.seq))
            self._rx_of[m.id] = len(self._arrival)
        self._feeds.update(heads)
        self._index_groups(msgs)
        contacts, names = derived_rows(msgs)
        for c in contacts:
            key = (c.author, c.target)
            if key not in self._contacts or self._contacts[key].seq < c.seq:
                self._contacts[key] = c
        for author, seq, name in names:
            if author not in self._names or self._names[author][0] < seq:
                self._names[author] = (seq, name)

    async def append_parts(self, parts: Iterable[Awaitable[Sequence[Message]]]
                           ) -> list[Message]:
        msgs = [m for part in parts for m in await part]
        await self.append(msgs)
        return msgs

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
        await self.update_peer_baseline(
            peer, direction, {f: (n, k, None) for f, (n, k) in upserts.items()}, removes)

    async def peer_baseline(self, peer: FeedId, direction: str) -> BaselineTable:
        heads = self._heads.get((peer, direction), {})
        return {f: (n, k, heads.get(f))
                for f, (n, k) in self._notes.get((peer, direction), {}).items()}

    async def update_peer_baseline(self, peer: FeedId, direction: str,
                                   upserts: BaselineTable,
                                   removes: Sequence[FeedId]) -> None:
        table = self._notes.setdefault((peer, direction), {})
        heads = self._heads.setdefault((peer, direction), {})
        for f in removes:
            table.pop(f, None)
            heads.pop(f, None)
        for f, (n, k, h) in upserts.items():
            table[f] = (n, k)
            if h is None:
                heads.pop(f, None)
            else:
                heads[f] = h
    async def peer_seen(self, feed: FeedId, host: str, port: int, source: str,
                        when: int) -> None:
        old = self._peers.get(feed)
        self._peers[feed] = PeerRecord(
            feed, host, port, source, when, old.last_synced if old else None,
            old.state if old else "discovered")

    async def peer_state(self, feed: FeedId, state: str, when: int, *, synced: bool) -> None:
        old = self._peers.get(feed) or PeerRecord(feed, "", 0, "inbound", None, None, state)
        self._peers[feed] = PeerRecord(
            feed, old.host, old.port, old.source,
            when if state in IN_CONTACT else old.last_seen,
            when if synced else old.last_synced, state)

    async def peers(self) -> list[PeerRecord]:
        return [self._peers[f] for f in sorted(self._peers)]
    # --- group index (store/groups.py) --------------------------------------------------------

    def _index_groups(self, msgs: Sequence[Message]) -> None:
        roots, posts = group_rows(msgs)
        for r in roots:
            self._group_roots.setdefault(r.id, r)
        for p in posts:
            if p.id in self._group_post_ids:
                continue
            self._group_post_ids[p.id] = p
            self._group_posts.setdefault(p.group.id, []).append((self._rx_of[MsgId(p.id)], p))

    async def group_root(self, group_id: bytes) -> GroupRoot | None:
        return self._group_roots.get(group_id)

    async def group_posts(self, group_id: bytes, after: int = 0) -> list[tuple[int, GroupMessage]]:
        return [(rx, p) for rx, p in self._group_posts.get(group_id, []) if rx > after]

    async def group_post(self, msg_id: bytes) -> GroupMessage | None:
        return self._group_post_ids.get(msg_id)

    async def group_summaries(self, me: FeedId) -> list[GroupSummary]:
        out = []
        for gid in sorted(set(self._group_roots) | set(self._group_posts)):
            root = self._group_roots.get(gid)
            posts = self._group_posts.get(gid, [])
            read = self._group_reads.get(gid, 0)
            stamps = [p.timestamp for _, p in posts] + ([root.timestamp] if root else [])
            out.append(GroupSummary(
                gid, root, len(posts), max(stamps) if stamps else None,
                max((rx for rx, _ in posts), default=0), read,
                sum(1 for rx, p in posts if rx > read and p.author != me),
                any(p.author == me for _, p in posts), is_member(me, root)))
        return out

    async def set_group_read(self, group_id: bytes, rx: int) -> None:
        if rx > self._group_reads.get(group_id, 0):
            self._group_reads[group_id] = rx

    async def reindex_groups(self) -> int:
        reads = self._group_reads
        self._clear_groups()
        self._group_reads = reads
        msgs = [decode_message(self._raw[a][s - 1]) for a, s in self._arrival]
        self._index_groups(msgs)
        return len(self._group_roots) + len(self._group_post_ids)

    def _placed(self, group_id: bytes) -> list[tuple[int, int, GroupMessage]]:
        out = []
        for rx, p in self._group_posts.get(group_id, []):
            place = self._group_places.get(p.id)
            if place is not None:
                out.append((place[0], rx, p))
        out.sort(key=lambda t: t[0])
        return out

    async def group_order_state(self, group_id: bytes) -> bytes | None:
        return self._group_orders.get(group_id)

    async def group_tail(self, group_id: bytes, limit: int) -> list[PlacedRow]:
        placed = self._placed(group_id)[-limit:] if limit > 0 else []
        return [PlacedRow(pos, p.id, p.timestamp) for pos, _, p in placed]

    async def group_placed(self, group_id: bytes, ids: Sequence[bytes]) -> set[bytes]:
        out = set()
        for i in ids:
            p = self._group_post_ids.get(i)
            if p is not None and p.group.id == group_id and i in self._group_places:
                out.add(i)
        return out

    async def save_group_order(self, group_id: bytes, state: bytes,
                               places: Sequence[tuple[bytes, int, bytes | None]],
                               *, expect: bytes | None, reset: bool = False) -> bool:
        if self._group_orders.get(group_id) != expect:
            return False
        if reset:
            for _, p in self._group_posts.get(group_id, []):
                self._group_places.pop(p.id, None)
        for i, pos, flags in places:
            if i in self._group_post_ids:
                self._group_places[i] = (pos, flags)
        self._group_orders[group_id] = state
        return True

    async def unplaced_groups(self) -> list[bytes]:
        return sorted(g for g, posts in self._group_posts.items()
                      if any(p.id not in self._group_places for _, p in posts))

    async def group_display(self, group_id: bytes) -> list[DisplayRow]:
        return [
            DisplayRow(rx, p.id, p.author, p.seq, p.timestamp, p.text,
                       None if p.reply is None else pack_ref(p.reply),
                       self._group_places[p.id][1])
            for _, rx, p in self._placed(group_id)
        ]

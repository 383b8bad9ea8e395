"""The Store contract (spec/feed.md §10), shared by MemoryStore and SqliteStore.

A store keeps, per feed, the exact bytes of a contiguous run of validated messages starting at
seq 1, the head (seq, id), whether the feed is forked, fork proofs, and indexes derived from
known content types (latest contact per author and target, latest self-chosen name).

Rules every implementation keeps (tests/store/test_contract.py checks both):
- each public method is one transaction; ``append`` of a batch is atomic;
- ``append`` refuses (``not-contiguous``) a batch that does not continue the stored head exactly,
  and (``feed-forked``) any message for a forked feed: validation happens before the store, but
  the store never lets a gap or a fork into a feed;
- the store never re-encodes a message: ``range`` and ``get`` return the bytes appended;
- group roots and posts among appended messages are indexed in the same transaction
  (store/groups.py); ``group_posts`` returns a group's posts in arrival order with their
  arrival number, and ``reindex_groups`` rebuilds the index from the stored messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from feedlog.core.content import About, Contact, interpret
from feedlog.core.errors import StoreError
from feedlog.core.fork import ForkProof
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import FeedState, Message
from feedlog.core.view import GroupMessage, GroupRoot
from feedlog.store.groups import DisplayRow, GroupSummary, PlacedRow

NoteTable = dict[FeedId, tuple[int, "int | None"]]  # feed -> (note, forked seq)
# feed -> (note, forked seq, head prefix): a baseline with the heads of spec/replication.md §5.2
BaselineTable = dict[FeedId, tuple[int, "int | None", "bytes | None"]]


@dataclass(frozen=True, slots=True)
class FeedInfo:
    author: FeedId
    seq: int
    head: MsgId | None
    forked_seq: int | None = None
    name: str | None = None

    @property
    def state(self) -> FeedState:
        return FeedState(self.author, self.seq, self.head)


@dataclass(frozen=True, slots=True)
class ContactRow:
    author: FeedId
    target: FeedId
    seq: int
    kind: str


# Peer states that prove the peer is there (a connection): noting one also stamps last_seen.
IN_CONTACT = frozenset({"connected", "synced"})


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer this node has seen or been told about (feedlog/peers.py). Times are ms since the
    epoch; ``last_seen`` is the last announcement, address given by hand or connection;
    ``source`` is "lan", "manual" or "inbound"; ``state`` is the last one noted
    ("discovered", "connecting", "connected", "synced", "disconnected", "unreachable")."""

    feed: FeedId
    host: str
    port: int
    source: str
    last_seen: int | None
    last_synced: int | None
    state: str


class Store(Protocol):
    async def close(self) -> None: ...

    async def feed(self, author: FeedId) -> FeedInfo | None: ...

    async def feeds(self) -> list[FeedInfo]: ...

    async def changes(self) -> int:
        """A number that changes when another connection (another process) commits to this
        store, and only then: what this connection writes leaves it alone."""
        ...

    async def append(self, msgs: Sequence[Message]) -> None: ...

    async def get(self, msg_id: MsgId) -> bytes | None: ...

    async def get_seq(self, author: FeedId, seq: int) -> bytes | None: ...

    async def range(self, author: FeedId, first: int, last: int) -> list[bytes]: ...

    async def count(self) -> int: ...

    async def record_fork(self, proof: ForkProof) -> bool: ...

    async def fork_proofs(self, author: FeedId | None = None) -> list[bytes]: ...

    async def contacts(self) -> list[ContactRow]: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str | None) -> None: ...

    # replication baselines (spec/replication.md §7): per peer and direction ("sent"/"recv"),
    # feed -> (note, forked seq or None)
    async def peer_notes(self, peer: FeedId, direction: str) -> NoteTable: ...

    async def update_peer_notes(self, peer: FeedId, direction: str,
                                upserts: NoteTable,
                                removes: Sequence[FeedId]) -> None: ...

    # the same baselines with each entry's head prefix (None: no head); ``update_peer_notes``
    # stores entries without a head
    async def peer_baseline(self, peer: FeedId, direction: str) -> BaselineTable: ...

    async def update_peer_baseline(self, peer: FeedId, direction: str,
                                   upserts: BaselineTable,
                                   removes: Sequence[FeedId]) -> None: ...
    # --- peer book (feedlog/peers.py) ---
    async def peer_seen(self, feed: FeedId, host: str, port: int, source: str,
                        when: int) -> None: ...

    async def peer_state(self, feed: FeedId, state: str, when: int, *, synced: bool) -> None: ...

    async def peers(self) -> list[PeerRecord]: ...
    # The group index (store/groups.py), kept by ``append`` in the same transaction.
    async def group_root(self, group_id: bytes) -> GroupRoot | None: ...

    async def group_posts(
        self, group_id: bytes, after: int = 0
    ) -> list[tuple[int, GroupMessage]]: ...

    async def group_post(self, msg_id: bytes) -> GroupMessage | None: ...

    async def group_summaries(self, me: FeedId) -> list[GroupSummary]: ...

    async def set_group_read(self, group_id: bytes, rx: int) -> None: ...

    async def reindex_groups(self) -> int: ...

    # The stored display order (feedlog/group_order.py): only placed posts (pos not None).
    async def group_order_state(self, group_id: bytes) -> bytes | None: ...

    async def group_tail(self, group_id: bytes, limit: int) -> list[PlacedRow]: ...

    async def group_placed(self, group_id: bytes, ids: Sequence[bytes]) -> set[bytes]: ...

    async def save_group_order(self, group_id: bytes, state: bytes,
                               places: Sequence[tuple[bytes, int, bytes | None]],
                               *, expect: bytes | None, reset: bool = False) -> bool: ...

    async def group_display(self, group_id: bytes) -> list[DisplayRow]: ...

    async def unplaced_groups(self) -> list[bytes]:
        """The groups with posts not yet in their stored order (sorted): what
        ``feedlog.groups.settle`` places after a sync or an import."""
        ...


def check_contiguous(info: FeedInfo | None, msgs: Sequence[Message]) -> None:
    """Raise unless ``msgs`` (one feed, in order) continue ``info`` exactly."""
    if not msgs:
        return
    author = msgs[0].author
    seq = info.seq if info else 0
    head = info.head if info else None
    if info is not None and info.forked_seq is not None:
        raise StoreError(f"feed is forked at seq {info.forked_seq}; nothing more is appended",
                         code="feed-forked")
    for m in msgs:
        if m.author != author or m.seq != seq + 1 or m.previous != head:
            raise StoreError(
                f"message seq {m.seq} does not continue the stored head {seq}",
                code="not-contiguous",
            )
        seq, head = m.seq, m.id


def derived_rows(msgs: Sequence[Message]) -> tuple[list[ContactRow], list[tuple[FeedId, int, str]]]:
    """Contact and name index rows for the known content types among ``msgs``."""
    contacts: list[ContactRow] = []
    names: list[tuple[FeedId, int, str]] = []
    for m in msgs:
        if m.value is None or m.value.get("type") not in (
            "follow", "unfollow", "block", "unblock", "about"
        ):
            continue
        meaning = interpret(m.value)
        if isinstance(meaning, Contact):
            contacts.append(ContactRow(m.author, meaning.feed, m.seq, meaning.kind))
        elif isinstance(meaning, About):
            names.append((m.author, m.seq, meaning.name))
    return contacts, names


def plan_append(
    lookup: Callable[[FeedId], FeedInfo | None], msgs: Sequence[Message]
) -> dict[FeedId, FeedInfo]:
    """Check a whole batch (possibly several feeds, possibly several runs of one feed) against
    the stored heads given by ``lookup``; return the new head of every feed it touches."""
    heads: dict[FeedId, FeedInfo] = {}
    for run in group_by_feed(msgs):
        a = run[0].author
        info = heads[a] if a in heads else lookup(a)
        check_contiguous(info, run)
        heads[a] = FeedInfo(a, run[-1].seq, run[-1].id, info.forked_seq if info else None)
    return heads


def group_by_feed(msgs: Sequence[Message]) -> list[list[Message]]:
    """Split a batch into runs of one feed, keeping order."""
    runs: list[list[Message]] = []
    for m in msgs:
        if runs and runs[-1][0].author == m.author:
            runs[-1].append(m)
        else:
            runs.append([m])
    return runs

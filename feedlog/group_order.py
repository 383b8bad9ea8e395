"""The stored display order of a group, kept up to date incrementally (spec/view.md §6).

`show` of a 10,000-post group must not load and re-order every post each time. So every post of
a group gets a stored place: ``pos`` (an integer, spaced by ``GAP`` so that concurrent posts can
be inserted between two others) and its flags (missing refs, missing reply, ignored refs), and
each group has a small state: up to which arrival number (rx) posts are placed, whether the root
was present, the tips, the missing msgrefs, and each author's highest placed post.

``catch_up`` places the posts that arrived since (few, usually one) exactly as §6 inserts them,
with a handful of indexed queries each:

- a post that nothing placed names (its id is not among the missing), that names no one of
  itself, whose author has nothing placed at a higher seq, is inserted after its last
  predecessor, before the first later entry with a greater (timestamp, id) key, found by a scan
  back over at most ``SCAN`` entries; when it follows every tip that is simply the end;
- anything else (a gap filled by a late feed, the root arriving, a forged cycle, a long scan,
  no room between two positions, a large batch of arrivals) rebuilds the whole order once with
  ``core.view.order_group``, which is also what defines the result: the stored order always
  equals ``order_group`` of the stored posts (tests check it for random arrival orders).

Reading (``display``) is one query ordered by ``pos``; no message objects are built.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from feedlog.core import encoding
from feedlog.core.errors import StoreError
from feedlog.core.view import GroupMessage, GroupRoot, MsgRef, order_group
from feedlog.store.base import Store
from feedlog.store.groups import DisplayRow, PlacedRow, pack_refs, unpack_refs

GAP = 1 << 20  # spacing of positions after a rebuild or an append
SCAN = 256  # entries scanned back to place a concurrent post (as core.view.GroupIndex)
BATCH = 64  # more new posts than this at once: rebuild instead


@dataclass
class OrderState:
    """What a group's stored order knows besides the positions."""

    rx: int = 0  # every post with a lower or equal arrival number is placed
    root: bool = False
    tips: list[MsgRef] = field(default_factory=list)  # of the posts; empty when there are none
    missing: set[MsgRef] = field(default_factory=set)
    tops: dict[bytes, MsgRef] = field(default_factory=dict)  # author -> highest placed post
    last: int = 0  # the highest position in use
    rebuilds: int = 0  # how many times the order was rebuilt (tests, bench)

    def encode(self) -> bytes:
        return encoding.encode({
            "rx": self.rx, "root": self.root, "tips": pack_refs(self.tips),
            "missing": pack_refs(sorted(self.missing)),
            "tops": pack_refs(sorted(self.tops.values())), "last": self.last,
            "rebuilds": self.rebuilds,
        })

    @classmethod
    def decode(cls, blob: bytes) -> OrderState:
        v: Any = encoding.decode_strict(blob, what="group order state")
        tops = unpack_refs(v["tops"])
        return cls(v["rx"], v["root"], list(unpack_refs(v["tips"])),
                   set(unpack_refs(v["missing"])), {r.author: r for r in tops}, v["last"],
                   v["rebuilds"])

    @property
    def missing_ids(self) -> set[bytes]:
        return {r.id for r in self.missing}


_FLAG_HEAD = struct.Struct(">BHH")  # reply_missing, number of missing refs, of ignored refs


def pack_flags(missing: tuple[MsgRef, ...], reply_missing: bool,
               ignored: tuple[MsgRef, ...]) -> bytes | None:
    if not (missing or reply_missing or ignored):
        return None
    return (_FLAG_HEAD.pack(reply_missing, len(missing), len(ignored)) + pack_refs(missing)
            + pack_refs(ignored))


def unpack_flags(blob: bytes | None) -> tuple[tuple[MsgRef, ...], bool, tuple[MsgRef, ...]]:
    """(missing refs, reply missing, ignored refs) of a placed post."""
    if blob is None:
        return (), False, ()
    reply_missing, n_missing, _ = _FLAG_HEAD.unpack_from(blob)
    refs = unpack_refs(blob[_FLAG_HEAD.size :])
    return refs[:n_missing], bool(reply_missing), refs[n_missing:]


async def rebuild(store: Store, group_id: bytes, root: GroupRoot | None,
                  rebuilds: int = 0, *, expect: bytes | None) -> OrderState | None:
    """Order every stored post of the group from scratch and store the result (None when the
    stored state is no longer ``expect``: another process wrote it meanwhile)."""
    rows = await store.group_posts(group_id)
    view = order_group(root, [p for _, p in rows])
    state = OrderState(rx=rows[-1][0] if rows else 0, root=root is not None,
                       tips=[r for r in view.tips if r.id != group_id] if rows else [],
                       missing=set(view.missing_refs), rebuilds=rebuilds + 1)
    places = []
    for i, e in enumerate(view.entries, 1):
        m = e.message
        places.append((m.id, i * GAP,
                       pack_flags(e.missing_refs, e.reply_missing, e.ignored_refs)))
        top = state.tops.get(m.author)
        if top is None or top.seq < m.seq:
            state.tops[m.author] = m.ref
    state.last = len(places) * GAP
    if not await store.save_group_order(group_id, state.encode(), places, expect=expect,
                                        reset=True):
        return None
    return state


async def catch_up(store: Store, group_id: bytes) -> OrderState:
    """Place the posts that arrived since the group was last ordered; return the state.
    Two processes may do this at once (a chat and a show): a write that finds the state
    changed since it was read is dropped and the work redone from the new state."""
    for _ in range(8):
        state = await _catch_up_once(store, group_id)
        if state is not None:
            return state
    raise StoreError("the group order keeps changing under us", code="store-busy")


async def _catch_up_once(store: Store, group_id: bytes) -> OrderState | None:
    blob = await store.group_order_state(group_id)
    state = OrderState.decode(blob) if blob is not None else None
    root = await store.group_root(group_id)
    if state is None:
        return await rebuild(store, group_id, root, expect=None)
    new = await store.group_posts(group_id, state.rx)
    if len(new) > BATCH or (root is not None and not state.root):
        return await rebuild(store, group_id, root, state.rebuilds, expect=blob)
    if not new:
        return state
    tail = await store.group_tail(group_id, SCAN + 1)
    whole = len(tail) <= SCAN  # the tail is the whole order
    placed_now: set[bytes] = set()
    places: list[tuple[bytes, int, bytes | None]] = []
    for rx, m in new:
        at = await _place(store, group_id, state, tail, whole, placed_now, m)
        if at is None:
            return await rebuild(store, group_id, root, state.rebuilds, expect=blob)
        places.append(at)
        state.rx = rx
    if not await store.save_group_order(group_id, state.encode(), places, expect=blob):
        return None
    return state


async def _place(store: Store, group_id: bytes, state: OrderState, tail: list[PlacedRow],
                 whole: bool, placed_now: set[bytes],
                 m: GroupMessage) -> tuple[bytes, int, bytes | None] | None:
    """Insert ``m`` into ``tail`` and ``state`` (spec/view.md §6), or None: rebuild."""
    if m.id in state.missing_ids:
        return None  # a placed post names it: places after it may change
    top = state.tops.get(m.author)
    if top is not None and top.seq >= m.seq:
        return None
    named = [*m.refs] if m.reply is None else [*m.refs, m.reply]
    if any(r.id == m.id for r in named):
        return None
    ids = list({r.id for r in named} - placed_now)
    present = await store.group_placed(group_id, ids) | ({r.id for r in named} & placed_now)
    preds = set(present)
    if top is not None:
        preds.add(top.id)
    key = (m.timestamp, m.id)
    at = len(tail)
    for i in range(len(tail) - 1, -1, -1):
        row = tail[i]
        if row.id in preds:
            break
        if (row.timestamp, row.id) > key:
            at = i
    else:
        if not whole:
            return None  # the last predecessor is further back than the scan goes
    if at == len(tail):
        pos = state.last + GAP
        state.last = pos
    else:
        low = tail[at - 1].pos if at > 0 else 0
        high = tail[at].pos
        if high - low < 2:
            return None  # no room left between the two: renumber everything
        pos = (low + high) // 2
    tail.insert(at, PlacedRow(pos, m.id, m.timestamp))
    placed_now.add(m.id)
    root_id = group_id if state.root else None
    missing = tuple(sorted({r for r in m.refs if r.id not in present and r.id != root_id}))
    reply_missing = m.reply is not None and m.reply.id not in present and m.reply.id != root_id
    absent = [r for r in (*named, m.group) if r.id not in present and r.id != root_id]
    state.missing.update(absent)
    state.tips = sorted([t for t in state.tips if t.id not in preds] + [m.ref],
                        key=lambda r: r.id)
    state.tops[m.author] = m.ref
    return m.id, pos, pack_flags(missing, reply_missing, ())


async def display(store: Store, group_id: bytes) -> tuple[OrderState, list[DisplayRow]]:
    """The group's posts in display order, after placing what arrived."""
    state = await catch_up(store, group_id)
    return state, await store.group_display(group_id)

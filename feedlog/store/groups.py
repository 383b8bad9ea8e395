"""The group index every store keeps (spec/view.md §2), and its row codec. No SQL here.

Besides the rows, a store keeps each group's display order (``pos`` and ``flags`` per post, and a
small state blob per group) for feedlog/group_order.py, which alone decides what they hold.

Every appended message whose content is a well-formed group root or group post (decided by
core.group_content, so a store indexes exactly what views accept) is indexed in the same
transaction as the append, whatever brought it: publish, ingest from a peer, a stick. Posts get
an arrival number ``rx`` that only grows within one store; views use it to load only what is new
since they last looked, and the per-group read marker is such a number.

References are packed as fixed 72-byte records ``author (32) | seq (8, big-endian) | id (32)``,
so a 10,000-post group is read back without any CBOR decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from feedlog.core.group_content import message_from_content, root_from_content
from feedlog.core.ids import FeedId
from feedlog.core.message import Message
from feedlog.core.view import GroupMessage, GroupRoot, MsgRef

GROUP_INDEX_VERSION = "1"  # meta key "group-index": a store without it is re-indexed on open
_REF = struct.Struct(">32sQ32s")


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One group as `feedlog groups` lists it.

    ``last_timestamp`` is the highest (author-claimed) timestamp among the root and the posts
    held; ``last_rx`` the arrival number of the newest post held (0 if none); ``unread`` counts
    posts by others that arrived after the read marker ``read_rx``; ``posted`` says whether
    ``me`` has a post in it; ``member`` whether ``me`` created it or is listed in its members.
    """

    group_id: bytes
    root: GroupRoot | None
    posts: int
    last_timestamp: int | None
    last_rx: int
    read_rx: int
    unread: int
    posted: bool
    member: bool


class PlacedRow(NamedTuple):
    """A post's place in the stored display order (``pos`` grows down the conversation)."""

    pos: int
    id: bytes
    timestamp: int


class DisplayRow(NamedTuple):
    """What `show` prints of a placed post; ``reply`` is a packed msgref, ``flags`` the packed
    flags of feedlog/group_order.py (None when there are none)."""

    rx: int
    id: bytes
    author: bytes
    seq: int
    timestamp: int
    text: str
    reply: bytes | None
    flags: bytes | None


def pack_ref(ref: MsgRef) -> bytes:
    return _REF.pack(ref.author, ref.seq, ref.id)


def pack_refs(refs: Sequence[MsgRef]) -> bytes:
    return b"".join(_REF.pack(r.author, r.seq, r.id) for r in refs)


def unpack_refs(blob: bytes) -> tuple[MsgRef, ...]:
    return tuple(MsgRef(a, s, i) for a, s, i in _REF.iter_unpack(blob))


def unpack_ref(blob: bytes) -> MsgRef:
    a, s, i = _REF.unpack(blob)
    return MsgRef(a, s, i)


class RefReader:
    """Unpacks refs, building one MsgRef per distinct packed ref: reading a whole group back,
    each post is named by a few others and the group ref by all, so this builds about one
    MsgRef per post instead of four."""

    def __init__(self) -> None:
        self._seen: dict[bytes, MsgRef] = {}

    def one(self, blob: bytes) -> MsgRef:
        ref = self._seen.get(blob)
        if ref is None:
            ref = self._seen[blob] = unpack_ref(blob)
        return ref

    def many(self, blob: bytes) -> tuple[MsgRef, ...]:
        size = _REF.size
        if len(blob) == size:
            return (self.one(blob),)
        return tuple(self.one(blob[i : i + size]) for i in range(0, len(blob), size))


def pack_members(members: tuple[bytes, ...] | None) -> bytes | None:
    return None if members is None else b"".join(members)


def unpack_members(blob: bytes | None) -> tuple[bytes, ...] | None:
    if blob is None:
        return None
    return tuple(blob[i : i + 32] for i in range(0, len(blob), 32))


def group_rows(msgs: Sequence[Message]) -> tuple[list[GroupRoot], list[GroupMessage]]:
    """The group roots and group posts among ``msgs``, in order."""
    roots: list[GroupRoot] = []
    posts: list[GroupMessage] = []
    for m in msgs:
        v = m.value
        if v is None:
            continue
        t = v.get("type")
        if t == "post" and "group" in v:
            p = message_from_content(m.id, m.author, m.seq, m.timestamp, v)
            if p is not None:
                posts.append(p)
        elif t == "group":
            r = root_from_content(m.id, m.author, m.seq, m.timestamp, v)
            if r is not None:
                roots.append(r)
    return roots, posts


def is_member(me: FeedId, root: GroupRoot | None) -> bool:
    return root is not None and (root.author == me or me in (root.members or ()))

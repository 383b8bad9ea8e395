"""Group conversations: the causal graph, one deterministic order, completeness (spec/view.md).

A group is named by its root message; every post in it names the root and the tips its author had
(spec/view.md §2-§3). This module turns a set of such posts into one display order that every node
holding the same set computes identically, whatever order the posts arrived in:

- Precedence (§4.2): a post comes after every present post it names in ``refs`` or ``reply``, and
  after every post of the same author with a lower seq. Names of absent posts add nothing.
- Cycles (§4.2 rule 3) need forged ids. If the graph has one, strongly connected components are
  computed once, and every reference between two members of one component is ignored unless it
  agrees with author order; so is every self-reference. Author order alone is acyclic.
- Order (§4.3): Kahn's algorithm, always taking the ready post with the smallest
  (timestamp, id). The ready set after each step is a function of the set of posts, so the order
  is too; posts with missing references are placed by the same rule and flagged.
- Completeness (§5): every named but absent message, grouped by author feed with the highest seq
  missing, so a caller knows how far to fetch.

``GroupIndex`` keeps the same result incrementally (§6): a post that nothing present follows is
inserted where Kahn's algorithm would have picked it, found by scanning back from the end to its
last predecessor, so a post that follows every tip is appended in O(refs) and a concurrent one
costs a short scan; anything else marks the index for one recomputation on the next read.
Pure: standard library only, no clock, no IO.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from feedlog.core.errors import LocalError

ID_SIZE = 32


def is_id(value: object) -> bool:
    return type(value) is bytes and len(value) == ID_SIZE


def is_seq(value: object) -> bool:
    return type(value) is int and value >= 1


def _bad(what: str) -> LocalError:
    return LocalError(what, code="bad-group-message")


@dataclass(frozen=True, slots=True, order=True)
class MsgRef:
    """A reference to a message that still says where to fetch it: author feed, seq and id.

    Ordered by (author, seq, id). Only ``id`` decides whether a reference is satisfied;
    ``author`` and ``seq`` are fetch hints (spec/view.md §1).
    """

    author: bytes
    seq: int
    id: bytes

    def __post_init__(self) -> None:
        if not (is_id(self.author) and is_seq(self.seq) and is_id(self.id)):
            raise LocalError(
                "a msgref is (32-byte author, seq >= 1, 32-byte id)", code="bad-msgref"
            )


@dataclass(frozen=True, slots=True)
class GroupRoot:
    """The message that creates a group; its id names the group."""

    id: bytes
    author: bytes
    seq: int
    timestamp: int
    title: str
    members: tuple[bytes, ...] | None = None

    def __post_init__(self) -> None:
        if not (is_id(self.id) and is_id(self.author) and is_seq(self.seq)):
            raise _bad("a group root needs a 32-byte id and author and a seq >= 1")
        if type(self.timestamp) is not int or type(self.title) is not str:
            raise _bad("a group root needs an int timestamp and a text title")
        if self.members is not None and not (
            type(self.members) is tuple and all(is_id(m) for m in self.members)
        ):
            raise _bad("group members are a tuple of 32-byte feed ids")

    @property
    def ref(self) -> MsgRef:
        return MsgRef(self.author, self.seq, self.id)


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A post in a group, as its author signed it (author and seq come from the feed)."""

    id: bytes
    author: bytes
    seq: int
    timestamp: int
    group: MsgRef
    refs: tuple[MsgRef, ...]
    reply: MsgRef | None
    text: str

    def __post_init__(self) -> None:
        if not (is_id(self.id) and is_id(self.author) and is_seq(self.seq)):
            raise _bad("a group message needs a 32-byte id and author and a seq >= 1")
        if type(self.timestamp) is not int or type(self.text) is not str:
            raise _bad("a group message needs an int timestamp and a text")
        if not isinstance(self.group, MsgRef):
            raise _bad("group is a MsgRef")
        if type(self.refs) is not tuple or not all(isinstance(r, MsgRef) for r in self.refs):
            raise _bad("refs is a tuple of MsgRef")
        if self.reply is not None and not isinstance(self.reply, MsgRef):
            raise _bad("reply is a MsgRef or None")

    @property
    def ref(self) -> MsgRef:
        return MsgRef(self.author, self.seq, self.id)


@dataclass(frozen=True, slots=True)
class Entry:
    """One post in display order, with what is wrong with its references.

    ``missing_refs``: distinct entries of ``refs`` naming a message that is absent (neither a
    given post nor the given root), sorted. ``reply_missing``: ``reply`` names an absent message.
    ``ignored_refs``: distinct references (``refs`` or ``reply``) ignored to break a cycle,
    sorted; a self-reference is always one (spec/view.md §4.2).
    """

    message: GroupMessage
    missing_refs: tuple[MsgRef, ...] = ()
    reply_missing: bool = False
    ignored_refs: tuple[MsgRef, ...] = ()


@dataclass(frozen=True, slots=True)
class MissingFeed:
    """The absent messages one author feed is named for; fetch that feed up to ``max_seq``."""

    author: bytes
    max_seq: int
    refs: tuple[MsgRef, ...]


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group's posts in display order, its tips, and what is known to be missing."""

    group_id: bytes | None
    root: GroupRoot | None
    entries: tuple[Entry, ...]
    tips: tuple[MsgRef, ...]
    missing: tuple[MissingFeed, ...]

    @property
    def order(self) -> tuple[bytes, ...]:
        return tuple(e.message.id for e in self.entries)

    @property
    def root_missing(self) -> bool:
        return self.root is None

    @property
    def complete(self) -> bool:
        """The root is present and nothing named by any post is absent."""
        return self.root is not None and not self.missing

    @property
    def missing_refs(self) -> tuple[MsgRef, ...]:
        return tuple(r for feed in self.missing for r in feed.refs)


# --- ordering -----------------------------------------------------------------------------------

_KEY = operator.attrgetter("timestamp", "id")  # the tie-break key (spec/view.md §4.3)
_ID = operator.attrgetter("id")


def _dedupe(messages: Iterable[GroupMessage]) -> dict[bytes, GroupMessage]:
    by_id: dict[bytes, GroupMessage] = {}
    for m in messages:
        old = by_id.setdefault(m.id, m)
        if old is not m and old != m:
            raise LocalError("two different messages share one id", code="id-conflict")
    return by_id


def _check_group(group_id: bytes, m: GroupMessage) -> None:
    if m.group.id != group_id:
        raise LocalError("a message of another group was given", code="wrong-group")
    if m.id == group_id:
        raise LocalError("a post has the id of its group's root", code="id-conflict")


def _group_id(root: GroupRoot | None, by_id: Mapping[bytes, GroupMessage]) -> bytes | None:
    if root is not None:
        group_id = root.id
    elif by_id:
        group_id = next(iter(by_id.values())).group.id
    else:
        return None
    for m in by_id.values():
        _check_group(group_id, m)
    return group_id


def _author_preds(msgs: list[GroupMessage]) -> list[list[int]]:
    """For each post, the posts of its author at the next lower seq present (all of them, if a
    forked feed has several): with transitivity, every lower seq of that author."""
    preds: list[list[int]] = [[]] * len(msgs)  # one shared empty list, never appended to
    by_author: dict[bytes, list[int]] = {}
    for i, m in enumerate(msgs):
        by_author.setdefault(m.author, []).append(i)
    seqs = [m.seq for m in msgs]
    for chain in by_author.values():
        chain.sort(key=seqs.__getitem__)  # usually sorted already: timestamps follow seqs
        below: list[int] = []
        level: list[int] = []
        level_seq = 0
        for i in chain:
            if seqs[i] != level_seq:
                below, level, level_seq = level, [], seqs[i]
            level.append(i)
            preds[i] = below
    return preds


@dataclass(slots=True)
class _Graph:
    succs: list[list[int]]  # may repeat an edge; in-degrees count the repeats
    indeg: list[int]
    ignored: dict[int, set[MsgRef]]
    missing: dict[int, tuple[MsgRef, ...]]
    reply_missing: set[int]
    absent: set[MsgRef]


def _implied(msgs: list[GroupMessage], comp: list[int], j: int, i: int) -> bool:
    """Whether the reference of ``i`` to ``j`` is kept when cycles are broken (spec/view.md §4.2):
    it leaves its component, or author order already puts ``j`` first."""
    return comp[j] != comp[i] or (msgs[j].author == msgs[i].author and msgs[j].seq < msgs[i].seq)


def _graph(
    msgs: list[GroupMessage],
    index: Mapping[bytes, int],
    root_id: bytes | None,
    author_preds: list[list[int]],
    comp: list[int] | None,
) -> _Graph:
    """The precedence graph (spec/view.md §4.2), the ignored references and the absent ones.

    With ``comp`` None only self-references are ignored; otherwise also every reference inside
    one component that author order does not already imply (spec/view.md §4.2).
    """
    n = len(msgs)
    g = _Graph([[] for _ in range(n)], [0] * n, {}, {}, set(), set())
    succs, get = g.succs, index.get
    for i, m in enumerate(msgs):
        preds = author_preds[i]
        for k in preds:
            succs[k].append(i)
        degree = len(preds)
        lost: list[MsgRef] = []
        for r in m.refs:
            j = get(r.id)
            if j is None:
                if r.id != root_id:
                    lost.append(r)
            elif j == i or (comp is not None and not _implied(msgs, comp, j, i)):
                g.ignored.setdefault(i, set()).add(r)
            else:
                succs[j].append(i)
                degree += 1
        reply = m.reply
        if reply is not None:
            j = get(reply.id)
            if j is None:
                if reply.id != root_id:
                    g.reply_missing.add(i)
                    g.absent.add(reply)
            elif j == i or (comp is not None and not _implied(msgs, comp, j, i)):
                g.ignored.setdefault(i, set()).add(reply)
            else:
                succs[j].append(i)
                degree += 1
        g.indeg[i] = degree
        if lost:
            g.absent.update(lost)
            g.missing[i] = tuple(sorted(set(lost)))
        if root_id is None:
            g.absent.add(m.group)
    return g


def _components(succs: list[list[int]]) -> list[int]:
    """Strongly connected component number of every node (iterative Tarjan)."""
    n = len(succs)
    number = [-1] * n
    low = [0] * n
    comp = [-1] * n
    on_stack = [False] * n
    stack: list[int] = []
    counter = 0
    ncomp = 0
    for start in range(n):
        if number[start] != -1:
            continue
        work: list[tuple[int, int]] = [(start, 0)]
        while work:
            v, pos = work.pop()
            if pos == 0:
                number[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            descended = False
            edges = succs[v]
            while pos < len(edges):
                w = edges[pos]
                pos += 1
                if number[w] == -1:
                    work.append((v, pos))
                    work.append((w, 0))
                    descended = True
                    break
                if on_stack[w]:
                    low[v] = min(low[v], number[w])
            if descended:
                continue
            if low[v] == number[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    comp[w] = ncomp
                    if w == v:
                        break
                ncomp += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comp


def _kahn(succs: list[list[int]], indeg: list[int]) -> list[int]:
    # Nodes are numbered in (timestamp, id) order, so the smallest index is the smallest key.
    indeg = list(indeg)
    heap = [i for i, d in enumerate(indeg) if d == 0]  # ascending, hence already a heap
    out: list[int] = []
    while heap:
        i = heapq.heappop(heap)
        out.append(i)
        for k in succs[i]:
            indeg[k] -= 1
            if indeg[k] == 0:
                heapq.heappush(heap, k)
    return out


def _group_by_author(absent: Iterable[MsgRef]) -> tuple[MissingFeed, ...]:
    per_author: dict[bytes, list[MsgRef]] = {}
    for r in absent:
        per_author.setdefault(r.author, []).append(r)
    out = []
    for author in sorted(per_author):
        refs = tuple(sorted(per_author[author]))
        out.append(MissingFeed(author, max(r.seq for r in refs), refs))
    return tuple(out)


def _compute(
    root: GroupRoot | None, group_id: bytes | None, by_id: Mapping[bytes, GroupMessage]
) -> GroupView:
    msgs = sorted(by_id.values(), key=_KEY)
    index = {m.id: i for i, m in enumerate(msgs)}
    root_id = root.id if root is not None else None
    author_preds = _author_preds(msgs)
    g = _graph(msgs, index, root_id, author_preds, None)
    order = _kahn(g.succs, g.indeg)
    if len(order) < len(msgs):
        g = _graph(msgs, index, root_id, author_preds, _components(g.succs))
        order = _kahn(g.succs, g.indeg)
        if len(order) != len(msgs):  # impossible: what is left is acyclic (spec/view.md §4.2)
            raise LocalError("cycle left after breaking cycles", code="internal-error")
    ignored = g.ignored
    entries = tuple(
        Entry(
            msgs[i],
            g.missing.get(i, ()),
            i in g.reply_missing,
            tuple(sorted(ignored[i])) if i in ignored else (),
        )
        for i in order
    )
    if msgs:
        tip_refs = tuple(sorted((msgs[i].ref for i, s in enumerate(g.succs) if not s), key=_ID))
    else:
        tip_refs = (root.ref,) if root is not None else ()
    return GroupView(group_id, root, entries, tip_refs, _group_by_author(g.absent))


def order_group(root: GroupRoot | None, messages: Iterable[GroupMessage]) -> GroupView:
    """The display order of a group's posts (spec/view.md §4) with flags and completeness.

    ``root`` is the group's root message, or None when it is absent. Every message must name the
    same group (the root's id when given), else LocalError ``wrong-group``; one id given twice is
    kept once, two different messages with one id raise LocalError ``id-conflict``. The result
    depends only on the set of messages.
    """
    by_id = _dedupe(messages)
    return _compute(root, _group_id(root, by_id), by_id)


def tips(root: MsgRef, messages: Iterable[GroupMessage]) -> tuple[MsgRef, ...]:
    """The refs for a new post (spec/view.md §3): the posts nothing follows, sorted by id; the root
    alone when there are none. ``root`` is the root's reference (a tip is a MsgRef)."""
    by_id = _dedupe(messages)
    for m in by_id.values():
        _check_group(root.id, m)
    if not by_id:
        return (root,)
    return _compute(None, root.id, by_id).tips


# --- incremental --------------------------------------------------------------------------------

_SCAN_LIMIT = 256  # entries GroupIndex scans back to place a concurrent post before giving up


class GroupIndex:
    """One group's view kept up to date as posts arrive (spec/view.md §6).

    ``add`` places a post directly when no present post follows it: at the end in O(refs) when it
    follows every current tip (its author had seen everything we have), otherwise after a scan
    back to its last predecessor (a concurrent post). In any other case it only records the post,
    and the next read recomputes the whole view once. ``view()`` always equals ``order_group`` of
    the same root and posts.
    """

    __slots__ = (
        "_author_top",
        "_by_id",
        "_dirty",
        "_entries",
        "_group_id",
        "_missing",
        "_named",
        "_recomputations",
        "_root",
        "_sinks",
        "_view",
    )

    def __init__(self, group_id: bytes, root: GroupRoot | None = None) -> None:
        if not is_id(group_id):
            raise LocalError("a group id is 32 bytes", code="bad-msgref")
        if root is not None and root.id != group_id:
            raise LocalError("the root is not this group's", code="wrong-group")
        self._group_id = group_id
        self._root = root
        self._by_id: dict[bytes, GroupMessage] = {}
        self._entries: list[Entry] = []
        self._sinks: set[bytes] = set()
        self._named: set[bytes] = set()
        self._author_top: dict[bytes, tuple[int, list[bytes]]] = {}
        self._missing: set[MsgRef] = set()
        self._dirty = False
        self._view: GroupView | None = None
        self._recomputations = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._by_id

    @property
    def root(self) -> GroupRoot | None:
        return self._root

    @property
    def recomputations(self) -> int:
        """How many times the whole view was recomputed (the slow path), for tests and benches."""
        return self._recomputations

    def set_root(self, root: GroupRoot) -> None:
        if root.id != self._group_id:
            raise LocalError("the root is not this group's", code="wrong-group")
        if self._root is None:
            self._root = root
            self._dirty = True
            self._view = None
        elif self._root != root:
            raise LocalError("two different roots share one id", code="id-conflict")

    def update(self, messages: Iterable[GroupMessage]) -> None:
        for m in messages:
            self.add(m)

    def add(self, msg: GroupMessage) -> None:
        """Add one post (a duplicate is ignored); LocalError as for ``order_group``."""
        _check_group(self._group_id, msg)
        old = self._by_id.get(msg.id)
        if old is not None:
            if old != msg:
                raise LocalError("two different messages share one id", code="id-conflict")
            return
        self._by_id[msg.id] = msg
        self._view = None
        if self._dirty or not self._place(msg):
            self._dirty = True

    def _place(self, m: GroupMessage) -> bool:
        """Insert ``m`` if no present post follows it, so that the rest cannot change
        (spec/view.md §6); False if the view must be recomputed instead."""
        if m.id in self._named:
            return False
        top = self._author_top.get(m.author)
        if top is not None and top[0] >= m.seq:
            return False
        named = [*m.refs] if m.reply is None else [*m.refs, m.reply]
        preds: set[bytes] = set(top[1]) if top is not None else set()
        for r in named:
            if r.id == m.id:
                return False
            if r.id in self._by_id:
                preds.add(r.id)
        # Kahn's algorithm on the old posts runs unchanged until m is ready (after its last
        # predecessor); m is then picked before the first later post with a greater key.
        # The scan is bounded so that posts arriving far out of order cost O(1) each and one
        # recomputation, not a scan of the whole list each.
        entries = self._entries
        key = (m.timestamp, m.id)
        at = len(entries)
        stop = max(-1, len(entries) - 1 - _SCAN_LIMIT)
        for i in range(len(entries) - 1, stop, -1):
            other = entries[i].message
            if other.id in preds:
                break
            if (other.timestamp, other.id) > key:
                at = i
        else:
            if stop != -1:
                return False
        root_id = self._root.id if self._root is not None else None
        missing = sorted({r for r in m.refs if r.id not in self._by_id and r.id != root_id})
        reply_missing = (
            m.reply is not None and m.reply.id not in self._by_id and m.reply.id != root_id
        )
        entries.insert(at, Entry(m, tuple(missing), reply_missing))
        self._sinks -= preds
        self._sinks.add(m.id)
        self._note(m)
        return True

    def _note(self, m: GroupMessage) -> None:
        root_id = self._root.id if self._root is not None else None
        for r in (*m.refs, m.group) if m.reply is None else (*m.refs, m.group, m.reply):
            self._named.add(r.id)
            if r.id not in self._by_id and r.id != root_id:
                self._missing.add(r)
        top = self._author_top.get(m.author)
        if top is None or top[0] < m.seq:
            self._author_top[m.author] = (m.seq, [m.id])
        elif top[0] == m.seq:
            top[1].append(m.id)

    def _refresh(self) -> None:
        view = _compute(self._root, self._group_id, self._by_id)
        self._recomputations += 1
        self._entries = list(view.entries)
        self._sinks = {r.id for r in view.tips} if self._by_id else set()
        self._named = set()
        self._author_top = {}
        self._missing = set()
        for m in self._by_id.values():
            self._note(m)
        self._dirty = False
        self._view = view

    def view(self) -> GroupView:
        if self._dirty:
            self._refresh()
        if self._view is None:
            group_id = self._group_id if (self._root is not None or self._by_id) else None
            tip_refs = (
                tuple(sorted((self._by_id[i].ref for i in self._sinks), key=_ID))
                if self._by_id
                else ((self._root.ref,) if self._root is not None else ())
            )
            self._view = GroupView(
                group_id,
                self._root,
                tuple(self._entries),
                tip_refs,
                _group_by_author(self._missing),
            )
        return self._view

    def entries(self) -> tuple[Entry, ...]:
        return self.view().entries

    def tips(self) -> tuple[MsgRef, ...]:
        return self.view().tips

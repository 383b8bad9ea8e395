"""Group conversations on a node (spec/view.md): create, post, reply, list, view.

The store indexes every group root and group post as it is appended (store/groups.py), whether
the node published it or ingested it from a peer or a stick. ``GroupBook`` keeps, per group, a
``core.view.GroupIndex`` and the arrival number (rx) of the newest post it has taken in; a view
first takes in only the posts that arrived since (one indexed query), so adding a message
updates the view incrementally: appended in O(refs) when it follows every tip, inserted after a
short scan when it is concurrent, and only a post that something present already names (a gap
filled by a late feed) costs one recomputation.

`show`, `post` and `chat` read the group's stored display order instead (feedlog/group_order.py),
which a fresh process brings up to date with a few queries: it needs no full load. A new post's
``refs`` are the tips of what the author holds (spec/view.md §3), so nobody computes them by
hand. The JSON shape of a shown group is built here, once, for the CLI and for library users.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feedlog.core.errors import LocalError
from feedlog.core.group_content import group_content, post_content
from feedlog.core.ids import FeedId, MsgId, feed_id_text, msg_id_text
from feedlog.core.message import Message
from feedlog.core.view import GroupIndex, GroupView, MsgRef
from feedlog.group_order import OrderState, catch_up, display, unpack_flags
from feedlog.store.base import Store
from feedlog.store.groups import GroupSummary, unpack_ref

if TYPE_CHECKING:
    from feedlog.node import Node

MAX_TITLE = 200


@dataclass
class _Cached:
    index: GroupIndex
    rx: int = 0  # newest post taken in


class GroupBook:
    """Per-node cache of group views, fed from the store's group index."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[bytes, _Cached] = {}

    async def load(self, group_id: bytes) -> tuple[GroupIndex, int]:
        """The group's index brought up to date with the store, and the newest rx in it."""
        cached = self._cache.get(group_id)
        if cached is None:
            cached = self._cache[group_id] = _Cached(GroupIndex(group_id))
        index = cached.index
        if index.root is None:
            root = await self._store.group_root(group_id)
            if root is not None:
                index.set_root(root)
        new = await self._store.group_posts(group_id, cached.rx)
        for _, post in new:
            index.add(post)
        if new:
            cached.rx = new[-1][0]
        return index, cached.rx

    async def view(self, group_id: bytes) -> GroupView:
        return (await self.load(group_id))[0].view()


def _check_text(text: str, what: str) -> None:
    if not text.strip() or not all(c.isprintable() or c in "\n\t" for c in text):
        raise LocalError(f"the {what} must be printable and not empty", code="bad-content")


async def create_group(node: Node, title: str, members: Iterable[FeedId] | None = None) -> Message:
    _check_text(title, "title")
    if len(title) > MAX_TITLE:
        raise LocalError(f"a title is at most {MAX_TITLE} characters", code="bad-content")
    listed = None
    if members is not None:
        listed = list(dict.fromkeys([node.id, *members]))  # the creator first, no repeats
    return await node.publish(group_content(title, listed))


async def group_ref(node: Node, group_id: bytes) -> tuple[MsgRef, OrderState]:
    """The root's msgref (from the root, or from the posts that name it) and the group's
    stored order; LocalError ``unknown-group`` when the node holds neither root nor post."""
    state = await catch_up(node.store, group_id)
    root = await node.store.group_root(group_id)
    if root is not None:
        return root.ref, state
    for r in state.missing:
        if r.id == group_id:
            return r, state
    raise LocalError(f"no group {msg_id_text(group_id)} here: neither its root nor any post",
                     code="unknown-group")


async def post(node: Node, group_id: bytes, text: str, reply: MsgRef | None = None,
               *, timestamp: int | None = None) -> Message:
    """Post in a group; ``refs`` are the tips this node holds (spec/view.md §3)."""
    _check_text(text, "text")
    ref, state = await group_ref(node, group_id)
    return await node.publish(post_content(ref, state.tips or [ref], text, reply),
                              timestamp=timestamp)


async def reply(node: Node, msg_id: MsgId, text: str, *, timestamp: int | None = None
                ) -> Message:
    """Answer a group post or a group root, in its group."""
    target = await node.store.group_post(msg_id)
    if target is not None:
        return await post(node, target.group.id, text, target.ref, timestamp=timestamp)
    root = await node.store.group_root(msg_id)
    if root is not None:
        return await post(node, root.id, text, root.ref, timestamp=timestamp)
    held = await node.store.get(msg_id) is not None
    raise LocalError(
        f"{msg_id_text(msg_id)} is " + ("not a group message" if held else "not held here"),
        code="not-in-group" if held else "unknown-message")


async def groups(node: Node, *, everything: bool = False) -> list[GroupSummary]:
    """The groups this node created, is listed in or posted in (all known ones with
    ``everything``), most recent activity first."""
    rows = await node.store.group_summaries(node.id)
    if not everything:
        rows = [g for g in rows if g.member or g.posted]
    return sorted(rows, key=lambda g: (-(g.last_timestamp or 0), g.group_id))


async def settle(store: Store) -> list[bytes]:
    """Place every post that is not yet in its group's stored order (group_order.catch_up for
    each such group); returns those groups. Run at the end of a sync or an import, so the
    first `show` after a large one reads an order that is ready instead of building it."""
    groups = await store.unplaced_groups()
    for group_id in groups:
        await catch_up(store, group_id)
    return groups


async def mark_read(node: Node, group_id: bytes) -> None:
    state = await catch_up(node.store, group_id)
    if state.rx:
        await node.store.set_group_read(group_id, state.rx)


# --- JSON -------------------------------------------------------------------------------------


def _no_text(_: bytes) -> None:
    return None


def _ref_json(r: MsgRef) -> dict[str, Any]:
    return {"author": feed_id_text(r.author), "seq": r.seq, "id": msg_id_text(r.id)}


async def names_for(node: Node, authors: Iterable[bytes]) -> dict[bytes, str | None]:
    return {a: await node.name_of(FeedId(a)) for a in set(authors)}


async def show_json(node: Node, group_id: bytes, *, mark: bool = True,
                    with_ids: bool = True) -> dict[str, Any]:
    """A group as `feedlog show --json` prints it (README "Group conversations"), read from the
    stored order (feedlog/group_order.py); marks it read up to what is shown unless ``mark`` is
    False. Without ``with_ids`` the entries' ``id`` and ``reply`` are None: the text view does
    not print them, and their text form is the most expensive part of a large group."""
    id_text = msg_id_text if with_ids else _no_text
    state, rows = await display(node.store, group_id)
    root = await node.store.group_root(group_id)
    if root is None and not rows:
        raise LocalError(f"no group {msg_id_text(group_id)} here: neither its root nor any post",
                         code="unknown-group")
    per_author: dict[bytes, list[MsgRef]] = {}
    for r in sorted(state.missing):
        per_author.setdefault(r.author, []).append(r)
    authors = {row.author for row in rows} | set(per_author)
    if root is not None:
        authors.add(root.author)
    names = await names_for(node, authors)
    texts = {a: feed_id_text(a) for a in authors}
    following = set(await node.following())
    number = {row.id: n for n, row in enumerate(rows, 1)}
    if root is not None:
        number[root.id] = 0
    entries = []
    for n, row in enumerate(rows, 1):
        missing_refs, reply_missing, ignored = unpack_flags(row.flags)
        reply_id = None if row.reply is None else unpack_ref(row.reply).id
        entries.append({
            "n": n, "id": id_text(row.id), "author": texts[row.author],
            "name": names[row.author], "seq": row.seq, "timestamp": row.timestamp,
            "text": row.text,
            "reply": None if reply_id is None else id_text(reply_id),
            "reply_n": None if reply_id is None else number.get(reply_id),
            "missing_refs": [_ref_json(x) for x in missing_refs],
            "reply_missing": reply_missing,
            "ignored_refs": [_ref_json(x) for x in ignored],
        })
    missing = []
    for author, refs in sorted(per_author.items()):
        info = await node.feed_info(FeedId(author))
        missing.append({
            "author": texts[author], "name": names[author],
            "max_seq": max(x.seq for x in refs), "held_seq": info.seq if info else 0,
            "following": author in following, "refs": [_ref_json(x) for x in refs],
        })
    if mark and state.rx:
        await node.store.set_group_read(group_id, state.rx)
    return {
        "group": msg_id_text(group_id),
        "title": root.title if root else None,
        "root": None if root is None else {
            "id": msg_id_text(root.id), "author": texts[root.author],
            "name": names[root.author], "seq": root.seq, "timestamp": root.timestamp,
            "members": None if root.members is None else [feed_id_text(m) for m in root.members],
        },
        "entries": entries,
        "tips": [msg_id_text(r.id) for r in state.tips],
        "complete": root is not None and not state.missing,
        "missing_count": len(state.missing),
        "missing": missing,
    }

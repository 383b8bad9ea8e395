"""The content of group roots and group posts (spec/view.md §2).

A root is ``{"type": "group", "title": text, "members": [feed id, ...]}`` (members optional); a
post in a group is ``{"type": "post", "text": text, "group": msgref, "refs": [msgref, ...],
"reply": msgref}`` (reply optional), where a msgref is the array ``[author, seq, id]``. As for
every known content type, content with wrong fields is still a valid feed message, but
views ignore it: the readers below return None rather than raise. Unknown extra keys are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from feedlog.core.view import GroupMessage, GroupRoot, MsgRef, is_id, is_seq

GROUP_TYPE = "group"
POST_TYPE = "post"


def _ref_from_content(value: object) -> MsgRef | None:
    if not isinstance(value, list | tuple) or len(value) != 3:
        return None
    author, seq, msg_id = value
    if not (is_id(author) and is_seq(seq) and is_id(msg_id)):
        return None
    return MsgRef(author, seq, msg_id)


def _ref_to_content(ref: MsgRef) -> list[Any]:
    return [ref.author, ref.seq, ref.id]


def group_content(title: str, members: Iterable[bytes] | None = None) -> dict[str, Any]:
    """The content of a group root (spec/view.md §2)."""
    content: dict[str, Any] = {"type": GROUP_TYPE, "title": title}
    if members is not None:
        content["members"] = [bytes(m) for m in members]
    return content


def post_content(
    group: MsgRef, refs: Iterable[MsgRef], text: str, reply: MsgRef | None = None
) -> dict[str, Any]:
    """The content of a post in a group (spec/view.md §2); ``refs`` normally ``tips(...)``."""
    content: dict[str, Any] = {
        "type": POST_TYPE,
        "text": text,
        "group": _ref_to_content(group),
        "refs": [_ref_to_content(r) for r in refs],
    }
    if reply is not None:
        content["reply"] = _ref_to_content(reply)
    return content


def root_from_content(
    msg_id: bytes, author: bytes, seq: int, timestamp: int, content: Mapping[str, Any]
) -> GroupRoot | None:
    """The group a message creates, or None if its content is not a well-formed group root."""
    if content.get("type") != GROUP_TYPE or type(content.get("title")) is not str:
        return None
    members = content.get("members")
    if members is not None:
        if not isinstance(members, list) or not all(is_id(m) for m in members):
            return None
        members = tuple(members)
    return GroupRoot(msg_id, author, seq, timestamp, content["title"], members)


def message_from_content(
    msg_id: bytes, author: bytes, seq: int, timestamp: int, content: Mapping[str, Any]
) -> GroupMessage | None:
    """The group post a message is, or None if its content is not a well-formed group post
    (a plain post without ``group`` included): views ignore such messages."""
    if content.get("type") != POST_TYPE or type(content.get("text")) is not str:
        return None
    group = _ref_from_content(content.get("group"))
    raw_refs = content.get("refs")
    if group is None or not isinstance(raw_refs, list):
        return None
    refs: list[MsgRef] = []
    for raw in raw_refs:
        ref = _ref_from_content(raw)
        if ref is None:
            return None
        refs.append(ref)
    reply = None
    if "reply" in content:
        reply = _ref_from_content(content["reply"])
        if reply is None:
            return None
    return GroupMessage(msg_id, author, seq, timestamp, group, tuple(refs), reply, content["text"])

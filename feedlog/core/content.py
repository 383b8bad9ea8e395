"""Message content: the structural rule every content obeys, and the known types
(spec/feed.md §6).

Structural rule (checked by every receiver, part of validation): the content bytes are one
strict canonical CBOR map (encoding.py) with a text ``type`` matching ``[a-z][a-z0-9._-]{0,63}``.

Known types are interpreted by views; a message of a known type whose fields are wrong is still
a valid feed message (the chain must never break over content), but views ignore it, exactly as
they ignore unknown types. A node checks the schema of known types before publishing, so it
never writes such a message itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feedlog.core import encoding
from feedlog.core.errors import InvalidMessage, LocalError
from feedlog.core.ids import ID_SIZE, FeedId

TYPE_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}\Z")
MAX_NAME_LENGTH = 64
CONTACT_TYPES = ("follow", "unfollow", "block", "unblock")


def check_content(body: bytes) -> dict[str, Any]:
    """The structural rule: canonical CBOR map with a valid text ``type``."""
    value = encoding.decode_strict(body, what="content")
    if not isinstance(value, dict):
        raise InvalidMessage("content is not a map", code="bad-content")
    t = value.get("type")
    if not isinstance(t, str) or not TYPE_PATTERN.match(t):
        raise InvalidMessage("content has no valid text 'type'", code="bad-content")
    return value


@dataclass(frozen=True, slots=True)
class Post:
    text: str


@dataclass(frozen=True, slots=True)
class Contact:
    """follow / unfollow / block / unblock of ``feed``."""

    kind: str
    feed: FeedId


@dataclass(frozen=True, slots=True)
class About:
    name: str


Known = Post | Contact | About


def interpret(value: Mapping[str, Any] | None) -> Known | None:
    """The typed meaning of a content, or None for unknown, malformed or absent content."""
    if value is None:
        return None
    t = value.get("type")
    if t == "post":
        text = value.get("text")
        return Post(text) if isinstance(text, str) else None
    if t in CONTACT_TYPES:
        feed = value.get("feed")
        if isinstance(feed, bytes) and len(feed) == ID_SIZE:
            return Contact(str(t), FeedId(feed))
        return None
    if t == "about":
        name = value.get("name")
        if isinstance(name, str) and 1 <= len(name) <= MAX_NAME_LENGTH and name.isprintable():
            return About(name)
        return None
    return None


def post(text: str) -> dict[str, Any]:
    return {"type": "post", "text": text}


def contact(kind: str, feed: bytes) -> dict[str, Any]:
    if kind not in CONTACT_TYPES:
        raise LocalError(f"unknown contact kind {kind!r}", code="bad-content")
    return {"type": kind, "feed": bytes(feed)}


def about(name: str) -> dict[str, Any]:
    return {"type": "about", "name": name}


def check_known(value: Mapping[str, Any]) -> None:
    """Refuse to publish a known type whose fields views would ignore."""
    t = value.get("type")
    if t in ("post", "about", *CONTACT_TYPES) and interpret(value) is None:
        if t == "about":
            raise LocalError(
                f"a name is 1 to {MAX_NAME_LENGTH} printable characters", code="bad-content"
            )
        raise LocalError(f"content of type {t!r} has missing or wrong fields", code="bad-content")

"""Text forms of feed ids and message ids (spec/feed.md §2).

A feed id is the author's 32-byte Ed25519 public key; a message id is a 32-byte hash. Their text
form is a prefix (``feed_`` or ``msg_``) followed by the RFC 4648 base32 encoding of the 32 bytes
in lower case without padding: 52 characters from ``a-z2-7``. The form needs no quoting in shells,
URLs or FAT file names, and stays unambiguous when case is lost: parsers accept any case. The last
character carries 4 unused bits, which must be zero, so every id has exactly one text form.
"""

from __future__ import annotations

import base64
import binascii
from typing import NewType

from feedlog.core.errors import LocalError

FeedId = NewType("FeedId", bytes)
MsgId = NewType("MsgId", bytes)

FEED_PREFIX = "feed_"
MSG_PREFIX = "msg_"
ID_SIZE = 32
_B32_LEN = 52


def _to_text(prefix: str, raw: bytes) -> str:
    if len(raw) != ID_SIZE:
        raise LocalError(f"an id is {ID_SIZE} bytes, not {len(raw)}", code="bad-id")
    return prefix + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _from_text(prefix: str, kind: str, text: str) -> bytes:
    t = text.strip().lower()
    if not t.startswith(prefix):
        raise LocalError(f"not a {kind} (it must start with {prefix!r}): {text!r}", code="bad-id")
    body = t[len(prefix) :]
    if len(body) != _B32_LEN:
        raise LocalError(
            f"not a {kind}: expected {_B32_LEN} base32 characters after {prefix!r}, got "
            f"{len(body)}",
            code="bad-id",
        )
    try:
        raw = base64.b32decode(body.upper() + "====")
    except (binascii.Error, ValueError):
        raise LocalError(f"not a {kind}: invalid base32 in {text!r}", code="bad-id") from None
    if _to_text(prefix, raw) != prefix + body:
        raise LocalError(f"not a {kind}: non-canonical final character in {text!r}", code="bad-id")
    return raw


def feed_id_text(raw: bytes) -> str:
    return _to_text(FEED_PREFIX, raw)


def msg_id_text(raw: bytes) -> str:
    return _to_text(MSG_PREFIX, raw)


def parse_feed_id(text: str) -> FeedId:
    """Parse a feed id in text form (any case); LocalError ``bad-id`` otherwise."""
    return FeedId(_from_text(FEED_PREFIX, "feed id", text))


def parse_msg_id(text: str) -> MsgId:
    """Parse a message id in text form (any case); LocalError ``bad-id`` otherwise."""
    return MsgId(_from_text(MSG_PREFIX, "message id", text))

"""Validation of received messages (spec/feed.md §7), pure and ordered cheapest check first.

1. size                 ``too-large``
2. message decode       ``malformed`` ``bad-cbor-type`` ``trailing-bytes`` ``non-canonical``
3. message shape        ``bad-shape``
4. header decode        as 2
5. header fields        ``unknown-version`` ``bad-shape`` ``seq-zero`` ``bad-previous``
                        ``too-large`` (declared content size)
6. content              ``content-mismatch`` then as 2, then ``bad-content``
7. chain vs. the feed   ``wrong-author``; ``duplicate`` and ``seq-gap`` (benign);
                        ``fork`` / ``wrong-previous`` (only after 8 passes)
8. signature            ``bad-signature``

Steps 1-6 need only the bytes (``decode_message``); step 7 needs the receiver's view of the feed
(``link``); step 8 is the expensive one and is kept separate (``check_signature``) so a shell can
batch it across cores, and so a later version can check the chain first and signatures lazily.
``validate`` runs all of them in order for one message.

``decode_message`` first tries ``_parse_fast``, which reads the fixed layout of spec/feed.md §4
directly (byte-exact heads, no general CBOR decoder) and accepts a message only when every field
is in its shortest form, every check of steps 1-5 and 6 passes, and no byte is left over: that
is, only when ``decode_message_reference`` (the general, readable definition: decode, check the
subset, compare with the canonical size) would accept it with the same fields. Any other input
goes to the reference path, which alone chooses the error code, so the fast path changes speed,
never answers (tests/core/test_fastpath.py checks that on random and mutated inputs).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from hashlib import sha256

from feedlog.core import encoding
from feedlog.core.content import TYPE_PATTERN, check_content
from feedlog.core.crypto import KEY_SIZE, SIGNATURE_SIZE, verify, verify_many
from feedlog.core.errors import InvalidMessage
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import (
    CONTENT_TAG,
    ID_TAG,
    MAX_MESSAGE_SIZE,
    MAX_SEQ,
    MAX_TIMESTAMP,
    SIGN_TAG,
    VERSION,
    FeedState,
    Message,
    content_hash,
    message_id,
)

HEADER_FIELDS = 7


def _bad(what: str, code: str = "bad-shape", *, fatal: bool = True) -> InvalidMessage:
    return InvalidMessage(what, code=code, fatal=fatal)


def _is_uint(v: object, limit: int) -> bool:
    return type(v) is int and 0 <= v <= limit


def decode_message(raw: bytes) -> Message:
    """Steps 1-6: everything that can be checked from the bytes alone."""
    try:
        msg = _parse_fast(raw)
    except IndexError:
        msg = None
    return decode_message_reference(raw) if msg is None else msg


_HEADER_START = bytes([0x87, VERSION, 0x58, KEY_SIZE])  # array(7), 1, bstr(32) head
_SIGNATURE_HEAD = bytes([0x58, SIGNATURE_SIZE])


def _uint(d: bytes, p: int) -> tuple[int, int]:
    """A uint in its shortest form at ``d[p]``: (value, next position); (-1, p) otherwise."""
    b = d[p]
    if b < 24:
        return b, p + 1
    if b == 24:
        n = d[p + 1]
        return (n, p + 2) if n >= 24 else (-1, p)
    if b == 25:
        n = int.from_bytes(d[p + 1 : p + 3])
        return (n, p + 3) if n >= 0x100 else (-1, p)
    if b == 26:
        n = int.from_bytes(d[p + 1 : p + 5])
        return (n, p + 5) if n >= 0x10000 else (-1, p)
    if b == 27:
        n = int.from_bytes(d[p + 1 : p + 9])
        return (n, p + 9) if n >= 0x100000000 else (-1, p)
    return -1, p


def _bstr_head(d: bytes, p: int, base: int = 0x40) -> tuple[int, int]:
    """A byte string head (``base`` 0x40; 0x60 for a text string) of a length below 65536, in
    its shortest form at ``d[p]``: (length, start); (-1, p) otherwise."""
    b = d[p] - base
    if 0 <= b < 24:
        return b, p + 1
    if b == 24:
        n = d[p + 1]
        return (n, p + 2) if n >= 24 else (-1, p)
    if b == 25:
        n = int.from_bytes(d[p + 1 : p + 3])
        return (n, p + 3) if n >= 0x100 else (-1, p)
    return -1, p


def _parse_fast(raw: bytes) -> Message | None:
    """The common, valid message, or None: see the module comment. May raise IndexError."""
    end = len(raw)
    if end > MAX_MESSAGE_SIZE or raw[0] != 0x83:
        return None
    if raw[1] == 0x58 and raw[2] >= 24:  # the usual header length form, read in place
        p = 3 + raw[2]
        header = raw[3:p]
    else:
        n, p = _bstr_head(raw, 1)
        if n < 0:
            return None
        header = raw[p : p + n]
        p += n
    if raw[p : p + 2] != _SIGNATURE_HEAD:
        return None
    signature = raw[p + 2 : p + 66]
    p += 66
    b = raw[p]
    if b == 0x58:  # content of 24 .. 255 bytes
        n = raw[p + 1]
        if n < 24:
            return None
        content = raw[p + 2 : p + 2 + n]
        p += 2 + n
    elif b == 0xF6:
        content = None
        p += 1
    else:
        n, p = _bstr_head(raw, p)
        if n < 0:
            return None
        content = raw[p : p + n]
        p += n
    if p != end:  # also catches any short slice above: positions advanced past the end
        return None

    h = header
    if h[:4] != _HEADER_START:
        return None
    author = h[4:36]
    b = h[36]
    if b < 24:
        seq, p = b, 37
    elif b == 0x19:  # seq 256 .. 65535
        seq, p = (h[37] << 8) | h[38], 39
        if seq < 0x100:
            return None
    elif b == 0x1A:  # seq 65536 .. 2^32 - 1
        seq, p = int.from_bytes(h[37:41]), 41
        if seq < 0x10000:
            return None
    else:
        seq, p = _uint(h, 36)
    if not 0 < seq <= MAX_SEQ:
        return None
    if h[p] == 0xF6:
        if seq != 1:
            return None
        previous = None
        p += 1
    else:
        if seq == 1 or h[p : p + 2] != b"\x58\x20":
            return None
        previous = h[p + 2 : p + 34]
        p += 34
    if h[p] == 0x1B:  # a timestamp in ms since 1970 takes the 8-byte form
        timestamp = int.from_bytes(h[p + 1 : p + 9])
        if timestamp < 0x100000000:
            return None
        p += 9
    else:
        timestamp, p = _uint(h, p)
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        return None
    b = h[p]
    if b == 0x18:  # a content size of 24 .. 255 bytes
        size = h[p + 1]
        if size < 24:
            return None
        p += 2
    elif b == 0x19:  # 256 .. 65535 bytes
        size = (h[p + 1] << 8) | h[p + 2]
        if size < 0x100:
            return None
        p += 3
    else:
        size, p = _uint(h, p)
    if not 0 <= size <= MAX_MESSAGE_SIZE or h[p : p + 2] != b"\x58\x20":
        return None
    digest = h[p + 2 : p + 34]
    if p + 34 != len(h):
        return None

    # Any value: the general parser's result is checked below. (Declared: compiled
    # (feedlog/native.py), a variable typed by its first value checks every later one.)
    value: encoding.Value = None
    if content is not None:
        if len(content) != size or sha256(CONTENT_TAG + content).digest() != digest:
            return None
        value = _post(content)
        if value is None:
            try:
                value, stop = encoding.parse_canonical(content)
            except encoding.NotProven:
                stop = -1
            if stop != len(content) or type(value) is not dict:
                value = check_content(content)  # the reference path and its error codes
            else:
                t = value.get("type")
                if type(t) is not str or not TYPE_PATTERN.match(t):
                    value = check_content(content)
    return Message(raw, MsgId(sha256(ID_TAG + header).digest()), header, signature,
                   FeedId(author), seq,
                   None if previous is None else MsgId(previous), timestamp, size, digest,
                   content, value)


_POST_HEAD = b"\xa2\x64text"  # map(2), "text": the canonical start of a plain post
_POST_TAIL = b"\x64type\x64post"  # "type": "post" ("text" sorts first): its end


def _post(c: bytes) -> dict[str, str] | None:
    """The value of the commonest content, a plain post ``{"type": "post", "text": T}``, when
    ``c`` is exactly its canonical encoding; None for anything else (valid or not), which then
    takes the general path. A text of up to 65535 bytes in its shortest head, strict UTF-8, and
    nothing before or after: one encoding per value, so only canonical input is accepted."""
    if not (c.startswith(_POST_HEAD) and c.endswith(_POST_TAIL)):  # so len(c) >= 16
        return None
    n, start = _bstr_head(c, 6, 0x60)  # the text's head, right after the key "text"
    end = len(c) - len(_POST_TAIL)
    if n < 0 or start + n != end:
        return None
    try:
        return {"text": c[start:end].decode("utf-8"), "type": "post"}
    except UnicodeDecodeError:
        return None


def stored_fields(raw: bytes) -> tuple[MsgId, FeedId, int] | None:
    """(id, author, seq) of a stored message, read from its header alone: what a store files
    the message under, and checks its rows against (a message whose content or signature was
    damaged keeps its id). Nothing else is checked. None when ``raw`` does not begin as a
    message (spec/feed.md §4) does."""
    try:
        if raw[0] != 0x83:
            return None
        n, p = _bstr_head(raw, 1)
        if n < 37:  # (and never a slice of negative length: compiled, that is a SystemError)
            return None
        header = raw[p : p + n]
        if len(header) != n or header[:4] != _HEADER_START:
            return None
        seq, _ = _uint(header, 36)
    except IndexError:
        return None
    if seq <= 0:
        return None
    return message_id(header), FeedId(header[4:36]), seq


def decode_message_reference(raw: bytes) -> Message:
    """``decode_message`` by the general path only (the definition the fast path must match)."""
    if len(raw) > MAX_MESSAGE_SIZE:
        raise _bad(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_SIZE}", "too-large")
    outer = encoding.decode_fixed(raw, what="message")
    if type(outer) is not list or len(outer) != 3:
        raise _bad("a message is an array of 3 items")
    header, signature, content = outer
    if type(header) is not bytes:
        raise _bad("header is not a byte string")
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise _bad("signature is not 64 bytes")
    if content is not None and type(content) is not bytes:
        raise _bad("content is neither bytes nor null")

    fields = encoding.loads_or_malformed(header, what="header")
    if type(fields) is not list or not fields:
        raise _bad("header is not a non-empty array")
    if fields[0] != VERSION or type(fields[0]) is not int:
        raise _bad(f"unknown message version {fields[0]!r}", "unknown-version")
    encoding.check_fixed(header, fields, what="header")
    if len(fields) != HEADER_FIELDS:
        raise _bad(f"a version {VERSION} header has {HEADER_FIELDS} fields")
    _, author, seq, previous, timestamp, size, digest = fields
    if type(author) is not bytes or len(author) != KEY_SIZE:
        raise _bad("author is not 32 bytes")
    if not _is_uint(seq, MAX_SEQ):
        raise _bad("seq is not an unsigned integer below 2^63")
    if seq == 0:
        raise _bad("seq starts at 1", "seq-zero")
    if seq == 1:
        if previous is not None:
            raise _bad("the first message has a previous", "bad-previous")
    elif type(previous) is not bytes or len(previous) != KEY_SIZE:
        raise _bad("previous is not a 32-byte id", "bad-previous")
    if not _is_uint(timestamp, MAX_TIMESTAMP):
        raise _bad("timestamp is not an unsigned integer below 2^63")
    if not _is_uint(size, MAX_SEQ):
        raise _bad("content size is not an unsigned integer")
    if type(digest) is not bytes or len(digest) != KEY_SIZE:
        raise _bad("content hash is not 32 bytes")
    if size > MAX_MESSAGE_SIZE:
        raise _bad(f"declared content size {size} exceeds {MAX_MESSAGE_SIZE}", "too-large")

    value = None
    if content is not None:
        if len(content) != size or content_hash(content) != digest:
            raise _bad("content does not match the size and hash it was signed with",
                       "content-mismatch")
        value = check_content(content)

    return Message(
        raw=raw,
        id=message_id(header),
        header=header,
        signature=signature,
        author=FeedId(author),
        seq=seq,
        previous=None if previous is None else MsgId(previous),
        timestamp=timestamp,
        content_size=size,
        content_hash=digest,
        content=content,
        value=value,
    )


class Link(enum.Enum):
    """Where a message stands relative to the receiver's state of its feed."""

    APPEND = "append"  # the next message: seq + 1 with previous = head
    DUPLICATE = "duplicate"  # the head itself
    GAP = "gap"  # beyond seq + 1: something is missing in between
    FORK = "fork"  # same seq as the head, different id
    WRONG_PREVIOUS = "wrong-previous"  # seq + 1, but previous is not the head
    OLDER = "older"  # below the head: compare with the stored message of that seq


def link(state: FeedState, msg: Message) -> Link:
    """Step 7. Raises ``wrong-author``; otherwise says how ``msg`` relates to ``state``."""
    if msg.author != state.author:
        raise _bad("message is by another author than the feed", "wrong-author")
    if msg.seq == state.seq + 1:
        return Link.APPEND if msg.previous == state.head else Link.WRONG_PREVIOUS
    if msg.seq > state.seq + 1:
        return Link.GAP
    if msg.seq == state.seq:
        return Link.DUPLICATE if msg.id == state.head else Link.FORK
    return Link.OLDER


def check_signature(msg: Message) -> None:
    """Step 8. Raises ``bad-signature``."""
    if not verify(msg.author, SIGN_TAG, msg.header, msg.signature):
        raise _bad("signature does not verify", "bad-signature")


def signature_items(msgs: Sequence[Message]) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    """What step 8 checks for each message, as ``verify_many`` takes it: (tag, items)."""
    return SIGN_TAG, [(m.author, m.header, m.signature) for m in msgs]


def signatures_valid(msgs: Sequence[Message]) -> list[bool]:
    """Step 8 for many messages: whether each signature verifies (no exception per message)."""
    return verify_many(*signature_items(msgs))


def validate(state: FeedState, raw: bytes) -> Message:
    """All steps for one message against ``state``; returns the message when it may be appended.

    Benign outcomes raise InvalidMessage with ``fatal=False`` (``duplicate``, ``seq-gap``, and
    ``older`` for a message below the head, which the caller must compare with its stored copy).
    A fork or a wrong previous is reported only for a correctly signed message: a forged one is
    ``bad-signature``, so nobody can make a feed look forked without its author's key.
    """
    msg = decode_message(raw)
    where = link(state, msg)
    if where is Link.APPEND:
        check_signature(msg)
        return msg
    if where is Link.DUPLICATE:
        raise _bad("already have this message", "duplicate", fatal=False)
    if where is Link.GAP:
        raise _bad(f"expected seq {state.seq + 1}, got {msg.seq}", "seq-gap", fatal=False)
    if where is Link.OLDER:
        raise _bad(f"seq {msg.seq} is below the head {state.seq}", "older", fatal=False)
    check_signature(msg)
    at = msg.seq if where is Link.FORK else state.seq
    raise _bad(f"author signed two conflicting messages at seq {at}", where.value)

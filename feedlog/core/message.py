"""The signed message (spec/feed.md §4-5).

A message travels and is stored as the canonical CBOR array

    [header: bytes, signature: bytes(64), content: bytes | null]

where ``header`` is itself the canonical CBOR array

    [version = 1, author: bytes(32), seq: uint, previous: bytes(32) | null,
     timestamp: uint, content_size: uint, content_hash: bytes(32)]

The author signs ``SIGN_TAG || header``; the message id is ``sha256(ID_TAG || header)``; the
content hash is ``sha256(CONTENT_TAG || content)``. The signature therefore covers the content
only through its hash and size (the bamboo / Gabby Grove design): a node may later drop a
message's content locally (content = null) and the feed still verifies end to end.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from feedlog.core import encoding
from feedlog.core.content import TYPE_PATTERN, check_known
from feedlog.core.crypto import Keypair, sha256
from feedlog.core.errors import InvalidMessage, LocalError
from feedlog.core.ids import FeedId, MsgId

VERSION = 1
SIGN_TAG = b"feedlog/msg/v1\x00"
ID_TAG = b"feedlog/msg-id/v1\x00"
CONTENT_TAG = b"feedlog/content/v1\x00"
MAX_MESSAGE_SIZE = 8192
MAX_SEQ = 2**63 - 1
MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True, slots=True)
class FeedState:
    """How far a feed has got: the author, the latest seq (0 = empty) and its id."""

    author: FeedId
    seq: int = 0
    head: MsgId | None = None


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """A decoded message. ``raw`` is the exact byte form; every other field is derived from it."""

    raw: bytes
    id: MsgId
    header: bytes
    signature: bytes
    author: FeedId
    seq: int
    previous: MsgId | None
    timestamp: int
    content_size: int
    content_hash: bytes
    content: bytes | None
    value: dict[str, Any] | None

    def __init__(self, raw: bytes, id: MsgId, header: bytes, signature: bytes,
                 author: FeedId, seq: int, previous: MsgId | None, timestamp: int,
                 content_size: int, content_hash: bytes, content: bytes | None,
                 value: dict[str, Any] | None) -> None:
        # What the generated __init__ of a frozen dataclass does (each field stored through
        # its slot, past the frozen __setattr__), without its object.__setattr__ call per
        # field: 0.6 instead of 2.0 us, paid for every message received or published.
        _SET_RAW(self, raw)
        _SET_ID(self, id)
        _SET_HEADER(self, header)
        _SET_SIGNATURE(self, signature)
        _SET_AUTHOR(self, author)
        _SET_SEQ(self, seq)
        _SET_PREVIOUS(self, previous)
        _SET_TIMESTAMP(self, timestamp)
        _SET_CONTENT_SIZE(self, content_size)
        _SET_CONTENT_HASH(self, content_hash)
        _SET_CONTENT(self, content)
        _SET_VALUE(self, value)

    @property
    def type(self) -> str | None:
        """The content type, or None when the content is not held."""
        if self.value is None:
            return None
        t = self.value["type"]
        return t if isinstance(t, str) else None

    @property
    def state(self) -> FeedState:
        """The feed state once this message is the feed's head."""
        return FeedState(self.author, self.seq, self.id)


# The slot descriptors of Message's fields (bound after the class exists: slots=True makes
# dataclass build a new class, whose slots these are).
(_SET_RAW, _SET_ID, _SET_HEADER, _SET_SIGNATURE, _SET_AUTHOR, _SET_SEQ, _SET_PREVIOUS,
 _SET_TIMESTAMP, _SET_CONTENT_SIZE, _SET_CONTENT_HASH, _SET_CONTENT, _SET_VALUE) = (
    getattr(Message, f.name).__set__ for f in fields(Message))


def message_id(header: bytes) -> MsgId:
    return MsgId(sha256(ID_TAG, header))


def content_hash(content: bytes) -> bytes:
    return sha256(CONTENT_TAG, content)


def encode_header(
    author: bytes, seq: int, previous: bytes | None, timestamp: int, size: int, digest: bytes
) -> bytes:
    """The canonical header (the same bytes as ``encoding.encode`` of the array; written out
    by hand because publishing does it for every message)."""
    if not (0 <= seq <= encoding.INT_MAX and 0 <= timestamp <= encoding.INT_MAX
            and 0 <= size <= encoding.INT_MAX):
        return encoding.encode([VERSION, author, seq, previous, timestamp, size, digest])
    h = encoding.head
    if len(author) == len(digest) == 32 and (previous is None or len(previous) == 32):
        return b"".join((  # the usual shape: only the three integers vary in length
            _HEADER_V1_AUTHOR, author, h(0, seq),
            b"\xf6" if previous is None else _BSTR32, b"" if previous is None else previous,
            h(0, timestamp), h(0, size), _BSTR32, digest,
        ))
    return b"".join((
        b"\x87", h(0, VERSION), h(2, len(author)), author, h(0, seq),
        b"\xf6" if previous is None else h(2, len(previous)) + previous,
        h(0, timestamp), h(0, size), h(2, len(digest)), digest,
    ))


_BSTR32 = encoding.head(2, 32)
_HEADER_V1_AUTHOR = b"\x87" + encoding.head(0, VERSION) + _BSTR32


def encode_message(header: bytes, signature: bytes, content: bytes | None) -> bytes:
    """The canonical message array (as ``encoding.encode([header, signature, content])``)."""
    h = encoding.head
    return b"".join((
        b"\x83", h(2, len(header)), header, h(2, len(signature)), signature,
        b"\xf6" if content is None else h(2, len(content)) + content,
    ))


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A message with everything but its signature: enough to chain the next one, because the
    id hashes the header only. A batch can be chained first and signed in parallel."""

    header: bytes
    id: MsgId
    author: FeedId
    seq: int
    previous: MsgId | None
    timestamp: int
    content: bytes
    digest: bytes
    value: dict[str, Any]

    @property
    def state(self) -> FeedState:
        return FeedState(self.author, self.seq, self.id)


def prepare(author: bytes, state: FeedState, content: Mapping[str, Any],
            timestamp: int) -> Unsigned:
    """Everything of the next message but the signature; LocalError if it would break a rule
    of spec/feed.md §5 (so a node never publishes a message that others would reject)."""
    if state.author != author:
        raise LocalError("this feed belongs to another key", code="wrong-author")
    if state.seq >= MAX_SEQ:
        raise LocalError("this feed has reached the largest seq", code="too-large")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise LocalError("timestamp out of range", code="bad-timestamp")
    value = dict(content)
    body = _encode_content(value)
    digest = content_hash(body)
    header = encode_header(author, state.seq + 1, state.head, timestamp, len(body), digest)
    return Unsigned(header, message_id(header), FeedId(author), state.seq + 1, state.head,
                    timestamp, body, digest, value)


def finish(u: Unsigned, signature: bytes) -> Message:
    """The message of ``u`` with its signature; LocalError ``too-large`` over the size limit."""
    raw = encode_message(u.header, signature, u.content)
    if len(raw) > MAX_MESSAGE_SIZE:
        raise LocalError(
            f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_SIZE}", code="too-large"
        )
    return Message(raw, u.id, u.header, signature, u.author, u.seq, u.previous, u.timestamp,
                   len(u.content), u.digest, u.content, u.value)


def sign_header(keys: Keypair, header: bytes) -> bytes:
    return keys.sign(SIGN_TAG, header)


def create(
    keys: Keypair, state: FeedState, content: Mapping[str, Any], timestamp: int
) -> Message:
    """Sign the next message of ``keys``' feed after ``state``."""
    u = prepare(keys.public, state, content, timestamp)
    return finish(u, sign_header(keys, u.header))


# --- publishing many: the chain as parallel lists ----------------------------------------------

_sha256 = hashlib.sha256
_U8 = struct.Struct(">BB").pack
_U16 = struct.Struct(">BH").pack
_U32 = struct.Struct(">BI").pack
_U64 = struct.Struct(">BQ").pack
_SMALL = [bytes((n,)) for n in range(24)]


def _uint(n: int) -> bytes:
    """``encoding.head(0, n)`` for 0 <= n < 2**64, without the generic major type."""
    if n < 24:
        return _SMALL[n]
    if n < 0x100:
        return _U8(24, n)
    if n < 0x10000:
        return _U16(25, n)
    if n < 0x100000000:
        return _U32(26, n)
    return _U64(27, n)


def _text(b: bytes) -> bytes:
    """Canonical CBOR text string of the UTF-8 bytes ``b``."""
    n = len(b)
    return (bytes((0x60 | n,)) if n < 24 else encoding.head(3, n)) + b


# {"type": "post", "text": T} canonically: the encoded key "text" sorts before "type"
_POST_OPEN = b"\xa2" + _text(b"text")
_POST_CLOSE = _text(b"type") + _text(b"post")
_ID_TAG_HASH = _sha256(ID_TAG)
_CONTENT_TAG_HASH = _sha256(CONTENT_TAG)
_SIG_HEAD = encoding.head(2, 64)


class Chain:
    """The next messages of one feed, chained but not signed yet: the fast way to publish many.

    ``add`` checks and encodes one content exactly as ``prepare`` does (same rules, same
    errors, same bytes: tests compare the two) and chains it on the one before; since the id
    hashes the header only, the signatures can be made afterwards, in any order and on any
    thread (``headers``, then ``messages`` with the signatures). A batch is kept as parallel
    lists rather than one object per message, and the parts of the header that are the same
    for the whole batch (author, timestamp) are encoded once: publishing is a hot path
    (issue 2). Entries are only appended, so a range already added may be read from another
    thread while more are added.
    """

    __slots__ = ("_head", "_prefix", "_ts", "author", "bodies", "digests", "first_seq",
                 "headers", "ids", "previous", "timestamp", "values")

    def __init__(self, author: bytes, state: FeedState, timestamp: int) -> None:
        if state.author != author:
            raise LocalError("this feed belongs to another key", code="wrong-author")
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise LocalError("timestamp out of range", code="bad-timestamp")
        self.author = FeedId(author)
        self.timestamp = timestamp
        self.first_seq = state.seq + 1
        self.previous = state.head  # of the first message
        self.headers: list[bytes] = []
        self.ids: list[MsgId] = []
        self.bodies: list[bytes] = []
        self.digests: list[bytes] = []
        self.values: list[dict[str, Any]] = []
        # every header is  prefix, seq, previous, timestamp, size, digest  (spec/feed.md §4)
        self._prefix = (_HEADER_V1_AUTHOR + author if len(author) == 32
                        else b"\x87" + _uint(VERSION) + encoding.head(2, len(author)) + author)
        self._ts = _uint(timestamp)
        self._head = state.head

    def __len__(self) -> int:
        return len(self.headers)

    @property
    def state(self) -> FeedState:
        """The feed state once every message added so far is the feed's head."""
        n = len(self.headers)
        if not n:
            return FeedState(self.author, self.first_seq - 1, self.previous)
        return FeedState(self.author, self.first_seq + n - 1, self.ids[-1])

    def add(self, content: Mapping[str, Any] | str) -> None:
        """Chain the next message; a str is a post. LocalError (and nothing added) if it
        would break a rule of spec/feed.md §5, as ``prepare``."""
        seq = self.first_seq + len(self.headers)
        if seq > MAX_SEQ:
            raise LocalError("this feed has reached the largest seq", code="too-large")
        if isinstance(content, str):
            try:
                text = content.encode("utf-8")
            except UnicodeEncodeError:
                raise LocalError("the text is not valid Unicode", code="bad-content") from None
            body = _POST_OPEN + _text(text) + _POST_CLOSE
            value: dict[str, Any] = {"type": "post", "text": content}
        else:
            value = dict(content)
            body = _encode_content(value)
        h = _CONTENT_TAG_HASH.copy()
        h.update(body)
        digest = h.digest()
        size = len(body)
        head = self._head
        header = b"".join((self._prefix, _uint(seq),
                           b"\xf6" if head is None else _BSTR32 + head if len(head) == 32
                           else encoding.head(2, len(head)) + head,
                           self._ts, _uint(size), _BSTR32, digest))
        # the message array: 0x83, header, signature (64), content
        raw_size = (1 + encoding.head_size(len(header)) + len(header) + 2 + 64
                    + encoding.head_size(size) + size)
        if raw_size > MAX_MESSAGE_SIZE:
            raise LocalError(f"message is {raw_size} bytes; the limit is {MAX_MESSAGE_SIZE}",
                             code="too-large")
        h = _ID_TAG_HASH.copy()
        h.update(header)
        msg_id = MsgId(h.digest())
        self.headers.append(header)
        self.ids.append(msg_id)
        self.bodies.append(body)
        self.digests.append(digest)
        self.values.append(value)
        self._head = msg_id

    def messages(self, start: int, stop: int, signatures: list[bytes]) -> list[Message]:
        """Messages ``start`` to ``stop`` (indexes into this batch) with their signatures."""
        author, ts, first = self.author, self.timestamp, self.first_seq
        headers, ids, bodies, digests, values = (
            self.headers, self.ids, self.bodies, self.digests, self.values)
        previous = self.previous if start == 0 else ids[start - 1]
        out = []
        for i, sig in zip(range(start, stop), signatures, strict=True):
            header, body = headers[i], bodies[i]
            if len(sig) != 64:
                raise LocalError("a signature is 64 bytes", code="sign-failed")
            raw = b"".join((b"\x83", encoding.head(2, len(header)), header, _SIG_HEAD, sig,
                            encoding.head(2, len(body)), body))
            msg_id = ids[i]
            out.append(Message(raw, msg_id, header, sig, author, first + i, previous, ts,
                               len(body), digests[i], body, values[i]))
            previous = msg_id
        return out


def _encode_content(value: dict[str, Any]) -> bytes:
    """The checks and encoding of a content in ``prepare``, as LocalErrors."""
    check_known(value)
    try:
        body = encoding.encode_checked(value, "content")
        t = value.get("type")
        if not isinstance(t, str) or not TYPE_PATTERN.match(t):
            raise InvalidMessage("content has no valid text 'type'", code="bad-content")
    except InvalidMessage as exc:
        raise LocalError(exc.message, code=exc.code) from None
    except UnicodeEncodeError:
        raise LocalError("content has text that is not valid Unicode",
                         code="bad-content") from None
    return body

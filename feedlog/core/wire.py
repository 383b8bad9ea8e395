"""Replication frames (spec/replication.md §5): their byte form and a strict incremental decoder.

A frame is ``u32_be(length) ‖ body`` where body is one canonical CBOR array whose first element is
the frame type. Frames travel inside box-stream, which already authenticates every byte, so this
layer only has to be strict about shape and size: a hostile peer can send anything it likes, and
every malformed frame must end in a ProtocolError with a stable code, never another exception.

The decoder never buffers more than one frame: a length above the limit is refused as soon as the
four length bytes have arrived (``frame-too-large``), before the body is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feedlog.core.encoding import decode_strict, encode
from feedlog.core.errors import FeedlogError, ProtocolError
from feedlog.core.message import MAX_MESSAGE_SIZE

VERSION = 1
LENGTH_SIZE = 4
MAX_FRAME_SIZE = 256 * 1024  # default limit of one frame body
MAX_NOTES_PER_FRAME = 1024
NOTE_DONT_REPLICATE = -1
MAX_SEQ = 2**53  # spec/feed.md: seq fits an IEEE double, so JSON tools are safe
MAX_TEXT = 512
HEAD_SIZE = 8  # bytes of the head message id carried in a note entry (spec/replication.md §5.2)

HELLO, NOTES, MSGS, DONE, SYNCED, FORK, ERROR, PING = range(8)
MODE_FULL, MODE_DELTA, MODE_UPDATE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    baseline: bytes  # b"" (no baseline) or the 32-byte digest of the notes I remember from you
    live: bool


@dataclass(frozen=True, slots=True)
class Entry:
    feed: bytes
    note: int  # -1: I don't replicate it; else seq * 2 + (1 if "don't send it to me")
    forked: int | None = None  # seq at which I hold a fork proof for this feed
    head: bytes | None = None  # first HEAD_SIZE bytes of the id of my message at ``seq``

    @property
    def replicates(self) -> bool:
        return self.note >= 0

    @property
    def seq(self) -> int:
        return self.note >> 1 if self.note >= 0 else 0

    @property
    def wants(self) -> bool:
        return self.note >= 0 and not self.note & 1


def make_note(seq: int, wants: bool) -> int:
    return seq * 2 + (0 if wants else 1)


def head_prefix(msg_id: bytes | None) -> bytes | None:
    """The head prefix of a note entry: the first HEAD_SIZE bytes of a message id."""
    return None if msg_id is None else bytes(msg_id[:HEAD_SIZE])


@dataclass(frozen=True, slots=True)
class Notes:
    mode: int  # MODE_FULL / MODE_DELTA (the initial vector) or MODE_UPDATE (later changes)
    last: bool  # the last frame of the initial vector (always true for updates)
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Msgs:
    messages: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Done:
    sent: int  # messages sent in the catch-up, for the receiver's sanity check


@dataclass(frozen=True, slots=True)
class Synced:
    pass


@dataclass(frozen=True, slots=True)
class Fork:
    proof: bytes


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Frame = Hello | Notes | Msgs | Done | Synced | Fork | Error | Ping


def _body(frame: Frame) -> list[object]:
    if isinstance(frame, Hello):
        return [HELLO, frame.version, frame.baseline, frame.live]
    if isinstance(frame, Notes):
        return [NOTES, frame.mode, frame.last, [_entry_body(e) for e in frame.entries]]
    if isinstance(frame, Msgs):
        return [MSGS, list(frame.messages)]
    if isinstance(frame, Done):
        return [DONE, frame.sent]
    if isinstance(frame, Synced):
        return [SYNCED]
    if isinstance(frame, Fork):
        return [FORK, frame.proof]
    if isinstance(frame, Error):
        return [ERROR, frame.code, frame.message]
    return [PING]


def _entry_body(e: Entry) -> list[object]:
    body: list[object] = [e.feed, e.note]
    if e.head is not None:
        body.append(e.head)
    if e.forked is not None:
        body.append(e.forked)
    return body


def encode_frame(frame: Frame) -> bytes:
    """The frame's wire bytes, length prefix included."""
    body = encode(_body(frame))
    return len(body).to_bytes(LENGTH_SIZE, "big") + body


def msgs_frames(raws: Sequence[bytes], max_size: int = 64 * 1024) -> list[bytes]:
    """Encoded MSGS frames carrying ``raws`` in order, each body at most ``max_size`` bytes."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 16
    for raw in raws:
        cost = len(raw) + 5
        if batch and size + cost > max_size:
            out.append(encode_frame(Msgs(tuple(batch))))
            batch, size = [], 16
        batch.append(raw)
        size += cost
    if batch:
        out.append(encode_frame(Msgs(tuple(batch))))
    return out


def _bad(what: str) -> ProtocolError:
    return ProtocolError(f"malformed frame: {what}", code="bad-frame")


def _uint(v: object, limit: int = MAX_SEQ) -> bool:
    return type(v) is int and 0 <= v <= limit


def _entry(item: object) -> Entry:
    if not isinstance(item, list) or not 2 <= len(item) <= 4:
        raise _bad("a note entry is [feed, note, head?, forked?]")
    feed, note = item[0], item[1]
    if not isinstance(feed, bytes) or len(feed) != 32:
        raise _bad("a feed in a note entry is 32 bytes")
    if type(note) is not int or not NOTE_DONT_REPLICATE <= note <= 2 * MAX_SEQ + 1:
        raise _bad("a note is -1 or seq * 2 + flag")
    rest = item[2:]
    head = rest.pop(0) if rest and isinstance(rest[0], bytes) else None
    if head is not None and (len(head) != HEAD_SIZE or note < 2):
        raise _bad(f"a head is {HEAD_SIZE} bytes, only in an entry with seq >= 1")
    forked = rest.pop(0) if rest else None
    if rest or (forked is not None and (not _uint(forked) or forked < 1)):
        raise _bad("forked is a seq >= 1, after the head")
    return Entry(feed, note, forked, head)


def _msgs_fast(body: bytes) -> Msgs | None:
    """The usual MSGS frame, read directly: ``[2, [bstr, ...]]`` with every head in its
    shortest form, no message over MAX_MESSAGE_SIZE and no byte left over; None for anything
    else, which ``decode_body``'s general path then decides (so this changes speed, never an
    answer: tests/core/test_wire.py compares the two)."""
    if body[0] != 0x82 or body[1] != MSGS:
        return None
    b = body[2]
    p = 3
    if 0x81 <= b < 0x98:
        count = b - 0x80
    elif b == 0x98:
        count, p = body[3], 4
        if count < 24:
            return None
    elif b == 0x99:
        count, p = (body[3] << 8) | body[4], 5
        if count < 0x100:
            return None
    else:
        return None
    end = len(body)
    if count > end - p:  # each message takes at least one byte
        return None
    out = []
    for _ in range(count):
        b = body[p]
        if b == 0x59:  # 256 .. 65535 bytes: the usual message
            n = (body[p + 1] << 8) | body[p + 2]
            if n < 0x100 or n > MAX_MESSAGE_SIZE:
                return None
            p += 3
        elif b == 0x58:
            n = body[p + 1]
            if n < 24:
                return None
            p += 2
        elif 0x40 <= b < 0x58:
            n = b - 0x40
            p += 1
        else:
            return None
        out.append(body[p : p + n])
        p += n
    if p != end:  # also catches a short slice: p advanced past the end
        return None
    return Msgs(tuple(out))


def decode_body(body: bytes, *, max_notes: int = MAX_NOTES_PER_FRAME) -> Frame:
    """Decode one frame body (no length prefix). Raises ProtocolError with a stable code."""
    try:
        fast = _msgs_fast(body)
    except IndexError:
        fast = None
    return decode_body_reference(body, max_notes=max_notes) if fast is None else fast


def decode_body_reference(body: bytes, *, max_notes: int = MAX_NOTES_PER_FRAME) -> Frame:
    """``decode_body`` by the general path only (the definition its fast path must match)."""
    try:
        value = decode_strict(body, what="frame")
    except FeedlogError as exc:
        raise ProtocolError(f"frame is not canonical CBOR: {exc.message}",
                            code="bad-frame") from None
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise _bad("a frame is an array starting with its type")
    kind, n = value[0], len(value)
    if kind == HELLO:
        if n != 4 or not _uint(value[1]) or not isinstance(value[2], bytes) \
                or len(value[2]) not in (0, 32) or not isinstance(value[3], bool):
            raise _bad("hello is [0, version, baseline, live]")
        return Hello(value[1], value[2], value[3])
    if kind == NOTES:
        if n != 4 or type(value[1]) is not int \
                or value[1] not in (MODE_FULL, MODE_DELTA, MODE_UPDATE) \
                or not isinstance(value[2], bool) or not isinstance(value[3], list):
            raise _bad("notes is [1, mode, last, entries]")
        if len(value[3]) > max_notes:
            raise ProtocolError(f"{len(value[3])} notes in one frame (limit {max_notes})",
                                code="too-many-notes")
        entries = tuple(_entry(e) for e in value[3])
        if len({e.feed for e in entries}) != len(entries):
            raise _bad("a feed appears twice in one notes frame")
        if value[1] == MODE_UPDATE and not value[2]:
            raise _bad("an update is always last")
        return Notes(value[1], value[2], entries)
    if kind == MSGS:
        if n != 2 or not isinstance(value[1], list) or not value[1]:
            raise _bad("msgs is [2, [message, ...]] with at least one message")
        for m in value[1]:
            if not isinstance(m, bytes):
                raise _bad("a message in msgs is a byte string")
            if len(m) > MAX_MESSAGE_SIZE:
                raise ProtocolError(f"a message of {len(m)} bytes (limit {MAX_MESSAGE_SIZE})",
                                    code="message-too-large")
        return Msgs(tuple(value[1]))
    if kind == DONE:
        if n != 2 or not _uint(value[1]):
            raise _bad("done is [3, sent]")
        return Done(value[1])
    if kind == SYNCED:
        if n != 1:
            raise _bad("synced is [4]")
        return Synced()
    if kind == FORK:
        if n != 2 or not isinstance(value[1], bytes) or len(value[1]) > 3 * MAX_MESSAGE_SIZE:
            raise _bad("fork is [5, proof]")
        return Fork(value[1])
    if kind == ERROR:
        if n != 3 or not isinstance(value[1], str) or not isinstance(value[2], str) \
                or len(value[1]) > 64 or len(value[2]) > MAX_TEXT:
            raise _bad("error is [6, code, message]")
        return Error(value[1], value[2])
    if kind == PING:
        if n != 1:
            raise _bad("ping is [7]")
        return Ping()
    raise ProtocolError(f"unknown frame type {kind}", code="unknown-frame")


class FrameDecoder:
    """Incremental frame decoder: ``feed`` bytes, then take frames from ``frames()``."""

    def __init__(self, *, max_frame: int = MAX_FRAME_SIZE,
                 max_notes: int = MAX_NOTES_PER_FRAME) -> None:
        self.max_frame = max_frame
        self.max_notes = max_notes
        self._buf = bytearray()
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            if self._need is None:
                if len(self._buf) < LENGTH_SIZE:
                    return out
                size = int.from_bytes(self._buf[:LENGTH_SIZE], "big")
                if size > self.max_frame:
                    raise ProtocolError(f"a frame of {size} bytes (limit {self.max_frame})",
                                        code="frame-too-large")
                if size == 0:
                    raise _bad("empty frame")
                del self._buf[:LENGTH_SIZE]
                self._need = size
            if len(self._buf) < self._need:
                return out
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._need = None
            out.append(decode_body(body, max_notes=self.max_notes))

    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the stream to end)."""
        return self._need is None and not self._buf

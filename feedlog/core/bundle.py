"""The USB stick bundle format (spec/bundle.md): names, record framing, the summary, planning.

Pure: bytes in, values out. The file IO around it is feedlog/bundle.py.

A bundle is a folder ``feedlog/`` holding numbered segment files (``00000001.seg`` ...) of framed
records, and one summary (``summary.cbr``). Invariants this module keeps:

- every name it produces is a lower-case 8.3 name valid on FAT32 and exFAT (§2);
- a record is ``kind ‖ length ‖ crc32 ‖ body`` (§3); ``scan`` returns every complete record whose
  checksum holds, skips damaged bytes by resynchronising on the next valid header, and reports the
  damage (``torn-tail`` when it runs to the end of the data, ``corrupt-record`` otherwise);
- the summary is advisory for readers (§5): planning uses it to skip what the reader has, but
  bytes it does not describe (unlisted segments, bytes past a committed length) are always read.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from feedlog.core import encoding
from feedlog.core.errors import InvalidMessage, RemoteError
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import MAX_MESSAGE_SIZE, FeedState

# --- §2 names -----------------------------------------------------------------------------------

ROOT = "feedlog"
SUMMARY = "summary.cbr"
SUMMARY_TMP = "summary.tmp"
SEGMENT_EXT = ".seg"
TMP_EXT = ".tmp"
MAX_SEGMENT_NUMBER = 99_999_999

_FAT_FORBIDDEN = set(':"*?<>|\\/') | {chr(c) for c in range(32)}
_SEGMENT_RE = re.compile(r"^([0-9]{8})\.seg$")
_TMP_RE = re.compile(r"^([0-9]{8}|summary)\.tmp$")


def fat_safe(name: str) -> bool:
    """True when ``name`` is a valid file name on FAT32 and exFAT (and not '.' or '..')."""
    if not name or name in (".", "..") or len(name) > 255:
        return False
    if name[-1] in ". ":
        return False
    return not any(c in _FAT_FORBIDDEN for c in name)


def is_83(name: str) -> bool:
    """True for a lower-case 8.3 name of ``[a-z0-9_-]`` (it needs no long-name entry at all)."""
    return re.fullmatch(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,3})?", name) is not None


def unique_ignoring_case(names: Iterable[str]) -> bool:
    seen: set[str] = set()
    for n in names:
        k = n.casefold()
        if k in seen:
            return False
        seen.add(k)
    return True


def segment_name(number: int) -> str:
    if not 1 <= number <= MAX_SEGMENT_NUMBER:
        raise ValueError(f"segment number out of range: {number}")
    return f"{number:08d}{SEGMENT_EXT}"


def segment_tmp_name(number: int) -> str:
    return segment_name(number)[:8] + TMP_EXT


def parse_segment_name(name: str) -> int | None:
    """The number of a segment file name (any letter case), or None for any other name."""
    m = _SEGMENT_RE.match(name.lower())
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1))


def is_tmp_name(name: str) -> bool:
    return _TMP_RE.match(name.lower()) is not None


# --- §3 records -------------------------------------------------------------------------------

KIND_MESSAGE = 0x6D  # "m": body is one message, exactly as signed (spec/feed.md §4)
KIND_FORK = 0x66  # "f": body is one fork proof (spec/feed.md §8)
HEADER_SIZE = 9
MAX_BODY = {KIND_MESSAGE: MAX_MESSAGE_SIZE, KIND_FORK: 2 * MAX_MESSAGE_SIZE + 16}
MAX_RECORD = HEADER_SIZE + max(MAX_BODY.values())
SEGMENT_MAX = 64 * 1024 * 1024  # what feedlog writes; readers accept any size below 4 GiB
FILE_LIMIT = 2**32 - 1  # no file may reach 4 GiB (FAT32)


_HEAD = struct.Struct(">BII")  # kind, length, crc: a record's header


def _crc(kind: int, length: bytes, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(bytes((kind,)) + length))


def encode_record(kind: int, body: bytes) -> bytes:
    """Frame one record. Raises ValueError for an unknown kind or a body out of range."""
    limit = MAX_BODY.get(kind)
    if limit is None or not 1 <= len(body) <= limit:
        raise ValueError(f"record kind {kind:#x} with a {len(body)}-byte body")
    length = len(body).to_bytes(4, "big")
    return bytes((kind,)) + length + _crc(kind, length, body).to_bytes(4, "big") + body


class Record(NamedTuple):
    """One complete record read from a segment. A named tuple rather than a dataclass: one
    is made per message read from a stick, and ``_new_record`` makes one in a third of the
    time of a frozen dataclass."""

    offset: int  # of the record's first byte in its segment
    kind: int
    body: bytes

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.body)


_new_record = tuple.__new__  # _new_record(Record, (offset, kind, body)): no Python-level __new__


@dataclass(frozen=True, slots=True)
class Damage:
    offset: int  # first damaged byte
    length: int  # bytes skipped
    code: str  # "corrupt-record" or "torn-tail"


@dataclass
class Scan:
    records: list[Record] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    consumed: int = 0  # bytes of the buffer that need not be seen again


def _record_at(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(kind, end) when a plausible header starts at ``pos`` (the body may be incomplete)."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    kind = buf[pos]
    limit = MAX_BODY.get(kind)
    if limit is None:
        return None
    length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
    if not 1 <= length <= limit:
        return None
    return kind, pos + HEADER_SIZE + length


def _crc_ok(buf: bytes, pos: int, end: int) -> bool:
    want = int.from_bytes(buf[pos + 5 : pos + 9], "big")
    return _crc(buf[pos], buf[pos + 1 : pos + 5], buf[pos + HEADER_SIZE : end]) == want


def scan(buf: bytes, base: int = 0, *, final: bool = True) -> Scan:
    """Parse records from ``buf``, which starts at offset ``base`` of a segment.

    With ``final=False`` more data follows: the scan stops before an incomplete record and
    ``consumed`` says where the next call must start (keep ``buf[consumed:]``). With
    ``final=True`` the data ends here: an incomplete or damaged run reaching the end is a
    ``torn-tail``. A damaged record followed by a valid one is a ``corrupt-record``; the scan
    resumes at the next position holding a complete record whose checksum holds.
    """
    out = Scan()
    pos, n = 0, len(buf)
    bad_from: int | None = None
    crc32, head, limits, view = zlib.crc32, _HEAD.unpack_from, MAX_BODY, memoryview(buf)
    records = out.records
    while pos < n:
        # fast path: a complete, intact record (the common case)
        if n - pos >= HEADER_SIZE and bad_from is None:
            kind, length, want = head(buf, pos)
            limit = limits.get(kind)
            end = pos + HEADER_SIZE + length
            if limit is not None and 1 <= length <= limit and end <= n:
                body = bytes(buf[pos + HEADER_SIZE : end])
                if crc32(body, crc32(view[pos : pos + 5])) == want:
                    records.append(_new_record(Record, (base + pos, kind, body)))
                    pos = end
                    continue
        hit = _record_at(buf, pos)
        if hit is not None:
            kind, end = hit
            if end > n and not final:
                break  # wait for the rest (this may still turn out to be damage)
            if end <= n and _crc_ok(buf, pos, end):
                if bad_from is not None:
                    out.damage.append(Damage(base + bad_from, pos - bad_from, "corrupt-record"))
                    bad_from = None
                out.records.append(Record(base + pos, kind, bytes(buf[pos + HEADER_SIZE : end])))
                pos = end
                continue
        elif n - pos < HEADER_SIZE and not final:
            break
        if bad_from is None:
            bad_from = pos
        pos = _next_candidate(buf, pos + 1)
    if final and bad_from is not None:
        out.damage.append(Damage(base + bad_from, n - bad_from, "torn-tail"))
        bad_from = None
    if final and pos < n:  # only reachable with an unfinished header at the very end
        out.damage.append(Damage(base + pos, n - pos, "torn-tail"))
        pos = n
    if bad_from is not None:
        # damage continues into the next buffer: report the part seen so far
        out.damage.append(Damage(base + bad_from, pos - bad_from, "corrupt-record"))
    out.consumed = pos
    return out


def _next_candidate(buf: bytes, start: int) -> int:
    """The next position at or after ``start`` whose first byte is a record kind."""
    best = len(buf)
    for kind in MAX_BODY:
        i = buf.find(kind, start, best)
        if i != -1:
            best = i
    return best


# --- §4 summary -------------------------------------------------------------------------------

FORMAT = "feedlog-bundle"
VERSION = 1
MAX_SUMMARY_SIZE = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of one feed's messages, seqs ``first..last``, stored contiguously in a segment."""

    segment: int
    offset: int
    length: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class FeedSummary:
    author: FeedId
    first: int
    last: int
    head: MsgId
    extents: tuple[Extent, ...]


@dataclass(frozen=True, slots=True)
class ForkEntry:
    author: FeedId
    seq: int
    segment: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Summary:
    segments: Mapping[int, int]  # segment number -> committed length
    feeds: Mapping[FeedId, FeedSummary]
    forks: tuple[ForkEntry, ...] = ()

    @classmethod
    def empty(cls) -> Summary:
        return cls({}, {}, ())

    @property
    def messages(self) -> int:
        return sum(f.last - f.first + 1 for f in self.feeds.values())


def encode_summary(s: Summary) -> bytes:
    """Canonical CBOR map (spec/bundle.md §4); feeds sorted by author, forks by (author, seq)."""
    feeds = [
        [f.author, f.first, f.last, f.head,
         [[e.segment, e.offset, e.length, e.first, e.last] for e in f.extents]]
        for _, f in sorted(s.feeds.items())
    ]
    forks = [[k.author, k.seq, k.segment, k.offset, k.length]
             for k in sorted(s.forks, key=_fork_order)]
    return encoding.encode({
        "format": FORMAT,
        "version": VERSION,
        "segments": [[n, size] for n, size in sorted(s.segments.items())],
        "feeds": feeds,
        "forks": forks,
    })


def _bad(what: str) -> RemoteError:
    return RemoteError(f"bundle summary: {what}", code="bad-summary")


def _uint(v: object, limit: int = 2**63 - 1) -> int:
    if type(v) is not int or not 0 <= v <= limit:
        raise _bad("expected an unsigned integer")
    return v


def _id(v: object) -> bytes:
    if type(v) is not bytes or len(v) != 32:
        raise _bad("expected a 32-byte id")
    return v


def _list(v: object, size: int | None = None) -> list[object]:
    if type(v) is not list or (size is not None and len(v) != size):
        raise _bad("expected an array" + (f" of {size}" if size is not None else ""))
    return v


def decode_summary(data: bytes) -> Summary:
    """Decode and check a summary; RemoteError ``bad-summary`` (or ``bundle-too-new``)."""
    if len(data) > MAX_SUMMARY_SIZE:
        raise _bad("too large")
    try:
        value = encoding.decode_strict(data, what="bundle summary")
    except InvalidMessage as exc:
        raise _bad(exc.message) from None
    if type(value) is not dict or value.get("format") != FORMAT:
        raise _bad("not a feedlog bundle summary")
    if value.get("version") != VERSION:
        raise RemoteError(f"bundle version {value.get('version')!r} is not supported",
                          code="bundle-too-new")
    if set(value) != {"format", "version", "segments", "feeds", "forks"}:
        raise _bad("unexpected keys")
    segments: dict[int, int] = {}
    for item in _list(value["segments"]):
        n, size = _list(item, 2)
        num = _uint(n, MAX_SEGMENT_NUMBER)
        if num <= next(reversed(segments), 0):  # above the last listed (and above 0)
            raise _bad("segment numbers must be above 0 and ascending, each once")
        segments[num] = _uint(size, FILE_LIMIT)
    feeds: dict[FeedId, FeedSummary] = {}
    for item in _list(value["feeds"]):
        a, first, last, head, exts = _list(item, 5)
        author = FeedId(_id(a))
        if feeds and author <= next(reversed(feeds)):  # the last listed
            raise _bad("feeds must be in ascending author order, each once")
        f = FeedSummary(author, _uint(first), _uint(last), MsgId(_id(head)),
                        tuple(_extent(e) for e in _list(exts)))
        if not 1 <= f.first <= f.last:
            raise _bad("a feed's first..last is empty")
        feeds[author] = f
    forks: list[ForkEntry] = []
    for item in _list(value["forks"]):
        a, seq, seg, off, length = _list(item, 5)
        k = ForkEntry(FeedId(_id(a)), _uint(seq), _uint(seg, MAX_SEGMENT_NUMBER),
                      _uint(off, FILE_LIMIT), _uint(length, FILE_LIMIT))
        if forks and _fork_order(k) <= _fork_order(forks[-1]):
            raise _bad("forks must be in ascending (author, seq, segment, offset) order")
        forks.append(k)
    return Summary(segments, feeds, tuple(forks))


def _fork_order(k: ForkEntry) -> tuple[bytes, int, int, int]:
    return k.author, k.seq, k.segment, k.offset


def _extent(v: object) -> Extent:
    seg, off, length, first, last = _list(v, 5)
    e = Extent(_uint(seg, MAX_SEGMENT_NUMBER), _uint(off, FILE_LIMIT), _uint(length, FILE_LIMIT),
               _uint(first), _uint(last))
    if e.first > e.last or e.first == 0:
        raise _bad("an extent's first..last is empty")
    return e


# --- §6 planning ------------------------------------------------------------------------------

UP_TO_DATE = "up-to-date"
WRITE = "write"
STICK_AHEAD = "stick-ahead"
DIVERGED = "diverged"


@dataclass(frozen=True, slots=True)
class ExportStep:
    author: FeedId
    action: str  # WRITE, UP_TO_DATE, STICK_AHEAD or DIVERGED
    first: int = 0  # seqs to write (WRITE only)
    last: int = 0


def plan_export(summary: Summary, local: Iterable[FeedState],
                local_ids: Mapping[FeedId, MsgId]) -> list[ExportStep]:
    """What to write for each of ``local`` (the exporter's feeds and heads).

    ``local_ids[a]`` is the exporter's message id at the stick's last seq of feed ``a`` (for
    every feed the stick has and the exporter has that far). A stick whose head differs from
    ours at that seq carries a diverging chain: nothing is appended to it (``diverged``).
    """
    steps = []
    for st in local:
        on = summary.feeds.get(st.author)
        if st.seq == 0:
            steps.append(ExportStep(st.author, UP_TO_DATE if on is None else STICK_AHEAD))
        elif on is None:
            steps.append(ExportStep(st.author, WRITE, 1, st.seq))
        elif on.last > st.seq:
            steps.append(ExportStep(st.author, STICK_AHEAD))
        elif local_ids.get(st.author) != on.head:
            steps.append(ExportStep(st.author, DIVERGED))
        elif on.last == st.seq:
            steps.append(ExportStep(st.author, UP_TO_DATE))
        else:
            steps.append(ExportStep(st.author, WRITE, on.last + 1, st.seq))
    return steps


@dataclass(frozen=True, slots=True)
class FeedPlan:
    author: FeedId
    on_stick: int  # messages the summary lists
    have: int  # of those, how many the reader's summary comparison says it already has
    gap: tuple[int, int] | None  # seqs the reader lacks that the stick does not carry
    read: bool


@dataclass
class ImportPlan:
    ranges: list[tuple[int, int, int]]  # (segment, offset, length), sorted and merged
    feeds: list[FeedPlan]
    skipped: list[FeedId]  # listed feeds the reader does not take
    forks: int  # fork records to read
    unlisted: list[int]  # segments (or tails) the summary does not describe

    @property
    def bytes(self) -> int:
        return sum(r[2] for r in self.ranges)


def plan_import(summary: Summary, sizes: Mapping[int, int],
                local: Mapping[FeedId, FeedState], local_ids: Mapping[FeedId, MsgId],
                wanted: frozenset[FeedId] | None,
                forked: Collection[FeedId] = ()) -> ImportPlan:
    """Which byte ranges a reader must read (spec/bundle.md §6).

    ``sizes`` are the segment files present (number -> size on disk); ``local`` the reader's
    heads (absent = empty feed); ``local_ids[a]`` the reader's id at the stick's last seq of
    ``a`` when the reader has that seq. ``wanted`` None means every feed. ``forked``: feeds the
    reader holds a fork proof for; it takes no message of them, so their extents are skipped
    (their fork records are still read).
    """
    ranges: list[tuple[int, int, int]] = []
    whole: set[int] = set()
    unlisted: list[int] = []
    for num, size in sorted(sizes.items()):
        committed = summary.segments.get(num)
        if committed is None or committed > size:
            whole.add(num)  # unknown to the summary, or the summary lies: data wins
            unlisted.append(num)
        elif size > committed:
            ranges.append((num, committed, size - committed))
            unlisted.append(num)

    def want_range(seg: int, off: int, length: int) -> None:
        if seg not in sizes or seg in whole:
            return
        if off + length > sizes[seg]:
            whole.add(seg)
        else:
            ranges.append((seg, off, length))

    feeds, skipped = [], []
    for author, f in sorted(summary.feeds.items()):
        if (wanted is not None and author not in wanted) or author in forked:
            skipped.append(author)
            continue
        st = local.get(author, FeedState(author))
        count = f.last - f.first + 1
        gap = (st.seq + 1, f.first - 1) if f.first > st.seq + 1 else None
        if f.last <= st.seq and local_ids.get(author) == f.head:
            feeds.append(FeedPlan(author, count, count, gap, False))
            continue
        have = 0
        for e in f.extents:
            if e.last > st.seq or (e.first <= f.last <= e.last and f.last <= st.seq):
                want_range(e.segment, e.offset, e.length)
            else:
                have += e.last - e.first + 1
        feeds.append(FeedPlan(author, count, have, gap, True))
    forks = 0
    for k in summary.forks:
        if wanted is None or k.author in wanted:
            want_range(k.segment, k.offset, k.length)
            forks += 1
    ranges = [r for r in ranges if r[0] not in whole]
    ranges += [(num, 0, sizes[num]) for num in whole if sizes[num] > 0]
    return ImportPlan(_merge(ranges), feeds, skipped, forks, unlisted)


def _merge(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for seg, off, length in sorted(ranges):
        if out and out[-1][0] == seg and out[-1][1] + out[-1][2] >= off:
            s, o, n = out[-1]
            out[-1] = (s, o, max(n, off + length - o))
        else:
            out.append((seg, off, length))
    return out

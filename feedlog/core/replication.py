"""The replication session (spec/replication.md §6-§9) as a pure state machine.

One Session per connection. The shell (feedlog/net.py) feeds it what happens: frames from the
peer (``receive``), messages this node stored from any source (``local_advanced``), the end of an
ingest (``ingested`` / ``drained``), changes to what this node replicates (``local_changed``).
Each call returns a list of effects, which the shell carries out in order: send a frame, stream a
range of a feed from the store, ingest messages, persist the baseline, report the plan, close.

The session never touches the store, the clock or the network, so the seeded simulator
(feedlog/sim.py) runs the very same code with random delivery order, disconnects and restarts.

Vocabulary:
- a *note* for a feed is ``seq * 2 + flag`` (flag 1 = "don't send it to me"), or -1 (I don't
  replicate it); an *entry* is a feed, its note and, when I hold a fork proof, the fork's seq;
- the *baseline* is, per peer and direction, the entries most recently exchanged, persisted by both
  sides; when both hold the same baseline (checked by digest in HELLO), the initial vector only
  carries entries that changed since ("request skipping");
- an entry with seq >= 1 carries the *head*: the first 8 bytes of the id of the sender's message
  at that seq. Two sides holding a feed at the same seq with different heads hold two histories
  (an equal-length fork, §8.1): each sends the other its message at that seq, so both ingests
  see two signed messages of one seq and record a fork proof, which then spreads as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from feedlog.core.crypto import sha256
from feedlog.core.errors import ProtocolError
from feedlog.core.ids import FeedId
from feedlog.core.wire import (
    HEAD_SIZE,
    MAX_NOTES_PER_FRAME,
    MODE_DELTA,
    MODE_FULL,
    MODE_UPDATE,
    VERSION,
    Done,
    Entry,
    Error,
    Fork,
    Frame,
    Hello,
    Msgs,
    Notes,
    Ping,
    Synced,
)

BASELINE_TAG = b"feedlog/baseline/v2\x00"
_NO_HEAD = bytes(HEAD_SIZE)

Table = dict[FeedId, Entry]  # a baseline: entries with note >= 0, keyed by feed


def digest(table: Mapping[FeedId, Entry]) -> bytes:
    """The baseline digest of spec/replication.md §7.1: empty table -> b""."""
    if not table:
        return b""
    parts = [BASELINE_TAG]
    for feed in sorted(table):
        e = table[feed]
        parts.append(feed + e.note.to_bytes(8, "big", signed=True)
                     + (e.forked or 0).to_bytes(8, "big") + (e.head or _NO_HEAD))
    return sha256(b"".join(parts))


def apply_entries(table: Table, entries: Iterable[Entry]) -> None:
    """Apply a delta or update: a note of -1 removes the feed."""
    for e in entries:
        if e.note < 0:
            table.pop(FeedId(e.feed), None)
        else:
            table[FeedId(e.feed)] = e


# --- effects ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    frame: Frame


@dataclass(frozen=True, slots=True)
class SendRange:
    """Send messages ``first..last`` of ``feed`` from the store, in order, in MSGS frames."""
    feed: FeedId
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class SendForks:
    """Send FORK frames with the fork proofs held for ``feed``."""
    feed: FeedId


@dataclass(frozen=True, slots=True)
class Ingest:
    """Validate and store these messages (accepting only feeds ``Session.accepts``)."""
    messages: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RecordFork:
    proof: bytes


@dataclass(frozen=True, slots=True)
class Drain:
    """Finish every ingest started so far, then call ``Session.drained``."""


@dataclass(frozen=True, slots=True)
class SaveBaseline:
    direction: str  # "sent" (what I told the peer) or "recv" (what the peer told me)
    table: Table


@dataclass(frozen=True, slots=True)
class Plan:
    incoming: dict[FeedId, tuple[int, int]]  # feed -> (first, last) seq I will receive
    outgoing: dict[FeedId, tuple[int, int]]  # feed -> (first, last) seq I will send

    @property
    def incoming_total(self) -> int:
        return sum(b - a + 1 for a, b in self.incoming.values())

    @property
    def outgoing_total(self) -> int:
        return sum(b - a + 1 for a, b in self.outgoing.values())


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Both sides hold everything the initial vectors called for."""


@dataclass(frozen=True, slots=True)
class Close:
    code: str
    message: str
    tell_peer: bool = True  # send an ERROR frame before closing


Effect = (Send | SendRange | SendForks | Ingest | RecordFork | Drain | SaveBaseline | Plan
          | CaughtUp | Close)


@dataclass
class Session:
    """Replication with one peer over one connection.

    ``mine``: this node's entries (every feed it replicates), ``seqs``: how far this node holds
    each feed (may include feeds it does not replicate; they are never sent),
    ``sent_base`` / ``recv_base``: the persisted baseline for this peer, ``heads``: the head
    prefix of this node's message at ``seqs[feed]``, where known (kept up to date by
    ``local_advanced`` and ``ingested``; an entry of ``mine`` names the head at its own seq).
    """

    mine: Table
    seqs: dict[FeedId, int]
    sent_base: Table = field(default_factory=dict)
    recv_base: Table = field(default_factory=dict)
    live: bool = False
    max_entries: int = 65_536  # most feeds the peer's vector may hold (Limits)
    heads: dict[FeedId, bytes] = field(default_factory=dict)

    theirs: Table = field(default_factory=dict)
    peer_has: dict[FeedId, int] = field(default_factory=dict)
    plan: Plan | None = None
    peer_live: bool = False
    _hello_sent: bool = False
    _hello_received: bool = False
    _notes_mode: int | None = None
    _notes_done: bool = False
    _done_sent: bool = False
    _done_received: bool = False
    _synced_sent: bool = False
    _synced_received: bool = False
    _caught_up: bool = False
    _heads_sent: set[FeedId] = field(default_factory=set)  # feeds whose head we sent (§8.1)
    _dropped: set[FeedId] = field(default_factory=set)  # no longer accepted, this session (§9.2)
    closed: bool = False

    # --- inputs ----------------------------------------------------------------------------

    def start(self) -> list[Effect]:
        """The first frame: HELLO (both sides send it at once, neither waits)."""
        self._hello_sent = True
        return [Send(Hello(VERSION, digest(self.recv_base), self.live))]

    @property
    def both_live(self) -> bool:
        return self.live and self.peer_live

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def accepts(self, feed: FeedId) -> bool:
        """May this peer send us messages of ``feed``? Only feeds we replicate and want. A
        feed we hold a fork proof for is let through to the ingest, which refuses it as
        ``feed-forked`` (benign: the peer may not have had our proof yet)."""
        e = self.mine.get(feed)
        return e is not None and (e.wants or e.forked is not None)

    def dropped(self, feed: FeedId) -> bool:
        """Did we stop accepting ``feed`` at some time during this session (unfollow, block)?
        Messages of it the peer sent before it saw our updates may still arrive, out of step
        with what we hold: refused without blame (spec/replication.md §9.2)."""
        return feed in self._dropped

    def peer_wants(self, feed: FeedId) -> bool:
        """Does the peer (still) want ``feed`` from us? A range being sent stops once not."""
        theirs = self.theirs.get(feed)
        return theirs is not None and theirs.wants

    def receive(self, frame: Frame) -> list[Effect]:
        if self.closed:
            return []
        try:
            return self._receive(frame)
        except ProtocolError as exc:
            return self._close(exc.code, exc.message)

    def _receive(self, frame: Frame) -> list[Effect]:
        if isinstance(frame, Error):
            self.closed = True
            return [Close(f"peer-{frame.code}"[:64], frame.message, tell_peer=False)]
        if isinstance(frame, Ping):
            return []
        if isinstance(frame, Hello):
            return self._on_hello(frame)
        if not self._hello_received:
            raise _unexpected(frame, "before hello")
        if isinstance(frame, Notes):
            return self._on_notes(frame)
        if not self._notes_done:
            raise _unexpected(frame, "before the peer's vector was complete")
        if isinstance(frame, Msgs):
            return [Ingest(frame.messages)]
        if isinstance(frame, Fork):
            return [RecordFork(frame.proof)]
        if isinstance(frame, Done):
            if self._done_received:
                raise ProtocolError("a second done", code="unexpected-frame")
            self._done_received = True
            return [Drain()]
        if isinstance(frame, Synced):
            if self._synced_received or not self._done_sent:
                raise ProtocolError("synced before our done", code="unexpected-frame")
            self._synced_received = True
            return self._check_caught_up()
        raise _unexpected(frame, "")  # pragma: no cover - every frame type is handled above

    def _on_hello(self, hello: Hello) -> list[Effect]:
        if self._hello_received:
            raise ProtocolError("a second hello", code="unexpected-frame")
        if hello.version != VERSION:
            raise ProtocolError(f"peer speaks version {hello.version}, we speak {VERSION}",
                                code="unsupported-version")
        self._hello_received = True
        self.peer_live = hello.live
        delta = bool(hello.baseline) and hello.baseline == digest(self.sent_base)
        if delta:
            entries = [e for f, e in sorted(self.mine.items()) if self.sent_base.get(f) != e]
            entries += [Entry(f, -1) for f in sorted(self.sent_base) if f not in self.mine]
            mode = MODE_DELTA
            apply_entries(self.sent_base, entries)
        else:
            entries = [e for _, e in sorted(self.mine.items())]
            mode = MODE_FULL
            self.sent_base = dict(self.mine)
        out: list[Effect] = []
        chunks = [entries[i : i + MAX_NOTES_PER_FRAME]
                  for i in range(0, len(entries), MAX_NOTES_PER_FRAME)] or [[]]
        for i, chunk in enumerate(chunks):
            out.append(Send(Notes(mode, i == len(chunks) - 1, tuple(chunk))))
        out.append(SaveBaseline("sent", dict(self.sent_base)))
        return out

    def _on_notes(self, notes: Notes) -> list[Effect]:
        if notes.mode == MODE_UPDATE:
            if not self._notes_done:
                raise ProtocolError("an update before the vector", code="unexpected-frame")
            apply_entries(self.theirs, notes.entries)
            self._check_size()
            apply_entries(self.recv_base, notes.entries)
            out: list[Effect] = [SaveBaseline("recv", dict(self.recv_base))]
            for e in notes.entries:
                f = FeedId(e.feed)
                if e.note < 0:
                    self.peer_has.pop(f, None)
                else:
                    self.peer_has[f] = max(self.peer_has.get(f, 0), e.seq)
                    if self._done_sent and self.both_live:
                        out += self._push(f)
                        out += self._send_head(f)
                    out += self._forks_for(f)
            return out
        if self._notes_done:
            raise ProtocolError("a second vector", code="unexpected-frame")
        if self._notes_mode is None:
            self._notes_mode = notes.mode
            if notes.mode == MODE_DELTA:
                if not self.recv_base:
                    raise ProtocolError("a delta vector without a baseline", code="bad-delta")
                self.theirs = dict(self.recv_base)
        elif notes.mode != self._notes_mode:
            raise ProtocolError("vector frames of mixed modes", code="bad-frame")
        apply_entries(self.theirs, notes.entries)
        self._check_size()
        if not notes.last:
            return []
        self._notes_done = True
        self.recv_base = dict(self.theirs)
        return [SaveBaseline("recv", dict(self.recv_base)), *self._begin()]

    def _check_size(self) -> None:
        if len(self.theirs) > self.max_entries:
            raise ProtocolError(f"the peer's vector holds more than {self.max_entries} feeds",
                                code="too-many-notes")

    def _begin(self) -> list[Effect]:
        """Both vectors known: plan, send fork proofs the peer lacks, stream, then DONE."""
        incoming: dict[FeedId, tuple[int, int]] = {}
        outgoing: dict[FeedId, tuple[int, int]] = {}
        for f, e in self.theirs.items():
            self.peer_has[f] = e.seq
        for f, mine in self.mine.items():
            theirs = self.theirs.get(f)
            if theirs is None:
                continue
            have = self.seqs.get(f, 0)
            if mine.wants and theirs.seq > have:
                incoming[f] = (have + 1, theirs.seq)
            if theirs.wants and have > theirs.seq and mine.forked is None:
                outgoing[f] = (theirs.seq + 1, have)
            if self._heads_differ(f):  # same seq, two histories: swap the two messages
                s = theirs.seq
                if mine.wants:
                    incoming[f] = (s, s)
                if theirs.wants:
                    outgoing[f] = (s, s)
                    self._heads_sent.add(f)
        self.plan = Plan(dict(sorted(incoming.items())), dict(sorted(outgoing.items())))
        out: list[Effect] = [self.plan]
        for f in sorted(self.mine):
            out += self._forks_for(f)
        sent = 0
        for f, (a, b) in self.plan.outgoing.items():
            out.append(SendRange(f, a, b))
            self.peer_has[f] = b
            sent += b - a + 1
        out.append(Send(Done(sent)))
        self._done_sent = True
        return out

    def _head_at(self, f: FeedId, seq: int) -> bytes | None:
        """The head prefix of this node's message ``seq`` of ``f``, if the session knows it."""
        if seq >= 1 and self.seqs.get(f, 0) == seq and f in self.heads:
            return self.heads[f]
        mine = self.mine.get(f)
        return mine.head if mine is not None and mine.seq == seq else None

    def _heads_differ(self, f: FeedId) -> bool:
        """Both sides hold ``f`` up to the same seq, neither holds a fork proof, and the heads
        named for that seq differ (spec/replication.md §8.1)."""
        mine, theirs = self.mine.get(f), self.theirs.get(f)
        if mine is None or theirs is None or mine.forked is not None \
                or theirs.forked is not None or theirs.head is None:
            return False
        s = theirs.seq
        if s < 1 or self.seqs.get(f, 0) != s:
            return False
        head = self._head_at(f, s)
        return head is not None and head != theirs.head

    def _send_head(self, f: FeedId) -> list[Effect]:
        """Later (an update, live): send our message at the common seq once, if heads differ."""
        theirs = self.theirs.get(f)
        if f in self._heads_sent or theirs is None or not theirs.wants \
                or not self._heads_differ(f):
            return []
        self._heads_sent.add(f)
        return [SendRange(f, theirs.seq, theirs.seq)]

    def _forks_for(self, f: FeedId) -> list[Effect]:
        mine, theirs = self.mine.get(f), self.theirs.get(f)
        if mine is None or mine.forked is None or theirs is None:
            return []
        if theirs.forked is not None and theirs.forked <= mine.forked:
            return []
        return [SendForks(f)]

    def ingested(self, seqs: Mapping[FeedId, int],
                 heads: Mapping[FeedId, bytes] | None = None) -> list[Effect]:
        """Messages from this peer were stored: ``seqs`` gives the new stored seq per feed,
        ``heads`` (optional) the head prefix at that seq."""
        for f, s in seqs.items():
            self._advance(f, s, heads.get(f) if heads is not None else None)
            self.peer_has[f] = max(self.peer_has.get(f, 0), s)
        return []

    def _advance(self, f: FeedId, seq: int, head: bytes | None) -> bool:
        if seq <= self.seqs.get(f, 0):
            return False
        self.seqs[f] = seq
        if head is not None:
            self.heads[f] = head
        else:
            self.heads.pop(f, None)
        return True

    def drained(self) -> list[Effect]:
        """Everything the peer sent up to its DONE has been ingested."""
        if self.closed or self._synced_sent:
            return []
        self._synced_sent = True
        return [Send(Synced()), *self._check_caught_up()]

    def _check_caught_up(self) -> list[Effect]:
        if self._synced_sent and self._synced_received and not self._caught_up:
            self._caught_up = True
            return [CaughtUp()]
        return []

    def local_advanced(self, feed: FeedId, seq: int, head: bytes | None = None) -> list[Effect]:
        """This node now holds ``feed`` up to ``seq`` (published, or received from anyone);
        ``head``, when given, is the head prefix of that message."""
        if not self._advance(feed, seq, head):
            return []
        if self.closed or not self._done_sent or not self.both_live:
            return []
        return self._push(feed)

    def _push(self, f: FeedId) -> list[Effect]:
        mine = self.mine.get(f)
        if mine is None or mine.forked is not None:
            return []
        theirs = self.theirs.get(f)
        if theirs is None or not theirs.wants:
            return []
        have, known = self.seqs.get(f, 0), self.peer_has.get(f, 0)
        if have <= known:
            return []
        self.peer_has[f] = have
        return [SendRange(f, known + 1, have)]

    def local_changed(self, entries: Mapping[FeedId, Entry | None]) -> list[Effect]:
        """What this node replicates changed (follow, unfollow, block, a fork proof): tell the
        peer with an update (only once the initial vector went out)."""
        changed: list[Entry] = []
        for f, e in sorted(entries.items()):
            accepted = self.accepts(f)
            if e is None:
                if self.mine.pop(f, None) is not None:
                    changed.append(Entry(f, -1))
            elif self.mine.get(f) != e:
                self.mine[f] = e
                changed.append(e)
            if accepted and not self.accepts(f):
                self._dropped.add(f)
        if not changed or self.closed or not self._hello_received:
            return []
        apply_entries(self.sent_base, changed)
        out: list[Effect] = []
        for i in range(0, len(changed), MAX_NOTES_PER_FRAME):
            out.append(Send(Notes(MODE_UPDATE, True, tuple(changed[i : i + MAX_NOTES_PER_FRAME]))))
        out.append(SaveBaseline("sent", dict(self.sent_base)))
        if self._notes_done:
            for e in changed:
                out += self._forks_for(FeedId(e.feed))
                if self._done_sent and self.both_live:
                    out += self._push(FeedId(e.feed))
                    out += self._send_head(FeedId(e.feed))
        return out

    def fail(self, code: str, message: str) -> list[Effect]:
        """The shell found the peer misbehaving (e.g. a forged signature): close with a code."""
        if self.closed:
            return []
        return self._close(code, message)

    def _close(self, code: str, message: str) -> list[Effect]:
        self.closed = True
        return [Close(code, message)]


def _unexpected(frame: Frame, when: str) -> ProtocolError:
    return ProtocolError(f"{type(frame).__name__.lower()} frame {when}".strip(),
                         code="unexpected-frame")

"""A seeded N-peer simulator of the replication state machine (feedlog/core/replication.py).

The real Session code runs unchanged; only the world around it is simulated: feeds are lists of
synthetic messages (``author(32) ‖ seq(8)``), connections are FIFO queues per direction (as TCP),
and a seeded random schedule interleaves publishing, delivery, connects, disconnects, restarts,
crashes that lose the last persisted baseline, and changes of what a peer replicates (a follow,
an unfollow or a block: a feed enters or leaves its set, live sessions get the update). Every
frame goes through the wire codec on its way (encoded, decoded, compared). Every step,
deliveries included, is appended to a trace, which a failing test prints with its seed.

Forks: with ``forks=True`` a peer sometimes writes to another author's feed, as if that key were
used on two machines (a "twin"). Each message then names its history: ``author(32) ‖ seq(8) ‖
label(4) ‖ previous label(4)``, and the entry's head prefix is a hash of it, as the real head
prefix is of the real id. A peer's ingest finds a fork as the real one does (another message of
a seq it holds, or a next message whose previous is not its head), keeps a mark (the fork's
seq), and the marks spread in FORK frames.

Invariants checked while running (an honest peer never violates them):
- a peer is only sent messages of feeds it accepts, in order, without gaps, or of feeds it
  stopped accepting during that connection (sent before the update arrived; dropped);
- SendRange only ever asks for messages the sender holds;
and at the end, after every pair has been connected live until quiet: every peer holds every feed
it replicates up to the highest seq any peer holds, except that a feed of which two peers hold
histories that are not prefixes of each other is marked forked on every peer replicating it,
with the same fork seq; and one more one-shot meeting of every pair moves no message and no proof.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from feedlog.core import replication as rep
from feedlog.core.ids import FeedId
from feedlog.core.wire import (
    Entry,
    Fork,
    Frame,
    FrameDecoder,
    Msgs,
    Notes,
    encode_frame,
    make_note,
)


def fid(i: int) -> FeedId:
    return FeedId(bytes([i + 1]) * 32)


def synth(author: FeedId, seq: int, label: int = 0, prev: int = 0) -> bytes:
    return author + seq.to_bytes(8, "big") + label.to_bytes(4, "big") + prev.to_bytes(4, "big")


def parse(raw: bytes) -> tuple[FeedId, int, int, int]:
    return (FeedId(raw[:32]), int.from_bytes(raw[32:40], "big"),
            int.from_bytes(raw[40:44], "big"), int.from_bytes(raw[44:48], "big"))


def head_of(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()[:8]


class SimFailure(AssertionError):
    pass


def _brief(frame: Frame) -> str:
    """A frame in a few words, for the trace."""
    if isinstance(frame, Msgs):
        first, last = parse(frame.messages[0]), parse(frame.messages[-1])
        return f"Msgs(p{first[0][0] - 1} {first[1]}..{last[1]}, {len(frame.messages)})"
    if isinstance(frame, Notes):
        return f"Notes(mode {frame.mode}, {len(frame.entries)} entries)"
    return type(frame).__name__


@dataclass
class Peer:
    index: int
    replicates: set[FeedId]
    ever: set[FeedId] = field(default_factory=set)  # every feed it replicated at some time
    held: dict[FeedId, int] = field(default_factory=dict)
    baselines: dict[tuple[int, str], rep.Table] = field(default_factory=dict)
    saved: dict[tuple[int, str], list[rep.Table]] = field(default_factory=dict)  # every save
    msgs: dict[FeedId, list[bytes]] = field(default_factory=dict)  # the history held, per feed
    forked: dict[FeedId, int] = field(default_factory=dict)  # fork marks (seq of the proof)

    @property
    def id(self) -> FeedId:
        return fid(self.index)

    def entry(self, f: FeedId) -> Entry:
        held = self.msgs.get(f, [])
        return Entry(f, make_note(len(held), f not in self.forked), self.forked.get(f),
                     head_of(held[-1]) if held else None)

    def entries(self) -> rep.Table:
        return {f: self.entry(f) for f in self.replicates}

    def append(self, raw: bytes) -> None:
        f, q, _, _ = parse(raw)
        self.msgs.setdefault(f, []).append(raw)
        self.held[f] = q

    def write(self, f: FeedId, count: int, label: int) -> int:
        """Append ``count`` messages of history ``label`` to this peer's copy of ``f``."""
        held = self.msgs.get(f, [])
        prev = parse(held[-1])[2] if held else 0
        for _ in range(count):
            self.append(synth(f, self.held.get(f, 0) + 1, label, prev))
            prev = label
        return self.held[f]


@dataclass
class Conn:
    a: int
    b: int
    sessions: dict[int, rep.Session]
    queues: dict[int, list[Frame]]  # frames in flight *to* peer index
    open: bool = True
    caught_up: set[int] = field(default_factory=set)
    notes_entries: dict[int, int] = field(default_factory=dict)  # entries sent by peer index
    bytes_sent: dict[int, int] = field(default_factory=dict)
    msgs_sent: dict[int, int] = field(default_factory=dict)  # messages sent by peer index
    forks_sent: dict[int, int] = field(default_factory=dict)  # FORK frames sent by peer index


class World:
    def __init__(self, seed: int, peers: int = 4, feeds_blocked: bool = True,
                 forks: bool = False) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.forks = forks
        self._labels = 0
        self.trace: list[str] = []
        n = peers
        self.peers: list[Peer] = []
        for i in range(n):
            wanted = {fid(j) for j in range(n)}
            if feeds_blocked and n > 3 and i == 0:
                wanted.discard(fid(n - 1))  # peer 0 blocks the last author
            self.peers.append(Peer(i, wanted, set(wanted)))
        self.conns: list[Conn] = []
        self.dropped_msgs = 0  # messages that arrived for a feed dropped during the connection
        self.set_changes = 0

    # --- actions -----------------------------------------------------------------------------

    def log(self, text: str) -> None:
        self.trace.append(text)

    def publish(self, i: int, count: int = 1) -> None:
        p = self.peers[i]
        if p.id in p.forked:
            self.log(f"publish p{i}: refused, its feed is forked")
            return
        p.write(p.id, count, 0)
        self.log(f"publish p{i} -> seq {p.held[p.id]}")
        self.advanced(i, p.id, p.held[p.id])

    def twin(self, i: int, author: int, count: int = 1) -> None:
        """Peer i writes ``count`` messages to ``author``'s feed with that author's key: a
        history of its own, diverging from every other one at its first message."""
        p, f = self.peers[i], fid(author)
        if f in p.forked or f not in p.replicates:
            return
        self._labels += 1
        p.write(f, count, self._labels)
        self.log(f"twin p{i} writes p{author}'s feed -> seq {p.held[f]} (history "
                 f"{self._labels})")
        self.advanced(i, f, p.held[f])

    def advanced(self, i: int, feed: FeedId, seq: int) -> None:
        head = head_of(self.peers[i].msgs[feed][-1])
        for c in self.conns:
            if c.open and i in c.sessions:
                self.run(c, i, c.sessions[i].local_advanced(feed, seq, head))

    def mark_fork(self, i: int, f: FeedId, seq: int, why: str) -> None:
        """Peer i holds a proof of a fork of ``f`` at ``seq``: its entry changes everywhere."""
        p = self.peers[i]
        if f not in p.replicates or p.forked.get(f, seq + 1) <= seq:
            return
        p.forked[f] = seq
        self.log(f"p{i} marks p{f[0] - 1}'s feed forked at {seq} ({why})")
        for c in self.conns:
            if c.open and i in c.sessions:
                self.run(c, i, c.sessions[i].local_changed({f: p.entry(f)}))

    def change_set(self, i: int, author: int) -> None:
        """Peer i follows, or unfollows / blocks, ``author``'s feed; its live sessions are told."""
        p, f = self.peers[i], fid(author)
        if f == p.id:
            return
        if f in p.replicates:
            p.replicates.discard(f)
            change: Entry | None = None
            self.log(f"p{i} drops p{author}'s feed")
        else:
            p.replicates.add(f)
            p.ever.add(f)
            change = p.entry(f)
            self.log(f"p{i} takes p{author}'s feed")
        self.set_changes += 1
        for c in self.conns:
            if c.open and i in c.sessions:
                self.run(c, i, c.sessions[i].local_changed({f: change}))

    def connect(self, a: int, b: int, live: bool) -> Conn:
        sessions = {}
        for me, other in ((a, b), (b, a)):
            p = self.peers[me]
            sessions[me] = rep.Session(
                mine=p.entries(), seqs=dict(p.held),
                sent_base=dict(p.baselines.get((other, "sent"), {})),
                recv_base=dict(p.baselines.get((other, "recv"), {})), live=live)
        c = Conn(a, b, sessions, {a: [], b: []})
        self.conns.append(c)
        self.log(f"connect p{a} p{b} live={live}")
        for me in (a, b):
            self.run(c, me, c.sessions[me].start())
        return c

    def disconnect(self, c: Conn) -> None:
        if c.open:
            c.open = False
            self.log(f"disconnect p{c.a} p{c.b} (dropping {len(c.queues[c.a])}+"
                     f"{len(c.queues[c.b])} frames)")

    def crash(self, i: int) -> None:
        """Peer i restarts; it may lose the baseline writes of its last moments: one baseline
        is gone, or back at one of its earlier versions."""
        for c in self.conns:
            if c.open and i in c.sessions:
                self.disconnect(c)
        p = self.peers[i]
        r = self.rng.random()
        if p.baselines and r < 0.5:
            key = self.rng.choice(sorted(p.baselines))
            older = p.saved.get(key, [])[:-1]
            if older and r < 0.25:
                back = self.rng.randrange(len(older))
                p.baselines[key] = dict(older[back])
                p.saved[key] = p.saved[key][: back + 1]
                self.log(f"crash p{i}: baseline {key} back at save {back + 1} of "
                         f"{len(older) + 1}")
            else:
                del p.baselines[key]
                p.saved.pop(key, None)
                self.log(f"crash p{i}: lost baseline {key}")
        else:
            self.log(f"crash p{i}")

    def other(self, c: Conn, me: int) -> int:
        return c.b if me == c.a else c.a

    def run(self, c: Conn, me: int, effects: list[rep.Effect]) -> None:
        s = c.sessions[me]
        peer = self.peers[me]
        to = self.other(c, me)
        for e in effects:
            if not c.open:
                return
            if isinstance(e, rep.Send):
                c.queues[to].append(e.frame)
                c.bytes_sent[me] = c.bytes_sent.get(me, 0) + len(encode_frame(e.frame))
                if isinstance(e.frame, Notes):
                    c.notes_entries[me] = c.notes_entries.get(me, 0) + len(e.frame.entries)
            elif isinstance(e, rep.SendRange):
                if peer.held.get(e.feed, 0) < e.last or e.first < 1:
                    raise SimFailure(f"p{me} asked to send {e} but holds "
                                     f"{peer.held.get(e.feed, 0)}")
                frame = Msgs(tuple(peer.msgs[e.feed][e.first - 1 : e.last]))
                c.queues[to].append(frame)
                c.msgs_sent[me] = c.msgs_sent.get(me, 0) + len(frame.messages)
            elif isinstance(e, rep.SendForks):
                if e.feed not in peer.forked:
                    raise SimFailure(f"p{me} asked to send proofs of a feed it holds none of")
                c.queues[to].append(Fork(e.feed + peer.forked[e.feed].to_bytes(8, "big")))
                c.forks_sent[me] = c.forks_sent.get(me, 0) + 1
            elif isinstance(e, rep.RecordFork):
                self.mark_fork(me, FeedId(e.proof[:32]), int.from_bytes(e.proof[32:], "big"),
                               f"proof from p{to}")
            elif isinstance(e, rep.Ingest):
                self.ingest(c, me, e.messages)
            elif isinstance(e, rep.Drain):
                self.run(c, me, s.drained())
            elif isinstance(e, rep.SaveBaseline):
                peer.baselines[(to, e.direction)] = dict(e.table)
                peer.saved.setdefault((to, e.direction), []).append(dict(e.table))
            elif isinstance(e, rep.CaughtUp):
                c.caught_up.add(me)
                self.log(f"p{me} caught up with p{to}")
            elif isinstance(e, rep.Close):
                raise SimFailure(f"p{me} closed the connection to p{to}: {e.code} {e.message}")
            elif isinstance(e, rep.Plan):
                pass

    def ingest(self, c: Conn, me: int, raws: tuple[bytes, ...]) -> None:
        s = c.sessions[me]
        p = self.peers[me]
        changed: dict[FeedId, int] = {}
        forks: list[tuple[FeedId, int, str]] = []
        for raw in raws:
            f, q, _, prev = parse(raw)
            if not s.accepts(f):
                if s.dropped(f):
                    self.dropped_msgs += 1
                    continue
                raise SimFailure(f"p{me} was sent feed p{f[0] - 1} it does not accept")
            if f in p.forked or any(k[0] == f for k in forks):
                continue  # feed-forked (or refused after the fork in this batch)
            held = p.msgs.get(f, [])
            if q > len(held) + 1:
                if s.dropped(f):  # sent before the peer saw the feed leave and come back
                    self.dropped_msgs += 1
                    continue
                raise SimFailure(f"p{me} got seq {q} of p{f[0] - 1} but holds {len(held)}: "
                                 "a gap")
            if q <= len(held):
                if held[q - 1] != raw:
                    forks.append((f, q, "same seq"))
            elif held and parse(held[-1])[2] != prev:
                forks.append((f, q - 1, "broken link"))
            else:
                p.append(raw)
                changed[f] = q
        if changed:
            self.run(c, me, s.ingested(changed, {f: head_of(p.msgs[f][-1]) for f in changed}))
            for f, q in changed.items():
                head = head_of(p.msgs[f][-1])
                for other in self.conns:
                    if other is not c and other.open and me in other.sessions:
                        self.run(other, me, other.sessions[me].local_advanced(f, q, head))
        for f, q, why in forks:
            self.mark_fork(me, f, q, why)

    def deliver_one(self) -> bool:
        ready = [(c, to) for c in self.conns if c.open for to in (c.a, c.b) if c.queues[to]]
        if not ready:
            return False
        c, to = self.rng.choice(ready)
        frame = c.queues[to].pop(0)
        decoded = FrameDecoder().feed(encode_frame(frame))
        if decoded != [frame]:
            raise SimFailure(f"the wire codec changed {frame} into {decoded}")
        self.log(f"deliver p{self.other(c, to)}->p{to} {_brief(frame)}")
        self.run(c, to, c.sessions[to].receive(frame))
        return True

    def quiesce(self, limit: int = 200_000) -> None:
        for _ in range(limit):
            if not self.deliver_one():
                return
        raise SimFailure("no quiescence")

    # --- the scenario ------------------------------------------------------------------------

    def random_run(self, steps: int = 300) -> None:
        n = len(self.peers)
        for _ in range(steps):
            r = self.rng.random()
            open_conns = [c for c in self.conns if c.open]
            if r < 0.25:
                if self.forks and self.rng.random() < 0.1:
                    i, j = self.rng.sample(range(n), 2)
                    self.twin(i, j, self.rng.randint(1, 3))
                else:
                    self.publish(self.rng.randrange(n), self.rng.randint(1, 5))
            elif r < 0.35 and len(open_conns) < n:
                a, b = self.rng.sample(range(n), 2)
                if not any(c.open and {c.a, c.b} == {a, b} for c in self.conns):
                    self.connect(a, b, live=self.rng.random() < 0.7)
            elif r < 0.40 and open_conns:
                self.disconnect(self.rng.choice(open_conns))
            elif r < 0.42:
                self.crash(self.rng.randrange(n))
            elif r < 0.45:
                i, j = self.rng.sample(range(n), 2)
                self.change_set(i, j)
            else:
                self.deliver_one()
        # the end: everything closes, then every pair meets live until quiet
        for c in self.conns:
            self.disconnect(c)
        for a in range(n):
            for b in range(a + 1, n):
                self.connect(a, b, live=True)
        self.quiesce()

    def forked_feeds(self) -> set[FeedId]:
        """Feeds of which two peers replicating them hold histories that are not prefixes of
        each other (a peer that dropped a feed passes its copy on to nobody)."""
        out: set[FeedId] = set()
        for x in self.peers:
            for y in self.peers:
                for f, mx in x.msgs.items():
                    if f not in x.replicates or f not in y.replicates:
                        continue
                    my = y.msgs.get(f, [])
                    n = min(len(mx), len(my))
                    if mx[:n] != my[:n]:
                        out.add(f)
        return out

    def check_converged(self) -> None:
        best: dict[FeedId, int] = {}  # over the peers that replicate the feed now
        for p in self.peers:
            for f, q in p.held.items():
                if f in p.replicates:
                    best[f] = max(best.get(f, 0), q)
        forked = self.forked_feeds()
        for f in forked | {f for p in self.peers for f in p.forked if f in p.replicates}:
            marks = {p.index: p.forked.get(f) for p in self.peers if f in p.replicates}
            if len(set(marks.values())) != 1 or None in marks.values():
                raise SimFailure(f"p{f[0] - 1}'s feed is forked; fork marks per peer: {marks}")
        for p in self.peers:
            for f in p.replicates:
                if f in forked or f in p.forked:
                    continue
                if p.held.get(f, 0) != best.get(f, 0):
                    raise SimFailure(f"p{p.index} holds p{f[0] - 1} up to "
                                     f"{p.held.get(f, 0)}, best is {best.get(f, 0)}")
            for f in set(p.held) - p.ever:
                raise SimFailure(f"p{p.index} holds p{f[0] - 1}, which it never replicated")
        for c in self.conns:
            if c.open and c.caught_up != {c.a, c.b}:
                raise SimFailure(f"p{c.a}-p{c.b} never caught up")

    def check_quiet_reconnect(self) -> None:
        """Once converged, one more one-shot meeting of every pair moves no message and no
        fork proof (a forked feed is neither asked for nor offered again)."""
        for c in self.conns:
            self.disconnect(c)
        n = len(self.peers)
        again = [self.connect(a, b, live=False) for a in range(n) for b in range(a + 1, n)]
        self.quiesce()
        for c in again:
            if c.caught_up != {c.a, c.b}:
                raise SimFailure(f"p{c.a}-p{c.b} never caught up on the quiet reconnect")
            if any(c.msgs_sent.values()) or any(c.forks_sent.values()):
                raise SimFailure(f"p{c.a}-p{c.b} moved {c.msgs_sent} messages and "
                                 f"{c.forks_sent} proofs on a reconnect with nothing new")

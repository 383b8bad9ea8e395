"""A seeded N-peer simulator of the replication state machine (feedlog/core/replication.py).

The real Session code runs unchanged; only the world around it is simulated: feeds are lists of
synthetic messages (``author(32) ‖ seq(8)``), connections are FIFO queues per direction (as TCP),
and a seeded random schedule interleaves publishing, delivery, connects, disconnects, restarts
and crashes that lose the last persisted baseline. Every step is appended to a trace, which a
failing test prints with its seed.

Invariants checked while running (an honest peer never violates them):
- a peer is only sent messages of feeds it accepts, in order, without gaps;
- SendRange only ever asks for messages the sender holds;
and at the end, after every pair has been connected live until quiet: every peer holds every feed
it replicates up to the highest seq any peer holds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from feedlog.core import replication as rep
from feedlog.core.ids import FeedId
from feedlog.core.wire import Entry, Frame, Msgs, Notes, encode_frame, make_note


def fid(i: int) -> FeedId:
    return FeedId(bytes([i + 1]) * 32)


def synth(author: FeedId, seq: int) -> bytes:
    return author + seq.to_bytes(8, "big")


class SimFailure(AssertionError):
    pass


@dataclass
class Peer:
    index: int
    replicates: set[FeedId]
    held: dict[FeedId, int] = field(default_factory=dict)
    baselines: dict[tuple[int, str], rep.Table] = field(default_factory=dict)

    @property
    def id(self) -> FeedId:
        return fid(self.index)

    def entries(self) -> rep.Table:
        return {f: Entry(f, make_note(self.held.get(f, 0), True)) for f in self.replicates}


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


class World:
    def __init__(self, seed: int, peers: int = 4, feeds_blocked: bool = True) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.trace: list[str] = []
        n = peers
        self.peers: list[Peer] = []
        for i in range(n):
            wanted = {fid(j) for j in range(n)}
            if feeds_blocked and n > 3 and i == 0:
                wanted.discard(fid(n - 1))  # peer 0 blocks the last author
            self.peers.append(Peer(i, wanted))
        self.conns: list[Conn] = []

    # --- actions -----------------------------------------------------------------------------

    def log(self, text: str) -> None:
        self.trace.append(text)

    def publish(self, i: int, count: int = 1) -> None:
        p = self.peers[i]
        p.held[p.id] = p.held.get(p.id, 0) + count
        self.log(f"publish p{i} -> seq {p.held[p.id]}")
        self.advanced(i, p.id, p.held[p.id])

    def advanced(self, i: int, feed: FeedId, seq: int) -> None:
        for c in self.conns:
            if c.open and i in c.sessions:
                self.run(c, i, c.sessions[i].local_advanced(feed, seq))

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
        """Peer i restarts; it may lose the baseline writes of its last moments."""
        for c in self.conns:
            if c.open and i in c.sessions:
                self.disconnect(c)
        p = self.peers[i]
        if p.baselines and self.rng.random() < 0.5:
            key = self.rng.choice(sorted(p.baselines))
            del p.baselines[key]
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
                frame = Msgs(tuple(synth(e.feed, q) for q in range(e.first, e.last + 1)))
                c.queues[to].append(frame)
            elif isinstance(e, rep.Ingest):
                self.ingest(c, me, e.messages)
            elif isinstance(e, rep.Drain):
                self.run(c, me, s.drained())
            elif isinstance(e, rep.SaveBaseline):
                peer.baselines[(to, e.direction)] = dict(e.table)
            elif isinstance(e, rep.CaughtUp):
                c.caught_up.add(me)
                self.log(f"p{me} caught up with p{to}")
            elif isinstance(e, rep.Close):
                raise SimFailure(f"p{me} closed the connection to p{to}: {e.code} {e.message}")
            elif isinstance(e, (rep.Plan, rep.SendForks, rep.RecordFork)):
                pass

    def ingest(self, c: Conn, me: int, raws: tuple[bytes, ...]) -> None:
        s = c.sessions[me]
        p = self.peers[me]
        changed: dict[FeedId, int] = {}
        for raw in raws:
            f, q = FeedId(raw[:32]), int.from_bytes(raw[32:], "big")
            if not s.accepts(f):
                raise SimFailure(f"p{me} was sent feed p{f[0] - 1} it does not accept")
            have = p.held.get(f, 0)
            if q > have + 1:
                raise SimFailure(f"p{me} got seq {q} of p{f[0] - 1} but holds {have}: a gap")
            if q == have + 1:
                p.held[f] = q
                changed[f] = q
        if changed:
            self.run(c, me, s.ingested(changed))
            for f, q in changed.items():
                for other in self.conns:
                    if other is not c and other.open and me in other.sessions:
                        self.run(other, me, other.sessions[me].local_advanced(f, q))

    def deliver_one(self) -> bool:
        ready = [(c, to) for c in self.conns if c.open for to in (c.a, c.b) if c.queues[to]]
        if not ready:
            return False
        c, to = self.rng.choice(ready)
        frame = c.queues[to].pop(0)
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
                self.publish(self.rng.randrange(n), self.rng.randint(1, 5))
            elif r < 0.35 and len(open_conns) < n:
                a, b = self.rng.sample(range(n), 2)
                if not any(c.open and {c.a, c.b} == {a, b} for c in self.conns):
                    self.connect(a, b, live=self.rng.random() < 0.7)
            elif r < 0.40 and open_conns:
                self.disconnect(self.rng.choice(open_conns))
            elif r < 0.42:
                self.crash(self.rng.randrange(n))
            else:
                self.deliver_one()
        # the end: everything closes, then every pair meets live until quiet
        for c in self.conns:
            self.disconnect(c)
        for a in range(n):
            for b in range(a + 1, n):
                self.connect(a, b, live=True)
        self.quiesce()

    def check_converged(self) -> None:
        best: dict[FeedId, int] = {}
        for p in self.peers:
            for f, q in p.held.items():
                best[f] = max(best.get(f, 0), q)
        for p in self.peers:
            for f in p.replicates:
                if p.held.get(f, 0) != best.get(f, 0):
                    raise SimFailure(f"p{p.index} holds p{f[0] - 1} up to "
                                     f"{p.held.get(f, 0)}, best is {best.get(f, 0)}")
            for f in set(p.held) - p.replicates:
                raise SimFailure(f"p{p.index} holds p{f[0] - 1}, which it does not replicate")
        for c in self.conns:
            if c.open and c.caught_up != {c.a, c.b}:
                raise SimFailure(f"p{c.a}-p{c.b} never caught up")

"""Generate spec/vectors/replication.json (spec/replication.md §12) from fixed seeds.

``python spec/make_replication_vectors.py`` writes the file; ``--check`` fails when the committed
file differs from what the code produces now. Every key, message and timestamp is derived from a
fixed label, so the output is byte for byte reproducible.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vectorfile import write_or_check

from feedlog.core import replication as rp
from feedlog.core.crypto import Keypair
from feedlog.core.encoding import encode
from feedlog.core.fork import decode_fork_proof, make_fork_proof
from feedlog.core.ids import FeedId
from feedlog.core.message import FeedState, Message, create
from feedlog.core.validate import decode_message
from feedlog.core.wire import (
    HEAD_SIZE,
    LENGTH_SIZE,
    MAX_FRAME_SIZE,
    MAX_NOTES_PER_FRAME,
    MAX_SEQ,
    MAX_TEXT,
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
    decode_body,
    encode_frame,
    head_prefix,
    make_note,
    msgs_frames,
)

OUT = Path(__file__).resolve().parent / "vectors" / "replication.json"
NETWORK_KEY_LABEL = b"feedlog/network/v1"
DEFAULT_PORT = 8765  # feedlog/net/transport.py (not imported: spec/ tools stay on feedlog.core)


def fixed(label: str, n: int = 32) -> bytes:
    return hashlib.sha256(b"feedlog replication vector " + label.encode()).digest()[:n]


def keys(name: str) -> Keypair:
    return Keypair.from_seed(fixed("key " + name))


def chain(kp: Keypair, n: int, tag: str, after: list[Message] | None = None) -> list[Message]:
    out = list(after or [])
    for _ in range(n):
        st = out[-1].state if out else FeedState(FeedId(kp.public))
        i = st.seq + 1
        out.append(create(kp, st, {"type": "post", "text": f"{tag} {i}"}, 1_700_000_000_000 + i))
    return out


# --- JSON forms of frames and entries -----------------------------------------------------------

def entry_json(e: Entry) -> list[Any]:
    """As on the wire: [feed, note], then the head (hex) if any, then forked if any."""
    out: list[Any] = [e.feed.hex(), e.note]
    if e.head is not None:
        out.append(e.head.hex())
    if e.forked is not None:
        out.append(e.forked)
    return out


def entry_of(j: list[Any]) -> Entry:
    head = bytes.fromhex(j[2]) if len(j) > 2 and isinstance(j[2], str) else None
    forked = j[-1] if len(j) > 2 and isinstance(j[-1], int) else None
    return Entry(bytes.fromhex(j[0]), j[1], forked, head)


def frame_json(f: Frame) -> dict[str, Any]:
    if isinstance(f, Hello):
        return {"type": "HELLO", "version": f.version, "baseline": f.baseline.hex(),
                "live": f.live}
    if isinstance(f, Notes):
        return {"type": "NOTES", "mode": f.mode, "last": f.last,
                "entries": [entry_json(e) for e in f.entries]}
    if isinstance(f, Msgs):
        return {"type": "MSGS", "messages": [m.hex() for m in f.messages]}
    if isinstance(f, Done):
        return {"type": "DONE", "sent": f.sent}
    if isinstance(f, Synced):
        return {"type": "SYNCED"}
    if isinstance(f, Fork):
        return {"type": "FORK", "proof": f.proof.hex()}
    if isinstance(f, Error):
        return {"type": "ERROR", "code": f.code, "message": f.message}
    return {"type": "PING"}


def table_json(t: rp.Table) -> list[list[Any]]:
    return [entry_json(t[f]) for f in sorted(t)]


# --- a tiny in-memory node driving a Session -----------------------------------------------------

@dataclass
class Node:
    """What the scripted session needs of a node: its messages, fork proofs and baselines."""

    name: str
    wanted: list[FeedId]
    store: dict[FeedId, list[bytes]] = field(default_factory=dict)
    forks: dict[FeedId, list[bytes]] = field(default_factory=dict)
    forked: dict[FeedId, int] = field(default_factory=dict)
    sent_base: rp.Table = field(default_factory=dict)
    recv_base: rp.Table = field(default_factory=dict)

    def head(self, f: FeedId) -> bytes | None:
        raws = self.store.get(f)
        return head_prefix(decode_message(raws[-1]).id) if raws else None

    def mine(self) -> rp.Table:
        return {f: Entry(f, make_note(len(self.store.get(f, [])), f not in self.forked),
                         self.forked.get(f), self.head(f)) for f in self.wanted}

    def seqs(self) -> dict[FeedId, int]:
        return {f: len(raws) for f, raws in self.store.items()}

    def state_json(self, live: bool) -> dict[str, Any]:
        return {"live": live, "mine": table_json(self.mine()),
                "have": {f.hex(): len(r) for f, r in sorted(self.store.items())},
                "store": {f.hex(): [m.hex() for m in r] for f, r in sorted(self.store.items())},
                "forks": {f.hex(): [p.hex() for p in ps] for f, ps in sorted(self.forks.items())},
                "sent_base": table_json(self.sent_base), "recv_base": table_json(self.recv_base)}


class Script:
    """Two Sessions fed each other's frames one at a time, alternating sides."""

    def __init__(self, a: Node, b: Node, live: bool) -> None:
        self.nodes = {"a": a, "b": b}
        self.sessions = {n: rp.Session(mine=x.mine(), seqs=x.seqs(), sent_base=dict(x.sent_base),
                                       recv_base=dict(x.recv_base), live=live)
                         for n, x in self.nodes.items()}
        self.sends: dict[str, list[bytes]] = {"a": [], "b": []}
        self.deliveries: list[list[Any]] = []
        self.plans: dict[str, Any] = {}
        self.caught_up: list[str] = []
        self._next = {"a": 0, "b": 0}

    def effects(self, side: str, effects: list[rp.Effect]) -> None:
        node, s = self.nodes[side], self.sessions[side]
        for e in effects:
            if isinstance(e, rp.Send):
                self.sends[side].append(encode_frame(e.frame))
            elif isinstance(e, rp.SendRange):
                self.sends[side] += msgs_frames(node.store[e.feed][e.first - 1 : e.last])
            elif isinstance(e, rp.SendForks):
                self.sends[side] += [encode_frame(Fork(p)) for p in node.forks.get(e.feed, [])]
            elif isinstance(e, rp.Ingest):
                seqs: dict[FeedId, int] = {}
                heads: dict[FeedId, bytes] = {}
                for raw in e.messages:
                    m = decode_message(raw)
                    assert s.accepts(m.author), "the script sends only accepted feeds"
                    held = node.store.setdefault(m.author, [])
                    if m.author in node.forked:
                        continue  # feed-forked: refused
                    if m.seq == len(held) and raw != held[-1]:
                        # another message of the seq we hold (§8.1): a fork, as ingest finds it
                        proof = make_fork_proof(decode_message(held[-1]), m).encode()
                        self.record(side, proof)
                        continue
                    assert m.seq == len(held) + 1, "the script streams in order"
                    held.append(raw)
                    seqs[m.author], heads[m.author] = m.seq, m.id[:HEAD_SIZE]
                self.effects(side, s.ingested(seqs, heads))
            elif isinstance(e, rp.RecordFork):
                self.record(side, e.proof)
            elif isinstance(e, rp.Drain):
                self.effects(side, s.drained())
            elif isinstance(e, rp.SaveBaseline):
                if e.direction == "sent":
                    node.sent_base = dict(e.table)
                else:
                    node.recv_base = dict(e.table)
            elif isinstance(e, rp.Plan):
                self.plans[side] = {
                    "incoming": {f.hex(): list(r) for f, r in e.incoming.items()},
                    "outgoing": {f.hex(): list(r) for f, r in e.outgoing.items()}}
            elif isinstance(e, rp.CaughtUp):
                self.caught_up.append(side)
            else:
                raise AssertionError(f"unexpected effect {e}")

    def record(self, side: str, raw: bytes) -> None:
        """As feedlog/net/replicator.py does: verify, keep it if the feed is ours, then
        announce the changed entry to the peer as an update."""
        node, s = self.nodes[side], self.sessions[side]
        proof = decode_fork_proof(raw)
        if proof.author in s.mine and proof.author not in node.forked:
            node.forks.setdefault(proof.author, []).append(raw)
            node.forked[proof.author] = proof.seq
            self.effects(side, s.local_changed({proof.author: node.mine()[proof.author]}))

    def pump(self) -> None:
        while True:
            moved = False
            for sender, receiver in (("a", "b"), ("b", "a")):
                i = self._next[sender]
                if i < len(self.sends[sender]):
                    self._next[sender] = i + 1
                    self.deliveries.append([receiver, i])
                    body = self.sends[sender][i][LENGTH_SIZE:]
                    self.effects(receiver, self.sessions[receiver].receive(decode_body(body)))
                    moved = True
            if not moved:
                return

    def run(self) -> None:
        for side in ("a", "b"):
            self.effects(side, self.sessions[side].start())
        self.pump()

    def result(self) -> dict[str, Any]:
        return {
            "sends": {side: [{"frame": frame_json(decode_body(raw[LENGTH_SIZE:])),
                              "encoded": raw.hex()} for raw in raws]
                      for side, raws in self.sends.items()},
            "deliveries": self.deliveries,
            "plans": self.plans,
            "caught_up": self.caught_up,
        }


# --- the vectors ---------------------------------------------------------------------------------

def frames(msgs: list[Message], proof: bytes) -> list[dict[str, Any]]:
    f1, f2, f3 = (keys(n).public for n in ("frame feed 1", "frame feed 2", "frame feed 3"))
    h1, h2, h3 = (fixed(f"head {i}", HEAD_SIZE) for i in (1, 2, 3))
    cases: list[tuple[str, Frame]] = [
        ("hello, no baseline, one-shot", Hello(VERSION, b"", False)),
        ("hello, with a baseline, live", Hello(VERSION, fixed("a baseline"), True)),
        ("notes, full vector, one frame", Notes(MODE_FULL, True, (
            Entry(f1, make_note(0, True)), Entry(f2, make_note(300, True), None, h2),
            Entry(f3, make_note(7, False), 5, h3)))),
        ("notes, first frame of a longer full vector", Notes(MODE_FULL, False, (
            Entry(f1, make_note(2**53, True), None, h1),))),
        ("notes, entries without a head: a forked feed held at seq 0, a sender naming no head",
         Notes(MODE_FULL, True, (Entry(f1, make_note(0, False), 1),
                                 Entry(f2, make_note(4, True))))),
        ("notes, delta vector with a removal", Notes(MODE_DELTA, True, (
            Entry(f2, make_note(301, True), None, fixed("head 301", HEAD_SIZE)),
            Entry(f1, -1)))),
        ("notes, empty vector", Notes(MODE_FULL, True, ())),
        ("notes, update", Notes(MODE_UPDATE, True, (Entry(f3, -1),))),
        ("msgs, two messages", Msgs(tuple(m.raw for m in msgs[:2]))),
        ("done", Done(1234)),
        ("synced", Synced()),
        ("fork", Fork(proof)),
        ("error", Error("bad-signature", "the peer sent an invalid message (bad-signature)")),
        ("ping", Ping()),
    ]
    return [{"name": n, "frame": frame_json(f), "encoded": encode_frame(f).hex()}
            for n, f in cases]


def invalid_frames() -> list[dict[str, Any]]:
    feed = keys("frame feed 1").public
    head = fixed("head 1", HEAD_SIZE)
    bodies: list[tuple[str, bytes, str]] = [
        ("not CBOR (a lone break byte)", b"\xff", "bad-frame"),
        ("non-canonical CBOR (PING with a 2-byte array head)", b"\x98\x01\x07", "bad-frame"),
        ("non-canonical CBOR (DONE with a 2-byte integer)", b"\x82\x03\x18\x05", "bad-frame"),
        ("trailing bytes after PING", b"\x81\x07\x00", "bad-frame"),
        ("a float inside", b"\x82\x03\xf9\x3c\x00", "bad-frame"),
        ("nested deeper than 16", b"\x82\x07" + b"\x81" * 17 + b"\x00", "bad-frame"),
        ("not an array", encode({"type": 7}), "bad-frame"),
        ("empty array", encode([]), "bad-frame"),
        ("type is text", encode(["ping"]), "bad-frame"),
        ("type is a boolean", encode([True]), "bad-frame"),
        ("unknown type 8", encode([8]), "unknown-frame"),
        ("unknown type -1", encode([-1]), "unknown-frame"),
        ("wrong arity: SYNCED with a field", encode([4, 0]), "bad-frame"),
        ("wrong arity: PING with a field", encode([7, 0]), "bad-frame"),
        ("wrong arity: HELLO with 3 fields", encode([0, 1, b""]), "bad-frame"),
        ("HELLO version is text", encode([0, "1", b"", False]), "bad-frame"),
        ("HELLO version negative", encode([0, -1, b"", False]), "bad-frame"),
        ("HELLO baseline of 31 bytes", encode([0, 1, b"\x00" * 31, False]), "bad-frame"),
        ("HELLO live is the integer 1", encode([0, 1, b"", 1]), "bad-frame"),
        ("NOTES mode 3", encode([1, 3, True, []]), "bad-frame"),
        ("NOTES mode is a boolean", encode([1, True, True, []]), "bad-frame"),
        ("NOTES last is an integer", encode([1, 0, 1, []]), "bad-frame"),
        ("NOTES too many entries (checked before the entries)",
         encode([1, 0, True, [[]] * (MAX_NOTES_PER_FRAME + 1)]), "too-many-notes"),
        ("NOTES entry with a 31-byte feed", encode([1, 0, True, [[feed[:31], 0]]]), "bad-frame"),
        ("NOTES entry with note -2", encode([1, 0, True, [[feed, -2]]]), "bad-frame"),
        ("NOTES entry with note above 2^54+1",
         encode([1, 0, True, [[feed, 2 * MAX_SEQ + 2]]]), "bad-frame"),
        ("NOTES entry with forked 0", encode([1, 0, True, [[feed, 3, 0]]]), "bad-frame"),
        ("NOTES entry with two forked", encode([1, 0, True, [[feed, 3, 1, 1]]]), "bad-frame"),
        ("NOTES entry with a head of 7 bytes", encode([1, 0, True, [[feed, 4, head[:7]]]]),
         "bad-frame"),
        ("NOTES entry with a head of 32 bytes", encode([1, 0, True, [[feed, 4, feed]]]),
         "bad-frame"),
        ("NOTES entry with a head at seq 0", encode([1, 0, True, [[feed, 1, head]]]),
         "bad-frame"),
        ("NOTES entry with a head and note -1", encode([1, 0, True, [[feed, -1, head]]]),
         "bad-frame"),
        ("NOTES entry with forked before the head", encode([1, 0, True, [[feed, 4, 1, head]]]),
         "bad-frame"),
        ("NOTES entry with two heads", encode([1, 0, True, [[feed, 4, head, head]]]),
         "bad-frame"),
        ("NOTES entry of 5 elements", encode([1, 0, True, [[feed, 4, head, 1, 1]]]),
         "bad-frame"),
        ("NOTES entry with a text head", encode([1, 0, True, [[feed, 4, "headhead"]]]),
         "bad-frame"),
        ("NOTES duplicate feed", encode([1, 0, True, [[feed, 0], [feed, 2]]]), "bad-frame"),
        ("NOTES update not last", encode([1, MODE_UPDATE, False, []]), "bad-frame"),
        ("MSGS without messages", encode([2, []]), "bad-frame"),
        ("MSGS with a text message", encode([2, ["hello"]]), "bad-frame"),
        ("MSGS with an oversize message", encode([2, [b"\x00" * 8193]]), "message-too-large"),
        ("DONE sent negative", encode([3, -1]), "bad-frame"),
        ("DONE sent above 2^53", encode([3, MAX_SEQ + 1]), "bad-frame"),
        ("FORK proof is text", encode([5, "proof"]), "bad-frame"),
        ("FORK proof above 24576 bytes", encode([5, b"\x00" * 24577]), "bad-frame"),
        ("ERROR code of 65 characters", encode([6, "x" * 65, ""]), "bad-frame"),
        ("ERROR message above 512 characters", encode([6, "x", "é" * (MAX_TEXT + 1)]),
         "bad-frame"),
    ]
    out: list[dict[str, Any]] = [{"name": n, "body": b.hex(), "code": c} for n, b, c in bodies]
    streams = [
        ("length 0", (0).to_bytes(4, "big"), "bad-frame"),
        ("length above MAX_FRAME (refused before the body arrives)",
         (MAX_FRAME_SIZE + 1).to_bytes(4, "big"), "frame-too-large"),
    ]
    out += [{"name": n, "stream": s.hex(), "code": c} for n, s, c in streams]
    return out


def digests() -> list[dict[str, Any]]:
    f = sorted(keys(f"digest feed {i}").public for i in range(3))
    cases: list[tuple[str, list[Entry]]] = [
        ("empty table", []),
        ("one feed at seq 0", [Entry(f[0], make_note(0, True))]),
        ("one feed at seq 5", [Entry(f[0], make_note(5, True))]),
        ("one feed at seq 5, don't send", [Entry(f[0], make_note(5, False))]),
        ("one feed at seq 5 with its head", [
            Entry(f[0], make_note(5, True), None, fixed("digest head 5", HEAD_SIZE))]),
        ("three feeds given out of order, one forked", [
            Entry(f[2], make_note(9, False), 4), Entry(f[0], make_note(1, True)),
            Entry(f[1], make_note(2**53, True))]),
        ("three feeds with heads given out of order, one forked", [
            Entry(f[2], make_note(9, False), 4, fixed("digest head 9", HEAD_SIZE)),
            Entry(f[0], make_note(1, True), None, fixed("digest head 1", HEAD_SIZE)),
            Entry(f[1], make_note(0, True))]),
    ]
    return [{"name": n, "table": [entry_json(e) for e in es],
             "digest": rp.digest({FeedId(e.feed): e for e in es}).hex()} for n, es in cases]


def sessions() -> list[dict[str, Any]]:
    ka, kb, kc, ke, kg = (keys(n) for n in ("alice", "bob", "carol", "eve", "gus"))
    a_id, b_id, c_id, e_id, g_id = (FeedId(k.public) for k in (ka, kb, kc, ke, kg))
    alice, bob, carol, gus = (chain(ka, 2, "alice"), chain(kb, 1, "bob"),
                              chain(kc, 4, "carol"), chain(kg, 2, "gus"))
    eve = chain(ke, 1, "eve")
    eve2a = chain(ke, 1, "eve fork a", eve)[1]
    eve2b = chain(ke, 2, "eve fork b", eve)
    proof = make_fork_proof(eve2a, eve2b[1]).encode()

    a = Node("a", [a_id, b_id, c_id, e_id])
    a.store = {a_id: [m.raw for m in alice], c_id: [carol[0].raw],
               e_id: [eve[0].raw, eve2a.raw]}
    a.forks, a.forked = {e_id: [proof]}, {e_id: 2}
    b = Node("b", [a_id, b_id, c_id, e_id, g_id])
    b.store = {b_id: [m.raw for m in bob], c_id: [m.raw for m in carol],
               e_id: [eve[0].raw] + [m.raw for m in eve2b[1:]], g_id: [m.raw for m in gus]}

    out: list[dict[str, Any]] = []
    before = {"a": a.state_json(False), "b": b.state_json(False)}
    first = Script(a, b, live=False)
    first.run()
    out.append({"name": "first sync, full vectors, one-shot", "live": False, "nodes": before,
                **first.result()})

    # between the two connections: alice posts, carol's feed grows at bob, bob drops gus
    alice = chain(ka, 1, "alice", alice)
    a.store[a_id].append(alice[-1].raw)
    carol = chain(kc, 2, "carol", carol)
    b.store[c_id] += [m.raw for m in carol[4:]]
    b.wanted.remove(g_id)
    before = {"a": a.state_json(True), "b": b.state_json(True)}
    second = Script(a, b, live=True)
    second.run()
    # live: alice publishes once both sides are caught up; the session pushes it to bob
    alice = chain(ka, 1, "alice", alice)
    a.store[a_id].append(alice[-1].raw)
    second.effects("a", second.sessions["a"].local_advanced(a_id, alice[-1].seq))
    second.pump()
    out.append({"name": "reconnect, delta vectors, live, one push", "live": True,
                "nodes": before, "published_after_caught_up": {
                    "side": "a", "feed": a_id.hex(), "message": alice[-1].raw.hex()},
                **second.result()})

    # a fork of equal length (§8.1): twin's key wrote two histories of 3 messages, diverging at
    # seq 2; a and b each hold one. Same seq, different heads: each sends its message 3, each
    # records the proof, tells the other in an update and offers the proof.
    kt = keys("twin")
    t_id = FeedId(kt.public)
    one = chain(kt, 1, "twin")
    x, y = chain(kt, 2, "twin laptop", one), chain(kt, 2, "twin desktop", one)
    c = Node("a", [a_id, t_id])
    c.store = {t_id: [m.raw for m in x]}
    d = Node("b", [b_id, t_id])
    d.store = {t_id: [m.raw for m in y]}
    before = {"a": c.state_json(False), "b": d.state_json(False)}
    third = Script(c, d, live=False)
    third.run()
    out.append({"name": "a fork of equal length found by the heads, one-shot", "live": False,
                "nodes": before, **third.result()})
    return out


def build() -> dict[str, Any]:
    kp = keys("frames")
    msgs = chain(kp, 2, "frames")
    fork_b = chain(kp, 1, "frames fork", msgs[:1])[1]
    proof = make_fork_proof(msgs[1], fork_b).encode()
    return {
        "about": "spec/replication.md §12; binary values are hex; generated by "
                 "spec/make_replication_vectors.py",
        "constants": {
            "version": VERSION, "max_frame": MAX_FRAME_SIZE, "max_notes": MAX_NOTES_PER_FRAME,
            "max_seq": MAX_SEQ, "max_message": 8192, "max_fork_proof": 3 * 8192,
            "max_error_code": 64, "max_error_message": MAX_TEXT,
            "baseline_tag": rp.BASELINE_TAG.hex(), "head_size": HEAD_SIZE,
            "default_network_key": hashlib.sha256(NETWORK_KEY_LABEL).hexdigest(),
            "default_port": DEFAULT_PORT,
        },
        "frames": frames(msgs, proof),
        "invalid_frames": invalid_frames(),
        "digests": digests(),
        "sessions": sessions(),
    }


def main() -> int:
    return write_or_check(OUT, json.dumps(build(), indent=1) + "\n", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

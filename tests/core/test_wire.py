"""Replication frames and the session (spec/replication.md): the vectors of
spec/vectors/replication.json checked against the code, and hostile input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core import replication as rp
from feedlog.core.encoding import encode
from feedlog.core.errors import FeedlogError, ProtocolError
from feedlog.core.fork import decode_fork_proof, make_fork_proof
from feedlog.core.ids import FeedId
from feedlog.core.validate import decode_message
from feedlog.core.wire import (
    MAX_FRAME_SIZE,
    MAX_NOTES_PER_FRAME,
    MAX_SEQ,
    VERSION,
    Done,
    Entry,
    Error,
    Fork,
    Frame,
    FrameDecoder,
    Hello,
    Msgs,
    Notes,
    Ping,
    Synced,
    _msgs_fast,
    decode_body,
    decode_body_reference,
    encode_frame,
    make_note,
    msgs_frames,
)
from feedlog.net.transport import DEFAULT_NETWORK_KEY, DEFAULT_PORT

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "vectors" / "replication.json").read_text())


def entry(j: list[Any]) -> Entry:
    """[feed, note, head?, forked?] as in spec/replication.md §5.2 (head in hex)."""
    rest = j[2:]
    head = bytes.fromhex(rest.pop(0)) if rest and isinstance(rest[0], str) else None
    forked = rest.pop(0) if rest else None
    assert not rest
    return Entry(bytes.fromhex(j[0]), j[1], forked, head)


def table(js: list[list[Any]]) -> rp.Table:
    return {FeedId(e.feed): e for e in map(entry, js)}


def frame_of(d: dict[str, Any]) -> Frame:
    """The frame the JSON fields describe (spec/replication.md §5.2), built independently."""
    t = d["type"]
    if t == "HELLO":
        return Hello(d["version"], bytes.fromhex(d["baseline"]), d["live"])
    if t == "NOTES":
        return Notes(d["mode"], d["last"], tuple(entry(e) for e in d["entries"]))
    if t == "MSGS":
        return Msgs(tuple(bytes.fromhex(m) for m in d["messages"]))
    if t == "DONE":
        return Done(d["sent"])
    if t == "SYNCED":
        return Synced()
    if t == "FORK":
        return Fork(bytes.fromhex(d["proof"]))
    if t == "ERROR":
        return Error(d["code"], d["message"])
    assert t == "PING"
    return Ping()


def test_constants() -> None:
    c = VECTORS["constants"]
    assert c["version"] == VERSION == 1
    assert c["max_frame"] == MAX_FRAME_SIZE and c["max_notes"] == MAX_NOTES_PER_FRAME
    assert c["max_seq"] == MAX_SEQ
    assert bytes.fromhex(c["baseline_tag"]) == rp.BASELINE_TAG == b"feedlog/baseline/v2\x00"
    assert c["head_size"] == 8
    assert bytes.fromhex(c["default_network_key"]) == DEFAULT_NETWORK_KEY \
        == hashlib.sha256(b"feedlog/network/v1").digest()
    assert c["default_port"] == DEFAULT_PORT


def test_every_frame_type_has_a_vector() -> None:
    types = {f["frame"]["type"] for f in VECTORS["frames"]}
    assert types == {"HELLO", "NOTES", "MSGS", "DONE", "SYNCED", "FORK", "ERROR", "PING"}


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_frame_vector(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["encoded"])
    frame = frame_of(case["frame"])
    assert encode_frame(frame) == raw
    assert int.from_bytes(raw[:4], "big") == len(raw) - 4
    assert decode_body(raw[4:]) == frame
    assert FrameDecoder().feed(raw) == [frame]


def test_frames_split_at_every_byte() -> None:
    stream = b"".join(bytes.fromhex(c["encoded"]) for c in VECTORS["frames"])
    expected = [frame_of(c["frame"]) for c in VECTORS["frames"]]
    dec = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
        assert dec.buffered <= MAX_FRAME_SIZE
    assert got == expected and dec.at_boundary()


def test_enough_invalid_cases() -> None:
    cases = VECTORS["invalid_frames"]
    assert len(cases) >= 12
    assert {c["code"] for c in cases} == {"bad-frame", "unknown-frame", "too-many-notes",
                                          "message-too-large", "frame-too-large"}


@pytest.mark.parametrize("case", VECTORS["invalid_frames"], ids=lambda c: c["name"])
def test_invalid_frame(case: dict[str, Any]) -> None:
    if "body" in case:
        body = bytes.fromhex(case["body"])
        with pytest.raises(ProtocolError) as exc:
            decode_body(body)
        assert exc.value.code == case["code"]
        stream = len(body).to_bytes(4, "big") + body
    else:
        stream = bytes.fromhex(case["stream"])
    if len(stream) - 4 <= MAX_FRAME_SIZE or "stream" in case:
        with pytest.raises(ProtocolError) as exc2:
            FrameDecoder().feed(stream)
        assert exc2.value.code == case["code"]


@pytest.mark.parametrize("case", VECTORS["digests"], ids=lambda c: c["name"])
def test_digest_vector(case: dict[str, Any]) -> None:
    assert rp.digest(table(case["table"])).hex() == case["digest"]


def test_digest_is_order_free_and_covers_every_field() -> None:
    case = VECTORS["digests"][-1]
    t = table(case["table"])
    assert rp.digest(dict(reversed(list(t.items())))).hex() == case["digest"]
    f, e = next(iter(t.items()))
    assert rp.digest({**t, f: Entry(e.feed, e.note + 2, e.forked)}).hex() != case["digest"]
    assert rp.digest({**t, f: Entry(e.feed, e.note, 7)}).hex() != case["digest"]
    assert e.head is not None  # the last case names heads: each of them counts too
    assert rp.digest({**t, f: Entry(e.feed, e.note, e.forked, bytes(8))}).hex() \
        != case["digest"]
    assert rp.digest({**t, f: Entry(e.feed, e.note, e.forked)}).hex() != case["digest"]


# --- the scripted sessions: replayed from the vector's inputs, compared frame by frame ----------

class Side:
    def __init__(self, d: dict[str, Any], live: bool) -> None:
        self.store = {FeedId(bytes.fromhex(f)): [bytes.fromhex(m) for m in ms]
                      for f, ms in d["store"].items()}
        self.forks = {FeedId(bytes.fromhex(f)): [bytes.fromhex(p) for p in ps]
                      for f, ps in d["forks"].items()}
        mine = table(d["mine"])
        self.forked = {f: e.forked for f, e in mine.items() if e.forked is not None}
        assert {f.hex(): len(r) for f, r in self.store.items()} == d["have"]
        self.session = rp.Session(
            mine=mine, seqs={f: len(r) for f, r in self.store.items()},
            sent_base=table(d["sent_base"]), recv_base=table(d["recv_base"]), live=live)
        self.sent: list[bytes] = []
        self.plan: rp.Plan | None = None
        self.caught_up = False

    def run(self, effects: list[rp.Effect]) -> None:
        s = self.session
        for e in effects:
            if isinstance(e, rp.Send):
                self.sent.append(encode_frame(e.frame))
            elif isinstance(e, rp.SendRange):
                self.sent += msgs_frames(self.store[e.feed][e.first - 1 : e.last])
            elif isinstance(e, rp.SendForks):
                self.sent += [encode_frame(Fork(p)) for p in self.forks[e.feed]]
            elif isinstance(e, rp.Ingest):
                for raw in e.messages:
                    m = decode_message(raw)
                    assert s.accepts(m.author)
                    held = self.store.setdefault(m.author, [])
                    if held and m.seq == len(held) and raw != held[-1]:
                        # the other history's message at our seq: the ingest proves the fork
                        self.record(make_fork_proof(decode_message(held[-1]), m).encode())
                        continue
                    assert m.seq == len(held) + 1
                    held.append(raw)
                    self.run(s.ingested({m.author: m.seq}, {m.author: m.id[:8]}))
            elif isinstance(e, rp.RecordFork):
                self.record(e.proof)
            elif isinstance(e, rp.Drain):
                self.run(s.drained())
            elif isinstance(e, rp.Plan):
                self.plan = e
            elif isinstance(e, rp.CaughtUp):
                self.caught_up = True
            else:
                assert isinstance(e, rp.SaveBaseline), e

    def record(self, raw: bytes) -> None:
        proof = decode_fork_proof(raw)
        s = self.session
        if proof.author in s.mine and proof.author not in self.forked:
            self.forks.setdefault(proof.author, []).append(raw)
            self.forked[proof.author] = proof.seq
            held = self.store.get(proof.author, [])
            head = decode_message(held[-1]).id[:8] if held else None
            self.run(s.local_changed({proof.author: Entry(
                proof.author, make_note(len(held), False), proof.seq, head)}))


@pytest.mark.parametrize("case", VECTORS["sessions"], ids=lambda c: c["name"])
def test_session_script(case: dict[str, Any]) -> None:
    sides = {n: Side(case["nodes"][n], case["live"]) for n in ("a", "b")}
    sends = {n: [bytes.fromhex(f["encoded"]) for f in case["sends"][n]] for n in ("a", "b")}
    for n in ("a", "b"):
        for f in case["sends"][n]:  # the recorded fields describe the recorded bytes
            assert decode_body(bytes.fromhex(f["encoded"])[4:]) == frame_of(f["frame"])
        sides[n].run(sides[n].session.start())
    deliveries = case["deliveries"]
    other = {"a": "b", "b": "a"}
    push = case.get("published_after_caught_up")
    for i, (to, index) in enumerate(deliveries):
        frm = other[to]
        assert sides[frm].sent[index] == sends[frm][index]  # produced before it is delivered
        sides[to].run(sides[to].session.receive(decode_body(sends[frm][index][4:])))
        if push is not None and i + 1 < len(deliveries) and sides["a"].caught_up \
                and sides["b"].caught_up and len(sides["a"].sent) == len(sends["a"]) - 1:
            s = sides[push["side"]]
            raw = bytes.fromhex(push["message"])
            feed = FeedId(bytes.fromhex(push["feed"]))
            s.store[feed].append(raw)
            s.run(s.session.local_advanced(feed, len(s.store[feed])))
            push = None
    assert push is None or case.get("published_after_caught_up") is None
    for n in ("a", "b"):
        assert sides[n].sent == sends[n]
        assert sides[n].caught_up and sides[n].session.caught_up
        plan = sides[n].plan
        assert plan is not None
        assert {f.hex(): list(r) for f, r in plan.incoming.items()} == \
            case["plans"][n]["incoming"]
        assert {f.hex(): list(r) for f, r in plan.outgoing.items()} == \
            case["plans"][n]["outgoing"]
    kinds = [type(decode_body(r[4:])).__name__ for r in sends["a"]]
    assert kinds[:2] == ["Hello", "Notes"] and "Done" in kinds and "Synced" in kinds


def test_sessions_cover_full_delta_fork_update_and_push() -> None:
    first, second, third = VECTORS["sessions"]
    modes = [[f["frame"]["mode"] for f in c["sends"][n] if f["frame"]["type"] == "NOTES"]
             for c in (first, second) for n in ("a", "b")]
    assert modes[0][0] == 0 and modes[1][0] == 0 and modes[2][0] == 1 and modes[3][0] == 1
    assert any(2 in m for m in modes)
    assert any(f["frame"]["type"] == "FORK" for f in first["sends"]["a"])
    assert second["sends"]["a"][-1]["frame"]["type"] == "MSGS"
    assert second["sends"]["a"][-1]["frame"]["messages"] == \
        [second["published_after_caught_up"]["message"]]
    # the equal-length fork: both hold seq 3 of one feed, with different heads; each sends its
    # own message 3 (and nothing else), each then holds the proof and offers it
    for n in ("a", "b"):
        [(feed, raws)] = third["nodes"][n]["store"].items()
        mine = raws[2]
        assert third["plans"][n] == {"incoming": {feed: [3, 3]}, "outgoing": {feed: [3, 3]}}
        msgs = [f["frame"]["messages"] for f in third["sends"][n] if f["frame"]["type"] == "MSGS"]
        assert msgs == [[mine]]
        assert [f["frame"]["type"] for f in third["sends"][n]].count("FORK") == 1


@pytest.mark.parametrize("mode", [True, False])
def test_notes_mode_must_be_an_integer(mode: bool) -> None:
    # regression: True == 1 and False == 0 in Python, so a boolean slipped through as a mode
    with pytest.raises(ProtocolError) as exc:
        decode_body(encode([1, mode, True, []]))
    assert exc.value.code == "bad-frame"


# --- hostile input: only feedlog errors, whatever the bytes ------------------------------------

VALID = [bytes.fromhex(c["encoded"]) for c in VECTORS["frames"]
         if len(c["encoded"]) < 4000]


def _only_protocol_errors(fn: Any, data: bytes) -> None:
    try:
        fn(data)
    except FeedlogError as exc:
        assert isinstance(exc, ProtocolError), exc


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_body_arbitrary_bytes(data: bytes) -> None:
    _only_protocol_errors(decode_body, data)
    _only_protocol_errors(FrameDecoder(max_frame=1024).feed, data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutated_frames(raw: bytes, data: st.DataObject) -> None:
    body = bytearray(raw[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        i = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            body.insert(i, data.draw(st.integers(0, 255)))
        elif body:
            del body[i]
    mutated = bytes(body)
    _only_protocol_errors(decode_body, mutated)
    _only_protocol_errors(FrameDecoder().feed, len(mutated).to_bytes(4, "big") + mutated)


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=5), max_leaves=20))
def test_decode_body_arbitrary_values(tail: Any) -> None:
    for kind in range(9):
        _only_protocol_errors(decode_body, encode([kind, tail]))
        if isinstance(tail, list):
            _only_protocol_errors(decode_body, encode([kind, *tail]))


# --- the MSGS fast path agrees with the general decoder -------------------------------------

def _outcome(fn: Any, body: bytes) -> Any:
    try:
        return ("ok", fn(body))
    except ProtocolError as exc:
        return ("error", exc.code)


def _msgs_body(items: list[bytes], wide: bool = False) -> bytes:
    """A MSGS frame body; ``wide`` writes a short array's head one size wider than needed."""
    array = encode(items)
    if wide and len(items) < 24:
        array = bytes([0x98, len(items)]) + array[1:]
    return b"\x82\x02" + array


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300) | st.sampled_from(
    [bytes(8192), bytes(8193), bytes(255), bytes(256), bytes(23), bytes(24)]),
    min_size=0, max_size=30), st.booleans(), st.data())
def test_msgs_fast_path_agrees_with_the_general_decoder(
        items: list[bytes], wide: bool, data: st.DataObject) -> None:
    body = _msgs_body(items, wide)
    fast = _msgs_fast(body)
    assert _outcome(decode_body, body) == _outcome(decode_body_reference, body)
    if items and not wide and all(len(i) <= 8192 for i in items):
        assert fast == Msgs(tuple(items))  # the canonical frame takes the fast path
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        i = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if op == "flip" and mutated:
            mutated[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            mutated.insert(i, data.draw(st.integers(0, 255)))
        elif op == "cut":
            del mutated[i:]
        elif mutated:
            del mutated[i]
    m = bytes(mutated)
    assert _outcome(decode_body, m) == _outcome(decode_body_reference, m)


def test_msgs_fast_path_declines_non_shortest_heads() -> None:
    msg = bytes(range(30))
    for body in [b"\x82\x02\x98\x01\x58\x1e" + msg,  # array head one size wide
                 b"\x82\x02\x81\x59\x00\x1e" + msg,  # byte string head one size wide
                 b"\x82\x02\x81\x58\x05" + msg[:5],  # a 1-byte length below 24
                 b"\x82\x02\x80"]:  # no message
        assert _msgs_fast(body) is None
        assert _outcome(decode_body, body)[0] == "error"

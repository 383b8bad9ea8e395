from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core import content
from feedlog.core.crypto import Keypair
from feedlog.core.errors import InvalidMessage, LocalError
from feedlog.core.fork import BROKEN_LINK, SAME_SEQ, decode_fork_proof, make_fork_proof
from feedlog.core.graph import Contact, replication_set
from feedlog.core.ids import FeedId
from feedlog.core.message import MAX_MESSAGE_SIZE, FeedState, create
from feedlog.core.validate import Link, decode_message, link, validate
from tests.conftest import keypair


def test_create_then_validate_chain(alice: Keypair) -> None:
    st_ = FeedState(FeedId(alice.public))
    for i in range(5):
        m = create(alice, st_, content.post(f"m{i}"), 1000 + i)
        assert validate(st_, m.raw) == m
        st_ = m.state
    assert st_.seq == 5


def test_create_refuses_what_receivers_would_reject(alice: Keypair, bob: Keypair) -> None:
    s = FeedState(FeedId(alice.public))
    with pytest.raises(LocalError) as e:
        create(alice, s, content.post("x" * MAX_MESSAGE_SIZE), 1)
    assert e.value.code == "too-large"
    with pytest.raises(LocalError):
        create(alice, s, {"type": "post", "n": 1.5}, 1)
    with pytest.raises(LocalError):
        create(alice, s, {"type": "Not Valid"}, 1)
    with pytest.raises(LocalError):
        create(alice, s, {"type": "about", "name": ""}, 1)
    with pytest.raises(LocalError):
        create(alice, s, {"type": "follow", "feed": b"short"}, 1)
    with pytest.raises(LocalError):
        create(bob, s, content.post("not my feed"), 1)


def test_unknown_and_malformed_known_types_are_valid_feed_messages(alice: Keypair) -> None:
    s = FeedState(FeedId(alice.public))
    m = create(alice, s, {"type": "x-game", "move": [1, 2]}, 1)
    assert validate(s, m.raw).type == "x-game"
    assert content.interpret(m.value) is None
    assert content.interpret({"type": "follow", "feed": "nope"}) is None


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_decoder_raises_only_invalid_message(data: bytes) -> None:
    with contextlib.suppress(InvalidMessage):
        decode_message(data)


@given(st.integers(0, 300), st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_any_flipped_byte_is_rejected_or_harmless(pos: int, val: int) -> None:
    k = keypair("flip")
    m = create(k, FeedState(FeedId(k.public)), content.post("flip me"), 5)
    raw = bytearray(m.raw)
    pos %= len(raw)
    if raw[pos] == val:
        return
    raw[pos] = val
    try:
        got = validate(FeedState(FeedId(k.public)), bytes(raw))
    except InvalidMessage:
        return
    pytest.fail(f"accepted a modified message: {got}")


def test_link_outcomes(alice: Keypair, bob: Keypair) -> None:
    a = FeedId(alice.public)
    m1 = create(alice, FeedState(a), content.post("1"), 1)
    m2 = create(alice, m1.state, content.post("2"), 2)
    m2b = create(alice, m1.state, content.post("2b"), 2)
    m3 = create(alice, m2.state, content.post("3"), 3)
    assert link(FeedState(a), m1) is Link.APPEND
    assert link(m1.state, m2) is Link.APPEND
    assert link(m2.state, m2) is Link.DUPLICATE
    assert link(m2.state, m2b) is Link.FORK
    assert link(m2b.state, m3) is Link.WRONG_PREVIOUS
    assert link(m1.state, m3) is Link.GAP
    assert link(m3.state, m1) is Link.OLDER
    with pytest.raises(InvalidMessage) as e:
        link(FeedState(FeedId(bob.public)), m1)
    assert e.value.code == "wrong-author"


def test_fork_proofs(alice: Keypair, bob: Keypair) -> None:
    a = FeedId(alice.public)
    m1 = create(alice, FeedState(a), content.post("1"), 1)
    m2 = create(alice, m1.state, content.post("2"), 2)
    m2b = create(alice, m1.state, content.post("2b"), 2)
    m3b = create(alice, m2b.state, content.post("3b"), 3)
    p = make_fork_proof(m2b, m2)
    assert p.kind == SAME_SEQ and p.seq == 2 and p.first.id < p.second.id
    assert decode_fork_proof(p.encode()) == p
    assert make_fork_proof(m2, m2b).encode() == p.encode()  # one fork, one proof
    q = make_fork_proof(m3b, m2)
    assert q.kind == BROKEN_LINK and q.first == m2
    for x, y in [(m1, m2), (m2, m2), (m1, m3b)]:
        with pytest.raises(InvalidMessage):
            make_fork_proof(x, y)
    other = create(bob, FeedState(FeedId(bob.public)), content.post("b"), 1)
    with pytest.raises(InvalidMessage):
        make_fork_proof(m1, other)
    forged = bytearray(m2b.raw)
    forged[-20] ^= 1  # inside the content: content-mismatch when decoded
    with pytest.raises(InvalidMessage):
        decode_fork_proof(make_fork_proof(m2, m2b).encode().replace(m2b.raw, bytes(forged)))


def test_replication_set() -> None:
    me, a, b, c, d, x = (FeedId(bytes([i]) * 32) for i in range(6))
    contacts = [
        Contact(me, a, "follow"), Contact(a, b, "follow"), Contact(b, c, "follow"),
        Contact(me, d, "unfollow"), Contact(a, x, "follow"), Contact(me, x, "block"),
    ]
    r = replication_set(me, contacts, hops=2)
    assert r.wanted == {me, a, b}
    assert r.blocked == {x}
    assert replication_set(me, contacts, hops=3).wanted == {me, a, b, c}
    assert replication_set(me, contacts, hops=0).wanted == {me}

"""``Chain`` (the publishing fast path) makes exactly the messages ``prepare`` + ``finish`` make.

``prepare``/``finish`` are the reference: one object per message, the generic encoders. A
``Chain`` encodes posts and headers by hand and keeps a batch as parallel lists; these tests
check that it produces the same bytes and the same Message values, accepts and refuses the same
contents with the same codes, and is left unchanged by a refused content.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core import content, encoding
from feedlog.core.crypto import Keypair
from feedlog.core.errors import LocalError
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import (
    MAX_MESSAGE_SIZE,
    MAX_SEQ,
    SIGN_TAG,
    Chain,
    FeedState,
    Message,
    finish,
    prepare,
    sign_header,
)
from feedlog.core.validate import validate
from tests.conftest import keypair

KEYS = keypair("chain")
AUTHOR = FeedId(KEYS.public)

texts = st.text(max_size=300)
flat_maps = st.dictionaries(
    st.text(max_size=8),
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=40),
    max_size=4,
).map(lambda d: {**d, "type": "x-test"})
nested = st.fixed_dictionaries({"type": st.just("x-nested"),
                                 "list": st.lists(st.integers(0, 300) | st.text(max_size=5),
                                                  max_size=4)})
contents_: st.SearchStrategy[Any] = (
    texts | flat_maps | nested
    | st.builds(lambda n: content.about(f"name {n}"), st.integers(0, 99))
    | st.builds(lambda b: content.contact("follow", b), st.binary(min_size=32, max_size=32)))


def reference(keys: Keypair, state: FeedState, items: list[Any], ts: int) -> list[Message]:
    out = []
    for item in items:
        u = prepare(keys.public, state, content.post(item) if isinstance(item, str) else item,
                    ts)
        out.append(finish(u, sign_header(keys, u.header)))
        state = u.state
    return out


def chained(keys: Keypair, state: FeedState, items: list[Any], ts: int) -> Chain:
    chain = Chain(keys.public, state, ts)
    for item in items:
        chain.add(item)
    return chain


def signed(keys: Keypair, chain: Chain, start: int = 0, stop: int | None = None) -> list[Message]:
    stop = len(chain) if stop is None else stop
    return chain.messages(start, stop, keys.sign_many(SIGN_TAG, chain.headers[start:stop]))


states = st.sampled_from([0, 1, 22, 23, 255, 65535, 2**32 - 1, 2**40]).map(
    lambda seq: FeedState(AUTHOR, seq, None if seq == 0 else MsgId(bytes(range(32)))))
stamps = st.sampled_from([0, 23, 24, 65536, 1_700_000_000_000, 2**63 - 1])


@given(states, st.lists(contents_, min_size=1, max_size=6), stamps)
@settings(max_examples=300, deadline=None)
def test_chain_makes_the_reference_messages(state: FeedState, items: list[Any],
                                            ts: int) -> None:
    chain = chained(KEYS, state, items, ts)
    want = reference(KEYS, state, items, ts)
    got = signed(KEYS, chain)
    assert got == want  # every field, the raw bytes among them
    assert chain.state == want[-1].state
    cut = len(items) // 2  # signed in two ranges, the second range first: the same messages
    assert signed(KEYS, chain, cut) + signed(KEYS, chain, 0, cut) == want[cut:] + want[:cut]


def test_chain_messages_validate_one_after_another() -> None:
    state = FeedState(AUTHOR)
    msgs = signed(KEYS, chained(KEYS, state, ["a", {"type": "x", "n": 1}, "é" * 30], 5))
    for m in msgs:
        assert validate(state, m.raw) == m
        state = m.state
    assert state.seq == 3


def test_an_empty_chain_keeps_the_state() -> None:
    state = FeedState(AUTHOR, 7, MsgId(bytes(32)))
    chain = Chain(KEYS.public, state, 1)
    assert len(chain) == 0 and chain.state == state and signed(KEYS, chain) == []


BAD: list[Any] = [
    {"type": "post", "n": 1.5},  # bad-cbor-type
    {"type": "Not Valid"},  # bad-content
    {"type": "about", "name": ""},
    {"type": "follow", "feed": b"short"},
    {"type": "post"},  # a post without text
    {"type": "x", 1: 2},
    {"no": "type"},
]


@pytest.mark.parametrize("bad", BAD)
def test_chain_refuses_what_prepare_refuses_with_the_same_code(bad: Any) -> None:
    state = FeedState(AUTHOR)
    with pytest.raises(LocalError) as ref:
        prepare(KEYS.public, state, bad, 1)
    chain = chained(KEYS, state, ["before"], 1)
    with pytest.raises(LocalError) as got:
        chain.add(bad)
    assert got.value.code == ref.value.code
    assert len(chain) == 1  # nothing added
    assert signed(KEYS, chain) == reference(KEYS, state, ["before"], 1)


def test_the_size_limit_is_the_same_on_both_sides_of_it() -> None:
    state = FeedState(AUTHOR, 300, MsgId(bytes(32)))
    sizes = []
    for n in range(MAX_MESSAGE_SIZE - 400, MAX_MESSAGE_SIZE - 150):
        text = "x" * n
        try:
            want = reference(KEYS, state, [text], 10**12)
        except LocalError as exc:
            assert exc.code == "too-large"
            with pytest.raises(LocalError) as info:
                Chain(KEYS.public, state, 10**12).add(text)
            assert info.value.code == "too-large"
            sizes.append(n)
            continue
        assert signed(KEYS, chained(KEYS, state, [text], 10**12)) == want
        assert len(want[0].raw) <= MAX_MESSAGE_SIZE
    assert sizes and sizes[0] > MAX_MESSAGE_SIZE - 400  # both sides were tried


def test_text_that_is_not_unicode_is_refused_with_a_code() -> None:
    chain = Chain(KEYS.public, FeedState(AUTHOR), 1)
    bads: list[Any] = ["\udcff", {"type": "post", "text": "a\ud800"},
                       {"type": "x", "l": ["\udc80"]}]
    for bad in bads:
        with pytest.raises(LocalError) as info:
            chain.add(bad)
        assert info.value.code in ("bad-content", "bad-cbor-type")
    assert len(chain) == 0


def test_chain_checks_author_timestamp_and_seq() -> None:
    other = keypair("other")
    with pytest.raises(LocalError) as info:
        Chain(other.public, FeedState(AUTHOR), 1)
    assert info.value.code == "wrong-author"
    with pytest.raises(LocalError) as info:
        Chain(KEYS.public, FeedState(AUTHOR), -1)
    assert info.value.code == "bad-timestamp"
    chain = Chain(KEYS.public, FeedState(AUTHOR, MAX_SEQ - 1, MsgId(bytes(32))), 1)
    chain.add("the last one")
    with pytest.raises(LocalError) as info:
        chain.add("one too many")
    assert info.value.code == "too-large"
    assert len(chain) == 1 and chain.state.seq == MAX_SEQ


def test_post_bodies_are_the_canonical_encoding() -> None:
    for text in ["", "a", "x" * 23, "x" * 24, "x" * 255, "x" * 256, "ü" * 40, "\x00"]:
        chain = chained(KEYS, FeedState(AUTHOR), [text], 1)
        assert chain.bodies[0] == encoding.encode({"type": "post", "text": text})
        assert chain.values[0] == content.post(text)

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core import encoding
from feedlog.core.errors import InvalidMessage, LocalError
from feedlog.core.ids import feed_id_text, msg_id_text, parse_feed_id, parse_msg_id

values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@given(values)
@settings(max_examples=300, deadline=None)
def test_round_trip(v: Any) -> None:
    assert encoding.decode_strict(encoding.encode(v)) == v


@given(values, st.binary(min_size=1, max_size=3))
@settings(max_examples=200, deadline=None)
def test_trailing_bytes_rejected(v: Any, extra: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        encoding.decode_strict(encoding.encode(v) + extra)
    assert info.value.code in ("trailing-bytes", "non-canonical", "malformed")


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_only_raise_feedlog_errors(data: bytes) -> None:
    def fixed(d: bytes) -> Any:
        return encoding.decode_fixed(d, what="x")

    for fn in (encoding.decode_strict, fixed):
        try:
            v = fn(data)
        except InvalidMessage:
            continue
        assert encoding.encode(v) == data  # accepted means canonical


@given(st.recursive(st.none() | st.integers(0, 2**64 - 1) | st.binary(max_size=300),
                    lambda inner: st.lists(inner, max_size=5), max_leaves=10))
@settings(max_examples=300, deadline=None)
def test_fast_canonical_size_matches_encoder(v: Any) -> None:
    data = encoding.encode(v)
    assert encoding.canonical_size(v) == len(data)
    assert encoding.decode_fixed(data, what="x") == v


@pytest.mark.parametrize("hexdata,code", [
    ("1801", "non-canonical"), ("0102", "trailing-bytes"), ("9f01ff", "non-canonical"),
    ("c24101", "non-canonical"), ("a2616101616102", "non-canonical"), ("f93c00", "bad-cbor-type"),
    ("f7", "bad-cbor-type"), ("a10101", "bad-cbor-type"), ("5f4101ff", "non-canonical"),
    ("c249010000000000000000", "bad-cbor-type"), ("c0", "malformed"), ("", "malformed"),
    ("a2617a01616101", "non-canonical"),
])
def test_strict_rejections(hexdata: str, code: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        encoding.decode_strict(bytes.fromhex(hexdata))
    assert info.value.code == code


def test_deep_nesting_rejected() -> None:
    v: Any = 1
    for _ in range(40):
        v = [v]
    with pytest.raises(InvalidMessage):
        encoding.decode_strict(encoding.encode(v))


@given(st.binary(min_size=32, max_size=32))
def test_id_text_round_trip(raw: bytes) -> None:
    t = feed_id_text(raw)
    assert len(t) == 57 and t == t.lower() and t.startswith("feed_")
    assert parse_feed_id(t) == raw and parse_feed_id(t.upper()) == raw
    assert all(c.isalnum() or c == "_" for c in t)
    assert parse_msg_id(msg_id_text(raw)) == raw


@pytest.mark.parametrize("text", [
    "", "feed_", "msg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "feed_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",  # pad bits set
    "feed_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1a",  # 1 is not base32
    "feed_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # 51 chars
    "@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.ed25519",
])
def test_bad_feed_ids(text: str) -> None:
    with pytest.raises(LocalError) as info:
        parse_feed_id(text)
    assert info.value.code == "bad-id"

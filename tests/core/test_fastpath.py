"""The fast decoders agree with the reference decoders: same acceptance, same value, same code.

``encoding.decode_strict`` and ``validate.decode_message`` try a hand-written parser first and
fall back to the reference path (``*_reference``) for anything it cannot prove canonical. The
danger is a fast path that accepts what the reference rejects, or returns a different value; so
besides comparing outcomes, these tests check the fast parsers directly on every input, and that
they really are taken for ordinary messages (otherwise agreement would be trivial).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core import encoding
from feedlog.core.content import check_content
from feedlog.core.crypto import sha256, verify, verify_many
from feedlog.core.errors import InvalidMessage
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import (
    CONTENT_TAG,
    MAX_MESSAGE_SIZE,
    VERSION,
    FeedState,
    Message,
    create,
    encode_header,
    encode_message,
)
from feedlog.core.validate import (
    _parse_fast,
    _post,
    decode_message,
    decode_message_reference,
    stored_fields,
)
from tests.conftest import keypair

values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=30)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10,
)


def typed(v: Any) -> Any:
    """A form of ``v`` where True and 1 (and dict key order) are told apart."""
    if isinstance(v, dict):
        return ("map", [(k, typed(x)) for k, x in v.items()])
    if isinstance(v, list):
        return ("array", [typed(x) for x in v])
    return (type(v).__name__, v)


def outcome_value(fn: Any, data: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", typed(fn(data)))
    except InvalidMessage as exc:
        return ("error", exc.code, exc.fatal)


def fast_value(data: bytes) -> tuple[bool, Any]:
    """Whether the fast parser alone accepts ``data``, and its value."""
    try:
        value, end = encoding._parse_item(data, 0, 0)
    except (encoding._NotProven, IndexError, UnicodeDecodeError):
        return False, None
    return end == len(data), value


def check_value(data: bytes) -> None:
    ref = outcome_value(encoding.decode_strict_reference, data)
    assert outcome_value(encoding.decode_strict, data) == ref
    accepted, value = fast_value(data)
    if accepted:  # the fast path may decline a valid input, never accept an invalid one
        assert ref == ("ok", typed(value))


def mutations(data: bytes, pos: int, byte: int, cut: int) -> list[bytes]:
    pos %= len(data) + 1
    out = [data[:pos] + bytes([byte]) + data[pos:], data[:pos] + data[pos + cut:]]
    if pos < len(data):
        out.append(data[:pos] + bytes([byte]) + data[pos + 1:])
        out.append(data[:pos] + bytes([data[pos] ^ (1 << (byte % 8))]) + data[pos + 1:])
    return out


@given(values)
@settings(max_examples=300, deadline=None)
def test_canonical_values_take_the_fast_path(v: Any) -> None:
    data = encoding.encode(v)
    accepted, value = fast_value(data)
    assert accepted and value == v
    assert typed(value) == typed(encoding.decode_strict_reference(data))  # canonical key order
    check_value(data)


@given(values, st.integers(0, 400), st.integers(0, 255), st.integers(1, 3))
@settings(max_examples=600, deadline=None)
def test_mutated_values_agree(v: Any, pos: int, byte: int, cut: int) -> None:
    for data in mutations(encoding.encode(v), pos, byte, cut):
        check_value(data)


@given(st.binary(max_size=48))
@settings(max_examples=600, deadline=None)
def test_random_bytes_agree(data: bytes) -> None:
    check_value(data)


def test_known_non_canonical_forms_decline_the_fast_path() -> None:
    for hexdata in ["1801", "0102", "9f01ff", "c24101", "a2616101616102", "f93c00", "f7",
                    "a10101", "5f4101ff", "a2617a01616101", "62c328", "7f6161ff", "d81c81d81d00",
                    "c2430100001a", "3817", "790001", "a1617a780161", "a1617a781861"]:
        data = bytes.fromhex(hexdata)
        assert not fast_value(data)[0], hexdata
        check_value(data)


# --- whole messages ------------------------------------------------------------------------

def outcome_message(fn: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        m = fn(raw)
    except InvalidMessage as exc:
        return ("error", exc.code, exc.fatal)
    return ("ok", m.raw, m.id, m.header, m.signature, m.author, m.seq, m.previous, m.timestamp,
            m.content_size, m.content_hash, m.content, typed(m.value))


def check_message(raw: bytes) -> None:
    ref = outcome_message(decode_message_reference, raw)
    assert outcome_message(decode_message, raw) == ref
    try:
        fast = _parse_fast(raw)
    except IndexError:
        fast = None
    except InvalidMessage:  # content errors come from check_content with the reference code
        fast = None
    if fast is not None:
        assert ref == outcome_message(lambda _: fast, raw)
    # what a store files a row under, from the header alone: never raises, and for a valid
    # message the id, author and seq it decodes to
    fields = stored_fields(raw)
    if ref[0] == "ok":
        assert fields == (ref[2], ref[5], ref[6])


INTS = st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
                        2**63, 2**64 - 1, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE + 1])


def head(major: int, n: int, wide: int) -> bytes:
    """A CBOR head for ``n``, in its shortest form (wide=0) or up to 3 sizes wider."""
    sizes = [(24, 0, 0), (0x100, 24, 1), (0x10000, 25, 2), (0x100000000, 26, 4),
             (2**64, 27, 8)]
    i = next(k for k, (lim, _, _) in enumerate(sizes) if n < lim)
    i = min(i + wide, len(sizes) - 1)
    if i == 0:
        return bytes([major << 5 | n])
    _, ai, width = sizes[i]
    return bytes([major << 5 | ai]) + n.to_bytes(width, "big")


@st.composite
def uint_item(draw: st.DrawFn, n: int, odd: bool) -> bytes:
    form = draw(st.sampled_from(["wide", "bignum", "negative"])) if odd else "canonical"
    if form == "wide":
        return head(0, n, draw(st.integers(1, 3)))
    if form == "bignum":  # tag 2 with the big-endian bytes
        body = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        return b"\xc2" + head(2, len(body), 0) + body
    if form == "negative":
        return head(1, n, 0)
    return head(0, n, 0)


@st.composite
def bstr_item(draw: st.DrawFn, data: bytes, odd: bool) -> bytes:
    form = draw(st.sampled_from(["wide", "indefinite", "text"])) if odd else "canonical"
    if form == "wide":
        return head(2, len(data), draw(st.integers(1, 3))) + data
    if form == "indefinite":
        return b"\x5f" + head(2, len(data), 0) + data + b"\xff"
    if form == "text":
        return head(3, len(data), 0) + data
    return head(2, len(data), 0) + data


FAULTS = ["version", "author", "seq", "previous", "timestamp", "size", "digest", "count",
          "header", "header-tail", "signature", "content", "outer", "trailing", "body"]


@st.composite
def built_messages(draw: st.DrawFn) -> bytes:
    """Messages assembled field by field: mostly right, with up to two fields made odd (an edge
    value, a wrong length or type, or a non-canonical encoding of the right value)."""
    k = keypair("fastpath")
    odd = draw(st.sets(st.sampled_from(FAULTS), max_size=2))

    def pick(field: str, right: Any, wrong: st.SearchStrategy[Any]) -> Any:
        return draw(wrong) if field in odd and draw(st.booleans()) else right

    def enc(field: str) -> bool:  # make the encoding of this field odd?
        return field in odd and draw(st.booleans())

    body = draw(st.one_of(
        st.builds(lambda t: encoding.encode({"type": "post", "text": t}), st.text(max_size=40)),
        values.map(encoding.encode),
    ))
    body = pick("body", body, st.binary(max_size=20))
    seq = pick("seq", draw(st.integers(1, 3)), INTS)
    previous = None if seq == 1 else bytes(range(32))
    previous = pick("previous", previous, st.sampled_from([None, bytes(31), bytes(33)]))
    size = pick("size", len(body), INTS)
    digest = pick("digest", sha256(CONTENT_TAG, body), st.sampled_from([bytes(32), bytes(33)]))
    author = pick("author", k.public, st.sampled_from([k.public[:31], k.public + b"\x00"]))
    timestamp = pick("timestamp", 1_700_000_000_000, INTS)
    items = [draw(uint_item(pick("version", 1, st.sampled_from([0, 2, 24])), enc("version"))),
             draw(bstr_item(author, enc("author"))),
             draw(uint_item(seq, enc("seq"))),
             b"\xf6" if previous is None else draw(bstr_item(previous, enc("previous"))),
             draw(uint_item(timestamp, enc("timestamp"))),
             draw(uint_item(size, enc("size"))),
             draw(bstr_item(digest, enc("digest")))]
    count = pick("count", 7, st.sampled_from([6, 8]))
    items = [*items, b"\x00"][:count]
    header = head(4, count, 1 if enc("count") else 0) + b"".join(items)
    header += pick("header-tail", b"", st.sampled_from([b"\x00", b"\xf6"]))
    signature = pick("signature", bytes(range(64)), st.sampled_from([bytes(63), bytes(65)]))
    content_item = draw(st.one_of(bstr_item(body, enc("content")), st.just(b"\xf6")))
    outer: bytes = pick("outer", b"\x83", st.sampled_from([b"\x98\x03", b"\x84", b"\x82"]))
    raw = (outer + draw(bstr_item(header, enc("header")))
           + draw(bstr_item(signature, enc("signature"))) + content_item)
    if outer == b"\x84":
        raw += b"\xf6"
    if outer == b"\x82":
        raw = raw[: -len(content_item)]
    tail: bytes = pick("trailing", b"", st.sampled_from([b"\x00", b"\xf6"]))
    return raw + tail


@given(built_messages())
@settings(max_examples=600, deadline=None)
def test_built_messages_agree(raw: bytes) -> None:
    check_message(raw)


@given(st.text(max_size=60), st.integers(0, 2**63 - 1), st.integers(0, 5))
@settings(max_examples=200, deadline=None)
def test_ordinary_messages_take_the_fast_path(text: str, timestamp: int, seq: int) -> None:
    k = keypair("fastpath")
    state = FeedState(FeedId(k.public), seq, None if seq == 0 else MsgId(bytes(32)))
    m = create(k, state, {"type": "post", "text": text, "n": seq}, timestamp)
    assert _parse_fast(m.raw) == m == decode_message_reference(m.raw)
    check_message(m.raw)
    bare = encode_message(m.header, m.signature, None)  # content dropped
    fast = _parse_fast(bare)
    assert fast is not None and fast.content is None and fast.value is None
    check_message(bare)


@given(st.integers(0, 600), st.integers(0, 255), st.integers(1, 3), st.integers(1, 3))
@settings(max_examples=800, deadline=None)
def test_mutated_messages_agree(pos: int, byte: int, cut: int, seq: int) -> None:
    k = keypair("fastpath")
    state = FeedState(FeedId(k.public), seq - 1, None if seq == 1 else MsgId(bytes(32)))
    m = create(k, state, {"type": "post", "text": "mutate me", "tags": ["a", 1]}, 1234567)
    for raw in mutations(m.raw, pos, byte, cut):
        check_message(raw)


def test_header_fields_of_every_width() -> None:
    k = keypair("fastpath")
    body = encoding.encode({"type": "x"})
    for n in (1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1):
        header = encode_header(k.public, n, None if n == 1 else bytes(32), n, len(body),
                               sha256(CONTENT_TAG, body))
        raw = encode_message(header, bytes(64), body)
        m = _parse_fast(raw)
        assert m is not None and m.seq == n and m.timestamp == n
        check_message(raw)


# --- the hand-written encoders ---------------------------------------------------------------

@given(st.binary(min_size=0, max_size=40), st.integers(0, 2**64 - 1),
       st.none() | st.binary(max_size=40), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
       st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_encode_header_is_the_canonical_array(author: bytes, seq: int, previous: bytes | None,
                                              timestamp: int, size: int, digest: bytes) -> None:
    assert encode_header(author, seq, previous, timestamp, size, digest) == encoding.encode(
        [VERSION, author, seq, previous, timestamp, size, digest])


@given(st.binary(max_size=300), st.binary(max_size=70), st.none() | st.binary(max_size=70000))
@settings(max_examples=200, deadline=None)
def test_encode_message_is_the_canonical_array(header: bytes, signature: bytes,
                                               content: bytes | None) -> None:
    assert encode_message(header, signature, content) == encoding.encode(
        [header, signature, content])


@given(values | st.dictionaries(st.text(max_size=30), st.none() | st.booleans()
                                | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=300)
                                | st.text(max_size=300), max_size=6))
@settings(max_examples=400, deadline=None)
def test_encode_checked_is_check_then_encode(v: Any) -> None:
    encoding.check_subset(v)
    assert encoding.encode_checked(v) == encoding.encode(v)


def test_encode_checked_refuses_what_check_subset_refuses() -> None:
    for bad in ({"type": "x", "n": 1.5}, {"type": "x", "n": 2**64}, {"type": "x", 1: 2},
                {"type": "x", "n": -(2**64) - 1}, {"type": "x", "s": {1, 2}}):
        with pytest.raises(InvalidMessage) as info:
            encoding.encode_checked(bad)
        assert info.value.code == "bad-cbor-type"


# --- batched signing and verification ---------------------------------------------------------

def test_sign_many_and_verify_many_agree_with_one_at_a_time() -> None:
    k, other = keypair("fastpath"), keypair("other")
    tag = b"feedlog/test/v1\x00"
    datas = [b"", b"x", bytes(range(256)) * 40, b"y" * 9000, b"z"]  # the buffer grows
    sigs = k.sign_many(tag, datas)
    assert sigs == [k.sign(tag, d) for d in datas]
    items = [(k.public, d, s) for d, s in zip(datas, sigs, strict=True)]
    flipped = bytearray(sigs[1])
    flipped[5] ^= 1
    items += [
        (other.public, datas[0], sigs[0]),  # wrong key
        (k.public, datas[1], bytes(flipped)),  # forged
        (k.public, datas[2] + b"!", sigs[2]),  # other data
        (k.public[:31], datas[0], sigs[0]),  # short key
        (k.public, datas[0], sigs[0][:63]),  # short signature
        (k.public, datas[0], sigs[0] + b"\x00"),  # long signature
        (bytes(32), datas[0], sigs[0]),  # not a point
    ]
    expected = [verify(p, tag, d, s) for p, d, s in items]
    assert expected == [True] * 5 + [False] * 7
    assert verify_many(tag, items) == expected


def test_message_stays_frozen_with_its_own_init() -> None:
    k = keypair("fastpath")
    m = create(k, FeedState(FeedId(k.public)), {"type": "post", "text": "x"}, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.seq = 2  # type: ignore[misc]
    again = decode_message_reference(m.raw)
    assert again == m
    assert dataclasses.replace(m, seq=5).seq == 5
    assert [getattr(again, f.name) for f in dataclasses.fields(Message)] == [
        getattr(m, f.name) for f in dataclasses.fields(Message)]


def post_outcome(c: bytes) -> tuple[Any, ...]:
    """What the general content path says of ``c`` (the definition ``_post`` must match)."""
    return outcome_value(check_content, c)


def check_post(c: bytes) -> None:
    fast = _post(c)
    if fast is not None:  # never accepts what the general path refuses, or another value
        assert ("ok", typed(fast)) == post_outcome(c)


POST_TEXTS = ["", "a", "x" * 23, "x" * 24, "é" * 12, "x" * 255, "x" * 256, "ü" * 700,
              "x" * 65535, "\u2028\U0001f600", "nul\x00byte", "\ufffe\ufeff",
              "ends like the tail: dtypedpost"]


@pytest.mark.parametrize("text", POST_TEXTS, ids=[f"{len(t)}-chars" for t in POST_TEXTS])
def test_plain_posts_take_the_post_path(text: str) -> None:
    c = encoding.encode({"type": "post", "text": text})
    assert _post(c) == {"text": text, "type": "post"}
    check_post(c)


def test_post_path_declines_every_other_form() -> None:
    text = "hello"
    canonical = encoding.encode({"type": "post", "text": text})
    head, tail = b"\xa2\x64text", b"\x64type\x64post"
    others = [
        head + b"\x78\x05hello" + tail,  # a wide head for a short text
        head + b"\x79\x00\x05hello" + tail,
        head + b"\x79\x00\x30" + b"x" * 48 + tail,  # 2-byte head below 256
        head + b"\x7a\x00\x00\x00\x05hello" + tail,  # 4-byte head: never taken
        head + b"\x7f\x65hello\xff" + tail,  # indefinite text
        head + b"\x65hel\xfflo"[:6] + tail,  # invalid UTF-8
        head + b"\x66\xed\xa0\x80abc" + tail,  # an encoded surrogate
        head + b"\x45hello" + tail,  # bytes, not text
        head + b"\x66hello" + tail,  # length says one byte more
        head + b"\x64hello" + tail,  # one byte less
        canonical + b"\x00",  # trailing byte
        canonical[:-1],
        b"\xa2\x64type\x64post\x64text\x65hello",  # keys out of order
        b"\xa3" + canonical[1:] + b"\x61z\x00",  # a third key (after the others: unsorted)
        b"\xa3\x61a\x00" + canonical[1:],  # a third key, sorted first
        canonical.replace(b"post", b"posT"),
        canonical.replace(b"post", b"pots"),
        b"\xbf" + canonical[1:] + b"\xff",  # indefinite map
    ]
    assert _post(canonical) is not None
    for c in others:
        assert _post(c) is None, c
        check_post(c)


@given(st.text(max_size=300), st.integers(0, 400), st.integers(0, 255), st.integers(1, 3))
@settings(max_examples=600, deadline=None)
def test_mutated_posts_agree(text: str, pos: int, byte: int, cut: int) -> None:
    c = encoding.encode({"type": "post", "text": text})
    check_post(c)
    for m in mutations(c, pos, byte, cut):
        check_post(m)

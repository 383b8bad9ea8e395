"""box-stream (spec/replication.md §3): known-answer vectors, round trips, and hostile input.

Vectors are read in place from ../shared/vectors/box-stream/ (the sibling of the repository
root); only the vector tests skip when that folder is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core.boxstream import (
    HEADER_SIZE,
    MAX_BODY_SIZE,
    MAX_PACKET_SIZE,
    BoxStreamReader,
    BoxStreamWriter,
    nonce_add,
)
from feedlog.core.errors import LocalError, ProtocolError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VECTOR_DIR = SHARED / "vectors" / "box-stream"
MISSING = f"shared vectors folder not found: {SHARED}"

KEY = bytes(range(32))
NONCE = bytes(range(100, 124))


def _load() -> dict[str, Any] | None:
    if not SHARED.is_dir():
        return None
    data: dict[str, Any] = json.loads((VECTOR_DIR / "box-stream-c.vectors.json").read_text())
    return data


VECTORS = _load()
needs_vectors = pytest.mark.skipif(VECTORS is None, reason=MISSING)


def _case() -> dict[str, Any]:
    assert VECTORS is not None
    case: dict[str, Any] = VECTORS["cases"][0]
    return case


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def feed(reader: BoxStreamReader, data: bytes, step: int | None = None) -> list[bytes]:
    """Feed ``data`` within the reader's budget (at most ``step`` bytes a call), draining."""
    out: list[bytes] = []
    i = 0
    while i < len(data):
        n = reader.receive_budget() if step is None else min(step, reader.receive_budget())
        reader.receive_data(data[i : i + n])
        i += n
        out += reader.next_chunks()
    return out


def expect_code(code: str, exc: pytest.ExceptionInfo[ProtocolError]) -> None:
    assert exc.value.code == code


# -- known-answer vectors ------------------------------------------------------------------


@needs_vectors
def test_vector_nonces_follow_the_counter_rule() -> None:
    case = _case()
    nonce = h(case["initial_nonce"])
    for i, packet in enumerate(case["packets"]):
        assert nonce_add(nonce, 2 * i) == h(packet["header_nonce"])
        assert nonce_add(nonce, 2 * i + 1) == h(packet["body_nonce"])
    assert nonce_add(nonce, 2 * len(case["packets"])) == h(case["goodbye_nonce"])


@needs_vectors
def test_vector_writer_reproduces_packets_and_goodbye() -> None:
    case = _case()
    writer = BoxStreamWriter(h(case["key"]), h(case["initial_nonce"]))
    for packet in case["packets"]:
        sealed = writer.seal(h(packet["plaintext"]))
        assert sealed[:HEADER_SIZE] == h(packet["header"])
        assert sealed[HEADER_SIZE:] == h(packet["body"])
    assert writer.goodbye() == h(case["goodbye_header"])
    assert writer.closed


@needs_vectors
def test_vector_reader_opens_packets_and_goodbye() -> None:
    case = _case()
    reader = BoxStreamReader(h(case["key"]), h(case["initial_nonce"]))
    for packet in case["packets"]:
        reader.receive_data(h(packet["header"]))
        assert reader.next_chunks() == []
        reader.receive_data(h(packet["body"]))
        assert reader.next_chunks() == [h(packet["plaintext"])]
    assert not reader.closed
    reader.receive_data(h(case["goodbye_header"]))
    assert reader.closed
    reader.receive_data(b"")  # clean EOF after the goodbye


@needs_vectors
def test_vector_tampered_body_is_rejected() -> None:
    assert VECTORS is not None
    for neg in VECTORS["negative"]:
        reader = BoxStreamReader(h(neg["key"]), h(neg["header_nonce"]))
        reader.receive_data(h(neg["header"]))  # the header alone still authenticates
        with pytest.raises(ProtocolError) as exc:
            reader.receive_data(h(neg["body"]))
        expect_code("box-auth-failed", exc)
        assert reader.next_chunks() == []


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 100, 4095, 4096, 4097, 8192, 8193, 3 * 4096 + 7])
def test_round_trip_splits_into_bounded_packets(size: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    writer = BoxStreamWriter(KEY, NONCE)
    sealed = writer.seal(plaintext)
    packets = -(-size // MAX_BODY_SIZE)
    assert len(sealed) == size + packets * HEADER_SIZE
    reader = BoxStreamReader(KEY, NONCE)
    chunks = feed(reader, sealed + writer.goodbye())
    assert all(1 <= len(c) <= MAX_BODY_SIZE for c in chunks)
    assert len(chunks) == packets
    assert b"".join(chunks) == plaintext
    assert reader.closed


def test_empty_plaintext_produces_nothing() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    assert writer.seal(b"") == b""
    # ... and does not advance the nonce
    assert writer.goodbye() == BoxStreamWriter(KEY, NONCE).goodbye()


def test_one_byte_chunked_delivery() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    messages = [b"a", b"hello" * 300, bytes(5000), b"z"]
    wire = b"".join(writer.seal(m) for m in messages) + writer.goodbye()
    reader = BoxStreamReader(KEY, NONCE)
    chunks = feed(reader, wire, step=1)
    assert b"".join(chunks) == b"".join(messages)
    assert reader.closed
    reader.receive_data(b"")


def test_iteration_takes_chunks() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    reader = BoxStreamReader(KEY, NONCE)
    reader.receive_data(writer.seal(b"one") + writer.seal(b"two"))
    assert list(reader) == [b"one", b"two"]
    assert reader.next_chunks() == []
    assert reader.receive_budget() == MAX_PACKET_SIZE


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=0, max_size=9000), max_size=6),
    step=st.integers(min_value=1, max_value=MAX_PACKET_SIZE),
)
def test_round_trip_random(messages: list[bytes], step: int) -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    wire = b"".join(writer.seal(m) for m in messages) + writer.goodbye()
    reader = BoxStreamReader(KEY, NONCE)
    assert b"".join(feed(reader, wire, step=step)) == b"".join(messages)
    assert reader.closed


def test_nonce_wraps_mod_2_192() -> None:
    top = b"\xff" * 24
    assert nonce_add(top, 1) == bytes(24)
    assert nonce_add(top, 2) == bytes(23) + b"\x01"
    start = b"\xff" * 23 + b"\xfe"
    writer = BoxStreamWriter(KEY, start)
    sealed = writer.seal(b"x")
    # header at ff..fe, body at ff..ff, next packet at 00..00
    body_box = nacl.bindings.crypto_secretbox(b"x", top, KEY)
    header_plain = nacl.bindings.crypto_secretbox_open(sealed[:HEADER_SIZE], start, KEY)
    assert header_plain == b"\x00\x01" + body_box[:16]
    assert sealed[HEADER_SIZE:] == body_box[16:]
    second = writer.seal(b"y")
    assert nacl.bindings.crypto_secretbox_open(second[:HEADER_SIZE], bytes(24), KEY)
    reader = BoxStreamReader(KEY, start)
    assert feed(reader, sealed + second + writer.goodbye()) == [b"x", b"y"]


# -- ends of the stream --------------------------------------------------------------------


def test_eof_without_goodbye() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    reader = BoxStreamReader(KEY, NONCE)
    assert feed(reader, writer.seal(b"data")) == [b"data"]
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(b"")
    expect_code("unexpected-eof", exc)


def test_eof_on_a_fresh_stream() -> None:
    with pytest.raises(ProtocolError) as exc:
        BoxStreamReader(KEY, NONCE).receive_data(b"")
    expect_code("unexpected-eof", exc)


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_truncated_packet_then_eof(cut: int) -> None:
    packet = BoxStreamWriter(KEY, NONCE).seal(b"0123456789")
    reader = BoxStreamReader(KEY, NONCE)
    reader.receive_data(packet[:cut])
    assert reader.next_chunks() == []
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(b"")
    expect_code("unexpected-eof", exc)


def test_truncated_goodbye_then_eof() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    reader = BoxStreamReader(KEY, NONCE)
    reader.receive_data(writer.goodbye()[:-1])
    assert not reader.closed
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(b"")
    expect_code("unexpected-eof", exc)


def test_data_after_goodbye_in_the_same_chunk() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    reader = BoxStreamReader(KEY, NONCE)
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(writer.seal(b"ok") + writer.goodbye() + b"\x00")
    expect_code("data-after-goodbye", exc)
    assert reader.closed
    assert reader.next_chunks() == [b"ok"]  # authenticated before the failure


def test_data_after_goodbye_in_a_later_chunk() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    reader = BoxStreamReader(KEY, NONCE)
    reader.receive_data(writer.goodbye())
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(b"more")
    expect_code("data-after-goodbye", exc)


def test_writer_refuses_after_goodbye() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    writer.goodbye()
    with pytest.raises(LocalError):
        writer.seal(b"late")
    with pytest.raises(LocalError):
        writer.goodbye()


# -- tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("bit", [0, 7, 8 * 15 + 3, 8 * 16, 8 * 17 + 1, 8 * HEADER_SIZE - 1])
def test_flipped_bit_in_header(bit: int) -> None:
    packet = bytearray(BoxStreamWriter(KEY, NONCE).seal(b"payload"))
    packet[bit // 8] ^= 1 << (bit % 8)
    reader = BoxStreamReader(KEY, NONCE)
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(bytes(packet))
    expect_code("box-auth-failed", exc)
    assert reader.next_chunks() == []


def test_flipped_bit_in_body() -> None:
    packet = bytearray(BoxStreamWriter(KEY, NONCE).seal(b"payload"))
    packet[-1] ^= 0x80
    reader = BoxStreamReader(KEY, NONCE)
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(bytes(packet))
    expect_code("box-auth-failed", exc)


def test_replayed_packet_is_rejected() -> None:
    packet = BoxStreamWriter(KEY, NONCE).seal(b"once")
    reader = BoxStreamReader(KEY, NONCE)
    reader.receive_data(packet)
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(packet)
    expect_code("box-auth-failed", exc)


def test_wrong_key_is_rejected() -> None:
    packet = BoxStreamWriter(KEY, NONCE).seal(b"secret")
    with pytest.raises(ProtocolError) as exc:
        BoxStreamReader(bytes(32), NONCE).receive_data(packet)
    expect_code("box-auth-failed", exc)


@pytest.mark.parametrize("length", [0, MAX_BODY_SIZE + 1, 0xFFFF])
def test_authenticated_bad_length(length: int) -> None:
    # A peer holding the key can still announce a length the format forbids.
    header_plain = length.to_bytes(2, "big") + b"\x01" * 16
    header = nacl.bindings.crypto_secretbox(header_plain, NONCE, KEY)
    reader = BoxStreamReader(KEY, NONCE)
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(header)
    expect_code("box-bad-length", exc)


def test_failed_reader_stays_dead() -> None:
    reader = BoxStreamReader(KEY, NONCE)
    with pytest.raises(ProtocolError):
        reader.receive_data(bytes(HEADER_SIZE))
    assert reader.error is not None
    with pytest.raises(ProtocolError) as exc:
        reader.receive_data(BoxStreamWriter(KEY, NONCE).seal(b"valid"))
    expect_code("box-auth-failed", exc)
    with pytest.raises(ProtocolError):
        reader.receive_data(b"")


# -- bounded buffering ---------------------------------------------------------------------


def test_reader_refuses_more_than_its_budget() -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    wire = writer.seal(bytes(MAX_BODY_SIZE)) + writer.seal(b"next")
    reader = BoxStreamReader(KEY, NONCE)
    assert reader.receive_budget() == MAX_PACKET_SIZE
    with pytest.raises(LocalError) as exc:
        reader.receive_data(wire[: MAX_PACKET_SIZE + 1])
    assert exc.value.code == "box-buffer-full"
    reader.receive_data(wire[:MAX_PACKET_SIZE])  # refused call changed nothing
    # one full packet is held undelivered: only the rest of one packet may follow
    assert reader.receive_budget() == MAX_PACKET_SIZE - MAX_BODY_SIZE
    with pytest.raises(LocalError):
        reader.receive_data(wire[MAX_PACKET_SIZE : 2 * MAX_PACKET_SIZE])
    assert reader.next_chunks() == [bytes(MAX_BODY_SIZE)]
    assert reader.receive_budget() == MAX_PACKET_SIZE
    reader.receive_data(wire[MAX_PACKET_SIZE:])
    assert reader.next_chunks() == [b"next"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=MAX_PACKET_SIZE), min_size=1, max_size=40))
def test_budget_is_never_negative_and_always_refills(steps: list[int]) -> None:
    writer = BoxStreamWriter(KEY, NONCE)
    wire = writer.seal(bytes(range(256)) * 60)
    reader = BoxStreamReader(KEY, NONCE)
    pos = 0
    for step in steps:
        if pos == len(wire):
            break
        take = min(step, reader.receive_budget(), len(wire) - pos)
        reader.receive_data(wire[pos : pos + take])
        pos += take
        assert 0 <= reader.receive_budget() <= MAX_PACKET_SIZE
        reader.next_chunks()
        assert reader.receive_budget() > 0


# -- hostile bytes -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=600), max_size=12),
    eof=st.booleans(),
    valid_prefix=st.booleans(),
)
def test_random_bytes_raise_only_protocol_error(
    chunks: list[bytes], eof: bool, valid_prefix: bool
) -> None:
    reader = BoxStreamReader(KEY, NONCE)
    writer = BoxStreamWriter(KEY, NONCE)
    stream = ([writer.seal(b"prefix")] if valid_prefix else []) + chunks
    try:
        for chunk in stream:
            if chunk:
                reader.receive_data(chunk)
                reader.next_chunks()
        if eof:
            reader.receive_data(b"")
    except ProtocolError as exc:
        assert exc.code in {
            "box-auth-failed",
            "box-bad-length",
            "unexpected-eof",
            "data-after-goodbye",
        }

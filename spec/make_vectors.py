"""Generate spec/vectors/feed.json from fixed seeds (spec/feed.md §9).

Run ``python spec/make_vectors.py`` to write the file, ``--check`` to fail when the committed file
differs from what the code produces now (CI does this, so every change of wire bytes is
deliberate). Nothing here reads a clock or draws randomness: seeds and timestamps are fixed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from vectorfile import write_or_check

from feedlog.core import content, encoding
from feedlog.core.crypto import Keypair
from feedlog.core.ids import FeedId, feed_id_text, msg_id_text
from feedlog.core.message import (
    MAX_MESSAGE_SIZE,
    SIGN_TAG,
    FeedState,
    Message,
    content_hash,
    create,
    encode_header,
    encode_message,
)

OUT = Path(__file__).resolve().parent / "vectors" / "feed.json"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def seed(label: str) -> bytes:
    return hashlib.sha256(b"feedlog test seed " + label.encode()).digest()


def hx(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def state_json(s: FeedState) -> dict[str, Any]:
    return {"author": s.author.hex(), "seq": s.seq, "head": hx(s.head)}


def sign_raw_parts(
    keys: Keypair,
    *,
    seq: int,
    previous: bytes | None,
    body: bytes | None,
    size: int | None = None,
    digest: bytes | None = None,
    timestamp: int = T0,
    header: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Build a header (or take one) and sign it properly: the author's real signature."""
    if header is None:
        header = encode_header(
            keys.public,
            seq,
            previous,
            timestamp,
            len(body or b"") if size is None else size,
            content_hash(body or b"") if digest is None else digest,
        )
    return header, keys.sign(SIGN_TAG, header)


def valid_feed() -> tuple[Keypair, list[Message], dict[str, Any]]:
    alice = Keypair.from_seed(seed("alice"))
    bob = Keypair.from_seed(seed("bob"))
    contents: list[dict[str, Any]] = [
        content.about("Alice"),
        content.post("hello, feedlog"),
        content.contact("follow", bob.public),
        content.contact("block", bytes(32)),
        content.contact("unblock", bytes(32)),
        content.contact("unfollow", bob.public),
        {"type": "x-poll", "question": "tea?", "options": ["yes", "no"], "n": -3},
        content.post("ünïcödé ✓ and a longer text " * 4),
    ]
    state = FeedState(FeedId(alice.public))
    msgs: list[Message] = []
    for i, c in enumerate(contents):
        m = create(alice, state, c, T0 + i * 1000)
        msgs.append(m)
        state = m.state
    entries = [
        {
            "seq": m.seq,
            "raw": m.raw.hex(),
            "id": m.id.hex(),
            "id_text": msg_id_text(m.id),
            "previous": hx(m.previous),
            "timestamp": m.timestamp,
            "header": m.header.hex(),
            "signature": m.signature.hex(),
            "content": hx(m.content),
            "content_hash": m.content_hash.hex(),
            "type": m.type,
        }
        for m in msgs
    ]
    feed = {
        "name": "one author, every content type",
        "seed": alice.seed.hex(),
        "author": alice.public.hex(),
        "author_text": feed_id_text(alice.public),
        "messages": entries,
    }
    return alice, msgs, feed


def content_absent(keys: Keypair, m1: Message) -> dict[str, Any]:
    """A valid message stored without its content (dropped locally)."""
    body = encoding.encode(content.post("dropped later"))
    header, sig = sign_raw_parts(keys, seq=2, previous=m1.id, body=body, timestamp=T0 + 5)
    raw = encode_message(header, sig, None)
    return {
        "name": "content absent (null): the header still verifies",
        "state": state_json(m1.state),
        "raw": raw.hex(),
        "content_hash": content_hash(body).hex(),
    }


def invalid_cases(alice: Keypair, msgs: list[Message]) -> list[dict[str, Any]]:
    mallory = Keypair.from_seed(seed("mallory"))
    m1, m2, m3 = msgs[0], msgs[1], msgs[2]
    after1, after2 = m1.state, m2.state
    empty = FeedState(FeedId(alice.public))
    cases: list[dict[str, Any]] = []

    def add(name: str, state: FeedState, raw: bytes, code: str, fatal: bool = True) -> None:
        cases.append(
            {"name": name, "state": state_json(state), "raw": raw.hex(), "code": code,
             "fatal": fatal}
        )

    body = encoding.encode(content.post("evil twin"))

    forged = bytearray(m2.raw)
    forged[-len(m2.content or b"") - 1 - 64 + 5] ^= 0x01  # a bit inside the signature
    add("forged signature", after1, bytes(forged), "bad-signature")

    h, _ = sign_raw_parts(mallory, seq=2, previous=m1.id, body=body)
    add("signed by another key than the author in the header", after1,
        encode_message(encode_header(alice.public, 2, m1.id, T0, len(body), content_hash(body)),
                       mallory.sign(SIGN_TAG, encode_header(alice.public, 2, m1.id, T0,
                                                            len(body), content_hash(body))),
                       body),
        "bad-signature")

    h, s = sign_raw_parts(alice, seq=2, previous=hashlib.sha256(b"x").digest(), body=body)
    add("wrong previous (validly signed: proof of a fork)", after1,
        encode_message(h, s, body), "wrong-previous")

    h, s = sign_raw_parts(alice, seq=2, previous=hashlib.sha256(b"x").digest(), body=body)
    sig = bytearray(s)
    sig[0] ^= 0x80
    add("wrong previous with a forged signature", after1, encode_message(h, bytes(sig), body),
        "bad-signature")

    h, s = sign_raw_parts(alice, seq=2, previous=m1.id, body=body)
    add("fork: a second validly signed message at the head's seq", after2,
        encode_message(h, s, body), "fork")

    add("seq gap", after1, m3.raw, "seq-gap", fatal=False)
    add("duplicate of the head", after2, m2.raw, "duplicate", fatal=False)
    add("older than the head", after2, m1.raw, "older", fatal=False)

    h, s = sign_raw_parts(alice, seq=0, previous=None, body=body)
    add("seq 0", empty, encode_message(h, s, body), "seq-zero")

    add("wrong author: bob's state, alice's message", FeedState(FeedId(mallory.public)), m1.raw,
        "wrong-author")

    h, s = sign_raw_parts(alice, seq=1, previous=hashlib.sha256(b"x").digest(), body=body)
    add("first message with a previous", empty, encode_message(h, s, body), "bad-previous")

    h, s = sign_raw_parts(alice, seq=3, previous=None, body=body)
    add("later message without a previous", after2, encode_message(h, s, body), "bad-previous")

    # Non-canonical integer: seq 1 written as 0x18 0x01 inside a validly signed header.
    canon = encode_header(alice.public, 1, None, T0, len(body), content_hash(body))
    noncanon = canon[:36] + b"\x18\x01" + canon[37:]
    h, s = sign_raw_parts(alice, seq=1, previous=None, body=body, header=noncanon)
    add("non-canonical integer in the header", empty, encode_message(h, s, body),
        "non-canonical")

    # A tagged bignum exactly as long as the canonical integer: seq 65536 written as
    # c2 43 01 00 00 instead of 1a 00 01 00 00 (a decoder that only compares lengths accepts it).
    canon = encode_header(alice.public, 65536, m1.id, T0, len(body), content_hash(body))
    assert canon[36:41] == b"\x1a\x00\x01\x00\x00"
    bignum = canon[:36] + b"\xc2\x43\x01\x00\x00" + canon[41:]
    h, s = sign_raw_parts(alice, seq=65536, previous=m1.id, body=body, header=bignum)
    add("tagged bignum integer in the header, same length as canonical", empty,
        encode_message(h, s, body), "non-canonical")
    # CBOR value sharing (tags 28/29) can make an array that contains itself.
    add("self-containing array through value-sharing tags", empty,
        bytes.fromhex("d81c83d81d00f6f6"), "non-canonical")

    # Non-canonical length: the header byte string with a 2-byte length where 1 byte suffices.
    raw = bytearray(m1.raw)
    hl = len(m1.header)
    assert raw[1] == 0x58 and raw[2] == hl
    add("non-canonical length of the header byte string", empty,
        bytes(raw[:1]) + b"\x59" + hl.to_bytes(2, "big") + bytes(raw[3:]), "non-canonical")

    add("indefinite-length message array", empty, b"\x9f" + m1.raw[1:] + b"\xff",
        "non-canonical")
    add("trailing bytes", empty, m1.raw + b"\x00", "trailing-bytes")
    add("truncated", empty, m1.raw[:-1], "malformed")
    add("not CBOR at all", empty, b"\xff\xff", "malformed")

    big = encoding.encode({"type": "post", "text": "x" * (MAX_MESSAGE_SIZE - 100)})
    h, s = sign_raw_parts(alice, seq=1, previous=None, body=big)
    add("oversize message", empty, encode_message(h, s, big), "too-large")

    h, s = sign_raw_parts(alice, seq=1, previous=None, body=None, size=MAX_MESSAGE_SIZE + 1,
                          digest=bytes(32))
    add("declared content size over the limit (content absent)", empty,
        encode_message(h, s, None), "too-large")

    h = encoding.encode([2, alice.public, 1, None, T0, len(body), content_hash(body)])
    add("unknown version", empty, encode_message(h, alice.sign(SIGN_TAG, h), body),
        "unknown-version")

    add("signature of 63 bytes", empty, encode_message(m1.header, m1.signature[:63], m1.content),
        "bad-shape")
    h = encoding.encode([1, alice.public, 1, None, T0, len(body)])
    add("header with 6 fields", empty, encode_message(h, alice.sign(SIGN_TAG, h), body),
        "bad-shape")

    other = encoding.encode(content.post("not what was signed"))
    add("content does not match its signed hash", empty,
        encode_message(m1.header, m1.signature, other), "content-mismatch")

    def signed_with_content(c: bytes) -> bytes:
        hh, ss = sign_raw_parts(alice, seq=1, previous=None, body=c)
        return encode_message(hh, ss, c)

    add("content is not a map", empty, signed_with_content(encoding.encode(["post"])),
        "bad-content")
    add("content without a type", empty, signed_with_content(encoding.encode({"text": "hi"})),
        "bad-content")
    add("content type not allowed", empty,
        signed_with_content(encoding.encode({"type": "Post!"})), "bad-content")
    # {"type": "post", "a": 1} with keys in the wrong order: "type" before "a".
    unordered = b"\xa2" + encoding.encode("type") + encoding.encode("post") + b"\x61a\x01"
    add("content map keys out of canonical order", empty, signed_with_content(unordered),
        "non-canonical")
    floaty = b"\xa2\x61n\xf9\x3c\x00" + encoding.encode("type") + encoding.encode("post")
    add("float in content", empty, signed_with_content(floaty), "bad-cbor-type")
    dupkey = b"\xa2" + (encoding.encode("type") + encoding.encode("post")) * 2
    add("duplicate key in content", empty, signed_with_content(dupkey), "non-canonical")
    return cases


def build() -> str:
    alice, msgs, feed = valid_feed()
    doc = {
        "description": "feedlog message vectors (spec/feed.md). All binary fields are hex. "
        "'valid_feeds' validate in order from an empty feed; each 'invalid' case is validated "
        "against 'state' (author, seq, head; seq 0 = empty) and must fail with 'code'.",
        "constants": {
            "sign_tag": SIGN_TAG.hex(),
            "max_message_size": MAX_MESSAGE_SIZE,
        },
        "valid_feeds": [feed],
        "valid_content_absent": [content_absent(alice, msgs[0])],
        "invalid": invalid_cases(alice, msgs),
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    return write_or_check(OUT, build(), description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

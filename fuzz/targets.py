"""Every decoder of untrusted bytes, as one list of fuzz targets.

The hypothesis tests (tests/robust/test_fuzz_decoders.py) and the atheris harness
(``python -m fuzz.harness NAME``, ``make fuzz``) both walk ``TARGETS``, so a new decoder is
covered everywhere by adding one ``Target(...)`` line here.

A target turns arbitrary bytes into a value or raises. The properties checked for each one:

1. Only errors of the feedlog tree (``FeedlogError``) escape ``decode``; anything else (an
   IndexError, a RecursionError, a MemoryError, a failed internal check) is a finding.
2. Every seed decodes.
3. A seed changed by one byte (replaced, inserted or deleted) is rejected, or decodes to a value
   whose ``canonical`` bytes are the changed input itself (a different valid input with its own
   single byte form) or equal the seed's (another spelling of the same thing, such as an id in
   upper case). ``authenticated`` targets must reject every change that alters the value.
   Ids are text defined modulo letter case, so for them the changed input is compared after
   ``spelling`` (lower case, blanks stripped).

Seeds are built from fixed keys (no randomness) so every run and every machine fuzzes the same
starting corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from feedlog.core import bundle, discovery, encoding, wire
from feedlog.core.boxstream import BoxStreamReader, BoxStreamWriter
from feedlog.core.content import check_content, interpret
from feedlog.core.crypto import Keypair
from feedlog.core.errors import FeedlogError, HandshakeError, ProtocolError, RemoteError
from feedlog.core.fork import decode_fork_proof, make_fork_proof
from feedlog.core.group_content import (
    group_content,
    message_from_content,
    post_content,
    root_from_content,
)
from feedlog.core.handshake import (
    MSG1_SIZE,
    MSG2_SIZE,
    MSG3_SIZE,
    MSG4_SIZE,
    ClientHandshake,
    ServerHandshake,
)
from feedlog.core.ids import FeedId, feed_id_text, msg_id_text, parse_feed_id, parse_msg_id
from feedlog.core.message import FeedState, Message, create, encode_message
from feedlog.core.validate import check_signature, decode_message, validate
from feedlog.core.view import MsgRef
from feedlog.identity import decode_key_file


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    decode: Callable[[bytes], Any]
    seeds: Callable[[], list[bytes]]
    canonical: Callable[[Any], bytes]
    authenticated: bool = False
    spelling: Callable[[bytes], bytes] = bytes
    """Maps an input to the form ``canonical`` is compared with: the identity, except for text
    that is defined modulo letter case and surrounding blanks (ids)."""


def key(label: str) -> Keypair:
    return Keypair.from_seed(hashlib.sha256(b"feedlog-fuzz/" + label.encode()).digest())


ALICE = key("alice")
BOB = key("bob")
NETWORK_KEY = hashlib.sha256(b"feedlog-fuzz/network").digest()


@functools.cache
def _chain() -> tuple[Message, ...]:
    """Alice's feed: a name, a post, a follow, a group root and a group post."""
    s = FeedState(FeedId(ALICE.public))
    out: list[Message] = []
    items: list[dict[str, Any]] = [
        {"type": "about", "name": "Alice"},
        {"type": "post", "text": "hello \u00e9\u6f22 \U0001f600"},
        {"type": "follow", "feed": BOB.public},
    ]
    for i, c in enumerate(items):
        m = create(ALICE, s, c, 1_700_000_000_000 + i)
        out.append(m)
        s = m.state
    root = create(ALICE, s, group_content("garden", [ALICE.public, BOB.public]), 1_700_000_000_100)
    out.append(root)
    ref = MsgRef(root.author, root.seq, root.id)
    out.append(create(ALICE, root.state, post_content(ref, [ref], "first", reply=ref),
                      1_700_000_000_200))
    return tuple(out)


# --- messages ---------------------------------------------------------------------------------


def _message_seeds() -> list[bytes]:
    chain = _chain()
    dropped = encode_message(chain[1].header, chain[1].signature, None)  # content not held
    return [m.raw for m in chain] + [dropped]


def _canonical_message(m: Message) -> bytes:
    return encode_message(m.header, m.signature, m.content)


def _decode_signed(raw: bytes) -> Message:
    m = decode_message(raw)
    check_signature(m)
    return m


_STATE_AT_2 = functools.cache(lambda: _chain()[1].state)


def _validate_at_2(raw: bytes) -> Message:
    """validate() against Alice's feed at seq 2: only her seq-3 message is accepted."""
    return validate(_STATE_AT_2(), raw)


# --- strict CBOR and content ------------------------------------------------------------------


def _cbor_seeds() -> list[bytes]:
    values: list[Any] = [
        0, 23, 24, 255, 256, 2**32, 2**64 - 1, -1, -(2**64), b"", b"\x00" * 30, "", "text \u00e9",
        True, False, None, [], [1, [2, [3, []]]], {"a": 1, "bb": [b"x", None]},
        {"type": "post", "text": "hi"},
    ]
    return [encoding.encode(v) for v in values] + _content_seeds()


def _content_seeds() -> list[bytes]:
    return [m.content for m in _chain() if m.content is not None]


def _decode_content(body: bytes) -> tuple[dict[str, Any], Any]:
    value = check_content(body)
    return value, interpret(value)


def _decode_group(body: bytes) -> tuple[dict[str, Any], Any, Any]:
    value = check_content(body)
    mid, author = hashlib.sha256(body).digest(), ALICE.public
    return (value, root_from_content(mid, author, 4, 1, value),
            message_from_content(mid, author, 5, 2, value))


# --- ids --------------------------------------------------------------------------------------


def _id_seeds() -> list[bytes]:
    return [feed_id_text(ALICE.public).encode(), msg_id_text(_chain()[0].id).encode(),
            feed_id_text(bytes(32)).encode(), msg_id_text(b"\xff" * 32).encode()]


def _decode_id(data: bytes) -> str:
    text = data.decode("utf-8", errors="surrogateescape")
    if text.strip().lower().startswith("msg_"):
        return msg_id_text(parse_msg_id(text))
    return feed_id_text(parse_feed_id(text))


# --- fork proofs ------------------------------------------------------------------------------


@functools.cache
def _fork_seeds() -> list[bytes]:
    chain = _chain()
    twin = create(ALICE, chain[1].state, {"type": "post", "text": "twin"}, 5)
    detour = create(ALICE, FeedState(chain[2].author, 3, twin.id),
                    {"type": "post", "text": "detour"}, 6)
    return [make_fork_proof(chain[2], twin).encode(), make_fork_proof(chain[2], detour).encode()]


# --- key file ---------------------------------------------------------------------------------


def _key_seeds() -> list[bytes]:
    doc = json.dumps({"format": "feedlog-ed25519-v1", "id": feed_id_text(ALICE.public),
                      "seed": ALICE.seed.hex()}, indent=1) + "\n"
    compact = json.dumps({"seed": BOB.seed.hex().upper(), "id": feed_id_text(BOB.public),
                          "format": "feedlog-ed25519-v1"}, separators=(",", ":"))
    return [doc.encode(), compact.encode()]


# --- handshake --------------------------------------------------------------------------------
#
# The first input byte picks a role and a step (mod 4); the rest is the whole stream that role
# receives from there on, fed in chunks whose size the second byte picks, then EOF:
#   0: server from msg1 (msg1 + msg3)   1: client from msg2 (msg2 + msg4)
#   2: server from msg3                 3: client from msg4
# The handshake is driven correctly up to that step first. The seeds are the genuine streams, so
# one-byte changes probe every check of every step. The input must be exactly the handshake:
# what arrives after the last message must come back unchanged from ``leftover()`` (checked),
# and is then refused here, since it belongs to the box-stream.

_EPH_C = hashlib.sha256(b"feedlog-fuzz/eph-client").digest()
_EPH_S = hashlib.sha256(b"feedlog-fuzz/eph-server").digest()
_INBOUND = (MSG1_SIZE + MSG3_SIZE, MSG2_SIZE + MSG4_SIZE, MSG3_SIZE, MSG4_SIZE)


def _fresh_pair() -> tuple[ClientHandshake, ServerHandshake]:
    return (ClientHandshake(NETWORK_KEY, ALICE, BOB.public, _EPH_C),
            ServerHandshake(NETWORK_KEY, BOB, _EPH_S))


@functools.cache
def _genuine() -> tuple[bytes, bytes, bytes, bytes]:
    client, server = _fresh_pair()
    msg1 = client.data_to_send()
    server.receive_data(msg1)
    msg2 = server.data_to_send()
    client.receive_data(msg2)
    msg3 = client.data_to_send()
    server.receive_data(msg3)
    msg4 = server.data_to_send()
    return msg1, msg2, msg3, msg4


def _at_step(step: int) -> ClientHandshake | ServerHandshake:
    msg1, msg2, _, _ = _genuine()
    client, server = _fresh_pair()
    client.data_to_send()
    if step == 0:
        return server
    if step == 1:
        return client
    server.receive_data(msg1)
    server.data_to_send()
    if step == 2:
        return server
    client.receive_data(msg2)
    client.data_to_send()
    return client


def _handshake_seeds() -> list[bytes]:
    msg1, msg2, msg3, msg4 = _genuine()
    return [bytes([step, chunk]) + stream
            for step, stream in enumerate((msg1 + msg3, msg2 + msg4, msg3, msg4))
            for chunk in (0, 5)]


def _decode_handshake(data: bytes) -> tuple[bytes, ...]:
    if len(data) < 2:
        raise HandshakeError("fuzz input too short", code="handshake-eof")
    step = data[0] % 4
    hs = _at_step(step)
    chunk = data[1] or len(data)
    body = data[2:]
    sent = bytearray()
    pos = 0
    try:
        while pos < len(body) and not hs.done:
            hs.receive_data(body[pos : pos + chunk])
            pos += chunk
            sent += hs.data_to_send()
        if not hs.done:
            hs.receive_data(b"")  # EOF before the end: must fail
    except HandshakeError:
        if hs.data_to_send() != b"" or hs.error is None:
            raise AssertionError("a failed handshake still sends bytes") from None
        raise
    keys = hs.result
    early = hs.leftover() + body[pos:]
    if early != body[_INBOUND[step]:]:
        raise AssertionError("leftover() lost or invented box-stream bytes")
    if early:
        raise ProtocolError("bytes after the handshake", code="handshake-trailing")
    return (keys.remote_public, keys.encrypt_key, keys.decrypt_key, bytes(sent))


# --- box-stream -------------------------------------------------------------------------------
#
# The first input byte picks the chunk size the stream is fed in; the rest is the stream, read
# to EOF. The seeds are streams of 0, 1 and several packets, each ending in the goodbye.

_BOX_KEY = hashlib.sha256(b"feedlog-fuzz/box-key").digest()
_BOX_NONCE = hashlib.sha256(b"feedlog-fuzz/box-nonce").digest()[:24]


def _box_seeds() -> list[bytes]:
    out = []
    for plain in (b"", b"x", b"hello box-stream" * 3, bytes(range(256)) * 20):
        w = BoxStreamWriter(_BOX_KEY, _BOX_NONCE)
        out.append(bytes([7]) + w.seal(plain) + w.goodbye())
    return out


def _decode_box(data: bytes) -> bytes:
    if not data:
        raise ProtocolError("fuzz input too short", code="unexpected-eof")
    reader = BoxStreamReader(_BOX_KEY, _BOX_NONCE)
    chunk = data[0] * 17 or 1
    stream = memoryview(data)[1:]
    plain = bytearray()
    pos = 0
    while pos < len(stream):
        n = min(chunk, reader.receive_budget(), len(stream) - pos)
        if n == 0:
            raise AssertionError("a box-stream reader whose chunks were taken has no budget")
        reader.receive_data(bytes(stream[pos : pos + n]))
        pos += n
        for piece in reader:
            plain += piece
    reader.receive_data(b"")
    for piece in reader:
        plain += piece
    return bytes(plain)



# --- replication frames -----------------------------------------------------------------------
#
# The input is a byte stream of frames, fed in one go to a FrameDecoder with the default limits;
# it must end on a frame boundary (a shell treats a partial frame at EOF as truncation).


def _frame_seeds() -> list[bytes]:
    chain = _chain()
    frames: list[wire.Frame] = [
        wire.Hello(wire.VERSION, b"", True),
        wire.Hello(wire.VERSION, bytes(range(32)), False),
        wire.Notes(wire.MODE_FULL, True, (wire.Entry(ALICE.public, wire.make_note(5, True)),
                                          wire.Entry(BOB.public, wire.NOTE_DONT_REPLICATE),
                                          wire.Entry(bytes(32), wire.make_note(2, False), 2))),
        wire.Notes(wire.MODE_DELTA, True, (
            wire.Entry(ALICE.public, wire.make_note(6, True), None, bytes(range(8))),
            wire.Entry(BOB.public, wire.make_note(3, False), 2, bytes(range(8, 16))))),
        wire.Msgs(tuple(m.raw for m in chain[:3])),
        wire.Done(3), wire.Synced(), wire.Fork(_fork_seeds()[0]),
        wire.Error("protocol-error", "bad frame"), wire.Ping(),
    ]
    one = [wire.encode_frame(f) for f in frames]
    return [*one, b"".join(one)]


def _decode_frames(data: bytes) -> tuple[wire.Frame, ...]:
    decoder = wire.FrameDecoder()
    frames = decoder.feed(data)
    if not decoder.at_boundary():
        raise ProtocolError("the stream ends inside a frame", code="truncated")
    return tuple(frames)


# --- bundles ----------------------------------------------------------------------------------
#
# "bundle-records": a segment file's bytes, scanned as final (damage is a rejection here; the
# importer reports it per record). "bundle-summary": the summary file.


def _segment_seeds() -> list[bytes]:
    chain = _chain()
    records = [bundle.encode_record(bundle.KIND_MESSAGE, m.raw) for m in chain]
    records.append(bundle.encode_record(bundle.KIND_FORK, _fork_seeds()[0]))
    return [records[0], b"".join(records)]


def _decode_segment(data: bytes) -> tuple[tuple[int, bytes], ...]:
    result = bundle.scan(data, final=True)
    if result.damage:
        raise RemoteError("damaged segment", code=result.damage[0].code)
    return tuple((r.kind, r.body) for r in result.records)


def _summary_seeds() -> list[bytes]:
    chain = _chain()
    a = FeedId(ALICE.public)
    feeds = {a: bundle.FeedSummary(a, 1, len(chain), chain[-1].id, (
        bundle.Extent(1, 0, 900, 1, 3), bundle.Extent(2, 0, 700, 4, len(chain))))}
    forks = (bundle.ForkEntry(a, 3, 2, 700, 400),)
    return [bundle.encode_summary(bundle.Summary.empty()),
            bundle.encode_summary(bundle.Summary({1: 900, 2: 1100}, feeds, forks))]


# --- discovery records ------------------------------------------------------------------------
#
# The input is ``port (2 bytes) || label length (1) || label || TXT`` where the TXT record is
# ``key=value`` lines; it is opened with the fixed network key, as a node would open a record
# found on the LAN.


def _encode_announcement(port: int, label: str, txt: dict[str, str]) -> bytes:
    lines = "\n".join(f"{k}={v}" for k, v in txt.items()).encode()
    return port.to_bytes(2, "big") + bytes([len(label)]) + label.encode() + lines


def _discovery_seeds() -> list[bytes]:
    out = []
    for i, (port, feed) in enumerate(((8008, ALICE.public), (1, BOB.public))):
        label = discovery.instance_label(
            hashlib.sha256(b"label%d" % i).digest()[: discovery.LABEL_RANDOM_SIZE])
        nonce = hashlib.sha256(b"nonce%d" % i).digest()[:24]
        txt = discovery.encode_record(NETWORK_KEY, label, FeedId(feed), port, nonce)
        out.append(_encode_announcement(port, label, txt))
    return out


def _decode_discovery(data: bytes) -> tuple[bytes, int]:
    if len(data) < 3 or len(data) < 3 + data[2]:
        raise discovery.DiscoveryError("fuzz input too short", code="bad-discovery-record")
    port = int.from_bytes(data[:2], "big")
    label = data[3 : 3 + data[2]].decode("utf-8", errors="replace")
    txt: dict[bytes, bytes | None] = {}
    for line in data[3 + data[2] :].split(b"\n"):
        key, eq, value = line.partition(b"=")
        txt[key] = value if eq else None
    ann = discovery.decode_record(NETWORK_KEY, label, txt, port)
    return bytes(ann.feed), ann.port


TARGETS: list[Target] = [
    Target("cbor", lambda d: encoding.decode_strict(d), _cbor_seeds, encoding.encode),
    Target("message", decode_message, _message_seeds, _canonical_message),
    Target("message-signed", _decode_signed, _message_seeds, _canonical_message,
           authenticated=True),
    Target("validate", _validate_at_2, lambda: [_chain()[2].raw], _canonical_message,
           authenticated=True),
    Target("content", _decode_content, _content_seeds, lambda v: encoding.encode(v[0])),
    Target("group-content", _decode_group, _content_seeds, lambda v: encoding.encode(v[0])),
    Target("id", _decode_id, _id_seeds, lambda text: text.encode(),
           spelling=lambda b: b.strip().lower()),
    Target("fork-proof", decode_fork_proof, _fork_seeds, lambda p: p.encode(),
           authenticated=True),
    Target("key-file", decode_key_file, _key_seeds, lambda k: k.seed, authenticated=True),
    Target("handshake", _decode_handshake, _handshake_seeds, lambda v: b"".join(v),
           authenticated=True),
    Target("box-stream", _decode_box, _box_seeds, bytes, authenticated=True),
    Target("wire-frames", _decode_frames, _frame_seeds,
           lambda fs: b"".join(wire.encode_frame(f) for f in fs)),
    Target("bundle-records", _decode_segment, _segment_seeds,
           lambda rs: b"".join(bundle.encode_record(k, b) for k, b in rs)),
    Target("bundle-summary", bundle.decode_summary, _summary_seeds, bundle.encode_summary),
    Target("discovery-record", _decode_discovery, _discovery_seeds,
           lambda a: a[0] + a[1].to_bytes(2, "big"), authenticated=True),
]

BY_NAME = {t.name: t for t in TARGETS}


def run_one(target: Target, data: bytes) -> tuple[bool, Any]:
    """Decode ``data``: (True, value), or (False, None) when a FeedlogError rejected it.
    Any other exception propagates: that is a finding."""
    try:
        return True, target.decode(data)
    except FeedlogError:
        return False, None

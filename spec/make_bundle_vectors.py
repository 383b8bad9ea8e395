"""Generate spec/vectors/bundle.json (spec/bundle.md §8) from fixed seeds and feed.json.

``python spec/make_bundle_vectors.py`` writes the file; ``--check`` fails when the committed file
differs from what the code produces now. No clock, no randomness: seeds and timestamps are fixed,
and Ed25519 signatures are deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from vectorfile import write_or_check

from feedlog.bundle import export_bundle
from feedlog.core import bundle as fmt
from feedlog.core import content, encoding
from feedlog.core.crypto import Keypair
from feedlog.core.fork import make_fork_proof
from feedlog.core.ids import FeedId, msg_id_text
from feedlog.core.message import FeedState, create
from feedlog.core.validate import decode_message
from feedlog.node import Node

HERE = Path(__file__).resolve().parent
OUT = HERE / "vectors" / "bundle.json"
FEED_VECTORS = HERE / "vectors" / "feed.json"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms

VALID_NAMES = ["feedlog", "summary.cbr", "summary.tmp", "00000001.seg", "00000001.tmp",
               "a b", "name.with.dots", "x"]
INVALID_NAMES = ["", ".", "..", "a:b", 'a"b', "a*b", "a?b", "a<b", "a>b", "a|b", "a\\b", "a/b",
                 "trailing.", "trailing ", "tab\there", "nul\x00"]


def keys(label: str) -> Keypair:
    return Keypair.from_seed(hashlib.sha256(b"feedlog test seed " + label.encode()).digest())


def feed_messages() -> list[bytes]:
    data = json.loads(FEED_VECTORS.read_text(encoding="utf-8"))
    return [bytes.fromhex(m["raw"]) for f in data["valid_feeds"] for m in f["messages"]]


def fork_pair() -> tuple[bytes, bytes, bytes]:
    """Mallory's seq 1, seq 2, and a different seq 2 (a same-seq fork)."""
    k = keys("mallory")
    one = create(k, FeedState(FeedId(k.public)), content.post("one"), T0)
    two = create(k, one.state, content.post("two"), T0 + 1)
    other = create(k, one.state, content.post("two, again"), T0 + 2)
    return one.raw, two.raw, other.raw


def scan_json(data: bytes) -> dict[str, Any]:
    s = fmt.scan(data)
    return {
        "records": [{"offset": r.offset, "kind": r.kind, "body": r.body.hex()} for r in s.records],
        "damage": [{"offset": d.offset, "length": d.length, "code": d.code} for d in s.damage],
    }


def scan_cases(bodies: list[bytes]) -> list[dict[str, Any]]:
    recs = [fmt.encode_record(fmt.KIND_MESSAGE, b) for b in bodies[:3]]
    clean = b"".join(recs)
    a, b = len(recs[0]), len(recs[0]) + len(recs[1])
    flipped = bytearray(clean)
    flipped[a + 20] ^= 0x01  # a body byte of the second record
    bad_length = bytearray(clean)
    bad_length[a + 1] = 0xFF  # the second record's length
    cases = {
        "clean": clean,
        "torn tail": clean + recs[0][: len(recs[0]) // 2],
        "torn header": clean + recs[0][:5],
        "flipped body byte": bytes(flipped),
        "corrupt length": bytes(bad_length),
        "garbage before": b"\x00\x00\x00" + clean,
        "zeros after": clean + bytes(4096),
        "cut inside the second record": clean[: b - 7],
    }
    return [{"name": k, "data": v.hex(), **scan_json(v)} for k, v in cases.items()]


def summary_value(s: fmt.Summary) -> dict[str, Any]:
    return {
        "segments": [[n, size] for n, size in sorted(s.segments.items())],
        "feeds": [
            {"author": f.author.hex(), "first": f.first, "last": f.last, "head": f.head.hex(),
             "extents": [[e.segment, e.offset, e.length, e.first, e.last] for e in f.extents]}
            for _, f in sorted(s.feeds.items())
        ],
        "forks": [[k.author.hex(), k.seq, k.segment, k.offset, k.length] for k in s.forks],
    }


def invalid_summaries(good: bytes) -> list[dict[str, Any]]:
    value = encoding.decode_strict(good)
    cases: list[tuple[str, bytes, str]] = [
        ("trailing byte", good + b"\x00", "bad-summary"),
        ("not a map", encoding.encode([1, 2]), "bad-summary"),
        ("other format", encoding.encode({**value, "format": "something-else"}), "bad-summary"),
        ("version 2", encoding.encode({**value, "version": 2}), "bundle-too-new"),
        ("extra key", encoding.encode({**value, "extra": 1}), "bad-summary"),
        ("segment 0", encoding.encode({**value, "segments": [[0, 10]]}), "bad-summary"),
    ]
    feed = list(value["feeds"][0])
    cases.append(("first 0", encoding.encode({**value, "feeds": [[*feed[:1], 0, *feed[2:]]]}),
                  "bad-summary"))
    cases.append(("short author", encoding.encode({**value, "feeds": [[b"\x01", *feed[1:]]]}),
                  "bad-summary"))
    cases.append(("feed listed twice", encoding.encode({**value, "feeds": [feed, feed]}),
                  "bad-summary"))
    cases.append(("segments descending",
                  encoding.encode({**value, "segments": [[2, 10], [1, 10]]}), "bad-summary"))
    low = [b"\x00" * 32, *feed[1:]]
    cases.append(("feeds descending", encoding.encode({**value, "feeds": [feed, low]}),
                  "bad-summary"))
    return [{"name": n, "hex": h.hex(), "code": c} for n, h, c in cases]


async def whole_bundle() -> dict[str, Any]:
    node = Node.in_memory(keys("exporter"))
    try:
        raws = feed_messages()
        one, two, other = fork_pair()
        rep = await node.ingestor().ingest([*raws, one, two])
        assert rep.added == len(raws) + 2, rep.codes()
        await node.ingestor().ingest([other])  # a fork: recorded as a proof, feed frozen
        assert len(await node.store.fork_proofs()) == 1
        feeds = sorted({f.author for f in await node.store.feeds()})
        with tempfile.TemporaryDirectory() as tmp:
            await export_bundle(node, Path(tmp), feeds, segment_max=2048)
            folder = Path(tmp) / fmt.ROOT
            files = {p.name: p.read_bytes().hex() for p in sorted(folder.iterdir())}
        ids = []
        for a in feeds:
            ids += [msg_id_text(m.id) for m in await node.feed(a)]
        return {"segment_max": 2048, "files": files, "ids": sorted(ids),
                "forked": [{"author": a.hex(), "seq": 2} for a in feeds
                           if a == FeedId(keys("mallory").public)]}
    finally:
        await node.close()


def build() -> str:
    raws = feed_messages()
    _, two, other = fork_pair()

    proof = make_fork_proof(decode_message(two), decode_message(other)).encode()
    bundle = asyncio.run(whole_bundle())
    summary_hex = bundle["files"][fmt.SUMMARY]
    summary = fmt.decode_summary(bytes.fromhex(summary_hex))
    doc = {
        "description": "feedlog bundle vectors (spec/bundle.md §8), generated by "
                       "spec/make_bundle_vectors.py",
        "constants": {"header_size": fmt.HEADER_SIZE, "kind_message": fmt.KIND_MESSAGE,
                      "kind_fork": fmt.KIND_FORK, "segment_max": fmt.SEGMENT_MAX,
                      "max_body": {"m": fmt.MAX_BODY[fmt.KIND_MESSAGE],
                                   "f": fmt.MAX_BODY[fmt.KIND_FORK]}},
        "names": {
            "valid": VALID_NAMES,
            "invalid": INVALID_NAMES,
            "segments": [[n, fmt.segment_name(n)] for n in (1, 42, 99_999_999)],
        },
        "records": [
            {"kind": fmt.KIND_MESSAGE, "body": raws[0].hex(),
             "record": fmt.encode_record(fmt.KIND_MESSAGE, raws[0]).hex()},
            {"kind": fmt.KIND_FORK, "body": proof.hex(),
             "record": fmt.encode_record(fmt.KIND_FORK, proof).hex()},
        ],
        "scan": scan_cases(raws),
        "summary": {"hex": summary_hex, "value": summary_value(summary)},
        "invalid_summaries": invalid_summaries(bytes.fromhex(summary_hex)),
        "bundle": bundle,
    }
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


def main() -> int:
    return write_or_check(OUT, build(), description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

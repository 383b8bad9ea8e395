"""core.bundle: name rules, record framing and scanning, the summary, planning; and the vectors
of spec/vectors/bundle.json."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from feedlog.core import bundle as fmt
from feedlog.core.crypto import Keypair
from feedlog.core.errors import RemoteError
from feedlog.core.ids import FeedId, MsgId
from feedlog.core.message import FeedState

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "vectors" / "bundle.json").read_text())


# --- names --------------------------------------------------------------------------------------

def test_every_name_the_writer_makes_is_fat_safe_short_and_unique() -> None:
    names = [fmt.ROOT, fmt.SUMMARY, fmt.SUMMARY_TMP]
    for n in (1, 2, 9, 10, 12345678, fmt.MAX_SEGMENT_NUMBER):
        names += [fmt.segment_name(n), fmt.segment_tmp_name(n)]
    for name in names:
        assert fmt.fat_safe(name), name
        assert fmt.is_83(name), name
    assert fmt.unique_ignoring_case(names)


@pytest.mark.parametrize("name", VECTORS["names"]["valid"])
def test_valid_names(name: str) -> None:
    assert fmt.fat_safe(name)


@pytest.mark.parametrize("name", VECTORS["names"]["invalid"])
def test_invalid_names(name: str) -> None:
    assert not fmt.fat_safe(name)


def test_segment_names_round_trip_in_any_case() -> None:
    for n, name in VECTORS["names"]["segments"]:
        assert fmt.segment_name(n) == name
        assert fmt.parse_segment_name(name) == n
        assert fmt.parse_segment_name(name.upper()) == n
    for other in ("00000000.seg", "0000001.seg", "00000001.seg.tmp", "summary.cbr",
                  "00000001.SEGX", "1.seg", "abcdefgh.seg"):
        assert fmt.parse_segment_name(other) is None, other
    with pytest.raises(ValueError):
        fmt.segment_name(0)
    assert fmt.is_tmp_name("SUMMARY.TMP") and fmt.is_tmp_name("00000003.tmp")
    assert not fmt.is_tmp_name("notes.tmp")


def test_case_collisions_are_detected() -> None:
    assert not fmt.unique_ignoring_case(["Summary.cbr", "summary.CBR"])
    assert not fmt.is_83("Summary.cbr") and not fmt.is_83("toolongname.seg")


# --- records ------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", VECTORS["records"], ids=lambda c: chr(c["kind"]))
def test_record_vectors(case: dict[str, Any]) -> None:
    body = bytes.fromhex(case["body"])
    rec = fmt.encode_record(case["kind"], body)
    assert rec.hex() == case["record"]
    s = fmt.scan(rec)
    assert s.damage == [] and [(r.kind, r.body) for r in s.records] == [(case["kind"], body)]


def test_record_bounds() -> None:
    with pytest.raises(ValueError):
        fmt.encode_record(fmt.KIND_MESSAGE, b"")
    with pytest.raises(ValueError):
        fmt.encode_record(fmt.KIND_MESSAGE, bytes(8193))
    with pytest.raises(ValueError):
        fmt.encode_record(0x41, b"x")
    assert len(fmt.encode_record(fmt.KIND_FORK, bytes(16400))) == 16409


@pytest.mark.parametrize("case", VECTORS["scan"], ids=lambda c: c["name"])
def test_scan_vectors(case: dict[str, Any]) -> None:
    s = fmt.scan(bytes.fromhex(case["data"]))
    assert [{"offset": r.offset, "kind": r.kind, "body": r.body.hex()} for r in s.records] == \
        case["records"]
    assert [{"offset": d.offset, "length": d.length, "code": d.code} for d in s.damage] == \
        case["damage"]


def _bodies(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_chunked_scan_equals_whole_scan(seed: int) -> None:
    rnd = random.Random(seed)
    data = bytearray(b"".join(fmt.encode_record(fmt.KIND_MESSAGE, b) for b in _bodies(60, seed)))
    for _ in range(3):  # some damage
        data[rnd.randrange(len(data))] ^= 0xFF
    data = data[: rnd.randrange(len(data) // 2, len(data))]
    whole = fmt.scan(bytes(data))
    got: list[fmt.Record] = []
    pending, base = b"", 0
    for i in range(0, len(data), 97):
        chunk = bytes(data[i : i + 97])
        final = i + 97 >= len(data)
        buf = pending + chunk
        s = fmt.scan(buf, base, final=final)
        got += s.records
        pending, base = buf[s.consumed :], base + s.consumed
    assert got == whole.records
    assert whole.damage  # the damage was seen


def test_truncation_at_every_offset_keeps_every_complete_record() -> None:
    recs = [fmt.encode_record(fmt.KIND_MESSAGE, b) for b in _bodies(8, 99)]
    data = b"".join(recs)
    ends = [sum(len(r) for r in recs[: i + 1]) for i in range(len(recs))]
    for cut in range(len(data) + 1):
        s = fmt.scan(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        assert len(s.records) == complete, cut
        torn = cut - (ends[complete - 1] if complete else 0)
        assert [d.length for d in s.damage] == ([torn] if torn else []), cut
        assert all(d.code == "torn-tail" for d in s.damage)


# --- summary ------------------------------------------------------------------------------------

def test_summary_vector_round_trips() -> None:
    data = bytes.fromhex(VECTORS["summary"]["hex"])
    s = fmt.decode_summary(data)
    v = VECTORS["summary"]["value"]
    assert sorted(s.segments.items()) == [tuple(x) for x in v["segments"]]
    assert [f.author.hex() for f in s.feeds.values()] == [f["author"] for f in v["feeds"]]
    for f in v["feeds"]:
        got = s.feeds[FeedId(bytes.fromhex(f["author"]))]
        assert (got.first, got.last, got.head.hex()) == (f["first"], f["last"], f["head"])
        assert [[e.segment, e.offset, e.length, e.first, e.last] for e in got.extents] == \
            f["extents"]
    assert [[k.author.hex(), k.seq, k.segment, k.offset, k.length] for k in s.forks] == v["forks"]
    assert fmt.encode_summary(s) == data


@pytest.mark.parametrize("case", VECTORS["invalid_summaries"], ids=lambda c: c["name"])
def test_invalid_summaries(case: dict[str, Any]) -> None:
    with pytest.raises(RemoteError) as info:
        fmt.decode_summary(bytes.fromhex(case["hex"]))
    assert info.value.code == case["code"]


# --- planning -----------------------------------------------------------------------------------

A = FeedId(Keypair.from_seed(bytes(32)).public)
B = FeedId(Keypair.from_seed(bytes([1]) * 32).public)
H = [MsgId(bytes([i]) * 32) for i in range(10)]


def _summary() -> fmt.Summary:
    a = fmt.FeedSummary(A, 1, 5, H[5], (fmt.Extent(1, 0, 300, 1, 3), fmt.Extent(2, 0, 200, 4, 5)))
    b = fmt.FeedSummary(B, 1, 2, H[2], (fmt.Extent(1, 300, 100, 1, 2),))
    return fmt.Summary({1: 400, 2: 200}, {A: a, B: b}, (fmt.ForkEntry(B, 2, 2, 200, 50),))


def test_plan_export() -> None:
    s = _summary()
    steps = fmt.plan_export(s, [FeedState(A, 7, H[7]), FeedState(B, 1, H[1])], {A: H[5]})
    assert steps == [fmt.ExportStep(A, fmt.WRITE, 6, 7), fmt.ExportStep(B, fmt.STICK_AHEAD)]
    steps = fmt.plan_export(s, [FeedState(A, 7, H[7])], {A: H[9]})
    assert steps == [fmt.ExportStep(A, fmt.DIVERGED)]
    steps = fmt.plan_export(s, [FeedState(A, 5, H[5])], {A: H[5]})
    assert steps == [fmt.ExportStep(A, fmt.UP_TO_DATE)]
    c = FeedId(bytes(32))
    assert fmt.plan_export(s, [FeedState(c, 3, H[3])], {}) == [fmt.ExportStep(c, fmt.WRITE, 1, 3)]


def test_plan_import_reads_only_what_is_lacking() -> None:
    s = _summary()
    sizes = {1: 400, 2: 250}  # 50 bytes beyond segment 2's committed length
    plan = fmt.plan_import(s, sizes, {A: FeedState(A, 3, H[3])}, {}, frozenset({A}))
    # A lacks 4..5 (segment 2 from 0); the tail of segment 2 past 200 is read whatever it holds
    assert plan.ranges == [(2, 0, 250)]
    assert plan.skipped == [B] and plan.forks == 0 and plan.unlisted == [2]
    assert plan.feeds[0].have == 3 and plan.feeds[0].read


def test_plan_import_skips_what_the_reader_has_and_reads_evidence_of_a_fork() -> None:
    s = _summary()
    sizes = {1: 400, 2: 200}
    have = {A: FeedState(A, 5, H[5]), B: FeedState(B, 2, H[2])}
    only_a = frozenset({A})
    plan = fmt.plan_import(s, sizes, have, {A: H[5], B: H[2]}, only_a)
    assert plan.ranges == [] and [f.read for f in plan.feeds] == [False]
    # B's fork record lies past the end of segment 2: the whole segment is read (data wins)
    assert fmt.plan_import(s, sizes, have, {A: H[5], B: H[2]}, None).ranges == [(2, 0, 200)]
    plan = fmt.plan_import(s, sizes, have, {A: H[4], B: H[2]}, only_a)
    assert plan.ranges == [(2, 0, 200)]  # the extent holding seq 5, where the ids differ
    # once the reader holds a proof for A it takes none of its messages: nothing to read
    plan = fmt.plan_import(s, sizes, have, {A: H[4], B: H[2]}, only_a, forked={A})
    assert plan.ranges == [] and plan.skipped == [A, B] and plan.feeds == []


def test_plan_import_of_a_forked_feed_still_reads_its_fork_records() -> None:
    s = _summary()
    sizes = {1: 400, 2: 250}
    plan = fmt.plan_import(s, sizes, {}, {}, None, forked={A, B})
    assert plan.skipped == [A, B] and plan.forks == 1
    assert plan.ranges == [(2, 200, 50)]  # B's fork record (and the unlisted tail it lies in)


def test_plan_import_falls_back_to_whole_segments_when_the_summary_lies() -> None:
    s = _summary()
    plan = fmt.plan_import(s, {1: 350, 2: 200, 3: 10}, {}, {}, None)
    assert plan.ranges == [(1, 0, 350), (2, 0, 200), (3, 0, 10)]
    assert sorted(plan.unlisted) == [1, 3]
    gap = fmt.plan_import(
        fmt.Summary({1: 100}, {A: fmt.FeedSummary(A, 4, 5, H[5], (fmt.Extent(1, 0, 100, 4, 5),))}),
        {1: 100}, {A: FeedState(A, 1, H[1])}, {}, None)
    assert gap.feeds[0].gap == (2, 3)

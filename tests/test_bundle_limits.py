"""``max_bundle_file_size`` (issue 8 item 3): a bundle file larger than the limit is reported
with the code ``file-too-large`` and never opened; the rest of the stick is still used."""

from __future__ import annotations

import json
from pathlib import Path

from feedlog import Node
from feedlog.bundle import bundle_dir, export_bundle, import_bundle, list_bundle, verify_bundle
from feedlog.config import Limits
from tests.e2e.test_cli import js, run

MiB = 1024 * 1024


def small() -> Limits:
    return Limits(max_bundle_file_size=MiB, bundle_segment_size=MiB)


async def _stick_with_big_segment(tmp_path: Path) -> tuple[Node, Path, Path]:
    """A stick whose one segment holds a's 5 messages, then zeros up to 1 MiB + 1 byte."""
    a = Node.in_memory()
    await a.publish_many([f"m{i}" for i in range(5)])
    await export_bundle(a, tmp_path)
    seg = next(iter(list_bundle(bundle_dir(tmp_path)).segments.values()))
    with open(seg, "r+b") as f:
        f.truncate(MiB + 1)
    return a, tmp_path, seg


async def test_a_segment_over_the_limit_is_reported_and_not_read(tmp_path: Path) -> None:
    a, stick, _ = await _stick_with_big_segment(tmp_path)
    b = Node.in_memory()
    b.limits = small()
    rep = await import_bundle(b, stick, all_feeds=True)
    assert rep.ingest.added == 0 and rep.bytes_read == 0  # not a byte of it was read
    assert [(n, d.offset, d.length, d.code) for n, d in rep.damage] == [
        (1, 0, MiB + 1, "file-too-large")]
    assert rep.summary_mismatch == [a.id] and not rep.ok
    assert rep.as_json()["damage"][0]["code"] == "file-too-large"
    v = await verify_bundle(stick, limits=small())
    assert not v.ok and [d.code for _, d in v.damage] == ["file-too-large"]
    assert v.bytes_read == 0
    # under the default limit (4 GiB) the same file is read: the 5 messages, then zeros
    c = Node.in_memory()
    rep = await import_bundle(c, stick, all_feeds=True)
    assert rep.ingest.added == 5 and "file-too-large" not in [d.code for _, d in rep.damage]
    for n in (a, b, c):
        await n.close()


async def test_export_keeps_the_number_of_a_segment_it_cannot_read(tmp_path: Path) -> None:
    a, stick, seg = await _stick_with_big_segment(tmp_path)
    a.limits = small()
    await a.publish("one more")
    size_before = seg.stat().st_size
    rep = await export_bundle(a, stick)
    assert rep.reindexed == "summary-mismatch"  # the summary lists a file it may not read
    assert seg.stat().st_size == size_before  # untouched, and its number not reused
    assert rep.segments == ["00000002.seg"] and rep.messages == 6
    b = Node.in_memory()
    b.limits = small()
    got = await import_bundle(b, stick, all_feeds=True)
    assert got.ingest.added == 6 and [d.code for _, d in got.damage] == ["file-too-large"]
    await a.close()
    await b.close()


async def test_a_summary_over_the_limit_is_not_read(tmp_path: Path) -> None:
    a = Node.in_memory()
    await a.publish_many(["x", "y"])
    await export_bundle(a, tmp_path)
    summary = list_bundle(bundle_dir(tmp_path)).summary
    assert summary is not None
    with open(summary, "r+b") as f:
        f.truncate(MiB + 1)
    b = Node.in_memory()
    b.limits = small()
    rep = await import_bundle(b, tmp_path, all_feeds=True)
    assert rep.summary_problem == "file-too-large"
    assert rep.ingest.added == 2  # the segments are still read (as unlisted data)
    await a.close()
    await b.close()


def test_cli_bundle_verify_and_import_use_the_homes_limit(tmp_path: Path) -> None:
    a, b, stick = tmp_path / "a", tmp_path / "b", tmp_path / "stick"
    stick.mkdir()
    run(a, "init")
    run(b, "init")
    js(a, "publish", "hello")
    js(a, "export", str(stick))
    seg = next(iter(list_bundle(bundle_dir(stick)).segments.values()))
    with open(seg, "r+b") as f:
        f.truncate(MiB + 1)
    (b / "config.toml").write_text(
        f"[limits]\nmax_bundle_file_size = {MiB}\nbundle_segment_size = {MiB}\n")
    p = run(b, "bundle", "verify", str(stick), "--json", ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    out = json.loads(p.stdout)
    assert [d["code"] for d in out["damage"]] == ["file-too-large"] and out["new"] == 0
    got = js(b, "import", "--all", str(stick))
    assert got["new"] == 0 and [d["code"] for d in got["damage"]] == ["file-too-large"]
    # the home without the small limit reads it
    assert js(a, "import", "--all", str(stick))["damage"] != [
        {"segment": seg.name, "offset": 0, "length": MiB + 1, "code": "file-too-large"}]

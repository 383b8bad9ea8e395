"""feedlog.bundle: export / import / verify through real folders, torn and damaged sticks."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from feedlog import Node
from feedlog.bundle import bundle_dir, export_bundle, import_bundle, list_bundle, verify_bundle
from feedlog.core import bundle as fmt
from feedlog.core import content
from feedlog.core.errors import LocalError
from feedlog.core.ids import FeedId, msg_id_text
from feedlog.core.message import FeedState, create
from tests.conftest import keypair

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "spec" / "vectors" / "bundle.json").read_text())
T0 = 1_767_225_600_000


async def ids_of(node: Node, authors: list[FeedId] | None = None) -> list[str]:
    out = []
    for info in await node.store.feeds():
        if authors is None or info.author in authors:
            out += [msg_id_text(m.id) for m in await node.feed(info.author)]
    return sorted(out)


async def author_with_friends(n_feeds: int = 3, per_feed: int = 40) -> tuple[Node, list[FeedId]]:
    """A node holding its own feed and ``n_feeds - 1`` followed feeds, all as one replicated set."""
    node = Node.in_memory(keypair("bundle-author"))
    others = [keypair(f"friend-{i}") for i in range(n_feeds - 1)]
    for k in others:
        st = FeedState(FeedId(k.public))
        msgs = []
        for i in range(per_feed):
            m = create(k, st, content.post(f"friend message {i} " + "x" * 100), T0 + i)
            msgs.append(m.raw)
            st = m.state
        assert (await node.ingestor().ingest(msgs)).added == per_feed
        await node.follow(FeedId(k.public))
    await node.publish_many([f"own message {i}" for i in range(per_feed - len(others))],
                            timestamp=T0)
    return node, sorted([node.id, *(FeedId(k.public) for k in others)])


async def test_vector_bundle_imports_into_an_empty_node(tmp_path: Path) -> None:
    b = VECTORS["bundle"]
    folder = tmp_path / "FEEDLOG"  # any letter case
    folder.mkdir()
    for name, hexdata in b["files"].items():
        (folder / name.upper()).write_bytes(bytes.fromhex(hexdata))
    node = Node.in_memory()
    rep = await import_bundle(node, tmp_path, all_feeds=True)
    assert rep.ok, rep.as_json()
    assert await ids_of(node) == b["ids"]
    assert rep.fork_proofs_new == 1
    for f in b["forked"]:
        info = await node.feed_info(FeedId(bytes.fromhex(f["author"])))
        assert info is not None and info.forked_seq == f["seq"]
    assert (await node.verify()).ok


async def test_round_trip_incremental_and_dry_run(tmp_path: Path) -> None:
    a, feeds = await author_with_friends()
    first = await export_bundle(a, tmp_path, segment_max=4096)
    assert first.messages == 120 and len(first.segments) > 3
    names = [p.name for p in bundle_dir(tmp_path).iterdir()]
    assert all(fmt.fat_safe(n) and fmt.is_83(n) for n in names)
    assert fmt.unique_ignoring_case(names)
    again = await export_bundle(a, tmp_path)
    assert again.messages == 0 and again.segments == []
    await a.publish("one more")
    inc = await export_bundle(a, tmp_path)
    assert inc.messages == 1 and inc.written == {a.id: 1}

    b = Node.in_memory()
    await b.follow(a.id)
    dry = await import_bundle(b, tmp_path, dry_run=True)
    assert dry.ingest.added == 41 and await b.store.count() == 1  # only b's follow
    rep = await import_bundle(b, tmp_path)
    assert rep.ingest.added == 41 and rep.ok
    assert len(rep.plan.skipped) == 2  # a's friends: b does not replicate them yet
    assert await ids_of(b, [a.id]) == await ids_of(a, [a.id])
    rep = await import_bundle(b, tmp_path)  # now b knows a's follows: 2 hops
    assert rep.ingest.added == 80 and rep.ok
    rep = await import_bundle(b, tmp_path)
    assert rep.ingest.added == 0 and rep.bytes_read == 0
    assert sum(r["had"] for r in rep.feed_rows()) == 121
    assert await ids_of(b, feeds) == await ids_of(a, feeds)
    await a.close()
    await b.close()


async def test_a_stick_passed_along_a_chain_keeps_everyone(tmp_path: Path) -> None:
    a, b, c = (Node.in_memory(keypair(x)) for x in ("chain-a", "chain-b", "chain-c"))
    await a.publish("from a")
    await export_bundle(a, tmp_path)
    await b.publish("from b")
    await export_bundle(b, tmp_path)  # b does not take a's feed, but keeps it on the stick
    await import_bundle(c, tmp_path, all_feeds=True)
    assert sorted([a.id, b.id]) == sorted(f.author for f in await c.store.feeds()
                                                if f.seq)
    rep = await verify_bundle(tmp_path)
    assert rep.ok and rep.ingest.added == 2


async def _truncated_copies(tmp_path: Path) -> tuple[Node, Path, list[int], int]:
    a, _ = await author_with_friends(n_feeds=2, per_feed=30)
    src = tmp_path / "src"
    src.mkdir()
    await export_bundle(a, src, segment_max=3000)
    listing = list_bundle(bundle_dir(src))
    last = max(listing.segments)
    data = listing.segments[last].read_bytes()
    ends = [r.offset + r.size for r in fmt.scan(data).records]
    return a, src, ends, last


async def test_truncating_the_last_segment_at_many_offsets(tmp_path: Path) -> None:
    a, src, ends, last = await _truncated_copies(tmp_path)
    total = await a.store.count()
    in_last = len(ends)
    size = ends[-1]
    cuts = sorted({0, 1, 8, 9, size - 1, *random.Random(5).sample(range(size), 30), *ends[:5]})
    for cut in cuts:
        stick = tmp_path / f"cut-{cut}"
        shutil.copytree(src, stick)
        seg = list_bundle(bundle_dir(stick)).segments[last]
        with open(seg, "r+b") as f:
            f.truncate(cut)
        node = Node.in_memory()
        rep = await import_bundle(node, stick, all_feeds=True)
        complete = sum(1 for e in ends if e <= cut)
        assert rep.ingest.added == total - in_last + complete, cut
        assert rep.ingest.rejected == 0
        torn = [d for _, d in rep.damage]
        assert [d.code for d in torn] == (["torn-tail"] if cut not in (0, *ends) else []), cut
        assert rep.summary_mismatch  # the summary promised more than the data holds
        # the next export repairs the stick
        fix = await export_bundle(a, stick)
        assert fix.reindexed == "summary-mismatch" and fix.messages == in_last - complete
        again = Node.in_memory()
        rep = await import_bundle(again, stick, all_feeds=True)
        assert rep.ingest.added == total and rep.summary_mismatch == []
        v = await verify_bundle(stick)
        assert v.ok, v.as_json()  # the torn tail is gone too
        await node.close()
        await again.close()
    await a.close()


async def test_corrupted_bytes_lose_only_what_they_touch(tmp_path: Path) -> None:
    a, _ = await author_with_friends(n_feeds=3, per_feed=30)
    await export_bundle(a, tmp_path, segment_max=3000)
    listing = list_bundle(bundle_dir(tmp_path))
    rnd = random.Random(11)
    seg = rnd.choice(sorted(listing.segments))
    path = listing.segments[seg]
    data = bytearray(path.read_bytes())
    recs = fmt.scan(bytes(data)).records
    victim = recs[len(recs) // 2]
    data[victim.offset + 30] ^= 0x40  # inside the message body: the checksum catches it
    path.write_bytes(bytes(data))
    node = Node.in_memory()
    rep = await import_bundle(node, tmp_path, all_feeds=True)
    from feedlog.core.validate import decode_message

    hit = decode_message(victim.body)
    lost = 30 - hit.seq + 1  # the damaged message and every later one of its feed
    assert rep.ingest.added == 90 - lost
    assert rep.ingest.codes() == ({"seq-gap": lost - 1} if lost > 1 else {})
    assert [d.code for _, d in rep.damage] == ["corrupt-record"]
    assert not rep.ok
    info = await node.feed_info(hit.author)
    assert info is not None and info.seq == hit.seq - 1


async def test_interrupted_export_leaves_a_readable_stick_and_is_repaired(tmp_path: Path) -> None:
    a, _ = await author_with_friends(n_feeds=2, per_feed=30)
    await export_bundle(a, tmp_path, segment_max=3000)
    committed = await ids_of(a)
    await a.publish_many([f"late {i}" for i in range(20)])
    # what an export pulled out at various points leaves behind:
    folder = bundle_dir(tmp_path)
    (folder / fmt.SUMMARY_TMP).write_bytes(b"\xa5half a summ")
    listing = list_bundle(folder)
    nxt = max(listing.segments) + 1
    late = [m.raw for m in (await a.feed())[-20:]]
    recs = b"".join(fmt.encode_record(fmt.KIND_MESSAGE, r) for r in late)
    (folder / fmt.segment_tmp_name(nxt + 1)).write_bytes(recs[:77])  # torn temp file
    (folder / fmt.segment_name(nxt)).write_bytes(recs[:-50])  # renamed, not in the summary
    b = Node.in_memory()
    rep = await import_bundle(b, tmp_path, all_feeds=True)
    assert rep.plan.unlisted == [nxt]
    assert rep.ingest.added == len(committed) + 19  # the unlisted segment's complete records
    assert [d.code for _, d in rep.damage] == ["torn-tail"]
    fix = await export_bundle(a, tmp_path)
    assert fix.reindexed == "summary-mismatch" and fix.messages == 1
    names = sorted(p.name for p in folder.iterdir())
    assert not any(n.endswith(".tmp") for n in names)
    c = Node.in_memory()
    rep = await import_bundle(c, tmp_path, all_feeds=True)
    assert rep.ingest.added == len(committed) + 20 and rep.summary_mismatch == []
    assert await ids_of(c) == await ids_of(a)


async def test_forks_spread_by_stick(tmp_path: Path) -> None:
    k = keypair("forker")
    one = create(k, FeedState(FeedId(k.public)), content.post("one"), T0)
    two = create(k, one.state, content.post("two"), T0)
    other = create(k, one.state, content.post("another two"), T0)
    a = Node.in_memory()
    await a.ingestor().ingest([one.raw, two.raw])
    b = Node.in_memory()
    await b.ingestor().ingest([one.raw, other.raw])
    # b's copy diverges from a's: a's export carries a's history; b learns of the fork
    await export_bundle(a, tmp_path, [FeedId(k.public)])
    rep = await import_bundle(b, tmp_path, all_feeds=True)
    assert rep.ingest.codes() == {"fork": 1} and len(rep.ingest.forks) == 1
    # b's proof travels on to c on the same stick (b cannot append to a diverging chain)
    out = await export_bundle(b, tmp_path, [FeedId(k.public)])
    assert out.fork_proofs == 1 and [s.action for s in out.feeds] == ["diverged"]
    c = Node.in_memory()
    rep = await import_bundle(c, tmp_path, all_feeds=True)
    assert rep.fork_proofs_new == 1
    info = await c.feed_info(FeedId(k.public))
    assert info is not None and info.forked_seq == 2


async def test_errors(tmp_path: Path) -> None:
    node = Node.in_memory()
    with pytest.raises(LocalError) as info:
        await import_bundle(node, tmp_path)
    assert info.value.code == "no-bundle"
    with pytest.raises(LocalError) as info:
        await export_bundle(node, tmp_path / "missing")
    assert info.value.code == "no-such-dir"
    (tmp_path / "feedlog").mkdir()
    (tmp_path / "feedlog" / fmt.SUMMARY).write_bytes(b"not cbor at all")
    (tmp_path / "feedlog" / "notes.txt").write_text("ignored")
    rep = await import_bundle(node, tmp_path)
    assert rep.summary_problem == "bad-summary" and rep.ingest.added == 0
    if os.geteuid() != 0:  # root ignores permissions
        os.chmod(tmp_path / "feedlog", 0o500)
        with pytest.raises(LocalError) as info:
            await export_bundle(node, tmp_path)
        assert info.value.code == "bundle-unwritable"


_CHILD = """
import asyncio, sys
from pathlib import Path
from feedlog import Node
from feedlog.bundle import export_bundle

async def main() -> None:
    node = await Node.open(Path(sys.argv[1]))
    print("ready", flush=True)
    await export_bundle(node, Path(sys.argv[2]), segment_max=2048)

asyncio.run(main())
"""


@pytest.mark.parametrize("seed", range(3))
async def test_export_killed_at_a_random_moment(tmp_path: Path, seed: int) -> None:
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    a = await Node.init(home)
    await a.publish_many([f"crash test {i} " + "y" * 150 for i in range(3000)], timestamp=T0)
    expected = await ids_of(a)
    a_id = a.id
    await a.close()
    stick = tmp_path / "stick"
    stick.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(home), str(stick)],
                             stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None and child.stdout.readline().startswith(b"ready")
    time.sleep(random.Random(seed).uniform(0.0, 0.4))
    child.send_signal(signal.SIGKILL)
    child.wait()
    if (stick / "feedlog").is_dir():
        b = Node.in_memory()
        rep = await import_bundle(b, stick, all_feeds=True)  # whatever the state: no error
        assert rep.ingest.rejected == 0
        got = await ids_of(b)
        assert set(got) <= set(expected)
        info = await b.feed_info(a_id)
        assert len(got) == (info.seq if info else 0)  # a prefix of the feed, seqs 1..k
        await b.close()
    a = await Node.open(home)
    await export_bundle(a, stick)  # finishes the job
    await a.close()
    c = Node.in_memory()
    rep = await import_bundle(c, stick, all_feeds=True)
    assert await ids_of(c) == expected
    assert not any(p.name.endswith(".tmp") for p in (stick / "feedlog").iterdir())
    await c.close()

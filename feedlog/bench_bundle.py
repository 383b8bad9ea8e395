"""`make bench` section "bundle": export rate, and import of N messages (100 feeds) from a stick
folder into a fresh SQLite node vs the raw all-cores verify rate measured right before it
(goal >= 0.75, docs/LIMITS.md)."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from feedlog.bench import raw_verify_rate_all_cores
from feedlog.bundle import export_bundle, import_bundle
from feedlog.core.crypto import Keypair
from feedlog.core.ids import FeedId
from feedlog.core.message import Message
from feedlog.node import Node

FEEDS = 100


async def _make_feeds(n: int) -> tuple[Node, list[Message]]:
    """An in-memory node holding ``n`` messages spread over FEEDS feeds."""
    holder = Node.in_memory()
    per = max(1, n // FEEDS)
    msgs: list[Message] = []
    for i in range(FEEDS):
        keys = Keypair.from_seed(hashlib.sha256(b"bench bundle %d" % i).digest())
        author = Node.in_memory(keys)
        feed = await author.publish_many(
            [f"bundle bench message {j} " + "x" * 200 for j in range(per)], timestamp=0)
        await author.close()
        ing = holder.ingestor()
        for s in range(0, len(feed), 1000):
            await ing.put([m.raw for m in feed[s : s + 1000]])
        await ing.finish()
        msgs += feed
    return holder, msgs


async def run(args: argparse.Namespace) -> None:
    n = args.messages
    holder, msgs = await _make_feeds(n)
    authors = sorted({FeedId(m.author) for m in msgs})
    with tempfile.TemporaryDirectory(prefix="feedlog-bench-bundle-") as tmp:
        stick = Path(tmp) / "stick"
        stick.mkdir()
        t = time.perf_counter()
        rep = await export_bundle(holder, stick, authors)
        dt = time.perf_counter() - t
        print(f"export: {rep.messages} messages of {len(authors)} feeds in {dt:.2f} s "
              f"({rep.messages / dt:,.0f} msg/s, {rep.bytes / dt / 1e6:,.1f} MB/s, "
              f"{len(rep.segments)} segments)")
        ratios, rates = [], []
        one_feed = [m for m in msgs if m.author == msgs[0].author]  # the raw rate needs one key
        sample = (one_feed * (10_000 // len(one_feed) + 1))[:10_000]
        for r in range(args.rounds):
            raw = raw_verify_rate_all_cores(sample)
            home = Path(tmp) / f"import-{r}"
            node = await Node.init(home)
            t = time.perf_counter()
            im = await import_bundle(node, stick, all_feeds=True)
            dt = time.perf_counter() - t
            await node.close()
            shutil.rmtree(home)
            if im.ingest.added != len(msgs):
                raise SystemExit(f"bench: imported {im.ingest.added} of {len(msgs)}")
            rates.append(len(msgs) / dt)
            ratios.append(len(msgs) / dt / raw)
        print(f"import {len(msgs)} from a stick folder into a fresh node: median "
              f"{statistics.median(rates):,.0f} msg/s; ratio to raw all-cores verify: "
              f"{statistics.median(ratios):.2f} (goal >= 0.75)")
    await holder.close()

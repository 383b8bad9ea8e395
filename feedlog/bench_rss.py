"""`make bench` section "rss" (issue 3): the receiver's peak memory as its feed grows, and the
two-process command-line sync a person runs.

A holder home A gets 100 feeds, generated fast (chained here, signed in chunks on every core,
stored 5,000 at a time), and is served by `feedlog serve` in its own process. For each size,
--messages (default 100k) and then --rss-big (1M for the issue's figure; off by default: with
it the section takes 4-7 minutes on the shared 2-core machine), A's feeds are grown to
that size and a fresh home B that follows them runs `feedlog sync ADDRESS --json` in a clean
process of its own. Its peak resident set is its own VmHWM, followed in /proc while it runs
(feedlog/ptyrun.py says why not ``ru_maxrss``: that would carry this process's peak, which
holds the generated feeds, into the child's), so nothing of this process or of the server is
mixed in. The goal is a
flat peak: what grows with the store is SQLite's page cache, and it stops at
``store_cache_size`` (config.toml), which the last figure lowers to show it is the bound.

Then `feedlog sync` runs once more at the first size under a pseudo-terminal, as at a person's
terminal, and the lines left on its screen (the progress bars and the summary) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from feedlog.bench import feedlog_command
from feedlog.core import content
from feedlog.core.crypto import Keypair
from feedlog.core.message import SIGN_TAG, FeedState, Message, Unsigned, finish, prepare
from feedlog.node import Node
from feedlog.ptyrun import Finished, peak_rss_kib, screen
from feedlog.ptyrun import run as run_child

FEEDS = 100
TEXT = "x" * 200  # about 400 bytes a message, as in the replication section
SIGN_CHUNK = 1000
STORE_BATCH = 5000


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}


def _sign(keys: Keypair, unsigned: list[Unsigned]) -> list[Message]:
    sigs = keys.sign_many(SIGN_TAG, [u.header for u in unsigned])
    return [finish(u, s) for u, s in zip(unsigned, sigs, strict=True)]


class Holder:
    """The serving home: FEEDS feeds of deterministic keys, grown on demand."""

    def __init__(self, home: Path, feeds: int = FEEDS) -> None:
        self.home = home
        self.keys = [Keypair.from_seed(hashlib.sha256(b"bench rss %d" % i).digest())
                     for i in range(feeds)]
        self.states = [FeedState(k.public) for k in self.keys]  # type: ignore[arg-type]

    @property
    def authors(self) -> list[bytes]:
        return [k.public for k in self.keys]

    @property
    def total(self) -> int:
        return sum(s.seq for s in self.states)

    async def grow(self, total: int) -> float:
        """Bring the feeds to ``total`` messages in all; returns the seconds it took."""
        t = time.perf_counter()
        if (self.home / "secret.json").exists():
            node = await Node.open(self.home)
        else:
            node = await Node.init(self.home)
            await node.publish_many([content.contact("follow", a) for a in self.authors])
        per = total // len(self.keys)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            signing: list[asyncio.Future[list[Message]]] = []
            for i, keys in enumerate(self.keys):
                # chain feed i here while the pool still signs feed i - 1
                jobs = self._chain(i, keys, per, pool, loop)
                await self._store(node, signing)
                signing = jobs
            await self._store(node, signing)
        await node.close()
        return time.perf_counter() - t

    def _chain(self, i: int, keys: Keypair, per: int, pool: Executor,
               loop: asyncio.AbstractEventLoop) -> list[asyncio.Future[list[Message]]]:
        state, unsigned = self.states[i], []
        jobs = []
        for j in range(state.seq, per):
            u = prepare(keys.public, state, content.post(f"rss bench {j} {TEXT}"), 1)
            unsigned.append(u)
            state = u.state
            if len(unsigned) == SIGN_CHUNK:
                jobs.append(loop.run_in_executor(pool, _sign, keys, unsigned))
                unsigned = []
        if unsigned:
            jobs.append(loop.run_in_executor(pool, _sign, keys, unsigned))
        self.states[i] = state
        return jobs

    @staticmethod
    async def _store(node: Node, jobs: list[asyncio.Future[list[Message]]]) -> None:
        msgs = [m for part in await asyncio.gather(*jobs) for m in part]
        for i in range(0, len(msgs), STORE_BATCH):
            await node.store.append(msgs[i : i + STORE_BATCH])


class Server:
    """`feedlog serve` in its own process; ``stop`` returns its peak RSS (VmHWM, KiB)."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [*feedlog_command(), "--home", str(home), "serve", "--host", "127.0.0.1",
             "--port", "0",
             "--json"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env())
        assert self.proc.stdout is not None
        self.address = str(json.loads(self.proc.stdout.readline())["address"])

    def stop(self) -> int:
        peak = peak_rss_kib(self.proc.pid) or 0
        self.proc.terminate()
        assert self.proc.stdout is not None
        self.proc.stdout.read()  # the summary lines of the syncs it served
        self.proc.wait()
        return peak


async def _receiver(home: Path, authors: list[bytes], cache: int | None = None) -> Path:
    if cache is not None:
        home.mkdir(mode=0o700)
        (home / "config.toml").write_text(f"[limits]\nstore_cache_size = {cache}\n")
    node = await Node.init(home)
    await node.publish_many([content.contact("follow", a) for a in authors])
    await node.close()
    return home


def _sync(home: Path, address: str, *, terminal: bool = False) -> tuple[Finished, dict[str, int]]:
    args = [*feedlog_command(), "--home", str(home), "sync", address]
    done = run_child(args if terminal else [*args, "--json"], env=_env(), terminal=terminal,
                     timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench: sync failed ({done.returncode}): "
                         f"{(done.stderr or done.output)[-500:]}")
    return done, ({} if terminal else json.loads(done.output))


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _workers(done: Finished) -> str:
    if not done.children:
        return ""
    return f" + {_mib(done.children_peak_rss_kib)} in its {done.children} verify worker(s)"


async def run(args: argparse.Namespace) -> None:
    small = args.messages
    big = getattr(args, "rss_big", 0)
    sizes = [small] + ([big] if big > small else [])
    figures: list[tuple[int, int, float]] = []  # (messages, peak RSS KiB, msg/s)
    with tempfile.TemporaryDirectory(prefix="feedlog-bench-rss-") as tmp:
        base = Path(tmp)
        holder = Holder(base / "a")
        for size in sizes:
            made = await holder.grow(size)
            server = Server(holder.home)
            try:
                home = await _receiver(base / f"b{size}", holder.authors)
                done, res = _sync(home, server.address)
                if res["added"] != holder.total or not res["caught_up"]:
                    raise SystemExit(f"bench: sync of {holder.total} ended with {res}")
                rate = res["added"] / res["seconds"]
                figures.append((res["added"], done.peak_rss_kib, rate))
                print(f"  {res['added']:,} messages over {FEEDS} feeds (generated in {made:.0f} s):"
                      f" receiver peak RSS {_mib(done.peak_rss_kib)}{_workers(done)}, "
                      f"{rate:,.0f} msg/s ({res['seconds']:.1f} s)")
                if size == small:
                    low = 4 * 1024 * 1024
                    home = await _receiver(base / "b-small-cache", holder.authors, cache=low)
                    done, res = _sync(home, server.address)
                    print(f"  the same with store_cache_size = {low // 1024 // 1024} MiB: "
                          f"receiver peak RSS {_mib(done.peak_rss_kib)}{_workers(done)}, "
                          f"{res['added'] / res['seconds']:,.0f} msg/s")
                    home = await _receiver(base / "b-terminal", holder.authors)
                    shown, _ = _sync(home, server.address, terminal=True)
                    print(f"  `feedlog sync {server.address[:30]}…` at a terminal (peak RSS "
                          f"{_mib(shown.peak_rss_kib)}), its last lines:")
                    for line in screen(shown.output)[-3:]:
                        print(f"    {line}")
            finally:
                sender = server.stop()
            print(f"  sender (`feedlog serve`) peak RSS over these syncs: {_mib(sender)}")
            for b in base.glob("b*"):
                shutil.rmtree(b)
    (n1, r1, s1), *rest = figures
    if rest:
        n2, r2, s2 = rest[-1]
        print(f"receiver peak RSS: {_mib(r1)} for {n1:,} messages, {_mib(r2)} for {n2:,} "
              f"(x{r2 / r1:.2f} for x{n2 / n1:.0f} messages; goal: flat); sync "
              f"{s1:,.0f} -> {s2:,.0f} msg/s")
    else:
        print(f"receiver peak RSS: {_mib(r1)} for {n1:,} messages; for the figure at 1M "
              "(4-7 minutes here): make bench BENCH_ARGS='--only rss --rss-big 1000000'")

"""`make bench`: throughput figures as ratios to raw pynacl measured in the same run.

Targets (docs/LIMITS.md): publish in batches >= 0.5 x raw sign rate; validate + store of a
100k-message feed on one core >= 0.8 x raw one-core verify rate. The machine is shared and
noisy, so each raw rate is measured right before the figure it is compared with, and the
median of several runs is used.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nacl.signing

from feedlog.core.message import SIGN_TAG, Message
from feedlog.core.validate import check_signature, decode_message
from feedlog.ingest import Ingestor
from feedlog.node import Node
from feedlog.store.sqlite import SqliteStore
from feedlog.verify_pool import VerifyPool


def feedlog_command() -> list[str]:
    """The `feedlog` command of this interpreter's environment (for benches that run the CLI)."""
    script = Path(sys.executable).with_name("feedlog")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def raw_sign_rate(msgs: list[Message], n: int = 5000) -> float:
    key = nacl.signing.SigningKey(os.urandom(32))
    data = [SIGN_TAG + m.header for m in msgs[:n]]
    t = time.perf_counter()
    for d in data:
        key.sign(d)
    return len(data) / (time.perf_counter() - t)


def _raw_verify_seconds(msgs: list[Message], n: int, clock: Callable[[], float]) -> float:
    """Seconds per raw pynacl verify of the first ``n`` messages, by ``clock``."""
    vk = nacl.signing.VerifyKey(msgs[0].author)
    pairs = [(SIGN_TAG + m.header, m.signature) for m in msgs[:n]]
    t = clock()
    for d, s in pairs:
        vk.verify(d, s)
    return (clock() - t) / len(pairs)


def raw_verify_rate(msgs: list[Message], n: int = 5000) -> float:
    return 1 / _raw_verify_seconds(msgs, n, time.perf_counter)


def raw_verify_cpu(msgs: list[Message], n: int = 5000) -> float:
    """CPU seconds of one raw pynacl verify (one thread; CPU time, so load inflates it less)."""
    return _raw_verify_seconds(msgs, n, time.process_time)


def cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children): user + system CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def raw_verify_rate_all_cores(msgs: list[Message], n: int = 10000) -> float:
    return raw_verify_all_cores(msgs, n)[0]


def raw_verify_all_cores(msgs: list[Message], n: int = 10000) -> tuple[float, float]:
    """Raw pynacl verification on a thread per core: (checks per second, CPU seconds per
    check). The CPU per check is what a check costs while every core is busy, which on a
    shared or hyperthreaded host is more than on one core alone: the fair comparison for
    verify workers that share the machine with the rest of a sync or an import."""
    vk = nacl.signing.VerifyKey(msgs[0].author)
    pairs = [(SIGN_TAG + m.header, m.signature) for m in msgs[:n]]
    workers = os.cpu_count() or 1
    chunks = [pairs[i::workers] for i in range(workers)]

    def run(chunk: list[tuple[bytes, bytes]]) -> None:
        for d, s in chunk:
            vk.verify(d, s)

    with ThreadPoolExecutor(workers) as pool:
        c = time.process_time()
        t = time.perf_counter()
        list(pool.map(run, chunks))
        dt = time.perf_counter() - t
        return len(pairs) / dt, (time.process_time() - c) / len(pairs)


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of another running process so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stage_costs(msgs: list[Message], tmp: Path) -> None:
    """Per-message cost of each receiving stage alone (CPU time, so other load inflates it
    less than wall time): strict decode, signature check, store append in batches of 1000."""
    sample = msgs[:20000]
    t = time.process_time()
    decoded = [decode_message(m.raw) for m in sample]
    decode = (time.process_time() - t) / len(sample)
    t = time.process_time()
    for m in decoded[:5000]:
        check_signature(m)
    verify = (time.process_time() - t) / min(5000, len(decoded))
    store = await SqliteStore.open(tmp / "stages.sqlite3")
    t = time.process_time()
    for i in range(0, len(decoded), 1000):
        await store.append(decoded[i : i + 1000])
    append = (time.process_time() - t) / len(decoded)
    await store.close()
    print(f"stages (CPU us/message): decode {decode * 1e6:.1f}, verify {verify * 1e6:.1f}, "
          f"append {append * 1e6:.1f} (batches of 1000, {len(decoded)} messages)")


async def bench(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="feedlog-bench-") as tmp:
        node = await Node.init(Path(tmp) / "author")
        texts = [f"benchmark message {i} " + "x" * 200 for i in range(n)]

        # 1. publish through the library in batches of 1000. Every batch is compared with the
        # raw rate measured right after it on its own headers, and the median of all those
        # ratios is reported: a few sampled batches were too few on a shared, noisy machine.
        pub_ratios, pub_rates = [], []
        msgs: list[Message] = []
        t0 = time.perf_counter()
        spent = 0.0
        for i in range(0, n, 1000):
            t = time.perf_counter()
            batch = await node.publish_many(texts[i : i + 1000])
            took = time.perf_counter() - t
            spent += took
            msgs.extend(batch)
            pub_rates.append(len(batch) / took)
            pub_ratios.append(pub_rates[-1] / raw_sign_rate(batch, 1000))
        total = time.perf_counter() - t0
        q = statistics.quantiles(pub_ratios, n=4) if len(pub_ratios) > 1 else pub_ratios * 3
        print(f"publish: {n} messages in {spent:.1f} s ({n / spent:,.0f} msg/s; {total:.1f} s "
              f"with the raw rates); median batch rate {statistics.median(pub_rates):,.0f} "
              f"msg/s; ratio to raw sign: {statistics.median(pub_ratios):.3f} (goal >= 0.5; "
              f"middle half of {len(pub_ratios)} batches {q[0]:.2f}-{q[2]:.2f})")
        raws = [m.raw for m in msgs]
        # A receiver does not hold the sender's 100k decoded messages: keep only the sample the
        # raw rates use, so the receiving figures do not pay the garbage collector to walk them.
        msgs = msgs[:20000]
        gc.collect()
        await stage_costs(msgs, Path(tmp))

        # 2. validate + store the whole feed into a fresh store, verifying on one core
        ratios, rates = [], []
        for r in range(rounds):
            raw_rate = raw_verify_rate(msgs)
            store = await SqliteStore.open(Path(tmp) / f"one-core-{r}.sqlite3")
            ing = Ingestor(store)  # no executor: signatures checked on the event loop thread
            t = time.perf_counter()
            for i in range(0, len(raws), 1000):
                await ing.put(raws[i : i + 1000])
            rep = await ing.finish()
            rate = n / (time.perf_counter() - t)
            await store.close()
            if rep.added != n:
                raise SystemExit(f"bench: stored {rep.added} of {n}")
            rates.append(rate)
            ratios.append(rate / raw_rate)
        print(f"validate+store {n} (one core): median {statistics.median(rates):,.0f} msg/s; "
              f"ratio to raw one-core verify: {statistics.median(ratios):.3f} (goal >= 0.8)")

        # 3. the same with the verify worker processes on every core (what sync and import use)
        ratios, rates = [], []
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            procs = VerifyPool(os.cpu_count() or 1, pool)
            for r in range(rounds):
                raw_rate = raw_verify_rate_all_cores(msgs)
                store = await SqliteStore.open(Path(tmp) / f"all-cores-{r}.sqlite3")
                ing = Ingestor(store, executor=pool, pool=procs)
                t = time.perf_counter()
                for i in range(0, len(raws), 1000):
                    await ing.put(raws[i : i + 1000])
                rep = await ing.finish()
                rate = n / (time.perf_counter() - t)
                await store.close()
                rates.append(rate)
                ratios.append(rate / raw_rate)
            procs.close()
        print(f"validate+store {n} (all {os.cpu_count()} cores): median "
              f"{statistics.median(rates):,.0f} msg/s; ratio to raw all-cores verify: "
              f"{statistics.median(ratios):.3f} (sync/import goal >= 0.75)")
        await node.close()


# Further sections: name -> "module:function", an ``async def f(args: argparse.Namespace)``
# that prints its own figures (ratios to raw rates measured in the same run).
SECTIONS: dict[str, str] = {
    "bundle": "feedlog.bench_bundle:run",
    "groups": "feedlog.bench_groups:run",
    "replication": "feedlog.bench_replication:run",
    "rss": "feedlog.bench_rss:run",
}


async def run_sections(args: argparse.Namespace) -> None:
    import importlib

    from feedlog import native

    print(native.summary())  # FEEDLOG_PURE=1 measures the Python source instead
    only = set(args.only.split(",")) if args.only else None
    if only is None or "feed" in only:
        await bench(args.messages, args.rounds)
    for name, target in SECTIONS.items():
        if only is not None and name not in only:
            continue
        print(f"\n== {name} ==")
        module, func = target.split(":")
        await getattr(importlib.import_module(module), func)(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of each ratio figure; the median is printed (default 5)")
    ap.add_argument("--rss-big", type=int, default=0,
                    help="second size of the rss section, e.g. 1000000 (default 0: skip it)")
    ap.add_argument("--only", default="",
                    help="comma-separated sections: feed," + ",".join(SECTIONS))
    args = ap.parse_args()
    asyncio.run(run_sections(args))


if __name__ == "__main__":
    main()

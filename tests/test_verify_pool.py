"""VerifyPool: signature checks on worker processes answer exactly what verify_many answers, and
a worker that cannot start, dies or answers nonsense costs speed, never a wrong answer."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from feedlog import verify_pool
from feedlog.core.crypto import verify_many
from feedlog.core.errors import LocalError
from feedlog.core.message import SIGN_TAG
from feedlog.ingest import Ingestor
from feedlog.store.memory import MemoryStore
from feedlog.verify_pool import VerifyPool, encode_request
from feedlog.verify_worker import check
from tests.conftest import keypair
from tests.test_ingest import chain, same_outcome, stored, stream


def items(n: int, seed: int = 0) -> list[tuple[bytes, bytes, bytes]]:
    """Signed items with some forged, some with a wrong-size key or signature."""
    rng = random.Random(seed)
    keys = [keypair(f"pool {i}") for i in range(3)]
    out = []
    for _ in range(n):
        k = rng.choice(keys)
        data = rng.randbytes(rng.randint(0, 300))
        sig = k.sign(SIGN_TAG, data)
        public = k.public
        kind = rng.random()
        if kind < 0.1:
            sig = sig[:5] + bytes([sig[5] ^ 1]) + sig[6:]
        elif kind < 0.15:
            data = data + b"x"
        elif kind < 0.18:
            public = public[:31]
        elif kind < 0.2:
            sig = sig + b"\0"
        elif kind < 0.22:
            public = keys[0].public if k is not keys[0] else keys[1].public
        out.append((public, data, sig))
    return out


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as ex:
        yield ex


def test_the_worker_check_is_verify_many() -> None:
    its = items(300)
    request, bad = encode_request(SIGN_TAG, its)
    body = request[8:]
    got = [b == 1 for b in check(SIGN_TAG, body[1 + len(SIGN_TAG) :], len(its))]
    for i in bad:
        got[i] = False
    want = verify_many(SIGN_TAG, its)
    assert got == want
    assert 150 < sum(want) < 300  # both outcomes really occur


async def test_processes_answer_as_verify_many(threads: ThreadPoolExecutor) -> None:
    pool = VerifyPool(2, threads)
    try:
        chunks = [items(n, seed) for seed, n in enumerate([1, 0, 256, 700, 37, 256, 256])]
        futures = [pool.submit(SIGN_TAG, c) for c in chunks]
        assert pool.running == 2 and not pool.broken
        results = await asyncio.gather(*futures)
        assert results == [verify_many(SIGN_TAG, c) for c in chunks]
        other = [(p, d, s) for p, d, s in chunks[2]]  # another tag: nothing verifies
        assert await pool.submit(b"other/tag\0", other) == [False] * len(other)
        assert not pool.broken
    finally:
        pool.close()
    assert pool.running == 0


async def test_a_dead_worker_is_replaced_by_threads(threads: ThreadPoolExecutor) -> None:
    pool = VerifyPool(2, threads)
    try:
        chunks = [items(256, seed) for seed in range(6)]
        futures = [pool.submit(SIGN_TAG, c) for c in chunks]
        victim = pool._workers[0].proc
        victim.kill()
        results = await asyncio.gather(*futures)
        assert results == [verify_many(SIGN_TAG, c) for c in chunks]
        assert pool.broken and victim.poll() is not None
        later = items(50, 99)
        assert await pool.submit(SIGN_TAG, later) == verify_many(SIGN_TAG, later)
    finally:
        pool.close()


async def test_a_worker_answering_nonsense_is_not_believed(
        threads: ThreadPoolExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    liar = tmp_path / "liar.py"  # answers "all valid" for one item more than asked
    liar.write_text(
        "import os, struct, sys\n"
        "f = os.fdopen(0, 'rb')\n"
        "while True:\n"
        "    head = f.read(8)\n"
        "    if len(head) < 8: break\n"
        "    length, count = struct.unpack('<II', head)\n"
        "    f.read(length)\n"
        "    os.write(1, struct.pack('<I', count + 1) + b'\\x01' * (count + 1))\n")
    monkeypatch.setattr(verify_pool, "WORKER_SCRIPT", liar)
    pool = VerifyPool(1, threads)
    try:
        its = items(100, 5)
        assert await pool.submit(SIGN_TAG, its) == verify_many(SIGN_TAG, its)
        assert pool.broken
    finally:
        pool.close()


async def test_no_processes_means_threads(
        threads: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "")
    pool = VerifyPool(2, threads)
    its = items(100, 7)
    assert await pool.submit(SIGN_TAG, its) == verify_many(SIGN_TAG, its)
    assert pool.broken and pool.running == 0
    pool.close()


async def test_ingest_through_the_pool_matches_ingest_without(
        threads: ThreadPoolExecutor) -> None:
    """The random streams of test_ingest (forged, forked, duplicate, junk, older messages)."""
    pool = VerifyPool(2, threads)
    try:
        for seed in range(12):
            rng = random.Random(seed)
            raws = stream(rng)
            sizes = [rng.randint(1, 30) for _ in range(rng.randint(2, 6))]
            outcomes = []
            for with_pool in (False, True):
                store = MemoryStore()
                ing = Ingestor(store, pool=pool if with_pool else None)
                ing.POOL_MIN = 1
                i = 0
                for n in [*sizes, len(raws)]:
                    await ing.put(raws[i : i + n])
                    i += n
                outcomes.append((await ing.finish(), store))
            (r1, s1), (r2, s2) = outcomes
            same_outcome(r2, r1)
            assert await stored(s2) == await stored(s1), seed
            assert await s2.fork_proofs() == await s1.fork_proofs(), seed
        assert pool.running == 2 and not pool.broken  # the processes really did the checks
    finally:
        pool.close()


async def test_a_forged_message_in_a_big_batch_is_caught_by_the_pool(
        threads: ThreadPoolExecutor) -> None:
    msgs = chain(keypair("alice"), 600, "a")
    raws = [m.raw for m in msgs]
    bad = bytearray(raws[400])
    bad[len(msgs[400].header) + 8] ^= 1
    raws[400] = bytes(bad)
    pool = VerifyPool(2, threads)
    try:
        ing = Ingestor(MemoryStore(), pool=pool)
        report = await ing.ingest(raws)
        assert pool.running == 2
        rep = report.feed(msgs[0].author)
        assert (rep.added, rep.rejected) == (400, {"bad-signature": 1, "feed-refused": 199})
    finally:
        pool.close()


async def test_a_small_session_starts_no_process(threads: ThreadPoolExecutor) -> None:
    msgs = chain(keypair("bob"), 40, "b")
    pool = VerifyPool(2, threads)
    ing = Ingestor(MemoryStore(), executor=threads, pool=pool)
    for i in range(0, 40, 10):
        report = await ing.ingest([m.raw for m in msgs[i : i + 10]])
    assert report.added == 40 and pool.running == 0
    pool.close()


async def test_a_node_ends_its_workers_on_close(tmp_path: Path) -> None:
    from feedlog.node import Node

    msgs = chain(keypair("carol"), 700, "c")
    node = await Node.init(tmp_path / "home")
    ing = node.ingestor()
    for i in range(0, 700, 350):  # two batches: the second one reaches POOL_MIN
        await ing.put([m.raw for m in msgs[i : i + 350]])
    report = await ing.finish()
    assert report.added == 700
    procs = [w.proc for w in node._pool._workers]
    assert len(procs) == min(node.workers, os.cpu_count() or 1)
    await node.close()
    assert all(p.poll() is not None for p in procs)


async def test_a_closed_pool_refuses_and_starts_nothing(threads: ThreadPoolExecutor) -> None:
    pool = VerifyPool(2, threads)
    assert await pool.submit(SIGN_TAG, items(600)) == verify_many(SIGN_TAG, items(600))
    assert pool.running == 2
    pool.close()
    for processes in (True, False):
        with pytest.raises(LocalError) as e:
            pool.submit(SIGN_TAG, items(600), processes=processes)
        assert e.value.code == "node-closed"
    assert pool.running == 0


def test_the_worker_answers_no_for_an_item_without_the_tag() -> None:
    its = [i for i in items(40) if verify_many(SIGN_TAG, [i]) == [True]][:2]
    request, _ = encode_request(SIGN_TAG, its)
    body = bytearray(request[8 + 1 + len(SIGN_TAG) :])
    assert check(SIGN_TAG, bytes(body), 2) == b"\x01\x01"
    body[32 + 4 + 64] ^= 1  # the first item's copy of the tag
    assert check(SIGN_TAG, bytes(body), 2) == b"\x00\x01"
    with pytest.raises(ValueError):
        check(SIGN_TAG, bytes(body) + b"\x00", 2)
    with pytest.raises(ValueError):  # an item longer than what is left is refused, not read
        check(SIGN_TAG, bytes(body)[:-1], 2)

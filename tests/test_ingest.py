"""Ingestor: a stream of batches gives the same result however the pipeline groups its commits.

``put`` lets up to ``Ingestor.QUEUE`` planned batches wait for stage 2, which commits waiting
plans in one store transaction (ingest.py ``_run_stage2``). Whether batches are committed one by one
(``ingest`` each), streamed (``put`` all, then ``finish``) with grouped commits, or streamed with
one commit per batch, the stored feeds, the fork proofs and what each feed added must be the
same, including when the stream carries forged, forked, duplicate and out-of-order messages.
Only after a feed is refused (a fatal error) may the codes of its later messages differ: they
were planned before or after the refusal, depending on timing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import Sequence
from typing import Any

from feedlog.core import content
from feedlog.core.crypto import Keypair
from feedlog.core.ids import FeedId
from feedlog.core.message import FeedState, Message, create
from feedlog.ingest import Ingestor, IngestReport
from feedlog.store.memory import MemoryStore
from tests.conftest import keypair


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    async def append(self, msgs: Sequence[Message]) -> None:
        self.appends += 1
        await super().append(msgs)


def chain(keys: Keypair, n: int, tag: str) -> list[Message]:
    st = FeedState(FeedId(keys.public))
    out = []
    for i in range(n):
        m = create(keys, st, content.post(f"{tag} {i}"), 1000 + i)
        out.append(m)
        st = m.state
    return out


def stream(rng: random.Random) -> list[bytes]:
    alice, bob, carol = keypair("alice"), keypair("bob"), keypair("carol")
    a, b, c = chain(alice, 40, "a"), chain(bob, 25, "b"), chain(carol, 25, "c")
    # keep each feed in order but interleave the feeds
    feeds = [[m.raw for m in a], [m.raw for m in b], [m.raw for m in c]]
    raws: list[bytes] = []
    while any(feeds):
        f = rng.choice([f for f in feeds if f])
        k = rng.randint(1, 6)
        raws.extend(f[:k])
        del f[:k]
    trouble = rng.sample(["forge", "fork", "dup", "gap", "junk", "older"], k=rng.randint(0, 4))
    for kind in trouble:
        pos = rng.randrange(len(raws))
        if kind == "forge":  # a flipped bit in a signature
            m = rng.choice(a[1:])
            bad = bytearray(m.raw)
            bad[len(m.header) + 8] ^= 1
            raws.insert(pos, bytes(bad))
        elif kind == "fork":  # bob signs a second message at some seq
            at = rng.randrange(1, len(b))
            twin = create(bob, b[at - 1].state, content.post("evil twin"), 1)
            raws.insert(pos, twin.raw)
        elif kind == "dup":
            raws.insert(pos, rng.choice(raws))
        elif kind == "gap":
            raws.insert(pos, rng.choice(c[5:]).raw)
        elif kind == "junk":
            raws.insert(pos, b"\x83\x00")
        else:
            raws.insert(pos, a[0].raw)
    return raws


async def run(raws: list[bytes], sizes: list[int], streamed: bool, group: bool = True
              ) -> tuple[IngestReport, CountingStore]:
    store = CountingStore()
    ing = Ingestor(store)
    if not group:
        ing.COMMIT_ROWS = 0  # one transaction per batch, as before commits were grouped
    batches, i = [], 0
    for n in sizes:
        batches.append(raws[i : i + n])
        i += n
    batches.append(raws[i:])
    if streamed:
        for batch in batches:
            await ing.put(batch)
        return await ing.finish(), store
    for batch in batches:
        await ing.ingest(batch)
    return ing.report, store


async def stored(store: MemoryStore) -> list[tuple[FeedId, int, list[bytes]]]:
    out = []
    for info in await store.feeds():
        out.append((info.author, info.seq, await store.range(info.author, 1, info.seq)))
    return out


FATAL = {"bad-signature", "fork", "wrong-previous", "feed-refused", "feed-forked"}


def same_outcome(x: IngestReport, y: IngestReport) -> None:
    assert x.feeds.keys() == y.feeds.keys()
    for feed, rx in x.feeds.items():
        ry = y.feeds[feed]
        assert (rx.added, rx.first_seq, rx.last_seq, rx.forked) == (
            ry.added, ry.first_seq, ry.last_seq, ry.forked)
        if not (FATAL & (rx.rejected.keys() | ry.rejected.keys())):
            assert rx == ry
    assert [p.encode() for p in x.forks] == [p.encode() for p in y.forks]


def test_grouped_commits_change_nothing_stored() -> None:
    async def main() -> None:
        grouped = 0
        for seed in range(30):
            rng = random.Random(seed)
            raws = stream(rng)
            sizes = [rng.randint(1, 12) for _ in range(rng.randint(4, 12))]
            one, s1 = await run(raws, sizes, streamed=False)
            ungrouped, s2 = await run(raws, sizes, streamed=True, group=False)
            many, s3 = await run(raws, sizes, streamed=True)
            for report, store in ((ungrouped, s2), (many, s3)):
                same_outcome(report, one)
                assert await stored(store) == await stored(s1), seed
                assert await store.fork_proofs() == await s1.fork_proofs(), seed
            grouped += s3.appends < s2.appends
        assert grouped >= 10  # the grouped commit path really ran

    asyncio.run(main())


def test_a_stream_of_one_feed_is_stored_whole_in_fewer_commits() -> None:
    async def main() -> None:
        msgs = chain(keypair("alice"), 60, "a")
        store = CountingStore()
        ing = Ingestor(store)
        for i in range(0, 60, 10):
            await ing.put([m.raw for m in msgs[i : i + 10]])
        report = await ing.finish()
        assert report.added == 60 and report.codes() == {}
        assert await store.range(msgs[0].author, 1, 60) == [m.raw for m in msgs]
        assert store.appends < 6

    asyncio.run(main())


def test_nothing_is_grouped_behind_a_fork() -> None:
    async def main() -> None:
        bob = keypair("bob")
        msgs = chain(bob, 15, "b")
        twin = create(bob, msgs[1].state, content.post("evil twin"), 1)  # a second seq 3
        store = CountingStore()
        ing = Ingestor(store)
        await ing.put([m.raw for m in msgs[:10]])
        await ing.put([twin.raw])
        await ing.put([m.raw for m in msgs[10:]])
        report = await ing.finish()
        rep = report.feed(FeedId(bob.public))
        assert (rep.added, rep.forked, rep.rejected) == (10, True, {"fork": 1, "feed-refused": 5})
        info = await store.feed(FeedId(bob.public))
        assert info is not None and info.seq == 10 and info.forked_seq == 3
        assert len(report.forks) == 1

    asyncio.run(main())


def test_messages_after_a_broken_link_are_refused_not_a_gap() -> None:
    """A peer holding the other branch of a fork sends seq 2, 3, ...: seq 2 does not link to our
    seq 1 (a broken-link fork) and seq 3 then cannot link either. That is the fork's doing, so
    seq 3 is refused like every message behind a fork, not reported as a gap the peer made
    (``seq-gap`` ends a replication session)."""

    async def main() -> None:
        bob = keypair("bob")
        msgs = chain(bob, 4, "b")
        twin = create(bob, FeedState(FeedId(bob.public)), content.post("other laptop"), 1)
        store = MemoryStore()
        await Ingestor(store).ingest([twin.raw])
        report = await Ingestor(store).ingest([m.raw for m in msgs[1:]])
        rep = report.feed(FeedId(bob.public))
        assert rep.forked and rep.added == 0
        assert rep.rejected == {"wrong-previous": 1, "feed-refused": 2}, rep.rejected
        info = await store.feed(FeedId(bob.public))
        assert info is not None and info.seq == 1 and info.forked_seq == 1

    asyncio.run(main())


def test_stale_messages_of_a_dropped_feed_are_refused_without_blame() -> None:
    """A peer session's feed that left our set during it (spec/replication.md §9.2): what the
    peer sent before it knew is refused with benign codes, and nothing of it is stored; for
    any other feed the same messages are the peer's fault."""

    async def main() -> None:
        carol, dave = keypair("carol"), keypair("dave")
        cs, ds = chain(carol, 5, "c"), chain(dave, 2, "d")
        c, d = FeedId(carol.public), FeedId(dave.public)
        for dropped, codes in (({c, d}, {"stale-gap": 2, "no-longer-wanted": 2}),
                               (set(), {"seq-gap": 2, "not-wanted": 2})):
            store = MemoryStore()
            await Ingestor(store).ingest([m.raw for m in cs[:2]])
            ing = Ingestor(store, allowed=lambda f: f == c, dropped=dropped.__contains__)
            report = await ing.ingest([cs[3].raw, cs[4].raw, ds[0].raw, ds[1].raw])
            assert report.codes() == codes and report.added == 0
            assert await stored(store) == [(c, 2, [m.raw for m in cs[:2]])]

    asyncio.run(main())


class GatedExecutor(concurrent.futures.ThreadPoolExecutor):
    """Signature checks that wait until ``gate`` is set: the slow stage, held still."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.gate = threading.Event()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        def gated() -> Any:
            assert self.gate.wait(10)
            return fn(*args, **kwargs)
        return super().submit(gated)


async def committed_in(batches: list[list[bytes]], limit: int | None) -> list[int]:
    """How many batches each store transaction held, when the first batch's checks are still
    running while the others are put (through ``room`` with ``limit``, as a peer session)."""
    store = CountingStore()
    sizes: list[int] = []
    original = store.append

    async def append(msgs: Sequence[Message]) -> None:
        sizes.append(len(msgs))
        await original(msgs)

    store.append = append  # type: ignore[method-assign]
    with GatedExecutor() as pool:
        ing = Ingestor(store, executor=pool)
        await ing.put(batches[0])
        await asyncio.sleep(0.05)  # stage 2 has taken the first plan and awaits its checks
        for batch in batches[1:]:
            if limit is not None:
                await ing.room(sum(map(len, batch)), limit)
            await ing.put(batch)
        pool.gate.set()
        report = await ing.finish()
    assert report.added == sum(map(len, batches))
    n = len(batches[0])
    return [k // n for k in sizes]


def test_plans_queued_while_a_commit_awaits_its_checks_join_it() -> None:
    k = keypair("slow checks")
    raws = [m.raw for m in chain(k, 50, "s")]
    batches = [raws[i : i + 10] for i in range(0, 50, 10)]
    total = sum(map(len, raws))

    async def main() -> None:
        # one transaction for all five: the four put while the first was being checked join
        # it, rather than the first being committed alone
        assert await asyncio.wait_for(committed_in(batches, None), 30) == [5]
        # a peer session's ``room`` limit: a commit takes at most half of it, the rest keeps
        # the checks going (here 2.5 batches: the first three, then the last two)
        assert await asyncio.wait_for(committed_in(batches, total), 30) == [3, 2]

    asyncio.run(main())

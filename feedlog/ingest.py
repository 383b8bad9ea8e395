"""Taking in messages from a peer, a stick or the local author (spec/feed.md §7, §8).

Every message is validated in the spec's order before it touches the store. The expensive step,
the signature, runs in a thread pool (libsodium releases the GIL, so two workers use two cores)
while the event loop decodes and chain-checks the next batch: a two-stage pipeline.

Stage 1 (event loop): decode, then ``link`` each message against an *optimistic* head per feed
(as if every earlier signature will verify); submit the signature checks.
Stage 2 (in order): await the checks, append to each feed the longest run whose signatures all
verified and that continues the *committed* head, in one atomic store batch; record fork proofs.

A fatal error (bad signature, fork, wrong author) poisons that feed for this ingest session: the
rest of what this source sends for it is dropped, so a hostile source cannot make us spin.
Benign outcomes (duplicate, gap, older) are counted and skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from feedlog.core.errors import InvalidMessage
from feedlog.core.fork import ForkProof, make_fork_proof
from feedlog.core.ids import FeedId
from feedlog.core.message import FeedState, Message
from feedlog.core.validate import (
    Link,
    decode_message,
    link,
    signature_items,
    signatures_valid,
)
from feedlog.store.base import FeedInfo, Store
from feedlog.verify_pool import VerifyPool

UNKNOWN = FeedId(b"")  # report key for bytes that did not even decode


@dataclass
class FeedReport:
    added: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    forked: bool = False
    first_seq: int | None = None
    last_seq: int | None = None

    def reject(self, code: str, n: int = 1) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + n


@dataclass
class IngestReport:
    feeds: dict[FeedId, FeedReport] = field(default_factory=dict)
    forks: list[ForkProof] = field(default_factory=list)

    def feed(self, author: FeedId) -> FeedReport:
        r = self.feeds.get(author)
        if r is None:
            r = self.feeds[author] = FeedReport()
        return r

    @property
    def added(self) -> int:
        return sum(r.added for r in self.feeds.values())

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.feeds.values())

    @property
    def rejected(self) -> int:
        return sum(sum(r.rejected.values()) for r in self.feeds.values())

    def codes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.feeds.values():
            for c, n in r.rejected.items():
                out[c] = out.get(c, 0) + n
        return out


def _verify_chunk(msgs: Sequence[Message]) -> list[bool]:
    return signatures_valid(msgs)


@dataclass
class _Plan:
    candidates: dict[FeedId, list[Message]]
    conflicts: list[tuple[Message, Message | None, int]]  # (msg, counterpart, seq to fetch)
    checks: list[tuple[list[Message], asyncio.Future[list[bool]] | list[bool]]]
    size: int = 0  # messages to verify
    nbytes: int = 0  # raw bytes handed to ``put`` for this plan (settled once committed)

    async def checked(self) -> None:
        """Wait until every signature check of this plan has an answer."""
        for _, fut in self.checks:
            if not isinstance(fut, list):
                await asyncio.wait([fut])


class Ingestor:
    """Validates and stores batches for one source (a peer session, a bundle, the author).

    ``allowed`` filters feeds (feeds we do not replicate are rejected ``not-wanted``).
    ``dropped`` names feeds the source may send stale messages of (a peer session's feeds that
    left our set during it, spec/replication.md §9.2): refused benignly, ``no-longer-wanted``
    when not allowed, ``stale-gap`` for a gap.
    ``on_append`` is called after each committed batch with the appended messages (live push).
    ``on_commit`` is called after each batch stage 2 settled, whatever it added or rejected: a
    peer session reacts to a bad signature found there at once, not at the peer's next frame.
    ``on_failure`` is told at once when stage 2 fails (e.g. the disk is full), not only at the
    source's next ``put``: a live peer may send nothing more for a long time.
    """

    # Signatures per verify job. 512 rather than 256: a sync's MSGS frame brings about 570
    # messages, and fewer, larger jobs cost the workers fewer wake-ups (sync bench: about 5%
    # faster on two cores; import, which puts 1000 at a time, is unchanged).
    CHUNK = 512
    # At most this many messages (about) per store transaction. Bigger commits rewrite the
    # random-keyed id index less often: 1000 -> 4096 -> 16384 rows cost about 10.7 -> 8.3 ->
    # 7.5 us of CPU per message here.
    COMMIT_ROWS = 8192
    QUEUE = 8  # planned batches that may wait for stage 2 (and keep the verify workers busy)
    POOL_MIN = 512  # once a session brought this many, checks go to the worker processes

    def __init__(
        self,
        store: Store,
        *,
        executor: Executor | None = None,
        allowed: Callable[[FeedId], bool] | None = None,
        dropped: Callable[[FeedId], bool] | None = None,
        on_append: Callable[[Sequence[Message]], None] | None = None,
        on_commit: Callable[[], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        cache: dict[FeedId, FeedInfo | None] | None = None,
        pool: VerifyPool | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.pool = pool
        self._seen = 0  # messages put so far
        self.allowed = allowed
        self.dropped = dropped
        self.on_append = on_append
        self.on_commit = on_commit
        self.on_failure = on_failure
        self.report = IngestReport()
        self._committed: dict[FeedId, FeedInfo | None] = cache if cache is not None else {}
        self._optimistic: dict[FeedId, FeedState] = {}
        self._poisoned: set[FeedId] = set()
        # feeds with a conflict planned: their later messages cannot link (the conflict did not
        # advance the feed), which is the fork's consequence, not a gap the sender made
        self._clashed: set[FeedId] = set()
        self._queue: asyncio.Queue[_Plan | None] = asyncio.Queue(maxsize=self.QUEUE)
        self._stage2: asyncio.Task[None] | None = None
        self.pending_bytes = 0
        """Raw bytes handed to ``put`` and not yet settled (stored, or counted as rejected or
        duplicate): what this source holds in the pipeline's memory."""
        self._settled = asyncio.Event()
        self._room_limit = 1 << 62  # the ``limit`` of ``room``, once a source uses it

    async def _info(self, author: FeedId) -> FeedInfo | None:
        if author not in self._committed:
            self._committed[author] = await self.store.feed(author)
        return self._committed[author]

    async def ingest(self, raws: Sequence[bytes]) -> IngestReport:
        """Validate and store one batch, waiting until it is committed."""
        await self.put(raws)
        return await self.finish()

    async def put(self, raws: Sequence[bytes]) -> None:
        """Stage 1 for one batch; returns once its checks are submitted (back-pressure: at most
        QUEUE batches wait for stage 2)."""
        if self._stage2 is None:
            self._stage2 = asyncio.get_running_loop().create_task(self._run_stage2())
            self._stage2.add_done_callback(self._stage2_ended)
        nbytes = sum(map(len, raws))
        self.pending_bytes += nbytes
        try:
            plan = await self._plan(raws)
            plan.nbytes = nbytes
            queued = await self._enqueue(plan)
        except BaseException:
            self._settle(nbytes)  # never queued: stage 2 will not settle it
            raise
        if not queued:
            self._settle(nbytes)
        if self._stage2.done():  # surface stage 2's failure (e.g. disk full) at once
            await self._stage2

    async def _enqueue(self, item: _Plan | None) -> bool:
        """Put ``item`` in stage 2's queue, unless stage 2 ends first (then nothing would ever
        take it: a full queue must not hold the source for ever). Whether it was queued."""
        if not self._queue.full():  # the common case, without a turn of the loop
            self._queue.put_nowait(item)
            return True
        stage2 = self._stage2
        assert stage2 is not None
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            await asyncio.wait({put, stage2}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        return put.done() and not put.cancelled()

    def _stage2_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None \
                and self.on_failure is not None:
            self.on_failure(exc)

    async def room(self, nbytes: int, limit: int) -> None:
        """Wait until ``nbytes`` more fit under ``limit`` pending bytes (back-pressure by
        bytes; a batch always fits when nothing is pending, so one larger than ``limit`` still
        progresses). Returns at once when stage 2 has ended (``put`` then reports why)."""
        self._room_limit = limit
        while self.pending_bytes > 0 and self.pending_bytes + nbytes > limit:
            if self._stage2 is None or self._stage2.done():
                return
            self._settled.clear()
            waiter = asyncio.ensure_future(self._settled.wait())
            try:
                await asyncio.wait({waiter, self._stage2}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def _settle(self, nbytes: int) -> None:
        self.pending_bytes -= nbytes
        self._settled.set()

    async def finish(self) -> IngestReport:
        """Wait for every submitted batch to be committed; the ingestor can be reused after."""
        if self._stage2 is not None:
            await self._enqueue(None)
            task, self._stage2 = self._stage2, None
            await task
        return self.report

    async def _plan(self, raws: Sequence[bytes]) -> _Plan:
        loop = asyncio.get_running_loop()
        candidates: dict[FeedId, list[Message]] = {}
        conflicts: list[tuple[Message, Message | None, int]] = []
        checks: list[tuple[list[Message], asyncio.Future[list[bool]] | list[bool]]] = []
        pending: list[Message] = []  # signatures to check, submitted CHUNK at a time
        self._seen += len(raws)
        processes = self._seen >= self.POOL_MIN  # a few: not worth a process

        def submit() -> None:
            chunk = pending[:]
            pending.clear()
            if self.pool is not None:  # start at once: checks run while this loop decodes on
                checks.append((chunk, self.pool.submit(*signature_items(chunk),
                                                       processes=processes)))
            elif self.executor is None:
                checks.append((chunk, _verify_chunk(chunk)))
            else:
                checks.append((chunk, loop.run_in_executor(self.executor, _verify_chunk, chunk)))

        # The common case is a run of one feed, each message appending to the one before. For
        # it only the chain link is checked per message; the checks that depend on the feed
        # (poisoned, allowed, forked) were made for the run's first message and cannot change
        # before the next ``await``, after which the run is left (``cur = None``).
        cur: FeedId | None = None  # the author of the run being extended
        run: list[Message] = []
        seq, head = 0, None
        dirty = False  # the run's head is newer than self._optimistic
        for raw in raws:
            try:
                m = decode_message(raw)
            except InvalidMessage as exc:
                self.report.feed(UNKNOWN).reject(exc.code)
                continue
            a = m.author
            if a == cur and m.seq == seq + 1 and m.previous == head:
                run.append(m)
                seq, head, dirty = m.seq, m.id, True
                pending.append(m)
                if len(pending) >= self.CHUNK:
                    submit()
                continue
            if dirty and cur is not None:
                self._optimistic[cur] = FeedState(cur, seq, head)
            cur, dirty = None, False
            rep = self.report.feed(a)
            if a in self._poisoned:
                rep.reject("feed-refused")
                continue
            if self.allowed is not None and not self.allowed(a):
                late = self.dropped is not None and self.dropped(a)
                rep.reject("no-longer-wanted" if late else "not-wanted")
                continue
            state = self._optimistic.get(a)
            if state is None or (a in self._committed and self._ahead(a, state)):
                # first sight of this feed, or another source committed beyond our plan
                info = await self._info(a)
                if info is not None and info.forked_seq is not None:
                    rep.reject("feed-forked")
                    continue
                state = info.state if info else FeedState(a)
            where = link(state, m)
            if where is Link.APPEND:
                run = candidates.setdefault(a, [])
                run.append(m)
                self._optimistic[a] = m.state
                cur, seq, head = a, m.seq, m.id
                pending.append(m)
            elif where is Link.DUPLICATE:
                rep.duplicates += 1
            elif where is Link.GAP:
                if a in self._clashed:
                    rep.reject("feed-refused")
                elif self.dropped is not None and self.dropped(a):
                    rep.reject("stale-gap")
                else:
                    rep.reject("seq-gap")
            elif where is Link.OLDER:
                conflicts.append((m, None, m.seq))
                pending.append(m)
            else:
                seq_at = m.seq if where is Link.FORK else m.seq - 1
                self._clashed.add(a)
                same = [c for c in candidates.get(a, []) if c.seq == seq_at]
                conflicts.append((m, same[0] if same else None, seq_at))
                pending.append(m)
            if len(pending) >= self.CHUNK:
                submit()
        if dirty and cur is not None:
            self._optimistic[cur] = FeedState(cur, seq, head)
        if pending:
            submit()
        return _Plan(candidates, conflicts, checks, sum(len(c) for c, _ in checks))

    def _ahead(self, a: FeedId, state: FeedState) -> bool:
        info = self._committed.get(a)
        return info is not None and info.seq > state.seq

    async def _run_stage2(self) -> None:
        while True:
            plan = await self._queue.get()
            if plan is None:
                return
            # Plans already waiting are committed in the same transaction (fewer commits: a
            # commit rewrites every index page the batch touched). Only behind a plan without
            # conflicts, so a fork or an older message is still settled before any later plan.
            # The signature checks are the slow stage: while those of the plans taken are
            # awaited, stage 1 queues more, which join the same commit. So a commit waits only
            # for checks already on their way, and a source that goes quiet is committed at
            # once. Up to COMMIT_ROWS messages, and half the source's ``room`` limit, so the
            # other half keeps the checks going while this commit is written.
            plans = [plan]
            rows, nbytes = plan.size, plan.nbytes
            done = False
            checked = 0
            try:  # whatever happens (a failed commit, a cancelled finish), settle what was taken
                while True:
                    while (not plan.conflicts and rows < self.COMMIT_ROWS
                           and 2 * nbytes < self._room_limit and not self._queue.empty()):
                        nxt = self._queue.get_nowait()
                        if nxt is None:
                            done = True
                            break
                        plans.append(nxt)
                        plan = nxt
                        rows += plan.size
                        nbytes += plan.nbytes
                    if (done or plan.conflicts or rows >= self.COMMIT_ROWS
                            or 2 * nbytes >= self._room_limit):
                        break
                    for p in plans[checked:]:
                        await p.checked()
                    checked = len(plans)
                    if self._queue.empty():
                        break
                await self._commit(plans)
                if self.on_commit is not None:
                    self.on_commit()
            finally:
                self._settle(nbytes)
            if done:
                return

    async def _commit(self, plans: list[_Plan]) -> None:
        batch: list[Message] = []
        valids: list[dict[int, bool]] = []
        for plan in plans:
            valid: dict[int, bool] = {}  # by the identity of the Message objects of this plan
            for chunk, fut in plan.checks:
                results = fut if isinstance(fut, list) else await fut
                valid.update(zip(map(id, chunk), results, strict=True))
            valids.append(valid)
            self._accept(plan, valid, batch)
        if batch:
            try:
                await self.store.append(batch)
            except BaseException:
                for a in {m.author for m in batch}:  # our cache may be ahead of the store
                    self._committed.pop(a, None)
                    self._optimistic.pop(a, None)
                raise
            if self.on_append is not None:
                self.on_append(batch)
        for plan, valid in zip(plans, valids, strict=True):
            for m, counterpart, seq in plan.conflicts:
                await self._conflict(m, counterpart, seq, valid)

    def _accept(self, plan: _Plan, valid: dict[int, bool], batch: list[Message]) -> None:
        """Add to ``batch`` each candidate run's longest verified part that continues the
        committed head (and move the committed head past it)."""
        for a, run in plan.candidates.items():
            rep = self.report.feed(a)
            if a in self._poisoned:
                rep.reject("feed-refused", len(run))
                continue
            info = self._committed.get(a)
            head = info.state if info else FeedState(a)
            if head.seq > run[-1].seq:  # another source committed all of it meanwhile
                rep.duplicates += len(run)
                continue
            if run[0].seq <= head.seq:
                # another source committed part of this run meanwhile: the hash chain makes
                # the overlap identical iff the message at the stored head is the same one
                at = run[head.seq - run[0].seq] if head.seq >= run[0].seq else None
                if at is not None and at.id == head.head:
                    skip = head.seq - run[0].seq + 1
                    rep.duplicates += skip
                    run = run[skip:]
                    if not run:
                        continue
            if run[0].seq != head.seq + 1 or run[0].previous != head.head:
                # an earlier batch of this feed failed after this one was planned
                rep.reject("feed-refused", len(run))
                continue
            good = 0
            for m in run:
                if not valid[id(m)]:
                    break
                good += 1
            if good < len(run):
                rep.reject("bad-signature")
                rep.reject("feed-refused", len(run) - good - 1)
                self._poison(a)
            if good:
                accepted = run[:good]
                batch.extend(accepted)
                rep.added += good
                rep.first_seq = rep.first_seq or accepted[0].seq
                rep.last_seq = accepted[-1].seq
                self._committed[a] = FeedInfo(a, accepted[-1].seq, accepted[-1].id,
                                              info.forked_seq if info else None,
                                              info.name if info else None)

    async def _conflict(
        self, m: Message, counterpart: Message | None, seq: int, valid: dict[int, bool]
    ) -> None:
        a = m.author
        rep = self.report.feed(a)
        if counterpart is None:
            raw = await self.store.get_seq(a, seq)
            if raw is None:
                rep.reject("seq-gap")
                return
            counterpart = decode_message(raw)
        elif not valid.get(id(counterpart), False):
            rep.reject("feed-refused")
            return
        if m.seq == counterpart.seq and m.id == counterpart.id:
            rep.duplicates += 1
            return
        if not valid.get(id(m), False):
            rep.reject("bad-signature")
            self._poison(a)
            return
        try:
            proof = make_fork_proof(counterpart, m)
        except InvalidMessage as exc:
            rep.reject(exc.code)
            return
        added = await self.store.record_fork(proof)
        rep.forked = True
        rep.reject("fork" if proof.kind == "same-seq" else "wrong-previous")
        if added:
            self.report.forks.append(proof)
        self._committed.pop(a, None)
        self._poison(a)

    def _poison(self, author: FeedId) -> None:
        self._poisoned.add(author)
        self._optimistic.pop(author, None)

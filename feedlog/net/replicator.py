"""The replication shell (spec/replication.md): drives one core Session per connection over a
Channel, with the node's store and ingest pipeline, and pushes new messages to live peers.

Per connection there are two tasks: the reader (frames in -> session -> ingest, which applies
back-pressure: we stop reading while the verify pipeline is full, so a peer that floods gets TCP
back-pressure, not our memory) and the writer (session effects out, in order: frames, ranges read
from the store in batches, baselines saved). Everything a peer does wrong ends that connection
with a code; nothing a peer does stops the node or other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedlog.config import Limits
from feedlog.core import replication as rp
from feedlog.core.content import CONTACT_TYPES
from feedlog.core.errors import FeedlogError, InvalidMessage, LocalError, ProtocolError
from feedlog.core.fork import decode_fork_proof
from feedlog.core.ids import FeedId, feed_id_text
from feedlog.core.message import Message
from feedlog.core.wire import (
    HEAD_SIZE,
    Entry,
    Error,
    Fork,
    Ping,
    encode_frame,
    head_prefix,
    make_note,
    msgs_frames,
)
from feedlog.ingest import Ingestor
from feedlog.net.transport import (
    DEFAULT_NETWORK_KEY,
    READ_SIZE,
    Address,
    Channel,
    client_channel,
    close_writer,
    server_channel,
)
from feedlog.node import Node

# ingest outcomes that are facts about an author, not misbehaviour of the peer that relayed them
MSGS_FRAME_SIZE = 240 * 1024  # below MAX_FRAME (256 KiB); big batches feed the verify pool well

BENIGN = frozenset({"fork", "wrong-previous", "feed-forked", "feed-refused",
                    "no-longer-wanted", "stale-gap"})


_DEFAULTS = Limits()


@dataclass
class NetConfig:
    """Replication settings; ``from_limits`` takes the node's configured Limits
    (feedlog/config.py), the one place the defaults live."""

    network_key: bytes = DEFAULT_NETWORK_KEY
    handshake_timeout: float = _DEFAULTS.handshake_timeout
    connect_timeout: float = 10.0
    stall_timeout: float = 30.0  # no frame while the catch-up is still due
    idle_timeout: float = _DEFAULTS.idle_timeout  # live: no frame at all (peers ping)
    ping_interval: float = 30.0
    max_frame: int = _DEFAULTS.max_frame_size
    max_entries: int = _DEFAULTS.max_vector_entries
    max_peers: int = _DEFAULTS.max_concurrent_peers
    max_pending: int = _DEFAULTS.max_pending_handshakes  # connections still in the handshake
    max_buffered: int = _DEFAULTS.per_peer_buffered_bytes  # one peer's bytes not yet stored
    range_batch: int = 1000  # messages read from the store per query when streaming

    @classmethod
    def from_limits(cls, limits: Limits, **overrides: Any) -> NetConfig:
        values: dict[str, Any] = dict(
            handshake_timeout=limits.handshake_timeout, idle_timeout=limits.idle_timeout,
            stall_timeout=min(30.0, limits.idle_timeout),
            max_frame=limits.max_frame_size, max_entries=limits.max_vector_entries,
            max_peers=limits.max_concurrent_peers, max_pending=limits.max_pending_handshakes,
            max_buffered=limits.per_peer_buffered_bytes)
        values.update(overrides)
        return cls(**values)

    # How ``max_buffered`` (B) is shared out along one connection's read path
    # (spec/replication.md §10.2): asyncio's stream buffer stops reading the socket above B/4,
    # the channel takes at most B/8 from it per read, and messages handed to verification and
    # storage stay under B/2 (one frame is always let through when none are pending).

    @property
    def stream_limit(self) -> int:
        """asyncio StreamReader ``limit``: it pauses the socket above twice this."""
        return max(4 * 1024, min(1 << 20, self.max_buffered // 8))

    @property
    def read_size(self) -> int:
        return max(4 * 1024, min(READ_SIZE, self.max_buffered // 8))

    @property
    def ingest_budget(self) -> int:
        return self.max_buffered // 2


@dataclass
class SyncResult:
    peer: str
    remote: str
    incoming: int = 0  # messages the plan said we would receive
    outgoing: int = 0
    feeds_in: int = 0
    feeds_out: int = 0
    received: int = 0  # messages that arrived (including pushes)
    added: int = 0
    sent: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    caught_up: bool = False
    error: str | None = None  # the code that ended the connection, if not a clean end
    message: str = ""
    rejected: dict[str, int] = field(default_factory=dict)
    forks: int = 0

    def as_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Finish:
    """Writer queue item: say goodbye after what is queued before it."""


class Link:
    """One connection: a Session, a reader task, a writer task."""

    def __init__(self, rep: Replicator, channel: Channel, live: bool,
                 on_progress: Callable[[Link], None] | None = None) -> None:
        self.rep = rep
        self.node = rep.node
        self.channel = channel
        self.live = live
        self.on_progress = on_progress
        self.result = SyncResult(feed_id_text(channel.peer), channel.remote)
        self.session: rp.Session | None = None
        self._out: asyncio.Queue[rp.Effect | _Finish] = asyncio.Queue()
        self._ingestor: Ingestor | None = None
        self._saved: dict[str, rp.Table] = {}
        self._seen_codes: dict[str, int] = {}
        self._seen_forks = 0
        self._ended = asyncio.Event()
        self._started = time.monotonic()
        self.caught_up = asyncio.Event()
        self._confirm: asyncio.Task[bool] | None = None  # lifting the restore fence
        # what this node stored while the session was being set up (after its snapshot)
        self._early: dict[FeedId, tuple[int, bytes | None]] = {}
        self._early_changed = False
        self._failed_early: tuple[str, str, bool] | None = None  # fail() during the set-up

    @property
    def peer(self) -> FeedId:
        return self.channel.peer

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> SyncResult:
        self.rep.running += 1
        try:
            return await self._run()
        finally:
            self.rep.running -= 1
            self.rep.note_ended(self)

    async def _start(self) -> rp.Session:
        store = self.node.store
        # listed before the snapshot: what is stored meanwhile is kept for the session (_early)
        self.rep.links.add(self)
        mine, seqs = await self.rep.entries()
        for d in ("sent", "recv"):
            self._saved[d] = {f: Entry(f, n, k, h)
                              for f, (n, k, h) in (await store.peer_baseline(self.peer, d)).items()}
        s = rp.Session(mine=mine, seqs=seqs, sent_base=dict(self._saved["sent"]),
                       recv_base=dict(self._saved["recv"]), live=self.live,
                       max_entries=self.rep.config.max_entries)
        for f, (q, head) in self._early.items():
            s.local_advanced(f, q, head)  # before HELLO: only what the session knows we hold
        self.session = s
        if self._early_changed:
            self.rep._schedule_recompute()
        # a rejection found when a batch is settled ends the link then (spec/replication.md
        # §10.3), even if the peer sends nothing more; a failed commit ends it at once
        self._ingestor = self.node.ingestor(allowed=s.accepts, dropped=s.dropped,
                                            on_append=self._committed,
                                            on_commit=self._check_report,
                                            on_failure=self._ingest_failed)
        return s

    async def _run(self) -> SyncResult:
        try:
            s = await self._start()
        except FeedlogError as exc:  # our store failed before the session began
            self.rep.links.discard(self)
            await self._leave(exc)
            await self.channel.close(goodbye=False)
            return self.result
        self.channel.drain_timeout = self.rep.config.stall_timeout
        writer = asyncio.create_task(self._writer())
        try:
            self._dispatch(s.start())
            if self._failed_early is not None:
                code, message, tell = self._failed_early
                self.fail(code, message, tell_peer=tell)
            await self._reader()
        except FeedlogError as exc:
            self.fail(exc.code, exc.message, tell_peer=not isinstance(exc, LocalError))
        finally:
            self.rep.links.discard(self)
            self._out.put_nowait(_Finish())
            # (the writer records its own failures in the result)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), 10)
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            if self._ingestor is not None:
                with contextlib.suppress(FeedlogError):
                    await self._ingestor.finish()
                self._check_report()
            await self.channel.close(goodbye=False)
            # Place new group posts in their stored order now, not at the first `show`; after
            # the connection is closed, so the peer never waits for it, and never fatal: a
            # show does the same work itself if this could not.
            with contextlib.suppress(FeedlogError):
                await self.node.settle_groups()
            r = self.result
            counters = self.channel.counters
            r.bytes_in, r.bytes_out = counters.bytes_in, counters.bytes_out
            r.seconds = time.monotonic() - self._started
            r.caught_up = s.caught_up
            if self._confirm is not None:
                with contextlib.suppress(FeedlogError):
                    await self._confirm
        return self.result

    def _ingest_failed(self, exc: BaseException) -> None:
        """Stage 2 failed (a full disk): end the link now; the peer must not count on what it
        sent being stored (it plans again from our vector next time)."""
        if isinstance(exc, FeedlogError):
            self.fail(exc.code, exc.message, tell_peer=not isinstance(exc, LocalError))
        else:
            self.fail("ingest-failed", f"storing failed: {exc!r}", tell_peer=False)

    async def _reader(self) -> None:
        s = self.session
        assert s is not None
        cfg = self.rep.config
        while not self._ended.is_set():
            timeout = cfg.idle_timeout if s.caught_up and s.both_live else cfg.stall_timeout
            recv = asyncio.ensure_future(self.channel.receive())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                done, _ = await asyncio.wait({recv, ended}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not recv.done():
                    recv.cancel()
                    with contextlib.suppress(BaseException):
                        await recv
            if recv not in done:
                if self._ended.is_set():
                    return
                code = "peer-timeout" if s.caught_up else "peer-stalled"
                self.fail(code, f"nothing from the peer for {timeout:g} s")
                return
            frames = recv.result()  # raises ProtocolError for a broken stream
            if frames is None:
                if not s.caught_up:
                    self.fail("peer-hung-up", "the peer closed before both sides caught up",
                               tell_peer=False)
                return
            for frame in frames:
                await self._handle(s.receive(frame))
                if s.closed:
                    return

    async def _handle(self, effects: list[rp.Effect]) -> None:
        for e in effects:
            if isinstance(e, rp.Ingest):
                assert self._ingestor is not None
                self.result.received += len(e.messages)
                # per_peer_buffered_bytes: no more reading from this peer until what it sent
                # before is stored (TCP back-pressure)
                await self._ingestor.room(sum(map(len, e.messages)),
                                          self.rep.config.ingest_budget)
                await self._ingestor.put(e.messages)
                self._check_report()
                self._progress()
            elif isinstance(e, rp.Drain):
                assert self._ingestor is not None and self.session is not None
                await self._ingestor.finish()
                self._check_report()
                # a fork found in what the peer sent reaches it (update notes, FORK) before our
                # SYNCED: a one-shot peer closes once both sides said SYNCED
                await self.rep.flush_changes()
                await self._handle(self.session.drained())
            elif isinstance(e, rp.RecordFork):
                await self._record_fork(e.proof)
            else:
                self._dispatch([e])

    def _dispatch(self, effects: list[rp.Effect]) -> None:
        """Effects that need no waiting by the caller: queue output, note plan and state."""
        for e in effects:
            if isinstance(e, rp.Plan):
                r = self.result
                r.incoming, r.outgoing = e.incoming_total, e.outgoing_total
                r.feeds_in, r.feeds_out = len(e.incoming), len(e.outgoing)
                self._progress()
            elif isinstance(e, rp.CaughtUp):
                self.caught_up.set()
                self._confirm_own()
                self._progress()
                assert self.session is not None
                if not self.session.both_live:
                    self._out.put_nowait(_Finish())
            elif isinstance(e, rp.Close):
                self.result.error, self.result.message = e.code, e.message
                self._out.put_nowait(e)
                self._ended.set()
            elif isinstance(e, (rp.Ingest, rp.Drain, rp.RecordFork)):
                raise AssertionError("inline effects go through _handle")
            else:
                self._out.put_nowait(e)

    def _confirm_own(self) -> None:
        """Caught up with a peer that holds our own feed: we hold its head now, so a restored
        node may publish again (spec/forks.md)."""
        s = self.session
        own = s.theirs.get(self.node.id) if s is not None else None
        if own is not None and own.seq > 0 and self._confirm is None:
            self._confirm = asyncio.get_running_loop().create_task(
                self.node.own_head_confirmed())

    def fail(self, code: str, message: str, *, tell_peer: bool = True) -> None:
        """End this connection with ``code`` (sent to the peer in an ERROR frame)."""
        if self.session is None:  # still being set up: it ends so as soon as it begins
            self._failed_early = (code, message, tell_peer)
            return
        if self.session.closed:
            self._ended.set()
            return
        effects = self.session.fail(code, message)
        if not tell_peer:
            effects = [rp.Close(code, message, tell_peer=False)]
        self._dispatch(effects)

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)

    # --- ingest outcomes ---------------------------------------------------------------------

    def _committed(self, msgs: Sequence[Message]) -> None:
        seqs, heads = _heads_of(msgs)
        self.result.added += len(msgs)
        if self.session is not None:
            self._dispatch(self.session.ingested(seqs, heads))

    def _check_report(self) -> None:
        assert self._ingestor is not None
        report = self._ingestor.report
        codes = report.codes()
        for code, n in codes.items():
            if n > self._seen_codes.get(code, 0) and code not in BENIGN:
                self._seen_codes = dict(codes)
                self.result.rejected = dict(codes)
                self.fail(code, f"the peer sent an invalid message ({code})")
                return
        self._seen_codes = dict(codes)
        self.result.rejected = dict(codes)
        if len(report.forks) > self._seen_forks:
            new = report.forks[self._seen_forks :]
            self._seen_forks = len(report.forks)
            self.result.forks += len(new)
            for proof in new:
                self.rep.fork_found(proof.author)

    async def _record_fork(self, raw: bytes) -> None:
        try:
            proof = decode_fork_proof(raw)
        except InvalidMessage as exc:
            self.fail("bad-fork-proof", f"the peer sent an invalid fork proof ({exc.code})")
            return
        assert self.session is not None
        if proof.author not in self.session.mine:
            return  # not a feed we replicate: not our business
        if await self.node.record_fork(proof):
            self.result.forks += 1
            self.rep.fork_found(proof.author)

    # --- writing -----------------------------------------------------------------------------

    async def _writer(self) -> None:
        pending: list[bytes] = []
        while True:
            try:
                item = self._out.get_nowait()
            except asyncio.QueueEmpty:
                if pending:
                    await self.channel.send_frames(pending)
                    pending = []
                    continue
                try:
                    item = await asyncio.wait_for(self._out.get(), self._ping_every())
                except TimeoutError:
                    await self.channel.send_frames([encode_frame(Ping())])
                    continue
            try:
                if isinstance(item, rp.Send):
                    pending.append(encode_frame(item.frame))
                    if sum(map(len, pending)) >= 64 * 1024:
                        await self.channel.send_frames(pending)
                        pending = []
                    continue
                if pending:
                    await self.channel.send_frames(pending)
                    pending = []
                if isinstance(item, _Finish):
                    await self.channel.say_goodbye()
                    return
                if isinstance(item, rp.SendRange):
                    await self._send_range(item)
                elif isinstance(item, rp.SendForks):
                    proofs = await self.node.store.fork_proofs(item.feed)
                    if proofs:
                        await self.channel.send(*[Fork(p) for p in proofs])
                elif isinstance(item, rp.SaveBaseline):
                    await self._save(item)
                elif isinstance(item, rp.Close):
                    if item.tell_peer:
                        with contextlib.suppress(FeedlogError):
                            await self.channel.send(Error(item.code, item.message[:500]))
                    await self.channel.say_goodbye()
                    return
            except ProtocolError as exc:  # the connection is gone
                if self.result.error is None:
                    self.result.error, self.result.message = exc.code, exc.message
                self._ended.set()
                return
            except FeedlogError as exc:  # our store failed (a baseline save, a range read)
                if self.session is not None:
                    self.session.fail(exc.code, exc.message)
                await self._leave(exc)
                self._ended.set()
                return

    async def _leave(self, exc: FeedlogError) -> None:
        """Our own failure ends the link: its code to the peer (not a local one's, §10.4),
        then the goodbye."""
        if self.result.error is None:
            self.result.error, self.result.message = exc.code, exc.message
        with contextlib.suppress(FeedlogError):
            if not isinstance(exc, LocalError):
                await self.channel.send(Error(exc.code, exc.message[:500]))
            await self.channel.say_goodbye()

    def _ping_every(self) -> float | None:
        """How long the writer may stay silent: the ping interval once live, and a third of
        the stall timeout before caught up, so a peer streaming a long catch-up to us while we
        store it does not take us for stalled (spec/replication.md §9.3)."""
        s, cfg = self.session, self.rep.config
        if s is None:
            return None
        every = cfg.ping_interval if s.both_live else None
        if not s.caught_up:
            every = min(every or cfg.stall_timeout, cfg.stall_timeout / 3)
        return every

    async def _send_range(self, r: rp.SendRange) -> None:
        step = self.rep.config.range_batch
        for first in range(r.first, r.last + 1, step):
            if self.session is not None and not self.session.peer_wants(r.feed):
                return  # the peer dropped the feed meanwhile (spec/replication.md §9.2)
            last = min(r.last, first + step - 1)
            raws = await self.node.store.range(r.feed, first, last)
            if not raws:
                return
            await self.channel.send_frames(msgs_frames(raws, max_size=MSGS_FRAME_SIZE))
            self.result.sent += len(raws)
            self._progress()
            if len(raws) < last - first + 1:
                return

    async def _save(self, item: rp.SaveBaseline) -> None:
        old = self._saved.get(item.direction, {})
        upserts = {f: (e.note, e.forked, e.head) for f, e in item.table.items()
                   if old.get(f) != e}
        removes = [f for f in old if f not in item.table]
        await self.node.store.update_peer_baseline(self.peer, item.direction, upserts, removes)
        self._saved[item.direction] = dict(item.table)

    # --- from the replicator -----------------------------------------------------------------

    def local_advanced(self, seqs: dict[FeedId, int],
                       heads: dict[FeedId, bytes] | None = None) -> None:
        if self.session is None:  # being set up: the session takes it when it begins
            for f, q in seqs.items():
                if q > self._early.get(f, (0, None))[0]:
                    self._early[f] = (q, heads.get(f) if heads else None)
            return
        if self.session.closed:
            return
        for f, q in seqs.items():
            self._dispatch(self.session.local_advanced(f, q, heads.get(f) if heads else None))

    def local_changed(self, entries: dict[FeedId, Entry | None]) -> None:
        if self.session is None:  # its snapshot may predate this: recompute once it begins
            self._early_changed = True
            return
        if self.session.closed:
            return
        self._dispatch(self.session.local_changed(entries))


class Replicator:
    """A node's replication: its server, its outgoing syncs, and live push between them."""

    SETTLE_DELAY = 1.0  # s: group posts pushed live are ordered this soon after, in one go

    def __init__(self, node: Node, config: NetConfig | None = None) -> None:
        self.node = node
        self.config = config or NetConfig.from_limits(node.limits)
        self.links: set[Link] = set()
        self.blocked: frozenset[FeedId] = frozenset()
        # the latest connections' results (bounded: a server runs for months)
        self.finished: deque[SyncResult] = deque(maxlen=1000)
        self.running = 0  # links whose run has not returned yet
        self.on_link_end: Callable[[Link], None] | None = None
        self._recompute: asyncio.Task[None] | None = None
        self._recompute_again = False  # something changed while a recompute was running
        self._settle: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        # server connections still in the handshake, oldest first, with the host each came
        # from; and those dropped for newer ones
        self.handshaking: dict[asyncio.StreamWriter, str] = {}
        self.evicted: set[asyncio.StreamWriter] = set()
        node.listeners.append(self._on_stored)

    def close(self) -> None:
        """Stop listening to the node; a recompute or group ordering still pending is dropped
        (the node's store may be closed next)."""
        with contextlib.suppress(ValueError):
            self.node.listeners.remove(self._on_stored)
        for task in (self._recompute, self._settle):
            if task is None:
                continue
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved: a failure after the links ended is moot
            else:
                task.cancel()
        self._recompute = self._settle = None

    async def entries(self) -> tuple[rp.Table, dict[FeedId, int]]:
        """This node's notes: every feed it replicates, how far it holds it, forks."""
        rep = await self.node.replication()
        self.blocked = rep.blocked
        feeds = {f.author: f for f in await self.node.store.feeds()}
        self.node.refresh_heads(feeds.values())  # other processes may have written since
        mine: rp.Table = {}
        for f in rep.wanted:
            info = feeds.get(f)
            seq = info.seq if info else 0
            forked = info.forked_seq if info else None
            head = head_prefix(info.head) if info and seq > 0 else None
            mine[f] = Entry(f, make_note(seq, forked is None), forked, head)
        seqs = {f: info.seq for f, info in feeds.items()}
        return mine, seqs

    def _on_stored(self, msgs: Sequence[Message]) -> None:
        seqs, heads = _heads_of(msgs)
        for link in list(self.links):
            link.local_advanced(seqs, heads)
        types = {m.value.get("type") for m in msgs if m.value is not None}
        if any(t in CONTACT_TYPES for t in types):
            self._schedule_recompute()
        if "post" in types and (self._settle is None or self._settle.done()):
            live = any(link.live and link.caught_up.is_set() for link in self.links)
            if live and any(m.value is not None and "group" in m.value for m in msgs):
                self._settle = asyncio.get_running_loop().create_task(self._settle_soon())

    async def _settle_soon(self) -> None:
        """Group posts pushed to a live link are put in their stored order within
        SETTLE_DELAY (a one-shot link does it when it ends), so a `show` during a long live
        session finds the order ready; never fatal: a show does the same work itself."""
        await asyncio.sleep(self.SETTLE_DELAY)
        with contextlib.suppress(FeedlogError):
            await self.node.settle_groups()

    def store_changed(self, seqs: dict[FeedId, int]) -> None:
        """Another process wrote to this node's store (``feedlog publish`` while ``serve``
        runs): forget cached heads, push what live peers lack, and recompute what we replicate
        (a follow may be among the new messages)."""
        if not seqs:
            return
        self.node.forget_heads(seqs)
        for link in list(self.links):
            link.local_advanced(seqs)
        self._schedule_recompute()

    def fork_found(self, feed: FeedId) -> None:
        """A fork proof for ``feed`` was stored: every link's notes for it change."""
        self.node.forget_heads([feed])
        self._schedule_recompute()

    async def flush_changes(self) -> None:
        """Wait until a pending recompute of what this node replicates has been pushed to
        every link."""
        task = self._recompute
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def wait_links(self, timeout: float) -> bool:
        """Wait until every link has finished its run (its cleanup included); False on
        timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.running and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self.running

    def _schedule_recompute(self) -> None:
        if self._recompute is not None and not self._recompute.done():
            # it may have read the store before this change: it runs once more when done
            self._recompute_again = True
            return
        self._recompute = asyncio.get_running_loop().create_task(self._push_entries())

    async def _push_entries(self) -> None:
        while True:
            self._recompute_again = False
            await asyncio.sleep(0)
            await self._push_entries_once()
            if not self._recompute_again:
                return

    async def _push_entries_once(self) -> None:
        mine, _ = await self.entries()
        for link in list(self.links):
            s = link.session
            if s is None:
                continue
            changes: dict[FeedId, Entry | None] = {
                f: e for f, e in mine.items() if s.mine.get(f) != e}
            changes.update({f: None for f in s.mine if f not in mine})
            # a note's seq changes with every message: only want/fork/membership changes count
            changes = {f: e for f, e in changes.items()
                       if e is None or f not in s.mine or s.mine[f].wants != e.wants
                       or s.mine[f].forked != e.forked}
            if changes:
                link.local_changed(changes)

    def note_ended(self, link: Link) -> None:
        self.finished.append(link.result)
        if self.on_link_end is not None:
            self.on_link_end(link)

    # --- connections -------------------------------------------------------------------------

    def authorize(self, public: bytes) -> bool:
        return FeedId(public) not in self.blocked and public != self.node.id

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    live: bool = True,
                    on_progress: Callable[[Link], None] | None = None) -> asyncio.Server:
        await self.entries()  # learn the block list before the first handshake

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            cfg = self.config
            try:
                if len(self.links) >= cfg.max_peers:
                    await close_writer(writer)
                    return
                channel = await server_channel(
                    reader, writer, network_key=cfg.network_key, keys=self.node.keys,
                    timeout=cfg.handshake_timeout, authorize=self.authorize,
                    max_frame=cfg.max_frame, read_size=cfg.read_size)
            except FeedlogError as exc:
                code, message = exc.code, exc.message
                if writer in self.evicted:
                    code = "handshake-evicted"
                    message = "dropped for a newer connection: too many pending handshakes"
                self.finished.append(SyncResult("?", _peername(writer), error=code,
                                                message=message))
                return
            finally:
                self.handshaking.pop(writer, None)
                self.evicted.discard(writer)
            await Link(self, channel, live, on_progress).run()

        def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Handshakes in progress are counted apart from the peers served: a flood of
            # connections that never finish one holds at most max_pending of them (and as many
            # sockets), so it cannot keep a good peer out. When full, the oldest pending
            # handshake of the host holding the most is dropped for the newcomer: one flooding
            # host evicts only its own connections, never a good peer's from another address
            # however fast it floods. Done here, as each connection is accepted, before any
            # task runs.
            while len(self.handshaking) >= self.config.max_pending:
                victim = _busiest_hosts_oldest(self.handshaking)
                self.handshaking.pop(victim)
                self.evicted.add(victim)
                victim.transport.abort()
            self.handshaking[writer] = _host(writer)
            task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
                handle(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return await asyncio.start_server(spawn, host, port, limit=self.config.stream_limit)

    async def connect(self, address: Address, *, live: bool = False,
                      on_progress: Callable[[Link], None] | None = None,
                      on_link: Callable[[Link], None] | None = None) -> SyncResult:
        """Connect to a server, replicate until both sides are caught up (or, when ``live``,
        until the connection ends), and return what happened."""
        if address.feed == self.node.id:
            raise LocalError("that address is this node itself", code="self-sync")
        await self.entries()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address.host, address.port,
                                        limit=self.config.stream_limit),
                self.config.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise LocalError(f"cannot connect to {address.host}:{address.port}: "
                             f"{_why_not_connected(exc, self.config.connect_timeout)}",
                             code="connect-failed") from None
        channel = await client_channel(
            reader, writer, network_key=self.config.network_key, keys=self.node.keys,
            server=address.feed, timeout=self.config.handshake_timeout,
            max_frame=self.config.max_frame, read_size=self.config.read_size)
        link = Link(self, channel, live, on_progress)
        if on_link is not None:
            on_link(link)
        return await link.run()


def _heads_of(msgs: Sequence[Message]) -> tuple[dict[FeedId, int], dict[FeedId, bytes]]:
    """The highest seq per feed among ``msgs`` (a stored batch: each feed's messages in
    ascending order, so its last is its highest) and the head prefix of that message."""
    last = {m.author: m for m in msgs}
    return ({a: m.seq for a, m in last.items()},
            {a: m.id[:HEAD_SIZE] for a, m in last.items()})


def _why_not_connected(exc: BaseException, timeout: float) -> str:
    """What a failed TCP connect means to the person who asked for it."""
    if isinstance(exc, TimeoutError):
        return (f"no answer within {timeout:g} s (the machine is off or asleep, or a firewall "
                "drops the connection)")
    # a host name with several addresses (IPv6 and IPv4) fails with every attempt's errno in
    # one message (asyncio before Python 3.12)
    codes = {int(n) for n in re.findall(r"\[Errno (\d+)\]", str(exc))}
    if isinstance(exc, ConnectionRefusedError) or codes == {errno.ECONNREFUSED}:
        return "connection refused: nothing listens on that port (is `feedlog serve` running?)"
    if isinstance(exc, socket.gaierror):
        return "no such host (the name does not resolve)"
    if getattr(exc, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to that host (another network, or the link is down)"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _host(writer: asyncio.StreamWriter) -> str:
    return _peername(writer).rpartition(":")[0] or "?"


def _busiest_hosts_oldest(pending: dict[asyncio.StreamWriter, str]) -> asyncio.StreamWriter:
    """The oldest connection (``pending`` is in arrival order) of the host with the most."""
    counts = Counter(pending.values())
    most = max(counts.values())
    return next(w for w, host in pending.items() if counts[host] == most)


def _peername(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    return f"{info[0]}:{info[1]}" if isinstance(info, tuple) else "?"

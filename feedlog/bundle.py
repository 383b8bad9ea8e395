"""Export to and import from a bundle folder on a USB stick: the file IO around core.bundle.

Crash safety (spec/bundle.md §5): an export never modifies a file a reader may rely on. New
records go to a new segment written under a temporary name, fsynced, renamed, and the folder
fsynced; then the new summary is written the same way. A stick pulled at any byte leaves the old
summary and whole segments (plus, at worst, ``*.tmp`` files, or one renamed segment the summary
does not list yet). Readers take what the data holds; the next export deletes ``*.tmp`` files and
re-indexes from the data whenever the summary does not match the files (§5.3).

Import feeds the records to an Ingestor in batches of ~1000 so every message is verified (on all
cores) before it is stored; fork proofs are verified and recorded after the messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from feedlog.config import Limits
from feedlog.core import bundle as fmt
from feedlog.core.errors import InvalidMessage, LocalError, RemoteError
from feedlog.core.fork import ForkProof, decode_fork_proof
from feedlog.core.ids import FeedId, MsgId, feed_id_text
from feedlog.core.message import FeedState, Message
from feedlog.core.validate import decode_message
from feedlog.core.view import GroupMessage, GroupRoot
from feedlog.files import fsync_dir
from feedlog.ingest import UNKNOWN, IngestReport
from feedlog.node import Node
from feedlog.store.base import (
    BaselineTable,
    ContactRow,
    FeedInfo,
    NoteTable,
    PeerRecord,
    Store,
)
from feedlog.store.groups import DisplayRow, GroupSummary, PlacedRow

Progress = Callable[[int, int], None]  # (done, total)
BATCH = 1000
READ_CHUNK = 4 * 1024 * 1024
WRITE_CHUNK = 1024 * 1024


# --- the folder -------------------------------------------------------------------------------

def bundle_dir(root: Path, *, create: bool = False) -> Path:
    """``root/feedlog`` (found in any letter case); LocalError when it is not there."""
    root = Path(root)
    if not root.is_dir():
        raise LocalError(f"{root} is not a folder", code="no-such-dir")
    for entry in root.iterdir():
        if entry.name.lower() == fmt.ROOT and entry.is_dir():
            return entry
    if not create:
        raise LocalError(f"no bundle in {root} (no {fmt.ROOT}/ folder)", code="no-bundle")
    path = root / fmt.ROOT
    try:
        path.mkdir()
    except OSError as exc:
        raise LocalError(f"cannot create {path}: {exc.strerror}", code="bundle-unwritable") \
            from None
    fsync_dir(root)
    return path


TOO_LARGE = "file-too-large"  # a bundle file over max_bundle_file_size: listed, never read


@dataclass
class Listing:
    segments: dict[int, Path]
    sizes: dict[int, int]
    summary: Path | None
    tmp: list[Path]
    oversize: dict[int, int] = field(default_factory=dict)
    """Segments larger than the reader's ``max_bundle_file_size`` (number -> size): left out
    of ``segments`` and ``sizes``, so nothing reads them, but their numbers stay taken."""
    max_file: int = Limits().max_bundle_file_size


def list_bundle(bdir: Path, max_file: int | None = None) -> Listing:
    """The files of a bundle folder; segments over ``max_file`` bytes (default: the default
    ``max_bundle_file_size``) go to ``oversize`` instead of ``segments``."""
    limit = Limits().max_bundle_file_size if max_file is None else max_file
    segs: dict[int, Path] = {}
    sizes: dict[int, int] = {}
    oversize: dict[int, int] = {}
    summary = None
    tmp = []
    for entry in bdir.iterdir():
        num = fmt.parse_segment_name(entry.name)
        if num is not None and entry.is_file():
            size = entry.stat().st_size
            if size > limit:
                oversize[num] = size
                continue
            segs[num] = entry
            sizes[num] = size
        elif entry.name.lower() == fmt.SUMMARY and entry.is_file():
            summary = entry
        elif fmt.is_tmp_name(entry.name):
            tmp.append(entry)
    return Listing(segs, sizes, summary, tmp, oversize, limit)


def read_summary(listing: Listing) -> tuple[fmt.Summary, str | None]:
    """The summary, or an empty one and the reason it could not be used."""
    if listing.summary is None:
        return fmt.Summary.empty(), None if not listing.segments else "no-summary"
    try:
        size = listing.summary.stat().st_size
        if size > listing.max_file:
            return fmt.Summary.empty(), TOO_LARGE
        if size > fmt.MAX_SUMMARY_SIZE:
            return fmt.Summary.empty(), "bad-summary"
        return fmt.decode_summary(listing.summary.read_bytes()), None
    except RemoteError as exc:
        return fmt.Summary.empty(), exc.code


def _write_file(bdir: Path, tmp_name: str, final_name: str, data: Iterable[bytes]) -> int:
    tmp = bdir / tmp_name
    size = 0
    with open(tmp, "wb") as f:
        for chunk in data:
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bdir / final_name)
    fsync_dir(bdir)
    return size


def read_ranges(listing: Listing, ranges: Sequence[tuple[int, int, int]],
                progress: Callable[[int], None] | None = None
                ) -> Iterator[tuple[int, fmt.Scan]]:
    """Scan each (segment, offset, length) range in big sequential reads; yields the records
    and damage of each chunk read, so memory stays bounded whatever the file size."""
    for seg, off, length in ranges:
        with open(listing.segments[seg], "rb") as f:
            f.seek(off)
            for scan in _scan_stream(f, off, length):
                if progress is not None:
                    progress(scan.consumed)
                yield seg, scan


def _scan_stream(f: BinaryIO, off: int, length: int) -> Iterator[fmt.Scan]:
    pending = b""
    base = off
    left = length
    while True:
        chunk = f.read(min(READ_CHUNK, left)) if left > 0 else b""
        left -= len(chunk)
        final = left <= 0 or not chunk
        buf = pending + chunk if pending else chunk
        s = fmt.scan(buf, base, final=final)
        pending = buf[s.consumed :]
        base += s.consumed
        yield s
        if final:
            return


# --- export -----------------------------------------------------------------------------------

@dataclass
class ExportReport:
    dir: str
    feeds: list[fmt.ExportStep] = field(default_factory=list)
    written: dict[FeedId, int] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0
    segments: list[str] = field(default_factory=list)
    fork_proofs: int = 0
    reindexed: str | None = None  # why the summary was rebuilt from the data, if it was

    def as_json(self) -> dict[str, Any]:
        return {
            "dir": self.dir,
            "messages": self.messages,
            "bytes": self.bytes,
            "segments": self.segments,
            "fork_proofs": self.fork_proofs,
            "reindexed": self.reindexed,
            "feeds": [
                {"feed": feed_id_text(s.author), "action": s.action,
                 "first": s.first if s.action == fmt.WRITE else None,
                 "last": s.last if s.action == fmt.WRITE else None,
                 "written": self.written.get(s.author, 0)}
                for s in self.feeds
            ],
        }


def reindex(listing: Listing) -> tuple[fmt.Summary, dict[int, int]]:
    """Rebuild a summary from the data alone (spec/bundle.md §5.3): for each feed, the chain of
    complete records from seq 1 that link; committed lengths are the file sizes. Also returns
    the segments that end in a torn tail, with the length of their undamaged prefix."""
    heads: dict[FeedId, tuple[int, MsgId]] = {}
    extents: dict[FeedId, list[fmt.Extent]] = {}
    forks: list[fmt.ForkEntry] = []
    torn: dict[int, int] = {}
    for seg, scan in read_ranges(listing, [(n, 0, s) for n, s in sorted(listing.sizes.items())]):
        for d in scan.damage:
            if d.code == "torn-tail":
                torn[seg] = d.offset
        for r in scan.records:
            try:
                if r.kind == fmt.KIND_FORK:
                    p = decode_fork_proof(r.body)
                    forks.append(fmt.ForkEntry(p.author, p.seq, seg, r.offset, r.size))
                    continue
                m = decode_message(r.body)
            except InvalidMessage:
                continue
            seq, head = heads.get(m.author, (0, None))
            if m.seq != seq + 1 or m.previous != head:
                continue
            heads[m.author] = (m.seq, m.id)
            ext = extents.setdefault(m.author, [])
            if ext and ext[-1].segment == seg and ext[-1].offset + ext[-1].length == r.offset:
                e = ext[-1]
                ext[-1] = fmt.Extent(seg, e.offset, e.length + r.size, e.first, m.seq)
            else:
                ext.append(fmt.Extent(seg, r.offset, r.size, m.seq, m.seq))
    feeds = {a: fmt.FeedSummary(a, 1, s, h, tuple(extents[a])) for a, (s, h) in heads.items()}
    sizes = dict(listing.sizes)
    sizes.update(torn)
    return fmt.Summary(sizes, feeds, tuple(forks)), torn


def _cut_torn_tails(bdir: Path, listing: Listing, torn: dict[int, int]) -> None:
    """Replace each segment ending in a torn tail by its undamaged prefix (spec/bundle.md §5.3):
    a copy under the temporary name, fsynced, renamed over the segment. Pulled out midway, the
    stick holds either the old segment or the repaired one, and readers accept both."""
    for seg, good in sorted(torn.items()):
        path = listing.segments[seg]
        if good == 0:
            path.unlink()
            del listing.segments[seg], listing.sizes[seg]
            continue
        with open(path, "rb") as f:
            def chunks(f: BinaryIO = f, left: int = good) -> Iterator[bytes]:
                while left > 0:
                    chunk = f.read(min(READ_CHUNK, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk

            _write_file(bdir, fmt.segment_tmp_name(seg), path.name, chunks())
        listing.sizes[seg] = good
    fsync_dir(bdir)


class _SegmentWriter:
    """Writes records into new segments (temporary name, fsync, rename), tracking extents."""

    def __init__(self, bdir: Path, first_number: int, segment_max: int) -> None:
        self.bdir = bdir
        self.number = first_number - 1
        self.segment_max = segment_max
        self.f: BinaryIO | None = None
        self.size = 0
        self.buf = bytearray()
        self.done: dict[int, int] = {}  # segment number -> size

    def _open(self) -> None:
        self.number += 1
        self.f = open(self.bdir / fmt.segment_tmp_name(self.number), "wb")  # noqa: SIM115
        self.size = 0

    def add(self, record: bytes) -> tuple[int, int]:
        """Append one record; returns (segment, offset)."""
        if self.f is None or (self.size and self.size + len(record) > self.segment_max):
            self.close_segment()
            self._open()
        where = (self.number, self.size)
        self.buf += record
        self.size += len(record)
        if len(self.buf) >= WRITE_CHUNK:
            self._flush()
        return where

    def _flush(self) -> None:
        if self.f is not None and self.buf:
            self.f.write(self.buf)
            self.buf.clear()

    def close_segment(self) -> None:
        if self.f is None:
            return
        self._flush()
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        self.f = None
        os.replace(self.bdir / fmt.segment_tmp_name(self.number),
                   self.bdir / fmt.segment_name(self.number))
        fsync_dir(self.bdir)
        self.done[self.number] = self.size

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


async def export_bundle(node: Node, root: Path, feeds: Iterable[FeedId] | None = None, *,
                        progress: Progress | None = None,
                        segment_max: int | None = None) -> ExportReport:
    """Write what the bundle in ``root/feedlog`` lacks of ``feeds`` (default: this node's own
    and replicated feeds) and every fork proof this node holds. Segments are cut at
    ``segment_max`` bytes (default: the node's ``bundle_segment_size`` limit)."""
    if segment_max is None:
        segment_max = node.limits.bundle_segment_size
    if not 1024 <= segment_max <= fmt.FILE_LIMIT - fmt.MAX_RECORD:
        raise LocalError(f"segment size {segment_max} out of range", code="bad-segment-size")
    bdir = bundle_dir(root, create=True)
    report = ExportReport(str(root))
    try:
        return await _export(node, bdir, feeds, progress, segment_max, report)
    except OSError as exc:
        raise LocalError(f"cannot write the bundle in {bdir}: {exc.strerror or exc}",
                         code="bundle-unwritable") from None


async def _export(node: Node, bdir: Path, feeds: Iterable[FeedId] | None,
                  progress: Progress | None, segment_max: int,
                  report: ExportReport) -> ExportReport:
    listing = list_bundle(bdir, node.limits.max_bundle_file_size)
    for t in listing.tmp:
        t.unlink()
    if listing.tmp:
        fsync_dir(bdir)
    summary, problem = read_summary(listing)
    if problem is None and dict(summary.segments) != listing.sizes:
        problem = "summary-mismatch"
    if problem is not None:
        summary, torn = reindex(listing)
        _cut_torn_tails(bdir, listing, torn)
        summary = fmt.Summary({n: s for n, s in summary.segments.items() if n in listing.sizes},
                              summary.feeds, summary.forks)
        report.reindexed = problem

    authors = sorted(set(feeds) if feeds is not None else (await node.replication()).wanted)
    local: list[FeedState] = []
    local_ids: dict[FeedId, MsgId] = {}
    for a in authors:
        info = await node.store.feed(a)
        st = info.state if info else FeedState(a)
        local.append(st)
        on = summary.feeds.get(a)
        if on is not None and 1 <= on.last <= st.seq:
            raw = await node.store.get_seq(a, on.last)
            if raw is not None:
                local_ids[a] = decode_message(raw).id
    report.feeds = fmt.plan_export(summary, local, local_ids)
    todo = [s for s in report.feeds if s.action == fmt.WRITE]
    total = sum(s.last - s.first + 1 for s in todo)

    have_forks = {(k.author, k.seq) for k in summary.forks}
    proofs: list[ForkProof] = []
    for raw in await node.store.fork_proofs():
        p = decode_fork_proof(raw)
        if (p.author, p.seq) not in have_forks:
            have_forks.add((p.author, p.seq))
            proofs.append(p)

    if not todo and not proofs and problem is None:
        return report
    used = set(listing.sizes) | set(summary.segments) | set(listing.oversize)
    writer = _SegmentWriter(bdir, max(used, default=0) + 1, segment_max)
    new_feeds = dict(summary.feeds)
    new_forks = list(summary.forks)
    done = 0
    try:
        for step in todo:
            exts: list[fmt.Extent] = []
            head: MsgId | None = None
            for start in range(step.first, step.last + 1, BATCH):
                raws = await node.store.range(step.author, start,
                                              min(step.last, start + BATCH - 1))
                for i, raw in enumerate(raws):
                    rec = fmt.encode_record(fmt.KIND_MESSAGE, raw)
                    seg, off = writer.add(rec)
                    seq = start + i
                    if exts and exts[-1].segment == seg:
                        e = exts[-1]
                        exts[-1] = fmt.Extent(seg, e.offset, e.length + len(rec), e.first, seq)
                    else:
                        exts.append(fmt.Extent(seg, off, len(rec), seq, seq))
                    report.bytes += len(rec)
                if raws:
                    head = decode_message(raws[-1]).id
                done += len(raws)
                report.written[step.author] = report.written.get(step.author, 0) + len(raws)
                if progress is not None:
                    progress(done, total)
            if head is None or not exts:
                continue
            old = summary.feeds.get(step.author)
            new_feeds[step.author] = fmt.FeedSummary(
                step.author, old.first if old else exts[0].first, exts[-1].last, head,
                (old.extents if old else ()) + tuple(exts))
        for p in proofs:
            rec = fmt.encode_record(fmt.KIND_FORK, p.encode())
            seg, off = writer.add(rec)
            new_forks.append(fmt.ForkEntry(p.author, p.seq, seg, off, len(rec)))
            report.bytes += len(rec)
            report.fork_proofs += 1
        writer.close_segment()
    finally:
        writer.abort()
    report.messages = done
    report.segments = [fmt.segment_name(n) for n in sorted(writer.done)]
    segments = dict(summary.segments)
    segments.update(writer.done)
    new = fmt.Summary(segments, new_feeds, tuple(new_forks))
    _write_file(bdir, fmt.SUMMARY_TMP, fmt.SUMMARY, [fmt.encode_summary(new)])
    return report


# --- import -----------------------------------------------------------------------------------

@dataclass
class ImportReport:
    dir: str
    dry_run: bool
    ingest: IngestReport
    plan: fmt.ImportPlan
    damage: list[tuple[int, fmt.Damage]] = field(default_factory=list)  # (segment, damage)
    summary_problem: str | None = None
    summary_mismatch: list[FeedId] = field(default_factory=list)
    fork_proofs_new: int = 0
    fork_proofs_seen: int = 0
    fork_rejects: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return (not self.damage and not self.ingest.rejected and not self.fork_rejects
                and self.summary_problem is None and not self.summary_mismatch)

    def feed_rows(self) -> list[dict[str, Any]]:
        planned = {p.author: p for p in self.plan.feeds}
        rows = []
        for a in sorted(set(planned) | set(self.ingest.feeds)):
            r = self.ingest.feeds.get(a)
            p = planned.get(a)
            gap_codes = r.rejected.get("seq-gap", 0) if r else 0
            rows.append({
                "feed": "-" if a == UNKNOWN else feed_id_text(a),
                "new": r.added if r else 0,
                "had": (r.duplicates if r else 0) + (p.have if p else 0),
                "rejected": dict(sorted(r.rejected.items())) if r else {},
                "gap": list(p.gap) if p and p.gap else None,
                "gap_messages": gap_codes,
                "forked": bool(r and r.forked),
            })
        return rows

    def as_json(self) -> dict[str, Any]:
        return {
            "dir": self.dir,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "new": self.ingest.added,
            "had": sum(r["had"] for r in self.feed_rows()),
            "rejected": self.ingest.codes(),
            "bytes_read": self.bytes_read,
            "skipped_feeds": len(self.plan.skipped),
            "fork_proofs": {"seen": self.fork_proofs_seen, "new": self.fork_proofs_new,
                            "rejected": dict(sorted(self.fork_rejects.items()))},
            "damage": [{"segment": fmt.segment_name(s), "offset": d.offset,
                        "length": d.length, "code": d.code} for s, d in self.damage],
            "summary": {"problem": self.summary_problem,
                        "mismatch": [feed_id_text(a) for a in self.summary_mismatch]},
            "feeds": self.feed_rows(),
        }


async def import_bundle(node: Node, root: Path, *, all_feeds: bool = False,
                        dry_run: bool = False, use_summary: bool = True,
                        progress: Progress | None = None) -> ImportReport:
    """Verify and store what the bundle in ``root/feedlog`` holds and ``node`` lacks: the feeds
    it replicates, or every feed with ``all_feeds``. ``dry_run`` stores nothing."""
    try:
        return await _import(node, root, all_feeds, dry_run, use_summary, progress)
    except OSError as exc:
        raise RemoteError(f"cannot read the bundle in {root}: {exc.strerror or exc}",
                          code="bundle-unreadable") from None


async def _import(node: Node, root: Path, all_feeds: bool, dry_run: bool, use_summary: bool,
                  progress: Progress | None) -> ImportReport:
    bdir = bundle_dir(root)
    listing = list_bundle(bdir, node.limits.max_bundle_file_size)
    summary, problem = read_summary(listing) if use_summary else (fmt.Summary.empty(), None)
    wanted = None if all_feeds else (await node.replication()).wanted
    store: Store = _DryRun(node.store) if dry_run else node.store
    local: dict[FeedId, FeedState] = {}
    local_ids: dict[FeedId, MsgId] = {}
    forked: set[FeedId] = set()
    for a, f in summary.feeds.items():
        info = await store.feed(a)
        if info is None:
            continue
        if info.forked_seq is not None:
            forked.add(a)  # frozen: takes no message from the stick (spec/forks.md §2)
        local[a] = info.state
        if f.last <= info.seq:
            raw = await store.get_seq(a, f.last)
            if raw is not None:
                local_ids[a] = decode_message(raw).id
    plan = fmt.plan_import(summary, listing.sizes, local, local_ids, wanted, forked)
    ing = node.ingestor(only_wanted=wanted, store=store)
    report = ImportReport(str(root), dry_run, ing.report, plan, summary_problem=problem)
    for num, size in sorted(listing.oversize.items()):  # reported whole, never opened
        report.damage.append((num, fmt.Damage(0, size, TOO_LARGE)))
    total = plan.bytes
    if progress is not None:
        progress(0, total)

    def step(n: int) -> None:
        report.bytes_read += n
        if progress is not None:
            progress(report.bytes_read, total)

    forks: list[bytes] = []
    batch: list[bytes] = []
    for seg, scan in read_ranges(listing, plan.ranges, step):
        report.damage.extend((seg, d) for d in scan.damage)
        for r in scan.records:
            if r.kind == fmt.KIND_FORK:
                forks.append(r.body)
                continue
            batch.append(r.body)
            if len(batch) >= BATCH:
                await ing.put(batch)
                batch = []
    if batch:
        await ing.put(batch)
    await ing.finish()
    if not dry_run:
        await node.settle_groups()  # the first `show` after an import finds its order ready
    await _take_forks(node, store, forks, wanted, report)
    if use_summary and problem is None:
        report.summary_mismatch = await _check_summary(store, summary, plan)
        own = summary.feeds.get(node.id)
        if (not dry_run and own is not None and own.last > 0
                and node.id not in report.summary_mismatch):
            await node.own_head_confirmed()  # we hold our feed's head: a restore may publish
    return report


async def _take_forks(node: Node, store: Store, forks: list[bytes],
                      wanted: frozenset[FeedId] | None, report: ImportReport) -> None:
    seen: set[bytes] = set()
    for body in forks:
        if body in seen:
            continue
        seen.add(body)
        report.fork_proofs_seen += 1
        try:
            proof = decode_fork_proof(body)
        except InvalidMessage as exc:
            report.fork_rejects[exc.code] = report.fork_rejects.get(exc.code, 0) + 1
            continue
        if wanted is not None and proof.author not in wanted:
            continue
        added = await (store.record_fork(proof) if store is not node.store
                       else node.record_fork(proof))
        if added:
            report.fork_proofs_new += 1
            report.ingest.feed(proof.author).forked = True


async def _check_summary(store: Store, summary: fmt.Summary,
                         plan: fmt.ImportPlan) -> list[FeedId]:
    """Feeds whose summary entry the data (now in ``store``) does not bear out."""
    bad = []
    for p in plan.feeds:
        if not p.read:
            continue
        f = summary.feeds[p.author]
        info = await store.feed(p.author)
        if info is not None and info.forked_seq is not None:
            continue  # a fork explains any difference
        raw = await store.get_seq(p.author, f.last) if info and info.seq >= f.last else None
        if raw is None or decode_message(raw).id != f.head:
            bad.append(p.author)
    return bad


async def verify_bundle(root: Path, *, progress: Progress | None = None,
                        limits: Limits | None = None) -> ImportReport:
    """Check every record of a bundle from scratch (into an empty memory store): framing,
    signatures, chains, fork proofs, and whether the summary agrees with the data. Files over
    ``limits.max_bundle_file_size`` are reported (``file-too-large``), not read."""
    node = Node.in_memory()
    if limits is not None:
        node.limits = limits
    try:
        rep = await import_bundle(node, root, all_feeds=True, use_summary=False,
                                  progress=progress)
        summary, problem = read_summary(list_bundle(bundle_dir(root),
                                                    node.limits.max_bundle_file_size))
        rep.summary_problem = problem
        if problem is None:
            full = fmt.plan_import(summary, {}, {}, {}, None)
            rep.plan.feeds[:] = [fmt.FeedPlan(p.author, p.on_stick, 0, p.gap, True)
                                 for p in full.feeds]
            rep.summary_mismatch = await _check_summary(node.store, summary, full)
        return rep
    finally:
        await node.close()


class _DryRun:
    """A store that reads through to ``base`` and keeps every write in memory (``--dry-run``)."""

    def __init__(self, base: Store) -> None:
        self.base = base
        self.heads: dict[FeedId, FeedInfo] = {}
        self.raws: dict[tuple[FeedId, int], bytes] = {}

    async def close(self) -> None:
        return None

    async def feed(self, author: FeedId) -> FeedInfo | None:
        return self.heads.get(author) or await self.base.feed(author)

    async def feeds(self) -> list[FeedInfo]:
        out = {f.author: f for f in await self.base.feeds()}
        out.update(self.heads)
        return [out[a] for a in sorted(out)]

    async def changes(self) -> int:
        return await self.base.changes()

    async def append(self, msgs: Sequence[Message]) -> None:
        for m in msgs:
            old = await self.feed(m.author)
            self.raws[(m.author, m.seq)] = m.raw
            self.heads[m.author] = FeedInfo(m.author, m.seq, m.id,
                                            old.forked_seq if old else None,
                                            old.name if old else None)

    async def get(self, msg_id: MsgId) -> bytes | None:
        return await self.base.get(msg_id)

    # not touched by an import: reads go to the base store, writes are dropped
    async def peer_notes(self, peer: FeedId, direction: str) -> NoteTable:
        return await self.base.peer_notes(peer, direction)

    async def update_peer_notes(self, peer: FeedId, direction: str, upserts: NoteTable,
                                removes: Sequence[FeedId]) -> None:
        return None

    async def peer_baseline(self, peer: FeedId, direction: str) -> BaselineTable:
        return await self.base.peer_baseline(peer, direction)

    async def update_peer_baseline(self, peer: FeedId, direction: str, upserts: BaselineTable,
                                   removes: Sequence[FeedId]) -> None:
        return None

    async def peer_seen(self, feed: FeedId, host: str, port: int, source: str,
                        when: int) -> None:
        return None

    async def peer_state(self, feed: FeedId, state: str, when: int, *, synced: bool) -> None:
        return None

    async def peers(self) -> list[PeerRecord]:
        return await self.base.peers()

    async def group_root(self, group_id: bytes) -> GroupRoot | None:
        return await self.base.group_root(group_id)

    async def group_posts(self, group_id: bytes, after: int = 0
                          ) -> list[tuple[int, GroupMessage]]:
        return await self.base.group_posts(group_id, after)

    async def group_post(self, msg_id: bytes) -> GroupMessage | None:
        return await self.base.group_post(msg_id)

    async def group_summaries(self, me: FeedId) -> list[GroupSummary]:
        return await self.base.group_summaries(me)

    async def set_group_read(self, group_id: bytes, rx: int) -> None:
        return None

    async def reindex_groups(self) -> int:
        return 0

    async def group_order_state(self, group_id: bytes) -> bytes | None:
        return await self.base.group_order_state(group_id)

    async def group_tail(self, group_id: bytes, limit: int) -> list[PlacedRow]:
        return await self.base.group_tail(group_id, limit)

    async def group_placed(self, group_id: bytes, ids: Sequence[bytes]) -> set[bytes]:
        return await self.base.group_placed(group_id, ids)

    async def save_group_order(self, group_id: bytes, state: bytes,
                               places: Sequence[tuple[bytes, int, bytes | None]],
                               *, expect: bytes | None, reset: bool = False) -> bool:
        return False

    async def group_display(self, group_id: bytes) -> list[DisplayRow]:
        return await self.base.group_display(group_id)

    async def unplaced_groups(self) -> list[bytes]:
        return await self.base.unplaced_groups()

    async def get_seq(self, author: FeedId, seq: int) -> bytes | None:
        return self.raws.get((author, seq)) or await self.base.get_seq(author, seq)

    async def range(self, author: FeedId, first: int, last: int) -> list[bytes]:
        return await self.base.range(author, first, last)

    async def count(self) -> int:
        return await self.base.count() + len(self.raws)

    async def record_fork(self, proof: ForkProof) -> bool:
        old = await self.feed(proof.author)
        if old is not None and old.forked_seq is not None and old.forked_seq <= proof.seq:
            return False
        self.heads[proof.author] = FeedInfo(proof.author, old.seq if old else 0,
                                            old.head if old else None, proof.seq,
                                            old.name if old else None)
        return True

    async def fork_proofs(self, author: FeedId | None = None) -> list[bytes]:
        return await self.base.fork_proofs(author)

    async def contacts(self) -> list[ContactRow]:
        return await self.base.contacts()

    async def get_meta(self, key: str) -> str | None:
        return await self.base.get_meta(key)

    async def set_meta(self, key: str, value: str | None) -> None:
        return None

"""Signature checks on worker processes, driven from the event loop (LIMITS.md, issues 3 and 5).

Threads cannot check signatures while the event loop runs Python: every libsodium call
releases the GIL and must take it back, so the loop's decoding and store batching and the
checks take turns. Worker processes (feedlog/verify_worker.py, started the first time a big
batch arrives, kept until ``close``) each have their own GIL, so on two cores the loop's work
and the checks really overlap.

How it works: ``submit`` encodes one chunk as a request, appends it to the least loaded
worker's pipe (non-blocking writes; the loop writes the rest when the pipe drains) and returns
a future. Answers come back in request order on each worker's stdout, read by a loop reader
callback: no helper threads, so nothing else waits for the GIL. Pipes are enlarged (best
effort) so a worker has work queued while the loop is busy.

Failure: when a worker cannot be started, or dies, or answers nonsense, its outstanding chunks
are checked again on the thread executor and every later chunk goes there too: the result is
the same, only slower. Nothing is ever taken as verified without an answer for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from feedlog.core.crypto import KEY_SIZE, SIGNATURE_SIZE, verify_many
from feedlog.core.errors import LocalError

WORKER_SCRIPT = Path(__file__).with_name("verify_worker.py")
_HEAD = struct.Struct("<II")
_LEN = struct.Struct("<I")
_PLACEHOLDER = (b"\0" * KEY_SIZE, b"\0" * SIGNATURE_SIZE)
_F_SETPIPE_SZ = 1031  # Linux fcntl
PIPE_SIZE = 1 << 20

Items = Sequence[tuple[bytes, bytes, bytes]]  # (public, data, signature)


@dataclass
class _Job:
    future: asyncio.Future[list[bool]]
    tag: bytes
    items: Items
    bad: list[int]  # positions whose key or signature has the wrong size: False, unsent


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    write_fd: int
    read_fd: int
    jobs: deque[_Job] = field(default_factory=deque)
    outbox: bytearray = field(default_factory=bytearray)
    inbox: bytearray = field(default_factory=bytearray)
    waiting_writable: bool = False
    load: int = 0  # items sent and not answered


def encode_request(tag: bytes, items: Items) -> tuple[bytes, list[int]]:
    """One request (verify_worker.py's protocol) and the positions answered False unsent."""
    if len(tag) > 255:
        raise ValueError("tag longer than 255 bytes")
    parts = [bytes([len(tag)]), tag]
    bad = []
    pack = _LEN.pack
    extra = SIGNATURE_SIZE + len(tag)
    for i, (public, data, signature) in enumerate(items):
        if len(public) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            bad.append(i)
            public, signature = _PLACEHOLDER
        parts += (public, pack(extra + len(data)), signature, tag, data)
    body = b"".join(parts)
    return _HEAD.pack(len(body), len(items)) + body, bad


class VerifyPool:
    """``submit(tag, items)`` -> future of ``verify_many(tag, items)``, on worker processes."""

    def __init__(self, workers: int, fallback: Executor) -> None:
        self.size = max(1, workers)
        self.fallback = fallback
        self.broken = False  # no (more) processes: everything goes to the fallback threads
        self.closed = False
        self._workers: list[_Worker] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> int:
        return len(self._workers)

    def submit(self, tag: bytes, items: Items, *, processes: bool = True
               ) -> asyncio.Future[list[bool]]:
        """``processes=False``: on the fallback threads (a few checks are not worth starting a
        process). After ``close`` a LocalError ``node-closed``: nothing is started again."""
        if self.closed:
            raise LocalError("signature checks were shut down (the node was closed)",
                             code="node-closed")
        loop = asyncio.get_running_loop()
        if not processes:
            return loop.run_in_executor(self.fallback, verify_many, tag, items)
        if not self.broken and (self._loop is not loop or not self._workers):
            self._start(loop)
        if self.broken or not self._workers:
            return loop.run_in_executor(self.fallback, verify_many, tag, items)
        request, bad = encode_request(tag, items)
        worker = min(self._workers, key=lambda w: w.load)
        job = _Job(loop.create_future(), tag, items, bad)
        worker.jobs.append(job)
        worker.load += len(items)
        worker.outbox += request
        self._flush(worker)
        return job.future

    # --- processes ---------------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop()
        self._loop = loop
        if getattr(sys, "frozen", False) or not sys.executable:
            self.broken = True
            return
        try:
            for _ in range(self.size):
                proc = subprocess.Popen(
                    [sys.executable, str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
                assert proc.stdin is not None and proc.stdout is not None
                w = _Worker(proc, proc.stdin.fileno(), proc.stdout.fileno())
                self._workers.append(w)
                with contextlib.suppress(OSError, ImportError):
                    import fcntl

                    fcntl.fcntl(w.write_fd, _F_SETPIPE_SZ, PIPE_SIZE)
                os.set_blocking(w.write_fd, False)
                loop.add_reader(w.read_fd, self._readable, w)
        except (OSError, ValueError, NotImplementedError):  # e.g. a loop without add_reader
            self._stop()
            self.broken = True

    def _stop(self) -> None:
        workers, self._workers = self._workers, []
        for w in workers:
            self._detach(w)
            for job in w.jobs:
                if not job.future.done():
                    job.future.cancel()
            w.jobs.clear()

    def _detach(self, w: _Worker) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(w.read_fd)
            loop.remove_writer(w.write_fd)
        for f in (w.proc.stdin, w.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        if w.jobs:  # queued work nobody will read
            w.proc.kill()
        try:
            w.proc.wait(timeout=2)  # stdin closed: the worker ends after its current chunk
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()

    def close(self) -> None:
        """End the workers for good (outstanding futures are cancelled)."""
        self.closed = True
        self._stop()

    # --- pipes -------------------------------------------------------------------------------

    def _flush(self, w: _Worker) -> None:
        try:
            while w.outbox:
                n = os.write(w.write_fd, w.outbox)
                del w.outbox[:n]
        except BlockingIOError:
            if not w.waiting_writable:
                assert self._loop is not None
                self._loop.add_writer(w.write_fd, self._flush, w)
                w.waiting_writable = True
            return
        except OSError:
            self._fail(w)
            return
        if w.waiting_writable:
            assert self._loop is not None
            self._loop.remove_writer(w.write_fd)
            w.waiting_writable = False

    def _readable(self, w: _Worker) -> None:
        try:
            data = os.read(w.read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._fail(w)
            return
        w.inbox += data
        box = w.inbox
        while len(box) >= 4:
            (count,) = _LEN.unpack_from(box)
            if len(box) < 4 + count:
                break
            if not w.jobs or len(w.jobs[0].items) != count:
                self._fail(w)  # an answer we did not ask for: trust nothing from it
                return
            answer = bytes(box[4 : 4 + count])
            del box[: 4 + count]
            job = w.jobs.popleft()
            w.load -= count
            ok = [b == 1 for b in answer]
            for i in job.bad:
                ok[i] = False
            if not job.future.done():
                job.future.set_result(ok)

    def _fail(self, w: _Worker) -> None:
        """A worker died or misbehaved: its chunks go to the threads, and so does the rest."""
        self.broken = True
        loop = self._loop
        jobs = list(w.jobs)
        w.jobs.clear()
        if w in self._workers:
            self._workers.remove(w)
        w.proc.kill()
        self._detach(w)
        assert loop is not None
        for job in jobs:
            if job.future.done():
                continue
            retry = loop.run_in_executor(self.fallback, verify_many, job.tag, job.items)
            retry.add_done_callback(functools.partial(_copy, dst=job.future))
        for other in list(self._workers):  # in-flight chunks there still answer normally
            if not other.jobs:
                self._workers.remove(other)
                self._detach(other)


def _copy(src: asyncio.Future[list[bool]], dst: asyncio.Future[list[bool]]) -> None:
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
    elif (exc := src.exception()) is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())

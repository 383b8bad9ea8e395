"""Messages another process writes into this node's home reach its live peers.

`feedlog publish` (or `sync`, or a stick import) run beside a `feedlog serve` or a
`feedlog sync --live` writes with its own connection; nothing tells the serving process. A
``StoreWatcher`` asks the store every ``poll`` seconds whether another connection committed
(``Store.changes``, SQLite's ``data_version``: one cheap query when nothing did) and, if so,
which feeds' heads moved past what this process knows, and hands them to the replicator, which
pushes them to live peers (``Replicator.store_changed``). What this process stores itself is
announced already; the watcher only keeps its own heads up to date with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from feedlog.core.errors import FeedlogError
from feedlog.core.ids import FeedId
from feedlog.core.message import Message
from feedlog.net.replicator import Replicator

log = logging.getLogger("feedlog.watch")

POLL = 0.25  # seconds: a message published beside a live link is pushed within ~1 s


class StoreWatcher:
    def __init__(self, rep: Replicator, poll: float = POLL) -> None:
        self.rep = rep
        self.poll = poll
        self._heads: dict[FeedId, int] = {}
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        store = self.rep.node.store
        self._version = await store.changes()
        self._heads = {f.author: f.seq for f in await store.feeds()}
        self.rep.node.listeners.append(self._stored_here)
        if self.poll > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.rep.node.listeners.remove(self._stored_here)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _stored_here(self, msgs: Sequence[Message]) -> None:
        for m in msgs:
            if m.seq > self._heads.get(m.author, 0):
                self._heads[m.author] = m.seq

    async def check(self) -> dict[FeedId, int]:
        """One look: the feeds another process advanced since the last (also pushed)."""
        store = self.rep.node.store
        version = await store.changes()
        if version == self._version:
            return {}
        self._version = version
        advanced: dict[FeedId, int] = {}
        for f in await store.feeds():
            if f.seq > self._heads.get(f.author, 0):
                advanced[f.author] = self._heads[f.author] = f.seq
        if advanced:
            self.rep.store_changed(advanced)
        return advanced

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.check()
            except FeedlogError as exc:
                log.warning("watching the store: %s", exc.message)

"""LAN discovery over mDNS/DNS-SD (python-zeroconf) and the peer manager (spec/discovery.md).

How this works: ``LanDiscovery`` advertises this node's record (feedlog/core/discovery.py) under
a random per-run instance label and host name, browses for ``_feedlog._tcp``, opens every record
it finds with the network key, and calls back with the peers of the same network as they appear,
change and disappear. Records of another network, malformed ones and our own are counted, never
reported as peers, and never dialled. ``PeerManager`` turns those callbacks into at most one
connection loop per peer that this node should dial (``should_dial``), retried with capped,
jittered exponential backoff, and cancelled when the peer disappears or the manager stops.

Liveness: records carry a short TTL and are re-announced every ``reannounce`` seconds (< TTL).
A peer whose SRV record expires is asked once; silence drops it, so a peer whose link went down
is dropped within about 1.25 TTL + 1.5 s, and found again within about ``reannounce`` + TTL/4
seconds after the link comes back.

``python -m feedlog.lan`` runs discovery alone and prints JSON lines (the namespace test bed
uses it); it advertises a port but listens on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedlog.core.discovery import (
    LABEL_RANDOM_SIZE,
    NONCE_SIZE,
    SERVICE_TYPE,
    DiscoveryError,
    backoff_delay,
    decode_record,
    encode_record,
    instance_label,
    instance_name,
    label_of,
    should_dial,
)
from feedlog.core.errors import FeedlogError, LocalError
from feedlog.core.ids import FeedId, feed_id_text, parse_feed_id
from feedlog.net.transport import DEFAULT_NETWORK_KEY, DEFAULT_PORT

log = logging.getLogger("feedlog.lan")

# Until serve defines its own, the network everyone is on by default. Any 32 bytes work; peers
# must share them to see each other (and to complete a handshake).
DEFAULT_TTL = 60  # seconds, for every record we announce
DEFAULT_REANNOUNCE = 30.0  # seconds between unsolicited re-announcements
RESOLVE_TIMEOUT_MS = 3000
LIVENESS_TIMEOUT_MS = 1500
LOST_MEMORY = 600.0  # seconds a vanished instance is watched for its return
_TYPE_SRV, _CLASS_IN = 33, 1  # DNS resource record type SRV, class IN


@dataclass(frozen=True, slots=True)
class LanPeer:
    """A same-network peer found on the LAN: whom to expect (``feed``) and where to dial."""

    feed: FeedId
    host: str
    port: int
    addresses: tuple[str, ...] = ()
    instance: str = ""


@dataclass
class DiscoveryStats:
    """What browsing saw, for ``feedlog doctor``: counts of distinct instance labels."""

    peers: set[str] = field(default_factory=set)
    own: set[str] = field(default_factory=set)
    foreign: set[str] = field(default_factory=set)  # other network (or tampered)
    rejected: dict[str, set[str]] = field(default_factory=dict)  # code -> labels

    def reject(self, code: str, label: str) -> None:
        if code == "other-network":
            self.foreign.add(label)
        else:
            self.rejected.setdefault(code, set()).add(label)


def zeroconf_available() -> bool:
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        return False
    return True


def local_ipv4() -> list[str]:
    """The IPv4 addresses of this host that are not loopback (through ifaddr, zeroconf's own)."""
    import ifaddr

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return out


class LanDiscovery:
    """Advertise this node and report same-network peers (spec/discovery.md §3-§4).

    ``interfaces``: IPv4 addresses to use; None means every interface (what serve wants).
    Tests pass ``["127.0.0.1"]`` so that nothing is announced on a real network.
    ``advertise=False`` browses only (doctor).
    """

    def __init__(
        self,
        network_key: bytes,
        feed: FeedId,
        port: int,
        *,
        on_peer: Callable[[LanPeer], None] | None = None,
        on_remove: Callable[[LanPeer], None] | None = None,
        interfaces: Sequence[str] | None = None,
        advertise: bool = True,
        ttl: int = DEFAULT_TTL,
        reannounce: float = DEFAULT_REANNOUNCE,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.network_key = network_key
        self.feed = feed
        self.port = port
        self.on_peer = on_peer
        self.on_remove = on_remove
        self.interfaces = list(interfaces) if interfaces is not None else None
        self.advertise = advertise
        self.ttl = ttl
        self.reannounce = reannounce
        # Drawn once per run: a restart is unlinkable to the previous run by its records.
        self.label = instance_label(randbytes(LABEL_RANDOM_SIZE))
        self._nonce = randbytes(NONCE_SIZE)
        self.record = encode_record(network_key, self.label, feed, port, self._nonce)
        self.peers: dict[FeedId, LanPeer] = {}
        self.stats = DiscoveryStats()
        self._by_label: dict[str, FeedId] = {}
        self._azc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._lost: dict[str, float] = {}  # label -> loop time it went silent

    async def start(self) -> None:
        """Start announcing (unless ``advertise`` is off) and browsing."""
        try:
            from zeroconf import IPVersion, ServiceInfo
            from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf
        except ImportError:
            raise LocalError("python-zeroconf is not installed: pip install zeroconf",
                             code="zeroconf-missing") from None
        from zeroconf import InterfaceChoice

        ifaces: Any = self.interfaces if self.interfaces is not None else InterfaceChoice.All
        try:
            self._azc = AsyncZeroconf(interfaces=ifaces, ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise LocalError(f"cannot open mDNS sockets: {exc.strerror or exc}",
                             code="mdns-unavailable") from None
        if self.advertise:
            addrs = self.interfaces if self.interfaces is not None else local_ipv4()
            self._info = ServiceInfo(
                SERVICE_TYPE, instance_name(self.label), port=self.port,
                properties=self.record, server=f"{self.label}.local.",
                host_ttl=self.ttl, other_ttl=self.ttl, parsed_addresses=list(addrs))
            await self._azc.async_register_service(self._info)
            if self.reannounce > 0:
                self._spawn(self._reannounce_loop())
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, [SERVICE_TYPE],
                                            handlers=[self._on_change])
        self._spawn(self._liveness_loop())

    async def stop(self) -> None:
        """Say goodbye (so peers drop us at once), stop browsing, close the sockets."""
        for t in [*self._tasks, *self._resolving.values()]:
            t.cancel()
        for t in [*self._tasks, *self._resolving.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._resolving.clear()
        if self._azc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._info is not None:
            with contextlib.suppress(Exception):
                sent = await self._azc.async_unregister_service(self._info)
                await sent  # the goodbyes are out before the sockets close
        await self._azc.async_close()
        self._azc = None

    async def __aenter__(self) -> LanDiscovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- internals ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reannounce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reannounce)
            try:
                await self._azc.async_update_service(self._info)
            except Exception as exc:  # a vanished interface must not end discovery
                log.debug("re-announce failed: %s", exc)

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        label = label_of(name)
        if label is None:
            return
        if state_change is ServiceStateChange.Removed:  # a goodbye (or a long-expired PTR)
            task = self._resolving.pop(label, None)
            if task is not None:
                task.cancel()
            self._lost.pop(label, None)
            self._forget(label)
            return
        self._start_resolve(label, RESOLVE_TIMEOUT_MS, forget_on_silence=False)

    def _start_resolve(self, label: str, timeout_ms: int, *, forget_on_silence: bool) -> None:
        old = self._resolving.get(label)
        if old is not None:
            old.cancel()
        task = asyncio.ensure_future(self._resolve(label, timeout_ms, forget_on_silence))
        self._resolving[label] = task

        def done(t: asyncio.Task[None], label: str = label) -> None:
            if self._resolving.get(label) is t:
                del self._resolving[label]

        task.add_done_callback(done)

    async def _resolve(self, label: str, timeout_ms: int, forget_on_silence: bool) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo

        if self._azc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, instance_name(label))
        if not await info.async_request(self._azc.zeroconf, timeout_ms):
            log.debug("no answer from %s", label)
            if forget_on_silence and label in self._by_label:
                self._forget(label)
                self._lost[label] = asyncio.get_running_loop().time()
            return
        addrs = tuple(info.parsed_addresses(IPVersion.V4Only))
        try:
            ann = decode_record(self.network_key, label, info.properties, int(info.port or 0))
        except DiscoveryError as exc:
            self.stats.reject(exc.code, label)
            log.debug("ignored %s: %s", label, exc.code)
            return
        if ann.feed == self.feed:
            self.stats.own.add(label)
            return
        if not addrs:
            return
        self.stats.peers.add(label)
        peer = LanPeer(ann.feed, addrs[0], ann.port, addrs, label)
        previous = self._by_label.get(label)
        if previous is not None and previous != ann.feed:
            self._forget(label)
        self._by_label[label] = ann.feed
        if self.peers.get(ann.feed) == peer:
            return
        self.peers[ann.feed] = peer
        if self.on_peer is not None:
            self.on_peer(peer)

    def _fresh(self, label: str) -> bool:
        """Whether zeroconf's cache holds an unexpired SRV record for ``label``."""
        from zeroconf import current_time_millis

        rec = self._azc.zeroconf.cache.get_by_details(instance_name(label), _TYPE_SRV, _CLASS_IN)
        return rec is not None and not rec.is_expired(current_time_millis())

    async def _liveness_loop(self) -> None:
        # zeroconf keeps PTR records for at least 1125 s whatever their TTL, so a peer that
        # vanished without a goodbye (link down, crash) would linger for 19 minutes. Instead,
        # watch the SRV record, whose TTL is ours: once it expires, ask once; no answer means
        # gone. A lost label whose SRV turns fresh again (the link is back) is resolved again.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.5, self.ttl / 4))
            if self._azc is None:
                return
            for label in list(self._by_label):
                if label not in self._resolving and not self._fresh(label):
                    self._start_resolve(label, LIVENESS_TIMEOUT_MS, forget_on_silence=True)
            for label, since in list(self._lost.items()):
                if self._fresh(label):
                    del self._lost[label]
                    self._start_resolve(label, RESOLVE_TIMEOUT_MS, forget_on_silence=False)
                elif loop.time() - since > LOST_MEMORY:
                    del self._lost[label]

    def _forget(self, label: str) -> None:
        feed = self._by_label.pop(label, None)
        if feed is None:
            return
        peer = self.peers.get(feed)
        if peer is None or peer.instance != label:
            return  # the feed re-appeared under a newer label (a restart): keep that one
        del self.peers[feed]
        if self.on_remove is not None:
            self.on_remove(peer)


StateCallback = Callable[[FeedId, str], Awaitable[None]]


class PeerManager:
    """One connection loop per discovered peer that this node dials (spec/discovery.md §4).

    ``connect(peer)`` is expected to run for as long as the connection lives (the caller passes
    "sync live with this peer"); when it returns or raises, the manager waits
    ``backoff_delay(n)`` and calls it again with the peer's latest address. ``n`` counts
    consecutive attempts and falls back to 1 after a connection that lasted ``stable_after``
    seconds. ``on_state(feed, state)`` is told "connecting", "disconnected" (connect returned)
    and "unreachable" (connect raised). ``sleep`` and ``clock`` are there for tests.
    """

    def __init__(
        self,
        own: FeedId,
        connect: Callable[[LanPeer], Awaitable[None]],
        *,
        base: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 30.0,
        on_state: StateCallback | None = None,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.own = own
        self.connect = connect
        self.base = base
        self.cap = cap
        self.stable_after = stable_after
        self.on_state = on_state
        self.rng = rng
        self.sleep = sleep
        self.clock = clock
        self.attempts: dict[FeedId, int] = {}
        self._latest: dict[FeedId, LanPeer] = {}
        self._loops: dict[FeedId, asyncio.Task[None]] = {}
        self._stopped = False

    def peer_seen(self, peer: LanPeer) -> None:
        """A peer appeared or moved; start its loop if we dial it and none runs."""
        if self._stopped or not should_dial(self.own, peer.feed):
            return
        self._latest[peer.feed] = peer
        task = self._loops.get(peer.feed)
        if task is None or task.done():
            self._loops[peer.feed] = asyncio.ensure_future(self._loop(peer.feed))

    def peer_gone(self, peer: LanPeer | FeedId) -> None:
        """A peer disappeared from the LAN: stop dialling it (and drop a live connection)."""
        feed = peer.feed if isinstance(peer, LanPeer) else peer
        self._latest.pop(feed, None)
        task = self._loops.pop(feed, None)
        if task is not None:
            task.cancel()

    def dialling(self) -> set[FeedId]:
        return {f for f, t in self._loops.items() if not t.done()}

    async def stop(self) -> None:
        self._stopped = True
        tasks = list(self._loops.values())
        self._loops.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _note(self, feed: FeedId, state: str) -> None:
        if self.on_state is None:
            return
        try:
            await self.on_state(feed, state)
        except Exception as exc:  # bookkeeping must never stop the loop
            log.warning("peer state callback failed: %s", exc)

    async def _loop(self, feed: FeedId) -> None:
        clock = self.clock or asyncio.get_running_loop().time
        failures = 0
        while True:
            peer = self._latest.get(feed)
            if peer is None:
                return
            self.attempts[feed] = self.attempts.get(feed, 0) + 1
            await self._note(feed, "connecting")
            started = clock()
            try:
                await self.connect(peer)
                outcome = "disconnected"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code = exc.code if isinstance(exc, FeedlogError) else type(exc).__name__
                log.info("connection to %s failed: %s", feed_id_text(feed), code)
                outcome = "unreachable"
            await self._note(feed, outcome)
            failures = 1 if clock() - started >= self.stable_after else failures + 1
            await self.sleep(backoff_delay(failures, base=self.base, cap=self.cap,
                                           jitter=self.rng()))


# --- python -m feedlog.lan: discovery alone, JSON lines on stdout ----------------------------

def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    key = bytes.fromhex(args.network_key) if args.network_key else DEFAULT_NETWORK_KEY
    feed = parse_feed_id(args.feed) if args.feed else FeedId(os.urandom(32))

    def seen(p: LanPeer) -> None:
        _emit("peer", feed=feed_id_text(p.feed), host=p.host, port=p.port,
              dial=should_dial(feed, p.feed))

    def gone(p: LanPeer) -> None:
        _emit("removed", feed=feed_id_text(p.feed))

    disc = LanDiscovery(key, feed, args.port, on_peer=seen, on_remove=gone,
                        interfaces=args.interface or None, ttl=args.ttl,
                        reannounce=args.reannounce)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await disc.start()
    _emit("ready", feed=feed_id_text(feed), instance=disc.label, port=args.port)
    reported = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if len(disc.stats.foreign) != reported:
            reported = len(disc.stats.foreign)
            _emit("foreign", count=reported)
    await disc.stop()
    _emit("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m feedlog.lan",
                                description="Run LAN discovery alone and print JSON lines.")
    p.add_argument("--network-key", help="64 hex characters (default: the default network)")
    p.add_argument("--feed", help="feed id to announce (default: a random one)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--interface", action="append", help="IPv4 address to use (repeatable)")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL)
    p.add_argument("--reannounce", type=float, default=DEFAULT_REANNOUNCE)
    args = p.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except FeedlogError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

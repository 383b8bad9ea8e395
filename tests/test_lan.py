"""feedlog.lan on loopback only: ``interfaces=["127.0.0.1"]`` announces nothing on a real LAN.

Every test draws its own network key, so runs that overlap on this machine only ever see each
other as another network, never as peers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from feedlog.core.discovery import (
    SERVICE_TYPE,
    encode_record,
    instance_label,
    instance_name,
    should_dial,
)
from feedlog.core.errors import RemoteError
from feedlog.core.ids import FeedId
from feedlog.lan import LanDiscovery, LanPeer, PeerManager

LO = ["127.0.0.1"]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


class Peerside:
    """One discovery instance with its events."""

    def __init__(self, key: bytes, port: int, feed: FeedId | None = None) -> None:
        self.feed = feed or FeedId(os.urandom(32))
        self.seen: list[LanPeer] = []
        self.removed: list[LanPeer] = []
        self.disc = LanDiscovery(key, self.feed, port, interfaces=LO, on_peer=self.seen.append,
                                 on_remove=self.removed.append, ttl=30, reannounce=0)


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., Peerside]]:
    made: list[Peerside] = []

    def make(key: bytes, port: int, feed: FeedId | None = None) -> Peerside:
        n = Peerside(key, port, feed)
        made.append(n)
        return n

    yield make
    for n in made:
        await n.disc.stop()


async def test_same_network_peers_find_each_other_others_are_foreign(
        nodes: Callable[..., Peerside]) -> None:
    key = os.urandom(32)
    a, b, c = nodes(key, 4001), nodes(key, 4002), nodes(os.urandom(32), 4003)
    await asyncio.gather(a.disc.start(), b.disc.start(), c.disc.start())
    await until(lambda: b.feed in a.disc.peers and a.feed in b.disc.peers)
    await until(lambda: c.disc.label in a.disc.stats.foreign
                and a.disc.label in c.disc.stats.foreign)
    pa = a.disc.peers[b.feed]
    assert (pa.host, pa.port, pa.instance) == ("127.0.0.1", 4002, b.disc.label)
    assert set(a.disc.peers) == {b.feed} and set(b.disc.peers) == {a.feed}
    assert c.disc.peers == {} and c.seen == []  # C sees neither
    assert a.disc.label in a.disc.stats.own  # our own record is recognised, not a peer
    assert [p.feed for p in a.seen] == [b.feed]

    await b.disc.stop()  # goodbye: A notices at once
    await until(lambda: bool(a.removed))
    assert [p.feed for p in a.removed] == [b.feed] and a.disc.peers == {}


async def test_restart_under_a_new_label_replaces_the_old(nodes: Callable[..., Peerside]) -> None:
    key = os.urandom(32)
    a, b1 = nodes(key, 4011), nodes(key, 4012)
    await asyncio.gather(a.disc.start(), b1.disc.start())
    await until(lambda: b1.feed in a.disc.peers)
    b2 = nodes(key, 4013, feed=b1.feed)  # same identity, new run, new port
    assert b2.disc.label != b1.disc.label and b2.disc.record != b1.disc.record
    await b2.disc.start()
    await until(lambda: a.disc.peers[b1.feed].port == 4013)
    await b1.disc.stop()  # the old run's goodbye must not drop the new run
    await asyncio.sleep(0.5)
    assert a.disc.peers[b1.feed].instance == b2.disc.label


async def test_tampered_and_malformed_records_are_rejected_with_codes(
        nodes: Callable[..., Peerside]) -> None:
    key = os.urandom(32)
    a = nodes(key, 4021)
    await a.disc.start()
    azc = AsyncZeroconf(interfaces=LO)
    feed = FeedId(os.urandom(32))
    infos: dict[str, ServiceInfo] = {}

    def add(port: int, record: Callable[[str], dict[str, Any]]) -> str:
        label = instance_label(os.urandom(10))
        infos[label] = ServiceInfo(SERVICE_TYPE, instance_name(label), port=port,
                                   properties=record(label), server=f"{label}.local.",
                                   parsed_addresses=LO)
        return label

    def tampered(label: str) -> dict[str, Any]:
        t = encode_record(key, label, feed, 4100, os.urandom(24))
        d = t["d"]
        return {**t, "d": d[:40] + ("A" if d[40] != "A" else "B") + d[41:]}

    bad_b64 = add(4101, lambda lab: {"v": "1", "d": "!" * 99})
    wrong_port = add(4102, lambda lab: encode_record(key, lab, feed, 4999, os.urandom(24)))
    flipped = add(4100, tampered)
    future = add(4103, lambda lab: {"v": "9", "d": "x"})
    copied = add(4104, lambda lab: encode_record(key, "fl-elsewhere", feed, 4104, bytes(24)))
    try:
        await asyncio.gather(*(azc.async_register_service(i) for i in infos.values()))
        s = a.disc.stats
        await until(lambda: bad_b64 in s.rejected.get("bad-discovery-record", set())
                    and wrong_port in s.rejected.get("discovery-port-mismatch", set())
                    and future in s.rejected.get("discovery-version", set())
                    and {flipped, copied} <= s.foreign)
        assert a.disc.peers == {} and a.seen == []
    finally:
        await azc.async_close()


# --- the peer manager, with a fake connect ---------------------------------------------------

def peer(b: int, port: int = 1) -> LanPeer:
    return LanPeer(FeedId(bytes([b]) * 32), "127.0.0.1", port)


class FakeTime:
    """A clock that only connect moves, and a sleep that records what it was asked."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def test_manager_reconnects_with_growing_capped_backoff() -> None:
    calls: list[int] = []
    states: list[str] = []
    live = asyncio.Event()
    t = FakeTime()

    async def connect(p: LanPeer) -> None:
        calls.append(p.port)
        if len(calls) <= 5:
            raise RemoteError("refused", code="connection-refused")
        live.set()
        await asyncio.Event().wait()  # a live connection: runs until cancelled

    async def on_state(feed: FeedId, state: str) -> None:
        states.append(state)

    own = FeedId(bytes([1]) * 32)
    m = PeerManager(own, connect, base=1, cap=4, stable_after=60, on_state=on_state,
                    rng=lambda: 0.5, sleep=t.sleep, clock=t.clock)
    m.peer_seen(peer(2, port=10))
    m.peer_seen(peer(2, port=11))  # an update, not a second loop
    await asyncio.wait_for(live.wait(), 5)
    # after failures 1..5: 1, 2, 4, 4 (cap), 4, each scaled by 0.5 + 0.5 * 0.5
    assert t.waits == [0.75, 1.5, 3.0, 3.0, 3.0]
    assert len(calls) == 6 and m.attempts[FeedId(bytes([2]) * 32)] == 6
    assert set(calls) == {11}  # always the latest address
    assert states[:2] == ["connecting", "unreachable"] and states[-1] == "connecting"
    assert m.dialling() == {FeedId(bytes([2]) * 32)}
    m.peer_gone(peer(2))  # gone from the LAN: the live connection is dropped
    await asyncio.sleep(0.05)
    assert m.dialling() == set() and len(calls) == 6
    await m.stop()


async def test_manager_dials_only_bigger_feeds_and_stops_cleanly() -> None:
    started: list[FeedId] = []
    cancelled: list[FeedId] = []

    async def connect(p: LanPeer) -> None:
        started.append(p.feed)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(p.feed)
            raise

    own = FeedId(bytes([5]) * 32)
    m = PeerManager(own, connect)
    for b in (3, 5, 7, 9):
        m.peer_seen(peer(b))
    await asyncio.sleep(0.05)
    assert sorted(started) == [FeedId(bytes([7]) * 32), FeedId(bytes([9]) * 32)]
    await m.stop()
    assert sorted(cancelled) == sorted(started) and m.dialling() == set()
    m.peer_seen(peer(8))  # after stop: nothing starts
    await asyncio.sleep(0.02)
    assert len(started) == 2


async def test_a_connection_that_ended_normally_is_retried_quickly() -> None:
    t = FakeTime()
    durations = [0.0, 0.0, 100.0, 0.0, 0.0]  # the third connection was long and stable

    async def connect(p: LanPeer) -> None:
        t.now += durations[len(t.waits)] if len(t.waits) < len(durations) else 0.0

    m = PeerManager(FeedId(bytes(32)), connect, base=1, cap=100, stable_after=30,
                    rng=lambda: 0.0, sleep=t.sleep, clock=t.clock)
    m.peer_seen(peer(1))
    await until(lambda: len(t.waits) >= 5, 5)
    await m.stop()
    # waits after 1, 2 (quick): 0.5, 1; after the stable 3rd: back to 0.5; then 1, 2
    assert t.waits[:5] == [0.5, 1.0, 0.5, 1.0, 2.0]


async def test_discovery_drives_the_manager_once_per_pair(nodes: Callable[..., Peerside]) -> None:
    key = os.urandom(32)
    a, b = nodes(key, 4031), nodes(key, 4032)
    dialled: dict[str, list[LanPeer]] = {"a": [], "b": []}

    def manager(who: str, own: FeedId) -> PeerManager:
        async def connect(p: LanPeer) -> None:
            dialled[who].append(p)
            await asyncio.Event().wait()

        return PeerManager(own, connect)

    ma, mb = manager("a", a.feed), manager("b", b.feed)
    a.disc.on_peer, a.disc.on_remove = ma.peer_seen, ma.peer_gone
    b.disc.on_peer, b.disc.on_remove = mb.peer_seen, mb.peer_gone
    await asyncio.gather(a.disc.start(), b.disc.start())
    await until(lambda: len(dialled["a"]) + len(dialled["b"]) >= 1)
    await asyncio.sleep(0.3)
    dialler, target = ("a", b) if should_dial(a.feed, b.feed) else ("b", a)
    assert [p.feed for p in dialled[dialler]] == [target.feed]
    assert [p.port for p in dialled[dialler]] == [target.disc.port]
    assert dialled["b" if dialler == "a" else "a"] == []
    await target.disc.stop()
    mgr = ma if dialler == "a" else mb
    await until(lambda: mgr.dialling() == set())
    await ma.stop()
    await mb.stop()


async def test_a_peer_that_dies_without_goodbye_is_dropped() -> None:
    import json
    import signal
    import subprocess
    import sys

    from feedlog.core.ids import feed_id_text

    key = os.urandom(32)
    a = Peerside(key, 4041)
    a.disc.ttl = 2  # liveness checks every 0.5 s; the dead peer's SRV expires after 2 s
    feed = FeedId(os.urandom(32))
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedlog.lan", "--interface", "127.0.0.1", "--port", "4042",
         "--network-key", key.hex(), "--feed", feed_id_text(feed), "--ttl", "2",
         "--reannounce", "0.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        await a.disc.start()
        await until(lambda: feed in a.disc.peers)
        await asyncio.sleep(2.5)  # re-announcements keep a live peer through several TTLs
        assert feed in a.disc.peers and a.removed == []
        proc.send_signal(signal.SIGKILL)  # no goodbye
        proc.wait(10)
        await until(lambda: bool(a.removed), 15)
        assert [p.feed for p in a.removed] == [feed] and a.disc.peers == {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await a.disc.stop()

"""Two laptops on a LAN: real ``feedlog serve --lan`` processes in network namespaces.

A, B and C hang off one switch (a bridge; each host joined to it by a veth pair). A and B share
a network key and follow each other; C, on another key, follows both. A publishes 1000 messages
and B 10 before serving; both converge with no address given. Then A's link goes down, both
publish from another process into their serving homes, the link comes back, and both converge
again (the dead live session is noticed and redialled). C stores nothing of theirs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.netns import Host, LineProcess, NetnsBed
from tests.e2e.test_cli import FEEDLOG

PUBLISH = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "from feedlog import Node\n"
    "async def main():\n"
    "    node = await Node.open(Path(sys.argv[1]))\n"
    "    await node.publish_many([f'{sys.argv[3]} {i}' for i in range(int(sys.argv[2]))])\n"
    "    await node.close()\n"
    "asyncio.run(main())\n"
)
FAST = ["--lan-ttl", "4", "--lan-reannounce", "1", "--ping-interval", "1",
        "--idle-timeout", "4"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDLOG_HOME",
                                                               "FEEDLOG_NETWORK_KEY")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         env.get("PYTHONPATH", "")])
    return env


class Laptop:
    def __init__(self, bed: NetnsBed, host: Host, home: Path, key: bytes) -> None:
        self.bed, self.host, self.home, self.key = bed, host, home, key
        self.cli("init")
        self.id = self.js("whoami")["id"]
        self.proc: LineProcess | None = None

    def argv(self, *args: str) -> list[str]:
        return [*FEEDLOG, "--home", str(self.home), "--network-key", self.key.hex(), *args]

    def cli(self, *args: str) -> str:
        r = self.bed.run(self.host, self.argv(*args), env=_env())
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def js(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))

    def publish(self, n: int, tag: str) -> None:
        r = self.bed.run(self.host, [sys.executable, "-c", PUBLISH, str(self.home), str(n), tag],
                         env=_env())
        assert r.returncode == 0, r.stderr

    def seq_of(self, feed: str) -> int:
        last = self.js("feed", feed, "--limit", "1")
        return int(last[0]["seq"]) if last else 0

    def serve(self) -> LineProcess:
        self.proc = self.bed.spawn(self.host, self.argv("serve", "--lan", "--json", *FAST),
                                   env=_env())
        self.proc.wait_for(lambda e: isinstance(e, dict) and e.get("event") == "lan", 20)
        return self.proc

    @property
    def p(self) -> LineProcess:
        assert self.proc is not None
        return self.proc

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.p.lines if isinstance(e, dict) and e.get("event") == name]


def converge(laptops: list[Laptop], want: dict[str, int], timeout: float) -> float:
    """Poll until every laptop holds every feed in ``want`` up to its seq; the seconds taken."""
    t0 = time.monotonic()
    while True:
        got = {(lap.id, f): lap.seq_of(f) for lap in laptops for f in want}
        if all(got[(lap.id, f)] >= n for lap in laptops for f, n in want.items()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no convergence in {timeout} s: {got}, want {want}; events "
                                 f"{[lap.proc.lines if lap.proc else None for lap in laptops]}")
        time.sleep(0.5)


def test_serve_lan_converges_and_reconverges_after_a_partition(
        netns: NetnsBed, tmp_path: Path) -> None:
    ha, hb, hc = netns.bridged("a", "b", "c")
    key, other = os.urandom(32), os.urandom(32)
    a = Laptop(netns, ha, tmp_path / "a", key)
    b = Laptop(netns, hb, tmp_path / "b", key)
    c = Laptop(netns, hc, tmp_path / "c", other)
    a.cli("follow", b.id)
    b.cli("follow", a.id)
    c.cli("follow", a.id)
    c.cli("follow", b.id)
    a.publish(1000, "from a")
    b.publish(10, "from b")
    want = {a.id: a.seq_of(a.id), b.id: b.seq_of(b.id)}
    assert want == {a.id: 1001, b.id: 11}  # the follow, then the posts

    t0 = time.monotonic()
    for lap in (a, b, c):
        lap.serve()
    first = converge([a, b], want, 40)
    print(f"serve --lan: A (1001) and B (11) converged {first:.1f} s after serve started "
          f"({time.monotonic() - t0:.1f} s including the processes' start)")

    # exactly one of the pair dials, and each reported the other as found and synced
    assert [e["peer"] for e in a.events("peer-found")] == [b.id]
    assert [e["peer"] for e in b.events("peer-found")] == [a.id]
    dials = [e["dial"] for e in a.events("peer-found") + b.events("peer-found")]
    assert sorted(dials) == [False, True]
    dialler, listener = (a, b) if a.events("peer-found")[0]["dial"] else (b, a)
    dialler.p.wait_for(lambda e: e.get("event") == "peer-synced", 10)
    assert all(not e["inbound"] for e in dialler.events("peer-connected"))
    assert all(e["inbound"] for e in listener.events("peer-connected"))
    book = {p["id"]: p for p in b.js("peers")}
    assert book[a.id]["source"] == "lan" and book[a.id]["last_synced"] is not None

    # partition: A's link goes down for longer than the idle timeout; both publish meanwhile
    connects = len(dialler.events("peer-connected"))
    netns.link_down(ha)
    a.publish(5, "a offline")
    b.publish(5, "b offline")
    time.sleep(6)
    netns.link_up(ha)
    want = {a.id: 1006, b.id: 16}
    again = converge([a, b], want, 40)
    print(f"after the link came back: converged again in {again:.1f} s")
    assert len(dialler.events("peer-connected")) > connects  # a new connection, not the old one
    ended = dialler.events("peer-disconnected") + dialler.events("peer-lost")
    assert ended, dialler.p.lines

    # live push of what another process publishes into a serving home (serve polls its heads)
    connects = len(dialler.events("peer-connected"))
    a.publish(3, "a live")
    pushed = converge([b], {a.id: 1009}, 15)
    print(f"a message published by another process reached the peer live in {pushed:.1f} s")
    assert len(dialler.events("peer-connected")) == connects  # same connection, no redial

    # C, on another network key, found nobody and stores nothing of A or B
    assert c.events("peer-found") == [] and c.events("peer-connected") == []
    assert c.seq_of(a.id) == 0 and c.seq_of(b.id) == 0
    assert not [e for e in a.events("peer-found") + b.events("peer-found") if e["peer"] == c.id]
    for lap in (a, b, c):
        assert lap.p.stop() == 0, lap.p.stderr_now()

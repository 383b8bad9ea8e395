"""mDNS discovery between network namespaces: real interfaces, real multicast, real processes.

Three hosts on one bridge run ``python -m feedlog.lan``: A and B share a network key, C has
another. A and B find each other with no address given; C sees neither (only records it cannot
open); a link that goes down is noticed (the record expires) and coming back up is noticed too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from feedlog.core.ids import FeedId, feed_id_text
from tests.e2e.netns import LineProcess, NetnsBed
from tests.e2e.test_cli import FEEDLOG

TTL = 4  # seconds: a vanished peer is dropped within TTL + zeroconf's 10 s cache sweep
REANNOUNCE = 1.0


def discovery(bed: NetnsBed, host: Any, key: bytes, feed: str) -> LineProcess:
    p = bed.spawn(host, [sys.executable, "-m", "feedlog.lan", "--network-key", key.hex(),
                         "--feed", feed, "--port", "8008", "--ttl", str(TTL),
                         "--reannounce", str(REANNOUNCE)])
    ready = p.wait_for(lambda e: e.get("event") == "ready", 20)
    assert ready["feed"] == feed
    return p


def is_peer(feed: str) -> Any:
    return lambda e: e.get("event") == "peer" and e["feed"] == feed


def is_removed(feed: str) -> Any:
    return lambda e: e.get("event") == "removed" and e["feed"] == feed


def test_two_hosts_find_each_other_a_third_network_sees_neither(netns: NetnsBed) -> None:
    a, b, c = netns.bridged("a", "b", "c")
    key, other = os.urandom(32), os.urandom(32)
    fa, fb, fc = (feed_id_text(FeedId(os.urandom(32))) for _ in range(3))
    t0 = time.monotonic()
    pa, pb = discovery(netns, a, key, fa), discovery(netns, b, key, fb)
    pc = discovery(netns, c, other, fc)

    seen_b = pa.wait_for(is_peer(fb))
    seen_a = pb.wait_for(is_peer(fa))
    found_after = time.monotonic() - t0
    assert (seen_b["host"], seen_b["port"]) == (b.ip, 8008)
    assert (seen_a["host"], seen_a["port"]) == (a.ip, 8008)
    assert seen_a["dial"] != seen_b["dial"]  # exactly one of the pair dials
    pc.wait_for(lambda e: e.get("event") == "foreign" and e["count"] >= 2)
    pa.wait_for(lambda e: e.get("event") == "foreign" and e["count"] >= 1)
    assert not [e for e in pc.lines if e.get("event") == "peer"]
    assert {e["feed"] for e in pa.lines if e.get("event") == "peer"} == {fb}
    print(f"discovered each other in {found_after:.2f} s (both processes started)")

    # partition A: both sides notice when the records expire; healing is noticed too
    netns.link_down(a)
    t1 = time.monotonic()
    pb.wait_for(is_removed(fa), TTL + 20)
    pa.wait_for(is_removed(fb), TTL + 20)
    print(f"link down noticed in {time.monotonic() - t1:.1f} s")
    netns.link_up(a)
    t2 = time.monotonic()
    pb.wait_for(is_peer(fa), 20)
    pa.wait_for(is_peer(fb), 20)
    print(f"link up noticed in {time.monotonic() - t2:.1f} s")
    assert not [e for e in pc.lines if e.get("event") == "peer"]

    for p in (pa, pb, pc):
        assert p.stop() == 0
        assert p.lines[-1] == {"event": "stopped"}


def test_doctor_in_a_host_without_a_lan(netns: NetnsBed, tmp_path: Path) -> None:
    lonely = netns.host("lonely")
    home = str(tmp_path / "h")
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    assert netns.run(lonely, [*FEEDLOG, "--home", home, "init"], env=env).returncode == 0
    r = netns.run(lonely, [*FEEDLOG, "--home", home, "doctor", "--json", "--wait", "0"], env=env)
    assert r.returncode == 1, r.stderr
    codes = {f["code"] for f in json.loads(r.stdout)["findings"]}
    assert "no-interface" in codes and "interface" not in codes


def test_bed_cleans_up_namespaces_and_processes(netns: NetnsBed) -> None:
    import subprocess

    a, b = netns.pair("x", "y")
    p = netns.spawn(a, ["sleep", "60"])
    assert b.ip in netns.run(b, ["ip", "-4", "addr", "show", "eth0"]).stdout
    names = list(netns.namespaces)
    netns.close()
    assert p.proc.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)

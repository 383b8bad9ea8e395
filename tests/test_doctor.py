"""feedlog.doctor: the pure diagnosis, and the facts it gathers on loopback."""

from __future__ import annotations

import os
import socket
from typing import Any

from feedlog.core.ids import FeedId
from feedlog.doctor import Facts, Interface, diagnose, gather, port_free
from feedlog.lan import LanDiscovery

ETH = Interface("eth0", ("10.0.0.5",), True, False, True)
LO = Interface("lo", ("127.0.0.1",), True, True, True)


def codes(f: Facts) -> list[str]:
    return [x.code for x in diagnose(f)]


def test_no_usable_interface() -> None:
    down = Interface("wlan0", ("10.0.0.7",), False, False, True)
    nomc = Interface("tun0", ("10.8.0.2",), True, False, False)
    c = codes(Facts(interfaces=[LO, down, nomc], browsed=3))
    assert "no-interface" in c and c.count("interface-unusable") == 2
    assert "nothing-found" not in c  # browsing cannot explain anything without an interface
    assert "no-interface" in codes(Facts(interfaces=[LO]))


def test_browse_outcomes() -> None:
    def browsed(**kw: Any) -> Facts:
        return Facts(interfaces=[ETH], browsed=3.0, **kw)

    assert codes(browsed()) == ["interface", "nothing-found"]
    assert "only-other-network" in codes(browsed(foreign=2))
    c = codes(browsed(peers=1, foreign=1))
    assert "peers-found" in c and "other-network-seen" in c and "only-other-network" not in c
    c = codes(browsed(own=1, rejected={"discovery-version": 2}))
    assert "own-announcement" in c and "bad-announcements" in c and "nothing-found" in c


def test_zeroconf_port_identity_and_browse_failure() -> None:
    c = codes(Facts(zeroconf=False, interfaces=[ETH], browsed=0))
    assert c[0] == "zeroconf-missing" and "nothing-found" not in c
    assert "port-taken" in codes(Facts(interfaces=[ETH], port=8008, port_free=False))
    assert "port-free" in codes(Facts(interfaces=[ETH], port=8008, port_free=True))
    assert "no-identity" in codes(Facts(interfaces=[ETH], identity=False))
    c = codes(Facts(interfaces=[ETH], browse_error="boom", browsed=3))
    assert "browse-failed" in c and "nothing-found" not in c
    levels = {x.code: x.level for x in diagnose(Facts(interfaces=[LO], port=1, port_free=False))}
    assert levels["no-interface"] == "error" and levels["port-taken"] == "error"


def test_port_free_sees_a_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_free(port) is False
    assert port_free(port) is True


async def test_gather_on_loopback_counts_other_networks() -> None:
    other = LanDiscovery(os.urandom(32), FeedId(os.urandom(32)), 4201,
                         interfaces=["127.0.0.1"], reannounce=0)
    await other.start()
    try:
        f = await gather(os.urandom(32), None, 0, 1.5, ["127.0.0.1"])
    finally:
        await other.stop()
    assert f.foreign >= 1 and f.peers == 0 and f.browsed == 1.5 and f.port_free is None
    assert "only-other-network" in codes(f)

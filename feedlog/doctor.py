"""``feedlog doctor``: why does LAN discovery find nobody? (README "LAN")

How this works: ``gather`` collects facts (is zeroconf importable, which interfaces are up,
non-loopback and multicast-capable, is the port free, what a short browse sees) and the pure
``diagnose`` turns facts into findings. Each finding has a stable ``code``; tests and scripts
match on codes, never on message text. Browsing only queries: doctor never announces.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from feedlog.core.ids import FeedId

# Linux interface flags (include/uapi/linux/if.h)
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_MULTICAST = 0x1000


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    addresses: tuple[str, ...]
    up: bool
    loopback: bool
    multicast: bool

    @property
    def usable(self) -> bool:
        return self.up and self.multicast and not self.loopback and bool(self.addresses)


@dataclass
class Facts:
    zeroconf: bool = True
    interfaces: list[Interface] = field(default_factory=list)
    port: int = 0
    port_free: bool | None = None  # None: not checked
    identity: bool = True
    browse_error: str | None = None
    browsed: float = 0.0  # seconds
    peers: int = 0
    foreign: int = 0
    own: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    level: str  # "ok" | "info" | "warn" | "error"
    message: str


def diagnose(f: Facts) -> list[Finding]:
    """Findings for ``f``, most basic first. Pure."""
    out: list[Finding] = []
    if not f.zeroconf:
        out.append(Finding("zeroconf-missing", "error",
                           "python-zeroconf is not installed, so LAN discovery cannot run "
                           "(pip install zeroconf)"))
    usable = [i for i in f.interfaces if i.usable]
    for i in usable:
        out.append(Finding("interface", "ok", f"{i.name}: {', '.join(i.addresses)}"))
    for i in f.interfaces:
        if i.loopback or i.usable or not i.addresses:
            continue
        why = "down" if not i.up else "without multicast"
        out.append(Finding("interface-unusable", "info",
                           f"{i.name} ({', '.join(i.addresses)}) is {why}"))
    if not usable:
        out.append(Finding("no-interface", "error",
                           "no network interface is up with an IPv4 address and multicast: "
                           "connect to a Wi-Fi or wired network first"))
    if f.port_free is False:
        out.append(Finding("port-taken", "error",
                           f"TCP port {f.port} is already taken (by another program, or by a "
                           "feedlog serve that is already running); choose another port"))
    elif f.port_free:
        out.append(Finding("port-free", "ok", f"TCP port {f.port} is free"))
    if not f.identity:
        out.append(Finding("no-identity", "warn",
                           "no identity in this home: run `feedlog init` (doctor cannot tell "
                           "your own announcements from others')"))
    if f.browse_error is not None:
        out.append(Finding("browse-failed", "error", f"cannot browse the LAN: {f.browse_error}"))
        return out
    if not f.zeroconf or not usable or f.browsed <= 0:
        return out
    secs = f"{f.browsed:g} s"
    if f.own:
        out.append(Finding("own-announcement", "info",
                           "this identity is already announced here (a running serve --lan)"))
    if f.peers:
        out.append(Finding("peers-found", "ok",
                           f"{f.peers} peer(s) of your network seen in {secs}"))
        if f.foreign:
            out.append(Finding("other-network-seen", "info",
                               f"also {f.foreign} announcement(s) of another network"))
    elif f.foreign:
        out.append(Finding("only-other-network", "warn",
                           f"{f.foreign} feedlog announcement(s) seen in {secs}, all of another "
                           "network key: check that both sides use the same network key"))
    else:
        out.append(Finding("nothing-found", "warn",
                           f"no feedlog announcement seen in {secs}: is `feedlog serve --lan` "
                           "running on the other machine, on the same network? Guest Wi-Fi and "
                           "'client isolation' block multicast between machines"))
    for code, n in sorted(f.rejected.items()):
        out.append(Finding("bad-announcements", "warn",
                           f"{n} malformed announcement(s) ignored ({code})"))
    return out


def list_interfaces() -> list[Interface]:
    """IPv4 interfaces with their flags (Linux reads /sys; elsewhere flags are assumed)."""
    import ifaddr

    out = []
    for adapter in ifaddr.get_adapters():
        addrs = tuple(ip.ip for ip in adapter.ips if isinstance(ip.ip, str))
        name = str(adapter.nice_name or adapter.name)
        flags_path = Path("/sys/class/net") / str(adapter.name) / "flags"
        try:
            flags = int(flags_path.read_text().strip(), 16)
        except (OSError, ValueError):
            loop = all(a.startswith("127.") for a in addrs) and bool(addrs)
            flags = IFF_UP | IFF_MULTICAST | (IFF_LOOPBACK if loop else 0)
        out.append(Interface(name, addrs, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK),
                             bool(flags & IFF_MULTICAST)))
    return out


def port_free(port: int) -> bool:
    """Whether a TCP server could bind ``port`` on every address now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if os.name == "posix":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


async def gather(network_key: bytes, feed: FeedId | None, port: int, wait: float,
                 interfaces: Sequence[str] | None = None) -> Facts:
    """Collect the facts: interfaces, port, and what browsing for ``wait`` seconds sees.

    ``interfaces`` restricts browsing to those IPv4 addresses (tests use 127.0.0.1) and then
    counts as the usable interfaces.
    """
    from feedlog.lan import LanDiscovery, zeroconf_available

    f = Facts(port=port, identity=feed is not None)
    f.zeroconf = zeroconf_available()
    if interfaces:
        f.interfaces = [Interface(f"given {a}", (a,), True, False, True) for a in interfaces]
    else:
        f.interfaces = list_interfaces()
    f.port_free = port_free(port) if port else None
    if not f.zeroconf or not any(i.usable for i in f.interfaces) or wait <= 0:
        return f
    disc = LanDiscovery(network_key, feed or FeedId(bytes(32)), port or 1,
                        interfaces=list(interfaces) if interfaces else None, advertise=False)
    try:
        await disc.start()
    except Exception as exc:
        f.browse_error = str(exc)
        return f
    try:
        await asyncio.sleep(wait)
    finally:
        await disc.stop()
    f.browsed = wait
    f.peers = len(disc.stats.peers)
    f.foreign = len(disc.stats.foreign)
    f.own = len(disc.stats.own)
    f.rejected = {c: len(v) for c, v in disc.stats.rejected.items()}
    return f

"""A test bed of "laptops on a LAN" made of Linux network namespaces (shared/docs/TESTBED.md).

    bed = NetnsBed()                       # or the ``netns`` fixture, which also cleans up
    a, b = bed.pair("a", "b")              # two hosts joined by one veth pair
    # or: a, b, c = bed.bridged("a", "b", "c")   # one veth per host into a bridge namespace
    p = bed.spawn(a, [sys.executable, "-m", "feedlog.lan"])   # a LineProcess
    p.wait_for(lambda ev: ev["event"] == "peer")                # JSON lines on its stdout
    bed.link_down(a); bed.link_up(a)       # partition and heal
    bed.close()                            # kills every process, deletes every namespace

Hosts get 10.200.0.(1+i)/24 on an interface named ``eth0`` inside their own namespace; the
veth ends are created directly inside the namespaces, so nothing is named in the root one.
Names carry the pid of the test process (``fltPID-TOKEN-host``), so two runs never collide and
a later run deletes what a killed run left behind. Only root can do this: ``require_root()``
skips with the reason otherwise (CI runs as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

PREFIX = "flt"
SUBNET = "10.200.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def root_problem() -> str | None:
    """Why the namespace test bed cannot run here, or None when it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; try: sudo -E make test)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def require_root() -> None:
    problem = root_problem()
    if problem is not None:
        pytest.skip(problem)


def reap_stale() -> None:
    """Delete namespaces left by test runs whose process is gone (a run killed by SIGKILL)."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid_text = name[len(PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # its owner still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _kill_all_in(name)
        _ip("netns", "del", name, check=False)


def _kill_all_in(ns: str) -> None:
    r = _ip("netns", "pids", ns, check=False)
    for pid in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass(frozen=True)
class Host:
    name: str
    ns: str
    ip: str
    iface: str = "eth0"


class LineProcess:
    """A process in a namespace whose stdout lines (JSON or text) are collected by a thread."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        self.lines: list[Any] = []
        self._q: queue.Queue[Any] = queue.Queue()
        self._seen = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                item: Any = json.loads(line)
            except ValueError:
                item = line
            self.lines.append(item)
            self._q.put(item)

    def wait_for(self, pred: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        """The first line not yet consumed for which ``pred`` holds (lines before it are
        skipped); AssertionError with the process's output on timeout."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting in {self.argv}: lines {self.lines}, "
                                     f"stderr {self.stderr_now()!r}")
            try:
                item = self._q.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self._q.empty():
                    self._thread.join(1)
                    if self._q.empty():
                        raise AssertionError(
                            f"{self.argv} exited {self.proc.returncode}: lines {self.lines}, "
                            f"stderr {self.stderr_now()!r}") from None
                continue
            if pred(item):
                return item

    def stderr_now(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._thread.join(2)
        return self.proc.returncode


class NetnsBed:
    """Namespaces, links and processes of one test; ``close`` undoes all of it."""

    def __init__(self) -> None:
        self.run_id = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self.processes: list[LineProcess] = []
        reap_stale()

    def _ns(self, label: str) -> str:
        ns = f"{self.run_id}-{label}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def host(self, name: str) -> Host:
        """A host with only loopback (no LAN at all)."""
        ns = self._ns(name)
        h = Host(name, ns, f"{SUBNET}.{len(self.hosts) + 1}")
        self.hosts[name] = h
        return h

    def _address(self, h: Host) -> None:
        _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "brd", "+", "dev", h.iface)
        _ip("-n", h.ns, "link", "set", h.iface, "up")

    def pair(self, a: str, b: str) -> tuple[Host, Host]:
        """Two hosts joined by a veth pair."""
        ha, hb = self.host(a), self.host(b)
        _ip("link", "add", ha.iface, "netns", ha.ns, "type", "veth",
            "peer", "name", hb.iface, "netns", hb.ns)
        self._address(ha)
        self._address(hb)
        return ha, hb

    def bridged(self, *names: str) -> list[Host]:
        """Hosts each joined by a veth to one bridge in its own namespace (a switch)."""
        br = self._ns("br")
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        hosts = []
        for i, n in enumerate(names):
            h = self.host(n)
            port = f"p{i}"
            _ip("link", "add", h.iface, "netns", h.ns, "type", "veth",
                "peer", "name", port, "netns", br)
            _ip("-n", br, "link", "set", port, "master", "br0")
            _ip("-n", br, "link", "set", port, "up")
            self._address(h)
            hosts.append(h)
        return hosts

    def link_down(self, h: Host) -> None:
        _ip("-n", h.ns, "link", "set", h.iface, "down")

    def link_up(self, h: Host) -> None:
        _ip("-n", h.ns, "link", "set", h.iface, "up")

    def command(self, h: Host, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", h.ns, *argv]

    def spawn(self, h: Host, argv: Sequence[str], env: dict[str, str] | None = None,
              ) -> LineProcess:
        """Start ``argv`` inside ``h``; it is stopped by ``close`` whatever happens."""
        p = LineProcess(self.command(h, argv), env)
        self.processes.append(p)
        return p

    def run(self, h: Host, argv: Sequence[str], timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(h, argv), capture_output=True, text=True,
                              timeout=timeout, env=env)

    def close(self) -> None:
        for p in self.processes:
            with contextlib.suppress(Exception):
                p.stop(5)
        for ns in reversed(self.namespaces):
            _kill_all_in(ns)
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        self.processes.clear()


@pytest.fixture
def netns() -> Iterator[NetnsBed]:
    """A fresh, empty test bed (skips unless root); everything is removed afterwards."""
    require_root()
    bed = NetnsBed()
    try:
        yield bed
    finally:
        bed.close()

"""`feedlog serve` and `feedlog sync` as real processes over 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import FEEDLOG, js, run

OTHER_KEY = "11" * 32


class Server:
    def __init__(self, home: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
        self.proc = subprocess.Popen(
            [*FEEDLOG, "--home", str(home), *extra, "serve", "--host", "127.0.0.1",
             "--port", "0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        assert first["event"] == "serving", first
        self.address: str = first["address"]
        self.id: str = first["id"]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path, Server]]:
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, "init")
    run(b, "init")
    js(a, "follow", js(b, "whoami")["id"])
    js(b, "follow", js(a, "whoami")["id"])
    server = Server(a)
    yield a, b, server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def live_sync(home: Path, address: str) -> subprocess.Popen[str]:
    """`feedlog sync ADDRESS --live` in ``home``, running."""
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    return subprocess.Popen([*FEEDLOG, "--home", str(home), "sync", address, "--live"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def interrupt(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, then wait for it (killed if it does not end)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def feed(home: Path, author: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = js(home, "feed", author)
    return out


def test_sync_both_ways_then_nothing(homes: tuple[Path, Path, Server]) -> None:
    a, b, server = homes
    aid, bid = server.id, js(b, "whoami")["id"]
    for i in range(3):
        js(a, "publish", f"from a {i}")
    js(b, "publish", "from b")
    res = js(b, "sync", server.address)
    assert res["caught_up"] is True and res["error"] is None
    assert res["peer"] == aid and res["remote"].startswith("127.0.0.1:")
    # a: follow + 3 posts; b: follow + 1 post
    assert (res["incoming"], res["outgoing"], res["added"], res["sent"]) == (4, 2, 4, 2)
    assert res["bytes_in"] > 0 and res["bytes_out"] > 0 and res["seconds"] >= 0
    assert feed(b, aid) == feed(a, aid) and len(feed(b, aid)) == 4
    deadline = time.monotonic() + 10  # the server commits what b sent before saying synced
    while len(feed(a, bid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert feed(a, bid) == feed(b, bid)
    again = js(b, "sync", server.address)
    assert again["caught_up"] and again["incoming"] == again["outgoing"] == 0
    assert again["received"] == again["sent"] == 0
    assert server.stop() == 0  # SIGTERM: a clean exit
    assert "Traceback" not in (server.proc.stderr.read() if server.proc.stderr else "")


def test_network_key_mismatch_and_bad_address(homes: tuple[Path, Path, Server]) -> None:
    _, b, server = homes
    p = run(b, "--network-key", OTHER_KEY, "sync", server.address, ok=False)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    # SHS: the server just hangs up on another network, so the client sees handshake-eof
    assert len(lines) == 1 and lines[0].startswith("error[handshake-eof]")
    assert "another network" in lines[0] and "--network-key" in lines[0]  # the likely cause
    assert "Traceback" not in p.stderr
    p = run(b, "sync", "not an address", ok=False)
    assert p.returncode != 0 and p.stderr.startswith("error[bad-address]")
    assert "Traceback" not in p.stderr


def test_live_sync_receives_while_connected(homes: tuple[Path, Path, Server],
                                            tmp_path: Path) -> None:
    """B stays connected live; a message that reaches the server (C syncs it in) is pushed
    to B without a new sync."""
    a, b, server = homes
    c = tmp_path / "c"
    run(c, "init")
    cid = js(c, "whoami")["id"]
    js(a, "follow", cid)  # B replicates C at two hops, through A's follow
    server.stop()
    server = Server(a)
    live = live_sync(b, server.address)
    try:
        deadline = time.monotonic() + 20
        while len(feed(b, server.id)) < 2:  # B caught up with A (its follow of B and of C)
            assert live.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        post = js(c, "publish", "pushed live")
        assert js(c, "sync", server.address)["caught_up"]
        while post["id"] not in [m["id"] for m in feed(b, cid)]:
            assert live.poll() is None, live.stderr.read() if live.stderr else ""
            assert time.monotonic() < deadline, "the live push did not arrive"
            time.sleep(0.1)
    finally:
        interrupt(live)
        assert server.stop() == 0


def test_publish_beside_serve_and_live_sync_reaches_the_other_side(
        homes: tuple[Path, Path, Server]) -> None:
    """`feedlog publish` in the home a `serve` runs in, and in the home of a `sync --live`:
    another process writes the store, and each message still reaches the other side live."""
    a, b, server = homes
    bid = js(b, "whoami")["id"]
    live = live_sync(b, server.address)
    try:
        deadline = time.monotonic() + 20
        while len(feed(b, server.id)) < 1:  # B caught up with A (its follow of B)
            assert live.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for home, other, author in ((a, b, server.id), (b, a, bid)):
            post = js(home, "publish", f"written beside a live link in {home.name}")
            while post["id"] not in [m["id"] for m in feed(other, author)]:
                assert live.poll() is None, live.stderr.read() if live.stderr else ""
                assert time.monotonic() < deadline, f"{home.name}'s post never arrived"
                time.sleep(0.05)
    finally:
        interrupt(live)
        assert server.stop() == 0


def test_ctrl_c_and_failed_syncs_leave_the_peer_book_right(
        homes: tuple[Path, Path, Server]) -> None:
    """Ctrl-C on a live sync: exit 130 with a word on it, the peer marked disconnected (not
    left connecting). A sync to a wrong port does not replace the peer's good address, and a
    sync with yourself does not put you in your own peer book."""
    _, b, server = homes
    live = live_sync(b, server.address)
    deadline = time.monotonic() + 20
    while not [p for p in js(b, "peers") if p["state"] == "connected"]:
        if live.poll() is not None or time.monotonic() > deadline:
            interrupt(live)
            pytest.fail(f"the live sync never showed as connected: {js(b, 'peers')}; "
                        f"its stderr: {live.stderr.read() if live.stderr else ''}")
        time.sleep(0.05)
    live.send_signal(signal.SIGINT)
    _, err = live.communicate(timeout=15)
    assert live.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    (peer,) = js(b, "peers")
    assert peer["id"] == server.id and peer["state"] == "disconnected", peer
    good = (peer["host"], peer["port"])
    host_port, _, feed_id = server.address.removeprefix("feedlog://").partition("/")
    wrong = f"feedlog://127.0.0.1:1/{feed_id}"  # nothing listens on port 1
    assert run(b, "sync", wrong, ok=False).returncode != 0
    (peer,) = js(b, "peers")
    assert (peer["host"], peer["port"]) == good and peer["state"] == "unreachable", peer
    me = js(b, "whoami")["id"]
    p = run(b, "sync", f"feedlog://{host_port}/{me}", ok=False)
    assert p.stderr.startswith("error[self-sync]")
    assert [p["id"] for p in js(b, "peers")] == [server.id]
    assert server.stop() == 0

"""`feedlog peers` and `feedlog doctor` as a user runs them (real subprocesses, loopback only)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from feedlog.core import content
from feedlog.core.ids import FeedId, feed_id_text
from feedlog.core.message import FeedState, create
from feedlog.identity import DB_FILE
from feedlog.store import SqliteStore
from tests.conftest import keypair
from tests.e2e.test_cli import js, run


def test_peers_lists_the_book_with_names(tmp_path: Path) -> None:
    h = tmp_path / "h"
    run(h, "init")
    assert "no peers known yet" in run(h, "peers").stdout
    assert js(h, "peers") == []
    bob, carol = keypair("bob"), keypair("carol")

    async def fill() -> None:
        s = await SqliteStore.open(h / DB_FILE)
        await s.append([create(bob, FeedState(FeedId(bob.public)), content.about("Bob"), 1)])
        await s.peer_seen(FeedId(bob.public), "10.200.0.2", 8008, "lan", 1_767_225_600_000)
        await s.peer_state(FeedId(bob.public), "synced", 1_767_225_660_000, synced=True)
        await s.peer_state(FeedId(carol.public), "connected", 1_767_225_700_000, synced=False)
        await s.close()

    asyncio.run(fill())
    rows = {r["id"]: r for r in js(h, "peers")}
    b = rows[feed_id_text(bob.public)]
    assert b == {"id": feed_id_text(bob.public), "name": "Bob", "host": "10.200.0.2",
                 "port": 8008, "source": "lan", "last_seen": 1_767_225_660_000,  # the sync
                 "last_synced": 1_767_225_660_000, "state": "synced"}
    c = rows[feed_id_text(carol.public)]
    assert (c["name"], c["host"], c["port"], c["source"], c["last_seen"], c["last_synced"]) == (
        None, None, None, "inbound", 1_767_225_700_000, None)  # seen when it dialled us
    text = run(h, "peers").stdout
    assert "Bob" in text and "10.200.0.2:8008" in text and "synced" in text
    assert "synced never" in text  # carol


def test_doctor_on_loopback_reports_codes(tmp_path: Path) -> None:
    h = tmp_path / "h"
    run(h, "init")
    other = subprocess.Popen(
        [sys.executable, "-m", "feedlog.lan", "--interface", "127.0.0.1", "--port", "4301",
         "--network-key", os.urandom(32).hex()],
        stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        assert json.loads(other.stdout.readline())["event"] == "ready"
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            s.listen()
            port = s.getsockname()[1]
            p = run(h, "doctor", "--json", "--interface", "127.0.0.1", "--wait", "5",
                    "--port", str(port), "--network-key", os.urandom(32).hex(), ok=False)
    finally:
        other.terminate()
        other.wait(10)
    assert p.returncode == 1, p.stderr  # an error finding: the port is taken
    out = json.loads(p.stdout)
    found = {f["code"]: f["level"] for f in out["findings"]}
    assert out["ok"] is False
    assert found["port-taken"] == "error" and found["only-other-network"] == "warn"
    assert "peers-found" not in found

    p = run(h, "doctor", "--network-key", "abcd", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[bad-network-key]")
    assert "Traceback" not in p.stderr
    p = run(h, "doctor", "--interface", "127.0.0.1", "--wait", "0", "--port", "0")
    assert "[interface]" in p.stdout and "nothing-found" not in p.stdout

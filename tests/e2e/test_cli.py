"""The real `feedlog` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_SCRIPT = Path(sys.executable).with_name("feedlog")
# The installed console script, as a user runs it.
FEEDLOG = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    p = subprocess.run([*FEEDLOG, "--home", str(home), *args], capture_output=True, text=True,
                       env=env, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def js(home: Path, *args: str) -> Any:
    return json.loads(run(home, *args, "--json").stdout)


def test_cli_flow(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, "init")
    run(b, "init")
    aid = js(a, "whoami")["id"]
    bid = js(b, "whoami")["id"]
    assert aid.startswith("feed_") and aid != bid
    assert js(a, "name", "Alice")["seq"] == 1
    p = js(a, "publish", "hello world")
    assert p["seq"] == 2 and p["id"].startswith("msg_")
    js(a, "follow", bid.upper())  # ids survive a lost case
    msgs = js(a, "feed")
    assert [m["seq"] for m in msgs] == [1, 2, 3]
    assert msgs[1]["content"] == {"type": "post", "text": "hello world"}
    assert msgs[1]["id"] == p["id"] and msgs[2]["previous"] == msgs[1]["id"]
    assert msgs[2]["content"]["feed"] == bid and msgs[0]["author"] == aid
    assert {"id", "author", "seq", "previous", "timestamp", "content"} <= set(msgs[0])
    assert [f["id"] for f in js(a, "following")] == [bid]
    assert js(a, "feed", "--limit", "1")[0]["seq"] == 3
    st = js(a, "status")
    assert st["seq"] == 3 and st["name"] == "Alice" and st["forked"] == []
    text = run(a, "feed").stdout
    assert "hello world" in text and "Alice" in text
    v = js(a, "verify")
    assert v["ok"] and v["messages"] == 3
    js(a, "unfollow", bid)
    assert js(a, "following") == []
    js(a, "block", bid)
    js(a, "unblock", bid)
    assert js(a, "status")["seq"] == 6


@pytest.mark.parametrize("args,code", [
    (("follow", "feed_nothing"), "bad-id"),
    (("follow", "msg_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "bad-id"),
    (("feed", "not-an-id"), "bad-id"),
    (("name", ""), "bad-content"),
    (("publish", "caf\udce9"), "bad-content"),  # a Latin-1 argument: not UTF-8
])
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], code: str) -> None:
    run(tmp_path / "h", "init")
    p = run(tmp_path / "h", *args, ok=False)
    assert p.returncode == 2
    assert p.stderr.strip().startswith(f"error[{code}]")
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_missing_home_bad_permissions_corrupt_db(tmp_path: Path) -> None:
    p = run(tmp_path / "none", "whoami", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[no-home]")
    h = tmp_path / "h"
    run(h, "init")
    run(h, "publish", "keep me")
    (h / "secret.json").chmod(0o644)
    p = run(h, "publish", "x", ok=False)
    assert p.stderr.startswith("error[key-permissions]") and "chmod 600" in p.stderr
    (h / "secret.json").chmod(0o600)
    db = h / "feedlog.sqlite3"
    saved = db.read_bytes()
    db.write_bytes(b"garbage" * 1000)
    p = run(h, "feed", ok=False)
    assert p.returncode == 4 and p.stderr.startswith("error[store-corrupt]")
    assert "Traceback" not in p.stderr
    assert db.read_bytes() == b"garbage" * 1000  # nothing written over it
    db.write_bytes(saved)
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    assert "keep me" in run(h, "feed").stdout


def test_feedlog_home_variable(tmp_path: Path) -> None:
    env = {**os.environ, "FEEDLOG_HOME": str(tmp_path / "envhome")}
    p = subprocess.run([*FEEDLOG, "init", "--json"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["home"] == str(tmp_path / "envhome")
    assert (tmp_path / "envhome" / "secret.json").exists()


def test_verify_detects_tampering(tmp_path: Path) -> None:
    import sqlite3

    h = tmp_path / "h"
    run(h, "init")
    for i in range(3):
        run(h, "publish", f"m{i}")
    c = sqlite3.connect(h / "feedlog.sqlite3")
    raw = c.execute("SELECT raw FROM messages WHERE seq = 2").fetchone()[0]
    bad = bytearray(raw)
    bad[-3] ^= 1
    c.execute("UPDATE messages SET raw = ? WHERE seq = 2", (bytes(bad),))
    c.commit()
    c.close()
    p = run(h, "verify", ok=False)
    assert p.returncode == 1 and "content-mismatch" in p.stderr

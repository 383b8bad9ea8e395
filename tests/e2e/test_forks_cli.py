"""Forks and restores with the real `feedlog` command: serve and sync in separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.test_cli import FEEDLOG, js, run


@contextmanager
def serving(home: Path) -> Iterator[str]:
    """`feedlog serve` on 127.0.0.1 in the background; yields its address."""
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    p = subprocess.Popen([*FEEDLOG, "--home", str(home), "serve", "--host", "127.0.0.1",
                          "--port", "0", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, p.stderr.read() if p.stderr else ""
        yield str(json.loads(line)["address"])
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def sync(home: Path, server: Path) -> Any:
    with serving(server) as addr:
        res = js(home, "sync", addr)
    assert res["caught_up"] and res["error"] is None, res
    return res


def test_same_key_in_two_homes_fork_is_proved_spread_and_frozen(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    key = tmp_path / "backup.json"
    aid = js(a, "init")["id"]
    js(a, "key", "export", str(key))
    assert js(b, "init", "--restore", str(key)) == {"id": aid, "home": str(b), "fenced": True}
    js(b, "unfence", "--confirm")
    a1 = js(a, "publish", "written on the old laptop")
    b1 = js(b, "publish", "written on the new laptop")
    b2 = js(b, "publish", "and another")
    assert a1["seq"] == b1["seq"] == 1 and a1["id"] != b1["id"]
    js(c, "init")
    js(c, "follow", aid)
    assert sync(c, a)["added"] == 1
    first_b = sync(c, b)
    assert first_b["received"] >= 1 and first_b["forks"] >= 1
    st = js(c, "status")
    [fork] = st["forked"]
    assert fork["feed"] == aid and fork["seq"] == 1
    # a1 against b1 (same seq) or against b2 (its previous is not a1): either proves it
    pair = sorted(fork["ids"])
    assert pair in (sorted([a1["id"], b1["id"]]), sorted([a1["id"], b2["id"]]))
    assert fork["kind"] == ("same-seq" if b1["id"] in pair else "broken-link")
    text = run(c, "status").stdout
    assert "FORKED" in text and all(i in text for i in pair)
    feed_text = run(c, "feed", aid).stdout
    assert "FORKED" in feed_text and all(i in feed_text for i in pair)
    assert all(m["fork"]["seq"] == 1 for m in js(c, "feed", aid))
    # syncing again spreads the proof: the forked author's two homes take it and check it
    sync(c, a)
    sync(c, b)
    for home in (a, b, c):
        st = js(home, "status")
        assert [(f["feed"], f["seq"]) for f in st["forked"]] == [(aid, 1)], home
        assert sorted(st["forked"][0]["ids"]) == pair
        v = js(home, "verify")
        assert v["ok"] and v["fork_proofs"] == 1, (home, v)
    # a forked author cannot make it worse
    p = run(b, "publish", "more", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[feed-forked]")
    # b holds seq 2 of the feed and c does not, but c asks for nothing more of a frozen feed
    again = sync(c, b)
    assert again["received"] == 0 and again["added"] == 0 and again["feeds_in"] == 0
    assert again["bytes_in"] < first_b["bytes_in"]
    assert again["forks"] == 0


def test_restore_is_fenced_until_sync_then_continues_the_old_chain(tmp_path: Path) -> None:
    a, c, r = tmp_path / "a", tmp_path / "c", tmp_path / "r"
    key = tmp_path / "backup.json"
    aid = js(a, "init")["id"]
    js(a, "publish", "one")
    two = js(a, "publish", "two")
    js(a, "key", "export", str(key))
    assert (key.stat().st_mode & 0o777) == 0o600
    again = run(a, "key", "export", str(key), ok=False)
    assert again.returncode == 2 and again.stderr.startswith("error[key-exists]")
    js(c, "init")
    js(c, "follow", aid)
    sync(c, a)
    js(r, "init", "--restore", str(key))
    assert js(r, "status")["fenced"] is True
    for args in (("publish", "too early"), ("name", "R"), ("follow", js(c, "whoami")["id"])):
        p = run(r, *args, ok=False)
        assert p.returncode == 2 and p.stderr.startswith("error[fenced]:"), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    p = run(r, "unfence", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[confirm-needed]")
    assert js(r, "status")["fenced"] is True
    res = sync(r, c)  # c holds the old feed (the old home itself is gone)
    assert res["added"] == 2
    assert js(r, "status")["fenced"] is False
    three = js(r, "publish", "three")
    assert three["seq"] == 3
    assert js(r, "feed")[-1]["previous"] == two["id"]


def test_restore_refuses_a_readable_or_bad_key_file(tmp_path: Path) -> None:
    a = tmp_path / "a"
    key = tmp_path / "backup.json"
    js(a, "init")
    js(a, "key", "export", str(key))
    key.chmod(0o644)
    p = run(tmp_path / "r", "init", "--restore", str(key), ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[key-permissions]")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    bad.chmod(0o600)
    p = run(tmp_path / "r2", "init", "--restore", str(bad), ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[bad-key-file]")
    assert not (tmp_path / "r" / "secret.json").exists()

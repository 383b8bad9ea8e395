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


def twins(tmp_path: Path, count: int) -> tuple[Path, Path, str, list[Any], list[Any]]:
    """One key in two homes, each publishing ``count`` messages of its own."""
    a, b = tmp_path / "a", tmp_path / "b"
    key = tmp_path / "backup.json"
    aid = js(a, "init")["id"]
    js(a, "key", "export", str(key))
    js(b, "init", "--restore", str(key))
    js(b, "unfence", "--confirm")
    a_msgs = [js(a, "publish", f"laptop {i}") for i in range(count)]
    b_msgs = [js(b, "publish", f"desktop {i}") for i in range(count)]
    return a, b, aid, a_msgs, b_msgs


def test_equal_length_fork_is_found_by_sync_and_held_by_all_three(tmp_path: Path) -> None:
    a, b, aid, a_msgs, b_msgs = twins(tmp_path, 2)
    assert a_msgs[-1]["seq"] == b_msgs[-1]["seq"] == 2  # the same length: only heads differ
    c = tmp_path / "c"
    js(c, "init")
    js(c, "follow", aid)
    assert sync(c, a)["added"] == 2
    found = sync(c, b)
    # equal seqs: the heads in the notes differ, so each side sent its message 2, nothing more
    assert (found["received"], found["sent"], found["added"]) == (1, 1, 0)
    assert found["forks"] == 1
    sync(c, a)  # carries the proof to the first home
    pair = sorted([a_msgs[1]["id"], b_msgs[1]["id"]])
    for home in (a, b, c):
        st = js(home, "status")
        assert [(f["feed"], f["seq"], f["kind"]) for f in st["forked"]] == [(aid, 2, "same-seq")]
        assert sorted(st["forked"][0]["ids"]) == pair, home
        text = run(home, "status").stdout
        assert "FORKED" in text and all(i in text for i in pair), home
        v = js(home, "verify")
        assert v["ok"] and v["fork_proofs"] == 1, (home, v)
    # nothing is downloaded again: no message, no proof, only the handshake and empty notes
    for peer in (b, a):
        again = sync(c, peer)
        assert (again["received"], again["sent"], again["forks"]) == (0, 0, 0), again
        assert again["incoming"] == again["outgoing"] == 0
        assert again["bytes_in"] < 1024 and again["bytes_out"] < 1024, again
    assert found["bytes_in"] > again["bytes_in"] + 200  # a message is ~250 bytes: it was there


def test_equal_length_fork_is_found_by_import(tmp_path: Path) -> None:
    a, b, aid, a_msgs, b_msgs = twins(tmp_path, 3)
    c = tmp_path / "c"
    js(c, "init")
    js(c, "follow", aid)
    sticks = {home: tmp_path / f"stick-{home.name}" for home in (a, b)}
    for home, stick in sticks.items():
        stick.mkdir()
        js(home, "export", str(stick))
    first = js(c, "import", str(sticks[a]))
    assert first["new"] == 3 and first["ok"]
    # the summary names b's head at seq 3; c holds a's message 3: the reader reads the extent
    found = js(c, "import", str(sticks[b]))
    assert found["new"] == 0 and set(found["rejected"]) == {"fork"}
    [fork] = js(c, "status")["forked"]
    # the extent holds b's seqs 1..3, each another message than c's: the lowest proves it
    assert (fork["feed"], fork["seq"], fork["kind"]) == (aid, 1, "same-seq")
    assert sorted(fork["ids"]) == sorted([a_msgs[0]["id"], b_msgs[0]["id"]])
    assert "FORKED" in run(c, "status").stdout
    # the frozen feed is not read again from either stick
    for stick in sticks.values():
        again = js(c, "import", str(stick))
        assert again["bytes_read"] == 0 and again["new"] == 0, again


def test_a_home_behind_on_its_own_branch_proves_the_fork_in_one_sync(tmp_path: Path) -> None:
    """C holds the old laptop's longer branch (seq 1..3); the new laptop forked at seq 1. When C
    syncs with the new laptop, C sends seq 2..3, which cannot link there: the new laptop records a
    broken-link proof, the session still ends cleanly (messages behind a fork are not a gap the
    peer made), and the proof comes back to C before SYNCED, so C holds it after this one sync;
    C's next sync with the old laptop spreads it there."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    key = tmp_path / "backup.json"
    aid = js(a, "init")["id"]
    js(a, "key", "export", str(key))
    js(b, "init", "--restore", str(key))
    js(b, "unfence", "--confirm")
    for i in range(3):
        js(a, "publish", f"old laptop {i}")
    b1 = js(b, "publish", "new laptop")
    js(c, "init")
    js(c, "follow", aid)
    assert sync(c, a)["added"] == 3
    res = sync(c, b)  # error None: no peer-seq-gap
    assert res["forks"] == 1, res
    for home in (b, c):
        [fork] = js(home, "status")["forked"]
        assert (fork["feed"], fork["seq"], fork["kind"]) == (aid, 1, "broken-link"), home
        assert b1["id"] in fork["ids"]
    assert sync(c, a)["forks"] == 0  # C tells A; A learns it
    [fork] = js(a, "status")["forked"]
    assert (fork["feed"], fork["seq"]) == (aid, 1)
    for home in (a, b, c):
        assert js(home, "verify")["ok"], home

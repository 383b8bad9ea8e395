"""Group conversations with the real `feedlog` command: three homes that replicate with
`feedlog serve` / `feedlog sync` over 127.0.0.1, a partial copy by stick, errors, and
`feedlog chat` in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from feedlog.core.ids import parse_msg_id
from tests.e2e.test_cli import FEEDLOG, js, run
from tests.e2e.test_sync_cli import Server

Start = Callable[[Path], Server]


@pytest.fixture
def serve() -> Iterator[Start]:
    """Start `feedlog serve` in a home (stopped at the end of the test)."""
    started: list[Server] = []

    def start(home: Path) -> Server:
        started.append(Server(home))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def sync(home: Path, server: Server) -> dict[str, Any]:
    """`feedlog sync` with a server; both sides hold what the other had when it ends."""
    p = run(home, "sync", server.address, "--json", ok=False)
    if p.returncode != 0:  # say what the server saw too
        server.stop()
        seen = server.proc.stderr.read() if server.proc.stderr else ""
        raise AssertionError(f"sync failed: {p.stderr}\nthe server said: {seen}")
    res: dict[str, Any] = json.loads(p.stdout)
    assert res["caught_up"] and res["error"] is None, res
    return res


def syncs(*pairs: tuple[Path, Server]) -> None:
    """Several homes sync at the same time (never one home twice: a home is one writer)."""
    with ThreadPoolExecutor(len(pairs)) as pool:
        list(pool.map(lambda p: sync(*p), pairs))


def at_once(*commands: tuple[Path, tuple[str, ...]], as_json: bool = True) -> list[Any]:
    """Run `feedlog` commands concurrently, each in its home (with --json unless told not
    to): posts written at the same time, each by someone who has not seen the others."""
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    procs = [subprocess.Popen([*FEEDLOG, "--home", str(h), *args,
                               *(["--json"] if as_json else [])], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h, args in commands]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out) if as_json else out)
    return outs


def homes(tmp_path: Path, *names: str) -> dict[str, tuple[Path, str]]:
    """Homes with an identity and a display name, made side by side."""

    def make(n: str) -> tuple[Path, str]:
        h = tmp_path / n.lower()
        run(h, "init")
        run(h, "name", n)
        return h, js(h, "whoami")["id"]

    with ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(make, names), strict=True))


def follow(home: Path, *ids: str) -> None:
    for i in ids:
        run(home, "follow", i)


def refs_of(home: Path, *authors: str) -> dict[bytes, set[bytes]]:
    """Every group post of ``authors`` as ``home`` stores it: post id -> ids it names."""
    out: dict[bytes, set[bytes]] = {}
    for a in authors:
        for m in js(home, "feed", a):
            c = m["content"]
            if c.get("type") == "post" and "group" in c:
                named = [*c["refs"], *([c["reply"]] if "reply" in c else [])]
                out[parse_msg_id(m["id"])] = {bytes.fromhex(r[2]["hex"]) for r in named}
    return out


def test_three_authors_three_homes_synced_by_the_cli_show_the_same(tmp_path: Path,
                                                                  serve: Start) -> None:
    hs = homes(tmp_path, "Alice", "Bob", "Carol")
    (a, aid), (b, bid), (c, cid) = hs["Alice"], hs["Bob"], hs["Carol"]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda x: follow(*x), [(a, bid, cid), (b, aid, cid), (c, aid, bid)]))
    sa, sb, sc = serve(a), serve(b), serve(c)

    gid = run(a, "group", "new", "Trip", "--member", bid, "--member", cid).stdout.strip()
    assert gid.startswith("msg_")
    first = js(a, "post", gid, "where shall we go?")["id"]
    syncs((b, sa), (c, sa))
    [g] = js(b, "groups")
    assert (g["title"], g["unread"], g["member"], g["creator_name"]) == ("Trip", 1, True, "Alice")

    # Round 1: all three post at once, none having seen the others' posts.
    mountains, seaside, _ = at_once((b, ("post", gid, "mountains")),
                                    (c, ("post", gid, "seaside")),
                                    (a, ("post", gid, "anything goes for me")))
    sync(a, sb)
    sync(a, sc)
    syncs((b, sa), (c, sa))
    # Round 2: replies and a post, again at once.
    _, too_hot, _ = at_once((a, ("reply", mountains["id"], "mountains it is")),
                            (b, ("reply", seaside["id"], "the seaside is too hot")),
                            (c, ("post", gid, "what about the lake?")))
    sync(a, sb)  # Alice has Bob's answer, not yet Carol's lake
    fine = js(a, "reply", too_hot["id"], "fine, no seaside then")

    # Carol gets a stick with Alice's feed only: the answer to Bob's post is there, Bob's
    # post is not. Her view says what is missing and from whose feed.
    stick = tmp_path / "stick"
    stick.mkdir()
    run(a, "export", str(stick), "--feed", aid)
    run(c, "import", str(stick))
    data = js(c, "show", gid)
    [entry] = [e for e in data["entries"] if e["id"] == fine["id"]]
    assert entry["reply_missing"] and entry["reply_n"] is None
    assert [r["id"] for r in entry["missing_refs"]] == [too_hot["id"]]
    assert entry["missing_refs"][0]["author"] == bid
    assert not data["complete"] and data["missing_count"] == 1
    [gap] = data["missing"]
    assert (gap["author"], gap["name"], gap["following"]) == (bid, "Bob", True)
    assert gap["max_seq"] == too_hot["seq"] and gap["held_seq"] < too_hot["seq"]
    text = run(c, "show", gid).stdout
    assert "Alice ↳?: fine, no seaside then  [! 1 ref(s) missing; answers a missing message]" \
        in text
    assert f"incomplete: 1 referenced message(s) missing: 1 from Bob ({bid}, followed" in text
    sync(c, sb)  # Bob's feed fills the gap
    data = js(c, "show", gid)
    [entry] = [e for e in data["entries"] if e["id"] == fine["id"]]
    assert data["complete"] and data["missing_count"] == 0 and not entry["missing_refs"]
    assert data["entries"][entry["reply_n"] - 1]["id"] == too_hot["id"]

    # Everyone catches up with everyone: the same bytes in all three homes.
    sync(a, sb)
    sync(a, sc)
    syncs((b, sa), (c, sa))
    shows = at_once(*((h, ("show", gid, "--json")) for h in (a, b, c)), as_json=False)
    assert shows[0] == shows[1] == shows[2]  # byte for byte
    texts = at_once(*((h, ("show", gid)) for h in (a, b, c)), as_json=False)
    assert texts[0] == texts[1] == texts[2]
    data = json.loads(shows[0])
    entries = data["entries"]
    assert data["complete"] and data["missing"] == [] and len(entries) == 8
    assert entries[0]["id"] == first
    assert {e["text"] for e in entries[1:4]} == {"mountains", "seaside", "anything goes for me"}
    assert {e["name"] for e in entries} == {"Alice", "Bob", "Carol"}
    place: dict[bytes, int] = {parse_msg_id(e["id"]): e["n"] for e in entries}
    place[parse_msg_id(gid)] = 0
    named = refs_of(a, aid, bid, cid)
    assert set(named) == set(place) - {parse_msg_id(gid)}  # nothing lost, nothing twice
    for post, refs in named.items():  # each post after everything it names
        assert all(place[r] < place[post] for r in refs), post
    last = next(e for e in entries if e["text"] == "mountains it is")
    assert entries[last["reply_n"] - 1]["id"] == mountains["id"]
    assert 'Group "Trip"' in texts[0] and "Carol: seaside" in texts[0]
    assert f"Alice ↳{last['reply_n']}: mountains it is" in texts[0] and "complete:" in texts[0]
    assert [g["unread"] for g in js(b, "groups")] == [0]  # show marked it read


def test_partial_follower_sees_what_is_missing_and_from_whom(tmp_path: Path,
                                                            serve: Start) -> None:
    hs = homes(tmp_path, "Alice", "Bob", "Carol", "Dave")
    (a, aid), (b, bid), (c, cid), (d, _) = (hs[n] for n in ("Alice", "Bob", "Carol", "Dave"))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda x: follow(*x), [(a, cid), (b, aid, cid), (c, aid), (d, aid, bid)]))
    sa, sc = serve(a), serve(c)
    gid = run(a, "group", "new", "Plans").stdout.strip()
    js(a, "post", gid, "hello")
    sync(c, sa)
    js(c, "post", gid, "carol here")
    sync(b, sc)
    js(b, "post", gid, "bob, having read carol")
    # Dave follows Alice and Bob, and gets their feeds (only) on a stick from Bob.
    stick = tmp_path / "stick"
    stick.mkdir()
    run(b, "export", str(stick), "--feed", aid, "--feed", bid)
    run(d, "import", str(stick))
    data = js(d, "show", gid)
    assert [e["text"] for e in data["entries"]] == ["hello", "bob, having read carol"]
    assert data["entries"][1]["missing_refs"][0]["author"] == cid
    assert not data["complete"] and data["missing_count"] == 1
    [gap] = data["missing"]
    assert (gap["author"], gap["following"], gap["held_seq"]) == (cid, False, 0)
    text = run(d, "show", gid).stdout
    assert "[! 1 ref(s) missing]" in text
    assert "incomplete: 1 referenced message(s) missing: 1 from" in text and cid in text
    sync(d, sc)  # Dave replicates Carol two hops away, through Bob's follow
    data = js(d, "show", gid)
    assert [e["text"] for e in data["entries"]] == ["hello", "carol here",
                                                   "bob, having read carol"]
    assert data["complete"] and "complete: 3 posts" in run(d, "show", gid).stdout


def test_group_errors_are_one_line(tmp_path: Path) -> None:
    h = tmp_path / "h"
    run(h, "init")
    plain = js(h, "publish", "just a post")["id"]
    for args, code in [
        (("show", "msg_nope"), "bad-id"),
        (("show", plain), "unknown-group"),
        (("post", plain, "x"), "unknown-group"),
        (("reply", plain, "x"), "not-in-group"),
        (("group", "new", ""), "bad-content"),
        (("group", "new", "t", "--member", "feed_bad"), "bad-id"),
    ]:
        p = run(h, *args, ok=False)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith(f"error[{code}]") and len(p.stderr.splitlines()) == 1
    assert js(h, "groups") == []
    assert js(h, "group", "reindex") == {"indexed": 0}


# --- chat in a real terminal ----------------------------------------------------------------


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the chat test")
    base = ["tmux", "-L", f"feedlog-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, timeout=10)


def pane(tmux: list[str]) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p", "-t", "chat", "-S", "-100"],
                          capture_output=True, text=True, timeout=10).stdout


def wait_for(tmux: list[str], text: str, seconds: float = 20) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        screen = pane(tmux)
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared on the chat screen:\n{pane(tmux)}")


def test_chat_in_a_real_terminal(tmp_path: Path, tmux: list[str], serve: Start) -> None:
    hs = homes(tmp_path, "Alice", "Bob")
    (a, aid), (b, bid) = hs["Alice"], hs["Bob"]
    follow(a, bid)
    follow(b, aid)
    gid = run(a, "group", "new", "Chatroom", "--member", bid).stdout.strip()
    js(a, "post", gid, "before the chat")
    sa = serve(a)  # Alice's home serves while her chat runs
    sync(b, sa)
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    command = " ".join([*FEEDLOG, "--home", str(a), "chat", gid])
    subprocess.run([*tmux, "new-session", "-d", "-s", "chat", "-x", "150", "-y", "40",
                    command], check=True, env=env, timeout=10)
    wait_for(tmux, "/quit leaves")
    assert "Alice: before the chat" in pane(tmux)

    subprocess.run([*tmux, "send-keys", "-t", "chat", "typed in the chat", "Enter"],
                   check=True, timeout=10)
    wait_for(tmux, "Alice: typed in the chat")
    # Another process writes to the store while chat runs: Bob's post arrives by a sync
    # with Alice's `feedlog serve`.
    sync(b, sa)
    js(b, "post", gid, "bob answers from elsewhere")
    sync(b, sa)
    wait_for(tmux, "Bob: bob answers from elsewhere")
    subprocess.run([*tmux, "send-keys", "-t", "chat", "/reply 3 a threaded answer", "Enter"],
                   check=True, timeout=10)
    wait_for(tmux, "Alice ↳3: a threaded answer")
    subprocess.run([*tmux, "send-keys", "-t", "chat", "/quit", "Enter"], check=True, timeout=10)
    end = time.monotonic() + 10
    while time.monotonic() < end and subprocess.run(
            [*tmux, "has-session", "-t", "chat"], capture_output=True).returncode == 0:
        time.sleep(0.1)
    texts = [e["text"] for e in js(a, "show", gid)["entries"]]
    assert texts == ["before the chat", "typed in the chat", "bob answers from elsewhere",
                     "a threaded answer"]

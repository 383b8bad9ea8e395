"""`feedlog sync` at a terminal: two real processes over 127.0.0.1, the client under a
pseudo-terminal, so rich draws its progress bars as a person would see them (issue 3)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from feedlog.ptyrun import run as run_child
from feedlog.ptyrun import screen
from tests.e2e.test_cli import FEEDLOG, js, run
from tests.e2e.test_sync_cli import Server

POSTS = 2000


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}


def test_sync_at_a_terminal_draws_the_bars_and_the_summary(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, "init")
    run(b, "init")
    bid = js(b, "whoami")["id"]
    js(a, "follow", bid)
    p = subprocess.run([*FEEDLOG, "--home", str(a), "publish", "--stdin"], env=_env(),
                       input="".join(f"post {i}\n" for i in range(POSTS)), text=True,
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    aid = js(a, "whoami")["id"]
    js(b, "follow", aid)
    for i in range(3):
        js(b, "publish", f"from b {i}")
    server = Server(a)
    try:
        done = run_child([*FEEDLOG, "--home", str(b), "sync", server.address], env=_env(),
                         terminal=True, timeout=120)
    finally:
        assert server.stop() == 0
    shown = screen(done.output)
    assert done.returncode == 0, shown
    assert "Traceback" not in done.output
    # A's feed: its follow of B and the posts; B's: its follow of A and 3 posts
    incoming, outgoing = POSTS + 1, 4
    bars = [line for line in shown if line.startswith(("receiving", "sending"))]
    assert len(bars) == 2, shown
    assert re.match(rf"receiving .*━.* {incoming}/{incoming} +msgs +[\d,]+ msg/s", bars[0]), bars
    assert re.match(rf"sending .*━.* {outgoing}/{outgoing} +msgs +[\d,]+ msg/s", bars[1]), bars
    summary = shown[-1]
    assert re.fullmatch(
        rf"caught up with {aid[:14]}… at 127\.0\.0\.1:\d+: received {incoming} new of "
        rf"{incoming} messages in 1 feeds \([\d,]+ bytes in\), sent {outgoing} in 1 feeds "
        rf"\([\d,]+ bytes out\), [\d.]+ s", summary), summary
    assert done.max_rss_kib > 0
    assert js(b, "status")["messages"] == incoming + outgoing
    assert [m["seq"] for m in js(b, "feed", aid)] == list(range(1, incoming + 1))


def test_sync_without_a_terminal_draws_nothing(tmp_path: Path) -> None:
    """Piped (a script, CI): no bar, no escape codes, only the summary."""
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, "init")
    run(b, "init")
    js(a, "publish", "one")
    js(b, "follow", js(a, "whoami")["id"])
    server = Server(a)
    try:
        done = run_child([*FEEDLOG, "--home", str(b), "sync", server.address], env=_env(),
                         timeout=60)
    finally:
        assert server.stop() == 0
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "\x1b" not in done.output
    assert done.output.startswith("caught up with ") and "received 1 new of 1" in done.output

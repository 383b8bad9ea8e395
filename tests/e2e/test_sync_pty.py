"""`feedlog sync` at a terminal: two real processes over 127.0.0.1, the client under a
pseudo-terminal, so rich draws its progress bars as a person would see them (issue 3)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from feedlog.node import Node
from feedlog.ptyrun import run as run_child
from feedlog.ptyrun import screen
from tests.e2e.test_cli import FEEDLOG, js
from tests.e2e.test_sync_cli import Server

POSTS = 2000


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}


async def _homes(a: Path, b: Path) -> tuple[str, str]:
    """A holds POSTS posts and follows B; B follows A and has 3 posts (made with the library:
    `publish --stdin` stores each line durably, which takes seconds on a busy disk)."""
    na, nb = await Node.init(a), await Node.init(b)
    try:
        await na.follow(nb.id)
        await na.publish_many([f"post {i}" for i in range(POSTS)])
        await nb.follow(na.id)
        await nb.publish_many([f"from b {i}" for i in range(3)])
        return na.id_text, nb.id_text
    finally:
        await na.close()
        await nb.close()


def test_sync_at_a_terminal_draws_the_bars_and_the_summary(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    aid, _ = asyncio.run(_homes(a, b))
    server = Server(a)
    try:
        done = run_child([*FEEDLOG, "--home", str(b), "sync", server.address], env=_env(),
                         terminal=True, timeout=120)
        # piped (a script, CI): no bar and no escape codes, only the summary
        again = run_child([*FEEDLOG, "--home", str(b), "sync", server.address], env=_env(),
                          timeout=60)
    finally:
        assert server.stop() == 0
    shown = screen(done.output)
    assert done.returncode == 0, shown
    assert "Traceback" not in done.output
    # A's feed: its follow of B and the posts; B's: its follow of A and 3 posts
    incoming, outgoing = POSTS + 1, 4
    bars = [line for line in shown if line.startswith(("receiving", "sending"))]
    assert len(bars) == 2, shown
    # each with a rate, also the direction that moved everything in one batch (not "0 msg/s")
    assert re.match(rf"receiving .*━.* {incoming}/{incoming} +msgs +[1-9][\d,]* msg/s",
                    bars[0]), bars
    assert re.match(rf"sending .*━.* {outgoing}/{outgoing} +msgs +[1-9][\d,]* msg/s",
                    bars[1]), bars
    summary = shown[-1]
    assert re.fullmatch(
        rf"caught up with {aid[:14]}… at 127\.0\.0\.1:\d+: received {incoming} new of "
        rf"{incoming} messages in 1 feeds \([\d,]+ bytes in\), sent {outgoing} in 1 feeds "
        rf"\([\d,]+ bytes out\), [\d.]+ s", summary), summary
    assert done.peak_rss_kib > 0
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert "\x1b" not in again.output and "━" not in again.output
    assert again.output.startswith(f"caught up with {aid[:14]}")
    assert "received 0 new of 0 messages" in again.output
    assert js(b, "status")["messages"] == incoming + outgoing

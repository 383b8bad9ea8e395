"""feedlog/ptyrun.py: the screen model, and the child's own peak RSS."""

from __future__ import annotations

import sys

from feedlog.ptyrun import run, screen


def test_screen_replays_redraws_like_a_terminal() -> None:
    # what rich's live display sends: draw two lines, go back up, erase, draw them again
    out = ("\x1b[?25lrecv \x1b[32m 10/100\x1b[0m\r\nsend 0/4\r\x1b[2K\x1b[1A\x1b[2K"
           "recv \x1b[38;5;70m100/100\x1b[0m\r\nsend 4/4\r\n\x1b[?25hdone: 100 in\r\n\n")
    assert screen(out) == ["recv 100/100", "send 4/4", "done: 100 in"]
    assert screen("abcdef\rXY\n") == ["XYcdef"]  # CR returns without erasing
    assert screen("abcdef\rXY\x1b[K\n") == ["XY"]  # erase to the end of the line
    assert screen("a\x07b\x1b]0;title\x07c") == ["abc"]  # BEL and a title sequence: nothing
    assert screen("") == []


def test_run_reports_the_childs_own_peak_rss() -> None:
    """The child's peak, not ours: this process first grows to 256 MiB (ru_maxrss from wait4
    would hand that high-water mark on to every child it starts)."""
    ballast = bytearray(256 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    # the child holds its peak a moment: readings are 20 ms apart
    grow = ("import time; b = bytearray(64 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
            "time.sleep(0.3); print('ok')")
    big = run([sys.executable, "-c", grow], timeout=60)
    small = run([sys.executable, "-c", "print('ok')"], timeout=60)
    del ballast
    assert big.returncode == small.returncode == 0 and big.output == "ok\n"
    assert 64 * 1024 < big.peak_rss_kib < 128 * 1024, big.peak_rss_kib
    assert 0 < small.peak_rss_kib < 64 * 1024, small.peak_rss_kib
    assert small.children == big.children == 0
    spawn = ("import subprocess, sys; subprocess.run([sys.executable, '-c', " + repr(grow) + "])")
    parent = run([sys.executable, "-c", spawn], timeout=60)
    assert parent.returncode == 0 and parent.output == "ok\n" and parent.children == 1
    assert parent.peak_rss_kib < 64 * 1024 < parent.children_peak_rss_kib < 128 * 1024
    tty = run([sys.executable, "-c", "import sys; print(sys.stdout.isatty())"], terminal=True,
              timeout=60)
    assert tty.returncode == 0 and screen(tty.output) == ["True"]

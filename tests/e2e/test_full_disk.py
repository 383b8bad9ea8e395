"""A full disk and a read-only home, through the real `feedlog` command.

tests/store/test_contract.py already shows that a SqliteStore refuses a batch atomically when
``max_page_count`` is reached and accepts it once the cap is lifted. Here the whole program is
run against the real thing: where it may mount (root), the home lives on a small tmpfs that is
filled up or remounted read-only (always unmounted afterwards); otherwise the disk is simulated
with the ``max_store_bytes`` limit of config.toml and the read-only home with file modes (which
root ignores: root without the right to mount skips the two read-only tests). Each time the
command must fail with one line ``error[CODE]: ...`` (exit 4), nothing stored may change, and
the next run must work once the problem is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedlog.core.ids import feed_id_text
from tests.conftest import keypair
from tests.e2e.test_cli import FEEDLOG

ROOT = os.geteuid() == 0


def _can_mount() -> bool:
    """Root in a container may still lack the right to mount: try a tiny tmpfs."""
    if not ROOT:
        return False
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           capture_output=True, check=False)
        if p.returncode != 0:
            return False
        subprocess.run(["umount", d], check=False)
        return True


MOUNT = _can_mount()
FRIEND = feed_id_text(keypair("full-disk-friend").public)


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    return subprocess.run([*FEEDLOG, "--home", str(home), *args], capture_output=True,
                          text=True, input=stdin, env=env, timeout=60)


def ok(home: Path, *args: str, stdin: str | None = None) -> str:
    p = cli(home, *args, stdin=stdin)
    assert p.returncode == 0, p.stderr
    return p.stdout


def one_line_error(p: subprocess.CompletedProcess[str], code: str, status: int = 4) -> None:
    assert p.returncode == status, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error[{code}]: "), p.stderr
    assert "Traceback" not in p.stderr


def stored(home: Path) -> list[Any]:
    return list(json.loads(ok(home, "feed", "--json")))


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        if os.path.ismount(where):
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: closing has nothing left to write
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # Squeeze out the last blocks the buffered writes could not use.
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 512)
    return filler


def _start(home: Path) -> list[Any]:
    ok(home, "init")
    ok(home, "publish", "--stdin", stdin="".join(f"before {i}\n" for i in range(20)))
    before = stored(home)
    assert len(before) == 20
    return before


def test_full_disk(tmp_path: Path) -> None:
    if not MOUNT:  # without mounting, the store size limit stands in for the disk
        test_store_size_limit(tmp_path)
        return
    with tmpfs(tmp_path / "fs", "2m") as fs:
        home = fs / "home"
        before = _start(home)
        db = home / "feedlog.sqlite3"
        filler = fill(fs)
        # A write, a long write, a read and a check all fail cleanly on the full disk.
        one_line_error(cli(home, "publish", "lost"), "disk-full")
        p = cli(home, "publish", "--stdin", stdin="".join(f"more {i}\n" for i in range(500)))
        one_line_error(p, "disk-full")
        assert p.stdout == ""  # nothing acknowledged that was not stored
        one_line_error(cli(home, "verify"), "disk-full")
        saved = db.read_bytes()
        one_line_error(cli(home, "name", "Full"), "disk-full")
        assert db.read_bytes() == saved
        # A new identity on the full disk: no torn key file is left behind.
        p = cli(fs / "other", "init")
        assert p.returncode in (2, 4) and p.stderr.startswith(("error[disk-full]",
                                                               "error[home-unwritable]"))
        assert not (fs / "other" / "secret.json").exists()
        filler.unlink()
        # Space is back: everything that was stored is intact, and work goes on.
        assert stored(home) == before
        assert json.loads(ok(home, "verify", "--json"))["ok"]
        assert json.loads(ok(home, "publish", "after", "--json"))["seq"] == 21
        ok(fs / "other", "init")


def test_store_size_limit(tmp_path: Path) -> None:
    """The same through config.toml's max_store_bytes, which works without root too."""
    home = tmp_path / "home"
    before = _start(home)
    size = (home / "feedlog.sqlite3").stat().st_size
    (home / "config.toml").write_text(f"[limits]\nmax_store_bytes = {size}\n")
    p = cli(home, "publish", "--stdin", stdin="".join("x" * 4000 + "\n" for _ in range(200)))
    one_line_error(p, "disk-full")
    acked = [line.split()[0] for line in p.stdout.splitlines()]
    after = stored(home)
    assert after[:20] == before and [m["id"] for m in after[20:]] == acked
    assert json.loads(ok(home, "verify", "--json"))["ok"]
    (home / "config.toml").unlink()
    assert json.loads(ok(home, "publish", "after", "--json"))["seq"] == len(after) + 1


@contextlib.contextmanager
def read_only(home: Path) -> Iterator[None]:
    """Make ``home`` read-only: a read-only remount as root (root ignores file modes)."""
    if MOUNT:
        subprocess.run(["mount", "-o", "remount,ro", str(home.parent)], check=True)
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(home.parent)], check=True)
    else:
        home.chmod(0o500)
        try:
            yield
        finally:
            home.chmod(0o700)


needs_ro = pytest.mark.skipif(ROOT and not MOUNT, reason="root ignores file modes and may not "
                              "mount here: no way to make a home read-only")


@needs_ro
def test_read_only_home(tmp_path: Path) -> None:
    ctx = tmpfs(tmp_path / "fs", "2m") if MOUNT else contextlib.nullcontext(tmp_path)
    with ctx as base:
        home = base / "home"
        before = _start(home)
        db = home / "feedlog.sqlite3"
        saved = db.read_bytes()
        with read_only(home):
            for args in (("publish", "nope"), ("follow", FRIEND), ("name", "Stuck"),
                         ("publish", "--stdin")):
                one_line_error(cli(home, *args, stdin="a\nb\n"), "store-read-only")
            if MOUNT:
                # A read-only mount can still be read (opened as immutable).
                assert stored(home) == before
                assert json.loads(ok(home, "verify", "--json"))["ok"]
                one_line_error(cli(home, "publish", "still no"), "store-read-only")
            else:
                one_line_error(cli(home, "feed"), "store-read-only")
            assert db.read_bytes() == saved
        assert stored(home) == before
        assert json.loads(ok(home, "publish", "writable again", "--json"))["seq"] == 21
        assert json.loads(ok(home, "verify", "--json"))["ok"]


@needs_ro
def test_read_only_home_after_a_crash_is_never_read_stale(tmp_path: Path) -> None:
    """After a crash the WAL holds commits the store file lacks. On a read-only home SQLite
    reads through it when its index (-shm) survived; without the index, reading is refused
    rather than showing an old state. Once writable, every acknowledged message is there."""
    with (tmpfs(tmp_path / "fs", "4m") if MOUNT else contextlib.nullcontext(tmp_path)) as base:
        home = base / "home"
        _start(home)
        lines = base / "lines"
        lines.write_text("".join(f"crash {i}\n" for i in range(100_000)))
        with lines.open("rb") as stdin:
            proc = subprocess.Popen([*FEEDLOG, "--home", str(home), "publish", "--stdin"],
                                    stdin=stdin, stdout=subprocess.PIPE, start_new_session=True)
            assert proc.stdout is not None
            acked = [proc.stdout.readline().split()[0] for _ in range(5)]
            os.killpg(proc.pid, signal.SIGKILL)
            rest = proc.communicate()[0]
        acked += [line.split()[0] for line in rest.splitlines() if line.endswith(b")")]
        want = {a.decode() for a in acked}
        wal, shm = home / "feedlog.sqlite3-wal", home / "feedlog.sqlite3-shm"
        assert wal.stat().st_size > 0 and shm.exists()
        lines.unlink()
        with read_only(home):
            p = cli(home, "feed", "--json")
            if p.returncode == 0:
                assert want <= {m["id"] for m in json.loads(p.stdout)}
            else:
                one_line_error(p, "store-read-only")
        if MOUNT:
            shm.unlink()
            with read_only(home):
                one_line_error(cli(home, "feed"), "store-read-only")
        assert want <= {m["id"] for m in stored(home)}
        assert json.loads(ok(home, "verify", "--json"))["ok"]

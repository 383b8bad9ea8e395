"""Run a real command the way a person at a terminal does, and measure it (bench and e2e tests).

``run`` starts the command as a child process, optionally with a pseudo-terminal as its stdin,
stdout and stderr (so libraries that draw only on a terminal, like rich's progress bar, draw),
collects what it wrote, and follows its peak resident set: ``VmHWM`` of /proc/PID/status, read
every 20 ms while it runs (it never decreases, so the last reading is the peak up to the last
20 ms, when the program only exits; a peak held for less than 20 ms may be missed, which does
not matter for a sync whose peak is a plateau of seconds). Not ``ru_maxrss`` from ``wait4``:
Linux carries the spawning process's high-water mark across ``execve`` into the child's, so a
child started by a big process (a bench holding a million generated messages) would report the
parent's size. The child's own children (verify worker processes) are looked for every 0.25 s
and their peaks reported apart, summed.

``screen`` replays terminal output on a tiny screen model (carriage return, newline, cursor up,
erase line; every other escape sequence is dropped) and returns the lines left on the screen,
which is what the person sees once the program has ended.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SAMPLE = 0.02  # seconds between readings of the child's VmHWM
SCAN = 0.25  # seconds between looks for the child's own children

# CSI (ESC [ params final), OSC (ESC ] ... BEL or ST), charset selection, or any other pair
_ESCAPE = re.compile(
    r"\x1b(?:\[([0-9;?]*)([A-Za-z])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|.)")


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    output: str  # stdout (without a terminal), or everything the terminal received
    stderr: str  # without a terminal only
    seconds: float
    peak_rss_kib: int  # the child's own peak resident set (VmHWM, KiB)
    children_peak_rss_kib: int = 0  # the sum of its own children's peaks (e.g. worker processes)
    children: int = 0  # how many children it started (seen while they ran)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, terminal: bool = False,
        columns: int = 120, rows: int = 40, timeout: float = 600.0) -> Finished:
    """Run ``argv`` to its end; raise TimeoutError (after killing it) past ``timeout``."""
    if terminal:
        return _run_pty(argv, env, columns, rows, timeout)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None)
    assert proc.stdout is not None and proc.stderr is not None
    out, peak, kids = _collect(proc, [proc.stdout.fileno(), proc.stderr.fileno()],
                               t0 + timeout)
    code = _reap(proc)
    return Finished(code, out[0].decode(errors="replace"), out[1].decode(errors="replace"),
                    time.perf_counter() - t0, peak, sum(kids.values()), len(kids))


def _run_pty(argv: Sequence[str], env: Mapping[str, str] | None, columns: int, rows: int,
             timeout: float) -> Finished:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    child_env = dict(env if env is not None else os.environ)
    child_env.update(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave,
                                env=child_env, start_new_session=True)
    finally:
        os.close(slave)
    try:
        out, peak, kids = _collect(proc, [master], t0 + timeout)
    finally:
        os.close(master)
    code = _reap(proc)
    return Finished(code, out[0].decode(errors="replace"), "", time.perf_counter() - t0, peak,
                    sum(kids.values()), len(kids))


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM of a running process (KiB), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (a scan of /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                    out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _collect(proc: subprocess.Popen[bytes], fds: list[int],
             deadline: float) -> tuple[list[bytes], int, dict[int, int]]:
    """Read every fd to its end (EOF, or EIO once a terminal's last writer closed it), and
    the peak RSS of the child and of each of its children, until it has exited."""
    parts: dict[int, list[bytes]] = {fd: [] for fd in fds}
    open_fds = set(fds)
    peak, sampled, scanned = 0, 0.0, 0.0
    kids: dict[int, int] = {}
    while open_fds or proc.poll() is None:
        left = deadline - time.perf_counter()
        if left <= 0:
            proc.kill()
            _reap(proc)
            raise TimeoutError(f"{argv_text(proc)} did not end in time")
        if time.perf_counter() - scanned >= SCAN:  # workers live long: a slow scan finds them
            scanned = time.perf_counter()
            for kid in children_of(proc.pid):
                kids.setdefault(kid, 0)
        if time.perf_counter() - sampled >= SAMPLE:
            peak, sampled = max(peak, peak_rss_kib(proc.pid) or 0), time.perf_counter()
            for kid, seen in kids.items():
                kids[kid] = max(seen, peak_rss_kib(kid) or 0)
        if not open_fds:  # it closed its output but runs on
            time.sleep(SAMPLE)
            continue
        ready, _, _ = select.select(list(open_fds), [], [], min(left, SAMPLE))
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if data:
                parts[fd].append(data)
            else:
                open_fds.discard(fd)
    return [b"".join(parts[fd]) for fd in fds], peak, {k: v for k, v in kids.items() if v}


def argv_text(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return " ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)


def _reap(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait()


def screen(output: str) -> list[str]:
    """The lines a terminal shows after receiving ``output`` (trailing blank lines dropped)."""
    lines: list[str] = [""]
    row = col = 0

    def text(chunk: str) -> None:
        nonlocal row, col
        for ch in chunk:
            if ch == "\r":
                col = 0
            elif ch == "\n":
                row, col = row + 1, 0
                if row == len(lines):
                    lines.append("")
            elif ch >= " ":  # other control characters (BEL, backspace) are dropped
                line = lines[row].ljust(col)
                lines[row] = line[:col] + ch + line[col + 1 :]
                col += 1

    pos = 0
    for m in _ESCAPE.finditer(output):
        text(output[pos : m.start()])
        pos = m.end()
        params, final = m.group(1), m.group(2)
        n = int(params) if params and params.isdigit() else 1
        if final == "A":
            row = max(0, row - n)
        elif final == "K" and params == "2":
            lines[row] = ""
        elif final == "K" and params in ("", "0"):
            lines[row] = lines[row][:col]
        elif final == "G":
            col = max(0, n - 1)
    text(output[pos:])
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.rstrip() for line in lines]

"""`make demo`: the real `feedlog` command, run in throw-away homes, step by step.

What it shows today: identities, publishing, names, following, reading feeds, status and verify,
what happens with bad input, and carrying feeds from one node to another through a stick folder
(export/import). Replication (serve/sync) and group conversations are not built yet; the demo
says so instead of pretending.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def _feedlog() -> list[str]:
    script = Path(sys.executable).with_name("feedlog")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def step(home: Path, *args: str, expect_fail: bool = False) -> str:
    shown = " ".join(["feedlog", "--home", home.name, *(shlex.quote(a) for a in args)])
    print(f"\n$ {shown}")
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    p = subprocess.run([*_feedlog(), "--home", str(home), *args], capture_output=True,
                       text=True, env=env)
    out = (p.stdout + p.stderr).rstrip()
    print("  " + out.replace("\n", "\n  "))
    if (p.returncode != 0) != expect_fail:
        raise SystemExit(f"demo step failed (exit {p.returncode})")
    return p.stdout.strip()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="feedlog-demo-") as tmp:
        alice, bob = Path(tmp) / "alice", Path(tmp) / "bob"
        print(f"feedlog demo in {tmp} (deleted afterwards)")
        step(alice, "init")
        step(bob, "init")
        bob_id = step(bob, "whoami")
        step(alice, "name", "Alice")
        step(bob, "name", "Bob")
        step(alice, "publish", "Hello from Alice's own append-only feed")
        step(alice, "follow", bob_id)
        step(alice, "publish", "Nobody else can write here; anyone can check it.")
        step(alice, "following")
        step(alice, "feed")
        step(alice, "feed", "--limit", "1", "--json")
        step(alice, "status")
        step(alice, "verify")
        print("\nBad input gets one line with a stable code, and nothing stored is touched:")
        step(alice, "follow", "feed_not-a-real-id", expect_fail=True)
        (alice / "secret.json").chmod(0o644)
        step(alice, "publish", "with a readable key", expect_fail=True)
        (alice / "secret.json").chmod(0o600)
        step(alice, "verify")
        print("\nA USB stick (here a folder): Alice exports, Bob follows her and imports.")
        stick = Path(tmp) / "stick"
        stick.mkdir()
        alice_id = step(alice, "whoami")
        step(alice, "export", str(stick))
        step(bob, "follow", alice_id)
        step(bob, "import", str(stick), "--dry-run")
        step(bob, "import", str(stick))
        step(bob, "feed", alice_id, "--limit", "2")
        step(bob, "bundle", "verify", str(stick))
        print("\nNot built yet (open issues): serve/sync between two nodes, LAN discovery, "
              "group conversations in the CLI.")


if __name__ == "__main__":
    main()

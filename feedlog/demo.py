"""`make demo`: the real `feedlog` command, run in throw-away homes, step by step.

What it shows today: identities, publishing, names, following, reading feeds, status and verify,
what happens with bad input, carrying feeds from one node to another through a stick folder
(export/import), two nodes syncing over loopback (serve/sync), and a group conversation across
three homes that replicate by syncing over loopback.
"""

from __future__ import annotations

import asyncio
import json
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


def sync(client: Path, server: Path) -> None:
    """``client`` syncs with ``server`` over loopback, through the library's replication (a
    real handshake and vector exchange on a TCP socket, both ways), as `feedlog sync` does
    against `feedlog serve`; in this process, so the demo stays quick."""
    from feedlog import Node
    from feedlog.net.replicator import Replicator
    from feedlog.net.transport import Address

    async def go() -> str:
        a, b = await Node.open(server), await Node.open(client)
        served, connecting = Replicator(a), Replicator(b)
        listener = await served.serve("127.0.0.1", 0)
        try:
            port = listener.sockets[0].getsockname()[1]
            res = await connecting.connect(Address("127.0.0.1", port, a.id))
            if res.error is not None:
                raise SystemExit(f"demo sync failed: {res.error} {res.message}")
            # the server takes in what the client sent before it says synced; let its side of
            # the link finish (it places new group posts) before the homes are closed
            listener.close()
            await listener.wait_closed()
            await served.wait_links(10)
            return f"received {res.added}, sent {res.sent}"
        finally:
            served.close()
            connecting.close()
            await a.close()
            await b.close()

    print(f"\n(sync {client.name} <-> {server.name} over loopback: {asyncio.run(go())})")


def groups_demo(tmp: Path, alice: Path, bob: Path, alice_id: str, bob_id: str) -> None:
    print("\nA group conversation across three homes: each post lives in its author's feed,"
          "\nand the homes replicate by syncing over loopback.")
    carol = tmp / "carol"
    step(carol, "init")
    step(carol, "name", "Carol")
    carol_id = step(carol, "whoami")
    step(carol, "follow", alice_id)
    step(carol, "follow", bob_id)
    step(alice, "follow", carol_id)
    step(bob, "follow", carol_id)
    group = step(alice, "group", "new", "Weekend trip", "--member", bob_id,
                 "--member", carol_id)
    step(alice, "post", group, "Where shall we go?")
    sync(bob, alice)
    sync(carol, alice)
    step(bob, "groups")
    asked = step(bob, "post", group, "Mountains!", "--json")
    step(carol, "post", group, "The seaside, surely.")
    sync(alice, bob)
    step(alice, "reply", json.loads(asked)["id"], "Mountains it is, then.")
    stick = tmp / "stick-alice"
    stick.mkdir()
    print("\nCarol gets Alice's feed on a stick, but nothing new from Bob: her view says what "
          "is missing, and from whom.")
    step(alice, "export", str(stick), "--feed", alice_id)
    step(carol, "import", str(stick))
    step(carol, "show", group)
    print("\nA sync with Bob fills the gap; two more and every home holds every post.")
    sync(carol, bob)
    sync(alice, carol)
    sync(bob, alice)
    print("\nEvery home shows the same conversation in the same order:")
    for home in (alice, bob, carol):
        step(home, "show", group)


def serve_sync_demo(alice: Path, bob: Path) -> None:
    """Two nodes over loopback: Alice serves, Bob syncs (the handshake, vectors, both ways)."""
    print("\nOver the network (here loopback): Alice serves, Bob syncs both ways.")
    step(alice, "follow", step(bob, "whoami"))
    step(bob, "publish", "Bob's news, travelling by TCP")
    env = {k: v for k, v in os.environ.items() if k != "FEEDLOG_HOME"}
    shown = "feedlog --home alice serve --host 127.0.0.1 --port 0 --json"
    print(f"\n$ {shown} &")
    server = subprocess.Popen([*_feedlog(), "--home", str(alice), "serve", "--host",
                               "127.0.0.1", "--port", "0", "--json"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        print("  " + line.strip())
        address = json.loads(line)["address"]
        step(bob, "sync", address)
        step(bob, "sync", address, "--json")
        alice_id = step(alice, "whoami")
        step(bob, "feed", alice_id, "--limit", "1")
        step(alice, "feed", step(bob, "whoami"), "--limit", "1")
    finally:
        server.terminate()
        server.wait(10)
    print("\nTwo real machines on one LAN: run `feedlog serve --lan` on both (after each "
          "follows the other); they find each other by mDNS and sync live, no address needed. "
          "`feedlog peers` lists who was found; `feedlog doctor` explains why nobody is.")


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
        serve_sync_demo(alice, bob)
        groups_demo(Path(tmp), alice, bob, alice_id, bob_id)
    print("\nTwo real machines on one Wi-Fi: run `feedlog init` and `feedlog follow OTHER_ID` on"
          "\neach, then `feedlog serve --lan` on both. They find each other (mDNS, no address"
          "\ntyped), sync, and stay in sync live; `feedlog peers` shows them, `feedlog doctor`"
          "\nexplains why nobody is found (another --network-key, blocked multicast, ...).")


if __name__ == "__main__":
    main()

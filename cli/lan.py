"""`feedlog peers` and `feedlog doctor` (README "LAN")."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from cli.main import Ctx, JsonOpt, _when, fail, out_json, run
from feedlog import Node
from feedlog.core.errors import FeedlogError, LocalError
from feedlog.core.ids import FeedId, feed_id_text
from feedlog.identity import KEY_FILE, read_key
from feedlog.net.transport import DEFAULT_NETWORK_KEY, DEFAULT_PORT
from feedlog.peers import list_peers


def network_key_arg(text: str | None) -> bytes:
    """The network key from ``--network-key`` / ``FEEDLOG_NETWORK_KEY`` (64 hex characters)."""
    if not text:
        return DEFAULT_NETWORK_KEY
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        fail(LocalError("a network key is 64 hex characters (32 bytes)", code="bad-network-key"))
    return key


NetworkKeyOpt = Annotated[
    str | None,
    typer.Option("--network-key", envvar="FEEDLOG_NETWORK_KEY",
                 help="Network key, 64 hex characters (default: feedlog's default network)."),
]


def peers(json_out: JsonOpt = False) -> None:
    """List peers seen on the LAN or added by hand: name, address, last seen and synced, state."""

    async def go(node: Node) -> list[dict[str, Any]]:
        rows = []
        for p in await list_peers(node.store):
            rows.append({
                "id": feed_id_text(p.feed), "name": await node.name_of(p.feed),
                "host": p.host or None, "port": p.port or None, "source": p.source,
                "last_seen": p.last_seen, "last_synced": p.last_synced, "state": p.state,
            })
        return rows

    rows = run(go)
    if json_out:
        out_json(rows)
        return
    if not rows:
        typer.echo("no peers known yet (feedlog serve --lan finds them; see feedlog doctor)")
    for r in rows:
        addr = f"{r['host']}:{r['port']}" if r["host"] else "-"
        seen = _when(r["last_seen"]) if r["last_seen"] else "never"
        synced = _when(r["last_synced"]) if r["last_synced"] else "never"
        typer.echo(f"{r['id']}  {r['name'] or '-'}  {addr}  seen {seen}  synced {synced}  "
                   f"{r['state']}")


def doctor(
    json_out: JsonOpt = False,
    network_key: NetworkKeyOpt = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="The port serve would listen on (0: skip).")]
    = DEFAULT_PORT,
    wait: Annotated[float, typer.Option("--wait", min=0.0,
                                        help="Seconds to browse the LAN.")] = 3.0,
    interface: Annotated[list[str] | None, typer.Option(
        "--interface", help="Browse only on this IPv4 address (repeatable).")] = None,
) -> None:
    """Explain why LAN discovery finds nobody. Exit 1 when a finding is an error."""
    from feedlog.doctor import diagnose, gather

    key = network_key_arg(network_key)
    feed: FeedId | None
    try:
        feed = FeedId(read_key(Ctx.home / KEY_FILE).public)
    except FeedlogError:
        feed = None
    try:
        facts = asyncio.run(gather(key, feed, port, wait, interface or None))
    except FeedlogError as exc:
        fail(exc)
        raise
    findings = diagnose(facts)
    if json_out:
        out_json({"ok": all(f.level != "error" for f in findings),
                  "findings": [{"code": f.code, "level": f.level, "message": f.message}
                               for f in findings]})
    else:
        for f in findings:
            typer.echo(f"{f.level:5}  [{f.code}] {f.message}")
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(peers)
    app.command()(doctor)

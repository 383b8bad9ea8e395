"""`feedlog serve` and `feedlog sync` (spec/replication.md): replication over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cli.main import Ctx, JsonOpt, fail, out_json
from feedlog import Node
from feedlog.core.errors import FeedlogError, LocalError
from feedlog.lan import DEFAULT_REANNOUNCE, DEFAULT_TTL
from feedlog.net.lan_sync import LanSync
from feedlog.net.replicator import Link, NetConfig, Replicator, SyncResult
from feedlog.net.transport import DEFAULT_PORT, Address
from feedlog.net.watch import StoreWatcher
from feedlog.peers import note_seen, note_state


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(sync)


def _config(node: Node) -> NetConfig:
    """The node's limits (config.toml) with the network key chosen on the command line."""
    return NetConfig.from_limits(node.limits, network_key=Ctx.network_key)


def _local_ip() -> str:
    """The address other machines most likely reach us at (no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        ip = str(s.getsockname()[0])
        if not ip.startswith("0."):
            return ip
    return "127.0.0.1"


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{rate(task) or 0:>8,.0f} msg/s")


def rate(task: Task) -> float | None:
    """Messages per second: rich's recent speed while it runs, its speed at the end once done.
    rich needs two updates to know a speed: a direction that moved everything at once (one
    batch between two refreshes) has none, and gets its average since it started instead."""
    speed = task.finished_speed or task.speed
    if speed is None and task.completed:
        took = task.finished_time if task.finished else task.elapsed
        if took:
            speed = task.completed / took
    return speed


def _summary(r: SyncResult) -> str:
    state = "caught up" if r.caught_up else f"ended early ({r.error})"
    return (f"{state} with {r.peer[:14]}… at {r.remote}: received {r.added} new of "
            f"{r.received} messages in {r.feeds_in} feeds ({r.bytes_in:,} bytes in), "
            f"sent {r.sent} in {r.feeds_out} feeds ({r.bytes_out:,} bytes out), "
            f"{r.seconds:.2f} s")


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port (0: any free port).")] = DEFAULT_PORT,
    json_out: JsonOpt = False,
    lan: Annotated[bool, typer.Option("--lan", help="Find peers of this network on the LAN "
                                                    "(mDNS) and sync with them live, no address "
                                                    "needed.")] = False,
    lan_ttl: Annotated[int, typer.Option("--lan-ttl", min=1, hidden=True,
                                         help="TTL of our mDNS records (s).")] = DEFAULT_TTL,
    lan_reannounce: Annotated[float, typer.Option(
        "--lan-reannounce", min=0.0, hidden=True,
        help="Seconds between mDNS re-announcements.")] = DEFAULT_REANNOUNCE,
    ping_interval: Annotated[float, typer.Option(
        "--ping-interval", min=0.1, hidden=True,
        help="Live sessions ping this often (s).")] = NetConfig.ping_interval,
    idle_timeout: Annotated[float | None, typer.Option(
        "--idle-timeout", min=0.2, hidden=True,
        help="A live peer silent this long is dropped (s; default: the home's limits).")]
    = None,
) -> None:
    """Accept peers and replicate with them live, until interrupted (Ctrl-C).

    With --lan, also advertise on the LAN and connect to the peers of the same network key."""

    def emit(event: dict[str, Any], text: str) -> None:
        if json_out:
            typer.echo(json.dumps(event))
        else:
            typer.echo(text)
        sys.stdout.flush()

    async def go() -> None:
        node = await Node.open(Ctx.home)
        cfg = _config(node)
        cfg.ping_interval = ping_interval
        if idle_timeout is not None:
            cfg.idle_timeout = idle_timeout
        if cfg.idle_timeout <= cfg.ping_interval:
            await node.close()
            raise LocalError("the idle timeout must be longer than --ping-interval",
                             code="bad-timeout")
        rep = Replicator(node, cfg)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

        pending: set[asyncio.Task[None]] = set()

        def ended(link: Link) -> None:
            r = link.result
            emit({"event": "peer-done", **r.as_json()}, _summary(r))
            state = "synced" if r.caught_up else "disconnected"
            task = loop.create_task(note_state(node.store, link.peer, state,
                                               synced=r.caught_up))
            pending.add(task)
            task.add_done_callback(pending.discard)

        rep.on_link_end = ended
        lan_sync: LanSync | None = None

        def inbound_progress(link: Link) -> None:
            if lan_sync is not None:
                lan_sync.inbound_progress(link)

        def ended_lan(link: Link) -> None:
            if lan_sync is not None:
                lan_sync.inbound_ended(link)
            ended(link)

        rep.on_link_end = ended_lan
        try:
            server = await rep.serve(host, port, on_progress=inbound_progress)
        except OSError as exc:
            await node.close()
            raise LocalError(f"cannot listen on {host}:{port}: {exc.strerror}",
                             code="port-taken" if exc.errno == 98 else "listen-failed"
                             ) from None
        bound = server.sockets[0].getsockname()[1]
        shown = _local_ip() if host in ("0.0.0.0", "", "::") else host
        addr = Address(shown, bound, node.id)
        emit({"event": "serving", "address": str(addr), "id": node.id_text, "port": bound},
             f"serving {node.id_text}\naddress: {addr}\n"
             f"(on another machine: feedlog sync {addr})")
        # what `feedlog publish` (another process) writes here reaches live peers; LanSync has
        # a watcher of its own
        watcher = None if lan else StoreWatcher(rep)
        try:
            if watcher is not None:
                await watcher.start()
            if lan:
                lan_sync = LanSync(rep, bound, on_event=lambda e: emit(e, _lan_text(e)),
                                   ttl=lan_ttl, reannounce=lan_reannounce)
                try:
                    await lan_sync.start()
                except FeedlogError:
                    await lan_sync.stop()
                    lan_sync = None
                    raise
                emit({"event": "lan", "instance": lan_sync.discovery.label, "port": bound},
                     f"on the LAN as {lan_sync.discovery.label} (port {bound}); "
                     "looking for peers of this network")
            await stop.wait()
        finally:
            if watcher is not None:
                await watcher.stop()
            if lan_sync is not None:
                await lan_sync.stop()
            server.close()
            for link in list(rep.links):
                link.fail("shutting-down", "the server is shutting down")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
            # each link ends (and notes its state in the peer book) before the store closes
            await rep.wait_links(5)
            rep.close()
            if pending:
                await asyncio.wait(pending, timeout=5)
            await node.close()

    try:
        asyncio.run(go())
    except FeedlogError as exc:
        fail(exc)


def _lan_text(e: dict[str, Any]) -> str:
    peer = str(e.get("peer", ""))[:14] + "…"
    what = e["event"].removeprefix("peer-")
    if what == "found":
        how = "we dial" if e.get("dial") else "it dials us"
        return f"found {peer} at {e['host']}:{e['port']} ({how})"
    if what == "connected":
        return f"connected to {peer}" + (" (it dialled us)" if e.get("inbound") else "")
    if what == "synced":
        return f"synced with {peer}: received {e['received']}, sent {e['sent']}; now live"
    return f"{what}: {peer}"


def sync(
    address: Annotated[str, typer.Argument(metavar="ADDRESS",
                                           help="feedlog://HOST:PORT/FEED_ID, as serve prints")],
    live: Annotated[bool, typer.Option("--live", help="Stay connected and push/receive new "
                                                      "messages until interrupted.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Replicate with a server: pull and push until both sides are caught up (exit 0)."""
    try:
        addr = Address.parse(address)
    except FeedlogError as exc:
        fail(exc)
        raise
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("msgs"), RateColumn(), TimeRemainingColumn(),
        console=console, transient=False, disable=json_out or not console.is_terminal,
    )
    tasks: dict[str, TaskID] = {}
    planned = False
    t0 = time.monotonic()

    def on_progress(link: Link) -> None:
        nonlocal planned
        r = link.result
        if link.session is None or link.session.plan is None:
            return
        if not planned:  # a bar for each direction that has something to move
            planned = True
            if r.incoming:
                tasks["in"] = progress.add_task("receiving", total=r.incoming)
            if r.outgoing:
                tasks["out"] = progress.add_task("sending  ", total=r.outgoing)
            if tasks and not progress.disable:
                progress.start()
        if "in" in tasks:
            progress.update(tasks["in"], completed=min(r.received, r.incoming))
        if "out" in tasks:
            progress.update(tasks["out"], completed=min(r.sent, r.outgoing))

    async def go() -> SyncResult:
        node = await Node.open(Ctx.home)
        rep = Replicator(node, _config(node))
        watcher = StoreWatcher(rep) if live else None  # `publish` beside a live sync
        # The peer book takes the address once the handshake proved that feed is there (a
        # wrong address must not replace a good one); a failure marks a known peer only.
        noted: list[asyncio.Task[None]] = []

        async def connected() -> None:
            await note_seen(node.store, addr.feed, addr.host, addr.port, "manual")
            await note_state(node.store, addr.feed, "connected")

        def on_link(link: Link) -> None:
            noted.append(asyncio.get_running_loop().create_task(connected()))

        try:
            if watcher is not None:
                await watcher.start()
            try:
                result = await rep.connect(addr, live=live, on_progress=on_progress,
                                           on_link=on_link)
            except FeedlogError as exc:
                known = {p.feed for p in await node.store.peers()}
                if exc.code != "self-sync" and addr.feed in known:
                    await note_state(node.store, addr.feed, "unreachable")
                raise
            except asyncio.CancelledError:  # Ctrl-C
                if noted:
                    await asyncio.gather(*noted, return_exceptions=True)
                    await note_state(node.store, addr.feed, "disconnected")
                raise
            await asyncio.gather(*noted)
            await note_state(node.store, addr.feed, "synced" if result.caught_up
                             else "disconnected", synced=result.caught_up)
            return result
        finally:
            if watcher is not None:
                await watcher.stop()
            rep.close()
            await node.close()

    try:
        result = asyncio.run(go())
    except FeedlogError as exc:
        progress.stop()
        fail(exc)
        raise
    except KeyboardInterrupt:
        progress.stop()  # the bar's line ends and the cursor is shown again
        typer.echo("interrupted: what was stored is kept; the next sync goes on from there",
                   err=True)
        raise typer.Exit(130) from None
    progress.stop()
    result.seconds = time.monotonic() - t0
    if json_out:
        out_json(result.as_json())
    else:
        typer.echo(_summary(result))
        if result.rejected:
            typer.echo("rejected: " + ", ".join(f"{c} x{n}" for c, n in
                                                 sorted(result.rejected.items())))
        if result.forks:
            typer.echo(f"fork proofs learned: {result.forks} (see feedlog status)")
    if not result.caught_up and not live:
        typer.echo(f"error[{result.error}]: {result.message}", err=True)
        raise typer.Exit(3)
    if live and result.error is not None:  # the live connection ended, and not by Ctrl-C
        typer.echo(f"error[{result.error}]: the live connection ended: {result.message}",
                   err=True)
        raise typer.Exit(3)

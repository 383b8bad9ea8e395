"""The `feedlog` command (typer). It calls feedlog.Node only and maps error codes to exit codes:
1 unexpected, 2 a local/user error, 3 a remote or file error, 4 a store error. A user error is
one line on stderr, ``error[CODE]: message``, never a traceback."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from feedlog import Node
from feedlog.core.errors import FeedlogError, LocalError, RemoteError, StoreError
from feedlog.core.ids import FeedId, feed_id_text, msg_id_text, parse_feed_id
from feedlog.core.message import Message
from feedlog.identity import default_home, read_key
from feedlog.net.transport import DEFAULT_NETWORK_KEY, parse_network_key

app = typer.Typer(
    name="feedlog",
    help="Per-author append-only signed logs, replicated over TCP, LAN and USB sticks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


class Ctx:
    home: Path = default_home()
    network_key: bytes = DEFAULT_NETWORK_KEY


def _home_callback(
    home: Annotated[
        Path | None,
        typer.Option("--home", envvar="FEEDLOG_HOME",
                     help="Node home folder (default: the user's data directory)."),
    ] = None,
    network_key: Annotated[
        str | None,
        typer.Option("--network-key", envvar="FEEDLOG_NETWORK_KEY", metavar="HEX",
                     help="32-byte key (64 hex) of a private network; peers with another key "
                          "cannot connect. Default: feedlog's public network."),
    ] = None,
) -> None:
    if home is not None:
        Ctx.home = home.expanduser()
    if network_key is not None:
        try:
            Ctx.network_key = parse_network_key(network_key)
        except FeedlogError as exc:
            fail(exc)


app.callback()(_home_callback)


def fail(exc: FeedlogError) -> None:
    typer.echo(f"error[{exc.code}]: {exc.message}", err=True)
    if isinstance(exc, LocalError):
        raise typer.Exit(2)
    if isinstance(exc, RemoteError):
        raise typer.Exit(3)
    if isinstance(exc, StoreError):
        raise typer.Exit(4)
    raise typer.Exit(1)


def run(fn: Callable[[Node], Awaitable[T]]) -> T:
    """Open the node, run ``fn``, close it; turn feedlog errors into one line and an exit code."""

    async def go() -> T:
        node = await Node.open(Ctx.home)
        try:
            return await fn(node)
        finally:
            await node.close()

    try:
        return asyncio.run(go())
    except FeedlogError as exc:
        fail(exc)
        raise  # unreachable: fail() always raises


def feed_arg(text: str) -> FeedId:
    try:
        return parse_feed_id(text)
    except FeedlogError as exc:
        fail(exc)
        raise


def out_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=1, ensure_ascii=False))


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": msg_id_text(m.id),
        "author": feed_id_text(m.author),
        "seq": m.seq,
        "previous": None if m.previous is None else msg_id_text(m.previous),
        "timestamp": m.timestamp,
        "type": m.type,
        "content": _jsonable(m.value),
    }


def _jsonable(v: Any) -> Any:
    """Content as JSON: 32-byte values become feed ids when the key says so, else hex."""
    if isinstance(v, dict):
        return {k: (feed_id_text(x) if k == "feed" and isinstance(x, bytes) and len(x) == 32
                    else _jsonable(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    return v


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone().strftime(
        "%Y-%m-%d %H:%M")


def describe(m: Message, names: dict[FeedId, str]) -> str:
    v = m.value
    if v is None:
        return "(content not held)"
    t = v.get("type")
    if t == "post":
        return str(v.get("text", ""))
    if t in ("follow", "unfollow", "block", "unblock") and isinstance(v.get("feed"), bytes):
        target = FeedId(v["feed"])
        label = names.get(target)
        return f"{t}s {feed_id_text(target)}" + (f" ({label})" if label else "")
    if t == "about":
        return f"is now called {v.get('name')!r}"
    return f"({t} message)"


@app.command()
def init(
    restore: Annotated[Path | None, typer.Option(
        "--restore", metavar="KEYFILE",
        help="Bring in an existing key (a `feedlog key export` file). The node starts fenced: "
             "no publishing until your feed is fetched by sync or import.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a new identity (or restore one) and an empty store in the home folder."""

    async def go() -> Node:
        keys = None if restore is None else read_key(restore.expanduser())
        return await Node.init(Ctx.home, keys=keys)

    try:
        node = asyncio.run(go())
    except FeedlogError as exc:
        fail(exc)
        raise
    asyncio.run(node.close())
    if json_out:
        out_json({"id": node.id_text, "home": str(Ctx.home), "fenced": restore is not None})
    elif restore is None:
        typer.echo(f"created identity {node.id_text}\nhome: {Ctx.home}")
    else:
        typer.echo(f"restored identity {node.id_text}\nhome: {Ctx.home}\n"
                   "fenced: publishing waits until `feedlog sync` or `feedlog import` has "
                   "fetched your feed (or `feedlog unfence --confirm`)")


@app.command()
def whoami(json_out: JsonOpt = False) -> None:
    """Print this node's feed id."""

    async def go(node: Node) -> tuple[str, str | None]:
        return node.id_text, await node.name_of(node.id)

    ident, name = run(go)
    if json_out:
        out_json({"id": ident, "name": name})
    else:
        typer.echo(ident)


def _published(m: Message, json_out: bool) -> None:
    if json_out:
        out_json({"id": msg_id_text(m.id), "seq": m.seq})
    else:
        typer.echo(f"{msg_id_text(m.id)} (seq {m.seq})")


@app.command()
def publish(
    text: Annotated[str | None, typer.Argument(show_default=False)] = None,
    stdin: Annotated[bool, typer.Option(
        "--stdin", help="Publish one post per input line (blank lines skipped); print each id "
        "as soon as that post is stored durably.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Publish a post to your feed."""
    if stdin and text is None:
        run(lambda node: _publish_lines(node, json_out))
        return
    if stdin or text is None:
        fail(LocalError("give the TEXT to publish, or --stdin", code="usage"))
        return
    post: str = text
    _published(run(lambda node: node.publish(post)), json_out)


async def _publish_lines(node: Node, json_out: bool) -> None:
    for line in sys.stdin:
        text = line.rstrip("\r\n")
        if text:
            m = await node.publish(text)  # one committed transaction per post
            if json_out:
                typer.echo(json.dumps({"id": msg_id_text(m.id), "seq": m.seq}))
            else:
                _published(m, False)


def _contact_command(kind: str, doc: str) -> None:
    def command(feed: str, json_out: JsonOpt = False) -> None:
        f = feed_arg(feed)

        async def go(node: Node) -> Message:
            method: Callable[[FeedId], Awaitable[Message]] = getattr(node, kind)
            return await method(f)

        _published(run(go), json_out)

    command.__doc__ = doc
    app.command(name=kind)(command)


_contact_command("follow", "Follow a feed (a message in your feed, so it replicates).")
_contact_command("unfollow", "Stop following a feed.")
_contact_command("block", "Block a feed: it is neither taken from nor sent to anyone.")
_contact_command("unblock", "Lift a block.")


@app.command()
def name(new_name: Annotated[str, typer.Argument(metavar="NAME")],
         json_out: JsonOpt = False) -> None:
    """Set your display name (an 'about' message)."""
    _published(run(lambda node: node.set_name(new_name)), json_out)


@app.command()
def following(json_out: JsonOpt = False) -> None:
    """List the feeds you follow, with their names and how far you have them."""

    async def go(node: Node) -> list[dict[str, Any]]:
        rows = []
        for f in await node.following():
            info = await node.feed_info(f)
            rows.append({"id": feed_id_text(f), "name": info.name if info else None,
                         "seq": info.seq if info else 0,
                         "forked": info is not None and info.forked_seq is not None})
        return rows

    rows = run(go)
    if json_out:
        out_json(rows)
        return
    if not rows:
        typer.echo("you follow nobody yet: feedlog follow FEED_ID")
    for r in rows:
        extra = " FORKED" if r["forked"] else ""
        typer.echo(f"{r['id']}  {r['name'] or '-'}  seq {r['seq']}{extra}")


@app.command()
def feed(
    feed_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1,
                                              help="Only the last N messages.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a feed (yours by default), oldest first."""
    author = feed_arg(feed_id) if feed_id else None

    async def go(node: Node) -> tuple[list[Message], dict[FeedId, str], dict[str, Any] | None]:
        msgs = await node.feed(author, limit=limit)
        fork = await node.fork_info(author or node.id)
        names: dict[FeedId, str] = {}
        for f in {m.author for m in msgs} | {
            FeedId(m.value["feed"]) for m in msgs
            if m.value and isinstance(m.value.get("feed"), bytes)
        }:
            n = await node.name_of(f)
            if n:
                names[f] = n
        return msgs, names, fork

    msgs, names, fork = run(go)
    if json_out:
        out_json([{**message_json(m), "fork": fork} for m in msgs])
        return
    if fork is not None:
        typer.echo(fork_text(fork))
    if not msgs:
        typer.echo("(no messages)")
    for m in msgs:
        who = names.get(m.author) or feed_id_text(m.author)[:14] + "…"
        typer.echo(f"#{m.seq:<5} {_when(m.timestamp)}  {who}: {describe(m, names)}")


def fork_text(f: dict[str, Any], lead: str = "FORKED: ") -> str:
    """A forked feed in plain words, from Node.fork_info."""
    pad = " " * len(lead)
    ids = f["ids"]
    pair = (f"\n{pad}seq {f['seqs'][0]}: {ids[0]}\n{pad}seq {f['seqs'][1]}: {ids[1]}"
            if ids else "")
    return (f"{lead}{f['feed']} at seq {f['seq']}: its author signed two different "
            f"messages ({f['kind']}){pair}\n{pad}frozen at seq {f['frozen_at']}: nothing "
            f"later is accepted ({f['proofs']} proof(s) held)")


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Summarise this node: identity, feeds, messages, forks."""
    st = run(lambda node: node.status())
    if json_out:
        out_json(st)
        return
    typer.echo(f"id:          {st['id']}" + (f" ({st['name']})" if st["name"] else ""))
    typer.echo(f"home:        {st['home']}")
    typer.echo(f"own seq:     {st['seq']}")
    typer.echo(f"feeds:       {st['feeds']} stored, {st['replicating']} replicated "
               f"({st['following']} followed, {st['blocked']} blocked)")
    typer.echo(f"messages:    {st['messages']}")
    if st["fenced"]:
        typer.echo("FENCED:      restored key: publishing waits until `feedlog sync` or "
                   "`feedlog import` fetches your feed (or `feedlog unfence --confirm`)")
    if st["forked"]:
        for f in st["forked"]:
            typer.echo(fork_text(f, "FORKED:      "))
    else:
        typer.echo("forks:       none")


@app.command()
def verify(json_out: JsonOpt = False) -> None:
    """Re-check every stored message, chain and fork proof. Exit 1 on any problem."""
    rep = run(lambda node: node.verify())
    if json_out:
        out_json({"ok": rep.ok, "feeds": rep.feeds, "messages": rep.messages,
                  "fork_proofs": rep.forks,
                  "problems": [{"feed": f, "seq": s, "code": c} for f, s, c in rep.problems]})
    else:
        for f, s, c in rep.problems:
            typer.echo(f"problem[{c}]: {f} seq {s}", err=True)
        verdict = "ok" if rep.ok else f"{len(rep.problems)} problem(s)"
        typer.echo(f"verified {rep.messages} messages in {rep.feeds} feeds, "
                   f"{rep.forks} fork proofs: {verdict}")
    if not rep.ok:
        raise typer.Exit(1)


# --- feature modules: each cli/<feature>.py defines register(app) ---------------------------
# (one import and one call per feature, so features land without touching each other)
def _register_features() -> None:
    from cli import bundle, forks, groups, lan, net, robust

    net.register(app)
    lan.register(app)
    bundle.register(app)
    groups.register(app)
    robust.register(app)
    forks.register(app)


_register_features()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

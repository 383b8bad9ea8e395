"""Group commands: `group new`, `post`, `reply`, `groups`, `show`, `chat` (README "Group
conversations"). The data comes from feedlog.groups; this module only words and draws it."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from cli.main import JsonOpt, _published, _when, fail, feed_arg, out_json, run
from feedlog import Node
from feedlog import groups as g
from feedlog.core.errors import FeedlogError
from feedlog.core.ids import MsgId, feed_id_text, msg_id_text, parse_msg_id
from feedlog.core.message import Message
from feedlog.group_order import catch_up

group_app = typer.Typer(help="Group conversations.", no_args_is_help=True)
POLL_SECONDS = 0.3  # chat: how often the store is asked for posts that arrived


def msg_arg(text: str) -> MsgId:
    try:
        return parse_msg_id(text)
    except FeedlogError as exc:
        fail(exc)
        raise


def short(feed_text: str) -> str:
    return feed_text[:13] + "…"


def who(name: str | None, feed_text: str) -> str:
    return name or short(feed_text)


# --- text of `show` ---------------------------------------------------------------------------


def header_line(data: dict[str, Any]) -> str:
    root = data["root"]
    if root is None:
        return f"Group {data['group']} (root not held: title unknown)"
    line = f"Group \"{data['title']}\" {data['group']}, by {who(root['name'], root['author'])}"
    if root["members"] is not None:
        line += f", {len(root['members'])} members"
    return line


def entry_line(e: dict[str, Any]) -> str:
    mark = ""
    if e["reply_n"] == 0:
        mark = " ↳root"
    elif e["reply_n"] is not None:
        mark = f" ↳{e['reply_n']}"
    elif e["reply_missing"]:
        mark = " ↳?"
    flags = []
    if e["missing_refs"]:
        flags.append(f"{len(e['missing_refs'])} ref(s) missing")
    if e["reply_missing"]:
        flags.append("answers a missing message")
    if e["ignored_refs"]:
        flags.append(f"{len(e['ignored_refs'])} forged ref(s) ignored")
    tail = f"  [! {'; '.join(flags)}]" if flags else ""
    return (f"{e['n']:>4}  {_when(e['timestamp'])}  {who(e['name'], e['author'])}{mark}: "
            f"{e['text']}{tail}")


def completeness_line(data: dict[str, Any]) -> str:
    if data["complete"]:
        return f"complete: {len(data['entries'])} posts, nothing referenced is missing"
    parts = []
    for f in data["missing"]:
        how = "followed" if f["following"] else "not followed"
        label = f"{f['name']} ({f['author']}, " if f["name"] else f"{f['author']} ("
        parts.append(f"{len(f['refs'])} from {label}{how}, held to seq {f['held_seq']}, "
                     f"needed to seq {f['max_seq']})")
    return f"incomplete: {data['missing_count']} referenced message(s) missing: " + "; ".join(
        parts)


def show_lines(data: dict[str, Any]) -> list[str]:
    lines = [header_line(data)]
    if not data["entries"]:
        lines.append("   (no posts yet)")
    lines.extend(entry_line(e) for e in data["entries"])
    lines.append(completeness_line(data))
    return lines


# --- commands -------------------------------------------------------------------------------


@group_app.command("new")
def group_new(
    title: str,
    member: Annotated[list[str] | None, typer.Option(
        "--member", "-m", help="A member's feed id (repeat for more); you are listed first.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a group; prints its id (the id of the root message)."""
    members = None if member is None else [feed_arg(m) for m in member]

    async def go(node: Node) -> Message:
        return await node.create_group(title, members)

    m = run(go)
    if json_out:
        out_json({"id": msg_id_text(m.id), "seq": m.seq})
    else:
        typer.echo(msg_id_text(m.id))


@group_app.command("reindex")
def group_reindex(json_out: JsonOpt = False) -> None:
    """Rebuild the group index from the stored messages."""
    n = run(lambda node: node.store.reindex_groups())
    if json_out:
        out_json({"indexed": n})
    else:
        typer.echo(f"indexed {n} group messages")


def post(group: str, text: str, json_out: JsonOpt = False) -> None:
    """Post in a group (its causal references are computed for you)."""
    gid = msg_arg(group)
    _published(run(lambda node: node.post_to_group(gid, text)), json_out)


def reply(msgid: Annotated[str, typer.Argument(metavar="MSGID")], text: str,
          json_out: JsonOpt = False) -> None:
    """Answer a message of a group, in that group."""
    mid = msg_arg(msgid)
    _published(run(lambda node: node.reply(mid, text)), json_out)


def groups(
    everything: Annotated[bool, typer.Option("--all", help="Every group seen, not just yours.")
                          ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Your groups: last activity and unread posts, most recent first."""

    async def go(node: Node) -> list[dict[str, Any]]:
        rows = await node.groups(everything=everything)
        names = await g.names_for(node, [r.root.author for r in rows if r.root])
        return [{
            "id": msg_id_text(r.group_id),
            "title": r.root.title if r.root else None,
            "creator": feed_id_text(r.root.author) if r.root else None,
            "creator_name": names[r.root.author] if r.root else None,
            "posts": r.posts, "unread": r.unread, "last_activity": r.last_timestamp,
            "member": r.member, "posted": r.posted,
        } for r in rows]

    rows = run(go)
    if json_out:
        out_json(rows)
        return
    if not rows:
        typer.echo("no groups yet: feedlog group new TITLE" +
                   ("" if everything else " (or feedlog groups --all)"))
    for r in rows:
        when = _when(r["last_activity"]) if r["last_activity"] is not None else "-"
        title = r["title"] if r["title"] is not None else "(root not held)"
        typer.echo(f"{r['id']}  {when}  {r['posts']:>5} posts  {r['unread']:>4} unread  {title}")


def show(group: str, json_out: JsonOpt = False) -> None:
    """Show a group conversation in order, with reply markers, flags and completeness."""
    gid = msg_arg(group)
    data = run(lambda node: g.show_json(node, gid, with_ids=json_out))
    if json_out:
        out_json(data)
    else:
        typer.echo("\n".join(show_lines(data)))


# --- chat -----------------------------------------------------------------------------------


class _Screen:
    """The bottom line is the input; arriving posts are printed above it."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.buffer = ""

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def redraw(self) -> None:
        self._write("\r\x1b[K" + self.prompt + self.buffer)

    def say(self, line: str) -> None:
        self._write("\r\x1b[K" + line + "\n" + self.prompt + self.buffer)


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[bool]:
    """Character-at-a-time input while the chat runs, when stdin is a terminal."""
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _chat(node: Node, gid: MsgId, backlog: int) -> None:
    last_rx = (await catch_up(node.store, gid)).rx  # before: what arrives meanwhile is seen
    data = await g.show_json(node, gid)
    screen = _Screen("> ")
    shown: set[str] = set()
    print(header_line(data))
    for e in data["entries"][-backlog:] if backlog else []:
        print(entry_line(e))
    shown.update(e["id"] for e in data["entries"])
    print("(type a message and Enter to post; /reply N TEXT answers post N; /quit leaves)")
    ids_by_n = {e["n"]: e["id"] for e in data["entries"]}
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    with _cbreak(fd) as tty_mode:

        def readable() -> None:
            chunk = os.read(fd, 1024)
            if not chunk:
                lines.put_nowait(None)
                return
            text = decoder.decode(chunk)
            if not tty_mode:
                screen.buffer += text
                while "\n" in screen.buffer:
                    line, screen.buffer = screen.buffer.split("\n", 1)
                    lines.put_nowait(line)
                return
            for ch in text:
                if ch in "\r\n":
                    line, screen.buffer = screen.buffer, ""
                    screen.redraw()
                    lines.put_nowait(line)
                elif ch in "\x7f\b":
                    screen.buffer = screen.buffer[:-1]
                elif ch == "\x04" and not screen.buffer:
                    lines.put_nowait(None)
                elif ch == "\x15":
                    screen.buffer = ""
                elif ch.isprintable():
                    screen.buffer += ch
            screen.redraw()

        loop.add_reader(fd, readable)
        screen.redraw()
        try:
            while True:
                try:
                    line = await asyncio.wait_for(lines.get(), POLL_SECONDS)
                except TimeoutError:
                    line = ""
                if line is None:
                    break
                line = line.strip()
                if line == "/quit":
                    break
                if line:
                    try:
                        if line.startswith("/reply "):
                            _, n, text = [*line.split(" ", 2), "", ""][:3]
                            target = ids_by_n.get(int(n)) if n.isdigit() else None
                            if target is None:
                                screen.say(f"no post {n!r} to answer")
                            else:
                                await node.reply(parse_msg_id(target), text)
                        else:
                            await node.post_to_group(gid, line)
                    except FeedlogError as exc:
                        screen.say(f"error[{exc.code}]: {exc.message}")
                rx = (await catch_up(node.store, gid)).rx
                if rx == last_rx:
                    continue  # nothing arrived: the poll cost one indexed query
                last_rx = rx
                data = await g.show_json(node, gid)
                ids_by_n = {e["n"]: e["id"] for e in data["entries"]}
                for e in data["entries"]:
                    if e["id"] not in shown:
                        shown.add(e["id"])
                        screen.say(entry_line(e))
        finally:
            loop.remove_reader(fd)
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()


def chat(
    group: str,
    backlog: Annotated[int, typer.Option("--backlog", min=0,
                                         help="How many earlier posts to show first.")] = 20,
) -> None:
    """Interactive view of a group: shows posts as they arrive and posts what you type."""
    gid = msg_arg(group)
    run(lambda node: _chat(node, gid, backlog))


def register(app: typer.Typer) -> None:
    app.add_typer(group_app, name="group")
    app.command()(post)
    app.command()(reply)
    app.command()(groups)
    app.command()(show)
    app.command()(chat)

"""Forks and restores (spec/forks.md): `feedlog unfence` and `feedlog key export`.

`feedlog init --restore KEYFILE` lives with `init` in cli/main.py; fork display is part of
`status` and `feed` there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.main import JsonOpt, fail, out_json, run
from feedlog import Node
from feedlog.core.errors import LocalError
from feedlog.identity import write_key


def register(app: typer.Typer) -> None:
    app.command()(unfence)
    key = typer.Typer(help="Your secret key: back it up.", no_args_is_help=True)
    key.command(name="export")(key_export)
    app.add_typer(key, name="key")


def unfence(
    confirm: Annotated[bool, typer.Option(
        "--confirm", help="I am sure this key has no newer messages anywhere else.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Allow publishing on a restored node without fetching its feed first (needs --confirm)."""
    if not confirm:
        fail(LocalError(
            "unfencing without your feed's latest messages can fork it forever: first try "
            "`feedlog sync ADDRESS` or `feedlog import DIR`; if this key has never published "
            "anywhere else, run `feedlog unfence --confirm`", code="confirm-needed"))

    async def go(node: Node) -> tuple[bool, int]:
        was = await node.unfence()
        info = await node.feed_info(node.id)
        return was, info.seq if info else 0

    was, seq = run(go)
    if json_out:
        out_json({"was_fenced": was, "seq": seq})
    elif was:
        typer.echo(f"unfenced: your next message will be seq {seq + 1}")
    else:
        typer.echo("not fenced: nothing to do")


def key_export(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the backup.")],
    json_out: JsonOpt = False,
) -> None:
    """Write a backup of your secret key (mode 0600; never overwrites a file)."""

    async def go(node: Node) -> str:
        write_key(file, node.keys)
        return node.id_text

    ident = run(go)
    if json_out:
        out_json({"id": ident, "file": str(file)})
    else:
        typer.echo(f"key of {ident} written to {file} (mode 0600)\n"
                   "keep it secret; restore with: feedlog init --restore FILE")

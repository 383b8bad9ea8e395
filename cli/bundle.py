"""`feedlog export DIR`, `feedlog import DIR`, `feedlog bundle verify DIR` (spec/bundle.md).

Progress bars go to stderr (with totals: messages for export, bytes for import), the summary to
stdout, or JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from cli.main import Ctx, JsonOpt, fail, feed_arg, out_json, run
from feedlog import Node
from feedlog.bundle import ExportReport, ImportReport, export_bundle, import_bundle, verify_bundle
from feedlog.config import load_limits
from feedlog.core.errors import FeedlogError

T = TypeVar("T")
DirArg = Annotated[Path, typer.Argument(
    metavar="DIR", help="The stick (or any folder); the bundle is DIR/feedlog.")]


@contextmanager
def _bar(label: str, *, in_bytes: bool, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, shown from the first report on (so an early error is one line
    on its own)."""
    counter = DownloadColumn() if in_bytes else MofNCompleteColumn()
    prog = Progress(TextColumn(label), BarColumn(), counter, TimeRemainingColumn(),
                    console=Console(stderr=True), disable=quiet, transient=False)
    task = prog.add_task(label, total=None)
    started = False

    def update(done: int, total: int) -> None:
        nonlocal started
        if not started:
            prog.start()
            started = True
        prog.update(task, completed=done, total=max(total, done))

    try:
        yield update
    finally:
        if started:
            prog.stop()


def _plain(go: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(go())
    except FeedlogError as exc:
        fail(exc)
        raise


def _export_text(rep: ExportReport) -> None:
    for s in rep.feeds:
        if s.action == "diverged":
            typer.echo(f"warning: {s.author.hex()[:12]}…: the stick carries a different "
                       "history of this feed; nothing appended to it", err=True)
    wrote = sum(1 for s in rep.feeds if rep.written.get(s.author))
    typer.echo(f"exported {rep.messages} new messages of {wrote} feeds "
               f"({len(rep.feeds)} checked) and {rep.fork_proofs} fork proofs, "
               f"{rep.bytes} bytes in {len(rep.segments)} new segment(s) to {rep.dir}")
    if rep.reindexed:
        typer.echo(f"repaired: the summary was rebuilt from the data ({rep.reindexed})")


def _import_text(rep: ImportReport, verb: str) -> None:
    j = rep.as_json()
    for row in j["feeds"]:
        if not (row["new"] or row["rejected"] or row["gap"] or row["forked"]):
            continue
        parts = [f"new {row['new']}", f"had {row['had']}"]
        if row["rejected"]:
            parts.append("rejected " + ", ".join(f"{c} {n}" for c, n in row["rejected"].items()))
        if row["gap"]:
            parts.append(f"gap {row['gap'][0]}..{row['gap'][1]}")
        if row["forked"]:
            parts.append("FORKED")
        typer.echo(f"{row['feed']}  " + "  ".join(parts))
    for d in j["damage"]:
        typer.echo(f"damage[{d['code']}]: {d['segment']} at byte {d['offset']}, "
                   f"{d['length']} bytes ignored", err=True)
    if j["summary"]["problem"]:
        typer.echo(f"summary[{j['summary']['problem']}]: the data was read in full instead",
                   err=True)
    for f in j["summary"]["mismatch"]:
        typer.echo(f"summary[summary-mismatch]: {f}: the data does not reach the listed head",
                   err=True)
    fp = j["fork_proofs"]
    rejected = sum(j["rejected"].values())
    if verb == "bundle holds":
        return
    typer.echo(f"{verb} {j['new']} new messages ({j['had']} already had, {rejected} rejected)"
               f"; fork proofs: {fp['new']} new of {fp['seen']}"
               + (f"; {j['skipped_feeds']} feeds you do not replicate skipped (--all takes them)"
                  if j["skipped_feeds"] else ""))


def register(app: typer.Typer) -> None:
    @app.command(name="export")
    def export_cmd(
        directory: DirArg,
        feed: Annotated[list[str] | None, typer.Option(
            "--feed", metavar="ID",
            help="Export this feed (repeatable). Default: your own and replicated feeds.")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Write what the stick lacks of your feeds (incremental, crash-safe)."""
        feeds = [feed_arg(f) for f in feed] if feed else None

        async def go(node: Node) -> ExportReport:
            with _bar("export", in_bytes=False, quiet=json_out) as bar:
                return await export_bundle(node, directory, feeds, progress=bar)

        rep = run(go)
        if json_out:
            out_json(rep.as_json())
        else:
            _export_text(rep)

    @app.command(name="import")
    def import_cmd(
        directory: DirArg,
        all_feeds: Annotated[bool, typer.Option(
            "--all", help="Take every feed on the stick, not only those you replicate.")] = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Check and report what would be added; store nothing.")] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Verify and take what the stick holds and you lack."""

        async def go(node: Node) -> ImportReport:
            with _bar("import", in_bytes=True, quiet=json_out) as bar:
                return await import_bundle(node, directory, all_feeds=all_feeds,
                                           dry_run=dry_run, progress=bar)

        rep = run(go)
        if json_out:
            out_json(rep.as_json())
        else:
            _import_text(rep, "would import" if dry_run else "imported")

    bundle = typer.Typer(help="Inspect a bundle folder on a stick.", no_args_is_help=True)

    @bundle.command(name="verify")
    def verify_cmd(directory: DirArg, json_out: JsonOpt = False) -> None:
        """Check every record of the bundle from scratch; exit 1 on any problem."""

        async def go() -> ImportReport:
            with _bar("verify", in_bytes=True, quiet=json_out) as bar:
                # the home's limits (max_bundle_file_size) when there is one, else defaults
                return await verify_bundle(directory, progress=bar,
                                           limits=load_limits(Ctx.home))

        rep = _plain(go)
        j: dict[str, Any] = rep.as_json()
        if json_out:
            out_json(j)
        else:
            _import_text(rep, "bundle holds")
            typer.echo(f"bundle verify: {j['new']} valid messages in {len(j['feeds'])} feeds: "
                       + ("ok" if rep.ok else "problems found"))
        if not rep.ok:
            raise typer.Exit(1)

    app.add_typer(bundle, name="bundle")

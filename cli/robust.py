"""`feedlog limits`: the resource limits in force (defaults overridden by config.toml)."""

from __future__ import annotations

import typer

from cli.main import Ctx, JsonOpt, fail, out_json
from feedlog.config import CONFIG_FILE, limits_as_dict, load_limits
from feedlog.core.errors import FeedlogError


def register(app: typer.Typer) -> None:
    @app.command()
    def limits(json_out: JsonOpt = False) -> None:
        """Show the resource limits in force (set them in the limits table of HOME/config.toml)."""
        try:
            values = limits_as_dict(load_limits(Ctx.home))
        except FeedlogError as exc:
            fail(exc)
            raise
        if json_out:
            out_json(values)
            return
        typer.echo(f"# {Ctx.home / CONFIG_FILE}")
        typer.echo("[limits]")
        for name, value in values.items():
            typer.echo(f"{name} = {value}")

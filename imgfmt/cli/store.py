"""``imgfmt store``: the configured backends, and cleanup after killed uploads."""

from __future__ import annotations

import click

from . import render
from .image import opened_store

COLUMNS = ("ID", "Type", "Description", "Weight", "Free Space", "Default")


@click.group("store")
def store_group() -> None:
    """The configured storage backends."""


@store_group.command("list")
@render.output_options
@click.pass_context
def list_stores(ctx: click.Context, fmt: str, columns: tuple[str, ...]) -> None:
    """Backends with type, description, weight, free space and which is the default."""
    from ..store.images import list_stores as gather

    wanted = render.select(COLUMNS, columns)
    with opened_store(ctx) as (config, _):
        infos = gather(config)
    rows = [
        dict(
            zip(
                COLUMNS,
                (i.id, i.type, i.description, i.weight, i.free_space, i.default),
                strict=True,
            )
        )
        for i in infos
    ]
    if fmt == "json":
        render.emit_json([{c: r[c] for c in wanted} for r in rows])
    elif fmt == "value":
        render.emit_values([[r[c] for c in wanted] for r in rows])
    else:
        render.emit_table(wanted, [[r[c] for c in wanted] for r in rows])


@store_group.command("cleanup")
@click.pass_context
def cleanup(ctx: click.Context) -> None:
    """Remove partial data and kill records left by uploads whose process died (kill -9)."""
    from ..store.images import cleanup as run_cleanup

    with opened_store(ctx) as (config, catalog):
        result = run_cleanup(config, catalog)
    for path in result.removed_data:
        click.echo(f"removed partial data {render.scalar(path)}")
    for image_id in result.killed_records:
        click.echo(f"marked image {image_id} killed")
    if not result.removed_data and not result.killed_records:
        click.echo("nothing to clean up")

"""``imgfmt image``: create, list, show, save and delete images in the store."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from . import render
from .main import EXIT_ERROR, EXIT_OK, EXIT_UNSAFE

if TYPE_CHECKING:
    from ..store.catalog import Catalog, ImageRecord
    from ..store.config import StoreConfig

LIST_COLUMNS = ("ID", "Name", "Status")
LONG_COLUMNS = (
    "ID",
    "Name",
    "Status",
    "Disk Format",
    "Container Format",
    "Size",
    "Virtual Size",
    "Checksum",
    "Hash Algo",
    "Hash Value",
    "Stores",
)
_FIELDS = {
    "ID": "id",
    "Name": "name",
    "Status": "status",
    "Disk Format": "disk_format",
    "Container Format": "container_format",
    "Size": "size",
    "Virtual Size": "virtual_size",
    "Checksum": "checksum",
    "Hash Algo": "os_hash_algo",
    "Hash Value": "os_hash_value",
    "Stores": "stores",
}


@contextmanager
def opened_store(ctx: click.Context) -> Iterator[tuple[StoreConfig, Catalog]]:
    """The store configuration and catalog; any imgfmt error becomes exit 2 with its message."""
    from ..config import Config
    from ..errors import ImgfmtError
    from ..store.catalog import Catalog
    from ..store.config import StoreConfig

    try:
        config = StoreConfig.load(Config.load(ctx.obj.get("config_file")))
        catalog = Catalog(config.catalog_path)
    except ImgfmtError as exc:
        render.abort(str(exc), EXIT_ERROR)
    try:
        yield config, catalog
    except ImgfmtError as exc:
        render.abort(str(exc), _exit_code(exc))
    finally:
        catalog.close()


def _exit_code(exc: Exception) -> int:
    from ..store.errors import ImageRefused

    return EXIT_UNSAFE if isinstance(exc, ImageRefused) else EXIT_ERROR


@click.group("image")
def image_group() -> None:
    """Images in the store (Glance's records and layout)."""


@image_group.command("create")
@click.argument("name")
@click.option("--file", "file", required=True, help="Image file, or - for standard input.")
@click.option("--disk-format", help="Claimed disk format (default: what was detected).")
@click.option("--container-format", help="Container format (default: what was detected).")
@click.option("--store", "store_id", help="Backend id (default: the default backend).")
@click.option(
    "--property",
    "properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="Image property (repeatable).",
)
@click.option(
    "--convert-to",
    metavar="FORMAT",
    help="Convert to FORMAT first (raw for Ceph's copy-on-write clones), in [task] work_dir.",
)
@click.option("--progress/--no-progress", default=False, help="Show a progress bar.")
@render.output_options
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    file: str,
    disk_format: str | None,
    container_format: str | None,
    store_id: str | None,
    properties: tuple[str, ...],
    convert_to: str | None,
    progress: bool,
    fmt: str,
    columns: tuple[str, ...],
) -> None:
    """Inspect FILE and upload it as image NAME. Unsafe images write nothing."""
    from ..config import Config
    from ..policy import Policy
    from ..store.upload import CreateRequest, create_image

    props = _properties(properties)
    with opened_store(ctx) as (config, catalog):
        policy = Policy.from_config(Config.load(ctx.obj.get("config_file")))
        request = CreateRequest(
            name, file, disk_format, container_format, store_id, props, convert_to
        )
        sized = file != "-" and os.path.isfile(file) and not convert_to
        total = os.path.getsize(file) if sized else None
        with (
            _library_warnings(),
            render.Progress(f"uploading {name}", total, enabled=progress) as bar,
        ):
            record = create_image(request, config, catalog, policy, bar)
        _show(record, fmt, columns)


@image_group.command("list")
@click.option("--long", is_flag=True, help="More columns: formats, sizes, hashes, stores.")
@render.output_options
@click.pass_context
def list_images(ctx: click.Context, long: bool, fmt: str, columns: tuple[str, ...]) -> None:
    """List images (deleted ones are not shown)."""
    wanted = (
        render.select(LONG_COLUMNS, columns)
        if columns
        else list(LONG_COLUMNS if long else LIST_COLUMNS)
    )
    with opened_store(ctx) as (_, catalog):
        records = [r.to_dict() for r in catalog.all()]
    rows = [[r[_FIELDS[c]] for c in wanted] for r in records]
    if fmt == "json":
        render.emit_json([dict(zip(wanted, row, strict=True)) for row in rows])
    elif fmt == "value":
        render.emit_values(rows)
    else:
        render.emit_table(wanted, rows)


@image_group.command("show")
@click.argument("image")
@render.output_options
@click.pass_context
def show(ctx: click.Context, image: str, fmt: str, columns: tuple[str, ...]) -> None:
    """Show one image, by id or unique name."""
    with opened_store(ctx) as (_, catalog):
        record = catalog.find(image)
    _show(record, fmt, columns)


@image_group.command("save")
@click.argument("image")
@click.option("--file", "file", required=True, help="Where to write the image.")
@click.option("--progress/--no-progress", default=False, help="Show a progress bar.")
@click.pass_context
def save(ctx: click.Context, image: str, file: str, progress: bool) -> None:
    """Download IMAGE to FILE, verifying its checksum and hash; written atomically."""
    from ..store.images import save_image

    if file == "-":
        render.abort(
            "--file -: image save writes a file atomically, not standard output; "
            "name a file (./- for a file named -)",
            EXIT_ERROR,
        )
    with opened_store(ctx) as (config, catalog):
        record = catalog.find(image)
        with render.Progress(
            f"saving {record.name or record.id}", record.size, enabled=progress
        ) as bar:
            save_image(record, config, file, bar)


@image_group.command("delete")
@click.argument("images", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, images: tuple[str, ...]) -> None:
    """Delete images (data and record), by id or unique name."""
    from ..errors import ImgfmtError
    from ..store.images import delete_image

    status = EXIT_OK
    with opened_store(ctx) as (config, catalog):
        for ref in images:
            try:
                for warning in delete_image(catalog.find(ref), config, catalog):
                    render.error(f"warning: {warning}")
            except ImgfmtError as exc:
                render.error(str(exc))
                status = EXIT_ERROR
    ctx.exit(status)


class _WarningLine(logging.Handler):
    """imgfmt's WARNING log records as ``imgfmt: warning: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        render.error(f"warning: {record.getMessage()}")


@contextmanager
def _library_warnings() -> Iterator[None]:
    logger = logging.getLogger("imgfmt")
    handler = _WarningLine(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _show(record: ImageRecord, fmt: str, columns: tuple[str, ...]) -> None:
    data = record.to_dict()
    wanted = render.select(list(data), columns)
    if fmt == "json":
        render.emit_json({k: data[k] for k in wanted})
    elif fmt == "value":
        render.emit_values([[data[k] for k in wanted]])
    else:
        render.emit_table(("Field", "Value"), [(k, data[k]) for k in wanted])


def _properties(items: tuple[str, ...]) -> dict[str, str]:
    props = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            render.abort(f"--property {item!r}: expected KEY=VALUE", EXIT_ERROR)
        props[key] = value
    return props

"""``imgfmt inspect``: what each image is, how big its disk is, and whether it is safe."""

from __future__ import annotations

from typing import Any

import click

from . import render
from .main import EXIT_ERROR, EXIT_OK, EXIT_UNSAFE

COLUMNS = (
    "path",
    "safe",
    "disk_format",
    "container_format",
    "virtual_size",
    "actual_size",
    "details",
    "findings",
    "members",
)


@click.command("inspect")
@click.argument("images", nargs=-1, required=True)
@render.format_option
@render.column_option(f"Show only this field (repeatable): {', '.join(COLUMNS)}.")
@click.option(
    "--expect-format",
    metavar="FORMAT",
    help="The disk format the image must be (Glance's names); a mismatch is unsafe.",
)
@click.option(
    "--expect-container",
    metavar="FORMAT",
    help="The container format the image must be (bare, ova, ovf, docker, compressed, aki, "
    "ari, ami); a mismatch is unsafe.",
)
@click.option(
    "--max-virtual-size",
    metavar="SIZE",
    help="Largest virtual size allowed, e.g. 64G (binary units).",
)
@click.option(
    "--disk-formats",
    metavar="LIST",
    help="Comma-separated disk formats allowed (overrides [image_format]).",
)
@click.option(
    "--vmdk-allowed-types",
    metavar="LIST",
    help="Comma-separated vmdk create types allowed (overrides [image_format]).",
)
@click.pass_context
def inspect_command(
    ctx: click.Context,
    images: tuple[str, ...],
    fmt: str,
    columns: tuple[str, ...],
    expect_format: str | None,
    expect_container: str | None,
    max_virtual_size: str | None,
    disk_formats: str | None,
    vmdk_allowed_types: str | None,
) -> None:
    """Inspect IMAGES (paths, or - for standard input) without running qemu.

    Exit status: 0 when every image is safe, 1 when any is unsafe or breaks the policy,
    2 for usage or I/O errors.
    """
    from ..detect import inspect
    from ..errors import ImgfmtError, SourceError

    wanted = render.select(COLUMNS, columns)
    try:
        policy = _policy(ctx, max_virtual_size, disk_formats, vmdk_allowed_types, expect_format)
        _known_container(expect_container)
    except ImgfmtError as exc:
        render.abort(str(exc), EXIT_ERROR)

    reports, status = [], EXIT_OK
    for image in images:
        try:
            report = inspect(image, policy, expect_format, expect_container)
        except SourceError as exc:
            render.error(str(exc))
            status = EXIT_ERROR
            continue
        reports.append(report.to_dict())
        if not report.safe and status == EXIT_OK:
            status = EXIT_UNSAFE

    _emit(fmt, wanted, reports)
    ctx.exit(status)


def _policy(
    ctx: click.Context,
    max_virtual_size: str | None,
    disk_formats: str | None,
    vmdk_allowed_types: str | None,
    expect_format: str | None,
) -> Any:
    from dataclasses import replace

    from ..config import Config
    from ..errors import UsageError
    from ..policy import KNOWN_DISK_FORMATS, Policy, parse_size

    policy = Policy.from_config(Config.load(ctx.obj.get("config_file")))
    if expect_format is not None and expect_format not in KNOWN_DISK_FORMATS:
        known = ", ".join(sorted(KNOWN_DISK_FORMATS))
        raise UsageError(f"--expect-format {expect_format}: unknown format (known: {known})")
    if max_virtual_size is not None:
        policy = replace(policy, max_virtual_size=parse_size(max_virtual_size))
    if disk_formats is not None:
        names = frozenset(n.strip() for n in disk_formats.split(",") if n.strip())
        unknown = sorted(names - KNOWN_DISK_FORMATS)
        if unknown:
            raise UsageError(f"--disk-formats: unknown format(s) {', '.join(unknown)}")
        policy = replace(policy, disk_formats=names)
    if vmdk_allowed_types is not None:
        types = frozenset(t.strip() for t in vmdk_allowed_types.split(",") if t.strip())
        policy = replace(policy, vmdk_allowed_types=types)
    return policy


def _known_container(name: str | None) -> None:
    from ..errors import UsageError
    from ..policy import KNOWN_CONTAINER_FORMATS

    if name is not None and name not in KNOWN_CONTAINER_FORMATS:
        known = ", ".join(sorted(KNOWN_CONTAINER_FORMATS))
        raise UsageError(f"--expect-container {name}: unknown format (known: {known})")


def _emit(fmt: str, wanted: list[str], reports: list[dict[str, Any]]) -> None:
    if fmt == "json":
        render.emit_json([{k: r[k] for k in ("schema", *wanted)} for r in reports])
    elif fmt == "value":
        render.emit_values([r[k] for k in wanted] for r in reports)
    else:
        for report in reports:
            _table(report, wanted)


def _table(report: dict[str, Any], wanted: list[str]) -> None:
    rows: list[tuple[str, Any]] = []
    for key in wanted:
        if key == "details":
            rows.extend((f"details.{k}", v) for k, v in report["details"].items())
        elif key == "members":
            rows.extend((f"member {m['path']}", _member(m)) for m in report["members"])
        elif key != "findings":
            rows.append((key, report[key]))
    render.emit_table(("Field", "Value"), rows, title=report["path"])
    findings = [*report["findings"], *(f for m in report.get("members", []) for f in m["findings"])]
    if "findings" in wanted and findings:
        render.emit_table(
            ("Severity", "Code", "Offset", "Message"),
            ((f["severity"], f["code"], _hex(f["offset"]), f["message"]) for f in findings),
        )


def _member(member: dict[str, Any]) -> str:
    safe = "safe" if member["safe"] else "UNSAFE"
    return f"{member['disk_format']}, virtual size {member['virtual_size']}, {safe}"


def _hex(offset: int | None) -> str:
    return "" if offset is None else f"{offset:#x}"

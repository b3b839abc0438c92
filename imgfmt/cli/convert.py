"""``imgfmt convert``: inspect an image, convert it with qemu-img, check the result."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import click

from . import render
from .main import EXIT_ERROR, EXIT_OK, EXIT_UNSAFE

if TYPE_CHECKING:
    from ..convert import ConversionRefused, ConversionResult, Request
    from ..policy import Policy
    from ..qemu import Limits
    from ..report import ImageReport

TARGETS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi")
#: Plain progress lines (stderr not a terminal) every this many percent.
PLAIN_STEP = 10


@click.command("convert")
@click.argument("source")
@click.argument("destination")
@click.option(
    "-O",
    "target_format",
    type=click.Choice(TARGETS),
    required=True,
    help="Output disk format (Glance's names; vhd is qemu's vpc).",
)
@click.option(
    "--source-format",
    metavar="FORMAT",
    help="The format the source must be; a mismatch with the content is refused.",
)
@click.option(
    "--member",
    metavar="NAME",
    help="The disk to convert from an OVA holding several (its file name in the descriptor).",
)
@click.option(
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE[,...]",
    help="qemu-img create option for the output format (repeatable).",
)
@click.option(
    "-c",
    "compress",
    is_flag=True,
    help="Compress (qcow2, or vmdk with -o subformat=streamOptimized).",
)
@click.option(
    "-S",
    "sparse_size",
    metavar="SIZE",
    help="Sparse size: runs of zeros this long are not written (qemu-img -S).",
)
@click.option("-W", "out_of_order", is_flag=True, help="Allow out-of-order writes (faster).")
@click.option("-m", "coroutines", type=int, metavar="N", help="Parallel coroutines, 1 to 16.")
@click.option("--force", is_flag=True, help="Replace an existing destination.")
@click.option("--verify", is_flag=True, help="Compare output and source with qemu-img compare.")
@click.option(
    "--progress/--quiet",
    default=True,
    show_default=True,
    help="Show progress on stderr (a bar on a terminal, lines otherwise).",
)
@render.format_option
@click.pass_context
def convert_command(
    ctx: click.Context,
    source: str,
    destination: str,
    target_format: str,
    source_format: str | None,
    member: str | None,
    options: tuple[str, ...],
    compress: bool,
    sparse_size: str | None,
    out_of_order: bool,
    coroutines: int | None,
    force: bool,
    verify: bool,
    progress: bool,
    fmt: str,
) -> None:
    """Convert SOURCE to DESTINATION with qemu-img, after checking that SOURCE is safe.

    SOURCE may be an OVA (its disk is read in place; --member picks one of several) or a
    gzip, xz, zstd or bzip2 compressed image (decompressed into scratch space beside
    DESTINATION). An unsafe source (backing file, data file, external extent, ...) is refused.
    The output appears under DESTINATION only when complete and checked. Exit status: 0 converted,
    1 refused as unsafe or the output failed its check, 2 usage, I/O or qemu-img error.
    """
    from ..convert import ConversionCheckFailed, ConversionRefused, Request
    from ..errors import ImgfmtError
    from ..policy import parse_size

    try:
        request = Request(
            source=source,
            destination=destination,
            target_format=target_format,
            source_format=source_format,
            member=member,
            options=_parse_options(options),
            compress=compress,
            sparse_size=parse_size(sparse_size) if sparse_size is not None else None,
            out_of_order=out_of_order,
            coroutines=coroutines,
            force=force,
            verify=verify,
        )
        policy, limits = _settings(ctx)
        result = _run(request, policy, limits, progress)
    except ConversionRefused as exc:
        _refused(exc)
    except ConversionCheckFailed as exc:
        render.abort(str(exc), EXIT_UNSAFE)
    except ImgfmtError as exc:
        render.abort(str(exc), EXIT_ERROR)
    _emit(fmt, result)
    ctx.exit(EXIT_OK)


def _parse_options(items: tuple[str, ...]) -> dict[str, str]:
    from ..errors import UsageError

    options: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"-o {item}: expected KEY=VALUE")
            options[key.strip()] = value.strip()
    return options


def _settings(ctx: click.Context) -> tuple[Policy, Limits]:
    from ..config import Config
    from ..policy import Policy
    from ..qemu import Limits

    config = Config.load(ctx.obj.get("config_file"))
    return Policy.from_config(config), Limits.from_config(config)


def _run(request: Request, policy: Policy, limits: Limits, progress: bool) -> ConversionResult:
    from ..convert import convert

    if not progress:
        return convert(request, policy, limits)
    if sys.stderr.isatty():
        with _bar(request.source) as update:
            return convert(request, policy, limits, update)
    return convert(request, policy, limits, _lines(request.source))


@contextmanager
def _bar(name: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr: percentage, rate and time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from ..report import printable

    console = Console(stderr=True, markup=False, highlight=False, emoji=False)
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(printable(name), total=None)
        yield lambda done, size: bar.update(task, completed=done, total=size)


def _lines(name: str) -> Callable[[int, int], None]:
    """Progress as a plain stderr line every ``PLAIN_STEP`` percent."""
    shown = [-PLAIN_STEP]

    def update(done: int, size: int) -> None:
        percent = done * 100 // max(size, 1) // PLAIN_STEP * PLAIN_STEP
        if percent > shown[0]:
            shown[0] = percent
            render.error(f"converting {name}: {percent}%")

    return update


def _refused(exc: ConversionRefused) -> NoReturn:
    render.error(str(exc))
    _list_findings(exc.report, "  ")
    raise SystemExit(EXIT_UNSAFE)


def _list_findings(report: ImageReport, indent: str) -> None:
    """The report's findings, then those of each member (an OVA's disks) under its name."""
    for finding in report.findings:
        where = f" at {finding.offset:#x}" if finding.offset is not None else ""
        render.error(f"{indent}{finding.severity} {finding.code}{where}: {finding.message}")
    for member in report.members:
        if member.codes():
            render.error(f"{indent}{member.path}:")
            _list_findings(member, indent + "  ")


def _emit(fmt: str, result: ConversionResult) -> None:
    data = result.to_dict()
    if fmt == "json":
        render.emit_json(data)
        return
    rows = [
        ("source", result.source.path),
        ("source_format", result.source.disk_format),
        ("destination", result.output.path),
        ("disk_format", result.output.disk_format),
        ("virtual_size", result.output.virtual_size),
        ("bytes_written", result.bytes_written),
        ("seconds", data["seconds"]),
        ("verified", result.verified),
        ("notes", "; ".join(result.notes)),
    ]
    if fmt == "value":
        render.emit_values([[value for _, value in rows]])
    else:
        render.emit_table(("Field", "Value"), rows, title=result.output.path)

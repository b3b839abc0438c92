"""``imgfmt inspect``: what each image is, how big its disk is, and whether it is safe."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import render
from .main import EXIT_ERROR, EXIT_OK, EXIT_UNSAFE

#: What inspecting one image gives: its report as a dict, or the message of the error it met.
Outcome = tuple[dict[str, Any] | None, str | None]
#: Fewest images a process takes before another is forked to share the work.
MIN_BATCH = 8
#: Exit status of a forked inspector whose inspection raised; its traceback is its output.
WORKER_FAILED = 70
#: One process's run of images in shared memory: the next index and the end.
_RUN = struct.Struct("=II")

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

    def inspect_one(image: str) -> Outcome:
        try:
            report = inspect(image, policy, expect_format, expect_container)
        except SourceError as exc:
            return None, str(exc)
        return report.to_dict(), None

    reports, status = [], EXIT_OK
    for report, problem in _outcomes(images, inspect_one):
        if report is None:
            render.error(str(problem))
            status = EXIT_ERROR
            continue
        reports.append(report)
        if not report["safe"] and status == EXIT_OK:
            status = EXIT_UNSAFE

    _emit(fmt, wanted, reports)
    ctx.exit(status)


def _outcomes(images: Sequence[str], inspect_one: Callable[[str], Outcome]) -> list[Outcome]:
    """Each image's outcome, in order. Many images are shared out over the usable cores: this
    process and one forked for each other core take their own runs of images, then help with
    what the others have left."""
    workers = min(len(os.sched_getaffinity(0)), len(images) // MIN_BATCH)
    if workers < 2 or "-" in images:  # standard input can be read by one process only
        return [inspect_one(image) for image in images]
    shares = _Shares(len(images), workers)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        children = [_fork(shares, worker, images, inspect_one) for worker in range(1, workers)]
        done = dict(shares.work(0, images, inspect_one))
        for child in children:
            if child is not None:  # None: no process to be had, and its share was taken here
                done.update(_collect(child))
    finally:
        shares.close()
    return [done[index] for index in range(len(images))]


class _Shares:
    """The images' indices, dealt out in contiguous runs, one run per process.

    A process takes images from the front of its own run; once that is empty, it takes from
    the back of the longest run left, so that all finish together however uneven the images
    are, and each keeps to images of the kinds it has already imported the inspectors for.
    The runs live in shared memory under a POSIX record lock, which the kernel drops with
    the process holding it: a process that dies makes no other wait.
    """

    def __init__(self, count: int, workers: int) -> None:
        self._fd = os.memfd_create("imgfmt-inspect", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, _RUN.size * workers)
        self._runs = mmap.mmap(self._fd, _RUN.size * workers)
        size = -(-count // workers)
        for worker in range(workers):
            start, stop = min(worker * size, count), min((worker + 1) * size, count)
            _RUN.pack_into(self._runs, worker * _RUN.size, start, stop)

    def work(
        self, worker: int, images: Sequence[str], inspect_one: Callable[[str], Outcome]
    ) -> list[tuple[int, Outcome]]:
        """(index, outcome) of each image this process took, ``worker``'s run first."""
        done = []
        while (index := self._take(worker)) is not None:
            done.append((index, inspect_one(images[index])))
        return done

    def _take(self, worker: int) -> int | None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            start, stop = _RUN.unpack_from(self._runs, worker * _RUN.size)
            if start < stop:
                _RUN.pack_into(self._runs, worker * _RUN.size, start + 1, stop)
                return int(start)
            runs = list(_RUN.iter_unpack(self._runs))
            other = max(range(len(runs)), key=lambda w: runs[w][1] - runs[w][0])
            start, stop = runs[other]
            if start == stop:
                return None
            _RUN.pack_into(self._runs, other * _RUN.size, start, stop - 1)
            return int(stop - 1)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._runs.close()
        os.close(self._fd)


def _fork(
    shares: _Shares, worker: int, images: Sequence[str], inspect_one: Callable[[str], Outcome]
) -> tuple[int, int] | None:
    """A child doing ``worker``'s share: its pid and the pipe its pickled outcomes come through
    (``None`` when the system refuses another process). A child that fails sends the
    traceback instead and exits with ``WORKER_FAILED``."""
    import pickle

    readable, writable = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(readable)
        os.close(writable)
        return None
    if pid:
        os.close(writable)
        return pid, readable
    os.close(readable)
    status = 0
    try:
        data = pickle.dumps(shares.work(worker, images, inspect_one))
    except BaseException:
        import traceback

        data, status = pickle.dumps(traceback.format_exc()), WORKER_FAILED
    try:
        with open(writable, "wb") as pipe:
            pipe.write(data)
    finally:
        os._exit(status)


def _collect(child: tuple[int, int]) -> list[tuple[int, Outcome]]:
    import pickle

    pid, readable = child
    with open(readable, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        detail = pickle.loads(data) if data else f"wait status {status}"
        raise RuntimeError(f"inspecting images failed in forked process {pid}:\n{detail}")
    outcomes: list[tuple[int, Outcome]] = pickle.loads(data)
    return outcomes


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

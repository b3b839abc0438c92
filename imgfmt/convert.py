"""Converting an image with qemu-img: inspect, convert, re-inspect, rename.

References: qemu-img(1) of qemu 7.2 (``convert``, ``compare``), the create options each
target driver lists under ``qemu-img create -f FMT -o help``, and qemu's ``block/vpc.c``
(``calculate_rounded_image_size``: without ``force_size`` a vhd is sized to a CHS geometry).

The source is inspected first and refused when unsafe; no option converts an image with a
backing file, data file or external extent. qemu-img writes into a scratch directory
``.<name>.imgfmt-XXXXXXXX.tmp/`` beside the destination (same file system, so the final rename
is atomic; the file inside already has the final name, which qemu-img records in a vmdk's
descriptor). The output is inspected again and, with ``verify``, compared by qemu-img before
it is renamed into place. On any failure, Ctrl-C or SIGTERM the scratch directory is removed
and an existing destination is untouched.

A source can be a byte range of a file (a disk inside a tar archive). Detecting OVA and
compressed sources and finding that range is the containers' job; until they report a
member's offset, an archive or compressed source is refused with a message saying so.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from . import qemu
from .detect import inspect
from .errors import ImgfmtError, SourceError, UsageError
from .policy import Policy
from .report import ImageReport, Severity
from .signals import sigterm_raises
from .source import FileSource, SliceSource, Source

log = logging.getLogger(__name__)

#: Target format -> ``-o`` options accepted (qemu 7.2 ``qemu-img create -f FMT -o help``).
#: Left out on purpose: ``size`` (the source decides), ``backing_file``, ``backing_fmt``,
#: ``data_file`` and ``encrypt.*`` (each would make an output imgfmt refuses to read).
TARGET_OPTIONS: Mapping[str, frozenset[str]] = {
    "raw": frozenset({"preallocation"}),
    "qcow2": frozenset(
        {
            "cluster_size",
            "compat",
            "compression_type",
            "extended_l2",
            "lazy_refcounts",
            "preallocation",
            "refcount_bits",
        }
    ),
    "vmdk": frozenset(
        {"adapter_type", "compat6", "hwversion", "subformat", "toolsversion", "zeroed_grain"}
    ),
    "vhd": frozenset({"force_size", "subformat"}),
    "vhdx": frozenset({"block_size", "log_size", "subformat"}),
    "vdi": frozenset({"static"}),
}
#: Values allowed for ``subformat``: the multi-file vmdk kinds (monolithicFlat, twoGb...)
#: write extents in other files, which the output check would rightly call unsafe.
SUBFORMATS: Mapping[str, frozenset[str]] = {
    "vmdk": frozenset({"monolithicSparse", "streamOptimized"}),
    "vhd": frozenset({"dynamic", "fixed"}),
    "vhdx": frozenset({"dynamic", "fixed"}),
}
#: Defaults per target. vhd: qemu otherwise rounds the size up to a CHS geometry.
TARGET_DEFAULTS: Mapping[str, Mapping[str, str]] = {"vhd": {"force_size": "on"}}
#: qemu-img's ``-m`` range and ``-S`` bound (qemu-img.c, img_convert).
MAX_COROUTINES = 16
MAX_SPARSE_SIZE = 2147483136
#: Signatures of containers a disk may hide in (tar ``ustar`` at 257; gzip, xz, bzip2, zstd).
_ARCHIVE_MAGIC = ((257, b"ustar"), (0, b"\x1f\x8b"), (0, b"\xfd7zXZ\x00"), (0, b"BZh"))
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ConversionRefused(ImgfmtError):
    """The source is unsafe or not what was claimed; nothing was written."""

    def __init__(self, message: str, report: ImageReport) -> None:
        self.report = report
        super().__init__(message)


class ConversionCheckFailed(ImgfmtError):
    """qemu-img's output failed the check after conversion; it was discarded."""


@dataclass(frozen=True)
class Request:
    """One conversion: ``source`` (or ``source_length`` bytes of it from ``source_offset``)
    into ``destination`` as ``target_format`` (Glance's names: raw, qcow2, vmdk, vhd, ...)."""

    source: str
    destination: str
    target_format: str
    source_format: str | None = None
    source_offset: int = 0
    source_length: int | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    compress: bool = False
    sparse_size: int | None = None
    out_of_order: bool = False
    coroutines: int | None = None
    force: bool = False
    verify: bool = False


@dataclass(frozen=True)
class ConversionResult:
    """What was converted, what came out, how it was run and what to know about it.

    ``bytes_written`` is the space the output takes on disk (``st_blocks`` * 512).
    """

    source: ImageReport
    output: ImageReport
    argv: tuple[str, ...]
    seconds: float
    bytes_written: int
    verified: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.to_dict(),
            "output": self.output.to_dict(),
            "argv": list(self.argv),
            "seconds": round(self.seconds, 3),
            "bytes_written": self.bytes_written,
            "verified": self.verified,
            "notes": list(self.notes),
        }


def convert(
    request: Request,
    policy: Policy | None = None,
    limits: qemu.Limits | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> ConversionResult:
    """Convert safely; see the module docstring. ``on_progress`` gets fractions 0..1.

    Raises ``ConversionRefused`` for an unsafe source, ``ConversionCheckFailed`` when the
    output fails its check, ``Interrupted`` on SIGTERM, ``qemu.QemuError`` when qemu-img
    fails and ``UsageError`` / ``SourceError`` for bad requests and unreadable files.
    """
    policy = policy or Policy()
    limits = limits or qemu.Limits()
    args = _convert_args(request)
    start = time.monotonic()
    source_report = _inspect_source(request, policy)
    destination = _check_destination(request)
    image = qemu.ImageRef.of(
        request.source, _format(source_report), request.source_offset, request.source_length
    )

    with sigterm_raises(), _scratch(destination) as scratch:
        argv = qemu.convert_argv(image, scratch, args, progress=on_progress is not None)
        qemu.run(argv, limits, on_progress)
        output, notes = _check_output(request, args, source_report, scratch, policy)
        if request.verify:
            _verify(image, scratch, args.target_format, limits)
        written = _commit(scratch, destination)
    return ConversionResult(
        source=source_report,
        output=replace(output, path=destination),
        argv=tuple(argv),
        seconds=time.monotonic() - start,
        bytes_written=written,
        verified=request.verify,
        notes=(*_range_note(request), *notes),
    )


def _convert_args(request: Request) -> qemu.ConvertArgs:
    target = request.target_format
    if target not in TARGET_OPTIONS:
        raise UsageError(f"-O {target}: qemu-img writes {', '.join(TARGET_OPTIONS)}")
    options = {**TARGET_DEFAULTS.get(target, {}), **_checked_options(target, request.options)}
    streaming = target == "vmdk" and options.get("subformat") == "streamOptimized"
    if request.compress and not (target == "qcow2" or streaming):
        raise UsageError("-c: only qcow2 and vmdk with -o subformat=streamOptimized compress")
    sparse = request.sparse_size
    if sparse is not None and (sparse % qemu.SECTOR or not 0 <= sparse <= MAX_SPARSE_SIZE):
        raise UsageError(f"-S {sparse}: a multiple of 512 up to {MAX_SPARSE_SIZE} (or 0)")
    coroutines = request.coroutines
    if coroutines is not None and not 1 <= coroutines <= MAX_COROUTINES:
        raise UsageError(f"-m {coroutines}: between 1 and {MAX_COROUTINES}")
    return qemu.ConvertArgs(
        target, options, request.compress, sparse, request.out_of_order, coroutines
    )


def _checked_options(target: str, options: Mapping[str, str]) -> dict[str, str]:
    allowed = TARGET_OPTIONS[target]
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise UsageError(f"-o {key}: not an option imgfmt passes for {target} ({names})")
        if not value or not value.isprintable():
            raise UsageError(f"-o {key}: needs a printable value")
        subformats = SUBFORMATS.get(target)
        if key == "subformat" and subformats is not None and value not in subformats:
            raise UsageError(f"-o subformat={value}: choose from {', '.join(sorted(subformats))}")
    return dict(options)


@contextmanager
def _opened(request: Request) -> Iterator[Source]:
    """The source's bytes: the whole file, or the requested range of it."""
    whole = FileSource(request.source)
    with whole:
        if request.source_offset == 0 and request.source_length is None:
            yield whole
            return
        start, length = request.source_offset, request.source_length
        if start < 0 or length is None or length < 0 or start + length > whole.size:
            raise UsageError(
                f"{request.source}: byte range {start}+{length} is not inside the file "
                f"({whole.size} bytes)"
            )
        yield SliceSource(whole, start, length, f"{request.source}[{start}:{start + length}]")


def _inspect_source(request: Request, policy: Policy) -> ImageReport:
    # A claimed format that disagrees with the content is always unsafe here, whatever
    # [image_format] require_image_format_match says: qemu would read it as the claim.
    strict = replace(policy, require_image_format_match=True)
    with _opened(request) as source:
        report = inspect(source, strict, request.source_format)
        _refuse_containers(source, report)

    if not report.safe:
        raise ConversionRefused(f"{report.path}: refusing to convert an unsafe image", report)
    if report.disk_format not in qemu.DRIVERS:
        raise ConversionRefused(
            f"{report.path}: {report.disk_format} images cannot be converted by imgfmt", report
        )
    return report


def _refuse_containers(source: Source, report: ImageReport) -> None:
    if report.container_format != "bare":
        raise ConversionRefused(
            f"{report.path}: a {report.container_format} container; converting the disk "
            "inside one is not wired to container detection yet; extract the disk first",
            report,
        )
    if report.disk_format != "raw":
        return
    head = source.read(0, 512)
    archive = any(head[at : at + len(magic)] == magic for at, magic in _ARCHIVE_MAGIC)
    if archive or head.startswith(_ZSTD_MAGIC):
        raise ConversionRefused(
            f"{report.path}: looks like an archive or compressed file, not a raw disk; "
            "converting OVA and compressed sources is not supported yet; extract it first",
            report,
        )


def _format(report: ImageReport) -> str:
    assert report.disk_format is not None  # a safe report always names its format
    return report.disk_format


def _check_destination(request: Request) -> str:
    destination = os.path.abspath(request.destination)
    directory = os.path.dirname(destination)
    if not os.path.isdir(directory):
        raise UsageError(f"{request.destination}: directory {directory} does not exist")
    try:
        existing = os.stat(destination)
    except FileNotFoundError:
        return destination
    except OSError as exc:
        raise SourceError(f"{request.destination}: cannot check: {exc.strerror}") from exc
    if os.path.samestat(existing, os.stat(request.source)):
        raise UsageError(f"{request.destination}: is the source itself; choose another name")
    if os.path.isdir(destination):
        raise UsageError(f"{request.destination}: is a directory; name the output file")
    if not request.force:
        raise UsageError(f"{request.destination}: exists; pass --force to replace it")
    return destination


@contextmanager
def _scratch(destination: str) -> Iterator[str]:
    """A file path with the destination's name, in a scratch directory beside it."""
    directory, name = os.path.split(destination)
    try:
        scratch = tempfile.mkdtemp(prefix=f".{name}.imgfmt-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SourceError(f"{directory}: cannot create scratch space: {exc.strerror}") from exc
    try:
        yield os.path.join(scratch, name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_output(
    request: Request,
    args: qemu.ConvertArgs,
    source: ImageReport,
    path: str,
    policy: Policy,
) -> tuple[ImageReport, tuple[str, ...]]:
    target = args.target_format
    # The policy's size cap and vmdk types apply to the output; its format list does not,
    # since converting out of a disallowed format is often the point.
    allowed = replace(policy, disk_formats=policy.disk_formats | {target})
    output = inspect(path, allowed, target)
    if not output.safe:
        problems = "; ".join(
            f"{f.code}: {f.message}" for f in output.findings if f.severity >= Severity.UNSAFE
        )
        raise ConversionCheckFailed(
            f"{request.destination}: qemu-img's output is unsafe: {problems}"
        )
    return output, _size_notes(request, args, source, output)


def _size_notes(
    request: Request, args: qemu.ConvertArgs, source: ImageReport, output: ImageReport
) -> tuple[str, ...]:
    want, got = source.virtual_size, output.virtual_size
    assert want is not None and got is not None  # both reports are safe
    if got == want:
        return ()
    if args.target_format == "vhd" and args.options.get("force_size") == "off" and got > want:
        return (
            f"virtual size rounded up from {want} to {got} bytes to a CHS geometry "
            "(vhd with force_size=off, as qemu's vpc driver does)",
        )
    raise ConversionCheckFailed(
        f"{request.destination}: virtual size is {got} bytes, the source's is {want}"
    )


def _verify(image: qemu.ImageRef, output: str, target: str, limits: qemu.Limits) -> None:
    difference = qemu.compare(image, qemu.ImageRef.of(output, target), limits)
    if difference is not None:
        raise ConversionCheckFailed(f"{output}: --verify found a difference: {difference}")


def _commit(scratch: str, destination: str) -> int:
    """Make the output durable under its final name; return the bytes it takes on disk."""
    mask = os.umask(0)
    os.umask(mask)
    fd = os.open(scratch, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o666 & ~mask)
        os.fsync(fd)
        written = os.fstat(fd).st_blocks * 512
    finally:
        os.close(fd)
    os.replace(scratch, destination)
    _fsync_directory(os.path.dirname(destination))
    return written


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _range_note(request: Request) -> tuple[str, ...]:
    if request.source_offset == 0 and request.source_length is None:
        return ()
    return (f"read {request.source_length} bytes of {request.source} at {request.source_offset}",)

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

qemu-img opens the source by its path, after imgfmt inspected it: the source's device, inode,
size, mtime and ctime are taken before the inspection and compared once qemu-img is done, so a
file replaced or written meanwhile fails the conversion. Any write, rename or ``utime`` moves the
ctime, which no unprivileged process can set back; a change within one tick of the file
system's timestamp clock after the first look can go unseen.

A source can be a byte range of a file. An OVA is converted in place: the whole package must be
safe (members, manifest digests, descriptor), and qemu-img reads its disk's tar member as a byte
range (``ImageReport.location``); an OVA with several disks needs ``member``, the disk's file
name in the descriptor's References. A compressed source (gzip, xz, zstd, bzip2) is
decompressed as a stream by ``containers.compressed.decompress`` into the scratch directory,
whole chunks of zeros left as holes, then inspected whole and converted from there.

Decompression is bounded twice. Its size: the size the head inspection measured when the stream
ended inside its window; else the virtual size the disk inside declares, plus room for its
format's metadata (``METADATA_DIVISOR``, ``METADATA_MARGIN``); else, for a raw disk, which
declares nothing, ``[image_format] max_virtual_size``; with none of these it is refused, as a
bomb would be. Its room: it stops while ``FREE_SPACE_RESERVE`` bytes are still free, so a stream
that would fill the file system fails cleanly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NamedTuple

from . import qemu
from .containers.compressed import DECOMPRESSION_CAP, compression, decompress
from .detect import claim_findings, inspect, prepare
from .errors import FormatError, ImgfmtError, SourceError, UsageError
from .log import Logger
from .policy import Policy
from .report import Code, Finding, ImageReport, Severity
from .signals import sigterm_raises
from .source import FileSource, SliceSource, Source

log = Logger(__name__)

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
#: Room for a format's metadata over its declared virtual size, as a divisor of that size:
#: qcow2 with 512-byte clusters spends 1/64 on L2 tables and 1/256 on refcounts, the other
#: formats less. A qcow2 whose internal snapshots take more is refused at the limit.
METADATA_DIVISOR = 16
#: Fixed room on top of it: headers, a vhdx log, a vmdk descriptor.
METADATA_MARGIN = 64 * 1024 * 1024
#: Decompression stops while this much space is still free where it writes.
FREE_SPACE_RESERVE = 64 * 1024 * 1024
#: Seconds between flushes of qemu-img's output while it is being written (``_WriteBack``).
WRITE_BACK_INTERVAL = 0.05
#: Findings of a compressed source's head inspection that inspecting the decompressed file
#: settles; any other unsafe finding refuses the source before it is decompressed.
_SETTLED_BY_DECOMPRESSING = frozenset({Code.DECOMPRESSION_LIMIT, Code.STREAM_UNVERIFIABLE})


class ConversionRefused(ImgfmtError):
    """The source is unsafe or not what was claimed; nothing was written."""

    def __init__(self, message: str, report: ImageReport) -> None:
        self.report = report
        super().__init__(message)


class ConversionCheckFailed(ImgfmtError):
    """qemu-img's output failed the check after conversion; it was discarded."""


class Request(NamedTuple):
    """One conversion: ``source`` (or ``source_length`` bytes of it from ``source_offset``)
    into ``destination`` as ``target_format`` (Glance's names: raw, qcow2, vmdk, vhd, ...).
    ``member`` names the disk of an OVA that holds several (its References href)."""

    source: str
    destination: str
    target_format: str
    source_format: str | None = None
    source_offset: int = 0
    source_length: int | None = None
    member: str | None = None
    options: Mapping[str, str] = {}
    compress: bool = False
    sparse_size: int | None = None
    out_of_order: bool = False
    coroutines: int | None = None
    force: bool = False
    verify: bool = False


class ConversionResult(NamedTuple):
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
    on_progress: Callable[[int, int], None] | None = None,
) -> ConversionResult:
    """Convert safely; see the module docstring. ``on_progress`` gets the bytes of the virtual
    disk converted so far and the virtual size, as qemu-img reports its progress.

    Raises ``ConversionRefused`` for an unsafe source, ``ConversionCheckFailed`` when the
    output fails its check, ``Interrupted`` on SIGTERM, ``qemu.QemuError`` when qemu-img
    fails and ``UsageError`` / ``SourceError`` for bad requests and unreadable files.
    """
    # A claimed format that disagrees with the content is always unsafe here, whatever
    # [image_format] require_image_format_match says: qemu would read it as the claim.
    policy = replace(policy or Policy(), require_image_format_match=True)
    limits = limits or qemu.Limits()
    args = _convert_args(request)
    start = time.monotonic()
    inspected = _identity(request.source)
    disk = _locate(request, policy)
    destination = _check_destination(request)

    with sigterm_raises(), _scratch(destination) as scratch:
        if disk.report.container_format == "compressed":
            disk = _decompressed(disk, request.source_format, policy, scratch)
        image = disk.image()
        argv = qemu.convert_argv(image, scratch, args, progress=on_progress is not None)
        fractions = None if on_progress is None else _in_bytes(on_progress, disk.report)
        write_back = _WriteBack(scratch, args.target_format)
        qemu.run(argv, limits, fractions, meanwhile=write_back)
        write_back.check(request.destination)
        _check_unchanged(request.source, inspected)
        output, notes = _check_output(request, args, disk.report, scratch, policy)
        if request.verify:
            _verify(image, scratch, args.target_format, limits)
        written = _commit(scratch, destination)
    return ConversionResult(
        source=disk.report,
        output=replace(output, path=destination),
        argv=tuple(argv),
        seconds=time.monotonic() - start,
        bytes_written=written,
        verified=request.verify,
        notes=(*disk.notes, *notes),
    )


def _in_bytes(
    on_progress: Callable[[int, int], None], disk: ImageReport
) -> Callable[[float], None]:
    """qemu-img's progress fractions as bytes of ``disk``'s virtual size."""
    size = disk.virtual_size or 0
    return lambda fraction: on_progress(round(fraction * size), size)


def _identity(path: str) -> tuple[int, ...] | None:
    """The file's device, inode, size, mtime and ctime (``None`` when it cannot be seen)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_unchanged(path: str, inspected: tuple[int, ...] | None) -> None:
    """qemu-img opened the source by its path: it must still be the file that was inspected."""
    if inspected is None or _identity(path) != inspected:
        raise SourceError(
            f"{path}: the file was replaced or changed while it was inspected and converted; "
            "nothing was written"
        )


class _Disk(NamedTuple):
    """What qemu-img reads: a disk's report, and the file (or byte range of one) holding it."""

    report: ImageReport
    path: str
    offset: int = 0
    length: int | None = None
    notes: tuple[str, ...] = ()

    def image(self) -> qemu.ImageRef:
        assert self.report.disk_format is not None  # a checked report names its format
        return qemu.ImageRef.of(self.path, self.report.disk_format, self.offset, self.length)


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
def _opened(path: str, offset: int, length: int | None) -> Iterator[Source]:
    """The bytes of a file, or of the byte range of it from ``offset``."""
    whole = FileSource(path)
    with whole:
        if offset == 0 and length is None:
            yield whole
            return
        if offset < 0 or length is None or length < 0 or offset + length > whole.size:
            raise UsageError(
                f"{path}: byte range {offset}+{length} is not inside the file ({whole.size} bytes)"
            )
        yield SliceSource(whole, offset, length, f"{path}[{offset}:{offset + length}]")


def _locate(request: Request, policy: Policy) -> _Disk:
    """The disk to convert: the source itself, the disk of an OVA, or a compressed stream."""
    offset, length = request.source_offset, request.source_length
    report = _inspect(request.source, offset, length, policy)
    disk = _Disk(
        report, request.source, offset, length, _range_note(request.source, offset, length)
    )
    if report.container_format == "ova":
        disk = _ova_disk(disk, request.member)
    elif request.member is not None:
        raise UsageError(f"--member {request.member}: {report.path} is not an OVA")
    if disk.report.container_format == "compressed":
        _refuse_unsafe_head(disk.report)
        return disk
    return _checked(_in_sectors(disk, policy), request.source_format, policy)


def _in_sectors(disk: _Disk, policy: Policy) -> _Disk:
    """The disk as qemu-img will read it: a byte range in whole 512-byte sectors.

    qemu's raw driver takes no other range, so a tar member whose size is not a whole number of
    sectors is read with the padding after it; that padding is the archive's to choose, so the
    range qemu reads is inspected again and must give the same format.
    """
    if disk.length is None or disk.length % qemu.SECTOR == 0:
        return disk
    length = disk.length + qemu.SECTOR - disk.length % qemu.SECTOR
    report = _inspect(disk.path, disk.offset, length, policy, disk.report.path)
    if report.disk_format != disk.report.disk_format:
        raise ConversionRefused(
            f"{disk.report.path}: read in whole sectors, as qemu-img reads it (with the "
            f"{length - disk.length} bytes after it), it is {report.disk_format}, "
            f"not {disk.report.disk_format}",
            report,
        )
    return disk._replace(report=report, length=length)


def _inspect(
    path: str, offset: int, length: int | None, policy: Policy, shown_as: str | None = None
) -> ImageReport:
    with _opened(path, offset, length) as source:
        report = inspect(source, policy)
        if shown_as is not None:
            report = replace(report, path=shown_as)
        _refuse_archives(source, report)
    return report


def _refuse_archives(source: Source, report: ImageReport) -> None:
    if report.container_format != "bare" or report.disk_format != "raw":
        return
    head = source.read(0, 512)
    if head[257:262] == b"ustar" or compression(head) is not None:
        raise ConversionRefused(
            f"{report.path}: looks like a tar archive or a compressed file that is no OVA or "
            "compressed image imgfmt can open, not a raw disk; extract the disk first",
            report,
        )


def _checked(disk: _Disk, claim: str | None, policy: Policy) -> _Disk:
    """The disk, if qemu-img may convert it: bare, safe, of the claimed format, one qemu reads."""
    report = disk.report
    if claim is not None:
        extra = claim_findings(report, claim, policy)
        report = replace(report, findings=(*report.findings, *extra))
    if report.container_format != "bare":
        raise ConversionRefused(
            f"{report.path}: a {report.container_format} container; imgfmt converts the disk "
            "of an OVA or of a compressed file, not of this",
            report,
        )
    if not report.safe:
        raise ConversionRefused(f"{report.path}: refusing to convert an unsafe image", report)
    if report.disk_format not in qemu.DRIVERS:
        raise ConversionRefused(
            f"{report.path}: {report.disk_format} images cannot be converted by imgfmt", report
        )
    return disk._replace(report=report)


def _ova_disk(ova: _Disk, member: str | None) -> _Disk:
    """The OVA's one disk, or the one ``member`` names, read in place."""
    report = ova.report
    if not report.safe:
        raise ConversionRefused(f"{report.path}: refusing to convert from an unsafe OVA", report)
    disks = _ova_disks(report)
    names = ", ".join(disks) or "none"
    if member is None and len(disks) != 1:
        raise UsageError(
            f"{report.path}: holds {len(disks)} disks; choose one with --member ({names})"
        )
    chosen = disks.get(member) if member is not None else next(iter(disks.values()))
    if chosen is None or chosen.location is None:
        raise UsageError(f"--member {member}: not a disk of {report.path} (disks: {names})")
    where = chosen.location
    offset = ova.offset + where.offset
    return _Disk(
        chosen, ova.path, offset, where.length, _range_note(ova.path, offset, where.length)
    )


def _ova_disks(report: ImageReport) -> dict[str, ImageReport]:
    """The reports of the OVA's disks by file name (References href), in DiskSection order."""
    hrefs = {f["id"]: f["href"] for f in report.details.get("files", ())}
    located = {m.location.name: m for m in report.members if m.location is not None}
    names = (hrefs.get(disk["file_ref"]) for disk in report.details.get("disks", ()))
    return {name: located[name] for name in names if name in located}


def _refuse_unsafe_head(report: ImageReport) -> None:
    unsettled = [f for f in _unsafe(report) if f.code not in _SETTLED_BY_DECOMPRESSING]
    if unsettled:
        raise ConversionRefused(f"{report.path}: refusing to convert an unsafe image", report)


def _unsafe(report: ImageReport) -> Iterator[Finding]:
    yield from (f for f in report.findings if f.severity >= Severity.UNSAFE)
    for member in report.members:
        yield from _unsafe(member)


def _decompressed(disk: _Disk, claim: str | None, policy: Policy, scratch: str) -> _Disk:
    """The compressed disk written beside qemu-img's output, inspected whole and checked."""
    cap = _decompression_cap(disk.report, policy)
    path = f"{scratch}.decompressed"
    try:
        with _opened(disk.path, disk.offset, disk.length) as source:
            size = _write_sparse(decompress(source, cap), path)
    except FormatError as exc:
        raise ConversionRefused(f"{disk.report.path}: {exc}", disk.report) from None
    report = _inspect(path, 0, None, policy, f"{disk.report.path} (decompressed)")
    kind = disk.report.details.get("compression")
    note = f"decompressed the {kind} stream of {disk.report.path} ({size} bytes) to scratch space"
    return _checked(_Disk(report, path, notes=(*disk.notes, note)), claim, policy)


def _decompression_cap(report: ImageReport, policy: Policy) -> int:
    """How many bytes a compressed source may decompress to; see the module docstring."""
    measured = report.details.get("uncompressed_size")
    if isinstance(measured, int):
        return measured
    size = report.virtual_size if report.virtual_size is not None else policy.max_virtual_size
    if size is None:
        raise ConversionRefused(
            f"{report.path}: decompresses to more than {DECOMPRESSION_CAP} bytes and the "
            f"{report.disk_format} disk inside declares no size to bound it (a compression "
            "bomb, or a large raw disk); set [image_format] max_virtual_size to convert one "
            "up to that size",
            report,
        )
    return size + size // METADATA_DIVISOR + METADATA_MARGIN


def _write_sparse(chunks: Iterable[bytes], path: str) -> int:
    """Write ``chunks`` to the new file ``path``, whole chunks of zeros as holes; its size."""
    size = 0
    try:
        with open(path, "xb") as out:
            for chunk in chunks:
                if chunk.count(0) == len(chunk):
                    out.seek(len(chunk), os.SEEK_CUR)
                else:
                    _ensure_room(out.fileno(), len(chunk), path)
                    out.write(chunk)
                size += len(chunk)
            out.truncate(size)
    except OSError as exc:
        raise SourceError(f"{path}: cannot write the decompressed image: {exc.strerror}") from exc
    return size


def _ensure_room(fd: int, length: int, path: str) -> None:
    stats = os.fstatvfs(fd)
    free = stats.f_bavail * stats.f_frsize
    if free - length < FREE_SPACE_RESERVE:
        directory = os.path.dirname(os.path.dirname(path))
        raise SourceError(
            f"{directory}: no space left to decompress the source: {free} bytes free, and "
            f"decompression leaves at least {FREE_SPACE_RESERVE}"
        )


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


class _WriteBack:
    """While qemu-img runs: a thread that loads what the output's inspection needs, then
    flushes the output to disk as it grows, so that the fsync before the rename finds little
    left to write. qemu-img itself writes into the page cache only: on the benchmark's 1 GiB
    conversions the fsync after it took nearly as long again as the conversion itself.

    A flush that fails is kept and raised by ``check``: the kernel reports a writeback error
    to one fsync only, so a failure seen here would never reach the one in ``_commit``.
    """

    def __init__(self, path: str, disk_format: str) -> None:
        self.path = path
        self.disk_format = disk_format
        self.error: OSError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imgfmt-write-back", daemon=True)

    def __enter__(self) -> _WriteBack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self, destination: str) -> None:
        if self.error is not None:
            raise SourceError(
                f"{destination}: cannot write the output: {self.error.strerror}; "
                "nothing was written"
            )

    def _run(self) -> None:
        try:
            prepare(self.disk_format)
        except Exception as exc:  # the output's inspection meets it again and reports it
            log.debug("preparing to inspect %s failed: %s", self.disk_format, exc)
        fd = None
        try:
            while not self._stop.wait(WRITE_BACK_INTERVAL):
                if fd is None:
                    fd = _open_output(self.path)
                if fd is not None:
                    os.fdatasync(fd)
        except OSError as exc:
            self.error = exc
        finally:
            if fd is not None:
                os.close(fd)


def _open_output(path: str) -> int | None:
    """A descriptor of qemu-img's output, or ``None`` while qemu-img has not created it."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


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


def _range_note(path: str, offset: int, length: int | None) -> tuple[str, ...]:
    if offset == 0 and length is None:
        return ()
    return (f"read {length} bytes of {path} at {offset}",)

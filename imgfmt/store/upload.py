"""``image create``: inspect, then stream the bytes once into a backend, hashing as they pass.

The order is Glance's, made strict: the image is inspected before anything is written; an
unsafe image writes nothing and creates no record. The record goes queued -> saving ->
active, and on any failure (an error, Ctrl-C, SIGTERM) the backend removes its partial data
and the record is marked killed with the reason.

From a stream (``--file -``) only the head has been seen when writing starts: detection runs on
it, ignoring only what a head cannot judge (a table past the bytes seen so far), and the full
inspection runs again on the head and tail once the stream ends. A failure then removes what
was written.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from ..detect import inspect
from ..errors import SourceError, UsageError
from ..log import Logger
from ..policy import Policy
from ..report import Code, ImageReport, Severity
from ..signals import Interrupted, sigterm_raises
from ..source import (
    STREAM_HEAD_WINDOW,
    STREAM_TAIL_WINDOW,
    BytesSource,
    FileSource,
    StreamSource,
)
from .base import Backend, Stored, uploader
from .catalog import Catalog, ImageRecord
from .config import StoreConfig
from .errors import ImageRefused, NotFound, StoreError
from .hashing import ParallelHasher

log = Logger(__name__)

#: Bytes read from the input at a time (and handed to the hashers and the backend).
PIPE_CHUNK = 4 * 1024 * 1024
#: Record property naming the process that is uploading; gone once the image is active.
UPLOAD_PID = "imgfmt_upload_pid"
#: Record property with the reason an upload was killed.
KILL_REASON = "imgfmt_kill_reason"
#: Codes a stream's head alone cannot judge: the structure may continue past the head.
_NEEDS_END = frozenset({Code.TRUNCATED, Code.OUT_OF_BOUNDS, Code.STREAM_UNVERIFIABLE})
#: Claimed formats whose only mark may be at the end: a fixed VHD's footer is its last 512
#: bytes, so its head reads as raw and the claim is judged once the whole stream was seen.
_CLAIMS_JUDGED_AT_END = frozenset({"vhd"})

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CreateRequest:
    """What ``imgfmt image create`` was asked to do."""

    name: str | None
    file: str
    disk_format: str | None = None
    container_format: str | None = None
    store: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    convert_to: str | None = None


def create_image(
    request: CreateRequest,
    config: StoreConfig,
    catalog: Catalog,
    policy: Policy,
    progress: Progress | None = None,
    stdin: BinaryIO | None = None,
) -> ImageRecord:
    """Inspect and upload one image; return its active record.

    ``request.file == "-"`` reads ``stdin`` (default: the process's standard input). With
    ``request.convert_to`` (or Glance's ``[image_conversion] output_format``) a file in another
    format is converted first, in the store's scratch directory, and that output is uploaded.
    """
    backend = config.spec(request.store).backend()
    if request.file == "-":
        if request.convert_to:
            raise UsageError("--convert-to needs a file: standard input cannot be converted")
        stream = stdin if stdin is not None else sys.stdin.buffer
        return _from_stream(request, config, catalog, policy, backend, stream, progress)
    # One open file for inspection and upload: what is stored is exactly what was inspected,
    # whatever happens to the path meanwhile.
    source = FileSource(request.file)
    with source:
        if not source.seekable_file:
            raise SourceError(
                f"{request.file}: not a regular file or block device; use --file - for a stream"
            )
        report = inspect(source, policy=policy, expect_format=request.disk_format)
        _refuse_unsafe(report, request.file)
        target = request.convert_to or config.config.get("image_conversion", "output_format")
        if not target or report.disk_format == target:
            _warn_unclonable(backend, report, request.file)
            chunks = _inspected(source, progress)
            return _upload(request, config, catalog, backend, report, chunks, source.size)
    return _converted(request, target, config, catalog, policy, progress)


def _converted(
    request: CreateRequest,
    target: str,
    config: StoreConfig,
    catalog: Catalog,
    policy: Policy,
    progress: Progress | None,
) -> ImageRecord:
    """Convert through ``imgfmt convert``'s safe path into the scratch directory, then upload."""
    from ..convert import Request, convert

    try:
        config.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"scratch directory {config.work_dir} ([task] work_dir): {exc.strerror}"
        ) from exc
    scratch = config.work_dir / f"{uuid.uuid4()}.{target}"
    try:
        convert(Request(request.file, str(scratch), target, request.disk_format), policy)
        converted = replace(request, file=str(scratch), disk_format=target, convert_to=None)
        return create_image(converted, config, catalog, policy, progress)
    finally:
        scratch.unlink(missing_ok=True)


def _warn_unclonable(backend: Backend, report: ImageReport, name: str) -> None:
    """Ceph clones copy-on-write only from raw images; anything else is copied per boot."""
    if backend.type == "rbd" and report.disk_format != "raw":
        log.warning(
            "%s is %s: store %s (Ceph RBD) can clone only raw images copy-on-write; "
            "use --convert-to raw",
            name,
            report.disk_format,
            backend.id,
        )


def _from_stream(
    request: CreateRequest,
    config: StoreConfig,
    catalog: Catalog,
    policy: Policy,
    backend: Backend,
    stream: BinaryIO,
    progress: Progress | None,
) -> ImageRecord:
    head = _read_head(stream)
    early = inspect(BytesSource(head, "<stdin>"), policy=policy, expect_format=request.disk_format)
    complete = len(head) < STREAM_HEAD_WINDOW
    ignore = frozenset() if complete else _NEEDS_END
    if not complete and request.disk_format in _CLAIMS_JUDGED_AT_END and early.disk_format == "raw":
        ignore |= {Code.FORMAT_MISMATCH}
    _refuse_unsafe(early, "<stdin>", ignore=ignore)
    _warn_unclonable(backend, early, "<stdin>")
    tee = _Tee(head, stream, progress)

    def final_check(report: ImageReport) -> ImageReport:
        if complete:
            return report
        final = inspect(tee.source(), policy=policy, expect_format=request.disk_format)
        _refuse_unsafe(final, "<stdin> (once the whole stream was seen)")
        # The record took its formats from the head; the whole stream must be the same image
        # (a fixed VHD's only footer is at the end: its head alone reads as raw).
        detected = (final.disk_format, final.container_format)
        recorded = (early.disk_format, early.container_format)
        if request.disk_format is None and detected != recorded:
            raise ImageRefused(
                f"<stdin>: refused, nothing was written: the first {len(head)} bytes read as "
                f"{'/'.join(map(str, recorded))} but the whole stream as "
                f"{'/'.join(map(str, detected))}; upload the file itself",
                final,
            )
        return final

    return _upload(request, config, catalog, backend, early, iter(tee), None, final_check)


def _upload(
    request: CreateRequest,
    config: StoreConfig,
    catalog: Catalog,
    backend: Backend,
    report: ImageReport,
    chunks: Iterator[bytes],
    size: int | None,
    final_check: Callable[[ImageReport], ImageReport] = lambda report: report,
) -> ImageRecord:
    properties = {**request.properties, UPLOAD_PID: uploader()}
    record = catalog.create(
        request.name,
        request.disk_format or report.disk_format,
        request.container_format or report.container_format,
        properties,
    )
    hasher = ParallelHasher(config.hashing_algorithm)
    stored: Stored | None = None
    try:
        with sigterm_raises():
            catalog.update(record.id, status="saving")
            stored = backend.add(record.id, _hashed(chunks, hasher), size)
            report = final_check(report)
            md5, os_hash = hasher.finish()
            return _activate(
                catalog, record, report, stored, md5, os_hash, config.hashing_algorithm
            )
    except BaseException as exc:
        hasher.close()
        _abandon(catalog, backend, record, stored, exc)
        raise


def _activate(
    catalog: Catalog,
    record: ImageRecord,
    report: ImageReport,
    stored: Stored,
    md5: str,
    os_hash: str,
    algorithm: str,
) -> ImageRecord:
    properties = {k: v for k, v in record.properties.items() if k != UPLOAD_PID}
    return catalog.update(
        record.id,
        status="active",
        size=stored.size,
        virtual_size=report.virtual_size,
        checksum=md5,
        os_hash_algo=algorithm,
        os_hash_value=os_hash,
        locations=(stored.location,),
        properties=properties,
    )


def _abandon(
    catalog: Catalog,
    backend: Backend,
    record: ImageRecord,
    stored: Stored | None,
    exc: BaseException,
) -> None:
    """Remove the data of a failed upload and mark its record killed.

    A record that became active before the interruption keeps its data; one deleted meanwhile
    (``image delete`` of a saving image) stays deleted, without the data written for it.
    """
    current = catalog.get(record.id)
    if current.status == "active":
        return
    if stored is not None:
        with contextlib.suppress(NotFound):
            backend.delete(stored.location)
    if current.status not in ("queued", "saving"):
        return
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        reason = "interrupted"
    properties = {k: v for k, v in current.properties.items() if k != UPLOAD_PID}
    properties[KILL_REASON] = reason
    catalog.update(record.id, status="killed", properties=properties)


def _refuse_unsafe(report: ImageReport, name: str, ignore: frozenset[Code] = frozenset()) -> None:
    blocking = [
        f for f in report.findings if f.severity is Severity.UNSAFE and f.code not in ignore
    ]
    if blocking:
        summary = "; ".join(f"{f.code}: {f.message}" for f in blocking)
        raise ImageRefused(f"{name}: refused, nothing was written: {summary}", report)


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    """The input in ``PIPE_CHUNK`` pieces; a failing read is the input's fault, not the store's."""
    done = 0
    while True:
        try:
            chunk = f.read(PIPE_CHUNK)
        except OSError as exc:
            name = getattr(f, "name", "<stdin>")
            raise SourceError(
                f"{name}: reading the image failed after {done} bytes: {exc}"
            ) from exc
        if not chunk:
            return
        yield chunk
        done += len(chunk)


def _inspected(source: FileSource, progress: Progress | None) -> Iterator[bytes]:
    """The inspected bytes, read through the inspected open file; a change since fails."""
    done = 0
    while done < source.size:
        chunk = source.read(done, PIPE_CHUNK)
        if not chunk:
            break
        yield chunk
        done += len(chunk)
        if progress:
            progress(done)
    if done != source.size or source.changed():
        raise SourceError(
            f"{source.name}: the file changed after it was inspected "
            f"({done} of {source.size} bytes read); it was not stored"
        )


def _hashed(chunks: Iterator[bytes], hasher: ParallelHasher) -> Iterator[bytes]:
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def _read_head(stream: BinaryIO) -> bytes:
    buf = bytearray()
    while len(buf) < STREAM_HEAD_WINDOW:
        chunk = stream.read(STREAM_HEAD_WINDOW - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class _Tee:
    """Yields a stream's chunks (the head first) and keeps its tail for the final check."""

    def __init__(self, head: bytes, stream: BinaryIO, progress: Progress | None) -> None:
        self.head = head
        self.stream = stream
        self.progress = progress
        self.tail = b""
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        if self.head:
            yield from self._account(self.head)
        for chunk in _chunks(self.stream):
            yield from self._account(chunk)

    def _account(self, chunk: bytes) -> Iterator[bytes]:
        self.size += len(chunk)
        self.tail = (self.tail + chunk[-STREAM_TAIL_WINDOW:])[-STREAM_TAIL_WINDOW:]
        yield chunk
        if self.progress:
            self.progress(self.size)

    def source(self) -> StreamSource:
        """Head and tail as a source; the tail never overlaps the head."""
        beyond_head = self.size - len(self.head)
        tail = self.tail[len(self.tail) - min(len(self.tail), beyond_head) :]
        return StreamSource(self.head, tail, self.size, "<stdin>")

"""qed: the QEMU Enhanced Disk format.

References: qemu docs/interop/qed_spec.txt (header, feature bits), and qemu 7.2 block/qed.c
(``bdrv_qed_do_open``, ``qed_is_cluster_size_valid``, ``qed_is_table_size_valid``,
``qed_is_image_size_valid``, ``qed_read_string``) and block/qed.h (``qed_check_table_offset``,
the limits). A header qemu 7.2 refuses to open is unsafe, and so is a backing file.

qemu's sums are done in fixed-width unsigned integers; where they can wrap, this module wraps
them the same way (``_u64``) so that it accepts and refuses exactly what qemu does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, info, unsafe, warning
from ..source import Source
from .base import Inspection, Inspector, cstring, probe_bytes

log = Logger(__name__)

FORMAT = "qed"
MAGIC = b"QED\0"

#: The header (qed_spec.txt "Header"), little-endian; the backing file fields close it.
HEADER = struct.Struct("<4sIIIQQQQQII")
#: Byte offset of each header field, for findings.
FIELD_OFFSET = {
    "cluster_size": 4,
    "table_size": 8,
    "header_size": 12,
    "features": 16,
    "compat_features": 24,
    "autoclear_features": 32,
    "l1_table_offset": 40,
    "image_size": 48,
    "backing_filename_offset": 56,
    "backing_filename_size": 60,
}

F_BACKING_FILE = 0x01
F_NEED_CHECK = 0x02
F_BACKING_FORMAT_NO_PROBE = 0x04
FEATURE_MASK = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE
#: qemu 7.2 knows no compatible and no autoclear features.
COMPAT_FEATURE_MASK = 0
AUTOCLEAR_FEATURE_MASK = 0

MIN_CLUSTER_SIZE = 4 * 1024
MAX_CLUSTER_SIZE = 64 * 1024 * 1024
MIN_TABLE_SIZE = 1
MAX_TABLE_SIZE = 16
SECTOR_SIZE = 512
UINT32_MAX = 2**32 - 1
#: ``bs->auto_backing_file`` is PATH_MAX bytes; qed_read_string refuses a name that fills it.
BACKING_FILENAME_BUFFER = 4096

REFUSED = "qemu 7.2 refuses to open the image"


class QedHeader(NamedTuple):
    """The QED header; fields as in qed_spec.txt."""

    magic: bytes
    cluster_size: int
    table_size: int
    header_size: int
    features: int
    compat_features: int
    autoclear_features: int
    l1_table_offset: int
    image_size: int
    backing_filename_offset: int
    backing_filename_size: int

    @classmethod
    def from_bytes(cls, data: bytes) -> QedHeader:
        return cls(*HEADER.unpack(data))

    @property
    def has_backing_file(self) -> bool:
        return bool(self.features & F_BACKING_FILE)


class QedInspector(Inspector):
    """QED images as qemu 7.2 opens them."""

    format = FORMAT

    @classmethod
    def probe(cls, source: Source) -> bool:
        return probe_bytes(source, 0, len(MAGIC)) == MAGIC

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        header = QedHeader.from_bytes(cls.read(source, 0, HEADER.size, "header"))
        log.debug("%s: qed header, cluster_size %d", source.name, header.cluster_size)
        if header.magic != MAGIC:
            raise cls.error(f"magic {header.magic!r} at 0x0 is not {MAGIC!r}", 0, "magic")

        findings = list(_feature_findings(header))
        findings += _geometry_findings(header, source.size)
        backing_file, backing_findings = _backing_file(source, header)
        findings += backing_findings

        details: dict[str, Any] = {
            "cluster_size": header.cluster_size,
            "table_size": header.table_size,
            "header_size": header.header_size,
            "features": header.features,
            "compat_features": header.compat_features,
            "autoclear_features": header.autoclear_features,
            "l1_table_offset": header.l1_table_offset,
            "image_size": header.image_size,
            "need_check": bool(header.features & F_NEED_CHECK),
            "backing_file": backing_file,
            "backing_format": _backing_format(header),
        }
        # bdrv_qed_co_getlength: the virtual size is image_size as stored.
        return Inspection(FORMAT, header.image_size, details, tuple(findings))


def _feature_findings(header: QedHeader) -> Iterator[Finding]:
    unknown = header.features & ~FEATURE_MASK
    if unknown:
        yield unsafe(
            Code.UNKNOWN_FEATURE,
            f"qed: unknown feature bits {unknown:#x} (features at 0x10); {REFUSED}",
            FIELD_OFFSET["features"],
        )
    if header.features & F_NEED_CHECK:
        # bdrv_qed_do_open repairs only when the file is writable; qemu-img reads it as is.
        yield warning(
            Code.DIRTY,
            "qed: the need-check feature is set (features at 0x10): the image was not closed "
            "cleanly; 'qemu-img check -r all' on a copy repairs it",
            FIELD_OFFSET["features"],
        )
    for name, value, mask in (
        ("compat_features", header.compat_features, COMPAT_FEATURE_MASK),
        ("autoclear_features", header.autoclear_features, AUTOCLEAR_FEATURE_MASK),
    ):
        if value & ~mask:
            yield info(
                Code.NOTE,
                f"qed: unknown {name} bits {value & ~mask:#x}; qemu 7.2 ignores them",
                FIELD_OFFSET[name],
            )


def _geometry_findings(header: QedHeader, file_size: int | None) -> Iterator[Finding]:
    """cluster_size, table_size, image_size and L1 table checks of bdrv_qed_do_open."""
    if not _power_of_two_within(header.cluster_size, MIN_CLUSTER_SIZE, MAX_CLUSTER_SIZE):
        yield _invalid(
            "cluster_size",
            f"cluster_size {header.cluster_size} is not a power of two in 4 KiB..64 MiB",
        )
        return
    if not _power_of_two_within(header.table_size, MIN_TABLE_SIZE, MAX_TABLE_SIZE):
        yield _invalid(
            "table_size", f"table_size {header.table_size} is not a power of two in 1..16"
        )
        return
    if header.image_size > max_image_size(header) or header.image_size % SECTOR_SIZE:
        yield _invalid(
            "image_size",
            f"image_size {header.image_size} is not sector-aligned or exceeds "
            f"{max_image_size(header)}",
        )
    yield from _l1_table_findings(header, file_size)
    if header.header_size > UINT32_MAX // header.cluster_size:
        yield _invalid("header_size", f"header_size {header.header_size} clusters is too large")


def _l1_table_findings(header: QedHeader, file_size: int | None) -> Iterator[Finding]:
    """qed_check_table_offset: aligned, after the header, first and last cluster in the file."""
    offset = header.l1_table_offset
    last = _u64(offset + (header.table_size - 1) * header.cluster_size)
    problem = None
    if last <= offset:
        # The check meant for wrap-around also rejects every one-cluster table.
        problem = "the L1 table wraps around or is a single cluster (table_size 1)"
    elif offset % header.cluster_size:
        problem = f"l1_table_offset {offset:#x} is not cluster-aligned"
    elif offset < header.header_size * header.cluster_size:
        problem = f"l1_table_offset {offset:#x} lies inside the header"
    if problem is not None:
        yield _invalid("l1_table_offset", problem)
        return
    if file_size is None:
        return
    # qemu compares with the file's length in whole sectors, rounded up (bdrv_getlength),
    # then down to whole clusters: a last cluster short of less than a sector still counts.
    end = -(-file_size // SECTOR_SIZE) * SECTOR_SIZE
    if last >= end - end % header.cluster_size:
        yield unsafe(
            Code.OUT_OF_BOUNDS,
            f"qed: the L1 table at {offset:#x} ({header.table_size} clusters) runs past the "
            f"end of the file ({file_size} bytes); {REFUSED}",
            FIELD_OFFSET["l1_table_offset"],
        )


def _backing_file(source: Source, header: QedHeader) -> tuple[str | None, list[Finding]]:
    """The backing file name qemu would open, and the finding that says so."""
    if not header.has_backing_file:
        return None, []
    offset, size = header.backing_filename_offset, header.backing_filename_size
    findings = []
    if offset + size > header.cluster_size * header.header_size:
        findings.append(
            _invalid("backing_filename_offset", "the backing file name lies outside the header")
        )
    elif size >= BACKING_FILENAME_BUFFER:
        findings.append(
            _invalid("backing_filename_size", f"backing_filename_size {size} is too long")
        )
    data = source.read(offset, min(size, BACKING_FILENAME_BUFFER))
    name = cstring(data)
    fmt = _backing_format(header)
    shown = f"'{name}'" + (f" of format '{fmt}'" if fmt else "")
    findings.append(
        unsafe(
            Code.BACKING_FILE,
            f"qed: backing file {shown} (header fields backing_filename_offset/size at 0x38): "
            "qemu would read that host file; convert the image without it or refuse it",
            FIELD_OFFSET["backing_filename_offset"],
        )
    )
    return name, findings


def _backing_format(header: QedHeader) -> str | None:
    # bdrv_qed_do_open: the no-probe feature pins the backing file's format to raw.
    if header.has_backing_file and header.features & F_BACKING_FORMAT_NO_PROBE:
        return "raw"
    return None


def max_image_size(header: QedHeader) -> int:
    """qedmax_image_size, wrapping at 64 bits as qemu's arithmetic does."""
    entries = header.table_size * header.cluster_size // 8
    return _u64(entries * entries * header.cluster_size)


def _power_of_two_within(value: int, low: int, high: int) -> bool:
    return low <= value <= high and value & (value - 1) == 0


def _u64(value: int) -> int:
    return value & (2**64 - 1)


def _invalid(field_name: str, problem: str) -> Finding:
    offset = FIELD_OFFSET[field_name]
    return unsafe(Code.INVALID_HEADER, f"qed: {problem} (at {offset:#x}); {REFUSED}", offset)

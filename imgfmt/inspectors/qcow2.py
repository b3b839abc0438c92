"""qcow2: QEMU copy-on-write image, versions 2 and 3.

References: qemu docs/interop/qcow2.txt (header, header extensions, snapshot table, bitmap
directory), and qemu 7.2 block/qcow2.c (``qcow2_do_open``, ``qcow2_read_extensions``,
``validate_compression_type``, ``qcow2_validate_table``), block/qcow2-snapshot.c
(``qcow2_read_snapshots``) and block/qcow2.h (the limits). Every check below names the
qemu behaviour it mirrors; a header qemu 7.2 refuses to open is unsafe, and so is anything
that makes qemu open another file.

What is not checked: L2 tables, refcount blocks and bitmap tables (they can be huge and only
point inside this file or at zeros), and snapshot entries past ``MAX_SNAPSHOTS_READ``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from ..errors import TruncatedError
from ..log import Logger
from ..report import Code, Finding, info, unsafe, warning
from ..source import Source
from .base import Inspection, Inspector, cstring, probe_bytes

log = Logger(__name__)

FORMAT = "qcow2"
MAGIC = b"QFI\xfb"

#: Header layout (qcow2.txt "Header"): the 72 bytes of version 2, then the version 3 fields.
HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
V2_HEADER_LENGTH = 72
V3_HEADER_LENGTH = HEADER.size
#: Byte offset of the compression_type field, present when header_length exceeds it.
COMPRESSION_TYPE_OFFSET = 104
#: Byte offset of each header field, for findings.
FIELD_OFFSET = {
    "version": 4,
    "backing_file_offset": 8,
    "backing_file_size": 16,
    "cluster_bits": 20,
    "size": 24,
    "crypt_method": 32,
    "l1_size": 36,
    "l1_table_offset": 40,
    "refcount_table_offset": 48,
    "refcount_table_clusters": 56,
    "nb_snapshots": 60,
    "snapshots_offset": 64,
    "incompatible_features": 72,
    "compatible_features": 80,
    "autoclear_features": 88,
    "refcount_order": 96,
    "header_length": 100,
    "compression_type": COMPRESSION_TYPE_OFFSET,
}

EXTENSION = struct.Struct(">II")
FEATURE_ENTRY = struct.Struct(">BB46s")
CRYPTO_EXTENSION = struct.Struct(">QQ")
BITMAPS_EXTENSION = struct.Struct(">IIQQ")
SNAPSHOT_ENTRY = struct.Struct(">QIHHIIQII")
SNAPSHOT_EXTRA = struct.Struct(">QQ")
BITMAP_ENTRY = struct.Struct(">QIIBBHI")

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_CRYPTO_HEADER = 0x0537BE77
EXT_BITMAPS = 0x23852875
EXT_DATA_FILE = 0x44415441
EXTENSION_NAMES = {
    EXT_BACKING_FORMAT: "backing file format name",
    EXT_FEATURE_TABLE: "feature name table",
    EXT_CRYPTO_HEADER: "full disk encryption header pointer",
    EXT_BITMAPS: "bitmaps",
    EXT_DATA_FILE: "external data file name",
}

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_MASK = 0x1F
COMPAT_LAZY_REFCOUNTS = 1 << 0
COMPAT_MASK = COMPAT_LAZY_REFCOUNTS
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1
AUTOCLEAR_MASK = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW
FEATURE_TYPES = ("incompatible", "compatible", "autoclear")

CRYPT_NONE, CRYPT_AES, CRYPT_LUKS = 0, 1, 2
COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}
LUKS_MAGIC = b"LUKS\xba\xbe"

# Limits of qemu 7.2 (block/qcow2.h, include/block/block_int.h).
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MIN_EXTL2_CLUSTER_BITS = 14  # 32 subclusters of at least 512 bytes
MAX_REFCOUNT_ORDER = 6
MAX_L1_SIZE = 32 * 1024 * 1024
MAX_REFTABLE_SIZE = 8 * 1024 * 1024
MAX_SNAPSHOTS = 65536
MAX_SNAPSHOTS_SIZE = 1024 * MAX_SNAPSHOTS
MAX_SNAPSHOT_EXTRA_DATA = 1024
MAX_BITMAPS = 65535
MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS
# block/qcow2-bitmap.c: the checks of check_dir_entry and load_bitmap_data.
BME_MAX_TABLE_SIZE = 0x8000000
BME_MAX_PHYS_SIZE = 0x20000000
BME_MIN_GRANULARITY_BITS = 9
BME_MAX_GRANULARITY_BITS = 31
BME_MAX_NAME_SIZE = 1023
BME_FLAG_IN_USE = 1 << 0
BME_FLAG_AUTO = 1 << 1
BT_DIRTY_TRACKING_BITMAP = 1
MAX_BACKING_FILE_SIZE = 1023
#: ``bs->backing_format`` holds 15 characters and a NUL.
MAX_BACKING_FORMAT_SIZE = 15
INT_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SECTOR_SIZE = 512

# Caps on what this parser reads, whatever the image claims.
#: Header extensions walked; qemu-img writes at most six.
MAX_EXTENSIONS = 64
#: Feature name table bytes read: three types of 64 bits, one 48-byte entry each.
MAX_FEATURE_TABLE_READ = 3 * 64 * FEATURE_ENTRY.size
#: Bytes of an external data file name kept (Linux PATH_MAX).
MAX_DATA_FILE_NAME_READ = 4096
#: Snapshot table entries parsed; the rest are counted, not read.
MAX_SNAPSHOTS_READ = 64
#: Bytes of a snapshot id or name kept for the report.
MAX_SNAPSHOT_NAME_READ = 256
#: Bitmap directory bytes read, and entries parsed from them.
MAX_BITMAP_DIRECTORY_READ = 64 * 1024
MAX_BITMAPS_READ = 64

REFUSED = "qemu 7.2 refuses to open the image"


class Qcow2Header(NamedTuple):
    """The fixed header; version 2 images get qemu's defaults for the version 3 fields."""

    magic: bytes
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int
    compatible_features: int
    autoclear_features: int
    refcount_order: int
    header_length: int
    compression_type: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Qcow2Header:
        """Parse the header from the first bytes of the image (at least 72)."""
        if len(data) < V2_HEADER_LENGTH:
            raise _truncated(0, V2_HEADER_LENGTH, len(data), "header")
        fields = list(HEADER.unpack(data[: HEADER.size].ljust(HEADER.size, b"\0")))
        if fields[1] != 3:
            # qcow2_do_open: version 2 has no feature bits, 16-bit refcounts, 72 bytes.
            fields[13:] = [0, 0, 0, 4, V2_HEADER_LENGTH]
        elif len(data) < V3_HEADER_LENGTH:
            raise _truncated(0, V3_HEADER_LENGTH, len(data), "version 3 header")
        compression_type = 0
        if fields[17] > COMPRESSION_TYPE_OFFSET:
            if len(data) <= COMPRESSION_TYPE_OFFSET:
                raise _truncated(COMPRESSION_TYPE_OFFSET, 1, 0, "compression_type")
            compression_type = data[COMPRESSION_TYPE_OFFSET]
        fields.append(compression_type)
        return cls(*fields)

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_EXTL2)

    @property
    def l2_bits(self) -> int:
        """log2 of the entries per L2 table: 8-byte entries, 16-byte with extended L2."""
        return self.cluster_bits - (4 if self.extended_l2 else 3)

    @property
    def compat(self) -> str:
        return "0.10" if self.version == 2 else "1.1"


class Extension(NamedTuple):
    """One header extension: its type, length and where its data starts."""

    magic: int
    length: int
    offset: int

    @classmethod
    def from_bytes(cls, data: bytes, offset: int) -> Extension:
        magic, length = EXTENSION.unpack(data)
        return cls(magic, length, offset + EXTENSION.size)


class FeatureName(NamedTuple):
    """One entry of the feature name table extension."""

    type: int
    bit: int
    name: str

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureName:
        kind, bit, name = FEATURE_ENTRY.unpack(data)
        return cls(kind, bit, cstring(name))


class CryptoHeaderExtension(NamedTuple):
    """Where the LUKS header of an encrypted image lies (qcow2.txt "Full disk encryption")."""

    offset: int
    length: int

    @classmethod
    def from_bytes(cls, data: bytes) -> CryptoHeaderExtension:
        return cls(*CRYPTO_EXTENSION.unpack(data))


class BitmapsExtension(NamedTuple):
    """The bitmaps extension: count and location of the bitmap directory."""

    nb_bitmaps: int
    reserved32: int
    bitmap_directory_size: int
    bitmap_directory_offset: int

    @classmethod
    def from_bytes(cls, data: bytes) -> BitmapsExtension:
        return cls(*BITMAPS_EXTENSION.unpack(data))


class SnapshotEntry(NamedTuple):
    """The fixed part of one snapshot table entry, plus the known extra data."""

    l1_table_offset: int
    l1_size: int
    id_str_size: int
    name_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    extra_data_size: int

    @classmethod
    def from_bytes(cls, data: bytes) -> SnapshotEntry:
        return cls(*SNAPSHOT_ENTRY.unpack(data))

    @property
    def length(self) -> int:
        """Bytes of the entry, padding to 8 included."""
        raw = SNAPSHOT_ENTRY.size + self.extra_data_size + self.id_str_size + self.name_size
        return (raw + 7) & ~7


class BitmapDirectoryEntry(NamedTuple):
    """The fixed part of one bitmap directory entry (qcow2.txt "Bitmap directory")."""

    bitmap_table_offset: int
    bitmap_table_size: int
    flags: int
    type: int
    granularity_bits: int
    name_size: int
    extra_data_size: int

    @classmethod
    def from_bytes(cls, data: bytes) -> BitmapDirectoryEntry:
        return cls(*BITMAP_ENTRY.unpack(data))

    @property
    def length(self) -> int:
        raw = BITMAP_ENTRY.size + self.extra_data_size + self.name_size
        return (raw + 7) & ~7


class Extensions:
    """What the header extensions say, as qemu would take it (the last of duplicates wins)."""

    def __init__(self) -> None:
        self.backing_format: str | None = None
        self.feature_names: dict[tuple[int, int], str] = {}
        self.crypto: CryptoHeaderExtension | None = None
        self.crypto_offset: int | None = None
        self.bitmaps: BitmapsExtension | None = None
        self.bitmaps_offset: int | None = None
        self.data_file: str | None = None
        self.data_file_offset: int | None = None
        self.seen: list[Extension] = []
        self.findings: list[Finding] = []


class Qcow2Inspector(Inspector):
    """qcow2 versions 2 (compat=0.10) and 3 (compat=1.1)."""

    format = FORMAT

    @classmethod
    def probe(cls, source: Source) -> bool:
        return probe_bytes(source, 0, len(MAGIC)) == MAGIC

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        header = Qcow2Header.from_bytes(source.read(0, V3_HEADER_LENGTH + 8))
        log.debug("%s: qcow2 version %d header", source.name, header.version)
        if header.magic != MAGIC:
            raise cls.error(f"magic {header.magic!r} at 0x0 is not {MAGIC!r}", 0, "magic")
        if header.version not in (2, 3):
            return _unsupported_version(header)
        if not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
            return _unsupported_cluster_bits(header)

        findings = [*_header_findings(header), *_feature_findings(header)]
        findings += _table_findings(header, source.size)
        extensions = _read_extensions(source, header)
        findings += extensions.findings
        findings += _unknown_incompatible_findings(header, extensions)
        findings += _extension_findings(header, extensions, source.size)
        backing_file, backing_findings = _backing_file(source, header, extensions)
        encryption, encryption_findings = _encryption(source, header, extensions)
        snapshots, snapshot_findings = _snapshots(source, header)
        bitmaps, bitmap_findings = _bitmaps(source, header, extensions)
        findings += backing_findings + encryption_findings + snapshot_findings + bitmap_findings

        details = _details(header, extensions)
        details.update(
            backing_file=backing_file,
            encryption=encryption,
            nb_snapshots=header.nb_snapshots,
            snapshots=snapshots,
            bitmaps=bitmaps,
        )
        return Inspection(FORMAT, _virtual_size(header), details, tuple(findings))


def _virtual_size(header: Qcow2Header) -> int:
    # qcow2_do_open keeps whole sectors only: total_sectors = size / 512.
    return header.size // SECTOR_SIZE * SECTOR_SIZE


def _unsupported_version(header: Qcow2Header) -> Inspection:
    """Version 1 (qcow) and unknown versions: qemu reports no size, so neither does this (0)."""
    finding = unsafe(
        Code.UNSUPPORTED_VERSION,
        f"qcow2: version {header.version} (header field version at 0x4) is not 2 or 3; "
        "qemu 7.2 refuses to open it as qcow2, and its other fields cannot be read",
        FIELD_OFFSET["version"],
    )
    return Inspection(FORMAT, 0, {"version": header.version}, (finding,))


def _unsupported_cluster_bits(header: Qcow2Header) -> Inspection:
    findings = [
        unsafe(
            Code.INVALID_HEADER,
            f"qcow2: cluster_bits {header.cluster_bits} at 0x14 is outside "
            f"{MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS}; qemu 7.2 refuses to open the image",
            FIELD_OFFSET["cluster_bits"],
        )
    ]
    if header.backing_file_offset:
        findings.append(
            unsafe(
                Code.BACKING_FILE,
                "qcow2: backing_file_offset at 0x8 is set: the image names a backing file "
                "(not read, the header is invalid); refuse the image",
                FIELD_OFFSET["backing_file_offset"],
            )
        )
    details = {"version": header.version, "cluster_bits": header.cluster_bits}
    return Inspection(FORMAT, _virtual_size(header), details, tuple(findings))


def _header_findings(header: Qcow2Header) -> Iterator[Finding]:
    """Checks of single header fields, in the order qcow2_do_open makes them."""
    length = header.header_length
    if header.version == 3 and length < V3_HEADER_LENGTH:
        yield _invalid("header_length", f"header_length {length} is below 104 for version 3")
    if length > header.cluster_size:
        yield _invalid("header_length", f"header_length {length} exceeds the cluster size")
    if header.version == 3 and length % 8:
        yield warning(
            Code.INVALID_HEADER,
            f"qcow2: header_length {length} at 0x64 is not a multiple of 8 as the spec "
            "requires; qemu 7.2 accepts it",
            FIELD_OFFSET["header_length"],
        )
    if length > V3_HEADER_LENGTH + 8:
        yield info(
            Code.NOTE,
            f"qcow2: header_length {length} covers {length - V3_HEADER_LENGTH - 8} bytes of "
            "header fields newer than qemu 7.2, which ignores them",
            FIELD_OFFSET["header_length"],
        )
    if header.backing_file_offset > header.cluster_size:
        yield _invalid(
            "backing_file_offset",
            f"backing_file_offset {header.backing_file_offset:#x} lies outside the first cluster",
        )
    yield from _compression_findings(header)
    yield from _geometry_findings(header)


def _compression_findings(header: Qcow2Header) -> Iterator[Finding]:
    """validate_compression_type: zlib or zstd, and the incompatible bit set iff not zlib."""
    kind = header.compression_type
    if kind not in COMPRESSION_TYPES:
        yield unsafe(
            Code.UNKNOWN_FEATURE,
            f"qcow2: compression_type {kind} at 0x68 is neither zlib (0) nor zstd (1); "
            "qemu 7.2 refuses to open the image",
            COMPRESSION_TYPE_OFFSET,
        )
    flagged = bool(header.incompatible_features & INCOMPAT_COMPRESSION)
    if flagged != (kind != 0):
        state = "set" if flagged else "clear"
        yield _invalid(
            "incompatible_features",
            f"the compression type incompatible bit is {state} but compression_type is {kind}",
        )


def _geometry_findings(header: Qcow2Header) -> Iterator[Finding]:
    """Refcount width, subcluster size, virtual size and L1 size, as qemu checks them."""
    if header.extended_l2 and header.cluster_bits < MIN_EXTL2_CLUSTER_BITS:
        yield _invalid(
            "cluster_bits",
            f"extended L2 entries need clusters of at least 16 KiB, cluster_bits is "
            f"{header.cluster_bits}",
        )
    if header.refcount_order > MAX_REFCOUNT_ORDER:
        yield _invalid(
            "refcount_order", f"refcount_order {header.refcount_order} is above 6 (64 bits)"
        )
    if header.refcount_table_clusters == 0:
        yield _invalid("refcount_table_clusters", "refcount_table_clusters is 0")
    if header.size > INT64_MAX:
        yield _invalid("size", f"size {header.size} does not fit a signed 64-bit length")
        return
    shift = header.cluster_bits + header.l2_bits
    l1_needed = (header.size + (1 << shift) - 1) >> shift
    if l1_needed > INT_MAX:
        yield _invalid("size", f"size {header.size} needs more L1 entries than qemu allows")
    elif header.l1_size < l1_needed:
        yield _invalid(
            "l1_size",
            f"l1_size {header.l1_size} is below the {l1_needed} entries that size "
            f"{header.size} needs",
        )


def _table_findings(header: Qcow2Header, file_size: int | None) -> Iterator[Finding]:
    """qcow2_validate_table for the refcount, snapshot and L1 tables, then end of file."""
    tables = (
        (
            "refcount_table",
            header.refcount_table_offset,
            header.refcount_table_clusters,
            header.cluster_size,
            MAX_REFTABLE_SIZE,
        ),
        (
            "snapshots",
            header.snapshots_offset,
            header.nb_snapshots,
            SNAPSHOT_ENTRY.size,
            SNAPSHOT_ENTRY.size * MAX_SNAPSHOTS,
        ),
        ("l1_table", header.l1_table_offset, header.l1_size, 8, MAX_L1_SIZE),
    )
    for name, offset, entries, entry_size, max_bytes in tables:
        yield from _validate_table(header, name, offset, entries, entry_size, max_bytes)
        yield from _past_eof(file_size, f"{name}_offset", offset, entries * entry_size)


def _validate_table(
    header: Qcow2Header, name: str, offset: int, entries: int, entry_size: int, max_bytes: int
) -> Iterator[Finding]:
    field_name = f"{name}_offset"
    if entries > max_bytes // entry_size:
        yield _invalid(
            field_name,
            f"the {name} table of {entries * entry_size} bytes exceeds qemu's limit of {max_bytes}",
        )
    elif INT64_MAX - entries * entry_size < offset or offset % header.cluster_size:
        yield _invalid(field_name, f"{field_name} {offset:#x} is not cluster-aligned or too big")


def _past_eof(
    file_size: int | None, field_name: str, offset: int, length: int, where: int | None = None
) -> Iterator[Finding]:
    if file_size is None or length == 0 or offset + length <= file_size:
        return
    at = FIELD_OFFSET.get(field_name) if where is None else where
    yield unsafe(
        Code.OUT_OF_BOUNDS,
        f"qcow2: {field_name} {offset:#x} + {length} bytes runs past the end of the file "
        f"({file_size} bytes); the image is truncated or corrupt",
        at,
    )


def _state_findings(header: Qcow2Header) -> Iterator[Finding]:
    """The dirty and corrupt incompatible bits."""
    incompatible = header.incompatible_features
    if incompatible & INCOMPAT_DIRTY:
        # A read-only open (qemu-img info, convert) skips the refcount repair of a dirty image.
        yield warning(
            Code.DIRTY,
            "qcow2: the dirty bit is set (incompatible_features at 0x48): refcounts may be "
            "stale; qemu-img reads it as is, 'qemu-img check -r all' on a copy repairs it",
            FIELD_OFFSET["incompatible_features"],
        )
    if incompatible & INCOMPAT_CORRUPT:
        yield unsafe(
            Code.CORRUPT,
            "qcow2: the corrupt bit is set (incompatible_features at 0x48): qemu found "
            "inconsistent metadata; repair a copy with 'qemu-img check -r all' or refuse it",
            FIELD_OFFSET["incompatible_features"],
        )


def _feature_findings(header: Qcow2Header) -> Iterator[Finding]:
    """Compatible and autoclear bits; unknown incompatible bits need the feature names."""
    yield from _state_findings(header)
    unknown_compat = header.compatible_features & ~COMPAT_MASK
    if unknown_compat:
        yield info(
            Code.NOTE,
            f"qcow2: unknown compatible feature bits {unknown_compat:#x}; qemu ignores them",
            FIELD_OFFSET["compatible_features"],
        )
    unknown_autoclear = header.autoclear_features & ~AUTOCLEAR_MASK
    if unknown_autoclear:
        yield info(
            Code.NOTE,
            f"qcow2: unknown autoclear feature bits {unknown_autoclear:#x}; qemu ignores "
            "them and clears them on a writable open",
            FIELD_OFFSET["autoclear_features"],
        )
    if header.autoclear_features & AUTOCLEAR_DATA_FILE_RAW and not (
        header.incompatible_features & INCOMPAT_DATA_FILE
    ):
        yield _invalid("autoclear_features", "the raw external data bit is set without a data file")


def _unknown_incompatible_findings(
    header: Qcow2Header, extensions: Extensions
) -> Iterator[Finding]:
    unknown = header.incompatible_features & ~INCOMPAT_MASK
    if not unknown:
        return
    bits = [bit for bit in range(64) if unknown >> bit & 1]
    names = [extensions.feature_names.get((0, bit), f"bit {bit}") for bit in bits]
    yield unsafe(
        Code.UNKNOWN_FEATURE,
        f"qcow2: unknown incompatible features {', '.join(names)} (incompatible_features "
        f"{unknown:#x} at 0x48); qemu 7.2 refuses to open the image",
        FIELD_OFFSET["incompatible_features"],
    )


def _read_extensions(source: Source, header: Qcow2Header) -> Extensions:
    """Walk the header extensions between header_length and the backing file name."""
    found = Extensions()
    offset = header.header_length
    # qcow2_do_open: the extensions end where the backing file name starts.
    end = header.backing_file_offset or header.cluster_size
    while offset < end:
        data = source.read(offset, EXTENSION.size)
        if len(data) < EXTENSION.size:
            found.findings.append(_truncated_finding(offset, "header extension"))
            break
        ext = Extension.from_bytes(data, offset)
        if ext.offset > end or ext.length > end - ext.offset:
            found.findings.append(
                _invalid_at(offset, f"header extension {ext.magic:#010x} runs past {end:#x}")
            )
            break
        if ext.magic == EXT_END:
            break
        if len(found.seen) == MAX_EXTENSIONS:
            found.findings.append(
                _invalid_at(
                    offset,
                    f"more than {MAX_EXTENSIONS} header extensions",
                    "the rest were not checked; refuse the image",
                )
            )
            break
        _read_extension(source, header, ext, found)
        found.seen.append(ext)
        offset = ext.offset + ((ext.length + 7) & ~7)
    return found


def _read_extension(source: Source, header: Qcow2Header, ext: Extension, found: Extensions) -> None:
    repeated = any(seen.magic == ext.magic for seen in found.seen)
    if ext.magic not in EXTENSION_NAMES:
        if not repeated:
            found.findings.append(_unknown_extension(ext))
        return
    if repeated:
        found.findings.append(
            _invalid_at(
                ext.offset - EXTENSION.size,
                f"a second {_extension_name(ext.magic)} header extension",
                "qemu-img never writes one and qemu keeps the last; refuse the image",
            )
        )
    if ext.magic == EXT_BACKING_FORMAT:
        _read_backing_format(source, ext, found)
    elif ext.magic == EXT_FEATURE_TABLE:
        _read_feature_table(source, ext, found)
    elif ext.magic == EXT_CRYPTO_HEADER:
        _read_crypto(source, header, ext, found)
    elif ext.magic == EXT_BITMAPS:
        _read_bitmaps_extension(source, header, ext, found)
    else:
        found.data_file = _extension_text(source, ext, MAX_DATA_FILE_NAME_READ)
        found.data_file_offset = ext.offset


def _unknown_extension(ext: Extension) -> Finding:
    at = ext.offset - EXTENSION.size
    return unsafe(
        Code.UNKNOWN_EXTENSION,
        f"qcow2: unknown header extension {ext.magic:#010x} ({ext.length} bytes) at {at:#x}; "
        "its meaning cannot be checked, refuse the image",
        at,
    )


def _read_backing_format(source: Source, ext: Extension, found: Extensions) -> None:
    if ext.length > MAX_BACKING_FORMAT_SIZE:
        found.findings.append(
            _invalid_at(ext.offset, f"backing file format name of {ext.length} bytes is too long")
        )
        return
    found.backing_format = _extension_text(source, ext, MAX_BACKING_FORMAT_SIZE)


def _read_feature_table(source: Source, ext: Extension, found: Extensions) -> None:
    data = source.read(ext.offset, min(ext.length, MAX_FEATURE_TABLE_READ))
    for start in range(0, len(data) - FEATURE_ENTRY.size + 1, FEATURE_ENTRY.size):
        entry = FeatureName.from_bytes(data[start : start + FEATURE_ENTRY.size])
        found.feature_names[(entry.type, entry.bit)] = entry.name


def _read_crypto(source: Source, header: Qcow2Header, ext: Extension, found: Extensions) -> None:
    if header.crypt_method != CRYPT_LUKS:
        found.findings.append(
            _invalid_at(ext.offset, "an encryption header extension without LUKS crypt_method")
        )
        return
    if ext.length != CRYPTO_EXTENSION.size:
        found.findings.append(
            _invalid_at(ext.offset, f"encryption header extension of {ext.length} bytes, not 16")
        )
        return
    data = source.read(ext.offset, CRYPTO_EXTENSION.size)
    if len(data) < CRYPTO_EXTENSION.size:
        found.findings.append(_truncated_finding(ext.offset, "encryption header extension"))
        return
    found.crypto = CryptoHeaderExtension.from_bytes(data)
    found.crypto_offset = ext.offset


def _read_bitmaps_extension(
    source: Source, header: Qcow2Header, ext: Extension, found: Extensions
) -> None:
    if ext.length != BITMAPS_EXTENSION.size:
        found.findings.append(
            _invalid_at(ext.offset, f"bitmaps extension of {ext.length} bytes, not 24")
        )
        return
    if not header.autoclear_features & AUTOCLEAR_BITMAPS:
        found.findings.append(
            info(
                Code.NOTE,
                "qcow2: a bitmaps extension without the bitmaps autoclear bit: a program "
                "without bitmap support changed the image; qemu ignores the bitmaps",
                ext.offset,
            )
        )
        return
    data = source.read(ext.offset, BITMAPS_EXTENSION.size)
    if len(data) < BITMAPS_EXTENSION.size:
        found.findings.append(_truncated_finding(ext.offset, "bitmaps extension"))
        return
    found.bitmaps = BitmapsExtension.from_bytes(data)
    found.bitmaps_offset = ext.offset


def _extension_findings(
    header: Qcow2Header, extensions: Extensions, file_size: int | None
) -> Iterator[Finding]:
    yield from _data_file_findings(header, extensions)
    bitmaps, at = extensions.bitmaps, extensions.bitmaps_offset
    if bitmaps is not None and at is not None:
        yield from _bitmaps_extension_findings(header, bitmaps, at, file_size)


def _bitmaps_extension_findings(
    header: Qcow2Header, bitmaps: BitmapsExtension, at: int, file_size: int | None
) -> Iterator[Finding]:
    """The checks qcow2_read_extensions makes of the bitmaps extension, and end of file."""
    problems = []
    if bitmaps.reserved32:
        problems.append("its reserved field is not zero")
    if not 0 < bitmaps.nb_bitmaps <= MAX_BITMAPS:
        problems.append(f"nb_bitmaps {bitmaps.nb_bitmaps} is outside 1..{MAX_BITMAPS}")
    if bitmaps.bitmap_directory_offset % header.cluster_size:
        problems.append(
            f"bitmap_directory_offset {bitmaps.bitmap_directory_offset:#x} is not cluster-aligned"
        )
    if bitmaps.bitmap_directory_size > MAX_BITMAP_DIRECTORY_SIZE:
        problems.append(f"bitmap_directory_size {bitmaps.bitmap_directory_size} is too big")
    for problem in problems:
        yield _invalid_at(at, f"bitmaps extension: {problem}")
    yield from _past_eof(
        file_size,
        "bitmap_directory_offset",
        bitmaps.bitmap_directory_offset,
        bitmaps.bitmap_directory_size,
        at,
    )


def _data_file_findings(header: Qcow2Header, extensions: Extensions) -> Iterator[Finding]:
    name = extensions.data_file
    if header.incompatible_features & INCOMPAT_DATA_FILE:
        named = f"'{name}'" if name is not None else "with no name (qemu asks for data-file)"
        yield unsafe(
            Code.DATA_FILE,
            f"qcow2: external data file {named} (external data file bit in "
            "incompatible_features at 0x48): qemu would read the guest data from that host "
            "file; refuse the image or convert it with the data file under your control",
            extensions.data_file_offset or FIELD_OFFSET["incompatible_features"],
        )
    elif name is not None:
        yield warning(
            Code.DATA_FILE,
            f"qcow2: a data file name '{name}' without the external data file bit; qemu ignores it",
            extensions.data_file_offset,
        )


def _backing_file(
    source: Source, header: Qcow2Header, extensions: Extensions
) -> tuple[str | None, list[Finding]]:
    """The backing file name as qemu reads it, and the finding that it exists."""
    offset, size = header.backing_file_offset, header.backing_file_size
    if offset == 0:
        return None, []
    where = "header field backing_file_offset at 0x8"
    findings: list[Finding] = []
    if offset <= header.cluster_size and size > min(
        MAX_BACKING_FILE_SIZE, header.cluster_size - offset
    ):
        findings.append(_invalid("backing_file_size", f"backing_file_size {size} is too long"))
    findings += _past_eof(source.size, "backing_file_offset", offset, size)
    name = cstring(source.read(offset, min(size, MAX_BACKING_FILE_SIZE)))
    fmt = extensions.backing_format
    shown = f"'{name}'" + (f" of format '{fmt}'" if fmt is not None else "")
    findings.append(
        unsafe(
            Code.BACKING_FILE,
            f"qcow2: backing file {shown} ({where}): qemu would read that host file; "
            "remove it with qemu-img rebase or refuse the image",
            FIELD_OFFSET["backing_file_offset"],
        )
    )
    return name, findings


def _encryption(
    source: Source, header: Qcow2Header, extensions: Extensions
) -> tuple[dict[str, Any] | None, list[Finding]]:
    """crypt_method and, for LUKS, where its header lies and whether it looks like LUKS."""
    at = FIELD_OFFSET["crypt_method"]
    if header.crypt_method == CRYPT_NONE:
        return None, []
    if header.crypt_method == CRYPT_AES:
        return {"format": "aes"}, [
            unsafe(
                Code.UNSUPPORTED_ENCRYPTION,
                "qcow2: AES-CBC encryption (crypt_method 1 at 0x20) is broken and qemu 7.2 "
                "system emulators refuse it; decrypt it with qemu-img convert or refuse it",
                at,
            )
        ]
    if header.crypt_method != CRYPT_LUKS:
        return {"format": f"unknown ({header.crypt_method})"}, [
            unsafe(
                Code.UNSUPPORTED_ENCRYPTION,
                f"qcow2: crypt_method {header.crypt_method} at 0x20 is unknown; qemu 7.2 "
                "refuses to open the image",
                at,
            )
        ]
    return _luks(source, header, extensions)


def _luks(
    source: Source, header: Qcow2Header, extensions: Extensions
) -> tuple[dict[str, Any], list[Finding]]:
    crypto = extensions.crypto
    if crypto is None:
        return {"format": "luks"}, [
            _invalid("crypt_method", "LUKS encryption without an encryption header extension")
        ]
    at = extensions.crypto_offset
    details = {"format": "luks", "header_offset": crypto.offset, "header_length": crypto.length}
    findings = [
        warning(
            Code.ENCRYPTED,
            f"qcow2: LUKS-encrypted (header at {crypto.offset:#x}, {crypto.length} bytes); "
            "qemu-img needs the passphrase as a secret object to read the data",
            at,
        )
    ]
    if crypto.offset % header.cluster_size:
        findings.append(_invalid_at(at, f"LUKS header offset {crypto.offset:#x} is unaligned"))
    findings += _past_eof(source.size, "LUKS header", crypto.offset, crypto.length, at)
    magic = source.read(crypto.offset, len(LUKS_MAGIC))
    if len(magic) == len(LUKS_MAGIC) and magic != LUKS_MAGIC:
        findings.append(_invalid_at(at, f"no LUKS magic at {crypto.offset:#x}"))
    return details, findings


def _snapshots(source: Source, header: Qcow2Header) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Parse up to MAX_SNAPSHOTS_READ snapshot table entries as qcow2_read_snapshots does."""
    snapshots: list[dict[str, Any]] = []
    findings: list[Finding] = []
    offset = header.snapshots_offset
    for index in range(min(header.nb_snapshots, MAX_SNAPSHOTS_READ)):
        data = source.read(offset, SNAPSHOT_ENTRY.size)
        if len(data) < SNAPSHOT_ENTRY.size:
            findings.append(_truncated_finding(offset, f"snapshot table entry {index}"))
            break
        entry = SnapshotEntry.from_bytes(data)
        snapshots.append(_snapshot_details(source, header, entry, offset))
        findings += _snapshot_findings(header, entry, index, offset, source.size)
        offset += entry.length
    if header.nb_snapshots > MAX_SNAPSHOTS_READ:
        findings.append(
            info(
                Code.NOTE,
                f"qcow2: {header.nb_snapshots} internal snapshots; only the first "
                f"{MAX_SNAPSHOTS_READ} entries were read",
                FIELD_OFFSET["nb_snapshots"],
            )
        )
    return snapshots, findings


def _snapshot_details(
    source: Source, header: Qcow2Header, entry: SnapshotEntry, offset: int
) -> dict[str, Any]:
    extra_at = offset + SNAPSHOT_ENTRY.size
    extra = source.read(extra_at, min(entry.extra_data_size, SNAPSHOT_EXTRA.size))
    vm_state_size, disk_size = entry.vm_state_size, _virtual_size(header)
    # qcow2_read_snapshots: the extra data, when long enough, overrides both sizes.
    if len(extra) >= 8:
        vm_state_size = int.from_bytes(extra[:8], "big")
    if len(extra) >= 16:
        disk_size = int.from_bytes(extra[8:16], "big")
    id_at = extra_at + entry.extra_data_size
    name_at = id_at + entry.id_str_size
    return {
        "id": cstring(source.read(id_at, min(entry.id_str_size, MAX_SNAPSHOT_NAME_READ))),
        "name": cstring(source.read(name_at, min(entry.name_size, MAX_SNAPSHOT_NAME_READ))),
        "vm_state_size": vm_state_size,
        "disk_size": disk_size,
        "date_sec": entry.date_sec,
    }


def _snapshot_findings(
    header: Qcow2Header, entry: SnapshotEntry, index: int, offset: int, file_size: int | None
) -> Iterator[Finding]:
    if entry.extra_data_size > MAX_SNAPSHOT_EXTRA_DATA:
        yield _invalid_at(
            offset, f"snapshot {index} has {entry.extra_data_size} bytes of extra data"
        )
    end = offset + entry.length - header.snapshots_offset
    if end > MAX_SNAPSHOTS_SIZE:
        yield _invalid_at(offset, f"the snapshot table exceeds {MAX_SNAPSHOTS_SIZE} bytes")
    if entry.l1_size * 8 > MAX_L1_SIZE or entry.l1_table_offset % header.cluster_size:
        yield _invalid_at(
            offset,
            f"snapshot {index} has an L1 table that is too big or not cluster-aligned",
            "qemu refuses to read or apply that snapshot",
        )
    yield from _past_eof(
        file_size,
        f"snapshot {index} l1_table_offset",
        entry.l1_table_offset,
        entry.l1_size * 8,
        offset,
    )


def _bitmaps(
    source: Source, header: Qcow2Header, extensions: Extensions
) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Names and granularity of the persistent dirty bitmaps (up to MAX_BITMAPS_READ)."""
    ext = extensions.bitmaps
    if ext is None:
        return [], []
    offset = ext.bitmap_directory_offset
    data = source.read(offset, min(ext.bitmap_directory_size, MAX_BITMAP_DIRECTORY_READ))
    bitmaps: list[dict[str, Any]] = []
    findings: list[Finding] = []
    start = 0
    while len(bitmaps) < min(ext.nb_bitmaps, MAX_BITMAPS_READ):
        if start + BITMAP_ENTRY.size > len(data):
            findings.append(_truncated_finding(offset + start, "bitmap directory entry"))
            return bitmaps, findings
        entry = BitmapDirectoryEntry.from_bytes(data[start : start + BITMAP_ENTRY.size])
        name_at = start + BITMAP_ENTRY.size + entry.extra_data_size
        problem = _bitmap_entry_problem(header, entry)
        if problem:
            index = len(bitmaps)
            findings.append(
                _invalid_at(offset + start, f"bitmap directory entry {index}: {problem}")
            )
        bitmaps.append(
            {
                "name": cstring(data[name_at : name_at + entry.name_size]),
                "granularity": 1 << min(entry.granularity_bits, 63),
                "flags": entry.flags,
            }
        )
        start += entry.length
    if ext.nb_bitmaps <= MAX_BITMAPS_READ and start != ext.bitmap_directory_size:
        # bitmap_list_load: the entries, each padded to 8 bytes, must fill the directory.
        findings.append(
            _invalid_at(
                offset,
                f"the {ext.nb_bitmaps} bitmap directory entries take {start} bytes, not the "
                f"{ext.bitmap_directory_size} of bitmap_directory_size",
            )
        )
    return bitmaps, findings


def _bitmap_entry_problem(header: Qcow2Header, entry: BitmapDirectoryEntry) -> str | None:
    """Why qemu would refuse to load this bitmap, and so the image (check_dir_entry,
    bitmap_list_load, load_bitmap_data), or None."""
    if not BME_MIN_GRANULARITY_BITS <= entry.granularity_bits <= BME_MAX_GRANULARITY_BITS:
        return f"granularity_bits {entry.granularity_bits} is outside 9..31"
    if entry.type != BT_DIRTY_TRACKING_BITMAP:
        return f"type {entry.type} is not a dirty tracking bitmap (1)"
    if entry.flags & ~(BME_FLAG_IN_USE | BME_FLAG_AUTO):
        return f"reserved flags {entry.flags:#x} are set"
    if entry.extra_data_size:
        return f"{entry.extra_data_size} bytes of extra data qemu does not support"
    if not 0 < entry.name_size <= BME_MAX_NAME_SIZE:
        return f"name_size {entry.name_size} is outside 1..{BME_MAX_NAME_SIZE}"
    table_size, table_offset = entry.bitmap_table_size, entry.bitmap_table_offset
    if not 0 < table_size <= BME_MAX_TABLE_SIZE or table_size * header.cluster_size > (
        BME_MAX_PHYS_SIZE
    ):
        return f"bitmap_table_size {table_size} is 0 or too big"
    if table_offset == 0 or table_offset % header.cluster_size:
        return f"bitmap_table_offset {table_offset:#x} is 0 or not cluster-aligned"
    if entry.flags & BME_FLAG_IN_USE:
        return None  # qemu keeps an in-use bitmap as inconsistent and reads no data
    # An hbitmap serialises one bit per granule in 64-bit words.
    size = _virtual_size(header)
    words = ((size - 1) >> entry.granularity_bits >> 6) + 1 if size else 0
    needed = -(-words * 8 // header.cluster_size)
    if needed != table_size:
        return (
            f"bitmap_table_size {table_size} is not the {needed} clusters a bitmap of the "
            f"{size}-byte disk with granularity_bits {entry.granularity_bits} takes"
        )
    return None


def _details(header: Qcow2Header, extensions: Extensions) -> dict[str, Any]:
    incompatible = header.incompatible_features
    return {
        "version": header.version,
        "compat": header.compat,
        "size": header.size,
        "cluster_bits": header.cluster_bits,
        "cluster_size": header.cluster_size,
        "header_length": header.header_length,
        "refcount_bits": 1 << min(header.refcount_order, 63),
        "compression_type": COMPRESSION_TYPES.get(
            header.compression_type, f"unknown ({header.compression_type})"
        ),
        "extended_l2": header.extended_l2,
        "lazy_refcounts": bool(header.compatible_features & COMPAT_LAZY_REFCOUNTS),
        "dirty": bool(incompatible & INCOMPAT_DIRTY),
        "corrupt": bool(incompatible & INCOMPAT_CORRUPT),
        "incompatible_features": incompatible,
        "compatible_features": header.compatible_features,
        "autoclear_features": header.autoclear_features,
        "l1_size": header.l1_size,
        "l1_table_offset": header.l1_table_offset,
        "refcount_table_offset": header.refcount_table_offset,
        "backing_file_format": extensions.backing_format,
        "data_file": extensions.data_file,
        "data_file_raw": bool(header.autoclear_features & AUTOCLEAR_DATA_FILE_RAW),
        "header_extensions": [_extension_name(ext.magic) for ext in extensions.seen],
    }


def _extension_name(magic: int) -> str:
    return EXTENSION_NAMES.get(magic, f"unknown ({magic:#010x})")


def _extension_text(source: Source, ext: Extension, cap: int) -> str:
    return cstring(source.read(ext.offset, min(ext.length, cap)))


def _invalid(field_name: str, problem: str) -> Finding:
    return _invalid_at(FIELD_OFFSET[field_name], problem)


def _invalid_at(offset: int | None, problem: str, consequence: str = REFUSED) -> Finding:
    where = f" (at {offset:#x})" if offset is not None else ""
    return unsafe(Code.INVALID_HEADER, f"qcow2: {problem}{where}; {consequence}", offset)


def _truncated_finding(offset: int, what: str) -> Finding:
    return unsafe(Code.TRUNCATED, f"qcow2: the file ends inside the {what} at {offset:#x}", offset)


def _truncated(offset: int, needed: int, got: int, what: str) -> TruncatedError:
    return TruncatedError(
        FORMAT,
        f"{what} at {offset:#x} needs {needed} bytes, file has {got} there",
        offset=offset,
        field=what,
    )

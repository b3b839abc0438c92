"""VMware VMDK inspector: sparse extents (KDMV), ESX COWD extents and descriptor files.

References: VMware "Virtual Disk Format 1.1" (the hosted sparse extent header, grain markers
and the stream footer; the ESX Server sparse ``COWDisk_Header``; the descriptor file grammar)
and qemu 7.2 ``block/vmdk.c`` (``vmdk_open``, ``vmdk_open_vmdk4``, ``vmdk_open_vmfs_sparse``,
``vmdk_add_extent``, ``vmdk_read_desc``, ``vmdk_open_desc_file``, ``vmdk_parse_extents``,
``vmdk_parent_open`` and ``vmdk_read_cid``).

How qemu decides what a file is, and so what this module must check:

- ``KDMV`` with a non-zero capacity: one sparse extent, this file. When ``gdOffset`` is
  ``GD_AT_END`` the header that counts is the stream footer 1536 bytes before the end. qemu
  never parses the extent lines of the embedded descriptor; it only looks in the 10 KiB at
  sector 1 for ``CID``, ``parentCID`` and ``parentFileNameHint`` (the last one opens a backing
  file). The extent lines are still checked here, strictly: other readers follow them.
- ``KDMV`` with capacity 0 and a descriptor offset: the text there is a descriptor *file*, and
  every extent it lists is opened by name (the attack of CVE-2022-47951).
- ``COWD``: one ESX sparse extent, this file.
- Anything else: a descriptor file; every extent is another file.

Descriptor text is scanned the way qemu's C code does (strings end at the first NUL, ``strstr``
finds keys anywhere, ``sscanf`` crosses line ends) to learn what qemu would open, and parsed
strictly line by line to refuse what nobody should have written.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, info, unsafe, warning
from ..source import Source
from .base import Inspection, Inspector, probe_bytes

log = Logger(__name__)

SECTOR_SIZE = 512
VMDK4_MAGIC = b"KDMV"
VMDK3_MAGIC = b"COWD"
#: ``gdOffset`` saying "the grain directory is found through the footer".
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF

FLAG_NL_DETECT = 1 << 0
FLAG_RGD = 1 << 1
FLAG_ZERO_GRAIN = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
KNOWN_FLAGS = FLAG_NL_DETECT | FLAG_RGD | FLAG_ZERO_GRAIN | FLAG_COMPRESSED | FLAG_MARKERS
COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1
#: singleEndLineChar, nonEndLineChar, doubleEndLineChar1/2 of an unmangled file.
NL_CHECK_BYTES = b"\n \r\n"
SUPPORTED_VERSIONS = (1, 2, 3)

MARKER_END_OF_STREAM = 0
MARKER_FOOTER = 3
#: Footer marker, footer header and end-of-stream marker, one sector each, at the end.
FOOTER_AREA = 3 * SECTOR_SIZE

COWD_ROOT = 0x01
COWD_CHECKCAPABLE = 0x02
COWD_INCONSISTENT = 0x04
COWD_KNOWN_FLAGS = COWD_ROOT | COWD_CHECKCAPABLE | COWD_INCONSISTENT
COWD_VERSION = 1
COWD_HEADER_SIZE = 2048
#: qemu gives COWD extents grain tables of this many entries.
COWD_GTES_PER_GT = 4096

#: qemu's vmdk_add_extent refuses grains above 1 GiB and grain directories above 32 Mi entries.
MAX_GRAIN_SECTORS = 0x200000
MAX_GD_ENTRIES = 32 * 1024 * 1024
MAX_GTES_PER_GT = 512
#: qemu reports sizes as int64 bytes.
MAX_SECTORS = (2**63 - 1) // SECTOR_SIZE
GD_ENTRY_SIZE = 4

#: Where and how much qemu reads to find CID, parentCID and parentFileNameHint in a sparse
#: file (DESC_SIZE in vmdk.c), whatever the header's descriptorOffset says.
QEMU_DESC_OFFSET = 0x200
QEMU_DESC_SIZE = 20 * SECTOR_SIZE
#: qemu's bound on a descriptor file it parses for createType and extents.
QEMU_DESC_FILE_MAX = (1 << 20) - 1
#: Our bound on descriptor text read: real descriptors are a few hundred bytes.
DESCRIPTOR_CAP = 64 * 1024
#: Descriptor text is read in steps of this size until its NUL.
DESCRIPTOR_CHUNK = 4096
#: qemu's buffers: createType value, extent file name, backing file name (PATH_MAX - 1).
QEMU_CREATE_TYPE_MAX = 127
QEMU_FILENAME_MAX = 511
QEMU_BACKING_NAME_MAX = 4095
#: Extents listed in details and reported one by one (a 2 TB twoGbMaxExtent disk has 1024).
MAX_EXTENTS = 4096
#: Extent files named one by one in findings before the rest are summed up: a descriptor of
#: 64 KiB names 3650, and an OVA of 100 such made 365000 findings (870 MB printed).
MAX_EXTENT_FINDINGS = 64
#: Bad descriptor lines reported one by one before the rest are summed up.
MAX_LINE_FINDINGS = 16
PROBE_SIZE = 4096

#: createType values qemu opens as descriptor files (vmdk_open_desc_file).
QEMU_DESCRIPTOR_TYPES = frozenset(
    {
        "monolithicFlat",
        "vmfs",
        "vmfsSparse",
        "seSparse",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    }
)
#: Extent types qemu opens (vmdk_parse_extents); other RW lines it skips.
QEMU_EXTENT_TYPES = frozenset({"FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"})
#: Extent types of the VMware specification and ESX.
EXTENT_TYPES = QEMU_EXTENT_TYPES | {"ZERO", "VMFSRDM", "VMFSRAW"}
EXTENT_ACCESS = frozenset({"RW", "RDONLY", "NOACCESS"})
#: Descriptor keys outside the disk database (Virtual Disk Format 1.1, section 4, and ESX).
DESCRIPTOR_KEYS = frozenset(
    {
        "version",
        "encoding",
        "CID",
        "parentCID",
        "isNativeSnapshot",
        "createType",
        "parentFileNameHint",
        "changeTrackPath",
    }
)
NO_PARENT_CID = "ffffffff"

_SPARSE_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH433x")
_MARKER = struct.Struct("<QII496x")
_COWD_HEADER = struct.Struct("<4s7I1028sI60s512sI8sI396x")
#: Offsets of header fields, for findings.
_AT_VERSION = 0x04
_AT_FLAGS = 0x08
_AT_CAPACITY = 0x0C
_AT_GRAIN = 0x14
_AT_DESC_OFFSET = 0x1C
_AT_GTES = 0x2C
_AT_RGD = 0x30
_AT_GD = 0x38
_AT_OVERHEAD = 0x40
_AT_UNCLEAN = 0x48
_AT_CHECK_BYTES = 0x49
_AT_COMPRESS = 0x4D

_C_SPACE = " \t\n\v\f\r"
_KEY_VALUE = re.compile(r'([A-Za-z][A-Za-z0-9_.]*)[ \t]*=[ \t]*(?:"([^"]*)"|([A-Za-z0-9_.+-]+))')
_EXTENT_LINE = re.compile(
    r'([A-Z]{1,10})[ \t]+(\d{1,19})[ \t]+([A-Z]{1,10})(?:[ \t]+"([^"]*)"(?:[ \t]+(\d{1,19}))?)?'
)
_HEX = re.compile(r"[ \t\n\v\f\r]*([+-]?)(?:0[xX])?([0-9a-fA-F]+)")
_DECIMAL = re.compile(r"[+-]?[0-9]+")
#: Digits of the largest 64-bit number: a longer number is not converted.
_LONG_DIGITS = 19


class SparseExtentHeader(NamedTuple):
    """``SparseExtentHeader`` of a hosted sparse extent (Virtual Disk Format 1.1, 3.4.1).

    Offsets and sizes are in sectors, as on disk.
    """

    magic: bytes
    version: int
    flags: int
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    num_gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    overhead: int
    unclean_shutdown: int
    check_bytes: bytes
    compress_algorithm: int

    @classmethod
    def from_bytes(cls, data: bytes) -> SparseExtentHeader:
        return cls(*_SPARSE_HEADER.unpack_from(data))


class Marker(NamedTuple):
    """A stream marker sector: ``val`` (LBA or sector count), ``size`` 0, then its ``type``."""

    val: int
    size: int
    type: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Marker:
        return cls(*_MARKER.unpack_from(data))


class CowdHeader(NamedTuple):
    """``COWDisk_Header`` of an ESX Server sparse extent (Virtual Disk Format 1.1, 3.5)."""

    magic: bytes
    version: int
    flags: int
    num_sectors: int
    grain_size: int
    gd_offset: int
    num_gd_entries: int
    free_sector: int
    #: The root/child union: geometry for a root disk, parentFileName for a child.
    u: bytes
    generation: int
    name: bytes
    description: bytes
    saved_generation: int
    reserved: bytes
    unclean_shutdown: int

    @classmethod
    def from_bytes(cls, data: bytes) -> CowdHeader:
        return cls(*_COWD_HEADER.unpack_from(data))

    @property
    def parent_file_name(self) -> str:
        return _utf8(self.u[:1024].split(b"\0", 1)[0].decode("latin-1"))


class Extent(NamedTuple):
    """One extent line: ``ACCESS SECTORS TYPE "FILENAME" OFFSET`` (the last two optional)."""

    access: str
    sectors: int
    type: str
    filename: str | None
    offset: int | None
    #: Byte offset of the line in the image.
    at: int
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "access": self.access,
            "sectors": self.sectors,
            "type": self.type,
            "filename": None if self.filename is None else _utf8(self.filename),
            "offset": self.offset,
        }


class Descriptor(NamedTuple):
    """A descriptor parsed strictly, line by line; ``problems`` holds what did not parse."""

    keys: Mapping[str, tuple[str, int]]
    ddb: Mapping[str, str]
    extents: tuple[Extent, ...]
    problems: tuple[Finding, ...]

    @classmethod
    def parse(cls, text: str, base: int) -> Descriptor:
        """Parse ``text`` (latin-1 decoded, already cut at its NUL) found at ``base``."""
        keys: dict[str, tuple[str, int]] = {}
        ddb: dict[str, str] = {}
        extents: list[Extent] = []
        problems: list[Finding] = []
        bad_lines = 0
        at = 0
        for raw in text.split("\n"):
            line, here, at = raw.strip(" \t\r"), base + at, at + len(raw) + 1
            if not line or line.startswith("#"):
                continue
            if entry := _KEY_VALUE.fullmatch(line):
                value = entry[2] if entry[2] is not None else entry[3]
                problems += _add_key(keys, ddb, entry[1], value, here)
            elif extent := _parse_extent(line, here):
                problems += _check_extent_line(extent, len(extents))
                extents.append(extent)
            else:
                bad_lines += 1
                if bad_lines <= MAX_LINE_FINDINGS:
                    problems.append(_bad_line(line, here))
        if bad_lines > MAX_LINE_FINDINGS:
            problems.append(_more_bad_lines(bad_lines - MAX_LINE_FINDINGS, base))
        return cls(keys, ddb, tuple(extents[:MAX_EXTENTS]), tuple(problems))

    def value(self, key: str) -> str | None:
        entry = self.keys.get(key)
        return None if entry is None else entry[0]

    def at(self, key: str, default: int) -> int:
        entry = self.keys.get(key)
        return default if entry is None else entry[1]


class QemuView(NamedTuple):
    """What qemu's ``strstr``/``sscanf`` code takes from the descriptor window it reads."""

    cid: int | None
    parent_cid: int | None
    parent_hint: str | None
    #: Why qemu would fail reading parentFileNameHint, if it would.
    hint_error: str | None


class QemuExtent(NamedTuple):
    """An extent qemu's vmdk_parse_extents would open."""

    type: str
    sectors: int
    filename: str
    at: int


class VmdkInspector(Inspector):
    """VMDK images as qemu 7.2's ``vmdk`` driver opens them."""

    format = "vmdk"

    @classmethod
    def probe(cls, source: Source) -> bool:
        head = probe_bytes(source, 0, PROBE_SIZE)
        if head[:4] in (VMDK4_MAGIC, VMDK3_MAGIC):
            return True
        return _looks_like_descriptor(head.split(b"\0", 1)[0].decode("latin-1"))

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        size = source.size
        if size is None:
            raise cls.error("the image size is unknown; the stream footer cannot be found")
        magic = cls.read(source, 0, 4, "magic")
        log.debug("vmdk: %s starts with %r, %d bytes", source.name, magic, size)
        if magic == VMDK4_MAGIC:
            return cls._inspect_sparse(source, size)
        if magic == VMDK3_MAGIC:
            return cls._inspect_cowd(source, size)
        return cls._inspect_descriptor_file(source, size, 0, 0)

    # -- hosted sparse extents (KDMV) -------------------------------------------------------

    @classmethod
    def _inspect_sparse(cls, source: Source, size: int) -> Inspection:
        primary = SparseExtentHeader.from_bytes(
            cls.read(source, 0, SECTOR_SIZE, "sparse extent header")
        )
        if primary.capacity == 0 and primary.descriptor_offset:
            # vmdk_open_vmdk4: such a header only points at a descriptor file.
            if primary.descriptor_offset * SECTOR_SIZE > 2**63 - 1:
                raise cls.error(
                    f"descriptorOffset {primary.descriptor_offset:#x} is past any file",
                    _AT_DESC_OFFSET,
                    "descriptorOffset",
                )
            at = primary.descriptor_offset * SECTOR_SIZE
            note = warning(
                Code.INVALID_HEADER,
                f"vmdk: capacity is 0 and descriptorOffset is set: qemu 7.2 parses the text at "
                f"{at:#x} as a descriptor file and opens the files its extents name",
                _AT_CAPACITY,
            )
            return cls._inspect_descriptor_file(source, size, at, QEMU_DESC_OFFSET, [note])

        findings: list[Finding] = []
        footer = cls._footer(source, size, primary, findings)
        header, header_at = footer or (primary, 0)
        _check_sparse_header(header, header_at, findings)
        if footer or primary.gd_offset != GD_AT_END:
            _check_sparse_layout(header, header_at, size, findings)
        details = _sparse_details(header, header_at)
        details.update(cls._embedded_descriptor(source, header, findings))
        return Inspection(cls.format, header.capacity * SECTOR_SIZE, details, tuple(findings))

    @classmethod
    def _footer(
        cls, source: Source, size: int, primary: SparseExtentHeader, findings: list[Finding]
    ) -> tuple[SparseExtentHeader, int] | None:
        """The stream footer and its offset, which qemu uses when gdOffset is GD_AT_END."""
        if primary.gd_offset != GD_AT_END:
            return None
        # qemu places the footer by the size in whole sectors, rounded up.
        end = -(-size // SECTOR_SIZE) * SECTOR_SIZE
        at = end - FOOTER_AREA
        if at < SECTOR_SIZE:
            raise cls.error(
                "gdOffset is GD_AT_END but the file is too short for a stream footer",
                _AT_GD,
                "gdOffset",
            )
        area = source.read(at, FOOTER_AREA).ljust(FOOTER_AREA, b"\0")
        footer_marker = Marker.from_bytes(area)
        footer = SparseExtentHeader.from_bytes(area[SECTOR_SIZE:])
        eos = Marker.from_bytes(area[2 * SECTOR_SIZE :])
        problem = _footer_problem(footer_marker, footer, eos)
        if problem:
            findings.append(
                unsafe(
                    Code.CHECKSUM_MISMATCH,
                    f"vmdk: stream footer at {at:#x}: {problem}; qemu 7.2 refuses the image "
                    "('Invalid footer'); re-export it from its source",
                    at,
                )
            )
            return None
        log.debug("vmdk: %s uses the stream footer at %#x", source.name, at + SECTOR_SIZE)
        return footer, at + SECTOR_SIZE

    @classmethod
    def _embedded_descriptor(
        cls, source: Source, header: SparseExtentHeader, findings: list[Finding]
    ) -> dict[str, Any]:
        """Check the descriptor qemu reads at sector 1 and the one the header declares."""
        window = source.read(QEMU_DESC_OFFSET, QEMU_DESC_SIZE).decode("latin-1")
        view = _qemu_view(window)
        _check_qemu_view(view, QEMU_DESC_OFFSET, findings)
        details: dict[str, Any] = {
            "create_type": _qemu_sparse_type(header),
            "cid": None if view.cid is None else f"{view.cid:08x}",
            "parent_cid": None if view.parent_cid is None else f"{view.parent_cid:08x}",
            "extents": [],
        }
        if header.descriptor_offset == 0:
            return details
        if header.descriptor_offset != QEMU_DESC_OFFSET // SECTOR_SIZE:
            findings.append(_moved_descriptor(header.descriptor_offset))
        text = _c_string(window)
        if len(text) > header.descriptor_size * SECTOR_SIZE:
            findings.append(_overlong_descriptor(len(text), header.descriptor_size))
        desc = Descriptor.parse(text, QEMU_DESC_OFFSET)
        findings.extend(desc.problems)
        _check_descriptor_keys(desc, view, QEMU_DESC_OFFSET, findings)
        _check_embedded_extents(desc, header.capacity, findings)
        _check_embedded_type(desc, header, findings)
        details.update(_descriptor_details(desc))
        details["create_type"] = desc.value("createType") or details["create_type"]
        return details

    # -- ESX sparse extents (COWD) ----------------------------------------------------------

    @classmethod
    def _inspect_cowd(cls, source: Source, size: int) -> Inspection:
        header = CowdHeader.from_bytes(
            cls.read(source, 0, COWD_HEADER_SIZE, "COWD sparse extent header")
        )
        findings: list[Finding] = []
        _check_cowd_header(header, size, findings)
        window = source.read(QEMU_DESC_OFFSET, QEMU_DESC_SIZE).decode("latin-1")
        view = _qemu_view(window)
        _check_qemu_view(view, QEMU_DESC_OFFSET, findings)
        details: dict[str, Any] = {
            "create_type": "vmfsSparse",
            "version": header.version,
            "flags": header.flags,
            "grain_size": header.grain_size * SECTOR_SIZE,
            "gd_offset": header.gd_offset,
            "num_gd_entries": header.num_gd_entries,
            "parent_file_name": None if header.flags & COWD_ROOT else header.parent_file_name,
            "cid": None if view.cid is None else f"{view.cid:08x}",
            "parent_cid": None if view.parent_cid is None else f"{view.parent_cid:08x}",
            "extents": [],
        }
        return Inspection(cls.format, header.num_sectors * SECTOR_SIZE, details, tuple(findings))

    # -- descriptor files ---------------------------------------------------------------------

    @classmethod
    def _inspect_descriptor_file(
        cls, source: Source, size: int, at: int, window_at: int, notes: list[Finding] | None = None
    ) -> Inspection:
        """A descriptor file at ``at``; qemu looks for CID and parents at ``window_at``."""
        if size < 4:
            raise cls.error(f"file of {size} bytes is too small for any VMDK", 0)
        findings = list(notes or ())
        text = cls._descriptor_text(source, size, at, findings)
        window = source.read(window_at, QEMU_DESC_SIZE).decode("latin-1")
        view = _qemu_view(window)
        _check_qemu_view(view, window_at, findings)
        desc = Descriptor.parse(text, at)
        findings.extend(desc.problems)
        _check_descriptor_keys(desc, view, at, findings)
        create_type = _check_descriptor_type(text, desc, at, findings)
        extents = _qemu_extents(text, at, findings)
        if not extents:
            findings.append(_no_qemu_extents(at))
        _report_external_extents(desc, extents, findings)
        details: dict[str, Any] = {
            "create_type": create_type,
            "cid": None if view.cid is None else f"{view.cid:08x}",
            "parent_cid": None if view.parent_cid is None else f"{view.parent_cid:08x}",
            "descriptor_offset": at,
        }
        details.update(_descriptor_details(desc))
        version = details["descriptor_version"]
        if version and version.isascii() and version.isdigit() and len(version) <= _LONG_DIGITS:
            version = int(version)
        details["version"] = version
        virtual_size = sum(e.sectors for e in extents) * SECTOR_SIZE
        return Inspection(cls.format, virtual_size, details, tuple(findings))

    @classmethod
    def _descriptor_text(cls, source: Source, size: int, at: int, findings: list[Finding]) -> str:
        """The descriptor text qemu parses, up to its NUL, read no further than our cap."""
        # vmdk_read_desc reads min(file size, 1 MiB - 1) bytes from ``at``, zeros past the end.
        qemu_length = min(size, QEMU_DESC_FILE_MAX, max(0, size - at))
        limit = min(qemu_length, DESCRIPTOR_CAP)
        data = b""
        while len(data) < limit and b"\0" not in data:
            # A source shorter than its size (a tar member cut short with its archive) is
            # truncated; a short read must not leave this loop spinning.
            length = min(DESCRIPTOR_CHUNK, limit - len(data))
            data += cls.read(source, at + len(data), length, "descriptor text")
        if b"\0" not in data and len(data) < qemu_length:
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"vmdk: descriptor text at {at:#x} runs past the {DESCRIPTOR_CAP} bytes "
                    "imgfmt reads; qemu would parse up to 1 MiB of it, so it cannot be checked",
                    at,
                )
            )
        return data.split(b"\0", 1)[0].decode("latin-1")


# -- sparse header checks ---------------------------------------------------------------------


def _footer_problem(footer_marker: Marker, footer: SparseExtentHeader, eos: Marker) -> str | None:
    """Why qemu's footer sanity checks would fail, or None."""
    if footer_marker.size != 0 or footer_marker.type != MARKER_FOOTER:
        return f"footer marker has size {footer_marker.size} type {footer_marker.type}, not 0/3"
    if footer.magic != VMDK4_MAGIC:
        return f"footer magic is {footer.magic!r}, not {VMDK4_MAGIC!r}"
    if eos.val != 0 or eos.size != 0 or eos.type != MARKER_END_OF_STREAM:
        return "the end-of-stream marker after the footer is not all zero"
    return None


def _check_sparse_header(h: SparseExtentHeader, at: int, findings: list[Finding]) -> None:
    """The fields qemu honours or refuses, and the ones the specification pins down."""
    if h.version not in SUPPORTED_VERSIONS:
        findings.append(
            unsafe(
                Code.UNSUPPORTED_VERSION,
                f"vmdk: sparse header version {h.version} at {at + _AT_VERSION:#x} is not "
                "1, 2 or 3; qemu 7.2 refuses versions above 3",
                at + _AT_VERSION,
            )
        )
    unknown = h.flags & ~KNOWN_FLAGS
    if unknown:
        findings.append(
            unsafe(
                Code.UNKNOWN_FEATURE,
                f"vmdk: unknown flags {unknown:#x} at {at + _AT_FLAGS:#x}; the image asks for "
                "features neither the specification nor qemu knows",
                at + _AT_FLAGS,
            )
        )
    _check_compression(h, at, findings)
    _check_integrity(h, at, findings)


def _check_compression(h: SparseExtentHeader, at: int, findings: list[Finding]) -> None:
    if h.compress_algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        findings.append(
            unsafe(
                Code.UNKNOWN_FEATURE,
                f"vmdk: compressAlgorithm {h.compress_algorithm} at {at + _AT_COMPRESS:#x} is "
                "unknown; qemu would read the compressed grains as plain data",
                at + _AT_COMPRESS,
            )
        )
    elif bool(h.flags & FLAG_COMPRESSED) != (h.compress_algorithm == COMPRESSION_DEFLATE):
        findings.append(
            warning(
                Code.INVALID_HEADER,
                f"vmdk: the compressed-grains flag and compressAlgorithm {h.compress_algorithm} "
                "disagree; qemu goes by compressAlgorithm, VMware by the flag",
                at + _AT_FLAGS,
            )
        )


def _check_integrity(h: SparseExtentHeader, at: int, findings: list[Finding]) -> None:
    if h.flags & FLAG_NL_DETECT and h.check_bytes != NL_CHECK_BYTES:
        findings.append(
            unsafe(
                Code.CHECKSUM_MISMATCH,
                f"vmdk: newline check bytes at {at + _AT_CHECK_BYTES:#x} are "
                f"{h.check_bytes!r}, not {NL_CHECK_BYTES!r}: the file went through a text-mode "
                "transfer and its data is mangled; copy it again in binary mode",
                at + _AT_CHECK_BYTES,
            )
        )
    if h.unclean_shutdown:
        findings.append(
            warning(
                Code.DIRTY,
                "vmdk: uncleanShutdown is set: the writer did not close the disk cleanly",
                at + _AT_UNCLEAN,
            )
        )


def _check_sparse_layout(
    h: SparseExtentHeader, at: int, size: int, findings: list[Finding]
) -> None:
    """Grain geometry qemu accepts, and the tables and grains inside the file."""
    gd_entries = _check_grain_geometry(h, at, findings)
    if h.capacity > MAX_SECTORS:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: capacity {h.capacity} sectors at {at + _AT_CAPACITY:#x} overflows a "
                "64-bit byte count; qemu-img cannot report this disk",
                at + _AT_CAPACITY,
            )
        )
    if -(-size // SECTOR_SIZE) < h.overhead:
        findings.append(
            unsafe(
                Code.TRUNCATED,
                f"vmdk: overHead says grains start at sector {h.overhead} but the file has "
                f"{size} bytes; qemu 7.2 refuses it as truncated",
                at + _AT_OVERHEAD,
            )
        )
    if gd_entries is None:
        return
    _check_table(h.gd_offset, gd_entries, "grain directory (gdOffset)", at + _AT_GD, size, findings)
    if h.flags & FLAG_RGD and h.rgd_offset:
        what = "redundant grain directory (rgdOffset)"
        _check_table(h.rgd_offset, gd_entries, what, at + _AT_RGD, size, findings)


def _check_grain_geometry(h: SparseExtentHeader, at: int, findings: list[Finding]) -> int | None:
    """The grain directory's entry count, or None when grainSize or numGTEsPerGT is invalid."""
    problem = None
    if not 1 <= h.grain_size <= MAX_GRAIN_SECTORS or h.grain_size & (h.grain_size - 1):
        problem = (
            f"grainSize {h.grain_size} sectors at {at + _AT_GRAIN:#x} is not a power of "
            f"two from 1 to {MAX_GRAIN_SECTORS}",
            at + _AT_GRAIN,
        )
    elif not 1 <= h.num_gtes_per_gt <= MAX_GTES_PER_GT:
        problem = (
            f"numGTEsPerGT {h.num_gtes_per_gt} at {at + _AT_GTES:#x} is outside "
            f"1..{MAX_GTES_PER_GT}",
            at + _AT_GTES,
        )
    if problem:
        findings.append(unsafe(Code.INVALID_HEADER, f"vmdk: {problem[0]}", problem[1]))
        return None
    entries = -(-h.capacity // (h.num_gtes_per_gt * h.grain_size))
    if entries > MAX_GD_ENTRIES:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: capacity {h.capacity} sectors needs {entries} grain directory entries; "
                f"qemu 7.2 allows {MAX_GD_ENTRIES}",
                at + _AT_CAPACITY,
            )
        )
        return None
    return entries


def _check_table(
    sector: int, entries: int, what: str, at: int, size: int, findings: list[Finding]
) -> None:
    start = sector * SECTOR_SIZE
    end = start + entries * GD_ENTRY_SIZE
    if end > size:
        findings.append(
            unsafe(
                Code.OUT_OF_BOUNDS,
                f"vmdk: {what} at sector {sector} spans bytes {start:#x}..{end:#x} but the "
                f"file ends at {size:#x}; the image is truncated or forged",
                at,
            )
        )


def _qemu_sparse_type(h: SparseExtentHeader) -> str:
    return "streamOptimized" if h.compress_algorithm == COMPRESSION_DEFLATE else "monolithicSparse"


def _sparse_details(h: SparseExtentHeader, header_at: int) -> dict[str, Any]:
    return {
        "version": h.version,
        "flags": h.flags,
        "grain_size": h.grain_size * SECTOR_SIZE,
        "num_gtes_per_gt": h.num_gtes_per_gt,
        "gd_offset": h.gd_offset,
        "rgd_offset": h.rgd_offset if h.flags & FLAG_RGD else None,
        "overhead": h.overhead,
        "descriptor_offset": h.descriptor_offset,
        "descriptor_size": h.descriptor_size,
        "compressed": h.compress_algorithm == COMPRESSION_DEFLATE,
        "compress_algorithm": h.compress_algorithm,
        "markers": bool(h.flags & FLAG_MARKERS),
        "zeroed_grain": bool(h.flags & FLAG_ZERO_GRAIN),
        "footer": header_at != 0,
    }


def _moved_descriptor(offset: int) -> Finding:
    return unsafe(
        Code.INVALID_HEADER,
        f"vmdk: descriptorOffset is sector {offset} but qemu 7.2 always reads CID and "
        "parentFileNameHint from sector 1; what it reads there is not what the header declares",
        _AT_DESC_OFFSET,
    )


def _overlong_descriptor(length: int, declared: int) -> Finding:
    return unsafe(
        Code.INVALID_HEADER,
        f"vmdk: the descriptor text at sector 1 is {length} bytes, longer than the "
        f"{declared} sectors the header declares; qemu reads past the descriptor into the tables",
        QEMU_DESC_OFFSET,
    )


def _check_embedded_extents(desc: Descriptor, capacity: int, findings: list[Finding]) -> None:
    """A sparse image's descriptor may only describe this extent: one ``RW n SPARSE`` line.

    ovftool writes ``RDONLY`` for the extent of a streamOptimized export; that is accepted too.
    """
    own_seen = False
    for extent in desc.extents:
        own = (
            not own_seen
            and extent.access in ("RW", "RDONLY")
            and extent.type == "SPARSE"
            and extent.sectors == capacity
            and extent.offset is None
            and _is_plain_name(extent.filename)
        )
        own_seen = own_seen or own
        if own:
            continue
        if extent.filename is None:
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"vmdk: embedded descriptor line at {extent.at:#x} '{extent.line}' does not "
                    f"describe this sparse extent ({capacity} sectors)",
                    extent.at,
                )
            )
        else:
            findings.append(
                unsafe(
                    Code.EXTERNAL_EXTENT,
                    f"vmdk: embedded descriptor line at {extent.at:#x} '{extent.line}' names "
                    f"'{_utf8(extent.filename)}', not this sparse extent ({capacity} sectors); "
                    "qemu 7.2 ignores it but VMware tools and other readers follow it; refuse "
                    "the image",
                    extent.at,
                )
            )


def _check_embedded_type(desc: Descriptor, h: SparseExtentHeader, findings: list[Finding]) -> None:
    declared = desc.value("createType")
    effective = _qemu_sparse_type(h)
    if declared is not None and declared != effective:
        findings.append(
            warning(
                Code.INVALID_HEADER,
                f"vmdk: descriptor says createType '{_utf8(declared)}' but the header makes it "
                f"{effective}, which is what qemu 7.2 treats it as",
                desc.at("createType", QEMU_DESC_OFFSET),
            )
        )


def _is_plain_name(name: str | None) -> bool:
    """A bare file name: no directory, no protocol prefix (qemu opens ``nbd:`` and ``json:``)."""
    if not name or name in (".", ".."):
        return False
    return not any(c in name for c in "/\\:")


# -- COWD checks ------------------------------------------------------------------------------


def _check_cowd_header(h: CowdHeader, size: int, findings: list[Finding]) -> None:
    if h.version != COWD_VERSION:
        findings.append(
            unsafe(
                Code.UNSUPPORTED_VERSION,
                f"vmdk: COWD version {h.version} at 0x4 is not {COWD_VERSION}",
                _AT_VERSION,
            )
        )
    _check_cowd_flags(h, findings)
    if not 1 <= h.grain_size <= MAX_GRAIN_SECTORS or h.grain_size & (h.grain_size - 1):
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: COWD grainSize {h.grain_size} at 0x10 is not a power of two from 1 to "
                f"{MAX_GRAIN_SECTORS}",
                0x10,
            )
        )
    if h.num_gd_entries > MAX_GD_ENTRIES:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: COWD numGDEntries {h.num_gd_entries} at 0x18 is above qemu's "
                f"{MAX_GD_ENTRIES}",
                0x18,
            )
        )
    else:
        _check_table(h.gd_offset, h.num_gd_entries, "COWD grain directory", 0x14, size, findings)


def _check_cowd_flags(h: CowdHeader, findings: list[Finding]) -> None:
    unknown = h.flags & ~COWD_KNOWN_FLAGS
    if unknown:
        findings.append(
            unsafe(Code.UNKNOWN_FEATURE, f"vmdk: unknown COWD flags {unknown:#x} at 0x8", 0x8)
        )
    if h.flags & COWD_INCONSISTENT or h.unclean_shutdown:
        findings.append(
            warning(Code.DIRTY, "vmdk: COWD extent is marked inconsistent or unclean", 0x8)
        )
    if not h.flags & COWD_ROOT:
        findings.append(
            unsafe(
                Code.BACKING_FILE,
                f"vmdk: COWD extent is a child of '{h.parent_file_name}' (root flag clear at "
                "0x8); its data is incomplete without that file; convert the chain with VMware "
                "tools first",
                0x20,
            )
        )


# -- descriptors as qemu reads them -----------------------------------------------------------


def _looks_like_descriptor(text: str) -> bool:
    """qemu's vmdk_probe test, or an unmistakable descriptor start or createType line."""
    if text.startswith("# Disk DescriptorFile"):
        return True
    if re.search(r"^[ \t]*createType[ \t]*=", text, re.MULTILINE):
        return True
    for line in text.split("\n"):
        stripped = line.rstrip("\r")
        if stripped.startswith("#") or not stripped.strip(" "):
            continue
        return stripped in ("version=1", "version=2", "version=3")
    return False


def _c_string(text: str) -> str:
    return text.split("\0", 1)[0]


def _utf8(text: str) -> str:
    """A latin-1 decoded string as the UTF-8 it most likely was."""
    return text.encode("latin-1").decode("utf-8", errors="replace")


def _qemu_hex(window: str, key: str) -> int | None:
    """vmdk_read_cid: the first ``key`` anywhere, skip it and one more byte, ``%x``."""
    limit = window[: QEMU_DESC_SIZE - 1]
    found = _c_string(limit).find(key)
    if found < 0:
        return None
    tail = _c_string(limit[found + len(key) + 1 :])
    match = _HEX.match(tail)
    if match is None:
        return None
    value = int(match[2], 16)
    return (-value if match[1] == "-" else value) & 0xFFFF_FFFF


def _qemu_view(window: str) -> QemuView:
    """CID, parentCID and parentFileNameHint as qemu's vmdk_open would take them."""
    text = _c_string(window)
    hint, error = None, None
    found = text.find("parentFileNameHint")
    if found >= 0:
        # vmdk_parent_open skips the key, '=' and '"', then takes all up to the next quote.
        start = found + len("parentFileNameHint") + 2
        rest = _c_string(window[start:])
        end = rest.find('"')
        if end < 0:
            error = "it has no closing quote"
        elif end > QEMU_BACKING_NAME_MAX:
            error = f"it is longer than {QEMU_BACKING_NAME_MAX} bytes"
        else:
            hint = rest[:end]
    cid = _qemu_hex(window, "CID")
    return QemuView(cid, _qemu_hex(window, "parentCID"), hint, error)


def _check_qemu_view(view: QemuView, at: int, findings: list[Finding]) -> None:
    for key, value in (("CID", view.cid), ("parentCID", view.parent_cid)):
        if value is None:
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"vmdk: qemu 7.2 finds no {key} it can parse in the descriptor text at "
                    f"{at:#x} and refuses the image",
                    at,
                )
            )
    if view.hint_error:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: parentFileNameHint in the descriptor at {at:#x}: {view.hint_error}; "
                "qemu 7.2 refuses the image",
                at,
            )
        )
    elif view.parent_hint is not None:
        findings.append(_backing_file(view.parent_hint, at))


def _backing_file(name: str, at: int) -> Finding:
    return unsafe(
        Code.BACKING_FILE,
        f"vmdk: backing file '{_utf8(name)}' (descriptor parentFileNameHint near {at:#x}): qemu "
        "would open that host file; flatten the chain with qemu-img convert or refuse the image",
        at,
    )


def _check_descriptor_keys(
    desc: Descriptor, view: QemuView, at: int, findings: list[Finding]
) -> None:
    """Version, parent references and CID syntax, as the strict parse found them."""
    version = desc.value("version")
    if version is None:
        findings.append(warning(Code.INVALID_HEADER, "vmdk: descriptor has no version line", at))
    elif version not in ("1", "2", "3"):
        findings.append(
            unsafe(
                Code.UNSUPPORTED_VERSION,
                f"vmdk: descriptor version '{_utf8(version)}' is not 1, 2 or 3",
                desc.at("version", at),
            )
        )
    _check_descriptor_parent(desc, view, at, findings)
    for key in ("CID", "parentCID"):
        value = desc.value(key)
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{1,8}", value):
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"vmdk: {key}={_utf8(value)} is not 1 to 8 hex digits",
                    desc.at(key, at),
                )
            )


def _check_descriptor_parent(
    desc: Descriptor, view: QemuView, at: int, findings: list[Finding]
) -> None:
    """A parentFileNameHint qemu did not already report, or a parentCID with no hint."""
    hint = desc.value("parentFileNameHint")
    if hint is not None and hint != view.parent_hint:
        findings.append(_backing_file(hint, desc.at("parentFileNameHint", at)))
    parent_cid = desc.value("parentCID")
    if parent_cid is not None and parent_cid.lower() != NO_PARENT_CID and hint is None:
        findings.append(
            unsafe(
                Code.BACKING_FILE,
                f"vmdk: parentCID={_utf8(parent_cid)} says this disk is a delta of another; "
                "its data is incomplete without the parent; flatten the chain first",
                desc.at("parentCID", at),
            )
        )


def _check_descriptor_type(
    text: str, desc: Descriptor, at: int, findings: list[Finding]
) -> str | None:
    """createType as vmdk_open_desc_file reads it; qemu refuses all but six types."""
    qemu_type = _qemu_option(text, "createType", QEMU_CREATE_TYPE_MAX)
    declared = desc.value("createType")
    where = desc.at("createType", at)
    if qemu_type is None:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                'vmdk: descriptor has no createType="..." qemu can read; qemu 7.2 refuses it',
                where,
            )
        )
    elif qemu_type != declared:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: qemu 7.2 reads createType '{_utf8(qemu_type)}' from the first place the "
                f"word appears, not from the createType line ('{_utf8(declared or '')}')",
                where,
            )
        )
    create_type = qemu_type if qemu_type is not None else declared
    if create_type is not None and create_type not in QEMU_DESCRIPTOR_TYPES:
        findings.append(
            unsafe(
                Code.UNKNOWN_FEATURE,
                f"vmdk: createType '{_utf8(create_type)}' is not one qemu 7.2 opens as a "
                f"descriptor file ({', '.join(sorted(QEMU_DESCRIPTOR_TYPES))})",
                where,
            )
        )
    return None if create_type is None else _utf8(create_type)


def _qemu_option(text: str, name: str, limit: int) -> str | None:
    """vmdk_parse_description: first ``name`` anywhere, skip two bytes, up to a quote."""
    found = text.find(name)
    if found < 0:
        return None
    start = found + len(name) + 2
    end = text.find('"', start)
    if start >= len(text) or end < 0 or end - start > limit:
        return None
    return text[start:end]


def _qemu_extents(text: str, base: int, findings: list[Finding]) -> list[QemuExtent]:
    """The extents qemu's vmdk_parse_extents would open, scanning from every line start."""
    following = _next_non_space(text)
    extents: list[QemuExtent] = []
    # sscanf skips blank lines, so every line start before a line scans that same line again:
    # scan each once, or thousands of blank lines before a long number cost seconds.
    scanned: dict[int, list[str | int]] = {}
    start = 0
    while start < len(text):
        first = following[start]
        if first not in scanned:
            scanned[first] = _scan_extent_line(text, first, following)
        fields = scanned[first]
        extent, invalid = _qemu_extent(fields, base + start)
        if invalid:
            line = text[start:].split("\n", 1)[0].rstrip("\r")
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"vmdk: qemu 7.2 refuses the extent line at {base + start:#x}: '{_utf8(line)}'",
                    base + start,
                )
            )
            break
        if extent is not None:
            extents.append(extent)
        newline = text.find("\n", start)
        start = len(text) if newline < 0 else newline + 1
    return extents


def _qemu_extent(fields: list[str | int], at: int) -> tuple[QemuExtent | None, bool]:
    """Apply vmdk_parse_extents' rules to one sscanf result: (extent, qemu refuses)."""
    if len(fields) < 4 or fields[0] != "RW":
        return None, False
    sectors, kind, name = fields[1], str(fields[2]), str(fields[3])
    if kind == "FLAT":
        offset = fields[4] if len(fields) == 5 else -1
        if not isinstance(offset, int) or offset < 0:
            return None, True
    elif len(fields) != 4:
        return None, True
    if not isinstance(sectors, int) or sectors <= 0 or kind not in QEMU_EXTENT_TYPES:
        return None, False
    return QemuExtent(kind, sectors, name, at), False


def _next_non_space(text: str) -> list[int]:
    """For each position, the first position at or after it that is not C whitespace."""
    following = [len(text)] * (len(text) + 1)
    for i in range(len(text) - 1, -1, -1):
        following[i] = following[i + 1] if text[i] in _C_SPACE else i
    return following


def _scan_extent_line(text: str, pos: int, following: list[int]) -> list[str | int]:
    """``sscanf(p, "%10s %ld %10s \\"%511[^\\n\\r\\"]\\" %ld")``: the fields it assigns."""
    fields: list[str | int] = []
    access, pos = _scan_word(text, following[pos])
    if not access:
        return fields
    fields.append(access)
    sectors, pos = _scan_int(text, following[pos])
    if sectors is None:
        return fields
    fields.append(sectors)
    kind, pos = _scan_word(text, following[pos])
    if not kind:
        return fields
    fields.append(kind)
    pos = following[pos]
    if text[pos : pos + 1] != '"':
        return fields
    name_end = pos + 1
    while name_end < len(text) and name_end - pos <= QEMU_FILENAME_MAX:
        if text[name_end] in '\n\r"':
            break
        name_end += 1
    if name_end == pos + 1:
        return fields
    fields.append(text[pos + 1 : name_end])
    if text[name_end : name_end + 1] != '"':
        return fields
    offset, _ = _scan_int(text, following[name_end + 1])
    if offset is not None:
        fields.append(offset)
    return fields


def _scan_word(text: str, pos: int) -> tuple[str, int]:
    """``%10s`` after whitespace was skipped: up to ten non-space characters."""
    end = pos
    while end < len(text) and end - pos < 10 and text[end] not in _C_SPACE:
        end += 1
    return text[pos:end], end


def _scan_int(text: str, pos: int) -> tuple[int | None, int]:
    """``%ld`` after whitespace was skipped, saturating like strtol."""
    match = _DECIMAL.match(text, pos)
    if match is None:
        return None, pos
    # Python refuses to convert thousands of digits; strtol saturates them all the same.
    digits = match[0].lstrip("+-").lstrip("0")
    magnitude = int(digits or "0") if len(digits) <= _LONG_DIGITS else 2**64
    value = -magnitude if match[0].startswith("-") else magnitude
    return max(-(2**63), min(2**63 - 1, value)), match.end()


def _report_external_extents(
    desc: Descriptor, qemu_extents: list[QemuExtent], findings: list[Finding]
) -> None:
    """Every extent of a descriptor file is another file: name each file once."""
    lines = {extent.at for extent in desc.extents}
    named = {extent.filename for extent in desc.extents}
    strays = [e for e in qemu_extents if e.at not in lines]
    # The strays first: no details list names them.
    external: list[tuple[str, str, int, str]] = []
    for stray in strays:
        if stray.filename not in named:
            named.add(stray.filename)
            what = "qemu 7.2 would open it (its extent scanner reads across line ends)"
            external.append((stray.filename, stray.type, stray.at, what))
    external += [
        (e.filename, e.type, e.at, _who_opens(e.access))
        for e in desc.extents
        if e.filename is not None
    ]
    findings.extend(_external(*extent) for extent in external[:MAX_EXTENT_FINDINGS])
    if len(external) > MAX_EXTENT_FINDINGS:
        count = len(external) - MAX_EXTENT_FINDINGS
        findings.append(_more_external(count, external[MAX_EXTENT_FINDINGS][2]))
    if strays:
        findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: qemu 7.2 reads {len(strays)} extents starting on lines that are not "
                f"extent lines (first at {strays[0].at:#x}): a blank or broken line before an "
                "extent line makes it open that extent again and count it twice",
                strays[0].at,
            )
        )


def _no_qemu_extents(at: int) -> Finding:
    return unsafe(
        Code.INVALID_HEADER,
        f"vmdk: the descriptor at {at:#x} lists no extent qemu 7.2 opens (RW, more than 0 "
        "sectors, FLAT, SPARSE, VMFS, VMFSSPARSE or SESPARSE); qemu-img info and convert then "
        "abort on an assertion (vmdk_get_info: s->num_extents)",
        at,
    )


def _more_external(count: int, at: int) -> Finding:
    return unsafe(
        Code.EXTERNAL_EXTENT,
        f"vmdk: {count} more extents name files outside this image (details.extents lists"
        " those on the descriptor's extent lines)",
        at,
    )


def _who_opens(access: str) -> str:
    return "qemu 7.2 would open it" if access == "RW" else "VMware would open it"


def _external(name: str, kind: str, at: int, opened: str) -> Finding:
    return unsafe(
        Code.EXTERNAL_EXTENT,
        f"vmdk: {kind} extent '{_utf8(name)}' (descriptor line at {at:#x}) is a file outside this "
        f"image; {opened}; convert the whole disk with VMware tools or refuse it",
        at,
    )


# -- strict descriptor grammar ----------------------------------------------------------------


def _parse_extent(line: str, at: int) -> Extent | None:
    match = _EXTENT_LINE.fullmatch(line)
    if match is None or match[1] not in EXTENT_ACCESS:
        return None
    offset = None if match[5] is None else int(match[5])
    return Extent(match[1], int(match[2]), match[3], match[4], offset, at, _utf8(line))


def _add_key(
    keys: dict[str, tuple[str, int]], ddb: dict[str, str], key: str, value: str, at: int
) -> list[Finding]:
    """Record one ``key = value``; unknown or repeated keys are findings."""
    if key.startswith("ddb."):
        ddb.setdefault(key, value)
        return []
    if key not in DESCRIPTOR_KEYS:
        return [
            unsafe(
                Code.UNKNOWN_FEATURE,
                f"vmdk: unknown descriptor key '{_utf8(key)}' at {at:#x}; imgfmt cannot tell "
                "what a reader would do with it",
                at,
            )
        ]
    if key in keys:
        return [
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: descriptor key '{key}' repeated at {at:#x}; readers disagree on which "
                "one counts",
                at,
            )
        ]
    keys[key] = (value, at)
    if key == "changeTrackPath":
        return [info(Code.NOTE, f"vmdk: changeTrackPath '{_utf8(value)}' is ignored by qemu", at)]
    return []


def _bad_line(line: str, at: int) -> Finding:
    return unsafe(
        Code.INVALID_HEADER,
        f"vmdk: descriptor line at {at:#x} '{_utf8(line[:80])}' is neither a comment, a "
        "key = value pair nor an extent line; qemu's extent scanner may still act on it",
        at,
    )


def _more_bad_lines(count: int, at: int) -> Finding:
    return unsafe(Code.INVALID_HEADER, f"vmdk: {count} more unparseable descriptor lines", at)


def _check_extent_line(extent: Extent, index: int) -> list[Finding]:
    """Findings about one extent line of any descriptor: the count cap and the type."""
    found = []
    if index == MAX_EXTENTS:
        found.append(
            unsafe(
                Code.INVALID_HEADER,
                f"vmdk: more than {MAX_EXTENTS} extent lines (from {extent.at:#x}); imgfmt "
                "lists and checks no more",
                extent.at,
            )
        )
    if extent.type not in EXTENT_TYPES and index < MAX_EXTENTS:
        found.append(
            unsafe(
                Code.UNKNOWN_FEATURE,
                f"vmdk: extent type '{extent.type}' at {extent.at:#x} is not a VMDK extent type",
                extent.at,
            )
        )
    return found


def _descriptor_details(desc: Descriptor) -> dict[str, Any]:
    def ddb(key: str) -> str | None:
        value = desc.ddb.get(key)
        return None if value is None else _utf8(value)

    geometry = {name: ddb(f"ddb.geometry.{name}") for name in ("cylinders", "heads", "sectors")}
    return {
        "descriptor_version": desc.value("version"),
        "extents": [e.to_dict() for e in desc.extents],
        "adapter_type": ddb("ddb.adapterType"),
        "hardware_version": ddb("ddb.virtualHWVersion"),
        "geometry": geometry if any(geometry.values()) else None,
        "parent_file_name_hint": _optional_utf8(desc.value("parentFileNameHint")),
    }


def _optional_utf8(value: str | None) -> str | None:
    return None if value is None else _utf8(value)

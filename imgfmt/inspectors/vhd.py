"""VHD images (Connectix / Microsoft Virtual PC), which qemu calls "vpc".

References: Microsoft "Virtual Hard Disk Image Format Specification" 1.0 (2006), sections
"Hard Disk Footer Format", "Dynamic Disk Header Format" and "Block Allocation Table and Data
Blocks"; qemu 7.2 ``block/vpc.c`` (``vpc_open``, ``vpc_co_preadv``).

Every VHD ends with a 512-byte footer. Dynamic and differencing disks keep a copy of it at
offset 0, then a 1024-byte dynamic disk header at the footer's ``data_offset`` and a block
allocation table (BAT) of big-endian sector numbers. All fields are big-endian.

How qemu 7.2 reads a VHD, and so what is checked here:

- a footer at offset 0 makes it parse the dynamic disk header whatever the footer's type
  says; with none there, the footer at the end must say "fixed";
- a footer checksum mismatch makes it refuse the image; the dynamic header's is not checked;
- it never opens a differencing disk's parent: blocks the child lacks read as zeros;
- the disk size is the CHS geometry unless the creator application is one known to use
  ``current_size`` or the geometry is the largest CHS can say (see ``qemu_sectors``).

Split VHDs (several files making one disk) are not supported, by qemu or here.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, unsafe, warning
from ..source import Source
from .base import UNCHECKED_REFUSED, Inspection, Inspector, probe_bytes

log = Logger(__name__)

COOKIE = b"conectix"
DYN_COOKIE = b"cxsparse"
FOOTER_SIZE = 512
DYN_HEADER_SIZE = 1024
SECTOR_SIZE = 512

VHD_FIXED = 2
VHD_DYNAMIC = 3
VHD_DIFFERENCING = 4
DISK_TYPES = {VHD_FIXED: "fixed", VHD_DYNAMIC: "dynamic", VHD_DIFFERENCING: "differencing"}

#: qemu's size limit, in sectors (2040 GiB): a larger disk is refused with EFBIG.
VHD_MAX_SECTORS = 0xFF000000
#: The largest geometry CHS can say; qemu then trusts current_size instead.
VHD_MAX_GEOMETRY = 65535 * 16 * 255
#: Creator applications whose images qemu sizes by current_size, not by CHS geometry:
#: Hyper-V, qemu with force_size, Disk2vhd, XenConverter, XenServer.
CURRENT_SIZE_CREATORS = frozenset({b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"})
#: qemu holds max_table_entries in an int and refuses more than INT_MAX / 4.
MAX_TABLE_ENTRIES = 0x7FFFFFFF // 4
UNALLOCATED = 0xFFFFFFFF

#: At most this many BAT entries (256 KiB) are read; qemu checks the rest itself on open.
BAT_ENTRIES_CAP = 64 * 1024
#: At most this many bytes of each parent locator's data are read.
LOCATOR_READ_CAP = 2048
#: Parent locator platform codes whose data is a UTF-16LE path; the others hold UTF-8 or
#: opaque Mac aliases, shown as UTF-8 with replacement characters.
UTF16_PLATFORMS = frozenset({b"W2ku", b"W2ru"})
NO_PLATFORM = bytes(4)

# Byte offsets of the fields that findings point at.
FOOTER_CHECKSUM_AT = 0x40
FOOTER_TYPE_AT = 0x3C
FOOTER_SIZE_AT = 0x30
DYN_CHECKSUM_AT = 0x24
DYN_MAX_TABLE_ENTRIES_AT = 0x1C
DYN_BLOCK_SIZE_AT = 0x20
DYN_TABLE_OFFSET_AT = 0x10
DYN_PARENT_NAME_AT = 0x40
DYN_LOCATORS_AT = 0x240

_FOOTER = struct.Struct(">8sIIQI4sHH4sQQHBBII16sB")
_DYN_HEADER = struct.Struct(">8sQQIIII16sII512s")
_LOCATOR = struct.Struct(">4sIIIQ")
_LOCATOR_COUNT = 8
_BAT_ENTRY = struct.Struct(">I")


def vhd_checksum(record: bytes, checksum_at: int) -> int:
    """One's complement of the byte sum of ``record``, its checksum field left out."""
    total = sum(record) - sum(record[checksum_at : checksum_at + 4])
    return ~total & 0xFFFFFFFF


class VhdFooter(NamedTuple):
    """The hard disk footer (spec "Hard Disk Footer Format"), with qemu's field names."""

    creator: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    major: int
    minor: int
    creator_os: bytes
    orig_size: int
    current_size: int
    cyls: int
    heads: int
    secs_per_cyl: int
    type: int
    checksum: int
    uuid: bytes
    in_saved_state: int
    computed_checksum: int

    @classmethod
    def from_bytes(cls, data: bytes) -> VhdFooter:
        fields: tuple[Any, ...] = (
            *_FOOTER.unpack_from(data),
            vhd_checksum(data, FOOTER_CHECKSUM_AT),
        )
        return cls(*fields)

    @property
    def chs_sectors(self) -> int:
        return self.cyls * self.heads * self.secs_per_cyl


class ParentLocator(NamedTuple):
    """One parent locator entry of the dynamic disk header."""

    platform: bytes
    data_space: int
    data_length: int
    reserved: int
    data_offset: int


class DynDiskHeader(NamedTuple):
    """The dynamic disk header (spec "Dynamic Disk Header Format"), with qemu's names."""

    magic: bytes
    data_offset: int
    table_offset: int
    version: int
    max_table_entries: int
    block_size: int
    checksum: int
    parent_uuid: bytes
    parent_timestamp: int
    reserved: int
    parent_name: bytes
    parent_locator: tuple[ParentLocator, ...]
    computed_checksum: int

    @classmethod
    def from_bytes(cls, data: bytes) -> DynDiskHeader:
        locators = tuple(
            ParentLocator(*_LOCATOR.unpack_from(data, DYN_LOCATORS_AT + i * _LOCATOR.size))
            for i in range(_LOCATOR_COUNT)
        )
        fields: tuple[Any, ...] = (
            *_DYN_HEADER.unpack_from(data),
            locators,
            vhd_checksum(data, DYN_CHECKSUM_AT),
        )
        return cls(*fields)

    @property
    def parent_unicode_name(self) -> str:
        return self.parent_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]

    @property
    def bitmap_size(self) -> int:
        """Bytes of the sector bitmap before each block, as qemu computes it."""
        return (self.block_size // (8 * SECTOR_SIZE) + 511) & ~511


def qemu_sectors(footer: VhdFooter) -> tuple[int, str]:
    """The disk size in sectors as qemu 7.2 derives it, and which field it came from."""
    if footer.creator_app in CURRENT_SIZE_CREATORS or footer.chs_sectors == VHD_MAX_GEOMETRY:
        return footer.current_size // SECTOR_SIZE, "current_size"
    return footer.chs_sectors, "chs"


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace")


class VhdInspector(Inspector):
    """VHD images as qemu's ``vpc`` driver reads them."""

    format = "vhd"

    @classmethod
    def probe(cls, source: Source) -> bool:
        # A fixed disk has its footer only at the end, so both places are looked at.
        if probe_bytes(source, 0, len(COOKIE)) == COOKIE:
            return True
        size = source.size
        if size is None or size < FOOTER_SIZE:
            return False
        return probe_bytes(source, size - FOOTER_SIZE, len(COOKIE)) == COOKIE

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        footer_at, footer = cls._footer(source)
        log.debug("vhd: %s footer at %#x, type %d", source.name, footer_at, footer.type)
        findings = cls._check_footer(footer, footer_at)
        sectors, size_source = qemu_sectors(footer)
        if sectors > VHD_MAX_SECTORS:
            findings.append(
                cls._refused(
                    f"disk of {sectors} sectors ({size_source}) is above qemu's limit of"
                    f" {VHD_MAX_SECTORS} (2040 GiB)",
                    footer_at + FOOTER_SIZE_AT,
                )
            )

        dyn = None
        if footer_at == 0:
            findings += cls._check_tail_copy(source, footer)
            dyn, more = cls._dynamic(source, footer, sectors)
            findings += more
        else:
            findings += cls._check_fixed(sectors, footer_at)
        details = cls._details(footer, size_source, dyn)
        return Inspection(cls.format, sectors * SECTOR_SIZE, details, tuple(findings))

    @classmethod
    def _footer(cls, source: Source) -> tuple[int, VhdFooter]:
        """The footer qemu would use: the copy at offset 0, else the one at the end."""
        if source.read(0, len(COOKIE)) == COOKIE:
            return 0, VhdFooter.from_bytes(cls.read(source, 0, FOOTER_SIZE, "footer"))
        size = source.size
        if size is None or size < FOOTER_SIZE:
            raise cls.error("no 'conectix' footer at offset 0 and no room for one at the end")
        # qemu finds the end through bdrv_getlength, the size rounded up to whole sectors, and
        # reads zeros past the real end: a file that is not a multiple of 512 bytes has its
        # footer, for qemu, less than 512 bytes before the end.
        at = -(-size // SECTOR_SIZE) * SECTOR_SIZE - FOOTER_SIZE
        data = cls.read(source, at, size - at, "footer")
        footer = VhdFooter.from_bytes(data.ljust(FOOTER_SIZE, b"\0"))
        if footer.creator != COOKIE:
            raise cls.error(f"no 'conectix' cookie at offset 0 or at {at:#x}", at, "cookie")
        if footer.type != VHD_FIXED:
            raise cls.error(
                f"disk type {footer.type} in the footer at {at:#x}, the only footer: qemu"
                " opens a VHD without a footer copy at offset 0 only as a fixed disk (type 2)"
                " and refuses this one",
                at + FOOTER_TYPE_AT,
                "type",
            )
        return at, footer

    @classmethod
    def _check_footer(cls, footer: VhdFooter, at: int) -> list[Finding]:
        found = []
        if footer.checksum != footer.computed_checksum:
            found.append(
                unsafe(
                    Code.CHECKSUM_MISMATCH,
                    f"vhd: footer checksum {footer.checksum:#010x} at {at + FOOTER_CHECKSUM_AT:#x}"
                    f" does not match the footer ({footer.computed_checksum:#010x}): the image is"
                    " damaged or was edited, and qemu refuses it",
                    at + FOOTER_CHECKSUM_AT,
                )
            )
        if footer.type not in DISK_TYPES:
            found.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"vhd: disk type {footer.type} at {at + FOOTER_TYPE_AT:#x} is none of"
                    " 2 (fixed), 3 (dynamic), 4 (differencing); qemu would read it as a dynamic"
                    " disk, other tools not at all",
                    at + FOOTER_TYPE_AT,
                )
            )
        elif footer.type == VHD_FIXED and at == 0:
            found.append(
                unsafe(
                    Code.INVALID_HEADER,
                    "vhd: a fixed disk with a footer at offset 0: qemu would parse a dynamic disk"
                    " header and yet read the whole file as the disk, footer included",
                    at + FOOTER_TYPE_AT,
                )
            )
        return found

    @classmethod
    def _check_tail_copy(cls, source: Source, footer: VhdFooter) -> list[Finding]:
        """The copy at the end should match: qemu reads the first, Hyper-V the last."""
        size = source.size
        if size is None or size < 2 * FOOTER_SIZE:
            return []
        at = size - FOOTER_SIZE
        if VhdFooter.from_bytes(cls.read(source, at, FOOTER_SIZE, "footer copy")) == footer:
            return []
        return [
            warning(
                Code.INVALID_HEADER,
                f"vhd: the footer at the end ({at:#x}) differs from the copy at offset 0: qemu"
                " uses the first, other tools the last, so they may see different disks",
                at,
            )
        ]

    @classmethod
    def _check_fixed(cls, sectors: int, footer_at: int) -> list[Finding]:
        if sectors * SECTOR_SIZE <= footer_at:
            return []
        return [
            warning(
                Code.TRUNCATED,
                f"vhd: fixed disk of {sectors * SECTOR_SIZE} bytes, but only {footer_at} bytes"
                " precede its footer: qemu reads the footer and zeros as the disk's last bytes",
                footer_at,
            )
        ]

    @classmethod
    def _dynamic(
        cls, source: Source, footer: VhdFooter, sectors: int
    ) -> tuple[DynDiskHeader | None, list[Finding]]:
        """Parse and check the dynamic disk header, its BAT and its parent locators."""
        at = footer.data_offset
        data = source.read(at, DYN_HEADER_SIZE)
        if len(data) < DYN_HEADER_SIZE:
            return None, [
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"vhd: data_offset {at:#x} (footer field at 0x10) leaves no room for the"
                    " dynamic disk header in the file; qemu refuses the image",
                    0x10,
                )
            ]
        dyn = DynDiskHeader.from_bytes(data)
        if dyn.magic != DYN_COOKIE:
            return None, [
                cls._refused(
                    f"dynamic disk header at {at:#x} has cookie {dyn.magic!r}, not 'cxsparse'", at
                )
            ]

        found = cls._check_dyn_header(dyn, at, sectors)
        if not found:
            found += cls._check_bat(source, dyn, at)
        found += cls._check_parent(source, footer, dyn, at)
        if dyn.checksum != dyn.computed_checksum:
            found.append(
                unsafe(
                    Code.CHECKSUM_MISMATCH,
                    f"vhd: dynamic disk header checksum {dyn.checksum:#010x} at"
                    f" {at + DYN_CHECKSUM_AT:#x} does not match the header"
                    f" ({dyn.computed_checksum:#010x}): the header is damaged or was edited",
                    at + DYN_CHECKSUM_AT,
                )
            )
        return dyn, found

    @classmethod
    def _check_dyn_header(cls, dyn: DynDiskHeader, at: int, sectors: int) -> list[Finding]:
        """The table checks of qemu's vpc_open; each failing one makes qemu refuse."""
        block_size = dyn.block_size
        if block_size < SECTOR_SIZE or block_size & (block_size - 1):
            return [
                cls._refused(
                    f"block_size {block_size} is not a power of two of at least 512",
                    at + DYN_BLOCK_SIZE_AT,
                )
            ]
        if dyn.max_table_entries > MAX_TABLE_ENTRIES:
            return [
                cls._refused(
                    f"max_table_entries {dyn.max_table_entries} is above qemu's limit"
                    f" {MAX_TABLE_ENTRIES}",
                    at + DYN_MAX_TABLE_ENTRIES_AT,
                )
            ]
        if dyn.max_table_entries * block_size < sectors * SECTOR_SIZE:
            return [
                cls._refused(
                    f"max_table_entries {dyn.max_table_entries} blocks of {block_size} bytes do"
                    f" not cover the disk's {sectors * SECTOR_SIZE} bytes",
                    at + DYN_MAX_TABLE_ENTRIES_AT,
                )
            ]
        return []

    @classmethod
    def _check_bat(cls, source: Source, dyn: DynDiskHeader, at: int) -> list[Finding]:
        """The BAT and every block it names must lie in the file, or qemu refuses."""
        size = source.size
        table_end = -(-(dyn.table_offset + dyn.max_table_entries * 4) // 512) * 512
        if size is not None and table_end > size:
            return [
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"vhd: BAT at table_offset {dyn.table_offset:#x} ({dyn.max_table_entries}"
                    f" entries) ends at {table_end:#x}, past the end of the file ({size:#x});"
                    " qemu refuses the image",
                    at + DYN_TABLE_OFFSET_AT,
                )
            ]

        count = min(dyn.max_table_entries, BAT_ENTRIES_CAP)
        table = cls.read(source, dyn.table_offset, count * _BAT_ENTRY.size, "BAT")
        found = cls._check_blocks(dyn, table, size)
        if count < dyn.max_table_entries:
            found.append(
                cls.unchecked(
                    count, dyn.max_table_entries, "BAT entries", UNCHECKED_REFUSED, dyn.table_offset
                )
            )
        return found

    @classmethod
    def _check_blocks(cls, dyn: DynDiskHeader, table: bytes, size: int | None) -> list[Finding]:
        span = dyn.bitmap_size + dyn.block_size
        for index, (sector,) in enumerate(_BAT_ENTRY.iter_unpack(table)):
            end = sector * SECTOR_SIZE + span
            if sector != UNALLOCATED and size is not None and end > size:
                return [
                    unsafe(
                        Code.TRUNCATED,
                        f"vhd: block {index} (BAT entry at"
                        f" {dyn.table_offset + index * 4:#x}) ends at {end:#x}, past the end of"
                        f" the file ({size:#x}): the image was truncated, and qemu refuses it",
                        dyn.table_offset + index * 4,
                    )
                ]
        return []

    @classmethod
    def _check_parent(
        cls, source: Source, footer: VhdFooter, dyn: DynDiskHeader, at: int
    ) -> list[Finding]:
        """A differencing disk names its parent; qemu never opens it."""
        names = [
            f"{_text(loc.platform)} {cls._locator_text(source, loc)!r}"
            for loc in dyn.parent_locator
            if loc.platform != NO_PLATFORM
        ]
        parent = dyn.parent_unicode_name
        described = f"parent {parent!r}" + (f" (locators: {', '.join(names)})" if names else "")
        if footer.type == VHD_DIFFERENCING:
            return [
                unsafe(
                    Code.BACKING_FILE,
                    f"vhd: differencing disk with {described} (dynamic header at {at:#x}): qemu"
                    " does not open VHD parents and would read every block this disk lacks as"
                    " zeros, other tools would open that host file; merge the disk into its parent"
                    " or refuse the image",
                    at + DYN_PARENT_NAME_AT,
                )
            ]
        if names or parent:
            return [
                warning(
                    Code.INVALID_HEADER,
                    f"vhd: a {DISK_TYPES.get(footer.type, 'non-differencing')} disk carrying"
                    f" {described}: qemu ignores it, but it has no place outside a differencing"
                    " disk",
                    at + DYN_PARENT_NAME_AT,
                )
            ]
        return []

    @classmethod
    def _locator_text(cls, source: Source, loc: ParentLocator) -> str:
        length = min(loc.data_length, LOCATOR_READ_CAP)
        data = source.read(loc.data_offset, length)
        if len(data) < length:
            return f"<data at {loc.data_offset:#x} lies outside the file>"
        encoding = "utf-16-le" if loc.platform in UTF16_PLATFORMS else "utf-8"
        return data.decode(encoding, errors="replace").split("\0", 1)[0]

    @classmethod
    def _details(
        cls, footer: VhdFooter, size_source: str, dyn: DynDiskHeader | None
    ) -> dict[str, Any]:
        return {
            "disk_type": DISK_TYPES.get(footer.type, f"unknown ({footer.type})"),
            "creator_application": _text(footer.creator_app),
            "creator_version": f"{footer.major}.{footer.minor}",
            "creator_host_os": _text(footer.creator_os),
            "geometry": {
                "cylinders": footer.cyls,
                "heads": footer.heads,
                "sectors_per_track": footer.secs_per_cyl,
            },
            "current_size": footer.current_size,
            "original_size": footer.orig_size,
            "size_source": size_source,
            "block_size": dyn.block_size if dyn else None,
            "max_table_entries": dyn.max_table_entries if dyn else None,
            "uuid": str(uuid.UUID(bytes=footer.uuid)),
        }

    @classmethod
    def _refused(cls, message: str, offset: int) -> Finding:
        """A header value that makes qemu refuse the image."""
        return unsafe(Code.INVALID_HEADER, f"vhd: {message}; qemu refuses the image", offset)

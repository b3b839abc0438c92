"""VHDX images (Hyper-V virtual hard disk v2).

References: Microsoft "[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format" 1.0, sections 2.2
(header section: file type identifier, headers, region table), 2.3 (log), 2.5 (BAT) and 2.6
(metadata region and its known items); qemu 7.2 ``block/vhdx.c`` (``vhdx_open``,
``vhdx_parse_header``, ``vhdx_open_region_tables``, ``vhdx_parse_metadata``,
``vhdx_check_bat_entries``), ``block/vhdx-log.c`` (``vhdx_parse_log``) and ``block/vhdx.h``.

Everything is little-endian; GUIDs are in Microsoft's mixed-endian layout (``bytes_le``).

How qemu 7.2 reads a VHDX, and so what is checked here:

- of the two headers (64 KiB and 128 KiB) it takes the valid one, or of two valid ones the
  one with the higher sequence number; equal numbers on differing headers make it refuse;
- it reads only the first region table (192 KiB) and refuses a bad CRC there, an unknown
  region marked required, and regions that overlap each other or the log;
- a non-zero log GUID means a log to replay: qemu refuses the image read-only when the log
  holds valid entries and rewrites the file when it may write, so any pending log is unsafe;
- it refuses differencing images (has_parent), logical sectors other than 512 bytes, unknown
  required metadata items, and a BAT whose present blocks lie past the end of the file;
- the disk size is the virtual disk size item rounded down to a 512-byte sector.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, info, unsafe, warning
from ..source import Source
from .base import UNCHECKED_REFUSED, Inspection, Inspector, probe_bytes

log = Logger(__name__)

KiB = 1024
MiB = 1024 * KiB
TiB = 1024 * 1024 * MiB

FILE_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"
#: The two headers, each covered by its CRC over 4 KiB (MS-VHDX 2.2.2).
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
HEADER_VERSION = 1
LOG_VERSION = 0
#: qemu reads only the first region table; its CRC covers 64 KiB (MS-VHDX 2.2.3).
REGION_TABLE_OFFSET = 192 * KiB
REGION_TABLE_SIZE = 64 * KiB
MAX_REGION_ENTRIES = 2047
#: The metadata table fills the first 64 KiB of the metadata region (MS-VHDX 2.6.1).
METADATA_TABLE_SIZE = 64 * KiB
LOG_ALIGNMENT = MiB
BLOCK_SIZE_MIN = MiB
BLOCK_SIZE_MAX = 256 * MiB
#: The only logical sector size qemu 7.2 accepts; the BAT's chunk ratio is derived from it.
LOGICAL_SECTOR_SIZE = 512
PHYSICAL_SECTOR_SIZES = (512, 4096)
MAX_SECTORS_PER_BLOCK = 1 << 23
#: The largest virtual disk MS-VHDX allows (2.6.2.2).
MAX_VIRTUAL_DISK_SIZE = 64 * TiB

#: At most this many BAT entries (256 KiB) are read; qemu checks the rest itself on open.
BAT_ENTRIES_CAP = 32 * KiB
#: At most this many bytes of the parent locator item are read.
PARENT_LOCATOR_READ_CAP = 8 * KiB

# BAT entry states (MS-VHDX 2.5.1) and the file offset bits.
PAYLOAD_BLOCK_FULLY_PRESENT = 6
#: Not present, undefined, zero, unmapped (and its v0.95 value 5), fully present. Partially
#: present (7, differencing disks only) and 4 make qemu fail the read with EIO.
READABLE_STATES = frozenset({0, 1, 2, 3, 5, PAYLOAD_BLOCK_FULLY_PRESENT})
BAT_STATE_MASK = 0x7
BAT_FILE_OFFSET_MASK = 0xFFFFFFFFFFF00000
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1

REGION_ENTRY_REQUIRED = 0x1
METADATA_IS_REQUIRED = 0x4
PARAMS_LEAVE_BLOCKS_ALLOCATED = 0x1
PARAMS_HAS_PARENT = 0x2


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


BAT_GUID = _guid("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_GUID = _guid("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS_GUID = _guid("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_DISK_SIZE_GUID = _guid("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83_GUID = _guid("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR_GUID = _guid("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR_GUID = _guid("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR_GUID = _guid("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
REGION_NAMES = {BAT_GUID: "BAT", METADATA_GUID: "metadata"}
#: The metadata items qemu knows; all but the parent locator are required in every file.
METADATA_NAMES = {
    FILE_PARAMETERS_GUID: "file parameters",
    VIRTUAL_DISK_SIZE_GUID: "virtual disk size",
    PAGE83_GUID: "page 83 data",
    LOGICAL_SECTOR_GUID: "logical sector size",
    PHYSICAL_SECTOR_GUID: "physical sector size",
    PARENT_LOCATOR_GUID: "parent locator",
}
REQUIRED_ITEMS = frozenset(METADATA_NAMES) - {PARENT_LOCATOR_GUID}
ZERO_GUID = bytes(16)

_IDENTIFIER = struct.Struct("<8s512s")
_HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")
_REGION_HEADER = struct.Struct("<4sIII")
_REGION_ENTRY = struct.Struct("<16sQII")
_METADATA_HEADER = struct.Struct("<8sHH20s")
_METADATA_ENTRY = struct.Struct("<16sIII4s")
_FILE_PARAMETERS = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_LOCATOR_HEADER = struct.Struct("<16sHH")
_LOCATOR_ENTRY = struct.Struct("<IIHH")


def _crc32c_tables() -> tuple[tuple[int, ...], ...]:
    """Slicing-by-8 tables of CRC-32C (Castagnoli, reflected polynomial 0x82f63b78).

    Table 0 is the classic byte-at-a-time table; table k advances a byte's contribution by
    k more zero bytes, so that eight bytes are folded in with eight look-ups.
    """
    first = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        first.append(crc)
    tables = [tuple(first)]
    for _ in range(7):
        previous = tables[-1]
        tables.append(tuple((value >> 8) ^ first[value & 0xFF] for value in previous))
    return tuple(tables)


_CRC32C_TABLES = _crc32c_tables()
_WORD = struct.Struct("<Q")


#: The reflected CRC-32C polynomial; as a register value, bit 31 is x**0.
_POLY = 0x82F63B78


def _multiply(a: int, b: int) -> int:
    """The product of two reflected polynomials modulo the CRC-32C polynomial."""
    product = 0
    bit = 1 << 31
    while a & ((bit << 1) - 1):
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> tuple[int, ...]:
    """x**(2**k) modulo the polynomial, for k < 64: squaring one gives the next."""
    powers = [1 << 30]  # x**1
    for _ in range(63):
        powers.append(_multiply(powers[-1], powers[-1]))
    return tuple(powers)


#: Feeding zero bytes to the register is linear over GF(2): n zero bytes multiply it by
#: x**(8n). Headers and region tables are mostly zeros: their tails are folded in with a few
#: products instead of a look-up per byte.
_POWERS = _powers()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``, as MS-VHDX 2.2.2 uses it (initial and final XOR 0xffffffff)."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _CRC32C_TABLES
    crc = U32
    body = bytes(data).rstrip(b"\0")
    zeros = len(data) - len(body)
    whole = len(body) - len(body) % 8
    for (word,) in _WORD.iter_unpack(body[:whole]):
        word ^= crc
        crc = (
            t7[word & 0xFF]
            ^ t6[(word >> 8) & 0xFF]
            ^ t5[(word >> 16) & 0xFF]
            ^ t4[(word >> 24) & 0xFF]
            ^ t3[(word >> 32) & 0xFF]
            ^ t2[(word >> 40) & 0xFF]
            ^ t1[(word >> 48) & 0xFF]
            ^ t0[word >> 56]
        )
    for byte in body[whole:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    power = 3  # x**(8n): the bits of n, three places up
    while zeros:
        if zeros & 1:
            crc = _multiply(_POWERS[power], crc)
        zeros >>= 1
        power += 1
    return crc ^ U32


def block_checksum(block: bytes) -> int:
    """The CRC of a header or region table: its own checksum field (bytes 4..8) as zeros."""
    return crc32c(block[:4] + bytes(4) + block[8:])


class FileIdentifier(NamedTuple):
    """The file type identifier at offset 0 (MS-VHDX 2.2.1)."""

    signature: bytes
    creator: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> FileIdentifier:
        return cls(*_IDENTIFIER.unpack_from(data))

    @property
    def creator_text(self) -> str:
        return self.creator.decode("utf-16-le", errors="replace").split("\0", 1)[0]


class VhdxHeader(NamedTuple):
    """One of the two headers (MS-VHDX 2.2.2), with qemu's field names."""

    signature: bytes
    checksum: int
    sequence_number: int
    file_write_guid: bytes
    data_write_guid: bytes
    log_guid: bytes
    log_version: int
    version: int
    log_length: int
    log_offset: int

    @classmethod
    def from_bytes(cls, data: bytes) -> VhdxHeader:
        return cls(*_HEADER.unpack_from(data))


class RegionTableEntry(NamedTuple):
    """A region table entry (MS-VHDX 2.2.3.2)."""

    guid: bytes
    file_offset: int
    length: int
    data_bits: int

    @classmethod
    def from_bytes(cls, data: bytes, offset: int) -> RegionTableEntry:
        return cls(*_REGION_ENTRY.unpack_from(data, offset))

    @property
    def end(self) -> int:
        return (self.file_offset + self.length) & U64


class MetadataTableEntry(NamedTuple):
    """A metadata table entry (MS-VHDX 2.6.1.2); ``offset`` is relative to the region."""

    item_id: bytes
    offset: int
    length: int
    data_bits: int
    reserved2: bytes

    @classmethod
    def from_bytes(cls, data: bytes, offset: int) -> MetadataTableEntry:
        return cls(*_METADATA_ENTRY.unpack_from(data, offset))


class Metadata(NamedTuple):
    """The metadata items qemu reads, decoded."""

    block_size: int
    data_bits: int
    virtual_disk_size: int
    logical_sector_size: int
    physical_sector_size: int
    parent_locator: tuple[str, ...] | None

    @property
    def has_parent(self) -> bool:
        return bool(self.data_bits & PARAMS_HAS_PARENT)

    @property
    def leave_blocks_allocated(self) -> bool:
        return bool(self.data_bits & PARAMS_LEAVE_BLOCKS_ALLOCATED)


class Regions(NamedTuple):
    """What the region table gave: the two known regions and every range qemu registered."""

    bat: RegionTableEntry
    metadata: RegionTableEntry
    ranges: tuple[tuple[int, int], ...]


def _overlaps(start: int, end: int, ranges: Iterable[tuple[int, int]]) -> bool:
    """qemu's vhdx_region_check: does [start, end) meet any registered range?"""
    return any(not (start >= r_end or end <= r_start) for r_start, r_end in ranges)


class VhdxInspector(Inspector):
    """VHDX images as qemu's ``vhdx`` driver reads them."""

    format = "vhdx"

    @classmethod
    def probe(cls, source: Source) -> bool:
        return probe_bytes(source, 0, len(FILE_SIGNATURE)) == FILE_SIGNATURE

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        ident = FileIdentifier.from_bytes(
            cls.read(source, 0, _IDENTIFIER.size, "file type identifier")
        )
        if ident.signature != FILE_SIGNATURE:
            raise cls.error(f"signature {ident.signature!r} at 0 is not 'vhdxfile'", 0)

        current, findings = cls._current_header(source)
        header = None
        log_range: list[tuple[int, int]] = []
        if current is not None:
            header, header_at = current
            findings += cls._check_log(header, header_at)
            log_range.append((header.log_offset, (header.log_offset + header.log_length) & U64))
        regions, more = cls._region_table(source, log_range)
        findings += more
        log.debug(
            "vhdx: %s BAT at %#x, metadata at %#x",
            source.name,
            regions.bat.file_offset,
            regions.metadata.file_offset,
        )
        meta, more = cls._metadata(source, regions.metadata)
        findings += more
        if cls._bat_is_usable(meta):
            findings += cls._check_bat(source, regions, meta)

        virtual_size = meta.virtual_disk_size // LOGICAL_SECTOR_SIZE * LOGICAL_SECTOR_SIZE
        details = cls._details(ident, header, meta)
        return Inspection(cls.format, virtual_size, details, tuple(findings))

    # Headers and log (MS-VHDX 2.2.2, 2.3; qemu vhdx_parse_header, vhdx_parse_log).

    @classmethod
    def _current_header(cls, source: Source) -> tuple[tuple[VhdxHeader, int] | None, list[Finding]]:
        """The header qemu would use and its offset, with what is wrong with either."""
        valid: list[tuple[VhdxHeader, int, bytes]] = []
        problems: list[tuple[Code, str, int]] = []
        for at in HEADER_OFFSETS:
            block = source.read(at, HEADER_SIZE)
            problem = cls._header_problem(block, at)
            if problem is None:
                valid.append((VhdxHeader.from_bytes(block), at, block))
            else:
                problems.append((*problem, at))
        # A bad header is harmless while the other one is good: qemu then uses that one.
        severity = warning if valid else unsafe
        findings = [severity(code, message, at) for code, message, at in problems]

        if len(valid) < 2:
            return (valid[0][:2] if valid else None), findings
        (first, first_at, first_block), (second, second_at, second_block) = valid
        if first.sequence_number > second.sequence_number:
            return (first, first_at), findings
        if second.sequence_number > first.sequence_number:
            return (second, second_at), findings
        if first_block == second_block:
            return (first, first_at), findings
        return None, [
            unsafe(
                Code.INVALID_HEADER,
                f"vhdx: both headers carry sequence number {first.sequence_number} but differ, so"
                " neither is current; qemu refuses the image",
                second_at,
            )
        ]

    @classmethod
    def _header_problem(cls, block: bytes, at: int) -> tuple[Code, str] | None:
        """Why qemu would not use the header at ``at``, or None when it would."""
        where = f"vhdx: header {HEADER_OFFSETS.index(at) + 1} at {at:#x}"
        if len(block) < HEADER_SIZE:
            return Code.TRUNCATED, f"{where} lies past the end of the file"
        header = VhdxHeader.from_bytes(block)
        computed = block_checksum(block)
        if header.checksum != computed:
            return Code.CHECKSUM_MISMATCH, (
                f"{where}: checksum {header.checksum:#010x} does not match its contents"
                f" ({computed:#010x}); qemu ignores this header"
            )
        if header.signature != HEADER_SIGNATURE:
            return Code.INVALID_HEADER, f"{where}: signature {header.signature!r} is not 'head'"
        if header.version != HEADER_VERSION:
            return Code.UNSUPPORTED_VERSION, (
                f"{where}: version {header.version}; qemu reads only version 1 headers"
            )
        return None

    @classmethod
    def _check_log(cls, header: VhdxHeader, at: int) -> list[Finding]:
        if header.log_offset < LOG_ALIGNMENT or header.log_offset % LOG_ALIGNMENT:
            return [
                cls._refused(
                    f"log_offset {header.log_offset:#x} is not a non-zero multiple of 1 MiB",
                    at + 0x48,
                )
            ]
        if header.log_version != LOG_VERSION:
            return [
                unsafe(
                    Code.UNSUPPORTED_VERSION,
                    f"vhdx: log_version {header.log_version}; qemu reads only version 0 logs and"
                    " refuses the image",
                    at + 0x40,
                )
            ]
        if header.log_guid == ZERO_GUID or header.log_length == 0:
            return []
        if header.log_length % LOG_ALIGNMENT:
            return [
                cls._refused(
                    f"log_length {header.log_length} is not a multiple of 1 MiB", at + 0x44
                )
            ]
        return [
            unsafe(
                Code.DIRTY,
                f"vhdx: log_guid {uuid.UUID(bytes_le=header.log_guid)} names a log of"
                f" {header.log_length} bytes at {header.log_offset:#x} that may hold updates not"
                " yet applied: qemu refuses such an image read-only and rewrites it when it may"
                " write; replay it (qemu-img check -r all) on a copy and inspect the result",
                at + 0x30,
            )
        ]

    # Region table (MS-VHDX 2.2.3; qemu vhdx_open_region_tables).

    @classmethod
    def _region_table(
        cls, source: Source, log_range: list[tuple[int, int]]
    ) -> tuple[Regions, list[Finding]]:
        table = cls.read(source, REGION_TABLE_OFFSET, REGION_TABLE_SIZE, "region table")
        signature, checksum, entry_count, _ = _REGION_HEADER.unpack_from(table)
        if signature != REGION_SIGNATURE:
            raise cls.error(
                f"region table signature {signature!r} at {REGION_TABLE_OFFSET:#x} is not 'regi'",
                REGION_TABLE_OFFSET,
            )
        findings = []
        computed = block_checksum(table)
        if checksum != computed:
            findings.append(
                unsafe(
                    Code.CHECKSUM_MISMATCH,
                    f"vhdx: region table checksum {checksum:#010x} at {REGION_TABLE_OFFSET + 4:#x}"
                    f" does not match its contents ({computed:#010x}): the table is"
                    " damaged or was edited, and qemu refuses the image",
                    REGION_TABLE_OFFSET + 4,
                )
            )
        if entry_count > MAX_REGION_ENTRIES:
            findings.append(
                cls._refused(
                    f"region table entry_count {entry_count} is above {MAX_REGION_ENTRIES}",
                    REGION_TABLE_OFFSET + 8,
                )
            )
        entries = [
            RegionTableEntry.from_bytes(table, _REGION_HEADER.size + i * _REGION_ENTRY.size)
            for i in range(min(entry_count, MAX_REGION_ENTRIES))
        ]
        regions, more = cls._regions(entries, log_range, source.size)
        return regions, findings + more

    @classmethod
    def _regions(
        cls, entries: list[RegionTableEntry], log_range: list[tuple[int, int]], size: int | None
    ) -> tuple[Regions, list[Finding]]:
        """Check the entries in order, each against the log and the entries before it."""
        registered = list(log_range)
        found: dict[bytes, RegionTableEntry] = {}
        findings = []
        for index, entry in enumerate(entries):
            at = REGION_TABLE_OFFSET + _REGION_HEADER.size + index * _REGION_ENTRY.size
            if _overlaps(entry.file_offset, entry.end, registered):
                findings.append(
                    cls._refused(
                        f"region {index} ({entry.file_offset:#x}+{entry.length:#x}) overlaps the"
                        " log or another region",
                        at,
                    )
                )
            registered.append((entry.file_offset, entry.end))
            findings += cls._region(entry, at, found, size)

        missing = [name for guid, name in REGION_NAMES.items() if guid not in found]
        if missing:
            raise cls.error(
                f"the region table has no {' or '.join(missing)} region", REGION_TABLE_OFFSET
            )
        return Regions(found[BAT_GUID], found[METADATA_GUID], tuple(registered)), findings

    @classmethod
    def _region(
        cls,
        entry: RegionTableEntry,
        at: int,
        found: dict[bytes, RegionTableEntry],
        size: int | None,
    ) -> list[Finding]:
        name = REGION_NAMES.get(entry.guid)
        guid = uuid.UUID(bytes_le=entry.guid)
        if name is None and entry.data_bits & REGION_ENTRY_REQUIRED:
            return [
                unsafe(
                    Code.UNKNOWN_FEATURE,
                    f"vhdx: region {guid} at {entry.file_offset:#x} is marked required but is"
                    " unknown to qemu, which refuses the image",
                    at,
                )
            ]
        if name is None:
            return [
                info(
                    Code.NOTE,
                    f"vhdx: optional region {guid} is unknown to qemu, which reads nothing from"
                    " it (it only checks that no other region overlaps it)",
                    at,
                )
            ]
        if entry.guid in found:
            return [cls._refused(f"a second {name} region", at)]
        found[entry.guid] = entry
        # Not entry.end, which wraps as qemu's sum does: a region that wraps is past any end.
        if size is not None and entry.file_offset + entry.length > size:
            return [
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"vhdx: the {name} region {entry.file_offset:#x}+{entry.length:#x} ends past"
                    f" the end of the file ({size:#x}): the image is truncated or damaged",
                    at,
                )
            ]
        return []

    # Metadata (MS-VHDX 2.6; qemu vhdx_parse_metadata).

    @classmethod
    def _metadata(cls, source: Source, region: RegionTableEntry) -> tuple[Metadata, list[Finding]]:
        base = region.file_offset
        head = cls.read(source, base, _METADATA_HEADER.size, "metadata table")
        signature, _, entry_count, _ = _METADATA_HEADER.unpack_from(head)
        if signature != METADATA_SIGNATURE:
            raise cls.error(
                f"metadata table signature {signature!r} at {base:#x} is not 'metadata'", base
            )
        max_entries = (METADATA_TABLE_SIZE - _METADATA_HEADER.size) // _METADATA_ENTRY.size
        if entry_count > max_entries:
            raise cls.error(
                f"metadata table entry_count {entry_count} is above {max_entries}", base + 10
            )
        table = cls.read(
            source,
            base + _METADATA_HEADER.size,
            entry_count * _METADATA_ENTRY.size,
            "metadata table",
        )
        items, findings = cls._metadata_items(table, base)
        missing = [METADATA_NAMES[guid] for guid in REQUIRED_ITEMS if guid not in items]
        if missing:
            raise cls.error(
                f"metadata lacks the required item(s) {', '.join(sorted(missing))};"
                " qemu refuses the image",
                base,
            )
        meta, more = cls._decode_items(source, region, items)
        return meta, findings + more

    @classmethod
    def _metadata_items(
        cls, table: bytes, base: int
    ) -> tuple[dict[bytes, MetadataTableEntry], list[Finding]]:
        items: dict[bytes, MetadataTableEntry] = {}
        findings = []
        for index in range(len(table) // _METADATA_ENTRY.size):
            entry = MetadataTableEntry.from_bytes(table, index * _METADATA_ENTRY.size)
            at = base + _METADATA_HEADER.size + index * _METADATA_ENTRY.size
            name = METADATA_NAMES.get(entry.item_id)
            if name is not None and entry.item_id in items:
                findings.append(cls._refused(f"a second {name} metadata item", at))
            elif name is not None:
                items[entry.item_id] = entry
            else:
                findings.append(cls._unknown_item(entry, at))
        return items, findings

    @classmethod
    def _unknown_item(cls, entry: MetadataTableEntry, at: int) -> Finding:
        guid = uuid.UUID(bytes_le=entry.item_id)
        if entry.data_bits & METADATA_IS_REQUIRED:
            return unsafe(
                Code.UNKNOWN_FEATURE,
                f"vhdx: metadata item {guid} is marked required but is unknown to qemu, which"
                " refuses the image",
                at,
            )
        return info(Code.NOTE, f"vhdx: optional metadata item {guid} is ignored by qemu", at)

    @classmethod
    def _decode_items(
        cls, source: Source, region: RegionTableEntry, items: dict[bytes, MetadataTableEntry]
    ) -> tuple[Metadata, list[Finding]]:
        findings: list[Finding] = []

        def value(guid: bytes, layout: struct.Struct) -> tuple[Any, ...]:
            data, problem = cls._item(source, region, items[guid], layout.size)
            findings.extend(problem)
            return layout.unpack(data)

        block_size, data_bits = value(FILE_PARAMETERS_GUID, _FILE_PARAMETERS)
        locator = None
        if PARENT_LOCATOR_GUID in items:
            locator = cls._parent_locator(source, region, items[PARENT_LOCATOR_GUID])
        meta = Metadata(
            block_size,
            data_bits,
            value(VIRTUAL_DISK_SIZE_GUID, _U64)[0],
            value(LOGICAL_SECTOR_GUID, _U32)[0],
            value(PHYSICAL_SECTOR_GUID, _U32)[0],
            locator,
        )
        return meta, findings + cls._check_parent(meta, region) + cls._check_sizes(meta, region)

    @classmethod
    def _item(
        cls, source: Source, region: RegionTableEntry, entry: MetadataTableEntry, length: int
    ) -> tuple[bytes, list[Finding]]:
        """An item's first ``length`` bytes; past the end of the file qemu reads zeros."""
        at = region.file_offset + entry.offset
        name = METADATA_NAMES[entry.item_id]
        data = source.read(at, length)
        if len(data) < length:
            return data.ljust(length, b"\0"), [
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"vhdx: the {name} metadata item at {at:#x} lies past the end of the file;"
                    " qemu would read zeros for it",
                    at,
                )
            ]
        if entry.offset + max(entry.length, length) > region.length or entry.length < length:
            return data, [
                warning(
                    Code.INVALID_HEADER,
                    f"vhdx: the {name} metadata item ({entry.offset:#x}+{entry.length:#x}) does"
                    " not lie whole inside the metadata region; qemu reads it regardless",
                    at,
                )
            ]
        return data, []

    @classmethod
    def _parent_locator(
        cls, source: Source, region: RegionTableEntry, entry: MetadataTableEntry
    ) -> tuple[str, ...]:
        """The key=value pairs of a parent locator item (MS-VHDX 2.6.2.6), as text."""
        data = source.read(
            region.file_offset + entry.offset, min(entry.length, PARENT_LOCATOR_READ_CAP)
        )
        if len(data) < _LOCATOR_HEADER.size:
            return ()
        _, _, count = _LOCATOR_HEADER.unpack_from(data)
        room = (len(data) - _LOCATOR_HEADER.size) // _LOCATOR_ENTRY.size
        pairs = []
        for index in range(min(count, room)):
            key_at, value_at, key_len, value_len = _LOCATOR_ENTRY.unpack_from(
                data, _LOCATOR_HEADER.size + index * _LOCATOR_ENTRY.size
            )
            key = data[key_at : key_at + key_len].decode("utf-16-le", errors="replace")
            text = data[value_at : value_at + value_len].decode("utf-16-le", errors="replace")
            pairs.append(f"{key}={text}")
        return tuple(pairs)

    @classmethod
    def _check_parent(cls, meta: Metadata, region: RegionTableEntry) -> list[Finding]:
        if not meta.has_parent and meta.parent_locator is None:
            return []
        flag = "has_parent set" if meta.has_parent else "has_parent clear"
        if meta.parent_locator:
            named = f"parent locator {', '.join(meta.parent_locator)!r}"
        else:
            named = "no parent locator" if meta.parent_locator is None else "an empty locator"
        return [
            unsafe(
                Code.BACKING_FILE,
                f"vhdx: differencing disk ({flag}, {named}): qemu 7.2 refuses differencing VHDX"
                " images and other tools would open the parent file it names; merge the disk into"
                " its parent or refuse the image",
                region.file_offset,
            )
        ]

    @classmethod
    def _check_sizes(cls, meta: Metadata, region: RegionTableEntry) -> list[Finding]:
        at = region.file_offset
        findings = []
        block = meta.block_size
        if not BLOCK_SIZE_MIN <= block <= BLOCK_SIZE_MAX or block & (block - 1):
            findings.append(
                cls._refused(
                    f"block_size {block} is not a power of two between 1 MiB and 256 MiB", at
                )
            )
        if meta.logical_sector_size != LOGICAL_SECTOR_SIZE:
            findings.append(
                cls._refused(
                    f"logical_sector_size {meta.logical_sector_size}: qemu 7.2 supports only 512",
                    at,
                )
            )
        if meta.physical_sector_size not in PHYSICAL_SECTOR_SIZES:
            findings.append(
                warning(
                    Code.INVALID_HEADER,
                    f"vhdx: physical_sector_size {meta.physical_sector_size} is neither 512 nor"
                    " 4096; qemu ignores it",
                    at,
                )
            )
        findings += cls._check_virtual_size(meta.virtual_disk_size, at)
        return findings

    @classmethod
    def _check_virtual_size(cls, size: int, at: int) -> list[Finding]:
        if size > MAX_VIRTUAL_DISK_SIZE:
            return [
                unsafe(
                    Code.INVALID_HEADER,
                    f"vhdx: virtual disk size {size} is above the format's maximum of 64 TiB",
                    at,
                )
            ]
        if size % LOGICAL_SECTOR_SIZE:
            return [
                warning(
                    Code.INVALID_HEADER,
                    f"vhdx: virtual disk size {size} is not a multiple of the 512-byte sector;"
                    f" qemu rounds it down to {size // 512 * 512}",
                    at,
                )
            ]
        return []

    # Block allocation table (MS-VHDX 2.5; qemu vhdx_calc_bat_entries, vhdx_check_bat_entries).

    @classmethod
    def _bat_is_usable(cls, meta: Metadata) -> bool:
        block = meta.block_size
        return (
            BLOCK_SIZE_MIN <= block <= BLOCK_SIZE_MAX
            and not block & (block - 1)
            and meta.logical_sector_size == LOGICAL_SECTOR_SIZE
        )

    @classmethod
    def _check_bat(cls, source: Source, regions: Regions, meta: Metadata) -> list[Finding]:
        bat = regions.bat
        entries = bat_entries(meta.virtual_disk_size, meta.block_size)
        if entries > bat.length // _U64.size:
            return [
                cls._refused(
                    f"the BAT region ({bat.length} bytes) is too small for the {entries} entries"
                    f" that a disk of {meta.virtual_disk_size} bytes in {meta.block_size}-byte"
                    " blocks needs",
                    bat.file_offset,
                )
            ]
        count = min(entries, BAT_ENTRIES_CAP)
        if source.size is not None and bat.file_offset + count * _U64.size > source.size:
            return []  # The region table's out-of-bounds finding already says so.
        table = cls.read(source, bat.file_offset, count * _U64.size, "BAT")
        findings = cls._check_bat_entries(table, bat.file_offset, meta, regions, source.size)
        if count < entries:
            findings.append(
                cls.unchecked(count, entries, "BAT entries", UNCHECKED_REFUSED, bat.file_offset)
            )
        return findings

    @classmethod
    def _check_bat_entries(
        cls, table: bytes, bat_at: int, meta: Metadata, regions: Regions, size: int | None
    ) -> list[Finding]:
        disk = meta.virtual_disk_size // LOGICAL_SECTOR_SIZE * LOGICAL_SECTOR_SIZE
        for index, (entry,) in enumerate(_U64.iter_unpack(table)):
            state = entry & BAT_STATE_MASK
            if state not in READABLE_STATES:
                return [
                    warning(
                        Code.INVALID_HEADER,
                        f"vhdx: BAT entry {index} has state {state}, which qemu cannot read: a"
                        " conversion would fail",
                        bat_at + index * 8,
                    )
                ]
            if state != PAYLOAD_BLOCK_FULLY_PRESENT:
                continue
            offset = entry & BAT_FILE_OFFSET_MASK
            length = min(meta.block_size, (disk - index * meta.block_size) & U64)
            problem = cls._block_problem(offset, length, meta.block_size, regions, size)
            if problem is not None:
                return [
                    unsafe(problem[0], f"vhdx: BAT entry {index}: {problem[1]}", bat_at + index * 8)
                ]
        return []

    @classmethod
    def _block_problem(
        cls, offset: int, length: int, block_size: int, regions: Regions, size: int | None
    ) -> tuple[Code, str] | None:
        """Why qemu refuses a payload block: ``length`` of it must be in the file, but all of
        ``block_size`` must miss the other regions, even for a last block cut short."""
        if size is not None and offset + length > size:
            return Code.TRUNCATED, (
                f"block at {offset:#x}+{length:#x} ends past the end of the file ({size:#x});"
                " the image was truncated, and qemu refuses it"
            )
        if _overlaps(offset, offset + block_size, regions.ranges):
            return Code.INVALID_HEADER, (
                f"block at {offset:#x}+{block_size:#x} overlaps the log or a region of the"
                " region table; qemu refuses the image"
            )
        return None

    @classmethod
    def _details(
        cls, ident: FileIdentifier, header: VhdxHeader | None, meta: Metadata
    ) -> dict[str, Any]:
        pending = header is not None and header.log_guid != ZERO_GUID and header.log_length > 0
        return {
            "creator": ident.creator_text,
            "version": header.version if header else None,
            "block_size": meta.block_size,
            "logical_sector_size": meta.logical_sector_size,
            "physical_sector_size": meta.physical_sector_size,
            "virtual_disk_size": meta.virtual_disk_size,
            "has_parent": meta.has_parent,
            "leave_blocks_allocated": meta.leave_blocks_allocated,
            "parent_locator": list(meta.parent_locator) if meta.parent_locator else None,
            "log_pending": pending,
        }

    @classmethod
    def _refused(cls, message: str, offset: int) -> Finding:
        """A field value that makes qemu refuse the image."""
        return unsafe(Code.INVALID_HEADER, f"vhdx: {message}; qemu refuses the image", offset)


def bat_entries(virtual_disk_size: int, block_size: int) -> int:
    """How many BAT entries qemu expects, in its 32-bit arithmetic (vhdx_calc_bat_entries)."""
    chunk_ratio = MAX_SECTORS_PER_BLOCK * LOGICAL_SECTOR_SIZE // block_size
    chunk_ratio_bits = chunk_ratio.bit_length() - 1
    data_blocks = -(-virtual_disk_size // block_size) & U32
    return (data_blocks + (((data_blocks - 1) & U32) >> chunk_ratio_bits)) & U32

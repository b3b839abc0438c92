"""MBR and GPT partition tables, read for the details of raw and hybrid ISO images.

References:

- UEFI Specification 2.10, section 5.2 (legacy MBR and protective MBR: Table 5.1, 5.2, 5.4)
  and section 5.3 (GPT header, Table 5.5; partition entry, Table 5.6; well-known partition
  type GUIDs, Table 5.7).
- Extended partitions: the chain of extended boot records (EBRs) as Linux walks it in
  block/partitions/msdos.c (each EBR's first entry is a logical partition relative to that
  EBR, its second points at the next EBR relative to the start of the extended partition).

qemu never reads a partition table when it opens a raw image, so nothing here is a host-file
risk: every defect becomes a warning, for the person who will boot the image.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from typing import Any, NamedTuple

from ..errors import UnverifiableError
from ..log import Logger
from ..report import Code, Finding, warning
from ..source import Source

log = Logger(__name__)

#: Partition tables are addressed in 512-byte logical blocks here; 4Kn disks are not read.
SECTOR_SIZE = 512
#: Cap on the logical partitions followed through an extended partition's EBR chain.
MAX_LOGICAL_PARTITIONS = 64
#: Cap on the bytes of a GPT partition entry array that are read (UEFI asks for 16 KiB).
GPT_MAX_ARRAY_BYTES = 128 * 1024
#: Largest GPT partition entry size accepted (a power of two times 128, UEFI Table 5.5).
GPT_MAX_ENTRY_SIZE = 4096

# UEFI Table 5.2: the MBR's partition records start at 446; the sector ends in 0x55AA.
MBR_ENTRY = struct.Struct("<B3sB3sII")
MBR_ENTRIES_OFFSET = 446
MBR_SIGNATURE_OFFSET = 510
MBR_SIGNATURE = b"\x55\xaa"
MBR_PROTECTIVE_TYPE = 0xEE
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_EXTENDED_TYPE_NAMES = frozenset(f"{t:#04x}" for t in MBR_EXTENDED_TYPES)
MBR_BOOT_INDICATORS = (0x00, 0x80)

MBR_TYPE_NAMES = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Extended (LBA)",
    0x17: "Hidden HPFS/NTFS",
    0x82: "Linux swap",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xEE: "GPT protective",
    0xEF: "EFI System",
    0xFD: "Linux raid autodetect",
}

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
GPT_HEADER_CRC_OFFSET = 16
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
GPT_MIN_ENTRY_SIZE = GPT_ENTRY.size

GPT_TYPE_NAMES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
    "9E1A2D38-C612-4316-AA26-8B49521E5A8B": "PowerPC PReP boot",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
}


class Partition(NamedTuple):
    """One partition, with its extent in bytes from the start of the image."""

    number: int
    start: int
    size: int
    type: str
    type_name: str | None
    name: str | None = None
    bootable: bool | None = None

    @property
    def extended(self) -> bool:
        """An MBR extended partition: a container of EBRs, holding no filesystem itself."""
        return self.type in MBR_EXTENDED_TYPE_NAMES

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "number": self.number,
            "start": self.start,
            "size": self.size,
            "type": self.type,
            "type_name": self.type_name,
        }
        if self.name is not None:
            found["name"] = self.name
        if self.bootable is not None:
            found["bootable"] = self.bootable
        return found


class PartitionTable(NamedTuple):
    """A partition table and what was wrong with it.

    ``scheme`` is ``"gpt"`` when a GPT header is present (its protective or hybrid MBR is then
    summed up by ``mbr_partitions``, the count of MBR records other than the protective one),
    ``"mbr"`` otherwise. ``unread`` holds the offsets of EBRs and backup headers that a stream
    source had not kept: the listing stops short there, and no finding is made of it.
    """

    scheme: str
    partitions: tuple[Partition, ...]
    findings: tuple[Finding, ...]
    mbr_partitions: int = 0
    disk_guid: str | None = None
    unread: tuple[int, ...] = ()


class MbrEntry(NamedTuple):
    """A partition record of an MBR or EBR (UEFI Table 5.3)."""

    boot_indicator: int
    starting_chs: bytes
    os_type: int
    ending_chs: bytes
    starting_lba: int
    size_in_lba: int

    @classmethod
    def from_bytes(cls, data: bytes, index: int) -> MbrEntry:
        return cls(*MBR_ENTRY.unpack_from(data, MBR_ENTRIES_OFFSET + index * MBR_ENTRY.size))

    @property
    def empty(self) -> bool:
        return self.os_type == 0 and self.size_in_lba == 0

    def partition(self, number: int, base_lba: int) -> Partition:
        return Partition(
            number,
            (base_lba + self.starting_lba) * SECTOR_SIZE,
            self.size_in_lba * SECTOR_SIZE,
            f"{self.os_type:#04x}",
            MBR_TYPE_NAMES.get(self.os_type),
            bootable=self.boot_indicator == 0x80,
        )


def _mbr_entries(sector: bytes) -> tuple[MbrEntry, ...] | None:
    """The four records of a boot sector, or None when it is no MBR/EBR at all."""
    if len(sector) < SECTOR_SIZE or sector[MBR_SIGNATURE_OFFSET:SECTOR_SIZE] != MBR_SIGNATURE:
        return None
    entries = tuple(MbrEntry.from_bytes(sector, i) for i in range(4))
    if any(e.boot_indicator not in MBR_BOOT_INDICATORS for e in entries):
        return None
    return entries


class GptHeader(NamedTuple):
    """The GPT header (UEFI Table 5.5)."""

    signature: bytes
    revision: int
    header_size: int
    header_crc32: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: bytes
    partition_entry_lba: int
    number_of_partition_entries: int
    size_of_partition_entry: int
    partition_entry_array_crc32: int

    @classmethod
    def from_bytes(cls, data: bytes) -> GptHeader:
        fields = GPT_HEADER.unpack_from(data)
        return cls(*fields[:4], *fields[5:])

    @staticmethod
    def computed_crc32(sector: bytes, header_size: int) -> int | None:
        """CRC32 of the header with its CRC field zeroed, or None for an impossible size."""
        if not GPT_HEADER.size <= header_size <= len(sector):
            return None
        header = bytearray(sector[:header_size])
        header[GPT_HEADER_CRC_OFFSET : GPT_HEADER_CRC_OFFSET + 4] = bytes(4)
        return zlib.crc32(header)

    @property
    def array_bytes(self) -> int:
        return self.number_of_partition_entries * self.size_of_partition_entry


class GptEntry(NamedTuple):
    """A GPT partition entry (UEFI Table 5.6)."""

    partition_type_guid: bytes
    unique_partition_guid: bytes
    starting_lba: int
    ending_lba: int
    attributes: int
    partition_name: bytes

    @classmethod
    def from_bytes(cls, data: bytes, offset: int) -> GptEntry:
        return cls(*GPT_ENTRY.unpack_from(data, offset))

    def partition(self, number: int) -> Partition:
        type_guid = str(uuid.UUID(bytes_le=self.partition_type_guid)).upper()
        name = self.partition_name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        length = max(0, self.ending_lba - self.starting_lba + 1)
        return Partition(
            number,
            self.starting_lba * SECTOR_SIZE,
            length * SECTOR_SIZE,
            type_guid,
            GPT_TYPE_NAMES.get(type_guid),
            name=name,
        )


def read_partition_table(source: Source) -> PartitionTable | None:
    """The GPT or MBR partition table at the start of ``source``, if there is one."""
    entries = _mbr_entries(source.read(0, SECTOR_SIZE))
    gpt = source.read(SECTOR_SIZE, SECTOR_SIZE)
    if gpt[:8] == GPT_SIGNATURE and len(gpt) == SECTOR_SIZE:
        mbr_count = sum(
            1 for e in entries or () if not e.empty and e.os_type != MBR_PROTECTIVE_TYPE
        )
        return _read_gpt(source, gpt, mbr_count)
    if entries is None or all(e.empty for e in entries):
        return None
    return _read_mbr(source, entries)


def _optional_read(source: Source, offset: int, length: int, unread: list[int]) -> bytes | None:
    """A read past the primary tables: one a stream cannot serve is noted in ``unread``."""
    try:
        return source.read(offset, length)
    except UnverifiableError:
        unread.append(offset)
        return None


def _beyond_end(source: Source, part: Partition, scheme: str) -> Finding | None:
    size = source.size
    if size is None or part.start + part.size <= size:
        return None
    end = part.start + part.size
    return warning(
        Code.OUT_OF_BOUNDS,
        f"{scheme}: partition {part.number} spans bytes {part.start:#x}..{end:#x}"
        f" but the image ends at {size:#x}: the image was truncated or the table is wrong;"
        " a guest reading that partition sees zeros past the end",
    )


def _read_mbr(source: Source, entries: tuple[MbrEntry, ...]) -> PartitionTable:
    partitions: list[Partition] = []
    findings: list[Finding] = []
    extended: MbrEntry | None = None
    unread: list[int] = []
    for index, entry in enumerate(entries):
        if entry.empty:
            continue
        partitions.append(entry.partition(index + 1, 0))
        if entry.os_type in MBR_EXTENDED_TYPES and extended is None:
            extended = entry
    if extended is not None:
        logical, chain_findings = _read_ebr_chain(source, extended.starting_lba, unread)
        partitions.extend(logical)
        findings.extend(chain_findings)
    for part in partitions:
        if (beyond := _beyond_end(source, part, "mbr")) is not None:
            findings.append(beyond)
    return PartitionTable("mbr", tuple(partitions), tuple(findings), unread=tuple(unread))


def _read_ebr_chain(
    source: Source, extended_lba: int, unread: list[int]
) -> tuple[list[Partition], list[Finding]]:
    """Follow the EBR chain of the extended partition starting at ``extended_lba``."""
    partitions: list[Partition] = []
    seen: set[int] = set()
    ebr_lba = extended_lba
    while len(partitions) < MAX_LOGICAL_PARTITIONS:
        offset = ebr_lba * SECTOR_SIZE
        if ebr_lba in seen:
            return partitions, [_ebr_warning(offset, "is part of a loop in the EBR chain")]
        seen.add(ebr_lba)
        sector = _optional_read(source, offset, SECTOR_SIZE, unread)
        if sector is None:
            return partitions, []
        ebr = _mbr_entries(sector)
        if ebr is None:
            return partitions, [_ebr_warning(offset, "is missing, past the end or unsigned")]
        if not ebr[0].empty:
            partitions.append(ebr[0].partition(5 + len(partitions), ebr_lba))
        link = ebr[1]
        if link.empty or link.os_type not in MBR_EXTENDED_TYPES:
            return partitions, []
        ebr_lba = extended_lba + link.starting_lba
    return partitions, [
        _ebr_warning(
            ebr_lba * SECTOR_SIZE, f"was not read: only {MAX_LOGICAL_PARTITIONS} are followed"
        )
    ]


def _ebr_warning(offset: int, what: str) -> Finding:
    return warning(
        Code.INVALID_HEADER,
        f"mbr: the extended boot record at {offset:#x} {what}; the logical partitions listed"
        " stop there (check the table with sfdisk -d)",
        offset,
    )


def _read_gpt(source: Source, primary: bytes, mbr_partitions: int) -> PartitionTable:
    findings: list[Finding] = []
    unread: list[int] = []
    header = GptHeader.from_bytes(primary)
    primary_ok = _check_header(header, primary, SECTOR_SIZE, "primary", findings)
    backup = _read_backup(source, header, findings, unread)
    chosen = header
    if not primary_ok and backup is not None:
        log.warning("gpt: primary header damaged, listing partitions from the backup header")
        chosen = backup
    elif backup is not None and backup.partition_entry_array_crc32 != (
        header.partition_entry_array_crc32
    ):
        findings.append(
            warning(
                Code.CHECKSUM_MISMATCH,
                "gpt: the backup header records a different partition array CRC32 than the"
                " primary: the two tables disagree; repair with sgdisk -v / gdisk",
                header.alternate_lba * SECTOR_SIZE,
            )
        )
    partitions = _read_gpt_entries(source, chosen, findings)
    for part in partitions:
        if (beyond := _beyond_end(source, part, "gpt")) is not None:
            findings.append(beyond)
    disk_guid = str(uuid.UUID(bytes_le=chosen.disk_guid)).upper()
    return PartitionTable(
        "gpt", partitions, tuple(findings), mbr_partitions, disk_guid, tuple(unread)
    )


def _check_header(
    header: GptHeader, sector: bytes, offset: int, which: str, findings: list[Finding]
) -> bool:
    """Check a GPT header's size and CRC32; add findings and say whether it can be trusted."""
    computed = GptHeader.computed_crc32(sector, header.header_size)
    if computed is None:
        findings.append(
            warning(
                Code.INVALID_HEADER,
                f"gpt: {which} header_size {header.header_size} is outside"
                f" {GPT_HEADER.size}..{SECTOR_SIZE}; the header cannot be verified",
                offset + 12,
            )
        )
        return False
    if computed != header.header_crc32:
        findings.append(
            warning(
                Code.CHECKSUM_MISMATCH,
                f"gpt: {which} header CRC32 {header.header_crc32:#010x} does not match the"
                f" computed {computed:#010x}: the header was damaged or edited; firmware may"
                " ignore it (repair with sgdisk -v / gdisk)",
                offset + GPT_HEADER_CRC_OFFSET,
            )
        )
        return False
    return True


def _read_backup(
    source: Source, header: GptHeader, findings: list[Finding], unread: list[int]
) -> GptHeader | None:
    """The backup header named by the primary, when it is present and intact."""
    offset = header.alternate_lba * SECTOR_SIZE
    sector = _optional_read(source, offset, SECTOR_SIZE, unread)
    if sector is None:
        return None
    if len(sector) < SECTOR_SIZE or sector[:8] != GPT_SIGNATURE:
        findings.append(
            warning(
                Code.OUT_OF_BOUNDS,
                f"gpt: no backup header at LBA {header.alternate_lba} (byte {offset:#x}): the"
                " image was truncated or resized without moving it (sgdisk -e relocates it)",
                offset,
            )
        )
        return None
    backup = GptHeader.from_bytes(sector)
    if not _check_header(backup, sector, offset, "backup", findings):
        return None
    return backup


def _read_gpt_entries(
    source: Source, header: GptHeader, findings: list[Finding]
) -> tuple[Partition, ...]:
    entry_size = header.size_of_partition_entry
    array_offset = header.partition_entry_lba * SECTOR_SIZE
    if (
        entry_size < GPT_MIN_ENTRY_SIZE
        or entry_size > GPT_MAX_ENTRY_SIZE
        or entry_size & (entry_size - 1)
    ):
        findings.append(
            warning(
                Code.INVALID_HEADER,
                f"gpt: size_of_partition_entry {entry_size} is not a power of two in"
                f" {GPT_MIN_ENTRY_SIZE}..{GPT_MAX_ENTRY_SIZE}; no partition is listed",
                SECTOR_SIZE + 84,
            )
        )
        return ()
    wanted = min(header.array_bytes, GPT_MAX_ARRAY_BYTES)
    array = source.read(array_offset, wanted)
    _check_array(header, array, array_offset, findings)
    partitions = []
    for index in range(len(array) // entry_size):
        entry = GptEntry.from_bytes(array, index * entry_size)
        if entry.partition_type_guid != bytes(16):
            partitions.append(entry.partition(index + 1))
    return tuple(partitions)


def _check_array(header: GptHeader, array: bytes, offset: int, findings: list[Finding]) -> None:
    if len(array) < min(header.array_bytes, GPT_MAX_ARRAY_BYTES):
        findings.append(
            warning(
                Code.OUT_OF_BOUNDS,
                f"gpt: the partition entry array at {offset:#x} runs past the end of the image;"
                " only the entries present are listed",
                offset,
            )
        )
    elif header.array_bytes > GPT_MAX_ARRAY_BYTES:
        findings.append(
            warning(
                Code.INVALID_HEADER,
                f"gpt: the partition entry array is {header.array_bytes} bytes, more than the"
                f" {GPT_MAX_ARRAY_BYTES} read; its CRC32 is not checked and only the first"
                " entries are listed",
                offset,
            )
        )
    elif zlib.crc32(array) != header.partition_entry_array_crc32:
        findings.append(
            warning(
                Code.CHECKSUM_MISMATCH,
                f"gpt: partition entry array CRC32 {header.partition_entry_array_crc32:#010x}"
                f" does not match the computed {zlib.crc32(array):#010x}: the entries were"
                " damaged or edited; firmware may ignore them (repair with sgdisk -v / gdisk)",
                offset,
            )
        )

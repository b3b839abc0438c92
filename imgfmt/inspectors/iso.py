"""ISO 9660 and UDF optical-disc images.

References:

- ECMA-119 4th edition (ISO 9660): 6.2.1 (system area, the first 16 sectors), 6.7 (volume
  descriptor set), 7.2-7.3 (both-byte-order numbers), 8.1-8.5 (volume descriptors), 8.4.26.1
  (dates).
- Joliet Specification (Microsoft, 1995), "Supplementary Volume Descriptor": the escape
  sequences that mark UCS-2 names.
- El Torito Bootable CD-ROM Format Specification 1.0: 2.0 (boot record volume descriptor),
  2.1-2.5 (boot catalog entries).
- ECMA-167 3rd edition: 2/8.3 (volume recognition sequence), 3/7.2 (descriptor tag),
  3/10.1, 3/10.2, 3/10.6 (primary volume descriptor, anchor pointer, logical volume
  descriptor); OSTA UDF 2.60: 2.1.2 (dstring, OSTA CS0), 2.1.5.3 (domain identifier suffix).

qemu has no ISO driver: Glance hands an ISO to qemu-img as raw (block/raw-format.c), so the
virtual size is the raw one and no field here can make qemu read another file. Defects are
warnings, except a primary descriptor whose logical block size no CD or DVD can have.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any, ClassVar, NamedTuple

from ..report import Code, Finding, unsafe, warning
from ..source import Source
from .base import Inspection, Inspector, probe_bytes, qemu_raw_size
from .partitions import read_partition_table

#: ECMA-119 6.1.2: logical sectors of an ISO 9660 volume are 2048 bytes.
SECTOR_SIZE = 2048
#: ECMA-119 6.2.1: the volume descriptor set starts after the 16-sector system area.
FIRST_DESCRIPTOR_SECTOR = 16
#: Cap on the sectors of the volume descriptor set and recognition sequence examined.
MAX_VOLUME_DESCRIPTORS = 32
#: Cap on the sectors after BEA01 that the probe looks through for an NSR descriptor.
PROBE_NSR_SECTORS = 8
#: The only logical block size any CD, DVD or BD image uses (ECMA-119 6.1.2 allows less).
ISO_LOGICAL_BLOCK_SIZE = 2048
#: Cap on the El Torito boot catalog read: one sector, 64 entries.
ELTORITO_CATALOG_BYTES = 2048
#: Cap on the descriptors of the UDF main volume descriptor sequence read.
MAX_UDF_DESCRIPTORS = 32
#: Block sizes under which a UDF anchor is looked for at block 256 (ECMA-167 3/8.4.2.1).
UDF_BLOCK_SIZES = (2048, 512, 1024, 4096)
UDF_ANCHOR_BLOCK = 256

# ECMA-119 8.1: every volume descriptor starts with its type, "CD001" and a version.
VD_HEADER = struct.Struct("<B5sB")
CD001 = b"CD001"
VD_BOOT_RECORD = 0
VD_PRIMARY = 1
VD_SUPPLEMENTARY = 2
VD_PARTITION = 3
VD_TERMINATOR = 255
VD_TYPES = frozenset({VD_BOOT_RECORD, VD_PRIMARY, VD_SUPPLEMENTARY, VD_PARTITION, VD_TERMINATOR})
# ECMA-167 2/9.2-9.3: the extended area of the volume recognition sequence.
BEA01, TEA01 = b"BEA01", b"TEA01"
NSR_IDS = {b"NSR02": 2, b"NSR03": 3}
VRS_OTHER_IDS = frozenset({b"BOOT2", b"CDW02"})

# ECMA-119 8.4 (primary) and 8.5 (supplementary) volume descriptors share this layout, up to
# the file structure version at byte 881. Both-byte-order numbers are kept raw (7.2.3, 7.3.3).
VOLUME_DESCRIPTOR = struct.Struct("<B5sBB32s32s8x8s32s4s4s4s58x128s128s128s128s111x17s17s34xB")
VOLUME_SPACE_SIZE_OFFSET = 80
LOGICAL_BLOCK_SIZE_OFFSET = 128
# Joliet: UCS-2 level 1, 2 and 3 escape sequences in the supplementary descriptor.
JOLIET_ESCAPES = {b"%/@": 1, b"%/C": 2, b"%/E": 3}

# ECMA-119 8.2 with El Torito 2.0: the boot catalog's sector follows the two identifiers.
BOOT_RECORD = struct.Struct("<B5sB32s32sI")
EL_TORITO_ID = b"EL TORITO SPECIFICATION".ljust(32, b"\0")
# El Torito 2.1 validation entry and 2.3 section header; entries are 32 bytes.
ELTORITO_VALIDATION = struct.Struct("<BBH24sH2s")
ELTORITO_SECTION_HEADER = struct.Struct("<BBH28s")
ELTORITO_ENTRY_SIZE = 32
ELTORITO_KEY = b"\x55\xaa"
ELTORITO_BOOTABLE = 0x88
ELTORITO_MORE_HEADERS, ELTORITO_FINAL_HEADER = 0x90, 0x91
ELTORITO_EXTENSION = 0x44
ELTORITO_PLATFORMS = {0x00: "x86", 0x01: "powerpc", 0x02: "mac", 0xEF: "efi"}

# ECMA-167 3/7.2 descriptor tag; 3/10.2 anchor; 3/10.1 and 3/10.6 volume descriptors.
UDF_TAG = struct.Struct("<HHBBHHHI")
UDF_EXTENT = struct.Struct("<II")
UDF_TAG_PRIMARY, UDF_TAG_ANCHOR, UDF_TAG_POINTER = 1, 2, 3
UDF_TAG_LOGICAL_VOLUME, UDF_TAG_TERMINATING = 6, 8
UDF_PVD_VOLUME_ID = slice(24, 56)
UDF_LVD_FIELDS = struct.Struct("<128sI1x23sH")
UDF_LVD_OFFSET = 84

#: Details taken from the primary volume descriptor; None when the image has none (UDF only).
PRIMARY_DETAILS = (
    "volume_id",
    "system_id",
    "volume_set_id",
    "publisher",
    "data_preparer",
    "application",
    "creation_date",
    "modification_date",
    "volume_space_size",
    "logical_block_size",
    "volume_size",
)


def _both_endian(raw: bytes) -> tuple[int, bool]:
    """An ECMA-119 7.2.3/7.3.3 number: the little-endian half, and whether both halves agree."""
    half = len(raw) // 2
    little = int.from_bytes(raw[:half], "little")
    return little, little == int.from_bytes(raw[half:], "big")


def _a_chars(raw: bytes) -> str | None:
    text = raw.decode("ascii", errors="replace").rstrip(" \0")
    return text or None


def _ucs2(raw: bytes) -> str | None:
    text = raw[: len(raw) // 2 * 2].decode("utf-16-be", errors="replace").rstrip(" \0")
    return text or None


def _date(raw: bytes) -> str | None:
    """An ECMA-119 8.4.26.1 date as ISO 8601, or None when unset or not digits."""
    digits = raw[:16].decode("ascii", errors="replace")
    if not digits.isdigit() or digits == "0" * 16:
        return None
    minutes = int.from_bytes(raw[16:17], "little", signed=True) * 15
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    d = digits
    return f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}.{d[14:16]}{zone}"


def _dstring(raw: bytes) -> str | None:
    """An OSTA CS0 dstring (UDF 2.1.2): compression id, characters, used length last."""
    used = raw[-1] if raw else 0
    if used < 1 or used > len(raw) - 1:
        return None
    body = raw[1:used]
    if raw[0] in (16, 255):
        text = body[: len(body) // 2 * 2].decode("utf-16-be", errors="replace")
    else:
        text = body.decode("latin-1")
    return text.rstrip("\0") or None


class VolumeDescriptor(NamedTuple):
    """A primary or supplementary volume descriptor (ECMA-119 8.4, 8.5)."""

    volume_descriptor_type: int
    standard_identifier: bytes
    volume_descriptor_version: int
    volume_flags: int
    system_identifier: bytes
    volume_identifier: bytes
    volume_space_size: bytes
    escape_sequences: bytes
    volume_set_size: bytes
    volume_sequence_number: bytes
    logical_block_size: bytes
    volume_set_identifier: bytes
    publisher_identifier: bytes
    data_preparer_identifier: bytes
    application_identifier: bytes
    volume_creation_date: bytes
    volume_modification_date: bytes
    file_structure_version: int

    @classmethod
    def from_bytes(cls, data: bytes) -> VolumeDescriptor:
        return cls(*VOLUME_DESCRIPTOR.unpack_from(data))

    @property
    def joliet_level(self) -> int | None:
        """The Joliet level its escape sequences announce (supplementary descriptors only)."""
        return JOLIET_ESCAPES.get(self.escape_sequences[:3])

    def text(self, raw: bytes) -> str | None:
        """A string field, decoded as UCS-2 in a Joliet descriptor, else as a-characters."""
        return _ucs2(raw) if self.joliet_level else _a_chars(raw)


class BootRecord(NamedTuple):
    """A boot record volume descriptor (ECMA-119 8.2) with El Torito's catalog pointer."""

    volume_descriptor_type: int
    standard_identifier: bytes
    volume_descriptor_version: int
    boot_system_identifier: bytes
    boot_identifier: bytes
    boot_catalog_sector: int

    @classmethod
    def from_bytes(cls, data: bytes) -> BootRecord:
        return cls(*BOOT_RECORD.unpack_from(data))

    @property
    def el_torito(self) -> bool:
        return self.boot_system_identifier == EL_TORITO_ID


class UdfTag(NamedTuple):
    """An ECMA-167 3/7.2 descriptor tag."""

    tag_identifier: int
    descriptor_version: int
    tag_checksum: int
    reserved: int
    tag_serial_number: int
    descriptor_crc: int
    descriptor_crc_length: int
    tag_location: int

    @classmethod
    def from_bytes(cls, data: bytes) -> UdfTag:
        return cls(*UDF_TAG.unpack_from(data))

    @staticmethod
    def checksum(data: bytes) -> int:
        """3/7.2.3: the byte sum of the tag without its checksum byte, modulo 256."""
        return (sum(data[0:4]) + sum(data[5:16])) & 0xFF

    def valid(self, data: bytes, location: int) -> bool:
        """Checksum, location and (within ``data``) descriptor CRC all match (3/7.2.3-7.2.6)."""
        end = UDF_TAG.size + self.descriptor_crc_length
        return (
            self.tag_checksum == self.checksum(data)
            and self.tag_location == location
            and end <= len(data)
            and binascii.crc_hqx(data[UDF_TAG.size : end], 0) == self.descriptor_crc
        )


class DescriptorSet(NamedTuple):
    """What the volume descriptor set and the volume recognition sequence hold."""

    primary: VolumeDescriptor | None
    primary_offset: int
    supplementary: tuple[VolumeDescriptor, ...]
    boot_records: tuple[BootRecord, ...]
    cd001: bool
    terminated: bool
    nsr: int | None
    last_sector: int


class IsoInspector(Inspector):
    """ISO 9660 (with Joliet, El Torito and hybrid MBR/GPT) and UDF images."""

    format: ClassVar[str] = "iso"

    @classmethod
    def probe(cls, source: Source) -> bool:
        at = FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE
        head = probe_bytes(source, at, VD_HEADER.size)
        if len(head) < VD_HEADER.size:
            return False
        vd_type, ident, _version = VD_HEADER.unpack(head)
        if ident == CD001:
            return vd_type in VD_TYPES
        if ident != BEA01:
            return False
        first = FIRST_DESCRIPTOR_SECTOR + 1
        for sector in range(first, first + PROBE_NSR_SECTORS):
            if probe_bytes(source, sector * SECTOR_SIZE + 1, 5) in NSR_IDS:
                return True
        return False

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        virtual_size = qemu_raw_size(source, cls.format)
        vds = cls._read_descriptor_set(source)
        findings = cls._check_set(vds)
        details: dict[str, Any] = dict.fromkeys(PRIMARY_DETAILS)
        if vds.primary is not None:
            findings += cls._check_primary(vds.primary, vds.primary_offset, source.size)
            details.update(cls._primary_details(vds.primary))
        details.update(cls._supplementary_details(vds.supplementary))
        details["el_torito"] = cls._el_torito(source, vds.boot_records, findings)
        details["udf"] = cls._udf(source, vds.nsr, findings) if vds.nsr else None
        details["label"] = cls._label(details)
        details.update(cls._partition_details(source, findings))
        return Inspection(cls.format, virtual_size, details, tuple(findings))

    @classmethod
    def _check_set(cls, vds: DescriptorSet) -> list[Finding]:
        """ECMA-119 6.7.1: one primary descriptor, and a terminator closing the set."""
        findings: list[Finding] = []
        if vds.cd001 and not vds.terminated:
            findings.append(
                warning(
                    Code.INVALID_HEADER,
                    f"iso: the volume descriptor set stops at sector {vds.last_sector} without"
                    " a set terminator (ECMA-119 8.3); the image was cut or hand-made",
                    vds.last_sector * SECTOR_SIZE,
                )
            )
        if vds.cd001 and vds.primary is None:
            findings.append(
                warning(
                    Code.INVALID_HEADER,
                    "iso: the volume descriptor set has no primary volume descriptor"
                    " (ECMA-119 8.4); ISO 9660 readers will not mount it",
                    FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE,
                )
            )
        return findings

    @classmethod
    def _read_descriptor_set(cls, source: Source) -> DescriptorSet:
        """Walk the descriptors from sector 16 (ECMA-119 6.7.1, ECMA-167 2/8.3)."""
        primary: VolumeDescriptor | None = None
        primary_offset = 0
        supplementary: list[VolumeDescriptor] = []
        boot_records: list[BootRecord] = []
        cd001 = terminated = in_extended = False
        nsr: int | None = None
        sector = first = FIRST_DESCRIPTOR_SECTOR
        for sector in range(first, first + MAX_VOLUME_DESCRIPTORS):
            head = source.read(sector * SECTOR_SIZE, VD_HEADER.size)
            if len(head) < VD_HEADER.size:
                break
            vd_type, ident, _version = VD_HEADER.unpack(head)
            if ident == CD001 and not terminated and not in_extended:
                cd001 = True
                terminated = vd_type == VD_TERMINATOR
                if vd_type == VD_PRIMARY and primary is None:
                    primary = VolumeDescriptor.from_bytes(cls._sector(source, sector, "primary"))
                    primary_offset = sector * SECTOR_SIZE
                elif vd_type == VD_SUPPLEMENTARY:
                    data = cls._sector(source, sector, "supplementary volume descriptor")
                    supplementary.append(VolumeDescriptor.from_bytes(data))
                elif vd_type == VD_BOOT_RECORD:
                    data = cls._sector(source, sector, "boot record")
                    boot_records.append(BootRecord.from_bytes(data))
            elif ident == BEA01:
                in_extended = True
            elif ident in NSR_IDS and in_extended:
                nsr = NSR_IDS[ident]
            elif ident == TEA01 or (ident not in VRS_OTHER_IDS and ident != CD001):
                break
        return DescriptorSet(
            primary,
            primary_offset,
            tuple(supplementary),
            tuple(boot_records),
            cd001,
            terminated,
            nsr,
            sector,
        )

    @classmethod
    def _sector(cls, source: Source, sector: int, what: str) -> bytes:
        return cls.read(source, sector * SECTOR_SIZE, SECTOR_SIZE, what)

    @classmethod
    def _check_primary(cls, pvd: VolumeDescriptor, at: int, file_size: int | None) -> list[Finding]:
        """Both-endian agreement, block size, and a volume that fits in the file."""
        findings: list[Finding] = []
        space_size, space_ok = _both_endian(pvd.volume_space_size)
        block_size, block_ok = _both_endian(pvd.logical_block_size)
        for ok, field, offset in (
            (space_ok, "volume_space_size", at + VOLUME_SPACE_SIZE_OFFSET),
            (block_ok, "logical_block_size", at + LOGICAL_BLOCK_SIZE_OFFSET),
        ):
            if not ok:
                findings.append(
                    warning(
                        Code.INVALID_HEADER,
                        f"iso: the little- and big-endian halves of {field} differ (ECMA-119"
                        " 7.2.3); readers disagree on the volume's layout",
                        offset,
                    )
                )
        if block_size != ISO_LOGICAL_BLOCK_SIZE:
            findings.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"iso: logical_block_size is {block_size}, not {ISO_LOGICAL_BLOCK_SIZE}:"
                    " no CD, DVD or BD image has that; the file is damaged or only poses as an"
                    " ISO - refuse it",
                    at + LOGICAL_BLOCK_SIZE_OFFSET,
                )
            )
        volume_size = space_size * block_size
        if file_size is not None and volume_size > file_size:
            findings.append(
                warning(
                    Code.TRUNCATED,
                    f"iso: the volume is {volume_size} bytes ({space_size} blocks of"
                    f" {block_size}) but the file has only {file_size}: the image was cut short"
                    " (an interrupted download or copy); fetch it again",
                    at + VOLUME_SPACE_SIZE_OFFSET,
                )
            )
        return findings

    @classmethod
    def _primary_details(cls, pvd: VolumeDescriptor) -> dict[str, Any]:
        space_size, _ = _both_endian(pvd.volume_space_size)
        block_size, _ = _both_endian(pvd.logical_block_size)
        return {
            "volume_id": pvd.text(pvd.volume_identifier),
            "system_id": pvd.text(pvd.system_identifier),
            "volume_set_id": pvd.text(pvd.volume_set_identifier),
            "publisher": pvd.text(pvd.publisher_identifier),
            "data_preparer": pvd.text(pvd.data_preparer_identifier),
            "application": pvd.text(pvd.application_identifier),
            "creation_date": _date(pvd.volume_creation_date),
            "modification_date": _date(pvd.volume_modification_date),
            "volume_space_size": space_size,
            "logical_block_size": block_size,
            "volume_size": space_size * block_size,
        }

    @classmethod
    def _supplementary_details(cls, svds: tuple[VolumeDescriptor, ...]) -> dict[str, Any]:
        for svd in svds:
            if svd.joliet_level:
                return {
                    "joliet": True,
                    "joliet_level": svd.joliet_level,
                    "joliet_volume_id": svd.text(svd.volume_identifier),
                }
        return {"joliet": False, "joliet_level": None, "joliet_volume_id": None}

    @classmethod
    def _label(cls, details: dict[str, Any]) -> str | None:
        """The name a person sees: UDF's, then Joliet's (longer, mixed case), then ECMA-119's."""
        udf = details.get("udf") or {}
        for candidate in (
            udf.get("logical_volume_id"),
            details.get("joliet_volume_id"),
            details.get("volume_id"),
        ):
            if candidate:
                return str(candidate)
        return None

    @classmethod
    def _partition_details(cls, source: Source, findings: list[Finding]) -> dict[str, Any]:
        """MBR or GPT in the system area, as isohybrid and EFI-bootable images carry."""
        table = read_partition_table(source)
        if table is None:
            return {"hybrid_mbr": False, "gpt": False, "partitions": [], "unread_from_stream": []}
        findings.extend(table.findings)
        return {
            "hybrid_mbr": table.scheme == "mbr" or table.mbr_partitions > 0,
            "gpt": table.scheme == "gpt",
            "partitions": [p.to_dict() for p in table.partitions],
            "unread_from_stream": list(table.unread),
        }

    @classmethod
    def _el_torito(
        cls, source: Source, boot_records: tuple[BootRecord, ...], findings: list[Finding]
    ) -> dict[str, Any] | None:
        record = next((r for r in boot_records if r.el_torito), None)
        if record is None:
            return None
        offset = record.boot_catalog_sector * SECTOR_SIZE
        catalog = source.read(offset, ELTORITO_CATALOG_BYTES)
        found: dict[str, Any] = {
            "catalog_sector": record.boot_catalog_sector,
            "bootable": False,
            "platforms": [],
            "entries": 0,
        }
        if len(catalog) < 2 * ELTORITO_ENTRY_SIZE:
            findings.append(
                warning(
                    Code.OUT_OF_BOUNDS,
                    f"iso: the El Torito boot catalog at {offset:#x} is past the end of the"
                    " image; firmware cannot boot it",
                    offset,
                )
            )
            return found
        if not cls._validation_entry_ok(catalog, offset, findings):
            return found
        return found | cls._catalog_entries(catalog)

    @classmethod
    def _validation_entry_ok(cls, catalog: bytes, offset: int, findings: list[Finding]) -> bool:
        """El Torito 2.1: header id 1, key 55 AA, and 16-bit words summing to zero."""
        header_id, *_rest, key = ELTORITO_VALIDATION.unpack_from(catalog)
        words = struct.unpack_from("<16H", catalog)
        if header_id == 1 and key == ELTORITO_KEY and sum(words) & 0xFFFF == 0:
            return True
        findings.append(
            warning(
                Code.CHECKSUM_MISMATCH,
                f"iso: the El Torito validation entry at {offset:#x} has a bad header id, key or"
                " checksum; firmware will not boot from this image",
                offset,
            )
        )
        return False

    @classmethod
    def _catalog_entries(cls, catalog: bytes) -> dict[str, Any]:
        """Boot entries and platforms: the default entry, then the sections (2.2-2.5)."""
        platforms = [ELTORITO_PLATFORMS.get(catalog[1], f"{catalog[1]:#04x}")]
        bootable = catalog[ELTORITO_ENTRY_SIZE] == ELTORITO_BOOTABLE
        entries = 1
        # Whole entries only: a catalog cut short by the end of the image may end mid-entry.
        end = len(catalog) - ELTORITO_ENTRY_SIZE + 1
        for at in range(2 * ELTORITO_ENTRY_SIZE, end, ELTORITO_ENTRY_SIZE):
            indicator = catalog[at]
            if indicator in (ELTORITO_MORE_HEADERS, ELTORITO_FINAL_HEADER):
                _, platform, _count, _id = ELTORITO_SECTION_HEADER.unpack_from(catalog, at)
                name = ELTORITO_PLATFORMS.get(platform, f"{platform:#04x}")
                if name not in platforms:
                    platforms.append(name)
            elif indicator in (ELTORITO_BOOTABLE, 0) and any(catalog[at : at + 32]):
                entries += 1
                bootable = bootable or indicator == ELTORITO_BOOTABLE
            elif indicator != ELTORITO_EXTENSION:
                break
        return {"bootable": bootable, "platforms": platforms, "entries": entries}

    @classmethod
    def _udf(cls, source: Source, nsr: int, findings: list[Finding]) -> dict[str, Any]:
        found: dict[str, Any] = {
            "nsr": nsr,
            "block_size": None,
            "revision": None,
            "volume_id": None,
            "logical_volume_id": None,
        }
        anchor = cls._udf_anchor(source)
        if anchor is None:
            findings.append(
                warning(
                    Code.INVALID_HEADER,
                    f"iso: NSR0{nsr} announces UDF but no valid anchor volume descriptor"
                    f" pointer is at block {UDF_ANCHOR_BLOCK} (ECMA-167 3/8.4.2.1); UDF readers"
                    " will not mount it",
                    FIRST_DESCRIPTOR_SECTOR * SECTOR_SIZE,
                )
            )
            return found
        block_size, location, length = anchor
        found["block_size"] = block_size
        found.update(cls._udf_volume_descriptors(source, block_size, location, length, findings))
        return found

    @classmethod
    def _udf_anchor(cls, source: Source) -> tuple[int, int, int] | None:
        """Block size and main volume descriptor sequence extent from the anchor (3/10.2)."""
        size = UDF_TAG.size + UDF_EXTENT.size
        for block_size in UDF_BLOCK_SIZES:
            data = source.read(UDF_ANCHOR_BLOCK * block_size, 512)
            if len(data) < size:
                continue
            tag = UdfTag.from_bytes(data)
            if tag.tag_identifier == UDF_TAG_ANCHOR and tag.valid(data, UDF_ANCHOR_BLOCK):
                length, location = UDF_EXTENT.unpack_from(data, UDF_TAG.size)
                return block_size, location, length
        return None

    @classmethod
    def _udf_volume_descriptors(
        cls, source: Source, block_size: int, location: int, length: int, findings: list[Finding]
    ) -> dict[str, Any]:
        """Volume and logical volume names and the UDF revision (3/10.1, 3/10.6)."""
        found: dict[str, Any] = {}
        count = min(length // block_size, MAX_UDF_DESCRIPTORS)
        for block in range(location, location + count):
            data = source.read(block * block_size, min(block_size, SECTOR_SIZE))
            if len(data) < UDF_TAG.size:
                break
            tag = UdfTag.from_bytes(data)
            if tag.tag_identifier == UDF_TAG_TERMINATING or tag.tag_identifier == 0:
                break
            if not tag.valid(data, block):
                findings.append(
                    warning(
                        Code.CHECKSUM_MISMATCH,
                        f"iso: the UDF descriptor at block {block} has a bad tag checksum,"
                        " location or CRC (ECMA-167 3/7.2); UDF readers may reject the volume",
                        block * block_size,
                    )
                )
                break
            if tag.tag_identifier == UDF_TAG_PRIMARY and "volume_id" not in found:
                found["volume_id"] = _dstring(data[UDF_PVD_VOLUME_ID])
            elif tag.tag_identifier == UDF_TAG_LOGICAL_VOLUME and len(data) >= 256:
                name, _lbs, _domain, revision = UDF_LVD_FIELDS.unpack_from(data, UDF_LVD_OFFSET)
                found["logical_volume_id"] = _dstring(name)
                found["revision"] = f"{revision >> 8:x}.{revision & 0xFF:02x}"
        return found

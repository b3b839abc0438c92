"""VirtualBox Disk Image (VDI) inspector.

References: qemu 7.2 ``block/vdi.c`` (``vdi_open``: the header checks qemu applies, the block
map it loads, how it sizes the disk) and VirtualBox ``src/VBox/Storage/VDICore.h`` (the
pre-header, ``VDIHEADER1``, image types). Everything is little-endian; the four UUIDs are in
VirtualBox's mixed-endian layout.

A VDI file is a 512-byte header, a block map of ``blocks_in_image`` 32-bit entries at
``offset_bmap``, and 1 MiB data blocks from ``offset_data``. An entry below 0xfffffffe is the
index of the block's data in the data area; qemu reads it with no bound check of its own.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, unsafe, warning
from ..source import Source
from .base import UNCHECKED_READ_AS_ZEROS, Inspection, Inspector, cstring, probe_bytes

log = Logger(__name__)

VDI_SIGNATURE = 0xBEDA107F
VDI_VERSION_1_1 = 0x00010001
SECTOR_SIZE = 512
#: qemu accepts no other block size.
DEFAULT_BLOCK_SIZE = 1024 * 1024
#: qemu's limit: a block map index must fit in 32 bits with room for the markers.
VDI_BLOCKS_IN_IMAGE_MAX = 0x3FFFFFFF
VDI_DISK_SIZE_MAX = VDI_BLOCKS_IN_IMAGE_MAX * DEFAULT_BLOCK_SIZE
#: Entries at or above this are unallocated (0xffffffff) or discarded (0xfffffffe).
VDI_DISCARDED = 0xFFFFFFFE
#: The header as qemu reads it is the first sector of the file.
HEADER_AREA = 512
#: At most this many block map entries are read (256 KiB); the rest is noted, not checked.
BMAP_ENTRIES_CAP = 64 * 1024

IMAGE_TYPES = {1: "normal", 2: "fixed", 3: "undo", 4: "diff"}

_HEADER = struct.Struct("<64s5I256s7IQ4I16s16s16s16s")
_NULL_UUID = bytes(16)
_FORGED = "no VDI writer lays a file out so; qemu would take metadata for disk data"


class VdiHeader(NamedTuple):
    """The pre-header and ``VDIHEADER1`` at offset 0 (VDICore.h)."""

    text: bytes
    signature: int
    version: int
    header_size: int
    image_type: int
    image_flags: int
    description: bytes
    offset_bmap: int
    offset_data: int
    cylinders: int
    heads: int
    sectors: int
    sector_size: int
    unused1: int
    disk_size: int
    block_size: int
    block_extra: int
    blocks_in_image: int
    blocks_allocated: int
    uuid_image: bytes
    uuid_last_snap: bytes
    uuid_link: bytes
    uuid_parent: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> VdiHeader:
        return cls(*_HEADER.unpack_from(data))

    @property
    def rounded_disk_size(self) -> int:
        """``disk_size`` rounded up to a sector, as qemu does for VBoxManage's odd sizes."""
        return -(-self.disk_size // SECTOR_SIZE) * SECTOR_SIZE

    @property
    def bmap_bytes(self) -> int:
        """The block map as qemu reads it: whole sectors."""
        return -(-self.blocks_in_image * 4 // SECTOR_SIZE) * SECTOR_SIZE


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


class VdiInspector(Inspector):
    """VirtualBox VDI images as qemu's ``vdi`` driver reads them."""

    format = "vdi"

    @classmethod
    def probe(cls, source: Source) -> bool:
        # Like qemu's vdi_probe, the signature alone; a header cut short is inspect()'s to report.
        return probe_bytes(source, 0x40, 4) == struct.pack("<I", VDI_SIGNATURE)

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        header = VdiHeader.from_bytes(cls.read(source, 0, HEADER_AREA, "header"))
        if header.signature != VDI_SIGNATURE:
            raise cls.error(f"signature {header.signature:#010x} at 0x40 is not VDI's", 0x40)
        log.debug(
            "vdi: %s header, bmap at %#x, data at %#x",
            source.name,
            header.offset_bmap,
            header.offset_data,
        )

        findings = [*cls._check_header(header), *cls._check_references(header)]
        findings += cls._check_layout(header, source.size)
        if header.block_size == DEFAULT_BLOCK_SIZE and not any(
            f.code is Code.OUT_OF_BOUNDS for f in findings
        ):
            findings += cls._check_bmap(source, header)
        return Inspection(
            cls.format, header.rounded_disk_size, cls._details(header), tuple(findings)
        )

    @classmethod
    def _check_header(cls, h: VdiHeader) -> list[Finding]:
        """The field checks of qemu's vdi_open, in its order: each one makes qemu refuse."""
        found = []
        if h.version != VDI_VERSION_1_1:
            found.append(
                unsafe(
                    Code.UNSUPPORTED_VERSION,
                    f"vdi: version {h.version >> 16}.{h.version & 0xFFFF} at 0x44; qemu reads only"
                    " 1.1 VDI images: convert it with VBoxManage clonemedium first",
                    0x44,
                )
            )
        for name, value, offset in (
            ("offset_bmap", h.offset_bmap, 0x154),
            ("offset_data", h.offset_data, 0x158),
        ):
            if value % SECTOR_SIZE:
                found.append(cls._invalid(f"{name} {value:#x} is not sector aligned", offset))
        if h.sector_size != SECTOR_SIZE:
            found.append(cls._invalid(f"sector_size {h.sector_size} is not 512", 0x168))
        if h.block_size != DEFAULT_BLOCK_SIZE:
            found.append(cls._invalid(f"block_size {h.block_size} is not 1 MiB", 0x178))
        found += cls._check_size(h)
        if h.image_type not in IMAGE_TYPES:
            found.append(cls._invalid(f"image_type {h.image_type} is not 1..4", 0x4C))
        elif h.image_type in (3, 4):
            found.append(
                warning(
                    Code.INVALID_HEADER,
                    f"vdi: image_type {IMAGE_TYPES[h.image_type]} at 0x4c: qemu reads it as a"
                    " stand-alone disk, without the snapshot chain VirtualBox would use",
                    0x4C,
                )
            )
        return found

    @classmethod
    def _check_size(cls, h: VdiHeader) -> list[Finding]:
        found = []
        if h.disk_size > VDI_DISK_SIZE_MAX:
            found.append(
                cls._invalid(
                    f"disk_size {h.disk_size} is above qemu's maximum {VDI_DISK_SIZE_MAX}", 0x170
                )
            )
        elif h.rounded_disk_size > h.blocks_in_image * h.block_size:
            found.append(
                cls._invalid(
                    f"disk_size {h.disk_size} needs more than blocks_in_image {h.blocks_in_image}"
                    f" blocks of {h.block_size} bytes",
                    0x170,
                )
            )
        if h.blocks_in_image > VDI_BLOCKS_IN_IMAGE_MAX:
            found.append(
                cls._invalid(
                    f"blocks_in_image {h.blocks_in_image} is above {VDI_BLOCKS_IN_IMAGE_MAX}", 0x180
                )
            )
        return found

    @classmethod
    def _check_references(cls, h: VdiHeader) -> list[Finding]:
        """A link or parent UUID names another image (a differencing disk's base)."""
        found = []
        for name, raw, offset in (
            ("uuid_link", h.uuid_link, 0x1A8),
            ("uuid_parent", h.uuid_parent, 0x1B8),
        ):
            if raw != _NULL_UUID:
                found.append(
                    unsafe(
                        Code.BACKING_FILE,
                        f"vdi: {name} {_uuid(raw)} at {offset:#x}: this is a differencing image"
                        " whose data lives partly in another VDI; merge it into its parent"
                        " (VBoxManage clonemedium) before uploading",
                        offset,
                    )
                )
        return found

    @classmethod
    def _check_layout(cls, h: VdiHeader, size: int | None) -> list[Finding]:
        """The block map and the data area must lie in the file, past the header."""
        found = []
        bmap_end = h.offset_bmap + h.bmap_bytes
        if h.offset_bmap < HEADER_AREA:
            found.append(
                cls._invalid(f"offset_bmap {h.offset_bmap:#x} is inside the header", 0x154, _FORGED)
            )
        if h.offset_data < bmap_end:
            found.append(
                cls._invalid(
                    f"offset_data {h.offset_data:#x} is inside the block map ({h.offset_bmap:#x}"
                    f"..{bmap_end:#x})",
                    0x158,
                    _FORGED,
                )
            )
        if size is not None and bmap_end > size:
            found.append(
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"vdi: block map {h.offset_bmap:#x}..{bmap_end:#x} (offset_bmap at 0x154)"
                    f" runs past the end of the file ({size:#x}); the file is truncated or forged",
                    0x154,
                )
            )
        if size is not None and h.offset_data > size:
            found.append(
                unsafe(
                    Code.TRUNCATED,
                    f"vdi: offset_data {h.offset_data:#x} at 0x158 is past the end of the file"
                    f" ({size:#x})",
                    0x158,
                )
            )
        return found

    @classmethod
    def _check_bmap(cls, source: Source, h: VdiHeader) -> list[Finding]:
        """Every allocated entry read must name a block inside the file and the image."""
        count = min(h.blocks_in_image, BMAP_ENTRIES_CAP)
        raw = cls.read(source, h.offset_bmap, count * 4, "block map")
        entries = struct.unpack(f"<{count}I", raw)
        size = source.size
        past_eof = []
        too_high = []
        for index, entry in enumerate(entries):
            if entry >= VDI_DISCARDED:
                continue
            if entry >= h.blocks_in_image:
                too_high.append(index)
            if size is not None and h.offset_data + (entry + 1) * h.block_size > size:
                past_eof.append(index)

        found = []
        if past_eof:
            first = past_eof[0]
            found.append(
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"vdi: {len(past_eof)} block map entries point past the end of the file, the"
                    f" first is block {first} -> {entries[first]} (entry at"
                    f" {h.offset_bmap + 4 * first:#x}); the image is truncated or forged",
                    h.offset_bmap + 4 * first,
                )
            )
        if too_high:
            first = too_high[0]
            found.append(
                unsafe(
                    Code.CORRUPT,
                    f"vdi: {len(too_high)} block map entries are not below blocks_in_image"
                    f" {h.blocks_in_image}, the first is block {first} -> {entries[first]}"
                    f" (entry at {h.offset_bmap + 4 * first:#x}); qemu-img check reports it",
                    h.offset_bmap + 4 * first,
                )
            )
        if h.blocks_in_image > count:
            found.append(
                cls.unchecked(
                    count,
                    h.blocks_in_image,
                    "block map entries",
                    UNCHECKED_READ_AS_ZEROS,
                    h.offset_bmap + 4 * count,
                )
            )
        return found

    @classmethod
    def _invalid(cls, message: str, offset: int, why: str = "qemu refuses the image") -> Finding:
        return unsafe(Code.INVALID_HEADER, f"vdi: {message} (at {offset:#x}); {why}", offset)

    @staticmethod
    def _details(h: VdiHeader) -> dict[str, Any]:
        return {
            "version": f"{h.version >> 16}.{h.version & 0xFFFF}",
            "text": cstring(h.text),
            "image_type": IMAGE_TYPES.get(h.image_type, h.image_type),
            "image_flags": h.image_flags,
            "description": cstring(h.description),
            "header_size": h.header_size,
            "offset_bmap": h.offset_bmap,
            "offset_data": h.offset_data,
            "sector_size": h.sector_size,
            "block_size": h.block_size,
            "disk_size": h.disk_size,
            "blocks_in_image": h.blocks_in_image,
            "blocks_allocated": h.blocks_allocated,
            "uuid_image": _uuid(h.uuid_image),
            "uuid_parent": _uuid(h.uuid_parent),
            "uuid_link": _uuid(h.uuid_link),
        }

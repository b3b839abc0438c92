"""Filesystem superblocks found at the start of a disk or of a partition.

Only identification is done here (type, label, UUID, size); nothing is mounted or walked.
References:

- ext2/3/4: "The Second Extended File System" (Poirier) and the kernel's
  Documentation/filesystems/ext4/super.rst; feature sets as util-linux libblkid
  (libblkid/src/superblocks/ext.c) tells ext2, ext3 and ext4 apart.
- XFS: "XFS Algorithms & Data Structures", section "Superblocks" (xfs_sb).
- FAT: Microsoft "FAT: General Overview of On-Disk Format" (fatgen103), sections 3.1-3.5;
  the FAT type comes from the count of data clusters (section 3.5), never from the label.
- Btrfs: the kernel's fs/btrfs/ctree.h and the on-disk format page of the Btrfs docs
  (btrfs_super_block at 64 KiB).
- Linux swap: include/linux/swap.h (union swap_header, version 1).
- LVM2: lib/format_text/layout.h in the LVM2 sources (label_header, pv_header).
"""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from ..source import Source
from .base import cstring

#: Bytes read from the start of a filesystem: covers the ext, XFS, FAT, swap and LVM2 labels.
HEAD_READ = 8192
#: Where the Btrfs primary superblock lives, and how much of it is read.
BTRFS_SUPER_OFFSET = 0x10000
BTRFS_SUPER_READ = 0x400
#: Largest ext block size exponent accepted (s_log_block_size 6 means 64 KiB blocks).
EXT_MAX_LOG_BLOCK_SIZE = 6
#: Linux swap is only recognised with 4 KiB pages (x86, most arm64 builds).
SWAP_PAGE_SIZE = 4096

# ext feature bits (super.rst, "s_feature_*"), named as in the kernel.
EXT3_FEATURE_COMPAT_HAS_JOURNAL = 0x0004
EXT2_FEATURE_INCOMPAT_FILETYPE = 0x0002
EXT3_FEATURE_INCOMPAT_RECOVER = 0x0004
EXT3_FEATURE_INCOMPAT_JOURNAL_DEV = 0x0008
EXT2_FEATURE_INCOMPAT_META_BG = 0x0010
EXT4_FEATURE_INCOMPAT_64BIT = 0x0080
#: What a plain ext3 driver handles; any other bit makes the filesystem ext4.
EXT3_INCOMPAT_SUPPORTED = (
    EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_RECOVER | EXT2_FEATURE_INCOMPAT_META_BG
)
EXT3_RO_COMPAT_SUPPORTED = 0x0001 | 0x0002 | 0x0004  # sparse_super, large_file, btree_dir


class Filesystem(NamedTuple):
    """What a superblock says about the filesystem behind it."""

    type: str
    label: str | None
    uuid: str | None
    size: int | None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "type": self.type,
            "label": self.label,
            "uuid": self.uuid,
            "size": self.size,
        }
        if self.version is not None:
            found["version"] = self.version
        return found


def _text(raw: bytes) -> str | None:
    """A NUL- or space-padded label, or None when it is empty."""
    text = cstring(raw).rstrip(" ")
    return text or None


def _uuid(raw: bytes) -> str | None:
    return None if raw.count(0) == len(raw) else str(uuid.UUID(bytes=raw))


# ext super block (super.rst), the fields used, from offset 1024 of the filesystem.
EXT_SUPER_OFFSET = 1024
EXT_SUPER = struct.Struct("<4xI16xI28xH34xIII16s16s")
EXT_BLOCKS_COUNT_HI = struct.Struct("<I")
EXT_BLOCKS_COUNT_HI_OFFSET = 0x150
EXT_MAGIC = 0xEF53


class ExtSuperBlock(NamedTuple):
    """The identifying fields of an ext2/3/4 super block."""

    s_blocks_count: int
    s_log_block_size: int
    s_magic: int
    s_feature_compat: int
    s_feature_incompat: int
    s_feature_ro_compat: int
    s_uuid: bytes
    s_volume_name: bytes

    @classmethod
    def from_bytes(cls, sb: bytes) -> ExtSuperBlock:
        lo, log, magic, compat, incompat, ro_compat, fs_uuid, name = EXT_SUPER.unpack_from(sb)
        hi = 0
        if incompat & EXT4_FEATURE_INCOMPAT_64BIT:
            (hi,) = EXT_BLOCKS_COUNT_HI.unpack_from(sb, EXT_BLOCKS_COUNT_HI_OFFSET)
        return cls(hi << 32 | lo, log, magic, compat, incompat, ro_compat, fs_uuid, name)

    @property
    def type(self) -> str:
        if self.s_feature_incompat & ~EXT3_INCOMPAT_SUPPORTED:
            return "ext4"
        if self.s_feature_ro_compat & ~EXT3_RO_COMPAT_SUPPORTED:
            return "ext4"
        if self.s_feature_compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL:
            return "ext3"
        return "ext2"


def _ext(head: bytes) -> Filesystem | None:
    sb = head[EXT_SUPER_OFFSET : EXT_SUPER_OFFSET + 1024]
    if len(sb) < 1024:
        return None
    ext = ExtSuperBlock.from_bytes(sb)
    if ext.s_magic != EXT_MAGIC or ext.s_feature_incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV:
        return None
    size = None
    if ext.s_log_block_size <= EXT_MAX_LOG_BLOCK_SIZE:
        size = ext.s_blocks_count * (1024 << ext.s_log_block_size)
    return Filesystem(ext.type, _text(ext.s_volume_name), _uuid(ext.s_uuid), size)


# xfs_sb ("Superblocks"), big-endian, at offset 0: magicnum .. fname.
XFS_SUPER = struct.Struct(">4sIQ16x16s60x12s")
XFS_MAGIC = b"XFSB"


class XfsSuperBlock(NamedTuple):
    """The identifying fields of an XFS superblock."""

    sb_magicnum: bytes
    sb_blocksize: int
    sb_dblocks: int
    sb_uuid: bytes
    sb_fname: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> XfsSuperBlock:
        return cls(*XFS_SUPER.unpack_from(data))


def _xfs(head: bytes) -> Filesystem | None:
    if len(head) < XFS_SUPER.size:
        return None
    sb = XfsSuperBlock.from_bytes(head)
    if sb.sb_magicnum != XFS_MAGIC:
        return None
    return Filesystem("xfs", _text(sb.sb_fname), _uuid(sb.sb_uuid), sb.sb_dblocks * sb.sb_blocksize)


# FAT boot sector and BPB (fatgen103 3.1-3.3): the common part, then the FAT12/16 and the
# FAT32 extended parts, which both end in the volume ID and the volume label.
FAT_BPB = struct.Struct("<B10xHBHBHHBH8xI")
FAT16_EXT = struct.Struct("<2xBI11s")
FAT16_EXT_OFFSET = 36
FAT32_EXT = struct.Struct("<I26xBI11s")
FAT32_EXT_OFFSET = 36
FAT_BOOT_SIGNATURE = 0x29
FAT_JUMPS = (0xEB, 0xE9)
FAT_SECTOR_SIZES = (512, 1024, 2048, 4096)
# fatgen103 3.5: fewer clusters than these make the volume FAT12, then FAT16.
FAT12_MAX_CLUSTERS = 4085
FAT16_MAX_CLUSTERS = 65525
FAT_NO_NAME = "NO NAME"


class FatBootSector(NamedTuple):
    """The BPB fields that size a FAT volume and tell its FAT type."""

    BS_jmpBoot: int
    BPB_BytsPerSec: int
    BPB_SecPerClus: int
    BPB_RsvdSecCnt: int
    BPB_NumFATs: int
    BPB_RootEntCnt: int
    BPB_TotSec16: int
    BPB_Media: int
    BPB_FATSz16: int
    BPB_TotSec32: int

    @classmethod
    def from_bytes(cls, data: bytes) -> FatBootSector:
        return cls(*FAT_BPB.unpack_from(data))

    def plausible(self) -> bool:
        """The checks that tell a FAT boot sector from an MBR or random data."""
        spc = self.BPB_SecPerClus
        return (
            self.BS_jmpBoot in FAT_JUMPS
            and self.BPB_BytsPerSec in FAT_SECTOR_SIZES
            and 0 < spc <= 128
            and spc & (spc - 1) == 0
            and self.BPB_RsvdSecCnt > 0
            and 0 < self.BPB_NumFATs <= 4
            and (self.BPB_Media == 0xF0 or self.BPB_Media >= 0xF8)
        )

    @property
    def total_sectors(self) -> int:
        return self.BPB_TotSec16 or self.BPB_TotSec32

    def fat_type(self, fat_size: int) -> str:
        """FAT12, FAT16 or FAT32 by the count of data clusters (fatgen103 3.5)."""
        bps = self.BPB_BytsPerSec
        root_dir_sectors = (self.BPB_RootEntCnt * 32 + bps - 1) // bps
        meta = self.BPB_RsvdSecCnt + self.BPB_NumFATs * fat_size + root_dir_sectors
        clusters = max(0, self.total_sectors - meta) // self.BPB_SecPerClus
        if clusters < FAT12_MAX_CLUSTERS:
            return "FAT12"
        return "FAT16" if clusters < FAT16_MAX_CLUSTERS else "FAT32"


def _vfat(head: bytes) -> Filesystem | None:
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return None
    bs = FatBootSector.from_bytes(head)
    if not bs.plausible() or bs.total_sectors == 0:
        return None
    if bs.BPB_FATSz16:
        fat_size = bs.BPB_FATSz16
        signature, volume_id, label = FAT16_EXT.unpack_from(head, FAT16_EXT_OFFSET)
    else:
        fat_size, signature, volume_id, label = FAT32_EXT.unpack_from(head, FAT32_EXT_OFFSET)
    if fat_size == 0:
        return None
    text, serial = None, None
    if signature == FAT_BOOT_SIGNATURE:
        text = _text(label)
        serial = f"{volume_id >> 16:04X}-{volume_id & 0xFFFF:04X}"
    if text == FAT_NO_NAME:
        text = None
    size = bs.total_sectors * bs.BPB_BytsPerSec
    return Filesystem("vfat", text, serial, size, bs.fat_type(fat_size))


# btrfs_super_block (ctree.h): fsid at 0x20, magic at 0x40, total_bytes at 0x70, label at
# 0x12b (after the 0x62-byte dev_item).
BTRFS_SUPER = struct.Struct("<32x16s16x8s40xQ179x256s")
BTRFS_MAGIC = b"_BHRfS_M"


class BtrfsSuperBlock(NamedTuple):
    """The identifying fields of a Btrfs superblock."""

    fsid: bytes
    magic: bytes
    total_bytes: int
    label: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> BtrfsSuperBlock:
        return cls(*BTRFS_SUPER.unpack_from(data))


def _btrfs(data: bytes) -> Filesystem | None:
    if len(data) < BTRFS_SUPER.size:
        return None
    sb = BtrfsSuperBlock.from_bytes(data)
    if sb.magic != BTRFS_MAGIC:
        return None
    return Filesystem("btrfs", _text(sb.label), _uuid(sb.fsid), sb.total_bytes)


# swap_header.info (swap.h), version 1, at offset 1024; the magic ends the first page.
SWAP_INFO = struct.Struct("<IIi16s16s")
SWAP_INFO_OFFSET = 1024
SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")


def _swap(head: bytes) -> Filesystem | None:
    magic = head[SWAP_PAGE_SIZE - 10 : SWAP_PAGE_SIZE]
    if magic not in SWAP_MAGICS:
        return None
    version, last_page, _bad, swap_uuid, name = SWAP_INFO.unpack_from(head, SWAP_INFO_OFFSET)
    if magic == SWAP_MAGICS[1] or version != 1:
        return Filesystem("swap", None, None, None, "0" if magic == SWAP_MAGICS[1] else None)
    size = (last_page + 1) * SWAP_PAGE_SIZE
    return Filesystem("swap", _text(name), _uuid(swap_uuid), size, "1")


# label_header and pv_header (layout.h): the label sits in one of the first four sectors.
LVM_LABEL = struct.Struct("<8sQII8s")
LVM_PV_HEADER = struct.Struct("<32sQ")
LVM_LABEL_SECTORS = 4
LVM_LABEL_ID = b"LABELONE"
LVM_TYPE = b"LVM2 001"


def _lvm2(head: bytes) -> Filesystem | None:
    for sector in range(LVM_LABEL_SECTORS):
        at = sector * 512
        if head[at : at + 8] != LVM_LABEL_ID:
            continue
        _id, _sector, _crc, offset_xl, label_type = LVM_LABEL.unpack_from(head, at)
        pv_at = at + offset_xl
        if label_type != LVM_TYPE or not 0 < offset_xl <= 512 - LVM_PV_HEADER.size:
            return None
        if len(head) < pv_at + LVM_PV_HEADER.size:
            return None
        pv_uuid, device_size = LVM_PV_HEADER.unpack_from(head, pv_at)
        text = pv_uuid.decode("ascii", errors="replace")
        # LVM prints its 32-character ids in groups of 6-4-4-4-4-4-6.
        cuts = (0, 6, 10, 14, 18, 22, 26, 32)
        pretty = "-".join(text[a:b] for a, b in itertools.pairwise(cuts))
        return Filesystem("LVM2_member", None, pretty, device_size or None)
    return None


_HEAD_PROBES: tuple[Callable[[bytes], Filesystem | None], ...] = (
    _ext,
    _xfs,
    _vfat,
    _swap,
    _lvm2,
)


def probe_filesystem(source: Source, offset: int) -> Filesystem | None:
    """The filesystem whose superblock starts at ``offset``, if one is recognised.

    Reads at most ``HEAD_READ + BTRFS_SUPER_READ`` bytes. A short read just means no
    filesystem; a read a stream cannot serve raises ``UnverifiableError``.
    """
    head = source.read(offset, HEAD_READ)
    for probe in _HEAD_PROBES:
        found = probe(head)
        if found is not None:
            return found
    return _btrfs(source.read(offset + BTRFS_SUPER_OFFSET, BTRFS_SUPER_READ))

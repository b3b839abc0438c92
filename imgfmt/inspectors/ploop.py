"""Parallels (ploop) image file inspector; qemu calls the format ``parallels``.

References: qemu 7.2 ``docs/interop/parallels.txt`` (header, BAT, Format Extension, dirty
bitmap feature), ``block/parallels.c`` (``parallels_open``: the checks qemu applies and how it
sizes the disk) and ``block/parallels-ext.c`` (how qemu parses the Format Extension cluster
when it opens an image read-only, as ``qemu-img info`` and ``convert`` do).

Glance's ``ploop`` image is this Parallels image file; the ``DiskDescriptor.xml`` that ploop
keeps beside it is not part of the upload and is not read here. Everything is little-endian.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Any, NamedTuple

from ..log import Logger
from ..report import Code, Finding, info, unsafe, warning
from ..source import Source
from .base import UNCHECKED_READ_AS_ZEROS, Inspection, Inspector, probe_bytes

log = Logger(__name__)

#: Sector-addressed BAT, 32-bit sector count (the old format).
HEADER_MAGIC = b"WithoutFreeSpace"
#: Cluster-addressed BAT, 64-bit sector count.
HEADER_MAGIC2 = b"WithouFreSpacExt"
HEADER_VERSION = 2
HEADER_INUSE_MAGIC = 0x746F6E59
HEADER_CLOSED_MAGIC = 0x312E3276
FLAG_EMPTY_IMAGE = 0x1
SECTOR_SIZE = 512
INT32_MAX = 0x7FFFFFFF
INT64_MAX = 0x7FFFFFFFFFFFFFFF
#: qemu refuses clusters of more sectors than this ("Too big cluster").
TRACKS_MAX = INT32_MAX // 513
#: qemu refuses a BAT of more entries than this ("Catalog too large").
BAT_ENTRIES_MAX = INT32_MAX // 4
#: At most this many BAT entries are read (256 KiB); the rest is noted, not checked.
BAT_ENTRIES_CAP = 64 * 1024
#: The Format Extension is one cluster; a larger one is not read.
EXT_CLUSTER_CAP = 1024 * 1024
#: Each feature takes at least a 24-byte header, so a 1 MiB cluster holds fewer than this.
FEATURES_CAP = EXT_CLUSTER_CAP // 24
FORMAT_EXTENSION_MAGIC = 0xAB234CEF23DCEA87
END_OF_FEATURES_MAGIC = 0
DIRTY_BITMAP_FEATURE_MAGIC = 0x20385FAE252CB34A

_HEADER = struct.Struct("<16s5IQ3IQ")
_EXT_HEADER = struct.Struct("<Q16s")
_FEATURE_HEADER = struct.Struct("<QQII")
_DIRTY_BITMAP = struct.Struct("<Q16sII")


class ParallelsHeader(NamedTuple):
    """The 64-byte image header (parallels.txt, "Header")."""

    magic: bytes
    version: int
    heads: int
    cylinders: int
    tracks: int
    bat_entries: int
    nb_sectors: int
    inuse: int
    data_off: int
    flags: int
    ext_off: int

    @classmethod
    def from_bytes(cls, data: bytes) -> ParallelsHeader:
        return cls(*_HEADER.unpack_from(data))

    @property
    def total_sectors(self) -> int:
        """The disk size qemu uses: the old format keeps only the low 32 bits."""
        if self.magic == HEADER_MAGIC:
            return self.nb_sectors & 0xFFFFFFFF
        return self.nb_sectors

    @property
    def cluster_size(self) -> int:
        return self.tracks * SECTOR_SIZE

    @property
    def off_multiplier(self) -> int:
        """Sectors per BAT unit: BAT entries count sectors in the old format, clusters after."""
        return 1 if self.magic == HEADER_MAGIC else self.tracks

    @property
    def bat_end(self) -> int:
        return _HEADER.size + 4 * self.bat_entries

    @property
    def data_start(self) -> int:
        """Where the data area begins; a zero data_off means right after the BAT."""
        if self.data_off:
            return self.data_off * SECTOR_SIZE
        return -(-self.bat_end // SECTOR_SIZE) * SECTOR_SIZE


class FeatureHeader(NamedTuple):
    """One feature section header of the Format Extension cluster."""

    magic: int
    flags: int
    data_size: int
    unused32: int

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureHeader:
        return cls(*_FEATURE_HEADER.unpack_from(data))


class DirtyBitmapFeature(NamedTuple):
    """The fixed part of the dirty bitmap feature; its L1 table follows."""

    size: int
    id: bytes
    granularity: int
    l1_size: int

    @classmethod
    def from_bytes(cls, data: bytes) -> DirtyBitmapFeature:
        return cls(*_DIRTY_BITMAP.unpack_from(data))


class PloopInspector(Inspector):
    """Parallels expandable images as qemu's ``parallels`` driver reads them."""

    format = "ploop"

    @classmethod
    def probe(cls, source: Source) -> bool:
        # qemu also wants version 2 to probe; a wrong version is reported by inspect().
        return probe_bytes(source, 0, 16) in (HEADER_MAGIC, HEADER_MAGIC2)

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        header = ParallelsHeader.from_bytes(cls.read(source, 0, _HEADER.size, "header"))
        if header.magic not in (HEADER_MAGIC, HEADER_MAGIC2):
            raise cls.error(f"magic {header.magic!r} at 0x0 is not a Parallels magic", 0)
        log.debug(
            "ploop: %s, %d BAT entries, cluster %d sectors",
            source.name,
            header.bat_entries,
            header.tracks,
        )

        findings = cls._check_header(header)
        bitmaps: list[dict[str, Any]] = []
        if 0 < header.tracks <= TRACKS_MAX and header.bat_entries <= BAT_ENTRIES_MAX:
            findings += cls._check_bat(source, header)
            if header.ext_off:
                ext_findings, bitmaps = cls._check_extension(source, header)
                findings += ext_findings
        details = cls._details(header, bitmaps)
        return Inspection(cls.format, header.total_sectors * SECTOR_SIZE, details, tuple(findings))

    @classmethod
    def _check_header(cls, h: ParallelsHeader) -> list[Finding]:
        found = []
        if h.version != HEADER_VERSION:
            found.append(
                unsafe(
                    Code.UNSUPPORTED_VERSION,
                    f"ploop: version {h.version} at 0x10; qemu reads only version 2 and refuses"
                    " the image",
                    0x10,
                )
            )
        if h.tracks == 0:
            found.append(cls._refused("tracks (sectors per cluster) is 0", 0x1C))
        elif h.tracks > TRACKS_MAX:
            found.append(cls._refused(f"tracks {h.tracks} is above {TRACKS_MAX}", 0x1C))
        if h.bat_entries > BAT_ENTRIES_MAX:
            found.append(
                cls._refused(f"bat_entries {h.bat_entries} is above {BAT_ENTRIES_MAX}", 0x20)
            )
        return found + cls._check_size(h) + cls._check_state(h)

    @classmethod
    def _check_size(cls, h: ParallelsHeader) -> list[Finding]:
        found = []
        if h.total_sectors > INT64_MAX // SECTOR_SIZE:
            found.append(cls._refused(f"nb_sectors {h.nb_sectors} overflows a byte size", 0x24))
        if h.magic == HEADER_MAGIC and h.nb_sectors >> 32:
            found.append(
                warning(
                    Code.INVALID_HEADER,
                    f"ploop: nb_sectors {h.nb_sectors:#x} at 0x24 has high bits set in a"
                    " WithoutFreeSpace image; qemu uses only the low 32 bits",
                    0x24,
                )
            )
        if h.tracks and h.total_sectors > h.bat_entries * h.tracks:
            found.append(
                warning(
                    Code.INVALID_HEADER,
                    f"ploop: nb_sectors {h.total_sectors} at 0x24 is more than the BAT covers"
                    f" ({h.bat_entries} clusters of {h.tracks} sectors); qemu reads the rest as"
                    " zeros",
                    0x24,
                )
            )
        return found

    @classmethod
    def _check_state(cls, h: ParallelsHeader) -> list[Finding]:
        """The in-use marker and the flags word."""
        found = []
        if h.inuse == HEADER_INUSE_MAGIC:
            found.append(
                warning(
                    Code.DIRTY,
                    "ploop: in_use at 0x2c says the image was not closed; qemu opens it read-only"
                    " only, and its data may be inconsistent: run qemu-img check -r all on a copy",
                    0x2C,
                )
            )
        elif h.inuse not in (0, HEADER_CLOSED_MAGIC):
            found.append(
                unsafe(
                    Code.INVALID_HEADER,
                    f"ploop: in_use {h.inuse:#010x} at 0x2c is none of the values the format"
                    " allows (0, 0x312e3276, 0x746f6e59); the header is corrupt or forged",
                    0x2C,
                )
            )
        if h.flags & FLAG_EMPTY_IMAGE:
            found.append(
                warning(
                    Code.INVALID_HEADER,
                    "ploop: the Empty Image flag at 0x34 is set: Parallels would see a blank disk,"
                    " qemu ignores the flag and reads the data the BAT maps",
                    0x34,
                )
            )
        if h.flags & ~FLAG_EMPTY_IMAGE:
            found.append(
                unsafe(
                    Code.UNKNOWN_FEATURE,
                    f"ploop: unknown flags {h.flags & ~FLAG_EMPTY_IMAGE:#x} at 0x34; refuse the"
                    " image or rewrite it with qemu-img convert",
                    0x34,
                )
            )
        return found

    @classmethod
    def _check_bat(cls, source: Source, h: ParallelsHeader) -> list[Finding]:
        """The BAT must lie in the file; each entry read must map a cluster inside it."""
        size = source.size
        if size is not None and h.bat_end > size:
            return [
                unsafe(
                    Code.TRUNCATED,
                    f"ploop: the BAT of {h.bat_entries} entries ends at {h.bat_end:#x}, past the"
                    f" end of the file ({size:#x}); the image is truncated",
                    0x20,
                )
            ]
        found = []
        if size is not None and h.data_start > size:
            found.append(
                unsafe(
                    Code.TRUNCATED,
                    f"ploop: the data area starts at {h.data_start:#x} (data_off at 0x30), past the"
                    f" end of the file ({size:#x}); the image is truncated",
                    0x30,
                )
            )
        count = min(h.bat_entries, BAT_ENTRIES_CAP)
        raw = cls.read(source, _HEADER.size, 4 * count, "BAT")
        found += cls._check_entries(h, struct.unpack(f"<{count}I", raw), size)
        if h.bat_entries > count:
            found.append(
                cls.unchecked(
                    count,
                    h.bat_entries,
                    "BAT entries",
                    UNCHECKED_READ_AS_ZEROS,
                    _HEADER.size + 4 * count,
                )
            )
        return found

    @classmethod
    def _check_entries(
        cls, h: ParallelsHeader, entries: tuple[int, ...], size: int | None
    ) -> list[Finding]:
        scale = h.off_multiplier * SECTOR_SIZE
        lowest = min(filter(None, entries), default=0)
        if not lowest or (
            lowest * scale >= h.data_start and (size is None or max(entries) * scale < size)
        ):
            return []  # every cluster in bounds: no entry needs a look of its own
        below = []
        past_eof = []
        for index, entry in enumerate(entries):
            if not entry:
                continue
            offset = entry * scale
            if offset < h.data_start:
                below.append(index)
            elif size is not None and offset >= size:
                past_eof.append(index)

        found = []
        if below:
            found.append(
                cls._bad_entries(
                    h,
                    entries,
                    below,
                    f"inside the header or BAT (data starts at {h.data_start:#x})",
                )
            )
        if past_eof:
            found.append(cls._bad_entries(h, entries, past_eof, "past the end of the file"))
        return found

    @classmethod
    def _bad_entries(
        cls, h: ParallelsHeader, entries: tuple[int, ...], bad: list[int], where: str
    ) -> Finding:
        first = bad[0]
        offset = entries[first] * h.off_multiplier * SECTOR_SIZE
        return unsafe(
            Code.OUT_OF_BOUNDS,
            f"ploop: {len(bad)} BAT entries map clusters {where}; the first is cluster {first}"
            f" -> {offset:#x} (entry at {_HEADER.size + 4 * first:#x}); the image is corrupt"
            " or forged",
            _HEADER.size + 4 * first,
        )

    @classmethod
    def _check_extension(
        cls, source: Source, h: ParallelsHeader
    ) -> tuple[list[Finding], list[dict[str, Any]]]:
        """The Format Extension cluster at ext_off, parsed as qemu does when read-only."""
        start = h.ext_off * SECTOR_SIZE
        size = source.size
        if h.cluster_size > EXT_CLUSTER_CAP:
            return [
                unsafe(
                    Code.UNKNOWN_EXTENSION,
                    f"ploop: a Format Extension (ext_off at 0x38) in a {h.cluster_size}-byte"
                    f" cluster, larger than the {EXT_CLUSTER_CAP} bytes imgfmt reads; not checked",
                    0x38,
                )
            ], []
        if size is not None and start + h.cluster_size > size:
            return [
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"ploop: the Format Extension cluster at {start:#x} (ext_off at 0x38) runs past"
                    f" the end of the file ({size:#x}); qemu refuses the image",
                    0x38,
                )
            ], []
        cluster = cls.read(source, start, h.cluster_size, "format extension")
        magic, check_sum = _EXT_HEADER.unpack_from(cluster)
        if magic != FORMAT_EXTENSION_MAGIC:
            return [cls._refused(f"Format Extension magic {magic:#x} is wrong", start)], []
        body = memoryview(cluster)[_EXT_HEADER.size :]
        if hashlib.md5(body, usedforsecurity=False).digest() != check_sum:
            return [
                unsafe(
                    Code.CHECKSUM_MISMATCH,
                    f"ploop: the Format Extension checksum at {start + 8:#x} does not match its"
                    " cluster; qemu refuses the image",
                    start + 8,
                )
            ], []
        return cls._check_features(h, cluster, start, size)

    @classmethod
    def _check_features(
        cls, h: ParallelsHeader, cluster: bytes, start: int, size: int | None
    ) -> tuple[list[Finding], list[dict[str, Any]]]:
        pos = _EXT_HEADER.size
        bitmaps: list[dict[str, Any]] = []
        for _ in range(FEATURES_CAP):
            if pos + _FEATURE_HEADER.size > len(cluster):
                return [cls._refused("the feature list runs off its cluster", start + pos)], []
            fh = FeatureHeader.from_bytes(cluster[pos:])
            where = start + pos
            pos += _FEATURE_HEADER.size
            if fh.flags:
                return [
                    unsafe(
                        Code.UNKNOWN_FEATURE,
                        f"ploop: feature {fh.magic:#x} at {where:#x} has flags {fh.flags:#x}; qemu"
                        " refuses the image",
                        where,
                    )
                ], []
            if fh.data_size > len(cluster) - pos:
                return [cls._refused(f"feature data_size {fh.data_size} runs off", where)], []
            if fh.magic == END_OF_FEATURES_MAGIC:
                return cls._bitmap_findings(bitmaps, start), bitmaps
            if fh.magic != DIRTY_BITMAP_FEATURE_MAGIC:
                return [
                    unsafe(
                        Code.UNKNOWN_EXTENSION,
                        f"ploop: unknown feature {fh.magic:#x} at {where:#x} in the Format"
                        " Extension; qemu refuses the image",
                        where,
                    )
                ], []
            data = cluster[pos : pos + fh.data_size]
            problems, bitmap = cls._check_bitmap(h, data, where, size)
            if problems:
                return problems, []
            bitmaps.append(bitmap)
            pos = -(-(pos + fh.data_size) // 8) * 8
        return [cls._refused(f"more than {FEATURES_CAP} features", start)], []

    @classmethod
    def _check_bitmap(
        cls, h: ParallelsHeader, data: bytes, where: int, size: int | None
    ) -> tuple[list[Finding], dict[str, Any]]:
        """A dirty bitmap feature: what qemu checks before it loads the bitmap."""
        if len(data) < _DIRTY_BITMAP.size:
            return [cls._refused(f"dirty bitmap feature of {len(data)} bytes", where)], {}
        bf = DirtyBitmapFeature.from_bytes(data)
        problem = cls._bitmap_problem(h, bf, len(data))
        if problem:
            return [cls._refused(f"dirty bitmap: {problem}", where)], {}
        table = struct.unpack_from(f"<{bf.l1_size}Q", data, _DIRTY_BITMAP.size)
        # 0 and 1 stand for all-clear and all-set clusters; anything else is a sector offset.
        past_eof = [
            index
            for index, entry in enumerate(table)
            if entry > 1 and size is not None and entry * SECTOR_SIZE + h.cluster_size > size
        ]
        found = []
        if past_eof:
            first = past_eof[0]
            found.append(
                unsafe(
                    Code.OUT_OF_BOUNDS,
                    f"ploop: {len(past_eof)} dirty bitmap L1 entries point past the end of the"
                    f" file, the first is entry {first} -> {table[first] * SECTOR_SIZE:#x} (feature"
                    f" at {where:#x}); the image is forged",
                    where,
                )
            )
        bitmap = {
            "id": str(uuid.UUID(bytes=bf.id)),
            "granularity": bf.granularity * SECTOR_SIZE,
            "l1_size": bf.l1_size,
        }
        return found, bitmap

    @staticmethod
    def _bitmap_problem(h: ParallelsHeader, bf: DirtyBitmapFeature, data_size: int) -> str:
        """Why qemu would refuse (or abort on) this bitmap, or "" when it would load it."""
        granularity = (bf.granularity * SECTOR_SIZE) & 0xFFFFFFFF
        if bf.size != h.total_sectors:
            return f"size {bf.size} is not the disk's {h.total_sectors} sectors"
        if bf.l1_size * 8 > data_size - _DIRTY_BITMAP.size:
            return f"l1_size {bf.l1_size} runs past the feature data"
        # qemu asserts on a granularity that is not a power of two: qemu-img would abort.
        if granularity < SECTOR_SIZE or granularity & (granularity - 1):
            return f"granularity {bf.granularity} sectors is not a power of two"
        bits = -(-h.total_sectors * SECTOR_SIZE // granularity)
        serialized = -(-bits // 64) * 8
        expected = -(-serialized // h.cluster_size)
        if bf.l1_size != expected:
            return f"l1_size {bf.l1_size} should be {expected} for this disk and granularity"
        return ""

    @staticmethod
    def _bitmap_findings(bitmaps: list[dict[str, Any]], start: int) -> list[Finding]:
        if not bitmaps:
            return []
        return [
            info(
                Code.NOTE,
                f"ploop: {len(bitmaps)} dirty bitmap(s) in the Format Extension at {start:#x};"
                " qemu loads them read-only and does not change the disk data",
                start,
            )
        ]

    @classmethod
    def _refused(cls, message: str, offset: int) -> Finding:
        return unsafe(
            Code.INVALID_HEADER,
            f"ploop: {message} (at {offset:#x}); qemu refuses the image",
            offset,
        )

    @staticmethod
    def _details(h: ParallelsHeader, bitmaps: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "magic": h.magic.decode("ascii", errors="replace"),
            "version": h.version,
            "heads": h.heads,
            "cylinders": h.cylinders,
            "tracks": h.tracks,
            "cluster_size": h.cluster_size,
            "bat_entries": h.bat_entries,
            "nb_sectors": h.nb_sectors,
            "inuse": h.inuse,
            "dirty": h.inuse == HEADER_INUSE_MAGIC,
            "data_off": h.data_off,
            "flags": h.flags,
            "ext_off": h.ext_off,
            "dirty_bitmaps": bitmaps,
        }

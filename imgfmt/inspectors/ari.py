"""Initramfs images (Glance's ``ari``): cpio archives, plain or compressed, concatenated.

References:

- Linux ``Documentation/driver-api/early-userspace/buffer-format.rst``: the initramfs is a
  series of cpio archives in the ``newc`` (``070701``) or ``crc`` (``070702``) format, each
  ended by ``TRAILER!!!`` and padded with NUL bytes, each possibly compressed. Linux
  ``init/initramfs.c`` for what the kernel rejects (name length, the NUL ending a name, the
  ``crc`` format's data checksum) and ``lib/decompress.c`` for the compressions it knows.
- ``Documentation/arch/x86/microcode.rst``: the early microcode archive, an uncompressed cpio
  placed before the compressed one.
- The LZ4 block and frame format descriptions (lz4 project, ``doc/lz4_Block_format.md`` and
  ``doc/lz4_Frame_format.md``); the legacy frame is what ``lz4 -l`` writes and Linux reads.
- qemu ``block/raw-format.c``: qemu has no initramfs driver and reads one as raw, so the
  virtual size is raw's (``base.qemu_raw_size``).

Detection: a file is an initramfs when it starts with a cpio header, or with a compressed
stream (gzip, xz, lzma, bzip2, zstd, legacy lz4, lz4 frame) whose decompressed start is a
cpio header. A compressed file of anything else is not. Decompression is bounded: at most
``MAX_INPUT`` compressed bytes are read and ``MAX_OUTPUT`` bytes produced, so only the start
of a compressed archive is examined (``complete`` is false in the details). A bzip2 stream
whose first block is larger than ``MAX_INPUT`` cannot be recognised and is treated as raw;
lzo is recognised only after an uncompressed archive and its content is not examined.

Severity rule: qemu reads an initramfs as raw, so nothing here can make qemu read outside the
file. A finding is UNSAFE when the file is not the archive its signature claims (header fields
that are not hex, names the kernel refuses, data past the end, corrupt compressed data): such a
file should not be stored as ``ari``.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from typing import IO, Any, NamedTuple, Protocol, cast

import zstandard

from ..errors import FormatError
from ..report import Code, Finding, info, unsafe, warning
from ..source import Source
from .base import Inspection, Inspector, align4, cstring, probe_bytes, qemu_raw_size

Reader = Callable[[int, int], bytes]

#: Compressed bytes read per decompression attempt, and the chunk they are read in.
MAX_INPUT = 512 * 1024
INPUT_CHUNK = 32 * 1024
#: Decompressed bytes produced (and examined) per compressed segment.
MAX_OUTPUT = 64 * 1024
#: Memory the xz/lzma decoder may use (xz -9 needs 65 MiB), and zstd's largest window.
MAX_LZMA_MEMORY = 256 * 1024 * 1024
MAX_ZSTD_WINDOW = 1 << 27
#: cpio entries walked in all, names kept per segment, segments followed.
MAX_ENTRIES = 256
MAX_NAMES = 16
MAX_SEGMENTS = 4
#: Bytes of cpio headers and names read from the file itself while walking.
MAX_WALK_BYTES = 256 * 1024
#: NUL padding skipped between archives, and the chunk it is scanned in.
MAX_PADDING = 64 * 1024
PADDING_CHUNK = 4096
#: Data checksummed for ``crc`` archives: per entry and in all.
MAX_CHECKSUM_ENTRY = 64 * 1024
MAX_CHECKSUM_TOTAL = 256 * 1024
#: Linux's PATH_MAX, the longest name init/initramfs.c accepts.
PATH_MAX = 4096
#: Most LZ4 blocks decoded per stream.
MAX_LZ4_BLOCKS = 4096

NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"
CPIO_FORMATS = {NEWC_MAGIC: "newc", CRC_MAGIC: "crc"}
TRAILER = "TRAILER!!!"
CPIO_HEADER = struct.Struct("6s" + "8s" * 13)
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class CpioHeader(NamedTuple):
    """A ``newc``/``crc`` header: the magic and thirteen 8-digit hex fields."""

    magic: bytes
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    filesize: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    namesize: int
    check: int

    @classmethod
    def from_bytes(cls, data: bytes) -> CpioHeader:
        """Parse 110 bytes; a field that is not 8 hex digits raises ``FormatError``."""
        magic, *fields = CPIO_HEADER.unpack(data)
        if magic not in CPIO_FORMATS:
            raise FormatError("ari", f"cpio magic {magic!r} is neither 070701 nor 070702")
        values = []
        for name, raw in zip(CPIO_FIELD_NAMES, fields, strict=True):
            if not HEX_DIGITS.issuperset(raw):
                text = raw.decode("ascii", errors="replace")
                raise FormatError("ari", f"cpio field {name} {text!r} is not 8 hex digits")
            values.append(int(raw, 16))
        return cls(magic, *values)


CPIO_FIELD_NAMES = CpioHeader._fields[1:]


# ---------------------------------------------------------------------------------------------
# Bounded decompression of the start of a stream.


class Head(NamedTuple):
    """The start of a decompressed stream.

    ``ended``: the stream's end was reached, so ``data`` is all of it. ``truncated``: the file
    ended before the stream did. ``error``: the decoder's complaint about corrupt data.
    """

    data: bytes
    ended: bool = False
    truncated: bool = False
    error: str | None = None


class _Decoder(Protocol):
    """The part of the stdlib decompressor objects the feeding loop uses."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


class _GzipDecoder:
    """``zlib``'s gzip decoder with the ``needs_input`` interface of ``lzma`` and ``bz2``."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def needs_input(self) -> bool:
        return not self._inflate.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        return self._inflate.decompress(self._inflate.unconsumed_tail + data, max_length)


def _stdlib_head(decoder: _Decoder, read: Reader, offset: int, want: int) -> Head:
    """Feed ``decoder`` chunk by chunk until ``want`` bytes come out or the input runs out."""
    out = bytearray()
    fed = 0
    file_ended = False
    try:
        for _ in range(2 * MAX_INPUT // INPUT_CHUNK + 16):
            if len(out) >= want or decoder.eof:
                break
            chunk = b""
            if decoder.needs_input:
                if file_ended or fed >= MAX_INPUT:
                    break
                chunk = read(offset + fed, INPUT_CHUNK)
                fed += len(chunk)
                file_ended = len(chunk) < INPUT_CHUNK
            out += decoder.decompress(chunk, want - len(out))
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        return Head(bytes(out), error=str(exc))
    starved = file_ended and decoder.needs_input and len(out) < want
    return Head(bytes(out), ended=decoder.eof, truncated=starved and not decoder.eof)


class _Feeder:
    """A file-like view of the compressed input for zstandard, keeping what it handed out."""

    def __init__(self, read: Reader, offset: int) -> None:
        self._read = read
        self._offset = offset
        self.data = bytearray()
        self.file_ended = False

    def read(self, size: int = -1) -> bytes:
        size = min(size if size >= 0 else INPUT_CHUNK, MAX_INPUT - len(self.data))
        chunk = self._read(self._offset + len(self.data), size) if size > 0 else b""
        self.file_ended |= len(chunk) < size
        self.data += chunk
        return chunk


def _zstd_head(read: Reader, offset: int, want: int) -> Head:
    feeder = _Feeder(read, offset)
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    try:
        # zstandard calls nothing but read() on its source.
        with dctx.stream_reader(
            cast(IO[bytes], feeder), read_size=INPUT_CHUNK, read_across_frames=False, closefd=False
        ) as reader:
            data = reader.read(want)
        if len(data) >= want:
            return Head(data)
        if not feeder.file_ended and len(feeder.data) < MAX_INPUT:
            return Head(data, ended=True)
        if not feeder.file_ended:
            return Head(data)
        # All the input is held and decodes to less than ``want``: decode it again in one go
        # (bounded by the same ``want``) to learn whether the frame was complete.
        whole = dctx.decompressobj(read_across_frames=False)
        whole.decompress(bytes(feeder.data))
        return Head(data, ended=whole.eof, truncated=not whole.eof)
    except zstandard.ZstdError as exc:
        return Head(b"", error=str(exc))


# ---------------------------------------------------------------------------------------------
# LZ4: no decoder in the standard library, and the ``lz4`` package can only decode whole
# blocks (up to 8 MiB in the legacy format), so the start of a block is decoded here.

LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
LZ4_LEGACY_BLOCK = 8 * 1024 * 1024
#: LZ4_compressBound of the legacy block size: the largest compressed legacy block.
LZ4_LEGACY_MAX_COMPRESSED = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16
LZ4_FRAME_FLG_BD = struct.Struct("<BB")
LZ4_BLOCK_SIZES = {4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024}
LZ4_UNCOMPRESSED = 0x80000000
LZ4_MIN_MATCH = 4


class _Corrupt(Exception):
    """Compressed data the decoder cannot make sense of."""


class Lz4Frame(NamedTuple):
    """The parts of an LZ4 frame descriptor that decide how blocks are laid out."""

    header_size: int
    block_checksum: bool
    block_max: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Lz4Frame:
        flg, bd = LZ4_FRAME_FLG_BD.unpack_from(data, 4)
        block_max = LZ4_BLOCK_SIZES.get(bd >> 4 & 7)
        if flg >> 6 != 1 or flg & 0x02 or bd & 0x8F or block_max is None:
            raise _Corrupt(f"LZ4 frame descriptor FLG {flg:#04x} BD {bd:#04x} is not version 01")
        size = 4 + 2 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
        return cls(size, bool(flg & 0x10), block_max)


def _lz4_block(src: bytes, out: bytearray, want: int) -> None:
    """Decode LZ4 sequences from ``src`` onto ``out`` until ``src`` or ``want`` runs out."""
    pos, end = 0, len(src)
    while pos < end and len(out) < want:
        token = src[pos]
        literals, pos = token >> 4, pos + 1
        if literals == 15:
            literals, pos = _lz4_length(src, pos, literals)
        out += src[pos : pos + literals]
        pos += literals
        if pos + 2 > end or len(out) >= want:
            return
        distance, length, pos = src[pos] | src[pos + 1] << 8, token & 0x0F, pos + 2
        if length == 15:
            length, pos = _lz4_length(src, pos, length)
        if distance == 0 or distance > len(out):
            raise _Corrupt(f"LZ4 match distance {distance} reaches before the data")
        length = min(length + LZ4_MIN_MATCH, want - len(out))
        start = len(out) - distance
        if length <= distance:
            out += out[start : start + length]
        else:  # the match overlaps what it produces: the window repeats
            out += (out[start:] * (length // distance + 1))[:length]


def _lz4_length(src: bytes, pos: int, nibble: int) -> tuple[int, int]:
    """A sequence length: the nibble, extended by bytes while they are 255."""
    length = nibble
    if nibble == 15:
        while pos < len(src):
            length += src[pos]
            pos += 1
            if src[pos - 1] != 255:
                break
    return length, pos


def _lz4_head(read: Reader, offset: int, want: int) -> Head:
    magic = read(offset, 4)
    frame = None
    pos = offset + 4
    try:
        if magic == LZ4_FRAME_MAGIC:
            frame = Lz4Frame.from_bytes(read(offset, 7).ljust(7, b"\0"))
            pos = offset + frame.header_size
        return _lz4_blocks(read, pos, offset + MAX_INPUT, want, frame)
    except _Corrupt as exc:
        return Head(b"", error=str(exc))


def _lz4_blocks(read: Reader, pos: int, limit: int, want: int, frame: Lz4Frame | None) -> Head:
    out = bytearray()
    for _ in range(MAX_LZ4_BLOCKS):
        if len(out) >= want or pos + 4 > limit:
            return Head(bytes(out))
        word = read(pos, 4)
        if len(word) < 4:
            # The legacy format has no end mark: the end of the file ends it.
            return Head(bytes(out), ended=frame is None and not word, truncated=bool(word))
        size = int.from_bytes(word, "little")
        if frame is not None and size == 0:
            return Head(bytes(out), ended=True)
        stored = frame is not None and bool(size & LZ4_UNCOMPRESSED)
        size &= ~LZ4_UNCOMPRESSED if frame is not None else ~0
        if size > (frame.block_max if frame else LZ4_LEGACY_MAX_COMPRESSED):
            raise _Corrupt(f"LZ4 block size {size} at {pos:#x} exceeds the format's maximum")
        needed = min(size, limit - pos - 4, (want - len(out)) * 2 + 1024)
        block = read(pos + 4, needed)
        if stored:
            out += block[: want - len(out)]
        else:
            _lz4_block(block, out, want)
        if len(block) < needed:
            return Head(bytes(out), truncated=True)
        if needed < size:
            return Head(bytes(out))
        pos += 4 + size + (4 if frame is not None and frame.block_checksum else 0)
    return Head(bytes(out))


# ---------------------------------------------------------------------------------------------
# The compressions Linux's initramfs unpacker knows (lib/decompress.c), by magic number.

HeadFunction = Callable[[Reader, int, int], Head]


def _gzip_head(read: Reader, offset: int, want: int) -> Head:
    return _stdlib_head(_GzipDecoder(), read, offset, want)


def _xz_head(read: Reader, offset: int, want: int) -> Head:
    decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=MAX_LZMA_MEMORY)
    return _stdlib_head(decoder, read, offset, want)


def _lzma_head(read: Reader, offset: int, want: int) -> Head:
    decoder = lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=MAX_LZMA_MEMORY)
    return _stdlib_head(decoder, read, offset, want)


def _bzip2_head(read: Reader, offset: int, want: int) -> Head:
    return _stdlib_head(bz2.BZ2Decompressor(), read, offset, want)


class Compression(NamedTuple):
    name: str
    magic: bytes
    head: HeadFunction | None


COMPRESSIONS = (
    Compression("gzip", b"\x1f\x8b\x08", _gzip_head),
    Compression("xz", b"\xfd7zXZ\x00", _xz_head),
    Compression("zstd", b"\x28\xb5\x2f\xfd", _zstd_head),
    Compression("lz4", LZ4_LEGACY_MAGIC, _lz4_head),
    Compression("lz4-frame", LZ4_FRAME_MAGIC, _lz4_head),
    Compression("bzip2", b"BZh", _bzip2_head),
    # lzma "alone" has no magic; lib/decompress.c takes properties byte 0x5d and a dictionary
    # size whose low byte is 0.
    Compression("lzma", b"\x5d\x00\x00", _lzma_head),
    Compression("lzo", b"\x89LZO\x00", None),
)


def _compression_at(read: Reader, offset: int) -> Compression | None:
    head = read(offset, 6)
    return next((c for c in COMPRESSIONS if head.startswith(c.magic)), None)


# ---------------------------------------------------------------------------------------------
# Walking cpio archives.


class View:
    """Bytes holding cpio archives: the file itself, or the decompressed start of a stream.

    ``end`` is where the data is known to end (``None`` when it goes on past what is held).
    ``origin`` names the place for messages; ``offset`` is the file offset findings carry.
    ``spent`` counts the bytes fetched so far.
    """

    __slots__ = ("end", "offset", "origin", "read", "spent")

    def __init__(self, read: Reader, end: int | None, origin: str, offset: int | None = None):
        self.read = read
        self.end = end
        self.origin = origin
        self.offset = offset
        self.spent = 0

    def fetch(self, pos: int, length: int) -> bytes:
        data = self.read(pos, length)
        self.spent += len(data)
        return data

    def where(self, pos: int) -> str:
        return f"{pos:#x}{self.origin}"

    def at(self, pos: int) -> int:
        return pos if self.offset is None else self.offset


class Segment:
    """One top-level piece of the initramfs: an uncompressed archive or a compressed stream."""

    __slots__ = ("complete", "compression", "entries", "format", "names", "offset")

    def __init__(self, offset: int, compression: str) -> None:
        self.offset = offset
        self.compression = compression
        self.format: str | None = None
        self.entries = 0
        self.names: list[str] = []
        self.complete = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "compression": self.compression,
            "format": self.format,
            "entries": self.entries,
            "names": self.names,
            "complete": self.complete,
        }


class Walk:
    """What walking the whole file found."""

    __slots__ = ("checksummed", "complete", "entries", "findings", "segments")

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.findings: list[Finding] = []
        self.entries = 0
        self.checksummed = 0
        self.complete = False


def _walk_archive(view: View, pos: int, seg: Segment, walk: Walk) -> int | None:
    """Walk one archive from its first header; the offset after its trailer, or ``None``."""
    for _ in range(MAX_ENTRIES):
        if walk.entries >= MAX_ENTRIES or view.spent > MAX_WALK_BYTES:
            return None
        step = _entry(view, pos, seg, walk)
        if step is None:
            return None
        pos, is_trailer = step
        if is_trailer:
            return pos
    return None


def _entry(view: View, pos: int, seg: Segment, walk: Walk) -> tuple[int, bool] | None:
    """One cpio entry at ``pos``: the offset of the next one and whether this was the trailer."""
    raw = view.fetch(pos, CPIO_HEADER.size)
    if len(raw) < CPIO_HEADER.size:
        _cut_short(view, pos, "cpio header", walk)
        return None
    try:
        header = CpioHeader.from_bytes(raw)
    except FormatError as exc:
        walk.findings.append(_bad(view, pos, f"{exc.detail} in the cpio header"))
        return None
    seg.format = seg.format or CPIO_FORMATS[header.magic]
    name = _entry_name(view, pos, header, walk)
    if name is None:
        return None
    data_pos = align4(pos + CPIO_HEADER.size + header.namesize)
    next_pos = align4(data_pos + header.filesize)
    if view.end is not None and data_pos + header.filesize > view.end:
        _cut_short(view, data_pos, f"data of {name!r}", walk)
        return None
    if name == TRAILER:
        return next_pos, True
    walk.entries += 1
    seg.entries += 1
    if len(seg.names) < MAX_NAMES:
        seg.names.append(name)
    if header.magic == CRC_MAGIC:
        _check_crc(view, data_pos, header, name, walk)
    return next_pos, False


def _entry_name(view: View, pos: int, header: CpioHeader, walk: Walk) -> str | None:
    if not 1 <= header.namesize <= PATH_MAX:
        walk.findings.append(
            _bad(view, pos, f"cpio namesize {header.namesize} is outside 1..{PATH_MAX}")
        )
        return None
    raw = view.fetch(pos + CPIO_HEADER.size, header.namesize)
    if len(raw) < header.namesize:
        _cut_short(view, pos + CPIO_HEADER.size, "cpio name", walk)
        return None
    if raw[-1] != 0:
        walk.findings.append(
            _bad(view, pos, f"cpio name of {header.namesize} bytes is not NUL-terminated")
        )
        return None
    # Linux takes the name as a C string: it ends at the first NUL.
    return cstring(raw)


def _check_crc(view: View, data_pos: int, header: CpioHeader, name: str, walk: Walk) -> None:
    """The crc format's check field: the sum of the data bytes, which Linux verifies."""
    size = header.filesize
    if size > MAX_CHECKSUM_ENTRY or walk.checksummed + size > MAX_CHECKSUM_TOTAL:
        return
    data = view.fetch(data_pos, size)
    if len(data) < size:
        return
    walk.checksummed += size
    if sum(data) & 0xFFFFFFFF != header.check:
        walk.findings.append(
            unsafe(
                Code.CHECKSUM_MISMATCH,
                f"ari: the data of {name!r} at {view.where(data_pos)} sums to "
                f"{sum(data) & 0xFFFFFFFF:#010x}, its crc header says {header.check:#010x}; "
                "Linux refuses the archive",
                view.at(data_pos),
            )
        )


def _cut_short(view: View, pos: int, what: str, walk: Walk) -> None:
    """Record a truncation when the data is known to end here; otherwise the head ran out."""
    if view.end is not None:
        walk.findings.append(
            unsafe(
                Code.TRUNCATED,
                f"ari: the {what} at {view.where(pos)} runs past the end of the data "
                f"({view.end:#x}); the archive is cut short, get it again",
                view.at(pos),
            )
        )


def _bad(view: View, pos: int, message: str) -> Finding:
    return unsafe(
        Code.INVALID_HEADER,
        f"ari: {message} at {view.where(pos)}; Linux would refuse this archive",
        view.at(pos),
    )


def _skip_padding(view: View, pos: int) -> int | None:
    """The first non-NUL offset at or after ``pos`` (the end when all NUL), ``None`` past cap."""
    for _ in range(MAX_PADDING // PADDING_CHUNK):
        chunk = view.fetch(pos, PADDING_CHUNK)
        stripped = chunk.lstrip(b"\0")
        if stripped or len(chunk) < PADDING_CHUNK:
            return pos + len(chunk) - len(stripped)
        pos += PADDING_CHUNK
    return None


def _walk_file(source: Source, size: int) -> Walk:
    """Follow the top-level segments: uncompressed archives, then at most one compressed one."""
    walk = Walk()
    view = View(source.read, size, "")
    pos: int | None = 0
    for _ in range(MAX_SEGMENTS):
        pos = _skip_padding(view, pos) if pos is not None else None
        if pos is None or pos >= size:
            break
        if view.fetch(pos, 6) not in CPIO_FORMATS:
            _compressed_segment(source, pos, walk)
            return walk
        seg = Segment(pos, "none")
        walk.segments.append(seg)
        pos = _walk_archive(view, pos, seg, walk)
        seg.complete = pos is not None
    walk.complete = pos is not None and pos >= size and all(s.complete for s in walk.segments)
    return walk


def _compressed_segment(source: Source, pos: int, walk: Walk) -> None:
    compression = _compression_at(source.read, pos)
    if compression is None:
        walk.findings.append(
            unsafe(
                Code.INVALID_HEADER,
                f"ari: the bytes at {pos:#x} start neither a cpio archive nor a compressed "
                "stream Linux knows; the kernel stops unpacking there",
                pos,
            )
        )
        return
    seg = Segment(pos, compression.name)
    walk.segments.append(seg)
    if compression.head is None:
        walk.findings.append(
            info(Code.NOTE, f"ari: the {compression.name} stream at {pos:#x} is not examined")
        )
        return
    if compression.name == "lz4-frame":
        walk.findings.append(_lz4_frame_warning(pos))
    head = compression.head(source.read, pos, MAX_OUTPUT)
    _walk_head(head, compression, pos, seg, walk)
    walk.complete = seg.complete


def _lz4_frame_warning(pos: int) -> Finding:
    return warning(
        Code.NOTE,
        f"ari: the stream at {pos:#x} is in the LZ4 frame format; Linux unpacks only the "
        "legacy LZ4 format (lz4 -l), so a kernel would not read this initramfs",
        pos,
    )


def _walk_head(head: Head, compression: Compression, pos: int, seg: Segment, walk: Walk) -> None:
    """Walk the archives in the decompressed start of a stream."""
    data = head.data
    origin = f" of the data decompressed from the {compression.name} stream at {pos:#x}"
    view = View(lambda o, n: data[o : o + n], len(data) if head.ended else None, origin, pos)
    _stream_defects(head, compression, pos, walk)
    inner: int | None = 0
    for _ in range(MAX_ENTRIES):
        if inner is None or inner >= len(data):
            break
        if data[inner : inner + 6] not in CPIO_FORMATS:
            walk.findings.append(_bad(view, inner, "data that is not a cpio header"))
            return
        inner = _walk_archive(view, inner, seg, walk)
        inner = _skip_padding(view, inner) if inner is not None else None
    seg.complete = head.ended and inner is not None and inner >= len(data)


def _stream_defects(head: Head, compression: Compression, pos: int, walk: Walk) -> None:
    if head.error is not None:
        walk.findings.append(
            unsafe(
                Code.CORRUPT,
                f"ari: the {compression.name} stream at {pos:#x} is corrupt after "
                f"{len(head.data)} decompressed bytes: {head.error}",
                pos,
            )
        )
    if head.truncated:
        walk.findings.append(
            unsafe(
                Code.TRUNCATED,
                f"ari: the {compression.name} stream at {pos:#x} ends with the file, before "
                f"its end mark ({len(head.data)} bytes decompressed); get the file again",
                pos,
            )
        )


class InitramfsInspector(Inspector):
    """Linux initramfs: cpio archives, plain or compressed, possibly concatenated."""

    format = "ari"

    @classmethod
    def probe(cls, source: Source) -> bool:
        def read(offset: int, length: int) -> bytes:
            return probe_bytes(source, offset, length)

        magic = read(0, 6)
        if magic in CPIO_FORMATS:
            return True
        compression = _compression_at(read, 0)
        if compression is None or compression.head is None:
            return False
        head = compression.head(read, 0, CPIO_HEADER.size)
        try:
            CpioHeader.from_bytes(head.data[: CPIO_HEADER.size])
        except (FormatError, struct.error):
            return False
        return True

    @classmethod
    def inspect(cls, source: Source) -> Inspection:
        virtual_size = qemu_raw_size(source, cls.format)
        start = source.read(0, 6)
        if start not in CPIO_FORMATS and _compression_at(source.read, 0) is None:
            raise cls.error("no cpio header at 0, plain or compressed", 0)
        walk = _walk_file(source, source.size or 0)
        details = {
            "compression": next(
                (s.compression for s in walk.segments if s.compression != "none"), "none"
            ),
            "cpio_format": walk.segments[0].format if walk.segments else None,
            "entries": walk.entries,
            "complete": walk.complete,
            "segments": [seg.to_dict() for seg in walk.segments],
        }
        return Inspection(cls.format, virtual_size, details, tuple(walk.findings))

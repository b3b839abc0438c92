"""Compressed images: gzip, xz, zstd and bzip2 streams around a disk image.

References: RFC 1952 (gzip member header, magic 1f 8b), the .xz File Format 1.2.1 section 2.1.1
(stream header magic fd 37 7a 58 5a 00), RFC 8878 section 3.1.1 (zstd frame magic
0xFD2FB528, little-endian), and the bzip2 stream header ("BZh", a block size digit 1-9, then
the block magic 0x314159265359 or the end-of-stream magic 0x177245385090).

The stream is decompressed once, in chunks, up to ``DECOMPRESSION_CAP`` bytes of output,
keeping the first ``STREAM_HEAD_WINDOW`` and the last ``STREAM_TAIL_WINDOW`` bytes: the disk
inside is then inspected as a stream would be (``StreamSource``), so its format and any
virtual size its header declares are known, and a check needing bytes from the middle is a
``stream-unverifiable`` finding. Output past the cap stops decompression with a
``decompression-limit`` finding (a bomb, or an image too large to verify here); memory stays
within the two windows and one chunk whatever the stream holds, plus the decoder's own state:
xz allocates the dictionary its block header names (up to 4 GiB), so an xz stream whose
decoder would need more than ``MAX_XZ_MEMORY`` is refused.

``decompress`` is the one streaming decompressor: inspection drains it into the two windows,
and ``imgfmt convert`` writes it to a scratch file.

A compressed cpio archive is an initramfs, not a compressed container: detection lets a disk
inspector that claims compressed content (ari) win.
"""

from __future__ import annotations

import _compression
import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import BinaryIO, cast

from ..errors import FormatError, TruncatedError
from ..report import Code, Finding, unsafe
from ..source import STREAM_HEAD_WINDOW, STREAM_TAIL_WINDOW, Source, StreamSource
from .base import Container, ContainerInspection, InspectMember, Reader

FORMAT = "compressed"
#: Decompressed bytes read at most from one stream, and from all the streams of one archive
#: (the disks of an OVA share it); past it the rest is unverified. Inflating zeros runs at
#: about 120 MB/s on a small VM, so this bounds a bomb to a few seconds.
DECOMPRESSION_CAP = 256 * 1024 * 1024
#: Decompressed bytes asked for per read: the memory one step may take.
CHUNK = 1024 * 1024
#: Compressed bytes read at most beyond the decompressed bytes produced (``open_decompressed``).
MAX_INPUT_AHEAD = 4 * 1024 * 1024
#: Memory the xz decoder may allocate, most of it the dictionary: xz -9 and -9e need 65 MiB.
MAX_XZ_MEMORY = 256 * 1024 * 1024
_BZIP2_BLOCK = (bytes.fromhex("314159265359"), bytes.fromhex("177245385090"))
_MAGIC = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def compression(head: bytes) -> str | None:
    """The compression whose stream header starts ``head``, or ``None``."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in _BZIP2_BLOCK:
        return "bzip2"
    return None


class SourceStream(io.RawIOBase):
    """A byte range of a source as a sequential stream; ``watch`` sees every chunk read."""

    def __init__(
        self,
        source: Source,
        start: int = 0,
        length: int | None = None,
        watch: Callable[[bytes], object] | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._position = start
        self._end = start + length if length is not None else source.size
        self._watch = watch

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = len(buffer)
        if self._end is not None:
            wanted = min(wanted, self._end - self._position)
        data = self._source.read(self._position, max(wanted, 0)) if wanted > 0 else b""
        buffer[: len(data)] = data
        self._position += len(data)
        if self._watch is not None and data:
            self._watch(data)
        return len(data)


def open_decompressed(kind: str, raw: BinaryIO) -> Reader:
    """A reader of the decompressed bytes of ``raw``, all concatenated streams included.

    It raises ``FormatError`` once the compressed bytes read run ``MAX_INPUT_AHEAD`` ahead of
    the output. Real streams yield output as they go: stored blocks and headers add well under
    1%, and a bzip2 block is under 1 MiB. Thousands of empty gzip members, or a gzip file name
    that never ends, yield nothing and cost the gzip reader Python work per member or per
    byte: a gigabyte of them took minutes.
    """
    return _Paced(kind, raw)


def _decoder(kind: str, raw: BinaryIO) -> Reader:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "xz":
        # lzma.LZMAFile takes no memory limit; this is its reader of concatenated streams,
        # given one.
        decoder = _compression.DecompressReader(
            raw,
            lzma.LZMADecompressor,
            trailing_error=lzma.LZMAError,
            format=lzma.FORMAT_XZ,
            memlimit=MAX_XZ_MEMORY,
        )
        return io.BufferedReader(decoder, CHUNK)
    if kind == "bzip2":
        return bz2.BZ2File(raw, "rb")
    if kind == "zstd":
        return _ZstdReader(raw)
    raise ValueError(f"unknown compression {kind}")


class _Pace:
    """The compressed bytes a decoder read and the bytes it produced."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.consumed = 0
        self.produced = 0


class _Paced:
    """The decoder's output, counted against the compressed bytes it read (``_Metered``)."""

    def __init__(self, kind: str, raw: BinaryIO) -> None:
        # The counts live apart, not on this reader: a decoder that refers back to its reader
        # closes a cycle through zstandard's reader, which the garbage collector cannot see,
        # and each zstd stream leaked its decoder (95 KB).
        self.pace = _Pace(kind)
        self._stream = _decoder(kind, cast(BinaryIO, _Metered(raw, self.pace)))

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.pace.produced += len(data)
        return data

    def close(self) -> None:
        self._stream.close()


class _Metered:
    """The compressed bytes as the decoder reads them, refused past ``MAX_INPUT_AHEAD``."""

    def __init__(self, raw: BinaryIO, pace: _Pace) -> None:
        self._raw = raw
        self._pace = pace

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        pace = self._pace
        pace.consumed += len(data)
        if pace.consumed - pace.produced > MAX_INPUT_AHEAD:
            raise FormatError(
                FORMAT,
                f"{pace.consumed} bytes of the {pace.kind} stream decompress to only "
                f"{pace.produced}: empty members, padding or a header that never ends",
                offset=pace.consumed,
            )
        return data

    def close(self) -> None:
        self._raw.close()


class _ZstdReader:
    """zstandard's stream reader, which returns what it decoded whether the input ends between
    frames or inside one, made to raise ``EOFError`` in the second case, as gzip, lzma and
    bz2 readers do."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._frames = _ZstdFrames(raw)
        # zstandard reads any object with read(); its stubs ask for a file.
        frames = cast(BinaryIO, self._frames)
        decompressor = zstandard.ZstdDecompressor()
        self._stream: Reader = decompressor.stream_reader(frames, read_across_frames=True)

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        if not data and size != 0 and not self._frames.ended:
            raise EOFError("the zstd stream ends inside a frame")
        return data

    def close(self) -> None:
        self._stream.close()


#: States of the zstd frame walk, and the header bytes each one reads.
_Z_MAGIC, _Z_SKIPPABLE, _Z_DESCRIPTOR, _Z_BLOCK, _Z_FOREIGN = range(5)
_HEADER_BYTES = (4, 4, 1, 3, 0)


class _ZstdFrames:
    """The compressed bytes as zstandard reads them, walked frame by frame (RFC 8878 3.1.1:
    magic, frame header descriptor, header fields, block headers with their sizes, checksum;
    3.1.2: skippable frames) without decoding, to know whether the input ended between frames.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._state = _Z_MAGIC
        self._held = bytearray()  # a header read in part
        self._skip = 0  # bytes to pass before the next header
        self._checksum = 0  # checksum bytes after the current frame's last block

    @property
    def ended(self) -> bool:
        """True when the bytes read so far end between two frames (or are no zstd frame)."""
        at_magic = self._state == _Z_MAGIC and not self._held and not self._skip
        return at_magic or self._state == _Z_FOREIGN

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        position, end = 0, len(data)
        while position < end and self._state != _Z_FOREIGN:
            if self._skip:
                step = min(self._skip, end - position)
                self._skip -= step
                position += step
            elif self._state == _Z_BLOCK and not self._held and position + 3 <= end:
                # The common case, kept short: a whole block header in this read.
                header = data[position] | data[position + 1] << 8 | data[position + 2] << 16
                position += 3
                self._block(header)
            else:
                need = _HEADER_BYTES[self._state]
                take = min(need - len(self._held), end - position)
                self._held += data[position : position + take]
                position += take
                if len(self._held) == need:
                    value = int.from_bytes(self._held, "little")
                    self._held.clear()
                    self._header(value)
        return data

    def _block(self, header: int) -> None:
        self._skip = 1 if header >> 1 & 3 == 1 else header >> 3  # an RLE block holds one byte
        if header & 1:
            self._skip += self._checksum
            self._state = _Z_MAGIC

    def _header(self, value: int) -> None:
        if self._state == _Z_BLOCK:
            self._block(value)
        elif self._state == _Z_SKIPPABLE:
            self._skip, self._state = value, _Z_MAGIC
        elif self._state == _Z_DESCRIPTOR:
            single = value >> 5 & 1
            self._skip = (1 - single) + (0, 1, 2, 4)[value & 3] + (single, 2, 4, 8)[value >> 6]
            self._checksum = 4 * (value >> 2 & 1)
            self._state = _Z_BLOCK
        elif value & 0xFFFFFFF0 == 0x184D2A50:
            self._state = _Z_SKIPPABLE
        elif value == 0xFD2FB528:
            self._state = _Z_DESCRIPTOR
        else:
            # Not a zstd frame: the decoder reports that itself.
            self._state = _Z_FOREIGN

    def close(self) -> None:
        self._raw.close()


class DecompressionLimit(FormatError):
    """A stream decompressed to more bytes than the reader allowed."""

    def __init__(self, kind: str, cap: int) -> None:
        self.cap = cap
        super().__init__(FORMAT, f"the {kind} stream decompresses to more than {cap} bytes")


def decompress(source: Source, cap: int) -> Iterator[bytes]:
    """The decompressed bytes of ``source``, in chunks of at most ``CHUNK`` bytes.

    Raises ``DecompressionLimit`` before yielding more than ``cap`` bytes in all, and a
    ``FormatError`` for a stream that is damaged, cut short or of no known compression.
    """
    kind = _kind(source)
    raw = io.BufferedReader(SourceStream(source), CHUNK)
    with closing(open_decompressed(kind, raw)) as stream:
        size = 0
        # At the cap, one byte more tells a stream that ends there from one that goes on.
        while chunk := read_chunk(stream, min(CHUNK, cap - size) or 1, FORMAT, size):
            size += len(chunk)
            if size > cap:
                raise DecompressionLimit(kind, cap)
            yield chunk


def _kind(source: Source) -> str:
    kind = compression(source.read(0, 16))
    if kind is None:
        raise FormatError(FORMAT, "no gzip, xz, zstd or bzip2 header at offset 0", offset=0)
    return kind


def read_chunk(stream: Reader, length: int, fmt: str, position: int) -> bytes:
    """Up to ``length`` decompressed bytes; a damaged or cut stream is a ``FormatError``."""
    import zstandard

    try:
        return stream.read(length)
    except EOFError as exc:
        raise TruncatedError(
            fmt, f"compressed data ends early, after {position} decompressed bytes: {exc}"
        ) from None
    except (OSError, lzma.LZMAError, zlib.error, zstandard.ZstdError, ValueError) as exc:
        raise FormatError(
            fmt, f"compressed data is damaged after {position} decompressed bytes: {exc}"
        ) from None


class CompressedContainer(Container):
    """A disk image inside one gzip, xz, zstd or bzip2 stream."""

    format = FORMAT

    @classmethod
    def probe(cls, source: Source) -> bool:
        from ..inspectors.base import probe_bytes

        return compression(probe_bytes(source, 0, 16)) is not None

    @classmethod
    def inspect(cls, source: Source, inspect_member: InspectMember) -> ContainerInspection:
        return inspect_compressed(source, inspect_member)


def inspect_compressed(
    source: Source, inspect_member: InspectMember, cap: int = DECOMPRESSION_CAP
) -> ContainerInspection:
    """Decompress up to ``cap`` bytes and inspect the disk inside as a stream.

    The cap is shared: what the streams of the same archive (``source.decompressed``) have
    already produced is taken off it, so an OVA of many small bombs costs one cap in all.
    """
    kind = _kind(source)
    left = max(0, cap - source.decompressed.count)
    head, tail, size, capped = _drain(source, left)
    source.decompressed.count += size
    inner = inspect_member(StreamSource(head, tail, size, f"{source.name} (decompressed)", source))
    details = {
        "compression": kind,
        "compressed_size": source.size,
        "uncompressed_size": None if capped else size,
        "inner_format": inner.disk_format,
    }
    virtual_size = inner.virtual_size
    findings: list[Finding] = []
    if capped:
        findings.append(_limit_finding(kind, cap, left, source.size))
        if inner.disk_format == "raw":
            virtual_size = None
    if virtual_size is None:
        details["virtual_size_note"] = "the inner virtual size cannot be verified"
    return ContainerInspection(
        FORMAT, inner.disk_format, virtual_size, details, tuple(findings), (inner,)
    )


def _drain(source: Source, cap: int) -> tuple[bytes, bytes, int, bool]:
    head = bytearray()
    tail = b""
    size = 0
    try:
        for chunk in decompress(source, cap):
            size += len(chunk)
            room = STREAM_HEAD_WINDOW - len(head)
            if room > 0:
                head += chunk[:room]
                chunk = chunk[room:]
            tail = (tail + chunk)[-STREAM_TAIL_WINDOW:] if chunk else tail
    except DecompressionLimit:
        # Past the cap the kept tail is not the stream's end: serve no read beyond the head.
        return bytes(head), b"", size + 1, True
    return bytes(head), tail, size, False


def _limit_finding(kind: str, cap: int, left: int, compressed: int | None) -> Finding:
    ratio = f" from {compressed} compressed bytes" if compressed else ""
    shared = "" if left == cap else f" (what its archive's other streams left of {cap})"
    return unsafe(
        Code.DECOMPRESSION_LIMIT,
        f"{FORMAT}: the {kind} stream decompresses to more than {left} bytes{shared}{ratio}: "
        "a compression bomb or an image too large to verify here; decompress it and inspect "
        "the result",
    )

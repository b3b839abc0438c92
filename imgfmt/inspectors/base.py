"""The contract every disk-format inspector fulfils.

An inspector is a class with two class methods:

- ``probe(source)``: cheap magic check, a few small reads, no exceptions for short files.
- ``inspect(source)``: parse and check everything qemu-img 7.2 would honour for this format,
  returning an ``Inspection``. Structural defects that stop parsing raise ``FormatError``
  (``TruncatedError`` for short data); everything else that is wrong is a finding.

Inspectors never read a whole image: each read is bounded by a named cap in the module.

Parsed records (headers, table entries, an ``Inspection``) are ``NamedTuple`` classes: as
immutable as frozen dataclasses, and defined about five times faster, which every
``imgfmt inspect`` pays for each inspector module it loads (0.6 ms a dataclass here). The
public report types in ``imgfmt.report`` and ``imgfmt.policy`` stay dataclasses.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from ..errors import FormatError, TruncatedError
from ..report import Code, Finding, info
from ..source import Source


class Inspection(NamedTuple):
    """What one inspector learned: the virtual size, format details and findings."""

    format: str
    virtual_size: int
    details: Mapping[str, Any] = {}
    findings: tuple[Finding, ...] = ()


#: Why a capped table is enough where qemu does not check the entries either.
UNCHECKED_READ_AS_ZEROS = (
    "an unchecked entry can at worst point past the end of the file, which qemu reads as zeros"
)
#: Why a capped table is noted where qemu checks every entry on open.
UNCHECKED_REFUSED = "qemu checks all of them on open and refuses a block past the end"


class Inspector(ABC):
    """Base class of the disk-format inspectors; see the module docstring."""

    #: Glance's name of the disk format.
    format: ClassVar[str]

    @classmethod
    @abstractmethod
    def probe(cls, source: Source) -> bool:
        """True when the source carries this format's signature."""

    @classmethod
    @abstractmethod
    def inspect(cls, source: Source) -> Inspection:
        """Parse and check the image; see the module docstring."""

    @classmethod
    def read(cls, source: Source, offset: int, length: int, what: str) -> bytes:
        """Exactly ``length`` bytes at ``offset`` or a ``TruncatedError`` naming ``what``."""
        data = source.read(offset, length)
        if len(data) != length:
            raise TruncatedError(
                cls.format,
                f"{what} at {offset:#x} needs {length} bytes, file has {len(data)} there",
                offset=offset,
                field=what,
            )
        return data

    @classmethod
    def unpack(
        cls, layout: struct.Struct, source: Source, offset: int, what: str
    ) -> tuple[Any, ...]:
        """Read and unpack one fixed-size record."""
        return layout.unpack(cls.read(source, offset, layout.size, what))

    @classmethod
    def unchecked(cls, count: int, total: int, what: str, why: str, offset: int) -> Finding:
        """The note that a table was checked only up to its cap: ``count`` of ``total``."""
        return info(
            Code.NOTE,
            f"{cls.format}: only the first {count} of {total} {what} were checked; {why}",
            offset,
        )

    @classmethod
    def error(
        cls, message: str, offset: int | None = None, field: str | None = None
    ) -> FormatError:
        """A ``FormatError`` for this format, to be raised by the caller."""
        return FormatError(cls.format, message, offset=offset, field=field)


def probe_bytes(source: Source, offset: int, length: int) -> bytes:
    """Bytes for a probe: short reads and unverifiable stream reads give ``b""``.

    An unverifiable read is noted in ``source.probe_unread``: detection turns it into a
    ``stream-unverifiable`` finding, since the probe may have missed its format there.
    """
    from ..errors import UnverifiableError

    try:
        return source.read(offset, length)
    except UnverifiableError:
        source.probe_unread.append(offset)
        return b""


def cstring(raw: bytes) -> str:
    """A C string from the image: up to the first NUL, undecodable UTF-8 replaced."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def align4(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (cpio and ELF note padding)."""
    return (n + 3) & ~3


#: qemu counts a raw image in whole sectors of this size.
BDRV_SECTOR_SIZE = 512


def qemu_raw_size(source: Source, fmt: str = "raw") -> int:
    """The virtual size qemu-img gives this source read as raw: its length in whole sectors.

    qemu-img 7.2's raw driver (block/raw-format.c over block/file-posix.c) rounds the file's
    length up to 512-byte sectors (block.c, ``bdrv_refresh_total_sectors``); iso, aki and ari
    are read as raw too.
    """
    size = source.size
    if size is None:
        raise FormatError(fmt, "the image size is unknown, so its virtual size is too")
    return -(-size // BDRV_SECTOR_SIZE) * BDRV_SECTOR_SIZE

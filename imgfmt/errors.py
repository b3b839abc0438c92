"""The one error tree of imgfmt.

Errors are split by whose fault they are: the file (``FormatError`` and its kinds), the
caller (``UsageError``), or the environment (``SourceError`` for I/O). A parser raises only
these; a ``struct.error`` or ``IndexError`` escaping an inspector is a bug.
"""

from __future__ import annotations


class ImgfmtError(Exception):
    """Root of every error imgfmt raises on purpose."""


class UsageError(ImgfmtError):
    """The caller asked for something impossible (bad flag, bad policy value)."""


class SourceError(ImgfmtError):
    """The bytes could not be read at all: missing file, permission, broken pipe."""


class FormatError(ImgfmtError):
    """The file is not a valid instance of the format it claims to be.

    Carries the format, the byte offset and the field so that the message reads like
    ``qcow2: cluster_bits 31 at 0x14 is outside 9..21``.
    """

    def __init__(
        self,
        fmt: str,
        message: str,
        *,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        self.format = fmt
        self.offset = offset
        self.field = field
        self.detail = message
        super().__init__(f"{fmt}: {message}")


class TruncatedError(FormatError):
    """A structure the format requires lies (partly) beyond the end of the file."""


class UnverifiableError(ImgfmtError):
    """A read that a stream source cannot serve: the bytes passed by and were not kept."""

    def __init__(self, offset: int, length: int) -> None:
        self.offset = offset
        self.length = length
        super().__init__(
            f"bytes {offset:#x}..{offset + length:#x} are outside the window kept from a stream"
        )

"""What an inspection says: findings, severities and the image report, with their JSON form.

The JSON form (``ImageReport.to_dict``) is a stable, documented schema (README.md, "JSON
output"); add keys, never rename or remove them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_SCHEMA_VERSION = 1


class Severity(enum.IntEnum):
    """How much a finding matters. Anything at ``UNSAFE`` makes the image unsafe."""

    INFO = 10
    WARNING = 20
    UNSAFE = 30

    def __str__(self) -> str:
        return self.name.lower()


class Code(enum.StrEnum):
    """Stable finding codes. Scripts match on these; never rename one."""

    # References to anything outside the file.
    BACKING_FILE = "backing-file"
    DATA_FILE = "data-file"
    EXTERNAL_EXTENT = "external-extent"
    # Structure.
    INVALID_HEADER = "invalid-header"
    TRUNCATED = "truncated"
    OUT_OF_BOUNDS = "out-of-bounds"
    CHECKSUM_MISMATCH = "checksum-mismatch"
    UNKNOWN_FEATURE = "unknown-feature"
    UNKNOWN_EXTENSION = "unknown-extension"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNSUPPORTED_ENCRYPTION = "unsupported-encryption"
    ENCRYPTED = "encrypted"
    DIRTY = "dirty"
    CORRUPT = "corrupt"
    # Containers.
    UNSAFE_MEMBER = "unsafe-member"
    MISSING_MEMBER = "missing-member"
    DIGEST_MISMATCH = "digest-mismatch"
    CAPACITY_MISMATCH = "capacity-mismatch"
    UNSAFE_XML = "unsafe-xml"
    DECOMPRESSION_LIMIT = "decompression-limit"
    # Detection.
    MULTIPLE_FORMATS = "multiple-formats"
    FORMAT_MISMATCH = "format-mismatch"
    STREAM_UNVERIFIABLE = "stream-unverifiable"
    # Policy.
    FORMAT_NOT_ALLOWED = "format-not-allowed"
    SUBFORMAT_NOT_ALLOWED = "subformat-not-allowed"
    VIRTUAL_SIZE_EXCEEDED = "virtual-size-exceeded"
    # Informational.
    NOTE = "note"


@dataclass(frozen=True)
class Finding:
    """One thing an inspector noticed, with where it is and what to do about it."""

    code: Code
    severity: Severity
    message: str
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "severity": str(self.severity),
            "offset": self.offset,
            "message": self.message,
        }


def unsafe(code: Code, message: str, offset: int | None = None) -> Finding:
    """A finding that makes the image unsafe."""
    return Finding(code, Severity.UNSAFE, message, offset)


def warning(code: Code, message: str, offset: int | None = None) -> Finding:
    """A finding worth a look that does not make the image unsafe."""
    return Finding(code, Severity.WARNING, message, offset)


def info(code: Code, message: str, offset: int | None = None) -> Finding:
    """A fact worth telling that is neither a risk nor a defect."""
    return Finding(code, Severity.INFO, message, offset)


@dataclass(frozen=True)
class Location:
    """Where a container member's bytes lie: ``length`` bytes of the container file from
    ``offset``, stored under ``name`` (an OVA's tar member, as the descriptor references it)."""

    name: str
    offset: int
    length: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "offset": self.offset, "length": self.length}


@dataclass(frozen=True)
class ImageReport:
    """Everything imgfmt learned about one image.

    ``virtual_size`` is what qemu-img 7.2 would report with ``-f disk_format``; ``None`` when
    the format could not be established. ``actual_size`` is the file's size in bytes (``None``
    for a stream whose size could not be learned). ``location`` is set on a member that lies
    in place in its container's file (a disk in an OVA), so it can be read without extracting.
    """

    path: str
    disk_format: str | None
    virtual_size: int | None
    actual_size: int | None
    container_format: str = "bare"
    details: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    members: tuple[ImageReport, ...] = ()
    location: Location | None = None

    @property
    def safe(self) -> bool:
        """True when no finding here or in any member is at ``UNSAFE`` severity."""
        return all(f.severity < Severity.UNSAFE for f in self.findings) and all(
            m.safe for m in self.members
        )

    def codes(self) -> set[str]:
        """The codes of every finding, members included."""
        found = {str(f.code) for f in self.findings}
        for member in self.members:
            found |= member.codes()
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA_VERSION,
            "path": self.path,
            "safe": self.safe,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
            "virtual_size": self.virtual_size,
            "actual_size": self.actual_size,
            "details": dict(self.details),
            "findings": [f.to_dict() for f in self.findings],
            "members": [m.to_dict() for m in self.members],
            "location": self.location.to_dict() if self.location is not None else None,
        }


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}
_CONTROL.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"})


def printable(text: str) -> str:
    """Escape control characters so image-supplied text cannot drive the terminal.

    C1 controls (0x80-0x9f) and other non-printing code points are escaped too: some
    terminals act on a bare 0x9b as CSI.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if code in _CONTROL:
            out.append(_CONTROL[code])
        elif 0x80 <= code <= 0x9F or (not ch.isprintable() and ch != " "):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)

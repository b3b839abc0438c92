"""Tar archives read as untrusted input: headers parsed here, nothing ever extracted.

References: POSIX.1-2017 (IEEE Std 1003.1), ``pax`` utility, "ustar Interchange Format" (the
512-byte header, its octal fields and checksum) and "pax Header Block" (extended records
``"%d %s=%s\\n"``); the GNU tar manual, "Basic Tar Format" (type ``L``/``K`` long names and
base-256 numbers). Data follows a header only for regular files and unknown types, as CPython's
``tarfile`` reads it; a link or directory that declares a size is a member two readers would
disagree about, so it is unsafe.

``walk`` yields each member's name, type, size and data offset from a ``Cursor``: over a
``Source`` it reads only the headers and steps over the data; over a decompressing stream
(a container layer) it reads through the data, which a ``digest`` callback may watch.
``member_findings`` turns the walk into ``unsafe-member`` and ``out-of-bounds`` findings.
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
import struct
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple, Protocol

from ..errors import FormatError, TruncatedError, UnverifiableError
from ..report import Code, Finding, unsafe, warning
from ..source import Source
from .base import Reader

BLOCK = 512
#: Members read from one archive before giving up (a header flood).
MAX_MEMBERS = 100_000
#: Largest pax extended header or GNU long name accepted.
MAX_EXTENDED_HEADER = 1024 * 1024
#: Read size when stepping through data that must be read (streams, digests).
CHUNK = 1024 * 1024
#: Longest pax size record accepted: 20 digits hold any 64-bit size, and Python refuses to
#: convert strings past 4300 digits.
MAX_SIZE_DIGITS = 20

_HEADER = struct.Struct("<100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_CHKSUM = slice(148, 156)
_ASCII = bytes(range(128))

REGULAR = frozenset(b"0\x007")
LINKS = frozenset(b"12")
SPECIAL = frozenset(b"346")
DIRECTORY = ord("5")
_EXTENSIONS = frozenset(b"xgLK")
#: Extended records that name or size a member; a global header must not set them.
_MEMBER_KEYS = frozenset({"path", "linkpath", "size"})
_KINDS = {
    ord("0"): "file",
    0: "file",
    ord("7"): "file",
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "character device",
    ord("4"): "block device",
    ord("5"): "directory",
    ord("6"): "fifo",
}


class LinkRule(enum.Enum):
    """What links, devices and fifos mean in an archive."""

    #: An image package (OVA): it holds files only; any link, device or fifo is unsafe.
    REFUSE = "refuse"
    #: An image store (a Docker archive): links must resolve to a place inside the archive.
    INSIDE = "inside"
    #: A root filesystem (a container layer): symlinks are the guest's own business, hard links
    #: must stay inside, devices are a warning.
    ROOTFS = "rootfs"


class Cursor(Protocol):
    """Sequential access to an archive: where it is, reading, and stepping over data."""

    position: int

    def read(self, length: int) -> bytes: ...

    def skip(self, length: int) -> None: ...


class SourceCursor:
    """A cursor over a ``Source``: skipping data costs nothing."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.position = 0

    def read(self, length: int) -> bytes:
        data = self.source.read(self.position, length)
        self.position += len(data)
        return data

    def skip(self, length: int) -> None:
        self.position += length


class StreamCursor:
    """A cursor over a binary stream (a decompressed layer): skipping reads the data."""

    def __init__(self, stream: Reader) -> None:
        self.stream = stream
        self.position = 0

    def read(self, length: int) -> bytes:
        parts = []
        wanted = length
        while wanted > 0:
            chunk = self.stream.read(min(wanted, CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        data = b"".join(parts)
        self.position += len(data)
        return data

    def skip(self, length: int) -> None:
        while length > 0:
            chunk = self.read(min(length, CHUNK))
            if not chunk:
                return
            length -= len(chunk)


class TarMember(NamedTuple):
    """One archive entry: its name, type flag, data size and where its header and data start."""

    name: str
    typeflag: int
    size: int
    offset: int
    header_offset: int
    linkname: str = ""
    #: Described by pax ``GNU.sparse.*`` records: readers disagree on its name, size and data.
    sparse: bool = False

    @property
    def kind(self) -> str:
        return _KINDS.get(self.typeflag, f"type {chr(self.typeflag)!r}")

    @property
    def is_file(self) -> bool:
        return self.typeflag in REGULAR

    @property
    def carries_data(self) -> bool:
        """True when data blocks follow the header (regular files and unknown types)."""
        return self.typeflag in REGULAR or self.typeflag not in (*LINKS, *SPECIAL, DIRECTORY)


def probe(source: Source) -> bool:
    """True when the first block is a tar header with a valid checksum."""
    from ..inspectors.base import probe_bytes

    block = probe_bytes(source, 0, BLOCK)
    return len(block) == BLOCK and block[257:262] == b"ustar" and _checksum_ok(block)


def names(source: Source, limit: int) -> list[str]:
    """The names of the first ``limit`` members, up to a header that does not parse or that a
    stream did not keep."""
    found: list[str] = []
    try:
        for member in walk(SourceCursor(source), "tar"):
            found.append(member.name)
            if len(found) >= limit:
                break
    except (FormatError, UnverifiableError):
        return found
    return found


def walk(cursor: Cursor, fmt: str) -> Iterator[TarMember]:
    """Every member of the archive at ``cursor``; ``FormatError`` on a damaged header."""
    extended: dict[str, str] = {}
    globals_: dict[str, str] = {}
    sparse_globals = False
    kinds: set[int] = set()
    for _ in range(MAX_MEMBERS):
        header_offset = cursor.position
        block = cursor.read(BLOCK)
        if not block or block == bytes(BLOCK):
            return
        if len(block) < BLOCK:
            raise TruncatedError(
                fmt, f"tar header at {header_offset:#x} is cut short", offset=header_offset
            )
        fields = _parse_header(block, header_offset, fmt)
        name, typeflag, size, linkname = fields
        if typeflag in _EXTENSIONS:
            if typeflag in kinds:
                # Python's tarfile applies the first, Go's archive/tar the last.
                raise FormatError(
                    fmt,
                    f"tar header at {header_offset:#x} is a second type {chr(typeflag)!r} "
                    "extended header for one member; readers disagree on which applies",
                    offset=header_offset,
                )
            if typeflag != ord("g"):
                kinds.add(typeflag)
            data = _read_extension(cursor, size, header_offset, fmt)
            records = _apply_extension(typeflag, data, extended, globals_, header_offset, fmt)
            sparse_globals = sparse_globals or (typeflag == ord("g") and _sparse(records))
            continue
        # Global records pile up over the archive: look keys up in them, never copy or scan
        # them for each member (100000 records and 1000 members took 11 s).
        merged: Mapping[str, str] = ChainMap(extended, globals_) if globals_ else extended
        sparse = sparse_globals or _sparse(extended)
        extended = {}
        kinds = set()
        member = TarMember(
            # GNU tar and Python's tarfile extract a GNU sparse file under GNU.sparse.name.
            name=merged.get("GNU.sparse.name", merged.get("path", name)),
            typeflag=typeflag,
            size=int(merged["size"]) if "size" in merged else size,
            offset=cursor.position,
            header_offset=header_offset,
            linkname=merged.get("linkpath", linkname),
            sparse=sparse,
        )
        yield member
        if member.carries_data:
            cursor.skip(_padded(member.size))
    raise FormatError(fmt, f"more than {MAX_MEMBERS} members; refusing a header flood")


def member_findings(
    members: Iterable[TarMember],
    fmt: str,
    archive_size: int | None,
    rule: LinkRule = LinkRule.REFUSE,
) -> list[Finding]:
    """``unsafe-member`` and ``out-of-bounds`` findings for an archive's members.

    Names must be relative (a root filesystem's may be absolute: they resolve inside it),
    without ``..``, and unique (in a root filesystem a repeat is a warning); links follow
    ``rule``.
    """
    found: list[Finding] = []
    seen: set[str] = set()
    for member in members:
        found.extend(_name_findings(member, fmt, rule))
        key = posixpath.normpath(member.name.strip("/"))
        if key in seen:
            report = warning if rule is LinkRule.ROOTFS else unsafe
            message = _say(fmt, member, "repeats an earlier member; readers disagree on which wins")
            found.append(report(Code.UNSAFE_MEMBER, message, member.header_offset))
        seen.add(key)
        found.extend(_type_findings(member, fmt, rule))
        if archive_size is not None and member.offset + member.size > archive_size:
            end = f"declares {member.size} bytes, past the end of the archive ({archive_size})"
            found.append(unsafe(Code.OUT_OF_BOUNDS, _say(fmt, member, end), member.header_offset))
    return found


def digest_members(
    source: Source, members: Iterable[TarMember], algorithms: dict[str, set[str]]
) -> dict[str, dict[str, str]]:
    """Hash the data of the named members in one pass in archive order.

    ``algorithms`` maps a member name to hashlib names; returns name -> algorithm -> hex.
    """
    results: dict[str, dict[str, str]] = {}
    for member in sorted(members, key=lambda m: m.offset):
        wanted = algorithms.get(member.name)
        if not wanted or not member.is_file:
            continue
        hashers = {name: hashlib.new(name) for name in sorted(wanted)}
        feed = _feeder(list(hashers.values()))
        end = member.offset + member.size
        for position in range(member.offset, end, CHUNK):
            chunk = source.read(position, min(CHUNK, end - position))
            if not chunk:
                break
            feed(chunk)
        results[member.name] = {name: h.hexdigest() for name, h in hashers.items()}
    return results


def read_member(source: Source, member: TarMember, cap: int, fmt: str) -> bytes:
    """The whole data of a small member (a descriptor, a manifest), refusing past ``cap``."""
    if member.size > cap:
        raise FormatError(
            fmt, f"member {member.name!r} is {member.size} bytes, over the {cap}-byte cap"
        )
    data = source.read(member.offset, member.size)
    if len(data) != member.size:
        raise TruncatedError(fmt, f"member {member.name!r} is cut short", offset=member.offset)
    return data


def link_target(member: TarMember) -> str | None:
    """The archive path a link resolves to; ``None`` when it is absolute or leaves the root."""
    if not member.linkname or member.linkname.startswith("/"):
        return None
    base = "" if member.typeflag == ord("1") else posixpath.dirname(member.name)
    normal = posixpath.normpath(posixpath.join(base, member.linkname))
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def unsafe_path(name: str) -> str | None:
    """Why a member name or reference could escape its directory, or ``None``."""
    if not name:
        return "is empty"
    if name.startswith("/") or name.startswith("\\") or name[1:3] in (":/", ":\\"):
        return "is an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "contains '..'"
    if "\x00" in name:
        return "contains a NUL byte"
    return None


def _feeder(hashers: list[hashlib._Hash]) -> Callable[[bytes], None]:
    if len(hashers) == 1:
        return hashers[0].update

    def feed(chunk: bytes) -> None:
        for hasher in hashers:
            hasher.update(chunk)

    return feed


def _name_findings(member: TarMember, fmt: str, rule: LinkRule) -> list[Finding]:
    # Container runtimes resolve a layer's absolute names inside the root filesystem.
    name = member.name.lstrip("/") or "." if rule is LinkRule.ROOTFS else member.name
    problem = unsafe_path(name)
    if problem is None:
        return []
    message = _say(fmt, member, f"{problem}; extracting it would write outside the target")
    return [unsafe(Code.UNSAFE_MEMBER, message, member.header_offset)]


def _type_findings(member: TarMember, fmt: str, rule: LinkRule) -> list[Finding]:
    found = _kind_findings(member, fmt, rule)
    if member.sparse:
        # Python's tarfile takes GNU.sparse.realsize as the data size (and so where the next
        # header lies), GNU tar a sparse map inside the data: each reads other bytes.
        message = "is a GNU sparse file; readers disagree on its size and data"
        report = warning if rule is LinkRule.ROOTFS else unsafe
        found.append(report(Code.UNSAFE_MEMBER, _say(fmt, member, message), member.header_offset))
    return found


def _kind_findings(member: TarMember, fmt: str, rule: LinkRule) -> list[Finding]:
    offset = member.header_offset
    if member.typeflag in _KINDS and not member.carries_data and member.size:
        message = f"is a {member.kind} that declares {member.size} data bytes; readers disagree"
        return [unsafe(Code.UNSAFE_MEMBER, _say(fmt, member, message), offset)]
    if member.typeflag not in _KINDS:
        message = f"has {member.kind}, which imgfmt does not know; refuse the archive"
        return [unsafe(Code.UNSAFE_MEMBER, _say(fmt, member, message), offset)]
    if member.typeflag in LINKS:
        return _link_findings(member, fmt, rule)
    if member.typeflag in SPECIAL:
        message = f"is a {member.kind}; an image archive has no use for one"
        report = warning if rule is LinkRule.ROOTFS else unsafe
        return [report(Code.UNSAFE_MEMBER, _say(fmt, member, message), offset)]
    return []


def _link_findings(member: TarMember, fmt: str, rule: LinkRule) -> list[Finding]:
    target = member.linkname
    if rule is LinkRule.REFUSE:
        message = f"is a {member.kind} to {target!r}; an image archive holds only files"
    elif member.typeflag == ord("1") and unsafe_path(target):
        message = f"is a hard link to {target!r}, which {unsafe_path(target)}"
    elif rule is LinkRule.INSIDE and member.typeflag == ord("2") and link_target(member) is None:
        message = f"is a symlink to {target!r}, which leads outside the archive"
    else:
        return []
    return [unsafe(Code.UNSAFE_MEMBER, _say(fmt, member, message), member.header_offset)]


def _say(fmt: str, member: TarMember, what: str) -> str:
    return f"{fmt}: member {member.name!r} at {member.header_offset:#x} {what}"


def _parse_header(block: bytes, offset: int, fmt: str) -> tuple[str, int, int, str]:
    if not _checksum_ok(block):
        raise FormatError(fmt, f"tar header at {offset:#x} has a bad checksum", offset=offset)
    name, _mode, _uid, _gid, size, *_rest = _HEADER.unpack(block)
    typeflag = block[156]
    linkname, magic, prefix = _rest[3], _rest[4], _rest[10]
    full = _text(name)
    if prefix.rstrip(b"\x00"):
        if magic[:6] != b"ustar\x00":
            # GNU tar reads a name prefix only in a POSIX header, Python's tarfile in any.
            raise FormatError(
                fmt,
                f"tar header at {offset:#x} has a name prefix but no POSIX ustar magic; "
                "readers disagree on the member's name",
                offset=offset,
            )
        full = f"{_text(prefix)}/{full}"
    if typeflag == 0 and _text(name).endswith("/"):
        # An old (v7) directory: tarfile reads no data after it, nor should tarsafe.
        typeflag = DIRECTORY
    return full, typeflag, _number(size, offset + 124, fmt), _text(linkname)


def _checksum_ok(block: bytes) -> bool:
    expected = _octal(block[_CHKSUM])
    if expected is None:
        return False
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    # Old tars summed signed chars: each byte above 127 counts 256 less. Counted in C, since
    # a Python loop per byte made each header cost 25 us (2.5 s a 100000-member layer).
    signed = unsigned - 256 * len(blanked.translate(None, _ASCII))
    return expected in (unsigned, signed)


def _number(field: bytes, offset: int, fmt: str) -> int:
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise FormatError(fmt, f"negative size at {offset:#x}", offset=offset, field="size")
    value = _octal(field)
    if value is None:
        raise FormatError(
            fmt, f"size {field!r} at {offset:#x} is not octal", offset=offset, field="size"
        )
    return value


def _octal(field: bytes) -> int | None:
    """A numeric field's octal digits (POSIX ustar: NUL- or space-terminated), or None.

    Only the digits 0-7 count: ``int(..., 8)`` would also take ``+``, ``_`` and other white
    space, which GNU tar refuses, so two readers would disagree on where members lie.
    """
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if text.strip(b"01234567"):
        return None
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _read_extension(cursor: Cursor, size: int, offset: int, fmt: str) -> bytes:
    if size > MAX_EXTENDED_HEADER:
        raise FormatError(fmt, f"extended header at {offset:#x} is {size} bytes", offset=offset)
    data = cursor.read(_padded(size))
    if len(data) < size:
        raise TruncatedError(fmt, f"extended header at {offset:#x} is cut short", offset=offset)
    return data[:size]


def _apply_extension(
    typeflag: int,
    data: bytes,
    extended: dict[str, str],
    globals_: dict[str, str],
    offset: int,
    fmt: str,
) -> dict[str, str]:
    """Add an extended header's records to the member's or the global ones; return them."""
    if typeflag == ord("g"):
        records = _pax_records(data, offset, fmt)
        named = sorted(records.keys() & _MEMBER_KEYS)
        if named:
            # Go's archive/tar does not apply a global header to the members that follow.
            raise FormatError(
                fmt,
                f"global pax header at {offset:#x} sets {', '.join(named)} for every later "
                "member; readers disagree on whether it applies",
                offset=offset,
            )
        globals_.update(records)
        return records
    if typeflag == ord("L"):
        records = {"path": _text(data)}
    elif typeflag == ord("K"):
        records = {"linkpath": _text(data)}
    else:
        records = _pax_records(data, offset, fmt)
    again = sorted(records.keys() & extended.keys())
    if again:
        # A GNU long name and a pax path: GNU tar and Go take the pax one, tarfile the first.
        raise FormatError(
            fmt,
            f"extended header at {offset:#x} sets {', '.join(again)} again for one member; "
            "readers disagree on which applies",
            offset=offset,
        )
    extended.update(records)
    return records


def _sparse(records: Iterable[str]) -> bool:
    """True when pax records describe a GNU sparse file."""
    return any(key.startswith("GNU.sparse.") for key in records)


def _pax_records(data: bytes, offset: int, fmt: str) -> dict[str, str]:
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        length_text, space, _ = data[position : position + 24].partition(b" ")
        if not space or not length_text.isdigit() or int(length_text) <= len(length_text):
            raise FormatError(fmt, f"pax record at {offset:#x} is malformed", offset=offset)
        record = data[position : position + int(length_text)]
        key, equals, value = record[len(length_text) + 1 :].partition(b"=")
        if not equals or not record.endswith(b"\n"):
            raise FormatError(fmt, f"pax record at {offset:#x} is malformed", offset=offset)
        if b"\x00" in key:
            # GNU tar and tarfile ignore a keyword 'path\0x'; split at the NUL it was 'path'.
            raise FormatError(
                fmt, f"pax keyword {key!r} at {offset:#x} holds a NUL byte", offset=offset
            )
        records[_text(key)] = value[:-1].decode("utf-8", "surrogateescape")
        position += int(length_text)
    size = records.get("size", "0")
    if not (size.isascii() and size.isdigit()) or len(size) > MAX_SIZE_DIGITS:
        raise FormatError(fmt, f"pax size at {offset:#x} is not a 64-bit number", offset=offset)
    return records

"""Raw disk images: what detection falls back to when no inspector's probe matches.

A raw image has no header, so there is nothing qemu would honour beyond the bytes themselves:
qemu-img 7.2's raw driver (block/raw-format.c, over block/file-posix.c) reports the file's
length rounded up to whole 512-byte sectors (block.c, ``bdrv_refresh_total_sectors``). The
details say what the disk holds: a partition table (``partitions.py``) and a filesystem on the
whole disk or at the start of each partition (``filesystems.py``). Read from a stream, the
partitions and EBRs beyond the kept window are listed in ``unread_from_stream`` instead: they
are details, and a raw image has no header whose checks they could change.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnverifiableError
from ..report import Code, Finding, unsafe
from ..source import Source
from .base import Inspection, probe_bytes, qemu_raw_size
from .filesystems import probe_filesystem
from .partitions import Partition, read_partition_table

FORMAT = "raw"
#: Cap on the partitions whose start is probed for a filesystem.
MAX_FILESYSTEM_PROBES = 16
#: Formats imgfmt does not inspect but qemu-img 7.2 probes when run without ``-f``, by their
#: magic at offset 0: block/bochs.c (``bochs_probe`` wants this NUL-terminated magic, then a
#: type and version) and block/cloop.c (``cloop_probe`` compares this text; a shorter file is
#: padded with zeros, so it never matches).
QEMU_PROBED_MAGICS = (
    ("bochs", b"Bochs Virtual HD Image\0"),
    (
        "cloop",
        b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
    ),
)


def inspect_raw(source: Source) -> Inspection:
    """Inspect ``source`` as a raw disk: size, partition table and filesystems."""
    virtual_size = qemu_raw_size(source)
    details: dict[str, Any] = {
        "partition_table": None,
        "partitions": [],
        "filesystem": None,
        "unread_from_stream": [],
    }
    findings = _probed_by_qemu(source)

    whole = probe_filesystem(source, 0)
    if whole is not None:
        details["filesystem"] = whole.to_dict()
        return Inspection(FORMAT, virtual_size, details, findings)

    table = read_partition_table(source)
    if table is not None:
        details["partition_table"] = table.scheme
        findings += table.findings
        unread = list(table.unread)
        details["partitions"] = _partition_details(source, table.partitions, unread)
        details["unread_from_stream"] = unread
        if table.disk_guid is not None:
            details["disk_guid"] = table.disk_guid
    return Inspection(FORMAT, virtual_size, details, findings)


def _probed_by_qemu(source: Source) -> tuple[Finding, ...]:
    """An unsafe finding when qemu-img run without ``-f`` would read the file as another format."""
    for fmt, magic in QEMU_PROBED_MAGICS:
        if probe_bytes(source, 0, len(magic)) == magic:
            message = (
                f"raw: the {fmt} magic at 0x0 makes qemu-img without -f read the file as {fmt},"
                " a format imgfmt does not inspect; refuse it"
            )
            return (unsafe(Code.MULTIPLE_FORMATS, message, 0),)
    return ()


def _partition_details(
    source: Source, partitions: tuple[Partition, ...], unread: list[int]
) -> list[dict[str, Any]]:
    """Each partition's record, with the filesystem found at its start.

    Filesystems are details, not checks: a partition whose start a stream source had not kept
    is noted in ``unread`` and left without one.
    """
    listed = []
    size = source.size or 0
    for index, part in enumerate(partitions):
        entry = part.to_dict()
        probe = index < MAX_FILESYSTEM_PROBES and not part.extended
        if probe and part.size > 0 and part.start < size:
            try:
                found = probe_filesystem(source, part.start)
            except UnverifiableError:
                unread.append(part.start)
                found = None
            if found is not None:
                entry["filesystem"] = found.to_dict()
        listed.append(entry)
    return listed

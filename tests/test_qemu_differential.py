"""Mutated headers of safe fixtures: whatever imgfmt still calls safe, qemu-img 7.2 agrees with.

Differential fuzzing against the strace-watched oracle of ``tests/qemu_oracle.py``. For each
format with a fixed header, hypothesis takes a bare fixture imgfmt calls safe and rewrites one
to three fields of that header (each field of the inspector's own ``struct`` layout, given a
boundary value, a neighbour of its old value, or anything), sealing the record again where qemu
checks a checksum (the VHD footer, the VHDX header) so that qemu reads on. Whenever imgfmt
still calls the copy safe, ``qemu-img info -f FORMAT`` must touch no other file and, if it opens
the copy at all, report the same virtual size and no backing file, data file or unchecked
format-specific key. qemu refusing the copy is no disagreement: it then reads nothing.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imgfmt
from imgfmt.inspectors import luks, ploop, qcow2, qed, vdi, vhd, vhdx, vmdk
from imgfmt.policy import KNOWN_DISK_FORMATS
from tests import qemu_oracle
from tests.conftest import fixture_entries
from tests.fixtures.recipe import patch

MISSING = qemu_oracle.available()
#: Examples per format: about 30 s for all of them on the project's 2-core machine.
EXAMPLES = 150
#: Fields rewritten in one example.
MAX_EDITS = 3


def _seal_vhd(record: bytearray) -> None:
    at = vhd.FOOTER_CHECKSUM_AT
    record[at : at + 4] = struct.pack(">I", vhd.vhd_checksum(bytes(record), at))


def _seal_vhdx(record: bytearray) -> None:
    record[4:8] = struct.pack("<I", vhdx.block_checksum(bytes(record)))


def _vhd_copies(size: int, head: bytes) -> tuple[int, ...]:
    # Dynamic disks carry the footer twice, and qemu reads the copy at offset 0.
    tail = size - vhd.FOOTER_SIZE
    return (0, tail) if head.startswith(vhd.COOKIE) else (tail,)


class Record(NamedTuple):
    """A header as the inspector reads it: its layout, where it lies, how it is sealed."""

    layout: struct.Struct
    #: Offsets of every copy to rewrite, from the file size and its first bytes.
    copies: Callable[[int, bytes], tuple[int, ...]]
    #: Bytes covered by the checksum that ``seal`` recomputes in place.
    length: int = 0
    seal: Callable[[bytearray], None] | None = None


def _at(*offsets: int) -> Callable[[int, bytes], tuple[int, ...]]:
    return lambda size, head: offsets


RECORDS = {
    "qcow2": Record(qcow2.HEADER, _at(0)),
    "qed": Record(qed.HEADER, _at(0)),
    "vdi": Record(vdi._HEADER, _at(0)),
    "ploop": Record(ploop._HEADER, _at(0)),
    "luks": Record(luks._PHDR, _at(0)),
    "vmdk": Record(vmdk._SPARSE_HEADER, _at(0)),
    "vhd": Record(vhd._FOOTER, _vhd_copies, vhd.FOOTER_SIZE, _seal_vhd),
    # Either header alone: qemu takes the valid one with the higher sequence number.
    **{
        f"vhdx@{at:#x}": Record(vhdx._HEADER, _at(at), vhdx.HEADER_SIZE, _seal_vhdx)
        for at in vhdx.HEADER_OFFSETS
    },
}


def _fields(layout: struct.Struct) -> tuple[tuple[int, int], ...]:
    """(offset, width) of every field of a ``struct`` layout, padding left out."""
    order, offset, found = layout.format[0], 0, []
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", layout.format[1:]):
        n = int(count or 1)
        width = struct.calcsize(f"{order}{code}")
        if code == "s":
            found.append((offset, n))
        elif code != "x":
            found += [(offset + i * width, width) for i in range(n)]
        offset += n * width
    return tuple(found)


def _entries(disk_format: str) -> list[dict[str, Any]]:
    return [
        e
        for e in fixture_entries()
        if e["safe"] and e["format"] == disk_format and e.get("container_format") == "bare"
    ]


def _read(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _values(old: int, width: int, file_size: int) -> st.SearchStrategy[int]:
    top = (1 << (8 * width)) - 1
    near = [old - 1, old + 1, old * 2, old // 2, old + 512, old - 512, file_size, file_size + 1]
    bounds = [0, 1, top, top >> 1, (top >> 1) + 1, *(v & top for v in near)]
    flips = st.integers(0, 8 * width - 1).map(lambda bit: old ^ (1 << bit))
    return st.one_of(
        st.sampled_from(bounds), flips, st.integers(0, min(top, 4096)), st.integers(0, top)
    )


def _mutate(data: st.DataObject, entry: dict[str, Any], record: Record) -> dict[int, bytes]:
    path = entry["path"]
    size = Path(path).stat().st_size
    copies = record.copies(size, _read(path, 0, len(vhd.COOKIE)))
    changed = bytearray(_read(path, copies[-1], max(record.layout.size, record.length)))
    fields = _fields(record.layout)
    for offset, width in data.draw(
        st.lists(st.sampled_from(fields), min_size=1, max_size=MAX_EDITS)
    ):
        old = int.from_bytes(changed[offset : offset + width], "big")
        new = data.draw(_values(old, width, size), label=f"field at {offset:#x}")
        changed[offset : offset + width] = new.to_bytes(width, "big")
    if record.seal is not None:
        record.seal(changed)
    return dict.fromkeys(copies, bytes(changed))


@pytest.mark.skipif(MISSING is not None, reason=f"the qemu-img oracle cannot run: {MISSING}")
@pytest.mark.parametrize("name", sorted(RECORDS))
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_qemu_img_agrees_with_safe_verdict_on_mutated_headers(
    name: str, data: st.DataObject, tmp_path: Path
) -> None:
    disk_format = name.split("@")[0]
    entry = data.draw(st.sampled_from(_entries(disk_format)), label="fixture")
    edits = _mutate(data, entry, RECORDS[name])
    path = patch(Path(entry["path"]), tmp_path / Path(entry["path"]).name, edits)

    report = imgfmt.inspect(str(path), policy=imgfmt.Policy(disk_formats=KNOWN_DISK_FORMATS))
    if not report.safe:
        return
    assert report.disk_format is not None
    verdict = qemu_oracle.check(str(path), report.disk_format, report.virtual_size, report.details)

    assert verdict.paths == [], verdict.problems
    if verdict.info is not None:
        assert verdict.agrees, verdict.problems

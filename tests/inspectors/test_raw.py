"""inspect_raw, partitions.py and filesystems.py against sfdisk and mkfs.* images."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.inspectors.filesystems import probe_filesystem
from imgfmt.inspectors.raw import inspect_raw
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.inspectors import common

FIXTURES = common.entries("raw")
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024
MIB = 1 << 20
MBR_TYPES = ["0x83", "0x0c", "0x82", "0x05", "0x83", "0x8e", "0x83"]
MBR = [{"number": n, "type": t} for n, t in enumerate(MBR_TYPES, 1)]
MBR[0] |= {"start": MIB, "size": MIB, "bootable": True, "type_name": "Linux"}
GPT_NAMES = ["root fs", "EFI System", "swap", "lvm ünïcode"]
GPT = [{"number": n, "name": name} for n, name in enumerate(GPT_NAMES, 1)]
GPT[0] |= {"start": MIB, "size": 8 * MIB, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}
GPT[3] |= {"type_name": "Linux LVM"}
EXT4 = {"type": "ext4", "label": "gptroot", "size": 8 * MIB}
#: Structured details, compared by the keys listed (the fixtures' own details compare exactly).
STRUCTURED: dict[str, dict[str, Any]] = {
    "mbr-extended.raw": {"partitions": MBR},
    "mbr-ebr-loop.raw": {"partitions": MBR[:5]},
    "gpt.raw": {"partitions": GPT},
    "gpt-ext4.raw": {"partitions": [{**GPT[0], "filesystem": EXT4}, *GPT[1:]]},
    "gpt-bad-header-crc.raw": {"partitions": GPT},
    "gpt-no-backup.raw": {"partitions": GPT},
}


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    with FileSource(entry["path"]) as source:
        result = inspect_raw(source)
        assert source.bytes_read < READ_BUDGET
    assert result.format == "raw"
    assert result.virtual_size == entry["oracle"]["virtual-size"]
    assert all(f.severity < Severity.UNSAFE for f in result.findings)
    for key, value in STRUCTURED.get(entry["name"], {}).items():
        assert common.matches(result.details[key], value), (key, result.details[key])


def test_stream_tells_what_it_could_not_see() -> None:
    entry = next(e for e in FIXTURES if e["name"] == "gpt-ext4.raw")
    with open(entry["path"], "rb") as f:
        stream = StreamSource.drain(f, "gpt-ext4.raw", head_window=4 << 20)
    with FileSource(entry["path"]) as source:
        whole = inspect_raw(source)
    streamed = inspect_raw(stream)
    assert streamed.findings == whole.findings
    assert streamed.details["partitions"][0] == whole.details["partitions"][0]
    later = [p["start"] for p in whole.details["partitions"][1:]]
    assert streamed.details["unread_from_stream"] == later
    assert whole.details["unread_from_stream"] == []


def test_stream_stops_the_ebr_chain_where_its_window_ends() -> None:
    entry = next(e for e in FIXTURES if e["name"] == "mbr-extended.raw")
    with open(entry["path"], "rb") as f:
        stream = StreamSource.drain(f, entry["name"], head_window=4 * MIB)
    streamed = inspect_raw(stream)
    assert [p["number"] for p in streamed.details["partitions"]] == [1, 2, 3, 4]
    assert streamed.details["unread_from_stream"] == [4 * MIB]
    assert not streamed.findings


def test_sizes_round_up_to_sectors() -> None:
    assert inspect_raw(BytesSource(b"x")).virtual_size == 512
    assert inspect_raw(BytesSource(b"")).virtual_size == 0


def _lvm2_label() -> bytes:
    pv_uuid = b"abcdefghijklmnopqrstuvwxyz012345"
    label = struct.pack("<8sQII8s", b"LABELONE", 1, 0, 32, b"LVM2 001")
    pv = struct.pack("<32sQ", pv_uuid, 64 << 20)
    sector = (label + pv).ljust(512, b"\0")
    return bytes(512) + sector + bytes(7 * 1024)


def test_lvm2_physical_volume() -> None:
    found = probe_filesystem(BytesSource(_lvm2_label()), 0)
    assert found is not None
    assert found.type == "LVM2_member"
    assert found.uuid == "abcdef-ghij-klmn-opqr-stuv-wxyz-012345"
    assert found.size == 64 << 20


#: Mutations land mostly where tables and superblocks live.
OFFSETS = st.one_of(
    st.integers(0, HEAD - 1),
    st.integers(0x1BE, 0x600),
    st.integers(0x400, 0x500),
)


@common.FUZZ
@given(entry=st.sampled_from(FIXTURES), data=st.data())
def test_mutations_never_crash(entry: dict[str, Any], data: st.DataObject) -> None:
    image = common.damaged(data, common.head(entry["path"], HEAD), OFFSETS, max_edits=16)
    common.survives(inspect_raw, BytesSource(image), READ_BUDGET)


READS = common.read_ranges(inspect_raw, FIXTURES)


@common.FUZZ
@given(data=st.data())
def test_mutations_of_what_is_read_never_crash(data: st.DataObject) -> None:
    """Partition filesystems and backup GPT headers lie far from the start: mutate those."""
    path, ranges = data.draw(st.sampled_from(READS))
    edits = common.edits_in(data, ranges)
    with FileSource(path) as parent:
        common.survives(inspect_raw, common.EditedSource(parent, edits), READ_BUDGET)


@pytest.mark.parametrize(
    ("fmt", "magic"),
    [
        ("bochs", b"Bochs Virtual HD Image\0".ljust(32, b"\0") + b"Redolog\0".ljust(16, b"\0")),
        (
            "cloop",
            b"#!/bin/sh\n#V2.0 Format\n"
            b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n",
        ),
    ],
)
def test_a_file_qemu_would_probe_as_another_format_is_not_safe_raw(fmt: str, magic: bytes) -> None:
    """qemu-img without -f reads these as bochs or cloop: raw and safe would be a lie."""
    from imgfmt.detect import inspect
    from imgfmt.report import Code

    report = inspect(BytesSource(magic.ljust(64 * 1024, b"\0")))
    assert report.disk_format == "raw"
    assert not report.safe
    (finding,) = report.findings
    assert finding.code is Code.MULTIPLE_FORMATS
    assert fmt in finding.message
    # Only the whole magic counts, as in qemu's probes.
    assert inspect(BytesSource(magic[:10])).safe

"""The qcow2 inspector against images built by qemu-img 7.2 (tests/fixtures/recipes/qcow2.py)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import UnverifiableError
from imgfmt.inspectors.base import Inspection
from imgfmt.inspectors.qcow2 import MAX_EXTENSIONS, MAX_SNAPSHOTS_READ, Qcow2Inspector
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.inspectors import common

FIXTURES = common.entries("qcow2")
BY_NAME = common.by_name(FIXTURES)
#: Far above what any fixture needs, far below the brief's 2 MiB ceiling.
READ_BUDGET = 256 * 1024


def _bytes(name: str) -> bytes:
    return common.head(BY_NAME[name]["path"])


def _inspect_bytes(data: bytes) -> Inspection:
    return Qcow2Inspector.inspect(BytesSource(data))


def _inspect(name: str) -> Inspection:
    with FileSource(BY_NAME[name]["path"]) as source:
        return Qcow2Inspector.inspect(source)


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(Qcow2Inspector, entry, READ_BUDGET)


def test_backing_file_message_names_file_and_field() -> None:
    inspection = _inspect("passwd.qcow2")
    (finding,) = [f for f in inspection.findings if f.code == "backing-file"]
    assert "'/etc/passwd'" in finding.message
    assert "backing_file_offset at 0x8" in finding.message
    assert finding.offset == 8


def test_backing_format_from_extension() -> None:
    inspection = _inspect("backed.qcow2")
    assert inspection.details["backing_file_format"] == "qcow2"


def test_snapshot_entries() -> None:
    inspection = _inspect("snapshots.qcow2")
    snapshots = inspection.details["snapshots"]
    assert [(s["id"], s["name"]) for s in snapshots] == [("1", "first"), ("2", "second")]
    assert all(s["disk_size"] == 64 * 1024 * 1024 and s["vm_state_size"] == 0 for s in snapshots)


def test_bitmap_directory() -> None:
    inspection = _inspect("bitmap.qcow2")
    assert inspection.details["bitmaps"] == [
        {"name": "backup-0", "granularity": 128 * 1024, "flags": 2}
    ]


def _bitmap_image(**fields: int) -> Inspection:
    """bitmap.qcow2 with header fields (``size``) or directory entry fields changed."""
    data = bytearray(_bytes("bitmap.qcow2"))
    if "size" in fields:
        struct.pack_into(">Q", data, 24, fields.pop("size"))
    directory = Qcow2Inspector.inspect(BytesSource(bytes(data)))
    assert directory.details["bitmaps"]
    # The bitmaps extension follows the feature name table; find its directory offset.
    at = data.index(struct.pack(">I", 0x23852875))
    entry = struct.unpack_from(">Q", data, at + 8 + 16)[0]
    layout = {"table_size": (8, ">I"), "flags": (12, ">I"), "type": (16, ">B")}
    layout["granularity_bits"] = (17, ">B")
    for name, value in fields.items():
        offset, fmt = layout[name]
        struct.pack_into(fmt, data, entry + offset, value)
    return _inspect_bytes(bytes(data))


@pytest.mark.parametrize(
    "fields",
    [
        # qemu-img info: "Could not read bitmap 'backup-0' from image: Invalid argument"
        {"size": 0},
        {"table_size": 0},
        {"table_size": 2},
        {"granularity_bits": 8},
        {"type": 2},
        {"flags": 4},
    ],
    ids=str,
)
def test_bitmap_qemu_refuses_to_load_is_invalid(fields: dict[str, int]) -> None:
    inspection = _bitmap_image(**fields)
    (finding,) = [f for f in inspection.findings if "bitmap directory entry 0" in f.message]
    assert finding.code == "invalid-header"
    assert finding.severity is Severity.UNSAFE


def test_bitmap_in_use_is_not_loaded_so_its_size_is_not_checked() -> None:
    inspection = _bitmap_image(size=0, flags=3)
    assert not [f for f in inspection.findings if "bitmap directory entry" in f.message]


def test_luks_details() -> None:
    inspection = _inspect("luks.qcow2")
    codes = {str(f.code) for f in inspection.findings}
    encryption = inspection.details["encryption"]
    assert encryption["format"] == "luks"
    assert encryption["header_offset"] % inspection.details["cluster_size"] == 0
    assert codes == {"encrypted"}


def test_unknown_incompatible_bit_named_from_feature_table() -> None:
    data = bytearray(_bytes("v3.qcow2"))
    data[72:80] = struct.pack(">Q", 1 << 10)
    # The feature name table follows the 112-byte header; rename its first entry.
    assert data[112:116] == bytes.fromhex("6803f857")
    data[120:168] = struct.pack(">BB46s", 0, 10, b"frobnication")
    inspection = _inspect_bytes(bytes(data))
    (finding,) = [f for f in inspection.findings if f.code == "unknown-feature"]
    assert "frobnication" in finding.message


def test_extension_walk_is_capped() -> None:
    data = bytearray(_bytes("v3.qcow2"))
    unknown = struct.pack(">II", 0x0BADCAFE, 0)
    for i in range(MAX_EXTENSIONS + 10):
        data[112 + 8 * i : 120 + 8 * i] = unknown
    source = BytesSource(bytes(data))
    inspection = Qcow2Inspector.inspect(source)
    codes = [str(f.code) for f in inspection.findings]
    assert "invalid-header" in codes
    assert codes.count("unknown-extension") == 1
    assert source.bytes_read < READ_BUDGET


def test_snapshot_table_read_is_capped() -> None:
    data = bytearray(_bytes("snapshots.qcow2"))
    data[60:64] = struct.pack(">I", 100_000)
    source = BytesSource(bytes(data))
    inspection = Qcow2Inspector.inspect(source)
    assert "invalid-header" in {str(f.code) for f in inspection.findings}
    assert len(inspection.details["snapshots"]) <= MAX_SNAPSHOTS_READ
    assert source.bytes_read < READ_BUDGET


def test_short_v3_header_length() -> None:
    data = bytearray(_bytes("v3.qcow2"))
    data[100:104] = struct.pack(">I", 96)
    inspection = _inspect_bytes(bytes(data))
    assert any(f.code == "invalid-header" and f.offset == 100 for f in inspection.findings)


def test_data_file_name_without_bit_is_a_warning() -> None:
    data = bytearray(_bytes("datafile.qcow2"))
    data[72:80] = bytes(8)
    inspection = _inspect_bytes(bytes(data))
    (finding,) = [f for f in inspection.findings if f.code == "data-file"]
    assert finding.severity is Severity.WARNING


def test_stream_window_too_small_is_unverifiable() -> None:
    data = _bytes("snapshots.qcow2")
    source = StreamSource(data[:4096], b"", len(data), "<stream>")
    with pytest.raises(UnverifiableError):
        Qcow2Inspector.inspect(source)


def test_probe_rejects_short_and_foreign_data() -> None:
    assert not Qcow2Inspector.probe(BytesSource(b"QFI"))
    assert not Qcow2Inspector.probe(BytesSource(b"QED\0" + bytes(60)))


NAMES = sorted(name for name in BY_NAME if name != "truncated.qcow2")
HEAD = 64 * 1024
#: Half the edits land in the 512-byte header area.
OFFSETS = st.one_of(st.integers(0, 511), st.integers(0, HEAD - 1))


@common.FUZZ
@given(name=st.sampled_from(NAMES), whole=st.booleans(), data=st.data())
def test_mutations_never_crash(name: str, whole: bool, data: st.DataObject) -> None:
    image = common.head(BY_NAME[name]["path"], None if whole else HEAD)
    common.fuzz(Qcow2Inspector, common.damaged(data, image, OFFSETS, max_edits=12), 2 * 1024 * 1024)

"""The VHD inspector against qemu-img 7.2 (as "vpc") on the fixtures of recipes/vhd.py."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import ImgfmtError
from imgfmt.inspectors.vhd import (
    VHD_MAX_GEOMETRY,
    VhdFooter,
    VhdInspector,
    qemu_sectors,
    vhd_checksum,
)
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.inspectors import common

ENTRIES = common.entries("vhd")
IDS = [e["name"] for e in ENTRIES]
BY_NAME = common.by_name(ENTRIES)
READ_BUDGET = 2 * 1024 * 1024
FUZZED = ("dynamic-10m", "data-dynamic", "data-fixed", "differencing-passwd", "huge-2040g")
HEAD = 64 * 1024
#: Where mutations land: anywhere in the first 64 KiB, often in the footer and dynamic
#: header (the first 1.5 KiB), or in the footer at the end (negative offsets).
OFFSETS = st.one_of(st.integers(0, HEAD - 1), st.integers(0, 1535), st.integers(-512, -1))


def _entry(name: str) -> dict[str, Any]:
    return BY_NAME[name]


def _bytes(name: str) -> bytes:
    return common.head(_entry(name)["path"])


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(VhdInspector, entry, READ_BUDGET)


def test_details_of_a_dynamic_disk() -> None:
    with FileSource(_entry("dynamic-10m")["path"]) as source:
        details = VhdInspector.inspect(source).details
    assert details["disk_type"] == "dynamic"
    assert details["creator_application"] == "qemu"
    assert details["creator_host_os"] == "Wi2k"
    assert details["block_size"] == 2 * 1024 * 1024
    assert details["max_table_entries"] == 6
    assert details["geometry"] == {"cylinders": 302, "heads": 4, "sectors_per_track": 17}
    assert details["size_source"] == "chs"


def test_differencing_disk_names_its_parent() -> None:
    with FileSource(_entry("differencing-passwd")["path"]) as source:
        findings = VhdInspector.inspect(source).findings
    (backing,) = [f for f in findings if str(f.code) == "backing-file"]
    assert "/etc/passwd" in backing.message
    assert "W2ku" in backing.message and "MacX" in backing.message


def test_fixed_disk_found_from_a_stream() -> None:
    data = _bytes("data-fixed")
    source = StreamSource.drain(io.BytesIO(data), head_window=4096, tail_window=4096)
    assert VhdInspector.probe(source)
    assert (
        VhdInspector.inspect(source).virtual_size == _entry("data-fixed")["oracle"]["virtual-size"]
    )


def test_large_bat_is_read_within_its_cap() -> None:
    with FileSource(_entry("huge-2040g")["path"]) as source:
        result = VhdInspector.inspect(source)
        assert source.bytes_read < 512 * 1024
    assert any(str(f.code) == "note" for f in result.findings)


def _footer(creator_app: bytes, cyls: int, heads: int, secs: int, size: int) -> VhdFooter:
    record = bytearray(512)
    struct.pack_into(">8s", record, 0, b"conectix")
    struct.pack_into(">4s", record, 0x1C, creator_app)
    struct.pack_into(">QQHBBI", record, 0x28, size, size, cyls, heads, secs, 3)
    return VhdFooter.from_bytes(bytes(record))


@pytest.mark.parametrize(
    ("app", "expected"),
    [(b"win ", "current_size"), (b"qem2", "current_size"), (b"d2v ", "current_size"),
     (b"CTXS", "current_size"), (b"tap\0", "current_size"), (b"tap ", "chs"),
     (b"vpc ", "chs"), (b"qemu", "chs"), (b"d2v\0", "chs")],
)  # fmt: skip
def test_size_source_follows_the_creator(app: bytes, expected: str) -> None:
    footer = _footer(app, 100, 4, 17, 10 * 1024 * 1024 + 1000)
    sectors, source = qemu_sectors(footer)
    assert source == expected
    assert sectors == (6800 if expected == "chs" else (10 * 1024 * 1024 + 1000) // 512)


def test_maximum_geometry_means_current_size() -> None:
    footer = _footer(b"vpc ", 65535, 16, 255, 3 * 2**40)
    assert footer.chs_sectors == VHD_MAX_GEOMETRY
    assert qemu_sectors(footer) == (3 * 2**40 // 512, "current_size")


def _fixed_footer(cyls: int, heads: int, secs: int) -> bytearray:
    record = bytearray(512)
    struct.pack_into(">8s", record, 0, b"conectix")
    struct.pack_into(">4s", record, 0x1C, b"vpc ")
    struct.pack_into(">HBBI", record, 0x38, cyls, heads, secs, 2)
    return record


def _seal(record: bytearray) -> None:
    struct.pack_into(">I", record, 0x40, vhd_checksum(bytes(record), 0x40))


def test_fixed_footer_is_where_qemu_rounds_the_end_to() -> None:
    # 5220 bytes: qemu rounds the end up to 5632 and reads the footer at 5120, its last 412
    # bytes zeros; a second footer at 5220 - 512 must not be the one that counts.
    theirs = _fixed_footer(60000, 16, 255)
    theirs[100:] = bytes(412)
    _seal(theirs)
    decoy = _fixed_footer(20, 16, 17)
    decoy[412:] = theirs[:100]
    _seal(decoy)
    image = bytes(5220 - 512) + bytes(decoy)
    assert image[5120:] == theirs[:100]
    result = VhdInspector.inspect(BytesSource(image))
    assert result.virtual_size == 60000 * 16 * 255 * 512


def test_unaligned_fixed_disk_without_qemus_footer_is_refused() -> None:
    footer = _fixed_footer(20, 16, 17)
    _seal(footer)
    source = BytesSource(bytes(1000) + bytes(footer))
    assert VhdInspector.probe(source)
    with pytest.raises(ImgfmtError):
        VhdInspector.inspect(source)


def test_checksum_leaves_out_its_own_field() -> None:
    record = bytes(range(256)) * 2
    patched = record[:0x40] + b"\xff\xff\xff\xff" + record[0x44:]
    assert vhd_checksum(record, 0x40) == vhd_checksum(patched, 0x40)


@pytest.mark.parametrize("data", [b"", b"conecti", b"x" * 4096, b"conectix" + bytes(100)])
def test_short_or_foreign_data(data: bytes) -> None:
    source = BytesSource(data)
    if not VhdInspector.probe(source):
        return
    with pytest.raises(ImgfmtError):
        VhdInspector.inspect(source)


@pytest.mark.parametrize("name", FUZZED)
@common.FUZZ
@given(data=st.data())
def test_damage_gives_inspection_or_error(name: str, data: st.DataObject) -> None:
    common.fuzz(VhdInspector, common.damaged(data, _bytes(name), OFFSETS))

"""The VHDX inspector against qemu-img 7.2 on the fixtures of recipes/vhdx.py."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import ImgfmtError
from imgfmt.inspectors.vhdx import VhdxInspector, bat_entries, block_checksum, crc32c
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource
from tests.fixtures.recipes import vhdx as vhdx_recipe
from tests.inspectors import common

ENTRIES = common.entries("vhdx")
IDS = [e["name"] for e in ENTRIES]
BY_NAME = common.by_name(ENTRIES)
READ_BUDGET = 2 * 1024 * 1024
FUZZED = ("data", "huge-1t", "parent-locator")
HEAD = 64 * 1024
#: Where mutations land: the first 64 KiB, the headers, the region table, the metadata table.
OFFSETS = st.one_of(
    st.integers(0, HEAD - 1),
    st.integers(0x10000, 0x10080),
    st.integers(0x20000, 0x20080),
    st.integers(0x30000, 0x30080),
    st.integers(0x300000, 0x300100),
)
MiB = 1024 * 1024


def _entry(name: str) -> dict[str, Any]:
    return BY_NAME[name]


def _whole(name: str) -> bytes:
    return common.head(_entry(name)["path"])


def _bytes(name: str) -> bytes:
    # The headers, region table, BAT and metadata of these fixtures lie in the first 4 MiB.
    return common.head(_entry(name)["path"], 4 * MiB)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(VhdxInspector, entry, READ_BUDGET)


def test_details_of_a_default_image() -> None:
    with FileSource(_entry("default-100m")["path"]) as source:
        details = VhdxInspector.inspect(source).details
    assert details["creator"].startswith("QEMU v7.2")
    assert details["version"] == 1
    assert details["block_size"] == 8 * MiB
    assert details["logical_sector_size"] == 512
    assert details["physical_sector_size"] == 512
    assert details["has_parent"] is False
    assert details["log_pending"] is False


def test_parent_locator_paths_are_reported() -> None:
    with FileSource(_entry("parent-locator")["path"]) as source:
        result = VhdxInspector.inspect(source)
    assert any("relative_path=" in p for p in result.details["parent_locator"])
    (backing,) = [f for f in result.findings if str(f.code) == "backing-file"]
    assert "etc" in backing.message and "passwd" in backing.message


def test_crc32c_known_answers() -> None:
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43


@common.FUZZ
@given(body=st.binary(max_size=64), zeros=st.integers(0, 9000))
def test_crc32c_with_zero_tails_matches_the_bitwise_crc(body: bytes, zeros: int) -> None:
    data = body + bytes(zeros)
    assert crc32c(data) == vhdx_recipe.crc32c(data)


def test_header_checksums_of_a_real_image() -> None:
    data = _bytes("data")
    for at in (0x10000, 0x20000):
        block = data[at : at + 4096]
        assert struct.unpack_from("<I", block, 4)[0] == block_checksum(block)


@pytest.mark.parametrize(
    ("size", "block", "expected"),
    [(100 * MiB, 8 * MiB, 13), (2**40, 32 * MiB, 32768 + 255), (MiB, MiB, 1), (0, MiB, 0xFFFFF)],
)
def test_bat_entries_follow_qemu(size: int, block: int, expected: int) -> None:
    assert bat_entries(size, block) == expected


def test_identical_headers_with_equal_sequence_are_accepted() -> None:
    # Disk2vhd writes two identical headers; qemu takes the first.
    data = bytearray(_whole("data"))
    data[0x20000:0x21000] = data[0x10000:0x11000]
    result = VhdxInspector.inspect(BytesSource(bytes(data)))
    assert all(f.severity is not Severity.UNSAFE for f in result.findings), result.findings


def test_newer_header_wins() -> None:
    data = bytearray(_whole("data"))
    # The older header alone names a misplaced log: unused, it must not matter.
    struct.pack_into("<Q", data, 0x20000 + 0x48, 12345)
    for at, sequence in ((0x10000, 9), (0x20000, 5)):
        struct.pack_into("<Q", data, at + 8, sequence)
        struct.pack_into("<I", data, at + 4, 0)
        struct.pack_into("<I", data, at + 4, crc32c(bytes(data[at : at + 4096])))
    result = VhdxInspector.inspect(BytesSource(bytes(data)))
    assert result.findings == ()

    # Swapped sequence numbers make the misplaced log current.
    for at, sequence in ((0x10000, 5), (0x20000, 9)):
        struct.pack_into("<Q", data, at + 8, sequence)
        struct.pack_into("<I", data, at + 4, 0)
        struct.pack_into("<I", data, at + 4, crc32c(bytes(data[at : at + 4096])))
    result = VhdxInspector.inspect(BytesSource(bytes(data)))
    assert "invalid-header" in {str(f.code) for f in result.findings}


@pytest.mark.parametrize("data", [b"", b"vhdxfil", b"vhdxfile" + bytes(600), b"x" * 4096])
def test_short_or_foreign_data(data: bytes) -> None:
    source = BytesSource(data)
    if not VhdxInspector.probe(source):
        return
    with pytest.raises(ImgfmtError):
        VhdxInspector.inspect(source)


@pytest.mark.parametrize("name", FUZZED)
@common.FUZZ
@given(data=st.data())
def test_damage_gives_inspection_or_error(name: str, data: st.DataObject) -> None:
    common.fuzz(VhdxInspector, common.damaged(data, _bytes(name), OFFSETS))

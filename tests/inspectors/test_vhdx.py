"""The VHDX inspector against qemu-img 7.2 on the fixtures of recipes/vhdx.py."""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgfmt.errors import FormatError, ImgfmtError, TruncatedError
from imgfmt.inspectors.vhdx import VhdxInspector, bat_entries, block_checksum, crc32c
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource
from tests.fixtures.build import build_recipe

ENTRIES = build_recipe("vhdx")
IDS = [e["name"] for e in ENTRIES]
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
    return next(e for e in ENTRIES if e["name"] == name)


@cache
def _whole(name: str) -> bytes:
    return Path(_entry(name)["path"]).read_bytes()


@cache
def _bytes(name: str) -> bytes:
    # The headers, region table, BAT and metadata of these fixtures lie in the first 4 MiB.
    with open(_entry(name)["path"], "rb") as f:
        return f.read(4 * MiB)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fixture(entry: dict[str, Any]) -> None:
    with FileSource(entry["path"]) as source:
        assert VhdxInspector.probe(source)
        try:
            result = VhdxInspector.inspect(source)
        except FormatError as exc:
            # Only images qemu refuses may stop the parse; detection names the code.
            code = "truncated" if isinstance(exc, TruncatedError) else "invalid-header"
            assert not entry["safe"] and entry["oracle"] is None
            assert set(entry["codes"]) <= {code}
            return

    assert result.format == "vhdx"
    if entry["oracle"] is not None:
        assert result.virtual_size == entry["oracle"]["virtual-size"]
    codes = {str(f.code) for f in result.findings}
    assert set(entry["codes"]) <= codes, result.findings
    has_unsafe = any(f.severity is Severity.UNSAFE for f in result.findings)
    assert has_unsafe is not entry["safe"], result.findings
    for key, value in entry["details"].items():
        assert result.details[key] == value, key


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


def _outcome(data: bytes) -> None:
    source = BytesSource(data)
    VhdxInspector.probe(source)
    try:
        result = VhdxInspector.inspect(source)
    except ImgfmtError:
        return
    assert isinstance(result.virtual_size, int)


@pytest.mark.parametrize("name", FUZZED)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_truncation_gives_inspection_or_error(name: str, data: st.DataObject) -> None:
    original = _bytes(name)
    _outcome(original[: data.draw(st.integers(0, len(original)))])


@pytest.mark.parametrize("name", FUZZED)
@settings(max_examples=200, deadline=None)
@given(edits=st.lists(st.tuples(OFFSETS, st.integers(0, 255)), min_size=1, max_size=8))
def test_mutation_gives_inspection_or_error(name: str, edits: list[tuple[int, int]]) -> None:
    mutated = bytearray(_bytes(name))
    for offset, value in edits:
        mutated[offset % len(mutated)] = value
    _outcome(bytes(mutated))

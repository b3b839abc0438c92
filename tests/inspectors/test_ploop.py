"""PloopInspector against qemu-img made fixtures, hostile edits and random damage."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import UnverifiableError
from imgfmt.inspectors.ploop import PloopInspector
from imgfmt.report import Code, Severity
from imgfmt.source import BytesSource
from tests.inspectors import common

FIXTURES = common.entries("ploop")
BY_NAME = common.by_name(FIXTURES)
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(PloopInspector, entry, READ_BUDGET)


def test_huge_image_checks_a_bounded_part_of_the_bat() -> None:
    result, bytes_read = common.inspect_file(PloopInspector, BY_NAME["huge"])
    assert [f.code for f in result.findings] == [Code.NOTE]
    assert bytes_read < 300 * 1024


def test_dirty_bitmap_is_described() -> None:
    result, _ = common.inspect_file(PloopInspector, BY_NAME["ext-bitmap"])
    (bitmap,) = result.details["dirty_bitmaps"]
    assert bitmap == {
        "id": "5f0e3c1a-9b2d-4e6f-8a7b-6c5d4e3f2a1b",
        "granularity": 64 * 1024,
        "l1_size": 1,
    }


def _with_bitmap_field(offset: int, value: bytes) -> bytes:
    """The ext-bitmap fixture with one dirty bitmap field changed and the checksum redone."""
    image = bytearray(common.head(BY_NAME["ext-bitmap"]["path"]))
    ext = 1024 * 1024
    feature_data = ext + 24 + 24
    image[feature_data + offset : feature_data + offset + len(value)] = value
    image[ext + 8 : ext + 24] = hashlib.md5(image[ext + 24 : 2 * ext]).digest()
    return bytes(image)


@pytest.mark.parametrize(
    ("offset", "value", "why"),
    [
        (24, struct.pack("<I", 3), "power of two"),  # qemu-img would abort on an assertion
        (28, struct.pack("<I", 2), "l1_size"),
        (0, struct.pack("<Q", 12345), "size"),
    ],
)
def test_dirty_bitmap_that_qemu_refuses(offset: int, value: bytes, why: str) -> None:
    result = PloopInspector.inspect(BytesSource(_with_bitmap_field(offset, value)))
    (refused,) = [f for f in result.findings if f.severity is Severity.UNSAFE]
    assert refused.code is Code.INVALID_HEADER
    assert why in refused.message


def test_bitmap_table_entry_past_eof() -> None:
    result = PloopInspector.inspect(BytesSource(_with_bitmap_field(32, struct.pack("<Q", 1 << 40))))
    assert {f.code for f in result.findings} >= {Code.OUT_OF_BOUNDS}


def test_stream_without_the_extension_is_unverifiable() -> None:
    with pytest.raises(UnverifiableError):
        PloopInspector.inspect(common.from_stream(BY_NAME["ext-bitmap"], window=4096))


def test_complete_stream_matches_the_file() -> None:
    assert not common.check_complete_stream(PloopInspector, BY_NAME["converted"]).findings


SAFE = [e for e in FIXTURES if e["safe"] and e["format"] == "ploop"]


@pytest.mark.parametrize("entry", SAFE, ids=common.name_of)
@common.FUZZ
@given(data=st.data())
def test_damage_gives_an_inspection_or_an_imgfmt_error(
    entry: dict[str, Any], data: st.DataObject
) -> None:
    image = common.head(entry["path"], HEAD)
    common.fuzz(PloopInspector, common.damaged(data, image, width=4), READ_BUDGET)

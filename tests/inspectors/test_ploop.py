"""PloopInspector against qemu-img made fixtures, hostile edits and random damage."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgfmt.errors import ImgfmtError, TruncatedError, UnverifiableError
from imgfmt.inspectors.ploop import PloopInspector
from imgfmt.report import Code, Severity
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.fixtures.build import build_recipe

FIXTURES: list[dict[str, Any]] = build_recipe("ploop")
BY_NAME = {entry["name"]: entry for entry in FIXTURES}
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024


def _inspect_file(entry: dict[str, Any]) -> tuple[Any, int]:
    with FileSource(entry["path"]) as source:
        assert PloopInspector.probe(source)
        result = PloopInspector.inspect(source)
        return result, source.bytes_read


@pytest.mark.parametrize("entry", FIXTURES, ids=lambda e: e["name"])
def test_fixture(entry: dict[str, Any]) -> None:
    if entry["format"] is None:
        with FileSource(entry["path"]) as source:
            assert not PloopInspector.probe(source)
        return
    try:
        result, bytes_read = _inspect_file(entry)
    except TruncatedError:
        # A header cut short stops parsing; detection reports it as a truncated image.
        assert "truncated" in entry["codes"]
        assert not entry["safe"]
        return
    assert result.format == "ploop"
    if entry["oracle"]:
        assert result.virtual_size == entry["oracle"]["virtual-size"]
    assert set(entry["codes"]) <= {str(f.code) for f in result.findings}
    assert entry["safe"] == all(f.severity < Severity.UNSAFE for f in result.findings)
    for key, value in entry["details"].items():
        assert result.details[key] == value
    json.dumps(dict(result.details))
    assert bytes_read < READ_BUDGET


def test_huge_image_checks_a_bounded_part_of_the_bat() -> None:
    result, bytes_read = _inspect_file(BY_NAME["huge"])
    assert [f.code for f in result.findings] == [Code.NOTE]
    assert bytes_read < 300 * 1024


def test_dirty_bitmap_is_described() -> None:
    result, _ = _inspect_file(BY_NAME["ext-bitmap"])
    (bitmap,) = result.details["dirty_bitmaps"]
    assert bitmap == {
        "id": "5f0e3c1a-9b2d-4e6f-8a7b-6c5d4e3f2a1b",
        "granularity": 64 * 1024,
        "l1_size": 1,
    }


def _with_bitmap_field(offset: int, value: bytes) -> bytes:
    """The ext-bitmap fixture with one dirty bitmap field changed and the checksum redone."""
    image = bytearray(_image(BY_NAME["ext-bitmap"]["path"]))
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
    data = Path(BY_NAME["ext-bitmap"]["path"]).read_bytes()
    stream = StreamSource.drain(io.BytesIO(data), head_window=4096, tail_window=4096)
    with pytest.raises(UnverifiableError):
        PloopInspector.inspect(stream)


def test_complete_stream_matches_the_file() -> None:
    entry = BY_NAME["converted"]
    data = Path(entry["path"]).read_bytes()
    result = PloopInspector.inspect(StreamSource.drain(io.BytesIO(data)))
    assert result.virtual_size == entry["oracle"]["virtual-size"]
    assert not result.findings


@cache
def _image(path: str) -> bytes:
    return Path(path).read_bytes()


def _survives(data: bytes) -> None:
    source = BytesSource(data)
    try:
        result = PloopInspector.inspect(source)
    except ImgfmtError:
        return
    assert isinstance(result.virtual_size, int)
    json.dumps(dict(result.details))
    assert source.bytes_read < READ_BUDGET


SAFE = [e for e in FIXTURES if e["safe"] and e["format"]]


@pytest.mark.parametrize("entry", SAFE, ids=lambda e: e["name"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damage_gives_an_inspection_or_an_imgfmt_error(
    entry: dict[str, Any], data: st.DataObject
) -> None:
    image = _image(entry["path"])
    head = min(len(image), HEAD)
    if data.draw(st.booleans(), label="truncate"):
        _survives(image[: data.draw(st.integers(0, head), label="length")])
        return
    damaged = bytearray(image[:head])
    edits = st.tuples(st.integers(0, head - 1), st.integers(0, 0xFFFFFFFF))
    for offset, value in data.draw(st.lists(edits, min_size=1, max_size=8), label="edits"):
        damaged[offset : offset + 4] = struct.pack("<I", value)[: head - offset]
    _survives(bytes(damaged))

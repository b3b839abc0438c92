"""VdiInspector against qemu-img made fixtures, hostile edits and random damage."""

from __future__ import annotations

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
from imgfmt.inspectors.vdi import VdiInspector
from imgfmt.report import Code, Severity
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.fixtures.build import build_recipe

FIXTURES: list[dict[str, Any]] = build_recipe("vdi")
BY_NAME = {entry["name"]: entry for entry in FIXTURES}
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024


def _inspect_file(entry: dict[str, Any]) -> tuple[Any, int]:
    with FileSource(entry["path"]) as source:
        assert VdiInspector.probe(source)
        result = VdiInspector.inspect(source)
        return result, source.bytes_read


@pytest.mark.parametrize("entry", FIXTURES, ids=lambda e: e["name"])
def test_fixture(entry: dict[str, Any]) -> None:
    if entry["format"] is None:
        with FileSource(entry["path"]) as source:
            assert not VdiInspector.probe(source)
        return
    try:
        result, bytes_read = _inspect_file(entry)
    except TruncatedError:
        # A header cut short stops parsing; detection reports it as a truncated image.
        assert "truncated" in entry["codes"]
        assert not entry["safe"]
        return
    assert result.format == "vdi"
    if entry["oracle"]:
        assert result.virtual_size == entry["oracle"]["virtual-size"]
    assert set(entry["codes"]) <= {str(f.code) for f in result.findings}
    assert entry["safe"] == all(f.severity < Severity.UNSAFE for f in result.findings)
    for key, value in entry["details"].items():
        assert result.details[key] == value
    json.dumps(dict(result.details))
    assert bytes_read < READ_BUDGET


def test_huge_image_checks_a_bounded_part_of_the_block_map() -> None:
    result, bytes_read = _inspect_file(BY_NAME["huge"])
    assert [f.code for f in result.findings] == [Code.NOTE]
    assert bytes_read < 300 * 1024


def test_parent_uuid_is_reported_with_its_offset() -> None:
    result, _ = _inspect_file(BY_NAME["diff-parent"])
    (backing,) = [f for f in result.findings if f.code is Code.BACKING_FILE]
    assert backing.offset == 0x1B8
    assert "67452301-ab89-efcd-0123-456789abcdef" in backing.message


def test_stream_without_the_block_map_is_unverifiable() -> None:
    data = Path(BY_NAME["huge"]["path"]).read_bytes()
    stream = StreamSource.drain(io.BytesIO(data), head_window=4096, tail_window=4096)
    with pytest.raises(UnverifiableError):
        VdiInspector.inspect(stream)


def test_complete_stream_matches_the_file() -> None:
    entry = BY_NAME["converted"]
    data = Path(entry["path"]).read_bytes()
    result = VdiInspector.inspect(StreamSource.drain(io.BytesIO(data)))
    assert result.virtual_size == entry["oracle"]["virtual-size"]
    assert not result.findings


@cache
def _image(path: str) -> bytes:
    return Path(path).read_bytes()


def _survives(data: bytes) -> None:
    source = BytesSource(data)
    try:
        result = VdiInspector.inspect(source)
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

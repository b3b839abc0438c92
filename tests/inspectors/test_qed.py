"""The qed inspector against images built by qemu-img 7.2 (tests/fixtures/recipes/qed.py)."""

from __future__ import annotations

import contextlib
import struct
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgfmt.errors import FormatError, ImgfmtError, TruncatedError
from imgfmt.inspectors.base import Inspection
from imgfmt.inspectors.qed import QedHeader, QedInspector, max_image_size
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource
from tests.fixtures.build import build_recipe

FIXTURES = build_recipe("qed")
BY_NAME = {str(entry["name"]): entry for entry in FIXTURES}
READ_BUDGET = 64 * 1024


@cache
def _bytes(name: str) -> bytes:
    with open(str(BY_NAME[name]["path"]), "rb") as f:
        return f.read()


def _outcome(entry: dict[str, Any]) -> tuple[Inspection | None, set[str]]:
    """The inspection, or None, with the codes that detection would report."""
    with FileSource(entry["path"]) as source:
        assert QedInspector.probe(source)
        try:
            inspection = QedInspector.inspect(source)
        except TruncatedError:
            return None, {"truncated"}
        except FormatError:
            return None, {"invalid-header"}
        assert source.bytes_read < READ_BUDGET
    return inspection, {str(f.code) for f in inspection.findings}


@pytest.mark.parametrize("entry", FIXTURES, ids=lambda e: str(e["name"]))
def test_fixture(entry: dict[str, Any]) -> None:
    inspection, codes = _outcome(entry)
    assert set(entry["codes"]) <= codes
    if inspection is None:
        assert not entry["safe"]
        return
    assert inspection.format == "qed"
    expected = entry["oracle"]["virtual-size"] if entry["oracle"] else entry["virtual_size"]
    assert inspection.virtual_size == expected
    unsafe = [f for f in inspection.findings if f.severity is Severity.UNSAFE]
    assert bool(unsafe) != entry["safe"], unsafe
    for key, value in entry["details"].items():
        assert inspection.details[key] == value, key


def test_backing_file_message() -> None:
    inspection, _ = _outcome(BY_NAME["passwd.qed"])
    assert inspection is not None
    (finding,) = [f for f in inspection.findings if f.code == "backing-file"]
    assert "'/etc/passwd'" in finding.message
    assert finding.offset == 0x38


def test_backing_fields_ignored_without_feature() -> None:
    data = bytearray(_bytes("backed.qed"))
    data[16:24] = bytes(8)
    inspection = QedInspector.inspect(BytesSource(bytes(data)))
    assert inspection.details["backing_file"] is None
    assert not inspection.findings


def test_backing_name_too_long() -> None:
    data = bytearray(_bytes("backed.qed"))
    data[60:64] = struct.pack("<I", 5000)
    inspection = QedInspector.inspect(BytesSource(bytes(data)))
    assert {"invalid-header", "backing-file"} <= {str(f.code) for f in inspection.findings}


def testmax_image_size_wraps_like_qemu() -> None:
    # 16 tables of 64 MiB clusters: 2^27 entries squared times 2^26 is 2^80, 0 in 64 bits.
    fields = (b"QED\0", 64 * 1024 * 1024, 16, 1, 0, 0, 0, 0, 0, 0, 0)
    assert max_image_size(QedHeader(*fields)) == 0


def test_probe_rejects_short_and_foreign_data() -> None:
    assert not QedInspector.probe(BytesSource(b"QE"))
    assert not QedInspector.probe(BytesSource(b"QFI\xfb" + bytes(100)))


NAMES = sorted(BY_NAME)
HEAD = 64 * 1024


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    cut=st.integers(min_value=0, max_value=HEAD),
    edits=st.lists(
        st.tuples(st.one_of(st.integers(0, 127), st.integers(0, HEAD - 1)), st.integers(0, 255)),
        max_size=12,
    ),
    truncate=st.booleans(),
)
def test_mutations_never_crash(
    name: str, cut: int, edits: list[tuple[int, int]], truncate: bool
) -> None:
    data = bytearray(_bytes(name)[:HEAD] if truncate else _bytes(name))
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    if truncate:
        del data[cut:]
    source = BytesSource(bytes(data))
    with contextlib.suppress(ImgfmtError):
        QedInspector.inspect(source)
    assert source.bytes_read < READ_BUDGET

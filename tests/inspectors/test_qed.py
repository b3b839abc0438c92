"""The qed inspector against images built by qemu-img 7.2 (tests/fixtures/recipes/qed.py)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.inspectors.qed import QedHeader, QedInspector, max_image_size
from imgfmt.source import BytesSource, FileSource
from tests.inspectors import common

FIXTURES = common.entries("qed")
BY_NAME = common.by_name(FIXTURES)
READ_BUDGET = 64 * 1024


def _bytes(name: str) -> bytes:
    return common.head(BY_NAME[name]["path"])


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(QedInspector, entry, READ_BUDGET)


def test_backing_file_message() -> None:
    with FileSource(BY_NAME["passwd.qed"]["path"]) as source:
        inspection = QedInspector.inspect(source)
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


HEAD = 64 * 1024
#: Half the edits land in the 128-byte header.
OFFSETS = st.one_of(st.integers(0, 127), st.integers(0, HEAD - 1))


@common.FUZZ
@given(name=st.sampled_from(sorted(BY_NAME)), whole=st.booleans(), data=st.data())
def test_mutations_never_crash(name: str, whole: bool, data: st.DataObject) -> None:
    image = common.head(BY_NAME[name]["path"], None if whole else HEAD)
    common.fuzz(QedInspector, common.damaged(data, image, OFFSETS, max_edits=12), READ_BUDGET)

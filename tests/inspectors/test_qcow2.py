"""The qcow2 inspector against images built by qemu-img 7.2 (tests/fixtures/recipes/qcow2.py)."""

from __future__ import annotations

import contextlib
import struct
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgfmt.errors import FormatError, ImgfmtError, TruncatedError, UnverifiableError
from imgfmt.inspectors.base import Inspection
from imgfmt.inspectors.qcow2 import MAX_EXTENSIONS, MAX_SNAPSHOTS_READ, Qcow2Inspector
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.fixtures.build import build_recipe

FIXTURES = build_recipe("qcow2")
BY_NAME = {str(entry["name"]): entry for entry in FIXTURES}
#: Far above what any fixture needs, far below the brief's 2 MiB ceiling.
READ_BUDGET = 256 * 1024


@cache
def _bytes(name: str) -> bytes:
    with open(str(BY_NAME[name]["path"]), "rb") as f:
        return f.read()


def _inspect_bytes(data: bytes) -> Inspection:
    return Qcow2Inspector.inspect(BytesSource(data))


def _outcome(entry: dict[str, Any]) -> tuple[Inspection | None, set[str]]:
    """The inspection, or None, with the codes that detection would report."""
    with FileSource(entry["path"]) as source:
        assert Qcow2Inspector.probe(source)
        try:
            inspection = Qcow2Inspector.inspect(source)
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
    assert inspection.format == "qcow2"
    expected = entry["oracle"]["virtual-size"] if entry["oracle"] else entry["virtual_size"]
    assert inspection.virtual_size == expected
    unsafe = [f for f in inspection.findings if f.severity is Severity.UNSAFE]
    assert bool(unsafe) != entry["safe"], unsafe
    for key, value in entry["details"].items():
        assert inspection.details[key] == value, key


def test_backing_file_message_names_file_and_field() -> None:
    inspection, _ = _outcome(BY_NAME["passwd.qcow2"])
    assert inspection is not None
    (finding,) = [f for f in inspection.findings if f.code == "backing-file"]
    assert "'/etc/passwd'" in finding.message
    assert "backing_file_offset at 0x8" in finding.message
    assert finding.offset == 8


def test_backing_format_from_extension() -> None:
    inspection, _ = _outcome(BY_NAME["backed.qcow2"])
    assert inspection is not None
    assert inspection.details["backing_file_format"] == "qcow2"


def test_snapshot_entries() -> None:
    inspection, _ = _outcome(BY_NAME["snapshots.qcow2"])
    assert inspection is not None
    snapshots = inspection.details["snapshots"]
    assert [(s["id"], s["name"]) for s in snapshots] == [("1", "first"), ("2", "second")]
    assert all(s["disk_size"] == 64 * 1024 * 1024 and s["vm_state_size"] == 0 for s in snapshots)


def test_bitmap_directory() -> None:
    inspection, _ = _outcome(BY_NAME["bitmap.qcow2"])
    assert inspection is not None
    assert inspection.details["bitmaps"] == [
        {"name": "backup-0", "granularity": 128 * 1024, "flags": 2}
    ]


def test_luks_details() -> None:
    inspection, codes = _outcome(BY_NAME["luks.qcow2"])
    assert inspection is not None
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


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    cut=st.integers(min_value=0, max_value=HEAD),
    edits=st.lists(
        st.tuples(st.one_of(st.integers(0, 511), st.integers(0, HEAD - 1)), st.integers(0, 255)),
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
        Qcow2Inspector.inspect(source)
    assert source.bytes_read < 2 * 1024 * 1024

"""IsoInspector against xorriso, genisoimage and mkudffs images, and edits of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgfmt.errors import ImgfmtError, TruncatedError
from imgfmt.inspectors.base import Inspection
from imgfmt.inspectors.iso import IsoInspector
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource
from tests.fixtures.build import build_recipe

FIXTURES = build_recipe("iso")
RAW_FIXTURES = build_recipe("raw")
#: Codes only detection can give (it sees the other inspectors matching too).
DETECTION_CODES = {"multiple-formats", "format-mismatch"}
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024
BIOS = {"bootable": True, "platforms": ["x86"], "entries": 1}
#: Structured details, compared by the keys listed (the fixtures' own details compare exactly).
STRUCTURED: dict[str, dict[str, Any]] = {
    "eltorito-bios.iso": {"el_torito": BIOS, "joliet": True},
    "isohybrid-mbr.iso": {
        "el_torito": BIOS,
        "partitions": [{"number": 1, "start": 0, "type": "0x17", "bootable": True}],
    },
    "protective-msdos.iso": {"partitions": [{"number": 1, "start": 512, "type": "0xcd"}]},
    "partition-offset.iso": {"partitions": [{"number": 1, "start": 64 * 512}]},
    "gpt-efi.iso": {
        "el_torito": {"bootable": True, "platforms": ["x86", "efi"], "entries": 2},
        "partitions": [
            {"number": 1, "type_name": "Microsoft basic data"},
            {"number": 2, "type_name": "EFI System", "size": 64 * 1024, "name": "Appended2"},
            {"number": 3, "type_name": "Microsoft basic data"},
        ],
    },
    "udf-bridge.iso": {
        "udf": {"nsr": 2, "revision": "1.02", "block_size": 2048, "logical_volume_id": "UDFBRIDGE"}
    },
    "udf-2.60.img": {"udf": {"nsr": 3, "revision": "2.60", "logical_volume_id": "UDF260"}},
    "udf-2.01-dvd.img": {"udf": {"nsr": 3, "revision": "2.01", "volume_id": "UDFDVD"}},
    "eltorito-bad-checksum.iso": {"el_torito": {"bootable": False, "entries": 0}},
}


def matches(actual: Any, expected: Any) -> bool:
    """``expected`` holds for ``actual``: dicts by their listed keys, lists item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


@pytest.mark.parametrize("entry", FIXTURES, ids=lambda e: e["name"])
def test_fixture(entry: dict[str, Any]) -> None:
    with FileSource(entry["path"]) as source:
        assert IsoInspector.probe(source)
        result = IsoInspector.inspect(source)
        assert source.bytes_read < READ_BUDGET
    assert result.format == "iso"
    if entry["oracle"]:
        assert result.virtual_size == entry["oracle"]["virtual-size"]
    codes = {str(f.code) for f in result.findings}
    assert set(entry["codes"]) - DETECTION_CODES <= codes
    unsafe = [f for f in result.findings if f.severity == Severity.UNSAFE]
    if entry["safe"]:
        assert not unsafe
    elif not set(entry["codes"]) <= DETECTION_CODES:
        assert unsafe
    for key, value in {**entry["details"], **STRUCTURED.get(entry["name"], {})}.items():
        assert matches(result.details[key], value), (key, result.details[key])
    for finding in result.findings:
        assert finding.message.startswith(("iso: ", "mbr: ", "gpt: "))


@pytest.mark.parametrize("entry", RAW_FIXTURES, ids=lambda e: e["name"])
def test_probe_rejects_raw_disks(entry: dict[str, Any]) -> None:
    with FileSource(entry["path"]) as source:
        assert not IsoInspector.probe(source)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0" * 0x8006,
        bytes(0x8000) + b"\x01CD00",
        bytes(0x8000) + b"\x07CD001\x01" + bytes(2040),
        bytes(0x8000) + b"\x00BEA01\x01" + bytes(2041) + b"\x00TEA01\x01",
        bytes(0x8001) + b"CD001" + bytes(0x10000),
    ],
    ids=["empty", "zeros", "short-id", "bad-type", "bea-without-nsr", "cd001-type-0"],
)
def test_probe_is_precise(data: bytes) -> None:
    expected = data[0x8000:0x8006] == b"\x00CD001"
    assert IsoInspector.probe(BytesSource(data)) is expected


def test_truncated_primary_descriptor_raises() -> None:
    with open(FIXTURES[0]["path"], "rb") as f:
        data = f.read(0x8000 + 100)
    with pytest.raises(TruncatedError):
        IsoInspector.inspect(BytesSource(data))


def _heads() -> list[bytes]:
    heads = []
    for entry in FIXTURES:
        with open(entry["path"], "rb") as f:
            heads.append(f.read(HEAD))
    return heads


HEADS = _heads()
#: Mutations land mostly where the parser looks: system area and descriptor set.
OFFSETS = st.one_of(
    st.integers(0, HEAD - 1),
    st.integers(0x1BE, 0x400),
    st.integers(0x8000, 0x9FFF),
)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, len(HEADS) - 1),
    edits=st.lists(st.tuples(OFFSETS, st.integers(0, 255)), max_size=16),
    cut=st.integers(0, HEAD),
)
def test_mutations_never_crash(index: int, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(HEADS[index])
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    source = BytesSource(bytes(data[:cut]) if cut < len(data) else bytes(data))
    try:
        result = IsoInspector.inspect(source)
    except ImgfmtError:
        return
    assert isinstance(result, Inspection)
    assert source.bytes_read < READ_BUDGET


class RecordingSource(BytesSource):
    """Bytes in memory that remember which ranges were read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ranges: list[tuple[int, int]] = []

    def _read(self, offset: int, length: int) -> bytes:
        self.ranges.append((offset, length))
        return super()._read(offset, length)


def _read_ranges() -> list[tuple[bytes, list[tuple[int, int]]]]:
    """Each small fixture whole, with the ranges a clean inspection reads."""
    found = []
    for entry in FIXTURES:
        with open(entry["path"], "rb") as f:
            data = f.read(WHOLE_LIMIT + 1)
        if len(data) <= WHOLE_LIMIT:
            source = RecordingSource(data)
            IsoInspector.inspect(source)
            found.append((data, source.ranges))
    return found


WHOLE_LIMIT = 8 * 1024 * 1024
READS = _read_ranges()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutations_of_what_is_read_never_crash(data: st.DataObject) -> None:
    """Boot catalogs and UDF descriptors lie past 64 KiB: mutate exactly what is read."""
    image, ranges = data.draw(st.sampled_from(READS))
    mutated = bytearray(image)
    for _ in range(data.draw(st.integers(1, 16))):
        offset, length = data.draw(st.sampled_from(ranges))
        at = data.draw(st.integers(offset, offset + max(0, length - 1)))
        if at < len(mutated):
            mutated[at] = data.draw(st.integers(0, 255))
    source = BytesSource(bytes(mutated))
    try:
        result = IsoInspector.inspect(source)
    except ImgfmtError:
        return
    assert isinstance(result, Inspection)

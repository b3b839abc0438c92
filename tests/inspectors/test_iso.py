"""IsoInspector against xorriso, genisoimage and mkudffs images, and edits of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import TruncatedError
from imgfmt.inspectors.iso import IsoInspector
from imgfmt.source import BytesSource, FileSource
from tests.inspectors import common

FIXTURES = common.entries("iso")
RAW_FIXTURES = common.entries("raw")
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


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    result = common.check_fixture(IsoInspector, entry, READ_BUDGET)
    assert result is not None
    for key, value in STRUCTURED.get(entry["name"], {}).items():
        assert common.matches(result.details[key], value), (key, result.details[key])
    for finding in result.findings:
        assert finding.message.startswith(("iso: ", "mbr: ", "gpt: "))


@pytest.mark.parametrize("entry", RAW_FIXTURES, ids=common.name_of)
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


def test_boot_catalog_cut_mid_entry_is_read_up_to_it() -> None:
    entry = next(e for e in FIXTURES if e["name"] == "eltorito-bios.iso")
    with open(entry["path"], "rb") as f:
        data = bytearray(f.read())
    first = IsoInspector.inspect(BytesSource(bytes(data)))
    catalog = first.details["el_torito"]["catalog_sector"] * 2048
    data[catalog + 64] = 0x91  # a final section header, cut after 6 of its 32 bytes
    cut = bytes(data[: catalog + 70])

    inspection = IsoInspector.inspect(BytesSource(cut))

    assert inspection.details["el_torito"] == BIOS | {"catalog_sector": catalog // 2048}


#: Mutations land mostly where the parser looks: system area and descriptor set.
OFFSETS = st.one_of(
    st.integers(0, HEAD - 1),
    st.integers(0x1BE, 0x400),
    st.integers(0x8000, 0x9FFF),
)


@common.FUZZ
@given(entry=st.sampled_from(FIXTURES), data=st.data())
def test_mutations_never_crash(entry: dict[str, Any], data: st.DataObject) -> None:
    image = common.damaged(data, common.head(entry["path"], HEAD), OFFSETS, max_edits=16)
    common.survives(IsoInspector.inspect, BytesSource(image), READ_BUDGET)


READS = common.read_ranges(IsoInspector.inspect, FIXTURES)


@common.FUZZ
@given(data=st.data())
def test_mutations_of_what_is_read_never_crash(data: st.DataObject) -> None:
    """Boot catalogs and UDF descriptors lie past 64 KiB: mutate exactly what is read."""
    path, ranges = data.draw(st.sampled_from(READS))
    edits = common.edits_in(data, ranges)
    with FileSource(path) as parent:
        common.survives(IsoInspector.inspect, common.EditedSource(parent, edits))

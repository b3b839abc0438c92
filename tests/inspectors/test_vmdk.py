"""VMDK inspector: every fixture against its manifest, qemu's descriptor quirks, fuzzing."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import TruncatedError
from imgfmt.inspectors.base import Inspection
from imgfmt.inspectors.vmdk import VmdkInspector
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource, SliceSource, StreamSource
from tests.inspectors import common

FIXTURES = common.entries("vmdk")
BY_NAME = common.by_name(FIXTURES)
#: Every fixture is read well inside this, whatever its virtual size.
READ_BUDGET = 256 * 1024
FUZZ_WINDOW = 64 * 1024

HEADER = (
    "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
    'createType="monolithicFlat"\n'
)


def _descriptor(text: str) -> Inspection:
    return VmdkInspector.inspect(BytesSource(text.encode()))


def _codes_of(result: Inspection) -> set[str]:
    return {str(f.code) for f in result.findings}


def _unsafe(result: Inspection) -> list[str]:
    return [f.message for f in result.findings if f.severity is Severity.UNSAFE]


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(VmdkInspector, entry, READ_BUDGET)


@pytest.mark.parametrize("name", ["stream-footer.vmdk", "huge-1t.vmdk", "flat.vmdk"])
def test_stream_source_agrees_with_file(name: str) -> None:
    path = Path(str(BY_NAME[name]["path"]))
    with FileSource(path) as source:
        expected = VmdkInspector.inspect(source)
    with open(path, "rb") as f:
        stream = StreamSource.drain(f, name, head_window=1024 * 1024)
    assert VmdkInspector.inspect(stream) == expected


def test_bad_magic_is_no_sparse_extent() -> None:
    data = bytearray(common.head(str(BY_NAME["sparse.vmdk"]["path"]), FUZZ_WINDOW))
    data[:4] = b"KDMX"
    source = BytesSource(bytes(data))
    assert not VmdkInspector.probe(source)
    result = VmdkInspector.inspect(source)
    assert "invalid-header" in _codes_of(result)
    assert not result.virtual_size


def test_probe_rejects_other_data() -> None:
    assert not VmdkInspector.probe(BytesSource(b""))
    assert not VmdkInspector.probe(BytesSource(b"QFI\xfb" + bytes(508)))
    assert not VmdkInspector.probe(BytesSource(b"#!/bin/sh\necho version=1\n"))
    assert VmdkInspector.probe(BytesSource(b"# comment\n  \nversion=2\nCID=1\n"))


def test_descriptor_file_sums_extents() -> None:
    text = HEADER + (
        '# Extents\nRW 2048 FLAT "a.img" 0\nRDONLY 100 FLAT "b.img" 0\nRW 4096 VMFS "c.img"\n'
        "RW 8 ZERO\n"
    )
    result = _descriptor(text)
    assert result.virtual_size == (2048 + 4096) * 512
    names = [e["filename"] for e in result.details["extents"]]
    assert names == ["a.img", "b.img", "c.img", None]
    external = [f.message for f in result.findings if str(f.code) == "external-extent"]
    assert len(external) == 3
    assert all(any(n in m for m in external) for n in ("a.img", "b.img", "c.img"))


def test_blank_line_before_extent_is_opened_twice() -> None:
    # qemu's sscanf skips the newline of a blank line and reads the next line's extent too.
    result = _descriptor(HEADER + '\nRW 2048 FLAT "a.img" 0\n')
    assert result.virtual_size == 2 * 2048 * 512


def test_extent_split_across_lines_is_found() -> None:
    result = _descriptor(HEADER + '# x\nRW\n2048 FLAT\n"/etc/shadow" 0\n')
    assert result.virtual_size == 2048 * 512
    messages = [f.message for f in result.findings if str(f.code) == "external-extent"]
    assert any("/etc/shadow" in m for m in messages)
    assert "invalid-header" in _codes_of(result)


def test_qemu_refuses_flat_without_offset() -> None:
    result = _descriptor(HEADER + '# x\nRW 2048 FLAT "a.img"\n')
    assert any("refuses the extent line" in m for m in _unsafe(result))


def test_create_type_read_from_first_occurrence() -> None:
    text = '# createType="vmfs"\n' + HEADER + '# x\nRW 1 FLAT "a" 0\n'
    result = _descriptor(text)
    assert result.details["create_type"] == "vmfs"
    assert any("first place" in m for m in _unsafe(result))


def test_parent_hint_anywhere_is_a_backing_file() -> None:
    text = HEADER + '# parentFileNameHint="/etc/passwd"\n'
    result = _descriptor(text)
    assert any("/etc/passwd" in f.message for f in result.findings if str(f.code) == "backing-file")


def test_parent_cid_alone_is_a_backing_file() -> None:
    result = _descriptor(HEADER.replace("parentCID=ffffffff", "parentCID=0badc0de"))
    assert "backing-file" in _codes_of(result)


def test_ddb_keys_comments_and_blank_lines_are_fine() -> None:
    text = HEADER + '\n# comment\n   \r\nddb.anything.at.all = "x"\nddb.uuid = "60 00 C2"\n'
    result = _descriptor(text)
    # Only the missing extent is unsafe: the comments, blank lines and ddb keys are fine.
    assert [m for m in _unsafe(result) if "no extent" not in m] == []
    assert result.virtual_size == 0


@pytest.mark.parametrize(
    "extents", ["", "RW 8 ZERO\n", 'RDONLY 100 FLAT "a.img" 0\n', 'RW 0 FLAT "a.img" 0\n']
)
def test_descriptor_without_qemu_extents_is_unsafe(extents: str) -> None:
    # qemu-img 7.2 opens such a descriptor with no extent and aborts in vmdk_get_info.
    result = _descriptor(HEADER + "# x\n" + extents)
    assert any("lists no extent qemu 7.2 opens" in m for m in _unsafe(result))


def test_unknown_lines_and_keys_are_unsafe() -> None:
    result = _descriptor(HEADER + 'what is this\nfoo=bar\nRW 10 WEIRD "x"\n')
    assert {"invalid-header", "unknown-feature"} <= _codes_of(result)


def test_descriptor_longer_than_cap() -> None:
    text = HEADER + "# " + "x" * (70 * 1024) + "\n"
    result = _descriptor(text)
    assert any("runs past" in m for m in _unsafe(result))


def test_descriptor_in_a_member_cut_short_is_truncated() -> None:
    # An OVA member whose archive ends early: the slice claims more bytes than it serves.
    archive = BytesSource((HEADER + 'RW 8 FLAT "x.img" 0\n').encode())
    member = SliceSource(archive, 0, 64 * 1024, "cut.ova:disk.vmdk")

    with pytest.raises(TruncatedError, match="descriptor text"):
        VmdkInspector.inspect(member)


def test_numbers_of_thousands_of_digits_saturate() -> None:
    # int() refuses more than 4300 digits; qemu's strtol saturates.
    many = "9" * 5000
    result = _descriptor(HEADER + f'RW {many} FLAT "a.img" {many}\n')
    assert result.virtual_size == (2**63 - 1) * 512


def test_blank_lines_before_an_extent_line_scan_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each blank line's scan reached the same long number: 32000 lines took 1.3 s of CPU.
    from imgfmt.inspectors import vmdk

    scans: list[int] = []
    scan = vmdk._scan_extent_line

    def counted(text: str, pos: int, following: list[int]) -> list[str | int]:
        scans.append(pos)
        return scan(text, pos, following)

    monkeypatch.setattr(vmdk, "_scan_extent_line", counted)
    text = HEADER + 'RW 8 FLAT "a.img" 0\n' + "\n" * 30_000 + "RW " + "9" * 30_000

    result = _descriptor(text)

    assert len(scans) == len(set(scans)) == 7
    assert result.virtual_size == 8 * 512


@pytest.mark.parametrize("version", ["\xb2", "1" * 5000])
def test_version_that_is_no_64_bit_number_is_kept_as_text(version: str) -> None:
    text = HEADER.replace("version=1", f'version="{version}"') + 'RW 8 FLAT "a.img" 0\n'
    result = VmdkInspector.inspect(BytesSource(text.encode("latin-1")))
    assert result.details["version"] == version
    assert "unsupported-version" in _codes_of(result)


def test_many_extents_are_capped() -> None:
    text = HEADER + "# x\n" + 'RW 1 VMFS "a"\n' * 4200
    result = _descriptor(text)
    assert result.virtual_size == 4200 * 512
    assert len(result.details["extents"]) == 4096
    assert len(result.findings) < 4200


def test_extent_files_past_a_few_dozen_are_summed_up() -> None:
    # 3650 findings a 64 KiB descriptor: an OVA of 100 such printed 76 MB in 14 s.
    # A file named only by qemu's scan across lines is in no details list: it comes first.
    text = HEADER + "# x\n" + 'RW 1 VMFS "a"\n' * 100 + 'RW\n2048 FLAT\n"/etc/shadow" 0\n'
    result = _descriptor(text)

    external = [f.message for f in result.findings if str(f.code) == "external-extent"]
    assert len(external) == 65
    assert "'/etc/shadow'" in external[0]
    assert external[-1].startswith("vmdk: 37 more extents name files outside this image")
    assert len(result.details["extents"]) == 100


def test_embedded_extent_with_path_is_external() -> None:
    data = bytearray(common.head(str(BY_NAME["sparse.vmdk"]["path"]), FUZZ_WINDOW))
    text = bytes(data[0x200:0x2A00]).split(b"\0", 1)[0]
    edited = text.replace(b'"sparse.vmdk"', b'"../x.vmdk"')
    data[0x200 : 0x200 + len(edited) + 1] = edited + b"\0"
    result = VmdkInspector.inspect(BytesSource(bytes(data)))
    assert "external-extent" in _codes_of(result)


def test_capacity_beyond_qemu_limits() -> None:
    data = bytearray(common.head(str(BY_NAME["sparse.vmdk"]["path"]), FUZZ_WINDOW))
    data[0x0C:0x14] = struct.pack("<Q", 1 << 62)
    result = VmdkInspector.inspect(BytesSource(bytes(data)))
    assert "invalid-header" in _codes_of(result)


#: Half the edits land in the header and the embedded descriptor.
OFFSETS = st.one_of(st.integers(0, 0x2A00 - 1), st.integers(0, FUZZ_WINDOW - 1))


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
@common.FUZZ
@given(data=st.data())
def test_mutations_never_crash(entry: dict[str, Any], data: st.DataObject) -> None:
    image = common.head(str(entry["path"]), FUZZ_WINDOW)
    common.fuzz(VmdkInspector, common.damaged(data, image, OFFSETS))

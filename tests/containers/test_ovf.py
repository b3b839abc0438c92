"""OVF descriptors: facts Glance imports, forbidden XML, hrefs, units; fuzzed XML."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgfmt.containers.ovf import Descriptor, href_problem, inspect_files, unit_multiplier
from imgfmt.errors import FormatError, ImgfmtError
from imgfmt.report import ImageReport
from imgfmt.source import BytesSource, Source
from tests.fixtures.recipes.ova import _LAUGHS, _XXE, descriptor


def test_descriptor_facts() -> None:
    parsed = Descriptor.from_bytes(descriptor(), "ovf")

    assert parsed.details["virtual_system"] == "imgfmt-appliance"
    assert parsed.details["operating_system"]["id"] == "96"
    assert parsed.details["cpus"] == 2
    assert parsed.details["memory"] == 512 << 20
    assert parsed.details["cim_pasd_InstructionSet"] == "x86:64"
    assert [(f.id, f.href) for f in parsed.files] == [("file1", "disk.vmdk")]
    assert parsed.disks[0].capacity == 16 << 20
    assert parsed.findings == ()


@pytest.mark.parametrize("hostile", [_XXE, _LAUGHS], ids=["xxe", "billion-laughs"])
def test_entities_are_findings_never_expanded(hostile: tuple[str, str]) -> None:
    parsed = Descriptor.from_bytes(descriptor(hostile=hostile), "ovf")
    assert [str(f.code) for f in parsed.findings] == ["unsafe-xml"]
    assert parsed.files == ()


def test_not_an_envelope_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        Descriptor.from_bytes(b"<html/>", "ovf")


_EVIL = '<File ovf:id="file2" ovf:href="evil.vmdk"/>'


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("<Name>", f"<References>{_EVIL}</References><Name>"),
        ("</References>", f"</References><References>{_EVIL}</References>"),
        ("</References>", _EVIL.replace("File", "Extra") + "</References>"),
    ],
    ids=["nested", "second", "not-a-file"],
)
def test_references_readers_disagree_on_are_unsafe(old: str, new: str) -> None:
    # Glance takes the children of the last References at any depth, whatever their names.
    data = descriptor().replace(old.encode(), new.encode(), 1)
    parsed = Descriptor.from_bytes(data, "ovf")

    assert [str(f.code) for f in parsed.findings] == ["unsafe-member"]
    assert [f.href for f in parsed.files] == ["disk.vmdk", "evil.vmdk"]


def test_a_repeated_href_is_inspected_once() -> None:
    # 4 MiB of descriptor holds ~90,000 Files: one disk inspected that often takes hours.
    files = "".join(f'<File ovf:id="f{i}" ovf:href="disk.vmdk"/>' for i in range(1000))
    data = descriptor().replace(b"</References>", files.encode() + b"</References>")
    inspected: list[Source] = []

    def inspect_member(source: Source) -> ImageReport:
        inspected.append(source)
        return ImageReport(source.name, "raw", 1, 1)

    parsed = Descriptor.from_bytes(data, "ovf")
    reports, findings = inspect_files(parsed, lambda _: BytesSource(b"x"), inspect_member, "ovf")

    assert len(inspected) == 1
    assert list(reports) == ["file1"]
    assert {str(f.code) for f in findings} == {"unsafe-member"}
    assert len(findings) == 1000


@pytest.mark.parametrize(
    ("where", "element"),
    [("</References>", "<Junk/>"), ("</DiskSection>", "<Disk/>")],
    ids=["files", "disks"],
)
def test_more_files_or_disks_than_any_package_is_a_format_error(where: str, element: str) -> None:
    # Each was a finding or two: 900,000 References children in 3.6 MB took 7 s and 790 MB.
    data = descriptor().replace(where.encode(), (element * 2000 + where).encode())
    with pytest.raises(FormatError, match="lists 20"):
        Descriptor.from_bytes(data, "ovf")


@pytest.mark.parametrize("order", ["plain-first", "ovf-first"])
def test_an_attribute_given_twice_is_a_finding(order: str) -> None:
    # imgfmt and Glance take the first href, virt-v2v and other XPath readers ovf:href.
    both = ['href="evil.vmdk"', 'ovf:href="disk.vmdk"']
    if order == "ovf-first":
        both.reverse()
    data = descriptor().replace(b'ovf:href="disk.vmdk"', " ".join(both).encode())

    parsed = Descriptor.from_bytes(data, "ovf")

    assert [str(f.code) for f in parsed.findings] == ["invalid-header"]
    assert "evil.vmdk" in parsed.findings[0].message


def test_attributes_given_twice_are_summed_up_past_a_few() -> None:
    # One finding each: 60,000 in a 2.5 MB descriptor took 1.3 s to print, 4 MiB holds more.
    spaces = " ".join(f'xmlns:n{i}="urn:{i}"' for i in range(40))
    hrefs = " ".join(f'n{i}:href="{i}.vmdk"' for i in range(40))
    data = descriptor().replace(b"<Envelope ", f"<Envelope {spaces} ".encode(), 1)
    data = data.replace(b'ovf:href="disk.vmdk"', f'ovf:href="disk.vmdk" {hrefs}'.encode())

    parsed = Descriptor.from_bytes(data, "ovf")

    assert [str(f.code) for f in parsed.findings] == ["invalid-header"] * 17
    assert parsed.findings[-1].message == "ovf: 24 more attributes given twice"


@pytest.mark.parametrize(
    ("href", "bad"),
    [
        ("disk.vmdk", False),
        ("sub/disk.vmdk", False),
        ("../disk.vmdk", True),
        ("/etc/passwd", True),
        ("http://example.com/x", True),
        ("file:///etc/passwd", True),
        ("C:\\x", True),
    ],
)
def test_href_problems(href: str, bad: bool) -> None:
    assert (href_problem(href) is not None) is bad


@pytest.mark.parametrize(
    ("units", "multiplier"),
    [
        ("byte", 1),
        ("byte * 2^20", 1 << 20),
        ("byte*10^3", 1000),
        ("MegaBytes", 1 << 20),
        ("byte * 3^2", None),
        ("furlong", None),
        ("byte * 2^" + "1" * 5000, None),
    ],
)
def test_units(units: str, multiplier: int | None) -> None:
    assert unit_multiplier(units) == multiplier


def test_numbers_too_long_for_int_are_findings() -> None:
    huge = "9" * 5000
    data = descriptor().replace(b'ovf:capacity="16"', f'ovf:capacity="{huge}"'.encode())
    data = data.replace(b"<rasd:VirtualQuantity>2<", f"<rasd:VirtualQuantity>{huge}<".encode())
    data = data.replace(b'ovf:href="disk.vmdk"', f'ovf:href="disk.vmdk" ovf:size="{huge}"'.encode())

    parsed = Descriptor.from_bytes(data, "ovf")

    assert [str(f.code) for f in parsed.findings] == ["capacity-mismatch"]
    assert parsed.disks[0].capacity is None
    assert parsed.files[0].size is None
    assert "cpus" not in parsed.details


@settings(max_examples=300, deadline=None)
@given(
    cut=st.integers(0, 4000),
    edits=st.lists(st.tuples(st.integers(0, 3999), st.sampled_from(b"<>&;\"'=/!x ")), max_size=6),
)
def test_mutated_descriptors_never_crash(cut: int, edits: list[tuple[int, int]]) -> None:
    data = bytearray(descriptor())
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    with contextlib.suppress(ImgfmtError):
        Descriptor.from_bytes(bytes(data[:cut]), "ovf")

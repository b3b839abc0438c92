"""OVF descriptors (DMTF DSP0243, Open Virtualization Format 1.x/2.x), and a bare ``.ovf``.

References: DSP0243 2.1.1, clause 7 (Envelope, References/File with ``ovf:href``, ``ovf:size``
and ``ovf:compression``), 9.1 (DiskSection/Disk: ``ovf:capacity`` and
``ovf:capacityAllocationUnits``), 9.5 (VirtualHardwareSection, RASD items: ResourceType 3 is a
processor, 4 memory), 9.7 (OperatingSystemSection); DSP0004 Annex C.1 for programmatic units
(``byte * 2^30``). Glance (glance/async_/flows/ovf_process.py) imports elements of the
CIM_ProcessorAllocationSettingData namespace named in its ovf-metadata.json as
``cim_pasd_<name>``; the names below are its sample file's.

A descriptor is attacker text: it is parsed with defusedxml with DTDs, entities and external
references forbidden, so any of them is an ``unsafe-xml`` finding and is never expanded or
fetched. Elements are matched by local name whatever their namespace prefix, as Glance does.

A bare ``.ovf`` (``OvfContainer``) is read with the files its References name, which must lie
beside it: an absolute ``href``, one with ``..`` or a URL is ``unsafe-member`` and is not opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple
from xml.etree.ElementTree import Element, ParseError

from ..errors import FormatError
from ..report import Code, Finding, ImageReport, unsafe, warning
from ..source import FileSource, Source
from .base import Container, ContainerInspection, InspectMember
from .tarsafe import unsafe_path

FORMAT = "ovf"
#: Largest descriptor read; real ones are tens of KiB.
MAX_DESCRIPTOR = 4 * 1024 * 1024
#: Files (children of References) and Disk elements read; a package holds a few. Each is a
#: finding or an inspection: 900000 References children in 3.6 MB made 1.8 million findings.
MAX_FILES = 1024
MAX_DISKS = 1024
#: Attributes given twice reported one by one before the rest are summed up: each takes a
#: namespace declaration, so 4 MiB of descriptor held 100000 of them.
MAX_ATTRIBUTE_FINDINGS = 16
#: What a descriptor's first bytes must show for the probe.
PROBE_WINDOW = 4096
#: Longest decimal number read from a descriptor: 20 digits hold any 64-bit value, and Python
#: refuses to convert strings past 4300 digits.
MAX_DIGITS = 20
#: CIM_ProcessorAllocationSettingData properties Glance imports (its ovf-metadata.json sample).
CIM_PASD_PROPERTIES = ("ProcessorArchitecture", "InstructionSet", "InstructionSetExtensionName")
CIM_PASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ProcessorAllocationSettingData"
_ENVELOPE_NS = b"schemas.dmtf.org/ovf/envelope/"
#: DSP0004 Annex C.1 programmatic units for bytes, and the names older VMware tools write.
_UNIT = re.compile(r"^byte(?:\s*\*\s*(\d+)\s*\^\s*(\d+))?$")
_LEGACY_UNITS = {"bytes": 1, "kilobytes": 1 << 10, "megabytes": 1 << 20, "gigabytes": 1 << 30}
#: Attributes imgfmt reads, by local name whatever their namespace.
_READ_ATTRIBUTES = frozenset(
    {
        "id",
        "href",
        "size",
        "compression",
        "diskId",
        "fileRef",
        "capacity",
        "capacityAllocationUnits",
        "format",
    }
)
_RESOURCE_CPU = "3"
_RESOURCE_MEMORY = "4"


class OvfFile(NamedTuple):
    """A References/File entry: what the package must hold under ``href``."""

    id: str
    href: str
    size: int | None
    compression: str | None


class OvfDisk(NamedTuple):
    """A DiskSection/Disk: the file it lives in and its declared capacity in bytes."""

    disk_id: str
    file_ref: str | None
    capacity: int | None
    capacity_text: str
    units: str
    format: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk_id": self.disk_id,
            "file_ref": self.file_ref,
            "capacity": self.capacity,
            "capacity_allocation_units": self.units,
            "format": self.format,
        }


class Descriptor(NamedTuple):
    """The parts of an OVF descriptor imgfmt checks and reports."""

    files: tuple[OvfFile, ...] = ()
    disks: tuple[OvfDisk, ...] = ()
    details: Mapping[str, Any] = {}
    findings: tuple[Finding, ...] = ()

    @classmethod
    def from_bytes(cls, data: bytes, fmt: str) -> Descriptor:
        """Parse a descriptor; forbidden XML is a finding, malformed XML a ``FormatError``."""
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring

        try:
            root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except DefusedXmlException as exc:
            message = (
                f"{fmt}: the descriptor carries {type(exc).__name__} ({exc}); a DTD, entity or "
                "external reference could expand or fetch content, so it was not read"
            )
            return cls(findings=(unsafe(Code.UNSAFE_XML, message),))
        except (ParseError, ValueError, LookupError) as exc:
            raise FormatError(fmt, f"the descriptor is not well-formed XML: {exc}") from None
        if _local(root.tag) != "Envelope":
            raise FormatError(fmt, f"the descriptor's root is {_local(root.tag)}, not Envelope")
        _check_counts(root, fmt)
        files = tuple(_files(root))
        disks, findings = _disks(root, fmt)
        findings = _reference_findings(root, fmt) + _attribute_findings(root, fmt) + findings
        return cls(files, disks, _system_details(root), tuple(findings))


def descriptor_details(descriptor: Descriptor) -> dict[str, Any]:
    """The descriptor's facts as report details."""
    files = [{"id": f.id, "href": f.href, "size": f.size} for f in descriptor.files]
    disks = [d.to_dict() for d in descriptor.disks]
    return {**descriptor.details, "files": files, "disks": disks}


def href_problem(href: str) -> str | None:
    """Why a References href must not be followed, or ``None``."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", href) and not re.match(r"^[A-Za-z]:[\\/]", href):
        return "is a URL; the package must hold the file itself"
    return unsafe_path(href)


def inspect_files(
    descriptor: Descriptor,
    open_file: Callable[[OvfFile], Source | None],
    inspect_member: InspectMember,
    fmt: str,
) -> tuple[dict[str, ImageReport], list[Finding]]:
    """Inspect every referenced file ``open_file`` can find; file id -> report, and findings."""
    reports: dict[str, ImageReport] = {}
    findings: list[Finding] = []
    ids: set[str] = set()
    hrefs: dict[str, str] = {}
    for ref in descriptor.files:
        if ref.id in ids:
            message = (
                f"{fmt}: File id {ref.id!r} is repeated (href {ref.href!r}); a Disk's fileRef "
                "could name either file, so readers disagree on the disk"
            )
            findings.append(unsafe(Code.UNSAFE_MEMBER, message))
            continue
        ids.add(ref.id)
        if ref.href in hrefs:
            # Each repeat would inspect the same disk again: a small descriptor, endless work.
            message = (
                f"{fmt}: File {ref.id!r} repeats the href {ref.href!r} of File "
                f"{hrefs[ref.href]!r}; it was not inspected again"
            )
            findings.append(unsafe(Code.UNSAFE_MEMBER, message))
            continue
        hrefs[ref.href] = ref.id
        problem = href_problem(ref.href)
        if problem is not None:
            message = f"{fmt}: File {ref.id!r} href {ref.href!r} {problem}; it was not opened"
            findings.append(unsafe(Code.UNSAFE_MEMBER, message))
            continue
        source = open_file(ref)
        if source is None:
            message = f"{fmt}: File {ref.id!r} names {ref.href!r}, which the package lacks"
            findings.append(unsafe(Code.MISSING_MEMBER, message))
            continue
        findings.extend(_size_findings(ref, source, fmt))
        reports[ref.id] = inspect_member(source)
    return reports, findings


def disk_findings(
    descriptor: Descriptor, reports: dict[str, ImageReport], fmt: str
) -> list[Finding]:
    """Each disk's declared capacity against the virtual size of the file it names."""
    findings = []
    for disk in descriptor.disks:
        report = reports.get(disk.file_ref or "")
        if report is None or disk.capacity is None:
            continue
        if report.virtual_size is None:
            message = (
                f"{fmt}: disk {disk.disk_id!r} declares {disk.capacity} bytes, but the virtual "
                f"size of {report.path} could not be established to check it"
            )
            findings.append(unsafe(Code.CAPACITY_MISMATCH, message))
        elif report.virtual_size != disk.capacity:
            message = (
                f"{fmt}: disk {disk.disk_id!r} declares {disk.capacity} bytes "
                f"({disk.capacity_text} x {disk.units}), but {report.path} holds a "
                f"{report.virtual_size}-byte disk; the descriptor does not describe its disk"
            )
            findings.append(unsafe(Code.CAPACITY_MISMATCH, message))
    return findings


def first_disk(
    descriptor: Descriptor, reports: dict[str, ImageReport]
) -> tuple[str | None, int | None]:
    """The format and virtual size of the first disk, as Glance stores an OVA's disk."""
    for disk in descriptor.disks:
        report = reports.get(disk.file_ref or "")
        if report is not None:
            return report.disk_format, report.virtual_size
    return None, None


class OvfContainer(Container):
    """A bare OVF descriptor with its files beside it."""

    format = FORMAT

    @classmethod
    def probe(cls, source: Source) -> bool:
        from ..inspectors.base import probe_bytes

        head = probe_bytes(source, 0, PROBE_WINDOW).lstrip(b"\xef\xbb\xbf \t\r\n")
        return head.startswith(b"<") and b"Envelope" in head and _ENVELOPE_NS in head

    @classmethod
    def inspect(cls, source: Source, inspect_member: InspectMember) -> ContainerInspection:
        size = source.size or 0
        if size > MAX_DESCRIPTOR:
            raise FormatError(FORMAT, f"descriptor of {size} bytes is over {MAX_DESCRIPTOR}")
        descriptor = Descriptor.from_bytes(source.read(0, size), FORMAT)
        findings = list(descriptor.findings)
        if isinstance(source, FileSource):
            opener = _beside(os.path.dirname(os.path.abspath(source.name)))
            reports, found = inspect_files(descriptor, opener, inspect_member, FORMAT)
        else:
            reports, found = {}, [_unreachable(descriptor)] if descriptor.files else []
        findings += found + disk_findings(descriptor, reports, FORMAT)
        disk_format, virtual_size = first_disk(descriptor, reports)
        return ContainerInspection(
            FORMAT,
            disk_format,
            virtual_size,
            descriptor_details(descriptor),
            tuple(findings),
            tuple(reports.values()),
        )


def _beside(directory: str) -> Callable[[OvfFile], Source | None]:
    def open_file(ref: OvfFile) -> Source | None:
        path = os.path.join(directory, ref.href)
        real = os.path.realpath(path)
        if os.path.commonpath([real, os.path.realpath(directory)]) != os.path.realpath(directory):
            return None
        if not os.path.isfile(real):
            return None
        return FileSource(real)

    return open_file


def _unreachable(descriptor: Descriptor) -> Finding:
    names = ", ".join(repr(f.href) for f in descriptor.files)
    return unsafe(
        Code.STREAM_UNVERIFIABLE,
        f"{FORMAT}: the descriptor names {names}, which cannot be found beside a stream; "
        "inspect the .ovf file in its directory",
    )


def _size_findings(ref: OvfFile, source: Source, fmt: str) -> list[Finding]:
    if ref.size is None or ref.size == source.size or ref.compression:
        return []
    message = f"{fmt}: File {ref.id!r} declares {ref.size} bytes, {ref.href!r} has {source.size}"
    return [warning(Code.INVALID_HEADER, message)]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _attr(element: Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _children(element: Element, name: str) -> Iterator[Element]:
    return (child for child in element if _local(child.tag) == name)


def _descendants(element: Element, name: str) -> Iterator[Element]:
    return (node for node in element.iter() if _local(node.tag) == name)


def _text(element: Element, name: str) -> str | None:
    child = next(_children(element, name), None)
    return child.text.strip() if child is not None and child.text else None


def _files(root: Element) -> Iterator[OvfFile]:
    # Every child of every References, wherever it is: Glance's OVF parser takes the children
    # of the last References element it meets, at any depth and whatever their names.
    for references in _descendants(root, "References"):
        for node in references:
            size = _attr(node, "size")
            yield OvfFile(
                id=_attr(node, "id") or "",
                href=_attr(node, "href") or "",
                size=_decimal(size) if size else None,
                compression=_attr(node, "compression"),
            )


def _check_counts(root: Element, fmt: str) -> None:
    files = sum(len(references) for references in _descendants(root, "References"))
    disks = sum(1 for _ in _descendants(root, "Disk"))
    for what, count, cap in (("files", files, MAX_FILES), ("Disk elements", disks, MAX_DISKS)):
        if count > cap:
            raise FormatError(
                fmt, f"the descriptor lists {count} {what}; imgfmt checks no more than {cap}"
            )


def _reference_findings(root: Element, fmt: str) -> list[Finding]:
    """DSP0243 7.1: one References, a child of the Envelope, holding File elements only."""
    findings = []
    found = list(_descendants(root, "References"))
    if len(found) > 1 or any(node not in list(root) for node in found):
        message = (
            f"{fmt}: {len(found)} References elements, not one child of the Envelope; readers "
            "disagree on which lists the package's files"
        )
        findings.append(unsafe(Code.UNSAFE_MEMBER, message))
    for node in (child for references in found for child in references):
        if _local(node.tag) != "File":
            message = (
                f"{fmt}: References holds a {_local(node.tag)} element (href "
                f"{_attr(node, 'href')!r}); readers disagree on whether it names a file"
            )
            findings.append(unsafe(Code.UNSAFE_MEMBER, message))
    return findings


def _attribute_findings(root: Element, fmt: str) -> list[Finding]:
    """An attribute imgfmt reads given twice with two values (``href`` and ``ovf:href``):
    imgfmt and Glance take the first, namespace-aware readers the ``ovf:`` one."""
    findings = []
    repeats = 0
    for node in root.iter():
        values: dict[str, str] = {}
        for key, value in node.attrib.items():
            name = _local(key)
            if name in _READ_ATTRIBUTES and values.setdefault(name, value) != value:
                repeats += 1
                if repeats > MAX_ATTRIBUTE_FINDINGS:
                    continue
                message = (
                    f"{fmt}: a {_local(node.tag)} element gives {name} twice, "
                    f"{values[name]!r} and {value!r}; readers disagree on which counts"
                )
                findings.append(unsafe(Code.INVALID_HEADER, message))
    if repeats > MAX_ATTRIBUTE_FINDINGS:
        message = f"{fmt}: {repeats - MAX_ATTRIBUTE_FINDINGS} more attributes given twice"
        findings.append(unsafe(Code.INVALID_HEADER, message))
    return findings


def _disks(root: Element, fmt: str) -> tuple[tuple[OvfDisk, ...], list[Finding]]:
    disks, findings = [], []
    for node in _descendants(root, "Disk"):
        text = _attr(node, "capacity") or ""
        units = _attr(node, "capacityAllocationUnits") or "byte"
        multiplier = unit_multiplier(units)
        capacity = None
        number = _decimal(text)
        if number is not None and multiplier is not None:
            capacity = number * multiplier
        else:
            message = (
                f"{fmt}: disk capacity {text!r} in units {units!r} is not a number of bytes "
                "imgfmt can compute, so it cannot be checked against the disk"
            )
            findings.append(unsafe(Code.CAPACITY_MISMATCH, message))
        disk_id = _attr(node, "diskId") or ""
        disks.append(
            OvfDisk(disk_id, _attr(node, "fileRef"), capacity, text, units, _attr(node, "format"))
        )
    return tuple(disks), findings


def unit_multiplier(units: str) -> int | None:
    """Bytes per unit of a DSP0004 programmatic unit (``byte * 2^20``), or ``None``."""
    text = units.strip()
    legacy = _LEGACY_UNITS.get(text.lower())
    if legacy is not None:
        return legacy
    match = _UNIT.match(text)
    if match is None:
        return None
    if match.group(1) is None:
        return 1
    base, exponent = _decimal(match.group(1)), _decimal(match.group(2))
    if base not in (2, 10) or exponent is None or exponent > 60:
        return None
    return int(base**exponent)


def _decimal(text: str) -> int | None:
    """A non-negative decimal number of at most ``MAX_DIGITS`` ASCII digits, or ``None``."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS:
        return None
    return int(text)


def _system_details(root: Element) -> dict[str, Any]:
    details: dict[str, Any] = {}
    systems = list(_descendants(root, "VirtualSystem"))
    if systems:
        system = systems[0]
        details["virtual_system"] = _text(system, "Name") or _attr(system, "id")
        details.update(_os_details(system))
        details.update(_hardware_details(system))
    details["virtual_systems"] = len(systems)
    for node in root.iter():
        if _namespace(node.tag) == CIM_PASD_NS and _local(node.tag) in CIM_PASD_PROPERTIES:
            details[f"cim_pasd_{_local(node.tag)}"] = (node.text or "").strip()
    return details


def _os_details(system: Element) -> dict[str, Any]:
    section = next(_children(system, "OperatingSystemSection"), None)
    if section is None:
        return {}
    return {
        "operating_system": {
            "id": _attr(section, "id"),
            "version": _attr(section, "version"),
            "description": _text(section, "Description"),
        }
    }


def _hardware_details(system: Element) -> dict[str, Any]:
    details: dict[str, Any] = {}
    for item in _descendants(system, "Item"):
        kind = _text(item, "ResourceType")
        quantity = _decimal(_text(item, "VirtualQuantity") or "")
        if quantity is None:
            continue
        if kind == _RESOURCE_CPU and "cpus" not in details:
            details["cpus"] = quantity
        elif kind == _RESOURCE_MEMORY and "memory" not in details:
            units = _text(item, "AllocationUnits") or "byte * 2^20"
            multiplier = unit_multiplier(units)
            details["memory"] = quantity * multiplier if multiplier else None
    return details

"""OVA packages: an OVF descriptor, its manifest and its disks in one tar archive.

References: DMTF DSP0243 2.1.1, clause 5.3 (an OVA is a ustar archive; the descriptor is its
first member, the manifest and certificate follow) and 5.1 (the manifest: one line per file,
``SHA256(disk1.vmdk)= <hex>``, also SHA1 in OVF 1.x and SHA512); the descriptor is read by
``ovf.py``, the archive's headers by ``tarsafe.py``.

Nothing is extracted: each file the descriptor references is inspected in place, through a
``SliceSource`` over its byte range, with every disk-format check of the engine; each member
report's ``location`` says where that range is, so a converter can read the disk in place. The
manifest is verified for every file it lists in one pass over the archive's data, in archive
order.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import replace
from typing import NamedTuple

from ..errors import FormatError
from ..report import Code, Finding, ImageReport, Location, info, unsafe, warning
from ..source import SliceSource, Source
from . import tarsafe
from .base import Container, ContainerInspection, InspectMember
from .ovf import Descriptor, OvfFile, descriptor_details, disk_findings, first_disk, inspect_files
from .tarsafe import SourceCursor, TarMember

FORMAT = "ova"
#: Members whose names the probe looks at for a descriptor.
PROBE_MEMBERS = 16
#: Largest descriptor or manifest read into memory.
MAX_TEXT_MEMBER = 4 * 1024 * 1024
#: Manifest lines read: one a file, and a descriptor lists at most ``ovf.MAX_FILES``. Each line
#: could be a finding: 2 million of them (a 4 MB manifest of "x" lines) took 33 s to print.
MAX_MANIFEST_LINES = 4096
#: DSP0243 5.1 manifest digests and their hashlib names.
ALGORITHMS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
_MANIFEST_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$")


class ManifestEntry(NamedTuple):
    """One manifest line: a file, a digest algorithm and the expected hex digest."""

    name: str
    algorithm: str
    digest: str
    line: int


class MemberSource(SliceSource):
    """A tar member's data as a source of its own, knowing where it lies in the archive."""

    def __init__(self, archive: Source, member: TarMember) -> None:
        super().__init__(archive, member.offset, member.size, f"{archive.name}:{member.name}")
        self.location = Location(member.name, member.offset, member.size)


class OvaContainer(Container):
    """An OVA: a tar archive whose members include an OVF descriptor."""

    format = FORMAT

    @classmethod
    def probe(cls, source: Source) -> bool:
        if not tarsafe.probe(source):
            return False
        return any(n.endswith(".ovf") for n in tarsafe.names(source, PROBE_MEMBERS))

    @classmethod
    def inspect(cls, source: Source, inspect_member: InspectMember) -> ContainerInspection:
        members = list(tarsafe.walk(SourceCursor(source), FORMAT))
        findings = tarsafe.member_findings(members, FORMAT, source.size)
        files = _files(members)
        ovf = _descriptor_member(members, findings)
        descriptor = Descriptor.from_bytes(_text(source, ovf), FORMAT)
        findings.extend(descriptor.findings)

        def open_file(ref: OvfFile) -> Source | None:
            member = files.get(ref.href)
            return MemberSource(source, member) if member is not None else None

        def inspect_in_place(member: Source) -> ImageReport:
            assert isinstance(member, MemberSource)  # open_file made it
            return replace(inspect_member(member), location=member.location)

        reports, found = inspect_files(descriptor, open_file, inspect_in_place, FORMAT)
        findings += found + disk_findings(descriptor, reports, FORMAT)
        findings += _manifest_findings(source, members, descriptor, ovf)
        findings += _unreferenced(members, descriptor, ovf)
        disk_format, virtual_size = first_disk(descriptor, reports)
        details = {"descriptor": ovf.name, **descriptor_details(descriptor)}
        return ContainerInspection(
            FORMAT, disk_format, virtual_size, details, tuple(findings), tuple(reports.values())
        )


def parse_manifest(text: str) -> tuple[list[ManifestEntry], list[Finding]]:
    """The manifest's entries; a line that is no digest line is a finding."""
    entries: list[ManifestEntry] = []
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(entries) + len(findings) == MAX_MANIFEST_LINES:
            raise FormatError(
                FORMAT, f"the manifest has more than {MAX_MANIFEST_LINES} lines, one a file"
            )
        match = _MANIFEST_LINE.match(line.strip())
        if match is None:
            message = f"{FORMAT}: manifest line {number} is not 'SHA256(file)= hex': {line!r}"
            findings.append(unsafe(Code.DIGEST_MISMATCH, message))
            continue
        algorithm, name, digest = match.groups()
        entries.append(ManifestEntry(name, ALGORITHMS[algorithm], digest.lower(), number))
    return entries, findings


def _files(members: list[TarMember]) -> dict[str, TarMember]:
    """Regular members by name; of repeated names the last wins, as tar extraction has it."""
    return {m.name: m for m in members if m.is_file}


def _descriptor_member(members: list[TarMember], findings: list[Finding]) -> TarMember:
    descriptors = [m for m in members if m.name.endswith(".ovf") and m.is_file]
    if not descriptors:
        raise FormatError(FORMAT, "the archive holds no regular .ovf descriptor")
    if len(descriptors) > 1:
        names = ", ".join(repr(m.name) for m in descriptors)
        message = f"{FORMAT}: {len(descriptors)} descriptors ({names}); readers may pick any"
        findings.append(unsafe(Code.UNSAFE_MEMBER, message, descriptors[1].header_offset))
    if posixpath.dirname(posixpath.normpath(descriptors[0].name)):
        # DSP0243 resolves hrefs against the descriptor's location, Glance by member name.
        message = (
            f"{FORMAT}: the descriptor {descriptors[0].name!r} is not at the top of the archive; "
            "readers disagree on whether its hrefs name members beside it or at the top"
        )
        findings.append(unsafe(Code.UNSAFE_MEMBER, message, descriptors[0].header_offset))
    if descriptors[0] is not members[0]:
        message = f"{FORMAT}: the descriptor is not the first member (DSP0243 5.3)"
        findings.append(warning(Code.INVALID_HEADER, message, descriptors[0].header_offset))
    return descriptors[0]


def _text(source: Source, member: TarMember) -> bytes:
    return tarsafe.read_member(source, member, MAX_TEXT_MEMBER, FORMAT)


def _manifest_findings(
    source: Source, members: list[TarMember], descriptor: Descriptor, ovf: TarMember
) -> list[Finding]:
    manifests = [m for m in members if m.name.endswith(".mf") and m.is_file]
    if not manifests:
        return [
            info(
                Code.NOTE, f"{FORMAT}: no manifest (.mf); the members' integrity is not verifiable"
            )
        ]
    text = _text(source, manifests[0]).decode("utf-8", "replace")
    entries, findings = parse_manifest(text)
    files = _files(members)
    wanted: dict[str, set[str]] = {}
    for entry in entries:
        if entry.name in files:
            wanted.setdefault(entry.name, set()).add(entry.algorithm)
        else:
            message = f"{FORMAT}: the manifest lists {entry.name!r}, which the archive lacks"
            findings.append(unsafe(Code.DIGEST_MISMATCH, message))
    actual = tarsafe.digest_members(source, files.values(), wanted)
    findings.extend(_compare(entries, actual, files))
    listed = {e.name for e in entries}
    for name in [ovf.name, *(f.href for f in descriptor.files)]:
        if name not in listed and name in files:
            message = f"{FORMAT}: {name!r} has no digest in the manifest, so it is unverified"
            findings.append(unsafe(Code.DIGEST_MISMATCH, message, files[name].header_offset))
    return findings


def _compare(
    entries: list[ManifestEntry], actual: dict[str, dict[str, str]], files: dict[str, TarMember]
) -> list[Finding]:
    findings = []
    for entry in entries:
        got = actual.get(entry.name, {}).get(entry.algorithm)
        if got is not None and got != entry.digest:
            message = (
                f"{FORMAT}: {entry.name!r} has {entry.algorithm} {got}, the manifest "
                f"(line {entry.line}) says {entry.digest}; the file was altered"
            )
            findings.append(unsafe(Code.DIGEST_MISMATCH, message, files[entry.name].offset))
    return findings


def _unreferenced(
    members: list[TarMember], descriptor: Descriptor, ovf: TarMember
) -> list[Finding]:
    referenced = {f.href for f in descriptor.files} | {ovf.name}
    findings = []
    for member in members:
        if member.is_file and member.name not in referenced and not _is_package_file(member):
            message = f"{FORMAT}: member {member.name!r} is not referenced by the descriptor"
            findings.append(warning(Code.UNSAFE_MEMBER, message, member.header_offset))
    return findings


def _is_package_file(member: TarMember) -> bool:
    return member.name.endswith((".mf", ".cert"))

"""Detection: run every inspector's probe, resolve the matches, check the claimed format.

Container probes (OVA, Docker/OCI archive, OVF descriptor, compressed stream; see
``containers/``) run beside the disk probes. No match means raw, named by libmagic when it holds
no partition table or filesystem. One match is inspected; a container hands each disk inside
back to this engine. Two or more matches mean a file that qemu (or a person) could read as
either format: a polyglot, which is unsafe (CVE-2024-32498 used an image that was both). A disk
inspector that claims compressed content (an initramfs is often a gzip'd cpio) wins over the
compressed container. Partition tables and filesystems are not formats here, so a hybrid ISO
(ISO 9660 with an MBR or GPT for USB boot) has exactly one match and stays an iso.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import BinaryIO

from .containers import Container, probe_container
from .errors import FormatError, TruncatedError, UnverifiableError
from .inspectors import Inspection, Inspector, candidates, preload
from .inspectors.base import probe_bytes, qemu_raw_size
from .log import Logger
from .policy import Policy, claim_satisfied, container_claim_satisfied
from .registry import Signatures
from .report import Code, Finding, ImageReport, unsafe, warning
from .source import Source, StreamSource, open_source

log = Logger(__name__)

#: Containers are opened this many levels deep (a compressed disk in an OVA); deeper is raw.
MAX_NESTING = 2
#: Bytes handed to libmagic to name a file that is no disk image.
MAGIC_WINDOW = 64 * 1024
#: libmagic runs per archive (``Source.described``): it spends up to 0.3 s on 8 KiB of blank
#: lines, and an OVA of 1024 such files took minutes. The raw disks past these are not named.
MAX_DESCRIBED = 4
#: Disk formats whose files are compressed streams themselves (an initramfs is often a gzip'd
#: cpio): they win over the compressed container. Any other match beside it is a polyglot.
COMPRESSED_CONTENT = frozenset({"ari"})


def inspect(
    target: str | os.PathLike[str] | BinaryIO | Source,
    policy: Policy | None = None,
    expect_format: str | None = None,
    expect_container: str | None = None,
) -> ImageReport:
    """Inspect an image given as a path, ``-`` (stdin), a binary stream or a ``Source``.

    Returns the report with every finding, format and policy alike; raises ``SourceError``
    only when the bytes cannot be read at all.
    """
    if isinstance(target, Source):
        return inspect_source(target, policy, expect_format, expect_container)
    with open_source(target) as source:
        return inspect_source(source, policy, expect_format, expect_container)


def inspect_source(
    source: Source,
    policy: Policy | None = None,
    expect_format: str | None = None,
    expect_container: str | None = None,
    *,
    nesting: int = 0,
) -> ImageReport:
    """Inspect an open source; see ``inspect``. ``nesting`` counts enclosing containers."""
    policy = policy or Policy()
    report = _detect(source, policy, nesting)

    # A container's disks carry their own policy findings, as members.
    extra = policy.check(report) if report.container_format == "bare" else []
    if expect_format is not None:
        extra.extend(claim_findings(report, expect_format, policy))
    if expect_container is not None:
        extra.extend(_container_claim(report, expect_container, policy))
    if extra:
        report = _with(report, extra)
    return report


def _detect(source: Source, policy: Policy, nesting: int) -> ImageReport:
    found = Signatures(source)
    probed = len(source.probe_unread)
    report = _resolve(source, found, policy, nesting)
    # A probe (an ELF kernel's program headers, say) that needed bytes a stream had not kept
    # may have missed its format: as unsafe as a signature window that was not kept.
    unread = list(dict.fromkeys([*found.unread, *source.probe_unread[probed:]]))
    if unread:
        report = _with(report, [_signatures_unread(unread)])
    return report


def _resolve(source: Source, found: Signatures, policy: Policy, nesting: int) -> ImageReport:
    matches = [cls for cls in candidates(found) if cls.probe(source)]
    container = probe_container(found) if nesting < MAX_NESTING else None
    if (
        container is not None
        and container.format == "compressed"
        and matches
        and all(cls.format in COMPRESSED_CONTENT for cls in matches)
    ):
        container = None
    log.debug("%s: probes matched %s, container %s", source.name, matches, container)

    if len(matches) + (container is not None) > 1:
        return _polyglot(source, matches, container)
    if matches:
        return _run(source, matches[0])
    if container is not None:
        return _contain(source, container, policy, nesting)
    return _report(source, _guard_raw(source))


def _run(source: Source, cls: type[Inspector]) -> ImageReport:
    try:
        return _report(source, cls.inspect(source))
    except (UnverifiableError, FormatError) as exc:
        return _failed(source, exc, cls.format)


def _contain(source: Source, cls: type[Container], policy: Policy, nesting: int) -> ImageReport:
    def inspect_member(member: Source) -> ImageReport:
        return inspect_source(member, policy, nesting=nesting + 1)

    try:
        found = cls.inspect(source, inspect_member)
    except (UnverifiableError, FormatError) as exc:
        return _failed(source, exc, None, cls.format)
    report = ImageReport(
        path=source.name,
        disk_format=found.disk_format,
        virtual_size=found.virtual_size,
        actual_size=source.size,
        container_format=cls.format,
        details=found.details,
        findings=found.findings,
        members=found.members,
    )
    return _marked(source, report)


def _failed(
    source: Source,
    exc: UnverifiableError | FormatError,
    disk_format: str | None,
    container_format: str = "bare",
) -> ImageReport:
    """The report of an inspector or container reader that could not finish."""
    fmt = disk_format or container_format
    return ImageReport(
        path=source.name,
        disk_format=disk_format,
        virtual_size=None,
        actual_size=source.size,
        container_format=container_format,
        findings=(_failure(fmt, exc),),
    )


def _failure(fmt: str, exc: UnverifiableError | FormatError) -> Finding:
    if isinstance(exc, UnverifiableError):
        message = f"{fmt}: cannot be verified from a stream: {exc}; inspect the file itself"
        return unsafe(Code.STREAM_UNVERIFIABLE, message, exc.offset)
    if isinstance(exc, TruncatedError):
        return unsafe(Code.TRUNCATED, f"{exc}; the file is cut short or damaged", exc.offset)
    return unsafe(Code.INVALID_HEADER, f"{exc}; qemu would refuse or misread it", exc.offset)


def _signatures_unread(offsets: list[int]) -> Finding:
    where = ", ".join(f"{offset:#x}" for offset in offsets)
    message = (
        f"the bytes at {where}, where format signatures lie (a qcow2 header, a VHD footer, an"
        " ELF kernel's program headers), were not kept from the stream, so another format there"
        " cannot be ruled out; inspect the file itself"
    )
    return unsafe(Code.STREAM_UNVERIFIABLE, message, offsets[0])


def _guard_raw(source: Source) -> Inspection:
    try:
        from .inspectors.raw import inspect_raw

        inspection = inspect_raw(source)
    except UnverifiableError as exc:
        size = 0 if source.size is None else qemu_raw_size(source)
        finding = warning(
            Code.STREAM_UNVERIFIABLE,
            f"raw: partition details could not be read from the stream: {exc}",
            exc.offset,
        )
        return Inspection("raw", size, {}, (finding,))
    if inspection.details.get("partition_table") or inspection.details.get("filesystem"):
        return inspection
    return inspection._replace(details={**inspection.details, "magic": _magic(source)})


def _magic(source: Source) -> str:
    """What libmagic calls the content ("PDF document", "gzip compressed data", ...)."""
    if source.described.count >= MAX_DESCRIBED:
        return f"unknown: libmagic already ran {MAX_DESCRIBED} times on this archive"
    source.described.count += 1
    return _describe(probe_bytes(source, 0, MAGIC_WINDOW))


def _describe(data: bytes) -> str:
    try:
        import magic
    except ImportError as exc:
        return f"unknown: libmagic is not available ({exc}); install libmagic1"
    try:
        return str(magic.from_buffer(data))
    except magic.MagicException as exc:
        return f"unknown: libmagic failed ({exc})"


def prepare(disk_format: str) -> None:
    """Load ahead what inspecting a ``disk_format`` image needs: its inspector and, for raw,
    libmagic with its database. ``imgfmt.convert`` has a thread do it while qemu-img writes
    the output; whatever fails here fails again, and is reported, when the output is inspected.
    """
    if disk_format != "raw":
        preload(disk_format)
        return
    from .inspectors.raw import inspect_raw  # noqa: F401

    _describe(b"")


def _polyglot(
    source: Source, matches: list[type[Inspector]], container: type[Container] | None
) -> ImageReport:
    names = [cls.format for cls in matches] + ([container.format] if container else [])
    members = tuple(_run(source, cls) for cls in matches)
    finding = unsafe(
        Code.MULTIPLE_FORMATS,
        f"the file is valid as {' and '.join(names)} at once: a polyglot that different "
        "readers would interpret differently; refuse it",
        0,
    )
    return ImageReport(
        path=source.name,
        disk_format=None,
        virtual_size=None,
        actual_size=source.size,
        details={"formats": names, "as": {m.disk_format: m.to_dict() for m in members}},
        findings=(finding,),
    )


def claim_findings(report: ImageReport, claimed: str, policy: Policy) -> list[Finding]:
    """A ``format-mismatch`` finding when the report's disk is not the ``claimed`` format."""
    if claim_satisfied(claimed, report.disk_format):
        return []
    detected = report.disk_format or "ambiguous"
    message = (
        f"claimed format {claimed} does not match the content ({detected}); "
        f"pass the real format or fix the file"
    )
    if policy.require_image_format_match:
        return [unsafe(Code.FORMAT_MISMATCH, message, 0)]
    return [warning(Code.FORMAT_MISMATCH, message, 0)]


def _container_claim(report: ImageReport, claimed: str, policy: Policy) -> list[Finding]:
    if container_claim_satisfied(claimed, report.container_format, report.disk_format):
        return []
    message = (
        f"claimed container format {claimed} does not match the content (container "
        f"{report.container_format}, disk {report.disk_format or 'unknown'}); pass the real "
        "container format or fix the file"
    )
    if policy.require_image_format_match:
        return [unsafe(Code.FORMAT_MISMATCH, message, 0)]
    return [warning(Code.FORMAT_MISMATCH, message, 0)]


def _report(source: Source, inspection: Inspection) -> ImageReport:
    report = ImageReport(
        path=source.name,
        disk_format=inspection.format,
        virtual_size=inspection.virtual_size,
        actual_size=source.size,
        details=inspection.details,
        findings=inspection.findings,
    )
    return _marked(source, report)


def _marked(source: Source, report: ImageReport) -> ImageReport:
    """``report``, saying in its details when it was read from a stream."""
    if isinstance(source, StreamSource):
        return replace(report, details={**report.details, "stream": True})
    return report


def _with(report: ImageReport, extra: list[Finding]) -> ImageReport:
    return replace(report, findings=(*report.findings, *extra))

"""Detection: run every inspector's probe, resolve the matches, check the claimed format.

No match means raw. One match is inspected. Two or more matches mean a file that qemu (or a
person) could read as either format: a polyglot, which is unsafe (CVE-2024-32498 used an image
that was both). Partition tables and filesystems are not formats here, so a hybrid ISO (ISO 9660
with an MBR or GPT for USB boot) has exactly one match and stays an iso.
"""

from __future__ import annotations

import logging
import os
from typing import BinaryIO

from .errors import FormatError, TruncatedError, UnverifiableError
from .inspectors import Inspection, Inspector, inspectors
from .inspectors.raw import inspect_raw
from .policy import Policy, claim_satisfied
from .report import Code, Finding, ImageReport, unsafe, warning
from .source import Source, StreamSource, open_source

log = logging.getLogger(__name__)


def inspect(
    target: str | os.PathLike[str] | BinaryIO | Source,
    policy: Policy | None = None,
    expect_format: str | None = None,
) -> ImageReport:
    """Inspect an image given as a path, ``-`` (stdin), a binary stream or a ``Source``.

    Returns the report with every finding, format and policy alike; raises ``SourceError``
    only when the bytes cannot be read at all.
    """
    if isinstance(target, Source):
        return inspect_source(target, policy, expect_format)
    with open_source(target) as source:
        return inspect_source(source, policy, expect_format)


def inspect_source(
    source: Source, policy: Policy | None = None, expect_format: str | None = None
) -> ImageReport:
    """Inspect an open source; see ``inspect``."""
    policy = policy or Policy()
    matches = [cls for cls in inspectors() if cls.probe(source)]
    log.debug("%s: probes matched %s", source.name, [cls.format for cls in matches])

    if len(matches) > 1:
        report = _polyglot(source, matches)
    elif matches:
        report = _run(source, matches[0])
    else:
        report = _report(source, _guard_raw(source))

    extra = policy.check(report)
    if expect_format is not None:
        extra.extend(_claim(report, expect_format, policy))
    if extra:
        report = _with(report, extra)
    return report


def _run(source: Source, cls: type[Inspector]) -> ImageReport:
    try:
        return _report(source, cls.inspect(source))
    except UnverifiableError as exc:
        finding = unsafe(
            Code.STREAM_UNVERIFIABLE,
            f"{cls.format}: cannot be verified from a stream: {exc}; inspect the file itself",
            exc.offset,
        )
    except TruncatedError as exc:
        finding = unsafe(Code.TRUNCATED, f"{exc}; the file is cut short or damaged", exc.offset)
    except FormatError as exc:
        finding = unsafe(Code.INVALID_HEADER, f"{exc}; qemu would refuse or misread it", exc.offset)
    return ImageReport(
        path=source.name,
        disk_format=cls.format,
        virtual_size=None,
        actual_size=source.size,
        findings=(finding,),
    )


def _guard_raw(source: Source) -> Inspection:
    try:
        return inspect_raw(source)
    except UnverifiableError as exc:
        size = source.size or 0
        finding = warning(
            Code.STREAM_UNVERIFIABLE,
            f"raw: partition details could not be read from the stream: {exc}",
            exc.offset,
        )
        return Inspection("raw", size, {}, (finding,))


def _polyglot(source: Source, matches: list[type[Inspector]]) -> ImageReport:
    names = [cls.format for cls in matches]
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


def _claim(report: ImageReport, claimed: str, policy: Policy) -> list[Finding]:
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


def _report(source: Source, inspection: Inspection) -> ImageReport:
    details = dict(inspection.details)
    if isinstance(source, StreamSource):
        details["stream"] = True
    return ImageReport(
        path=source.name,
        disk_format=inspection.format,
        virtual_size=inspection.virtual_size,
        actual_size=source.size,
        details=details,
        findings=inspection.findings,
    )


def _with(report: ImageReport, extra: list[Finding]) -> ImageReport:
    from dataclasses import replace

    return replace(report, findings=(*report.findings, *extra))

"""What an operator allows: disk formats, vmdk create types, a virtual size cap.

Option names follow Glance's ``[image_format]`` section (``disk_formats``,
``vmdk_allowed_types``, ``require_image_format_match``); ``max_virtual_size`` is imgfmt's own.
A policy turns a report into extra findings; it never hides one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import Config, ConfigError
from .errors import UsageError
from .report import Code, Finding, ImageReport, unsafe

#: Glance's default ``[image_format] disk_formats``: qed and luks are not in it.
DEFAULT_DISK_FORMATS = frozenset(
    {"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"}
)
#: Every disk format name imgfmt knows (Glance's vocabulary).
KNOWN_DISK_FORMATS = DEFAULT_DISK_FORMATS | {"qed", "luks"}
#: Glance's default ``[image_format] vmdk_allowed_types``.
DEFAULT_VMDK_TYPES = frozenset({"streamOptimized", "monolithicSparse"})

#: Claimed format -> detected formats that satisfy the claim. A kernel or ramdisk is raw
#: bytes to qemu, so a claim of raw accepts them; ami is Glance's name for a raw machine image.
COMPATIBLE_CLAIMS: dict[str, frozenset[str]] = {
    "raw": frozenset({"raw", "aki", "ari"}),
    "ami": frozenset({"raw"}),
}

#: Glance's container formats.
KNOWN_CONTAINER_FORMATS = frozenset(
    {"bare", "ovf", "ova", "docker", "compressed", "aki", "ari", "ami"}
)
#: Container formats that are no wrapper: they name the one disk format the file must be.
DISK_CONTAINERS = frozenset({"aki", "ari", "ami"})

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTPE]?)(i?B?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"64G"`` -> 68719476736. Suffixes are binary (K = 1024), as qemu-img's are."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a size (examples: 1048576, 512M, 64G, 2T)")
    number, unit = int(match.group(1)), match.group(2).upper()
    return number << (10 * ("KMGTPE".index(unit) + 1) if unit else 0)


def claim_satisfied(claimed: str, detected: str | None) -> bool:
    """True when content detected as ``detected`` may be called ``claimed``."""
    if detected is None:
        return False
    return detected in COMPATIBLE_CLAIMS.get(claimed, frozenset({claimed}))


def container_claim_satisfied(claimed: str, container: str, disk_format: str | None) -> bool:
    """True when a file read as ``container`` holding ``disk_format`` may be called ``claimed``.

    aki, ari and ami are Glance's containers for a kernel, a ramdisk and a machine image: the
    file is that disk itself, unwrapped, so the disk format must match.
    """
    if claimed in DISK_CONTAINERS:
        return container == "bare" and claim_satisfied(claimed, disk_format)
    return claimed == container


@dataclass(frozen=True)
class Policy:
    """The rules an image must meet beyond being well formed."""

    disk_formats: frozenset[str] = DEFAULT_DISK_FORMATS
    vmdk_allowed_types: frozenset[str] = DEFAULT_VMDK_TYPES
    require_image_format_match: bool = True
    max_virtual_size: int | None = None

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """The policy of the ``[image_format]`` section, defaults for what is missing."""
        section = "image_format"
        formats = config.get_list(section, "disk_formats")
        if formats is not None:
            unknown = sorted(set(formats) - KNOWN_DISK_FORMATS)
            if unknown:
                raise ConfigError(config.path, section, "disk_formats", f"unknown {unknown}")
        vmdk = config.get_list(section, "vmdk_allowed_types")
        match = config.get_bool(section, "require_image_format_match")
        cap = config.get(section, "max_virtual_size")
        try:
            max_size = parse_size(cap) if cap else None
        except UsageError as exc:
            raise ConfigError(config.path, section, "max_virtual_size", str(exc)) from exc
        return cls(
            disk_formats=frozenset(formats) if formats is not None else DEFAULT_DISK_FORMATS,
            vmdk_allowed_types=frozenset(vmdk) if vmdk is not None else DEFAULT_VMDK_TYPES,
            require_image_format_match=True if match is None else match,
            max_virtual_size=max_size,
        )

    def check(self, report: ImageReport) -> list[Finding]:
        """Policy findings for a report (its own findings are not repeated)."""
        found: list[Finding] = []
        fmt = report.disk_format
        if fmt is not None and fmt not in self.disk_formats:
            allowed = ", ".join(sorted(self.disk_formats))
            found.append(
                unsafe(
                    Code.FORMAT_NOT_ALLOWED,
                    f"disk format {fmt} is not allowed here (allowed: {allowed}); convert it "
                    "or add it to [image_format] disk_formats",
                )
            )
        create_type = report.details.get("create_type") if fmt == "vmdk" else None
        if isinstance(create_type, str) and create_type not in self.vmdk_allowed_types:
            allowed = ", ".join(sorted(self.vmdk_allowed_types))
            found.append(
                unsafe(
                    Code.SUBFORMAT_NOT_ALLOWED,
                    f"vmdk create type {create_type} is not allowed (allowed: {allowed}); "
                    "convert it to streamOptimized or monolithicSparse",
                )
            )
        size = report.virtual_size
        if self.max_virtual_size is not None and size is not None and size > self.max_virtual_size:
            found.append(
                unsafe(
                    Code.VIRTUAL_SIZE_EXCEEDED,
                    f"virtual size {size} bytes exceeds the cap of {self.max_virtual_size} bytes",
                )
            )
        return found

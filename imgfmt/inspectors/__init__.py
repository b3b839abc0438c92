"""The registry of disk-format inspectors.

Adding a format is one module in this package and one line here: the class and a signature
that every file its probe accepts carries (see ``imgfmt/registry.py``). Raw is not listed: it
is what detection falls back to when no inspector's probe matches (see ``raw.py``).
"""

from __future__ import annotations

from functools import cache

from ..registry import Entry, Signatures, load_all, load_matching
from .base import Inspection, Inspector

__all__ = ["REGISTRY", "Inspection", "Inspector", "candidates", "inspectors", "preload"]

#: Compressed-stream magics an initramfs may start with (ari.COMPRESSIONS).
_COMPRESSED = (
    b"\x1f\x8b",
    b"\xfd7zXZ\x00",
    b"(\xb5/\xfd",
    b"\x02!L\x18",
    b'\x04"M\x18',
    b"BZh",
    b"]\x00\x00",
    b"\x89LZO\x00",
)

REGISTRY = (
    Entry("qcow2:Qcow2Inspector", ((0, b"QFI\xfb"),)),
    Entry("qed:QedInspector", ((0, b"QED\x00"),)),
    Entry(
        "vmdk:VmdkInspector",
        ((0, b"KDMV"), (0, b"COWD")),
        (b"# Disk DescriptorFile", b"createType", b"version="),
    ),
    Entry("vhd:VhdInspector", ((0, b"conectix"), (-512, b"conectix"))),
    Entry("vhdx:VhdxInspector", ((0, b"vhdxfile"),)),
    Entry("vdi:VdiInspector", ((0x40, b"\x7f\x10\xda\xbe"),)),
    Entry("ploop:PloopInspector", ((0, b"WithoutFreeSpace"), (0, b"WithouFreSpacExt"))),
    Entry("luks:LuksInspector", ((0, b"LUKS\xba\xbe"),)),
    Entry("iso:IsoInspector", ((0x8001, b"CD001"), (0x8001, b"BEA01"))),
    Entry("aki:KernelInspector", ((0x202, b"HdrS"), (0x38, b"ARM\x64"), (0, b"\x7fELF"))),
    Entry("ari:InitramfsInspector", ((0, b"07070"), *((0, m) for m in _COMPRESSED))),
)


@cache
def inspectors() -> tuple[type[Inspector], ...]:
    """Every registered inspector class, in registry order."""
    return load_all(__name__, REGISTRY)


def candidates(found: Signatures) -> list[type[Inspector]]:
    """The inspectors whose signature the source carries; their probes decide."""
    return load_matching(__name__, REGISTRY, found)


def preload(disk_format: str) -> None:
    """Import the inspector of ``disk_format`` ahead of need (a module bears its format's name)."""
    for entry in REGISTRY:
        if entry.target.partition(":")[0] == disk_format:
            entry.load(__name__)

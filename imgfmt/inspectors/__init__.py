"""The registry of disk-format inspectors.

Adding a format is one module in this package and one line here. Raw is not listed: it is
what detection falls back to when no inspector's probe matches (see ``raw.py``).
"""

from __future__ import annotations

import importlib
from functools import cache

from .base import Inspection, Inspector

__all__ = ["Inspection", "Inspector", "inspectors"]

_REGISTRY = (
    "qcow2:Qcow2Inspector",
    "qed:QedInspector",
    "vmdk:VmdkInspector",
    "vhd:VhdInspector",
    "vhdx:VhdxInspector",
    "vdi:VdiInspector",
    "ploop:PloopInspector",
    "luks:LuksInspector",
    "iso:IsoInspector",
    "aki:KernelInspector",
    "ari:InitramfsInspector",
)


@cache
def inspectors() -> tuple[type[Inspector], ...]:
    """Every registered inspector class, in registry order."""
    found = []
    for entry in _REGISTRY:
        module_name, class_name = entry.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        found.append(getattr(module, class_name))
    return tuple(found)

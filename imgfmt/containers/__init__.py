"""The registry of container-format readers (Glance's container formats beyond bare).

Adding a container is one module in this package and one line here. Order matters: the first
reader whose probe matches reads the file (an OVA and a Docker archive are both tar files).
The aki, ari and ami container formats hold exactly one disk of that format and no wrapper,
so they have no reader: ``policy.container_claim_satisfied`` checks them.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..source import Source
from .base import Container, ContainerInspection, InspectMember

__all__ = ["Container", "ContainerInspection", "InspectMember", "containers", "probe_container"]

_REGISTRY = (
    "ova:OvaContainer",
    "docker:DockerContainer",
    "ovf:OvfContainer",
    "compressed:CompressedContainer",
)


@cache
def containers() -> tuple[type[Container], ...]:
    """Every registered container reader class, in registry order."""
    found = []
    for entry in _REGISTRY:
        module_name, class_name = entry.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        found.append(getattr(module, class_name))
    return tuple(found)


def probe_container(source: Source) -> type[Container] | None:
    """The first container reader whose probe matches, or ``None``."""
    return next((cls for cls in containers() if cls.probe(source)), None)

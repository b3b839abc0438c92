"""The registry of container-format readers (Glance's container formats beyond bare).

Adding a container is one module in this package and one line here, with a signature (see
``imgfmt/registry.py``). Order matters: the first reader whose probe matches reads the file
(an OVA and a Docker archive are both tar files). The aki, ari and ami container formats hold
exactly one disk of that format and no wrapper, so they have no reader:
``policy.container_claim_satisfied`` checks them.
"""

from __future__ import annotations

from functools import cache

from ..registry import Entry, Signatures, load_all, load_matching
from .base import Container, ContainerInspection, InspectMember

__all__ = [
    "REGISTRY",
    "Container",
    "ContainerInspection",
    "InspectMember",
    "containers",
    "probe_container",
]

_TAR = ((257, b"ustar"),)

REGISTRY = (
    Entry("ova:OvaContainer", _TAR),
    Entry("docker:DockerContainer", _TAR),
    Entry("ovf:OvfContainer", texts=(b"Envelope",)),
    Entry(
        "compressed:CompressedContainer",
        ((0, b"\x1f\x8b\x08"), (0, b"\xfd7zXZ\x00"), (0, b"(\xb5/\xfd"), (0, b"BZh")),
    ),
)


@cache
def containers() -> tuple[type[Container], ...]:
    """Every registered container reader class, in registry order."""
    return load_all(__name__, REGISTRY)


def probe_container(found: Signatures) -> type[Container] | None:
    """The first container reader whose signature and probe match, or ``None``."""
    source = found.source
    return next((c for c in load_matching(__name__, REGISTRY, found) if c.probe(source)), None)

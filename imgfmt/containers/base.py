"""The contract every container-format reader fulfils.

A container is a class with two class methods, like a disk-format inspector:

- ``probe(source)``: a cheap signature check, no exceptions for short or odd files.
- ``inspect(source, inspect_member)``: read the container's own structure (never extracting
  it), hand each disk inside to ``inspect_member`` (the whole engine, through a ``Source`` over
  the disk's bytes) and return a ``ContainerInspection``. Structural defects that stop parsing
  raise ``FormatError``; everything else that is wrong is a finding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from ..report import Finding, ImageReport
from ..source import Source


class Reader(Protocol):
    """A sequential byte stream: a buffered file, a decompressor, a tapped layer."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


#: Inspects one disk found inside a container with every check of the engine.
InspectMember = Callable[[Source], ImageReport]


class ContainerInspection(NamedTuple):
    """What a container reader learned: the disk inside, the container's facts and findings.

    ``disk_format`` and ``virtual_size`` are those of the container's (first) disk, as Glance
    records an OVA under its disk's format; ``None`` when it holds no disk (Docker).
    """

    format: str
    disk_format: str | None
    virtual_size: int | None
    details: Mapping[str, Any] = {}
    findings: tuple[Finding, ...] = ()
    members: tuple[ImageReport, ...] = ()


class Container(ABC):
    """Base class of the container readers; see the module docstring."""

    #: Glance's name of the container format.
    format: ClassVar[str]

    @classmethod
    @abstractmethod
    def probe(cls, source: Source) -> bool:
        """True when the source carries this container's signature."""

    @classmethod
    @abstractmethod
    def inspect(cls, source: Source, inspect_member: InspectMember) -> ContainerInspection:
        """Read and check the container; see the module docstring."""

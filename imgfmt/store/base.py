"""What a storage backend implements, and what every backend gets for free.

A backend stores one image's bytes under its id, atomically: ``add`` consumes an iterator of
chunks and either returns the location of complete data or leaves nothing behind (its own
``finally`` removes partial data, whatever the exception, KeyboardInterrupt included).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .catalog import Location

if TYPE_CHECKING:
    from .config import BackendSpec


@dataclass(frozen=True)
class Stored:
    """Data that ``add`` wrote completely."""

    location: Location
    size: int


class Backend(ABC):
    """A place that holds image data; see the module docstring."""

    type: ClassVar[str]

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.id = spec.id

    @abstractmethod
    def add(self, image_id: str, chunks: Iterable[bytes], size: int | None) -> Stored:
        """Store the chunks as image ``image_id``; ``size`` is a hint (``None``: unknown)."""

    @abstractmethod
    def read(self, location: Location) -> Iterator[bytes]:
        """The stored bytes, in chunks. Raises ``NotFound`` when they are gone."""

    @abstractmethod
    def delete(self, location: Location) -> None:
        """Remove the data. Raises ``NotFound`` when it was already gone."""

    @abstractmethod
    def free_space(self) -> int | None:
        """Bytes still available, or ``None`` when the backend cannot tell."""

    def cleanup(self) -> list[str]:
        """Remove partial data left by uploads whose process died; say what was removed."""
        return []

    @abstractmethod
    def discard(self, image_id: str) -> list[str]:
        """Remove whatever data, complete or partial, is stored under ``image_id``; say what
        was removed. ``imgfmt store cleanup`` calls it for each record whose upload died: one
        killed after its data was complete, before the record became active, left it whole."""


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

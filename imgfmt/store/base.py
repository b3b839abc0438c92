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


def uploader() -> str:
    """This process as an upload names its owner: ``"<pid>.<start>"``, the start time (clock
    ticks since boot) from ``/proc``, or the bare pid where there is none. The start time tells
    a dead uploader from a new process that was given its pid since."""
    pid = os.getpid()
    start = _start_time(pid)
    return str(pid) if start is None else f"{pid}.{start}"


def uploader_alive(owner: str) -> bool | None:
    """Whether the process an ``uploader()`` string names still runs on this machine; ``None``
    for a string that is not one. A bare pid (an older imgfmt's) is judged by the pid alone."""
    pid, _, start = owner.partition(".")
    if not pid.isdigit() or not (start.isdigit() or not start):
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    current = _start_time(int(pid)) if start else None
    return current is None or current == start


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (after the command name, which may hold anything)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 and fields[19].isdigit() else None

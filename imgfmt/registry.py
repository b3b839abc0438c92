"""Lazy registries: classes named "module:Class", imported only when their signature matches.

Importing every inspector and container module costs more than inspecting an image, so each
registry entry carries a signature: magic bytes at fixed offsets (a negative offset counts from
the end) or byte strings somewhere in the first ``TEXT_WINDOW`` bytes. Detection imports a
module, and runs its exact probe, only when the signature matches. A signature must accept
every file the module's probe accepts; ``tests/test_registry.py`` holds each one to that on
every fixture and on random mutations of them.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from .errors import UnverifiableError
from .source import Source

#: Bytes at the start of a source that signatures may look at: up to ISO's 0x8001 + 5.
HEAD_WINDOW = 0x8006
#: Bytes at the start searched for a signature's text (vmdk and OVF descriptors).
TEXT_WINDOW = 4096
#: Bytes at the end of a source that signatures may look at (a VHD footer).
TAIL_WINDOW = 512


class Entry(NamedTuple):
    """One registered class and the signature that makes it worth importing."""

    target: str
    magics: tuple[tuple[int, bytes], ...] = ()
    texts: tuple[bytes, ...] = ()

    def load(self, package: str) -> Any:
        module_name, class_name = self.target.split(":")
        return getattr(importlib.import_module(f"{package}.{module_name}"), class_name)


class Signatures:
    """The head and tail of one source, read once, matched against entries' signatures.

    ``unread`` holds the offsets of the windows a stream source could not serve (a member of
    an archive read from a pipe whose bytes were not kept): no signature there was seen.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.unread: list[int] = []
        self.head = self._read(0, HEAD_WINDOW)
        size = source.size
        tail_at = max(0, size - TAIL_WINDOW) if size is not None else None
        self.tail = self._read(tail_at, TAIL_WINDOW) if tail_at is not None else b""
        self.text = self.head[:TEXT_WINDOW]

    def _read(self, offset: int, length: int) -> bytes:
        try:
            return self.source.read(offset, length)
        except UnverifiableError:
            self.unread.append(offset)
            return b""

    def match(self, entry: Entry) -> bool:
        for offset, magic in entry.magics:
            if offset < 0:
                at = len(self.tail) + offset
                if at >= 0 and self.tail[at : at + len(magic)] == magic:
                    return True
            elif self.head[offset : offset + len(magic)] == magic:
                return True
        return any(text in self.text for text in entry.texts)


def load_all(package: str, entries: tuple[Entry, ...]) -> tuple[Any, ...]:
    """Every class of a registry, imported (tests and tools; detection filters first)."""
    return tuple(entry.load(package) for entry in entries)


def load_matching(package: str, entries: tuple[Entry, ...], found: Signatures) -> list[Any]:
    """The classes whose signature matches, imported, in registry order."""
    return [entry.load(package) for entry in entries if found.match(entry)]

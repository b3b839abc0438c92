"""Shared test plumbing: the fixture manifest, built once per session, and hand-made OVA
parts."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from functools import cache
from typing import Any

from tests.fixtures.build import build_all


@cache
def fixture_entries() -> tuple[dict[str, Any], ...]:
    """Every fixture of every recipe, with the oracle's answers."""
    return tuple(build_all())


def fixture_ids(entries: tuple[dict[str, Any], ...]) -> list[str]:
    return [f"{e['recipe']}/{e['name']}" for e in entries]


def add_files(out: tarfile.TarFile, files: Iterable[tuple[str, bytes]]) -> None:
    """Regular files into an open archive."""
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))


def tar_of(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A ustar archive of regular files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as out:
        add_files(out, files)
    return buffer.getvalue()


def ovf_descriptor(hrefs: Iterable[str]) -> bytes:
    """An OVF descriptor whose References hold one File for each of ``hrefs``."""
    refs = "".join(f'<File ovf:id="f{n}" ovf:href="{href}"/>' for n, href in enumerate(hrefs))
    return (
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
        f'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References>{refs}</References>'
        "</Envelope>"
    ).encode()

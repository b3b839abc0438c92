"""Inspecting a 4 GiB OVA: headers plus every manifest digest in one pass, next to sha256sum.

The OVA (DSP0243 order: descriptor, manifest, disk) holds a 4 GiB raw disk made of one 64 MiB
block of random bytes written 64 times, so every byte is real data that must be hashed. It is
built once into ``tests/fixtures/build/bench/`` (``make clean`` removes it). Both sides read
from the page cache (a warm-up run comes first); the figure is the best of ``REPEAT`` runs.
Target: imgfmt within 1.3x of ``sha256sum`` of the same file.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import imgfmt
from benchmarks.common import best
from imgfmt.source import FileSource
from tests.fixtures.build import BUILD
from tests.fixtures.recipes.ova import descriptor

BLOCK = 64 * 1024 * 1024
BLOCKS = 64
DISK_SIZE = BLOCK * BLOCKS
REPEAT = 3
OVA = BUILD / "bench" / "4g.ova"


class _Repeat(io.RawIOBase):
    """``block`` repeated ``count`` times, as a stream."""

    def __init__(self, block: bytes, count: int) -> None:
        super().__init__()
        self._view = memoryview(block)
        self._left = len(block) * count
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        start = self._position % len(self._view)
        size = min(len(buffer), self._left, len(self._view) - start)
        buffer[:size] = self._view[start : start + size]
        self._position += size
        self._left -= size
        return size


def _stream(data: bytes, count: int = 1) -> io.BufferedReader:
    return io.BufferedReader(_Repeat(data, count), 1 << 20)


def build(path: Path = OVA) -> Path:
    """Write the 4 GiB OVA unless it is already there."""
    if path.exists() and path.stat().st_size > DISK_SIZE:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(BLOCK)
    digest = hashlib.sha256()
    for _ in range(BLOCKS):
        digest.update(block)
    ovf = descriptor("disk.img", capacity_mib=DISK_SIZE >> 20, disk_format="raw")
    manifest = (
        f"SHA256(bench.ovf)= {hashlib.sha256(ovf).hexdigest()}\n"
        f"SHA256(disk.img)= {digest.hexdigest()}\n"
    ).encode()
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT, bufsize=BLOCK) as tar:
        for name, data in (("bench.ovf", ovf), ("bench.mf", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, _stream(data))
        info = tarfile.TarInfo("disk.img")
        info.size = DISK_SIZE
        tar.addfile(info, _stream(block, BLOCKS))
    partial.rename(path)
    return path


def main() -> None:
    path = build()
    size = path.stat().st_size
    sha256sum = shutil.which("sha256sum") or "sha256sum"
    subprocess.run([sha256sum, path], capture_output=True, check=True)

    theirs = best(
        lambda: subprocess.run([sha256sum, path], capture_output=True, check=True), REPEAT
    )
    with FileSource(path) as source:
        report = imgfmt.inspect(source)
        read = source.bytes_read
    ours = best(lambda: imgfmt.inspect(path), REPEAT)

    gib = size / (1 << 30)
    print(
        f"{gib:.2f} GiB OVA ({'safe' if report.safe else 'UNSAFE'}, {read / size:.3f} of it "
        f"read): imgfmt inspect {ours:.2f} s ({size / ours / 1e6:.0f} MB/s), sha256sum "
        f"{theirs:.2f} s ({size / theirs / 1e6:.0f} MB/s), ratio {ours / theirs:.2f}x "
        "(target <= 1.3x)"
    )

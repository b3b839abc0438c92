"""The ari inspector against cpio archives made by GNU cpio and the real compressors."""

from __future__ import annotations

import bz2
import gzip
import lzma
from typing import Any

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.inspectors.ari import COMPRESSIONS, MAX_ENTRIES, MAX_OUTPUT, InitramfsInspector
from imgfmt.inspectors.base import Inspection
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource
from tests.fixtures.recipe import run
from tests.inspectors import common

FIXTURES = common.entries("ari")
BY_NAME = common.by_name(FIXTURES)
READ_BUDGET = 2 * 1024 * 1024
FUZZ_WINDOW = 64 * 1024
COMPRESSED = [
    "initrd.gz",
    "initrd.xz",
    "initrd.zst",
    "initrd.lz4",
    "initrd.lz4f",
    "initrd.bz2",
    "initrd.lzma",
]


def _bytes(name: str) -> bytes:
    return common.head(BY_NAME[name]["path"])


def _inspect(name: str) -> Inspection:
    with FileSource(BY_NAME[name]["path"]) as source:
        return InitramfsInspector.inspect(source)


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(InitramfsInspector, entry, READ_BUDGET)


@pytest.mark.parametrize("name", COMPRESSED)
def test_decompressed_head_is_the_archive(name: str) -> None:
    """Each decoder (the pure-Python LZ4 one included) gives the archive's first bytes."""
    archive = _bytes("initrd-newc.cpio")
    data = _bytes(name)
    (compression,) = [c for c in COMPRESSIONS if data.startswith(c.magic)]
    assert compression.head is not None
    head = compression.head(lambda o, n: data[o : o + n], 0, MAX_OUTPUT)
    assert head.error is None
    assert not head.truncated
    assert head.data == archive[:MAX_OUTPUT]
    names = _inspect(name).details["segments"][0]["names"]
    assert names[:4] == [".", "bin", "bin/true", "etc"]


def test_small_archive_is_examined_whole() -> None:
    details = _inspect("initrd-small.gz").details
    assert details["complete"] is True
    assert "init" in details["segments"][0]["names"]


def test_early_microcode_then_compressed() -> None:
    details = _inspect("initrd-microcode.img").details
    early, main = details["segments"]
    assert early["compression"] == "none"
    assert "kernel/x86/microcode/GenuineIntel.bin" in early["names"]
    assert early["complete"] is True
    assert main["compression"] == "zstd"
    assert main["offset"] % 4 == 0
    assert main["names"][0] == "."


def test_entry_walk_is_bounded() -> None:
    details = _inspect("initrd-many.cpio").details
    assert details["entries"] == MAX_ENTRIES
    assert details["complete"] is False


def test_lz4_frame_is_flagged_for_the_kernel() -> None:
    (finding,) = _inspect("initrd.lz4f").findings
    assert finding.severity is Severity.WARNING
    assert "legacy" in finding.message


def test_garbage_header_message() -> None:
    (finding,) = _inspect("initrd-garbage.cpio").findings
    assert finding.offset == 112
    assert "filesize" in finding.message


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(b"hello\n" * 1000),
        lzma.compress(b"hello\n" * 1000),
        lzma.compress(b"hello\n" * 1000, format=lzma.FORMAT_ALONE),
        bz2.compress(b"hello\n" * 1000),
        zstandard.ZstdCompressor().compress(b"hello\n" * 1000),
        run("lz4", "-l", "-q", "-c", "/etc/services"),
        b"07070",
        b"",
        bytes(4096),
    ],
    ids=["gzip", "xz", "lzma", "bzip2", "zstd", "lz4", "short-magic", "empty", "zeros"],
)
def test_compressed_non_archives_are_not_initramfs(data: bytes) -> None:
    assert not InitramfsInspector.probe(BytesSource(data))


def test_gzip_of_a_cpio_is_an_initramfs_even_from_memory() -> None:
    data = gzip.compress(_bytes("initrd-small.cpio"))
    source = BytesSource(data)
    assert InitramfsInspector.probe(source)
    details = InitramfsInspector.inspect(source).details
    assert details["complete"] is True


@common.FUZZ
@given(name=st.sampled_from(sorted(BY_NAME)), data=st.data())
def test_mutations_never_crash(name: str, data: st.DataObject) -> None:
    common.fuzz(InitramfsInspector, common.damaged(data, _bytes(name)[:FUZZ_WINDOW]), READ_BUDGET)

"""The aki inspector against a real Debian bzImage, its vmlinux and synthetic arm64 Images."""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import ImgfmtError
from imgfmt.inspectors.aki import KernelInspector
from imgfmt.inspectors.base import Inspection
from imgfmt.report import Severity
from imgfmt.source import BytesSource, FileSource
from tests.inspectors import common

FIXTURES = common.entries("aki")
BY_NAME = common.by_name(FIXTURES)
READ_BUDGET = 64 * 1024
FUZZ_WINDOW = 64 * 1024


def _needs(name: str) -> dict[str, Any]:
    if name not in BY_NAME:
        pytest.skip(f"{name} was not built (see the aki recipe's message)")
    return BY_NAME[name]


def _head(name: str, length: int = FUZZ_WINDOW) -> bytes:
    return common.head(BY_NAME[name]["path"], length)


def _inspect(data: bytes) -> Inspection:
    source = BytesSource(data)
    assert KernelInspector.probe(source)
    return KernelInspector.inspect(source)


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(KernelInspector, entry, READ_BUDGET)


def test_debian_bzimage_details() -> None:
    entry = _needs("bzimage-debian")
    with FileSource(entry["path"]) as source:
        details = KernelInspector.inspect(source).details
    assert re.match(r"\d+\.\d+\.\d+-\d+-cloud-amd64 \(", details["version"])
    assert details["boot_protocol"] >= "2.12"
    assert details["relocatable"] is True
    assert "XLF_KERNEL_64" in details["xloadflags"]
    assert details["payload_compression"] in {"lz4", "xz", "gzip", "zstd"}


def test_bzimage_messages_name_fields() -> None:
    _needs("bzimage-version-pointer")
    with FileSource(BY_NAME["bzimage-version-pointer"]["path"]) as source:
        (finding,) = KernelInspector.inspect(source).findings
    assert finding.offset == 0x20E
    assert "kernel_version" in finding.message
    cut = _inspect(_head("bzimage-setup-cut"))
    assert any(f.offset == 0x1F1 and "setup_sects" in f.message for f in cut.findings)


def test_vmlinux_details() -> None:
    entry = _needs("vmlinux-notes")
    with FileSource(entry["path"]) as source:
        details = KernelInspector.inspect(source).details
    assert {"Linux", "Xen"} <= set(details["note_owners"])
    assert details["elf_class"] == 64
    assert details["endianness"] == "little"


def test_user_program_is_not_a_kernel() -> None:
    with FileSource("/bin/true") as source:
        assert not KernelInspector.probe(source)
        with pytest.raises(ImgfmtError):
            KernelInspector.inspect(source)


def test_elf_without_kernel_notes_is_not_a_kernel() -> None:
    _needs("vmlinux-notes")
    with open(str(BY_NAME["vmlinux-notes"]["path"]), "rb") as f:
        data = f.read()
    anonymous = data.replace(b"Linux\0", b"Lunix\0").replace(b"Xen\0", b"Xon\0")
    assert not KernelInspector.probe(BytesSource(anonymous))


def test_elf_with_interpreter_is_not_a_kernel() -> None:
    _needs("vmlinux-notes")
    data = bytearray(_head("vmlinux-notes", 1 << 20))
    phoff, phentsize = 64, 56
    assert struct.unpack_from("<I", data, phoff)[0] == 1
    struct.pack_into("<I", data, phoff, 3)  # the first LOAD becomes PT_INTERP
    assert phentsize == struct.unpack_from("<H", data, 54)[0]
    assert not KernelInspector.probe(BytesSource(bytes(data)))


def test_ordinary_disks_are_not_kernels() -> None:
    mbr = bytearray(4096)
    mbr[0x1FE:0x200] = b"\x55\xaa"
    gpt = bytearray(mbr)
    gpt[0x200:0x208] = b"EFI PART"
    for data in (bytes(mbr), bytes(gpt), bytes(4096), b"", b"\x7fELF"):
        assert not KernelInspector.probe(BytesSource(data))


def test_arm64_flags() -> None:
    details = _inspect(_head("arm64-image")).details
    assert details["phys_base_anywhere"] is True
    assert details["endianness"] == "little"
    flagged = _inspect(_head("arm64-reserved-flags"))
    (finding,) = flagged.findings
    assert finding.severity is Severity.WARNING
    assert finding.offset == 0x18


@common.FUZZ
@given(name=st.sampled_from(sorted(BY_NAME)), data=st.data())
def test_mutations_never_crash(name: str, data: st.DataObject) -> None:
    common.fuzz(KernelInspector, common.damaged(data, _head(name)), 2 * READ_BUDGET)


def test_elf_program_headers_a_stream_did_not_keep_are_unverifiable() -> None:
    """An ELF kernel whose program headers lie in a stream's unkept middle is no silent raw."""
    from imgfmt.detect import inspect
    from imgfmt.report import Code
    from imgfmt.source import STREAM_HEAD_WINDOW, STREAM_TAIL_WINDOW, StreamSource

    _needs("vmlinux-notes")
    data = bytearray(_head("vmlinux-notes", 1 << 20))
    assert struct.unpack_from("<Q", data, 0x20)[0] == 64
    moved_to = STREAM_HEAD_WINDOW + (1 << 20)
    struct.pack_into("<Q", data, 0x20, moved_to)  # e_phoff: past the kept head
    size = moved_to + (2 << 20)
    head = bytes(data) + bytes(STREAM_HEAD_WINDOW - len(data))
    stream = StreamSource(head, bytes(STREAM_TAIL_WINDOW), size, "<stdin>")
    report = inspect(stream)
    assert not report.safe
    assert Code.STREAM_UNVERIFIABLE in report.codes()
    (finding,) = [f for f in report.findings if f.code is Code.STREAM_UNVERIFIABLE]
    assert finding.offset == moved_to

"""tarsafe: headers parsed by hand, members checked, and any damage an ImgfmtError."""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgfmt.containers import tarsafe
from imgfmt.containers.tarsafe import LinkRule, SourceCursor, StreamCursor, TarMember
from imgfmt.errors import FormatError, ImgfmtError
from imgfmt.source import BytesSource, StreamSource


def _archive(*entries: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def _walk(data: bytes) -> list[TarMember]:
    return list(tarsafe.walk(SourceCursor(BytesSource(data)), "tar"))


def _codes(data: bytes, rule: LinkRule = LinkRule.REFUSE) -> list[str]:
    found = tarsafe.member_findings(_walk(data), "tar", len(data), rule)
    return [str(f.code) for f in found]


def test_walk_gives_names_sizes_and_data_offsets() -> None:
    long_name = "d/" + "n" * 200
    data = _archive(_file("a", b"hello"), _file(long_name, b"12345678" * 100))
    members = _walk(data)

    assert [m.name for m in members] == ["a", long_name]
    assert data[members[0].offset : members[0].offset + 5] == b"hello"
    assert members[1].size == 800


def test_gnu_long_names_are_read() -> None:
    name = "x" * 300
    assert [m.name for m in _walk(_archive(_file(name), fmt=tarfile.GNU_FORMAT))] == [name]


def test_stream_cursor_reads_what_source_cursor_reads() -> None:
    data = _archive(_file("a", b"1" * 700), _file("b", b"2"))
    streamed = list(tarsafe.walk(StreamCursor(io.BytesIO(data)), "tar"))
    assert [(m.name, m.size) for m in streamed] == [(m.name, m.size) for m in _walk(data)]


def test_pax_size_too_long_for_int_is_a_format_error() -> None:
    info, data = _file("disk.vmdk")
    info.pax_headers = {"size": "9" * 5000}
    with pytest.raises(FormatError, match="pax size"):
        _walk(_archive((info, data)))


def test_names_stop_where_a_stream_kept_nothing() -> None:
    entries = (_file("a.ovf"), _file("big", bytes(64 * 1024)), _file("c"))
    data = _archive(*entries, fmt=tarfile.USTAR_FORMAT)
    stream = StreamSource.drain(io.BytesIO(data), "<stdin>", head_window=4096, tail_window=512)

    assert tarsafe.names(stream, 16) == ["a.ovf", "big"]


@pytest.mark.parametrize("size", [b"0000000_001\0", b"+0000000001\0", b"\t0000000001\0"])
def test_size_with_more_than_octal_digits_is_a_format_error(size: bytes) -> None:
    data = bytearray(_archive(_file("a"), fmt=tarfile.USTAR_FORMAT))
    data[124:136] = size
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(FormatError, match="not octal"):
        _walk(bytes(data))


def _with_prefix(magic: bytes) -> bytes:
    data = bytearray(_archive(_file("disk.vmdk"), fmt=tarfile.USTAR_FORMAT))
    data[257:265] = magic
    data[345:346] = b"x"
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return bytes(data)


def test_name_prefix_counts_only_in_a_posix_header() -> None:
    assert [m.name for m in _walk(_with_prefix(b"ustar\x0000"))] == ["x/disk.vmdk"]
    # GNU tar calls these disk.vmdk, Python's tarfile x/disk.vmdk.
    for magic in (b"ustar  \x00", bytes(8)):
        with pytest.raises(FormatError, match="name prefix"):
            _walk(_with_prefix(magic))


def _block(name: str, size: int, typeflag: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[156] = typeflag
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_old_directory_with_data_hides_nothing() -> None:
    # Type NUL and a trailing slash is a v7 directory: tarfile reads the next header where
    # its "data" starts, so the member inside is one tarfile extracts.
    inner = _block("disk.vmdk", 4, ord("0")) + b"evil".ljust(512, b"\0")
    first = _block("disk.vmdk", 1, ord("0")) + b"x".ljust(512, b"\0")
    data = first + _block("x/", len(inner), 0) + inner + bytes(1024)

    assert [m.name for m in _walk(data)] == ["disk.vmdk", "x/", "disk.vmdk"]
    assert set(_codes(data)) == {"unsafe-member"}


def test_bad_checksum_is_a_format_error() -> None:
    data = bytearray(_archive(_file("a")))
    data[0] ^= 0xFF
    with pytest.raises(FormatError, match="checksum"):
        _walk(bytes(data))


def test_a_checksum_of_signed_bytes_is_accepted() -> None:
    # Old tars summed signed chars; the sum is counted without a Python loop per byte (that
    # loop cost 25 us a header, 2.5 s for a layer of 100000 empty members).
    header = bytearray(_file("\xe9t\xe9")[0].tobuf(tarfile.USTAR_FORMAT))
    header[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in header)
    header[148:156] = b"%06o\0 " % signed
    block = bytes(header) + bytes(512)

    assert tarsafe._checksum_ok(block)
    assert [m.name for m in _walk(block + bytes(1024))] == ["\xe9t\xe9"]


@pytest.mark.parametrize(
    "entry",
    [_file("../etc/x"), _file("/etc/x"), _link("l", "/etc/passwd"), _link("h", "a", b"1")],
    ids=["traversal", "absolute", "symlink", "hardlink"],
)
def test_hostile_members_are_unsafe(entry: tuple[tarfile.TarInfo, bytes]) -> None:
    assert "unsafe-member" in _codes(_archive(_file("a"), entry))


def test_repeated_member_is_unsafe() -> None:
    assert _codes(_archive(_file("a"), _file("./a"))) == ["unsafe-member"]


def _sparse(name: str, real_name: str) -> tuple[tarfile.TarInfo, bytes]:
    info, data = _file(name, b"1\n0\n4\n".ljust(512, b"\0") + b"evil")
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": real_name,
        "GNU.sparse.realsize": "4",
    }
    return info, data


def test_gnu_sparse_member_is_named_as_extracted_and_unsafe() -> None:
    # GNU tar and Python's tarfile both extract the second member as disk.vmdk.
    data = _archive(_file("disk.vmdk"), _sparse("GNUSparseFile.0/x", "disk.vmdk"))

    assert [m.name for m in _walk(data)] == ["disk.vmdk", "disk.vmdk"]
    assert set(_codes(data)) == {"unsafe-member"}
    assert len(_codes(data)) == 2
    assert _codes(_archive(_sparse("x", "../../etc/x")), LinkRule.ROOTFS) == ["unsafe-member"] * 2


def test_pax_realsize_alone_makes_a_sparse_member() -> None:
    # tarfile takes GNU.sparse.realsize as the size and looks for the next header there.
    info, data = _file("disk.vmdk", b"x" * 1024)
    info.pax_headers = {"GNU.sparse.realsize": "0"}
    (member,) = _walk(_archive((info, data)))
    assert member.sparse
    assert _codes(_archive((info, data))) == ["unsafe-member"]


def _extension(typeflag: bytes, data: bytes) -> bytes:
    info = tarfile.TarInfo("././@LongLink" if typeflag in b"LK" else "PaxHeader")
    info.type, info.size = typeflag, len(data)
    return info.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)


def _pax(**records: str) -> bytes:
    out = b""
    for key, value in records.items():
        text = f" {key}={value}\n".encode()
        length = len(text) + 1
        while len(str(length)) + len(text) != length:
            length += 1
        out += str(length).encode() + text
    return out


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x", _pax(path="disk.vmdk")), (b"x", _pax(path="other"))],
        [(b"x", _pax(path="disk.vmdk")), (b"x", _pax(mtime="1"))],
        [(b"L", b"disk.vmdk\0"), (b"x", _pax(path="other"))],
        [(b"x", _pax(path="other")), (b"L", b"disk.vmdk\0")],
        [(b"K", b"a\0"), (b"x", _pax(linkpath="b"))],
        [(b"g", _pax(path="disk.vmdk"))],
    ],
    ids=["x-x", "x-x-disjoint", "L-x", "x-L", "K-x", "global-path"],
)
def test_member_named_twice_by_extended_headers_is_a_format_error(
    headers: list[tuple[bytes, bytes]],
) -> None:
    # tarfile applies the first of two headers, GNU tar and Go's archive/tar the pax one or
    # the last, and Go no global one: each would extract the member under another name.
    (info, data), end = _file("junk", b"q"), bytes(1024)
    member = info.tobuf(tarfile.USTAR_FORMAT) + data + bytes(511)
    archive = b"".join(_extension(kind, body) for kind, body in headers) + member + end
    with pytest.raises(FormatError, match="readers disagree"):
        _walk(archive)


def test_pax_keyword_with_a_nul_is_a_format_error() -> None:
    # GNU tar and tarfile ignore 'path\0x=junk' and extract the member as disk.vmdk.
    record = b"20 path\0x=junk.vmdk\n"
    assert len(record) == 20
    info, data = _file("disk.vmdk")
    member = info.tobuf(tarfile.USTAR_FORMAT) + data + bytes(511)
    with pytest.raises(FormatError, match="NUL"):
        _walk(_extension(b"x", record) + member + bytes(1024))


def test_global_header_without_names_still_applies() -> None:
    info, data = _file("a")
    data = _archive((info, data))
    archive = _extension(b"g", _pax(comment="made by hand")) + data
    assert [m.name for m in _walk(archive)] == ["a"]


def test_global_sparse_records_make_every_later_member_sparse() -> None:
    files = _archive(_file("a"), _file("b"))
    archive = _extension(b"g", _pax(**{"GNU.sparse.realsize": "1"})) + files
    assert [m.sparse for m in _walk(archive)] == [True, True]


def test_global_records_are_scanned_once_not_for_every_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every member copied and scanned all global records: 80000 and 1000 members took 9 s.
    scanned: list[int] = []
    sparse = tarsafe._sparse

    def counted(records: Iterable[str]) -> bool:
        keys = list(records)
        scanned.append(len(keys))
        return sparse(keys)

    monkeypatch.setattr(tarsafe, "_sparse", counted)
    records = _pax(**{f"k{i}": "" for i in range(2000)})
    files = _archive(*(_file(f"m{i}") for i in range(100)), fmt=tarfile.USTAR_FORMAT)

    members = _walk(_extension(b"g", records) + files)

    assert len(members) == 100
    assert sum(scanned) == 2000


def test_links_inside_an_image_store_are_allowed() -> None:
    data = _archive(_file("b.tar"), _link("d/layer.tar", "../b.tar"))
    assert _codes(data, LinkRule.INSIDE) == []
    assert _codes(_archive(_link("d/x", "../../etc")), LinkRule.INSIDE) == ["unsafe-member"]


def test_rootfs_allows_absolute_names_and_symlinks_but_not_escapes() -> None:
    data = _archive(_file("/etc/hostname"), _link("bin", "/usr/bin"))
    assert _codes(data, LinkRule.ROOTFS) == []
    assert _codes(_archive(_file("../x")), LinkRule.ROOTFS) == ["unsafe-member"]


def test_member_past_the_end_is_out_of_bounds() -> None:
    data = _archive(_file("a", b"z" * 4096))[:2048]
    assert "out-of-bounds" in _codes(data)


def test_link_target_resolution() -> None:
    link = TarMember("a/b", ord("2"), 0, 0, 0, "../c")
    assert tarsafe.link_target(link) == "c"
    assert tarsafe.link_target(TarMember("a", ord("2"), 0, 0, 0, "../c")) is None


@settings(max_examples=300, deadline=None)
@given(
    cut=st.integers(0, 3 * 1024),
    edits=st.lists(st.tuples(st.integers(0, 3 * 1024 - 1), st.integers(0, 255)), max_size=8),
)
def test_mutated_headers_never_crash(cut: int, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_archive(_file("a" * 120, b"q" * 600), _link("l", "a"), _file("b")))
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    blob = bytes(data[:cut])
    with contextlib.suppress(ImgfmtError):
        tarsafe.member_findings(_walk(blob), "tar", len(blob))

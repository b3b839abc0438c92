"""Sources: positional reads, stream windows, slices and their accounting."""

from __future__ import annotations

import io
import os
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import SourceError, UnverifiableError
from imgfmt.source import (
    STREAM_HEAD_WINDOW,
    STREAM_TAIL_WINDOW,
    BytesSource,
    FileSource,
    SliceSource,
    StreamSource,
    open_source,
)

GIB = 1 << 30


class _Zeros(io.RawIOBase):
    """A pipe of ``size`` zero bytes, served from one reused buffer."""

    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._left)
        buf[:n] = bytes(n)
        self._left -= n
        return n


def test_file_source_reads_and_counts(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * 4)
    with FileSource(path) as src:
        assert src.size == 1024
        assert src.read(250, 10) == bytes(range(250, 256)) + bytes(range(4))
        assert src.read(1020, 100) == bytes(range(252, 256))
        assert src.read(5000, 10) == b""
        assert src.bytes_read == 14


def test_missing_file_is_a_source_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        FileSource(os.path.join(tmp_path, "nope"))


def test_directory_is_refused(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SourceError, match="directory"):
        FileSource(tmp_path)


@given(
    data=st.binary(min_size=0, max_size=4000),
    head=st.integers(0, 1500),
    tail=st.integers(0, 1500),
    offset=st.integers(0, 4100),
    length=st.integers(0, 600),
)
def test_stream_serves_its_windows_and_refuses_the_middle(
    data: bytes, head: int, tail: int, offset: int, length: int
) -> None:
    src = StreamSource.drain(io.BytesIO(data), "s", head_window=head, tail_window=tail)
    assert src.size == len(data)
    end = min(offset + length, len(data))
    inside = src.complete or end <= head or offset >= len(data) - len(src._tail)
    if offset >= len(data) or length == 0:
        assert src.read(offset, length) == b""
    elif inside:
        assert src.read(offset, length) == data[offset:end]
    else:
        with pytest.raises(UnverifiableError):
            src.read(offset, length)


def test_reads_of_a_stream_kept_whole_copy_only_what_they_return() -> None:
    # Head and tail were joined for every read: 8 MiB copied per tar header of a gzip'd OVA.
    data = bytes(range(256)) * (STREAM_HEAD_WINDOW // 256 + 64)
    src = StreamSource.drain(io.BytesIO(data))
    assert src.complete

    tracemalloc.start()
    try:
        pieces = [src.read(offset, 512) for offset in range(0, len(data), len(data) // 64)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert pieces[1] == data[len(data) // 64 :][:512]
    assert peak < 1 << 20


def test_slice_is_bounded() -> None:
    parent = BytesSource(b"0123456789")
    piece = SliceSource(parent, 3, 4, "piece")
    assert piece.size == 4
    assert piece.read(0, 100) == b"3456"
    assert piece.read(2, 1) == b"5"


def test_open_source_drains_non_regular_streams() -> None:
    src = open_source(io.BytesIO(b"abc" * 10))
    assert isinstance(src, StreamSource)
    assert src.size == 30


def test_a_giant_stream_holds_only_its_windows() -> None:
    tracemalloc.start()
    try:
        src = StreamSource.drain(io.BufferedReader(_Zeros(4 * GIB), 1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert src.size == 4 * GIB
    assert not src.complete
    # The head is copied once out of the buffer it was gathered in; the rest is read chunks.
    assert peak < 2 * STREAM_HEAD_WINDOW + STREAM_TAIL_WINDOW + (4 << 20)
    with pytest.raises(UnverifiableError):
        src.read(GIB, 512)

"""Truncated and mutated images: the only outcomes are a report or an imgfmt error.

Every fixture is cut and bit-flipped by hypothesis, then run through the whole engine
(every probe, the chosen inspector, the policy) from memory.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imgfmt
from imgfmt.errors import ImgfmtError
from imgfmt.report import Code, ImageReport
from imgfmt.source import BytesSource, StreamSource
from tests.conftest import fixture_entries, fixture_ids

ENTRIES = fixture_entries()
#: How much of each fixture is fed to the fuzzer: headers live in the first pages, footers
#: in the last ones.
HEAD = 256 * 1024
TAIL = 4096


@cache
def _sample(path: str) -> bytes:
    with open(path, "rb") as f:
        head = f.read(HEAD)
        f.seek(0, 2)
        size = f.tell()
        if size <= HEAD:
            return head
        f.seek(size - TAIL)
        return head + f.read(TAIL)


def _run(data: bytes) -> None:
    try:
        report = imgfmt.inspect(BytesSource(data, "fuzz"))
    except ImgfmtError:
        return
    report.to_dict()


mutation = st.tuples(st.integers(min_value=0, max_value=HEAD + TAIL), st.integers(0, 255))


@pytest.mark.parametrize("entry", ENTRIES, ids=fixture_ids(ENTRIES))
@settings(max_examples=60, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=HEAD + TAIL)),
    edits=st.lists(mutation, max_size=8),
    header_edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=6),
)
def test_mutations_never_crash(
    entry: dict[str, Any],
    cut: int | None,
    edits: list[tuple[int, int]],
    header_edits: list[tuple[int, int]],
) -> None:
    data = bytearray(_sample(entry["path"]))
    for offset, value in (*edits, *header_edits):
        if offset < len(data):
            data[offset] = value
    if cut is not None:
        del data[cut:]
    _run(bytes(data))


class _Pipe:
    """A pipe's reads: never more than ``chunk`` bytes at a time, whatever was asked."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data = data
        self.chunk = chunk
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        n = self.chunk if n < 0 else min(n, self.chunk)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def _verdict(source: BytesSource | StreamSource) -> ImageReport | None:
    try:
        return imgfmt.inspect(source)
    except ImgfmtError:
        return None


@settings(max_examples=300, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])
@given(
    entry=st.sampled_from(ENTRIES),
    edits=st.lists(mutation, max_size=6),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=HEAD + TAIL)),
    chunk=st.sampled_from([17, 512, 65521]),
    head_window=st.sampled_from([0x8006, 64 * 1024, 128 * 1024, HEAD]),
    tail_window=st.sampled_from([512, 4096, 64 * 1024]),
)
def test_a_stream_agrees_with_the_file_or_says_it_cannot(
    entry: dict[str, Any],
    edits: list[tuple[int, int]],
    cut: int | None,
    chunk: int,
    head_window: int,
    tail_window: int,
) -> None:
    """Read through a pipe in odd chunks, with windows small enough that some reads miss.

    The stream's report is the file's, or it carries ``stream-unverifiable``: never a safe
    verdict the file would not get.
    """
    data = bytearray(_sample(entry["path"]))
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    if cut is not None:
        del data[cut:]
    whole = _verdict(BytesSource(bytes(data), "fuzz"))
    source = StreamSource.drain(_Pipe(bytes(data), chunk), "fuzz", head_window, tail_window)
    streamed = _verdict(source)
    if streamed is None or whole is None:
        assert streamed is None and whole is None
        return
    if Code.STREAM_UNVERIFIABLE in streamed.codes() and not streamed.safe:
        return
    assert not (streamed.safe and not whole.safe)
    assert (streamed.safe, streamed.disk_format, streamed.virtual_size) == (
        whole.safe,
        whole.disk_format,
        whole.virtual_size,
    )

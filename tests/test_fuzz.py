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
from imgfmt.source import BytesSource
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

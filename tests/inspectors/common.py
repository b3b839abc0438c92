"""What the inspector tests share: a recipe's fixtures, the direct check of one inspector class
against them, and the hypothesis helpers that damage an image.

``tests/test_fixtures.py`` holds every fixture's report (codes, safety, details) to the manifest
through detection; the check here calls ``probe()`` and ``inspect()`` on one class, without
detection, and holds its own read budget.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from imgfmt.errors import FormatError, ImgfmtError, TruncatedError
from imgfmt.inspectors.base import Inspection, Inspector
from imgfmt.source import BytesSource, FileSource, Source, StreamSource
from tests.fixtures.build import build_recipe

Entry = dict[str, Any]

#: Examples per fuzz test: enough to reach every field of a header, cheap enough for CI.
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def entries(recipe: str) -> list[Entry]:
    """The manifest entries of one recipe, built if its source changed."""
    return list(build_recipe(recipe))


def by_name(fixtures: list[Entry]) -> dict[str, Entry]:
    return {str(entry["name"]): entry for entry in fixtures}


def name_of(entry: Entry) -> str:
    """A test id: the fixture's name."""
    return str(entry["name"])


@cache
def head(path: str, length: int | None = None) -> bytes:
    """The first ``length`` bytes of a fixture (all of it without a length), read once."""
    with open(path, "rb") as f:
        return f.read() if length is None else f.read(length)


def inspect_file(inspector: type[Inspector], entry: Entry) -> tuple[Inspection, int]:
    """A fixture that must probe as ``inspector``, inspected, with the bytes that took."""
    with FileSource(str(entry["path"])) as source:
        assert inspector.probe(source)
        return inspector.inspect(source), source.bytes_read


def from_stream(entry: Entry, window: int | None = None) -> StreamSource:
    """A fixture's bytes as a drained stream; ``window`` shrinks the head and tail it keeps."""
    with open(entry["path"], "rb") as f:
        stream = io.BytesIO(f.read())
    if window is None:
        return StreamSource.drain(stream)
    return StreamSource.drain(stream, head_window=window, tail_window=window)


def check_complete_stream(inspector: type[Inspector], entry: Entry) -> Inspection:
    """A whole fixture read from a stream gives the file's virtual size."""
    result = inspector.inspect(from_stream(entry))
    assert result.virtual_size == entry["oracle"]["virtual-size"]
    return result


def check_fixture(inspector: type[Inspector], entry: Entry, budget: int) -> Inspection | None:
    """``probe()`` and ``inspect()`` of one class against one fixture, within ``budget`` reads.

    A fixture of another format must not probe as this one (unless detection saw several
    formats match). A parse error is allowed only where the manifest expects the code detection
    turns it into; then None is returned. Details must be JSON.
    """
    with FileSource(str(entry["path"])) as source:
        if entry["format"] != inspector.format and "multiple-formats" not in entry["codes"]:
            assert not inspector.probe(source)
            return None
        assert inspector.probe(source)
        try:
            result = inspector.inspect(source)
        except FormatError as exc:
            code = "truncated" if isinstance(exc, TruncatedError) else "invalid-header"
            assert not entry["safe"], exc
            assert set(entry["codes"]) <= {code}, exc
            return None
        assert source.bytes_read < budget

    assert result.format == inspector.format
    if entry["oracle"]:
        assert result.virtual_size == entry["oracle"]["virtual-size"]
    elif entry["virtual_size"] is not None:
        assert result.virtual_size == entry["virtual_size"]
    json.dumps(dict(result.details))
    return result


def matches(actual: Any, expected: Any) -> bool:
    """``expected`` holds for ``actual``: dicts by their listed keys, lists item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(matches(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


def damaged(
    data: st.DataObject,
    image: bytes,
    offsets: st.SearchStrategy[int] | None = None,
    width: int = 1,
    max_edits: int = 8,
) -> bytes:
    """``image`` with up to ``max_edits`` random runs of ``width`` bytes, maybe cut short.

    ``offsets`` says where edits land (negative ones count from the end); by default anywhere.
    """
    if not image:
        return image
    where = offsets if offsets is not None else st.integers(0, len(image) - 1)
    edit = st.tuples(where, st.binary(min_size=width, max_size=width))
    result = bytearray(image)
    for offset, value in data.draw(st.lists(edit, max_size=max_edits), label="edits"):
        at = offset % len(result)
        result[at : at + width] = value[: len(result) - at]
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(result))), label="cut")
    return bytes(result if cut is None else result[:cut])


def survives(
    inspect: Callable[[Source], Inspection], source: Source, budget: int | None = None
) -> None:
    """Inspecting ``source`` gives an inspection or an ``ImgfmtError``, never a crash."""
    try:
        result = inspect(source)
    except ImgfmtError:
        return
    finally:
        if budget is not None:
            assert source.bytes_read < budget
    assert isinstance(result.virtual_size, int)
    json.dumps(dict(result.details))


def fuzz(inspector: type[Inspector], data: bytes, budget: int | None = None) -> None:
    """``probe()`` then ``inspect()`` of damaged bytes: see ``survives``."""
    source = BytesSource(data)
    inspector.probe(source)
    survives(inspector.inspect, source, budget)


class EditedSource(Source):
    """A source seen through byte edits, recording which ranges were read."""

    def __init__(self, parent: Source, edits: dict[int, int]) -> None:
        super().__init__(parent.name)
        self._parent = parent
        self._edits = edits
        self.ranges: list[tuple[int, int]] = []

    @property
    def size(self) -> int | None:
        return self._parent.size

    def _read(self, offset: int, length: int) -> bytes:
        self.ranges.append((offset, length))
        data = bytearray(self._parent.read(offset, length))
        for at, value in self._edits.items():
            if offset <= at < offset + len(data):
                data[at - offset] = value
        return bytes(data)


def read_ranges(
    inspect: Callable[[Source], Inspection], fixtures: list[Entry]
) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each fixture's path with the ranges a clean inspection of it reads."""
    found = []
    for entry in fixtures:
        with FileSource(str(entry["path"])) as parent:
            source = EditedSource(parent, {})
            inspect(source)
        found.append((str(entry["path"]), source.ranges))
    return found


def edits_in(data: st.DataObject, ranges: list[tuple[int, int]]) -> dict[int, int]:
    """Up to 16 byte edits, each inside a range that was read."""
    edits = {}
    for _ in range(data.draw(st.integers(1, 16))):
        offset, length = data.draw(st.sampled_from(ranges))
        edits[data.draw(st.integers(offset, offset + max(0, length - 1)))] = data.draw(
            st.integers(0, 255)
        )
    return edits

"""Registry signatures accept every file their class's probe accepts.

Detection imports a module only when its signature matches, so a signature that missed a
file the probe would accept could hide a second format (a polyglot). Every fixture, and
hypothesis mutations of them, hold each signature to its probe.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgfmt import containers, inspectors
from imgfmt.registry import Entry, Signatures
from imgfmt.source import BytesSource, FileSource, Source
from tests.conftest import fixture_entries, fixture_ids
from tests.test_fuzz import HEAD, TAIL, _sample

ENTRIES = fixture_entries()
REGISTRIES = [("imgfmt.inspectors", e) for e in inspectors.REGISTRY] + [
    ("imgfmt.containers", e) for e in containers.REGISTRY
]


def _uncovered(source: Source) -> list[str]:
    found = Signatures(source)
    return [
        entry.target
        for package, entry in REGISTRIES
        if not found.match(entry) and _probe(package, entry, source)
    ]


def _probe(package: str, entry: Entry, source: Source) -> bool:
    return bool(entry.load(package).probe(source))


@pytest.mark.parametrize("entry", ENTRIES, ids=fixture_ids(ENTRIES))
def test_signatures_cover_probes_on_fixtures(entry: dict[str, Any]) -> None:
    with FileSource(entry["path"]) as source:
        assert _uncovered(source) == []


@pytest.mark.parametrize("entry", ENTRIES, ids=fixture_ids(ENTRIES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, HEAD + TAIL), st.integers(0, 255)), max_size=8))
def test_signatures_cover_probes_on_mutations(
    entry: dict[str, Any], edits: list[tuple[int, int]]
) -> None:
    data = bytearray(_sample(entry["path"]))
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    assert _uncovered(BytesSource(bytes(data))) == []


def test_every_registered_class_loads() -> None:
    assert [cls.format for cls in inspectors.inspectors()] == [
        "qcow2",
        "qed",
        "vmdk",
        "vhd",
        "vhdx",
        "vdi",
        "ploop",
        "luks",
        "iso",
        "aki",
        "ari",
    ]
    assert len(containers.containers()) == len(containers.REGISTRY)

"""VdiInspector against qemu-img made fixtures, hostile edits and random damage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.errors import UnverifiableError
from imgfmt.inspectors.vdi import VdiInspector
from imgfmt.report import Code
from tests.inspectors import common

FIXTURES = common.entries("vdi")
BY_NAME = common.by_name(FIXTURES)
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(VdiInspector, entry, READ_BUDGET)


def test_huge_image_checks_a_bounded_part_of_the_block_map() -> None:
    result, bytes_read = common.inspect_file(VdiInspector, BY_NAME["huge"])
    assert [f.code for f in result.findings] == [Code.NOTE]
    assert bytes_read < 300 * 1024


def test_parent_uuid_is_reported_with_its_offset() -> None:
    result, _ = common.inspect_file(VdiInspector, BY_NAME["diff-parent"])
    (backing,) = [f for f in result.findings if f.code is Code.BACKING_FILE]
    assert backing.offset == 0x1B8
    assert "67452301-ab89-efcd-0123-456789abcdef" in backing.message


def test_stream_without_the_block_map_is_unverifiable() -> None:
    with pytest.raises(UnverifiableError):
        VdiInspector.inspect(common.from_stream(BY_NAME["huge"], window=4096))


def test_complete_stream_matches_the_file() -> None:
    assert not common.check_complete_stream(VdiInspector, BY_NAME["converted"]).findings


SAFE = [e for e in FIXTURES if e["safe"] and e["format"] == "vdi"]


@pytest.mark.parametrize("entry", SAFE, ids=common.name_of)
@common.FUZZ
@given(data=st.data())
def test_damage_gives_an_inspection_or_an_imgfmt_error(
    entry: dict[str, Any], data: st.DataObject
) -> None:
    image = common.head(entry["path"], HEAD)
    common.fuzz(VdiInspector, common.damaged(data, image, width=4), READ_BUDGET)

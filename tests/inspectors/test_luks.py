"""LuksInspector against qemu-img and cryptsetup made volumes, hostile edits and random damage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgfmt.inspectors.luks import LuksInspector, _cipher_problem
from imgfmt.report import Code
from tests.inspectors import common

FIXTURES = common.entries("luks")
BY_NAME = common.by_name(FIXTURES)
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024


@pytest.mark.parametrize("entry", FIXTURES, ids=common.name_of)
def test_fixture(entry: dict[str, Any]) -> None:
    common.check_fixture(LuksInspector, entry, READ_BUDGET)


def test_details_name_the_cipher_and_slots() -> None:
    result, bytes_read = common.inspect_file(LuksInspector, BY_NAME["aes-xts"])
    assert result.details["key_bytes"] == 64
    assert result.details["payload_offset"] == 2068480
    assert len(result.details["uuid"]) == 36
    assert bytes_read < 4096


def test_luks2_is_named_and_refused() -> None:
    if "cryptsetup-luks2" not in BY_NAME:
        pytest.skip("cryptsetup is not installed")
    result, _ = common.inspect_file(LuksInspector, BY_NAME["cryptsetup-luks2"])
    assert result.details["hdr_size"] == 16384
    assert [f.code for f in result.findings] == [Code.UNSUPPORTED_VERSION]


@pytest.mark.parametrize(
    ("cipher", "mode", "hash_spec", "key_bytes", "problem"),
    [
        ("aes", "xts-plain64", "sha256", 64, ""),
        ("aes", "cbc-essiv:sha256", "sha1", 16, ""),
        ("cast5", "cbc-essiv:md5", "sha1", 16, ""),
        ("aes", "cbc-plain:sha1", "sha1", 24, ""),  # a hash beside plain is parsed, then unused
        ("aes", "cbc-essiv:sha1", "sha256", 16, "essiv with sha1"),
        ("cast5", "cbc-essiv:sha256", "sha1", 16, "essiv with sha256"),
        ("aes", "cbc-essiv", "sha256", 16, "no hash"),
        ("aes", "cbc", "sha256", 32, "<mode>-<ivgen>"),
        ("aes", "gcm-plain64", "sha256", 32, "cipher mode 'gcm'"),
        ("aes", "xts-plain64", "sha256", 33, "odd"),
        ("aes", "cbc-plain64", "sha256", 64, "64-byte key"),
        ("aes", "cbc-plain:whirlpool", "sha256", 32, "IV generator hash"),
        ("aes", "cbc-benbi", "sha256", 32, "IV generator 'benbi'"),
        ("AES", "cbc-plain64", "sha256", 32, "cipher 'AES'"),
    ],
)
def test_cipher_specifications(
    cipher: str, mode: str, hash_spec: str, key_bytes: int, problem: str
) -> None:
    found = _cipher_problem(cipher, mode, hash_spec, key_bytes)
    assert (problem in found) if problem else found == ""


def test_complete_stream_matches_the_file() -> None:
    common.check_complete_stream(LuksInspector, BY_NAME["aes-xts"])


SAFE = [e for e in FIXTURES if e["safe"] and e["format"] == "luks"]


@pytest.mark.parametrize("entry", SAFE, ids=common.name_of)
@common.FUZZ
@given(data=st.data())
def test_damage_gives_an_inspection_or_an_imgfmt_error(
    entry: dict[str, Any], data: st.DataObject
) -> None:
    image = common.head(entry["path"], HEAD)
    common.fuzz(LuksInspector, common.damaged(data, image, width=4), READ_BUDGET)

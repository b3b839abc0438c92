"""LuksInspector against qemu-img and cryptsetup made volumes, hostile edits and random damage."""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgfmt.errors import ImgfmtError, TruncatedError
from imgfmt.inspectors.luks import LuksInspector, _cipher_problem
from imgfmt.report import Code, Severity
from imgfmt.source import BytesSource, FileSource, StreamSource
from tests.fixtures.build import build_recipe

FIXTURES: list[dict[str, Any]] = build_recipe("luks")
BY_NAME = {entry["name"]: entry for entry in FIXTURES}
READ_BUDGET = 2 * 1024 * 1024
HEAD = 64 * 1024


def _inspect_file(entry: dict[str, Any]) -> tuple[Any, int]:
    with FileSource(entry["path"]) as source:
        assert LuksInspector.probe(source)
        result = LuksInspector.inspect(source)
        return result, source.bytes_read


@pytest.mark.parametrize("entry", FIXTURES, ids=lambda e: e["name"])
def test_fixture(entry: dict[str, Any]) -> None:
    if entry["format"] is None:
        with FileSource(entry["path"]) as source:
            assert not LuksInspector.probe(source)
        return
    try:
        result, bytes_read = _inspect_file(entry)
    except TruncatedError:
        # A header cut short stops parsing; detection reports it as a truncated image.
        assert "truncated" in entry["codes"]
        assert not entry["safe"]
        return
    assert result.format == "luks"
    if entry["oracle"]:
        assert result.virtual_size == entry["oracle"]["virtual-size"]
    assert set(entry["codes"]) <= {str(f.code) for f in result.findings}
    assert entry["safe"] == all(f.severity < Severity.UNSAFE for f in result.findings)
    for key, value in entry["details"].items():
        assert result.details[key] == value
    json.dumps(dict(result.details))
    assert bytes_read < READ_BUDGET


def test_details_name_the_cipher_and_slots() -> None:
    result, bytes_read = _inspect_file(BY_NAME["aes-xts"])
    assert result.details["key_bytes"] == 64
    assert result.details["payload_offset"] == 2068480
    assert len(result.details["uuid"]) == 36
    assert bytes_read < 4096


def test_luks2_is_named_and_refused() -> None:
    if "cryptsetup-luks2" not in BY_NAME:
        pytest.skip("cryptsetup is not installed")
    result, _ = _inspect_file(BY_NAME["cryptsetup-luks2"])
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
    entry = BY_NAME["aes-xts"]
    data = Path(entry["path"]).read_bytes()
    result = LuksInspector.inspect(StreamSource.drain(io.BytesIO(data)))
    assert result.virtual_size == entry["oracle"]["virtual-size"]


@cache
def _image(path: str) -> bytes:
    return Path(path).read_bytes()


def _survives(data: bytes) -> None:
    source = BytesSource(data)
    try:
        result = LuksInspector.inspect(source)
    except ImgfmtError:
        return
    assert isinstance(result.virtual_size, int)
    json.dumps(dict(result.details))
    assert source.bytes_read < READ_BUDGET


SAFE = [e for e in FIXTURES if e["safe"] and e["format"]]


@pytest.mark.parametrize("entry", SAFE, ids=lambda e: e["name"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damage_gives_an_inspection_or_an_imgfmt_error(
    entry: dict[str, Any], data: st.DataObject
) -> None:
    image = _image(entry["path"])
    head = min(len(image), HEAD)
    if data.draw(st.booleans(), label="truncate"):
        _survives(image[: data.draw(st.integers(0, head), label="length")])
        return
    damaged = bytearray(image[:head])
    edits = st.tuples(st.integers(0, head - 1), st.integers(0, 0xFFFFFFFF))
    for offset, value in data.draw(st.lists(edits, min_size=1, max_size=8), label="edits"):
        damaged[offset : offset + 4] = struct.pack(">I", value)[: head - offset]
    _survives(bytes(damaged))

"""Policy: Glance's [image_format] options, size parsing, claimed formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgfmt.config import Config, ConfigError
from imgfmt.errors import UsageError
from imgfmt.policy import DEFAULT_DISK_FORMATS, Policy, claim_satisfied, parse_size
from imgfmt.report import ImageReport


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", 512), ("1K", 1024), ("64G", 64 << 30), ("2TiB", 2 << 40), ("3 m", 3 << 20)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.5G", "12Q"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_defaults_ban_qed_like_glance() -> None:
    assert "qed" not in DEFAULT_DISK_FORMATS
    report = ImageReport("x", "qed", 1024, 1024)
    assert [str(f.code) for f in Policy().check(report)] == ["format-not-allowed"]


def test_vmdk_types_and_size_cap() -> None:
    report = ImageReport("x", "vmdk", 10 << 30, 1024, details={"create_type": "monolithicFlat"})
    codes = {str(f.code) for f in Policy(max_virtual_size=1 << 30).check(report)}
    assert codes == {"subformat-not-allowed", "virtual-size-exceeded"}


def test_config_section_is_read(tmp_path: Path) -> None:
    conf = tmp_path / "glance-api.conf"
    conf.write_text(
        "[DEFAULT]\nbind_port = 9292\n[image_format]\ndisk_formats = raw,qcow2\n"
        "vmdk_allowed_types = streamOptimized\nrequire_image_format_match = false\n"
        "max_virtual_size = 2G\n"
    )
    policy = Policy.from_config(Config.load(conf))
    assert policy.disk_formats == {"raw", "qcow2"}
    assert policy.vmdk_allowed_types == {"streamOptimized"}
    assert policy.require_image_format_match is False
    assert policy.max_virtual_size == 2 << 30


def test_config_error_names_file_section_and_option(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("[image_format]\ndisk_formats = raw,floppy\n")
    with pytest.raises(ConfigError, match=r"bad.conf: \[image_format\] disk_formats"):
        Policy.from_config(Config.load(conf))


def test_claims() -> None:
    assert claim_satisfied("raw", "aki")
    assert claim_satisfied("ami", "raw")
    assert not claim_satisfied("qcow2", "raw")
    assert not claim_satisfied("raw", "qcow2")
    assert not claim_satisfied("raw", None)

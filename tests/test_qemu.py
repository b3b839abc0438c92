"""qemu.py: argument lists, unambiguous names, limits, progress records and errors."""

from __future__ import annotations

import configparser
import os
import subprocess
from pathlib import Path

import pytest

from imgfmt import qemu
from imgfmt.config import Config, ConfigError
from imgfmt.errors import UsageError

MIB = 1 << 20


def _qcow2(path: Path, size: str = "2M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


@pytest.mark.parametrize("name", ["-O raw.qcow2", 'json:{"driver":"raw"}', "a,b.qcow2", "nbd:x"])
def test_hostile_names_are_opened_as_plain_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _qcow2(tmp_path / name)
    image = qemu.ImageRef.of(name, "qcow2")
    assert image.path == str(tmp_path / name)
    found = qemu.info(image)
    assert (found["format"], found["virtual-size"]) == ("qcow2", 2 * MIB)


def test_byte_range_of_a_file(tmp_path: Path) -> None:
    disk = _qcow2(tmp_path / "d.qcow2").read_bytes()
    bundle = tmp_path / "bundle"
    bundle.write_bytes(b"\xaa" * 4096 + disk + b"\xbb" * 1000)
    sectors = -(-len(disk) // 512) * 512
    found = qemu.info(qemu.ImageRef.of(bundle, "qcow2", 4096, sectors))
    assert found["virtual-size"] == 2 * MIB


def test_a_byte_range_is_whole_sectors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="whole 512-byte sectors"):
        qemu.ImageRef.of(tmp_path / "bundle", "raw", 0, 1000)


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="luks"):
        qemu.ImageRef.of("x", "luks")


def test_convert_argv_has_no_bare_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = qemu.ConvertArgs("vhd", {"force_size": "on"}, sparse_size=0, coroutines=4)
    argv = qemu.convert_argv(qemu.ImageRef.of("-src", "raw"), "-dst", args, progress=True)
    assert argv == [
        "qemu-img", "convert", "-p", "--image-opts",
        f"driver=raw,file.driver=file,file.filename={tmp_path}/-src",
        "-O", "vpc", "-o", "force_size=on", "-S", "0", "-m", "4", f"{tmp_path}/-dst",
    ]  # fmt: skip


def test_failure_is_a_qemu_error_with_qemus_message(tmp_path: Path) -> None:
    with pytest.raises(qemu.QemuError) as caught:
        qemu.info(qemu.ImageRef.of(tmp_path / "missing.qcow2", "qcow2"))
    assert caught.value.returncode == 1
    assert "No such file or directory" in str(caught.value)
    assert str(caught.value).startswith("qemu-img info failed (exit 1): ")


def test_limits_and_closed_stdin_reach_the_child() -> None:
    limits = qemu.Limits(address_space=512 * MIB, cpu_seconds=77)
    out = qemu.run(["sh", "-c", "ulimit -v; ulimit -t; cat; echo end"], limits)
    assert out.split() == [b"524288", b"77", b"end"]


def test_address_space_limit_stops_qemu_img(tmp_path: Path) -> None:
    source = tmp_path / "s.raw"
    source.write_bytes(os.urandom(4 * MIB))
    argv = qemu.convert_argv(
        qemu.ImageRef.of(source, "raw"), str(tmp_path / "o.qcow2"), qemu.ConvertArgs("qcow2", {}),
        progress=False,
    )  # fmt: skip
    with pytest.raises(qemu.QemuError, match=r"address-space limit|failed"):
        qemu.run(argv, qemu.Limits(address_space=16 * MIB, cpu_seconds=60))


def test_progress_records_are_parsed() -> None:
    script = (
        r"printf '    (0.00/100%%)\r    (50.00/100%%)\r'; sleep 0.1; printf '    (100.00/100%%)\r'"
    )
    seen: list[float] = []
    qemu.run(["sh", "-c", script], qemu.Limits(), seen.append)
    assert seen == [0.0, 0.5, 1.0]


def test_missing_qemu_img_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="install qemu-utils"):
        qemu.run(["/nonexistent/qemu-img", "info"], qemu.Limits())


def test_compare_reports_a_difference(tmp_path: Path) -> None:
    first, second = tmp_path / "a.raw", tmp_path / "b.raw"
    first.write_bytes(b"\0" * MIB)
    second.write_bytes(b"\0" * 4096 + b"x" + b"\0" * (MIB - 4097))
    limits = qemu.Limits()
    assert (
        qemu.compare(qemu.ImageRef.of(first, "raw"), qemu.ImageRef.of(first, "raw"), limits) is None
    )
    difference = qemu.compare(
        qemu.ImageRef.of(first, "raw"), qemu.ImageRef.of(second, "raw"), limits
    )
    assert difference is not None and "4096" in difference


def test_limits_from_config(tmp_path: Path) -> None:
    parser = configparser.RawConfigParser()
    parser.read_string("[qemu_img]\naddress_space = 2G\ncpu_time = 600\n")
    assert qemu.Limits.from_config(Config("x.conf", parser)) == qemu.Limits(2 << 30, 600)
    assert qemu.Limits.from_config(Config("x.conf", configparser.RawConfigParser())) == (
        qemu.Limits()
    )
    parser.read_string("[qemu_img]\ncpu_time = lots\n")
    with pytest.raises(ConfigError, match="cpu_time"):
        qemu.Limits.from_config(Config("x.conf", parser))


def test_qemu_img_is_7_2() -> None:
    out = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("qemu-img version 7.2")

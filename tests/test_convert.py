"""``imgfmt convert``: every readable format to every writable one, refusals, interruption,
disk full, progress. qemu-img compare is the oracle for content."""

from __future__ import annotations

import errno
import gzip
import io
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from imgfmt import convert as conv
from imgfmt import qemu
from imgfmt.cli.main import cli
from imgfmt.errors import SourceError, UsageError
from imgfmt.policy import DEFAULT_DISK_FORMATS, Policy
from tests.conftest import fixture_entries
from tests.fixtures.recipes import ova as ova_recipe

MIB = 1 << 20
#: Glance name -> (qemu driver, extra create options) of every source the matrix builds.
SOURCES = {
    "raw": ("raw", ()),
    "qcow2": ("qcow2", ()),
    "vmdk": ("vmdk", ()),
    "vhd": ("vpc", ("-o", "force_size=on")),
    "vhdx": ("vhdx", ()),
    "vdi": ("vdi", ()),
    "qed": ("qed", ()),
    "ploop": ("parallels", ()),
}
TARGETS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi")
#: qed is not in Glance's default disk_formats; the matrix allows it to reach qemu-img.
EVERYTHING = Policy(disk_formats=DEFAULT_DISK_FORMATS | {"qed"})
IMGFMT = str(Path(sys.executable).parent / "imgfmt")
#: The OVA and compressed fixtures (tests/fixtures/recipes/ova.py, compressed.py) by name.
BUILT = {
    e["name"]: Path(e["path"]) for e in fixture_entries() if e["recipe"] in {"ova", "compressed"}
}


def _pattern(size: int) -> bytes:
    """Distinct bytes in every 512-byte sector, holes of zeros every fourth MiB quarter."""
    out = bytearray()
    for sector in range(size // 512):
        out += b"\0" * 512 if sector % 2048 < 512 else sector.to_bytes(4, "little") * 128
    return bytes(out)


def _make(path: Path, fmt: str, raw: Path) -> Path:
    driver, extra = SOURCES[fmt]
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", driver, *extra, str(raw), str(path)],
        check=True,
    )
    return path


def _same(first: Path, first_fmt: str, second: Path, second_fmt: str) -> bool:
    a, b = qemu.ImageRef.of(first, first_fmt), qemu.ImageRef.of(second, second_fmt)
    return qemu.compare(a, b, qemu.Limits()) is None


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".imgfmt-" in p.name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("sources")
    raw = directory / "pattern.raw"
    raw.write_bytes(_pattern(4 * MIB))
    return {fmt: _make(directory / f"disk.{fmt}", fmt, raw) for fmt in SOURCES}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source_format", list(SOURCES))
def test_every_source_to_every_target(
    tmp_path: Path, sources: dict[str, Path], source_format: str, target: str
) -> None:
    destination = tmp_path / f"out.{target}"
    request = conv.Request(str(sources[source_format]), str(destination), target)
    result = conv.convert(request, EVERYTHING)
    assert result.source.disk_format == source_format
    assert result.output.disk_format == target
    assert result.output.virtual_size == result.source.virtual_size == 4 * MIB
    assert result.output.path == str(destination)
    assert _same(sources[source_format], source_format, destination, target)
    assert result.notes == ()
    assert os.listdir(tmp_path) == [destination.name]


def test_cli_json_result_and_verify(tmp_path: Path, sources: dict[str, Path]) -> None:
    destination = tmp_path / "out.qcow2"
    code, out, _ = _cli(
        "convert", str(sources["vmdk"]), str(destination), "-O", "qcow2", "--verify",
        "-f", "json", "--quiet", "-o", "cluster_size=128k,lazy_refcounts=on", "-m", "4", "-W",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["verified"] is True
    assert data["output"]["details"]["cluster_size"] == 128 * 1024
    assert "-W" in data["argv"] and data["argv"][data["argv"].index("-m") + 1] == "4"
    assert data["bytes_written"] > 0


def test_stream_optimized_vmdk_with_compression(tmp_path: Path, sources: dict[str, Path]) -> None:
    destination = tmp_path / "out.vmdk"
    code, _, _ = _cli(
        "convert", str(sources["raw"]), str(destination), "-O", "vmdk", "-c",
        "-o", "subformat=streamOptimized", "--quiet",
    )  # fmt: skip
    assert code == 0
    found = qemu.info(qemu.ImageRef.of(destination, "vmdk"))
    assert found["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert _same(sources["raw"], "raw", destination, "vmdk")


def test_vhd_keeps_the_size_unless_force_size_is_off(tmp_path: Path, tmp_raw: Path) -> None:
    exact = conv.convert(conv.Request(str(tmp_raw), str(tmp_path / "a.vhd"), "vhd"))
    assert exact.output.virtual_size == 5 * MIB + 512
    assert "force_size=on" in exact.argv
    request = conv.Request(
        str(tmp_raw), str(tmp_path / "b.vhd"), "vhd", options={"force_size": "off"}
    )
    rounded = conv.convert(request)
    assert rounded.output.virtual_size is not None
    assert rounded.output.virtual_size > 5 * MIB + 512
    assert "CHS geometry" in rounded.notes[0]


def test_odd_sized_raw_is_a_whole_sector_as_qemu_says(tmp_path: Path) -> None:
    source = tmp_path / "odd.raw"
    source.write_bytes(b"\x5a" * 1000)
    result = conv.convert(conv.Request(str(source), str(tmp_path / "o.qcow2"), "qcow2"))
    assert result.source.virtual_size == result.output.virtual_size == 1024
    assert result.notes == ()


@pytest.fixture()
def tmp_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "src.raw"
    raw.write_bytes(_pattern(5 * MIB + 512))
    return raw


def test_a_vmdk_inside_a_tar_is_converted_in_place(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    disk = tmp_path / "disk.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o",
         "subformat=streamOptimized", str(sources["raw"]), str(disk)],
        check=True,
    )  # fmt: skip
    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(sources["raw"], "first.bin")
        tar.add(disk, "disk.vmdk")
    with tarfile.open(bundle) as tar:
        member = tar.getmember("disk.vmdk")
    request = conv.Request(
        str(bundle), str(tmp_path / "out.qcow2"), "qcow2",
        source_offset=member.offset_data, source_length=member.size, verify=True,
    )  # fmt: skip
    result = conv.convert(request)
    assert result.source.disk_format == "vmdk"
    assert result.verified
    assert _same(sources["raw"], "raw", tmp_path / "out.qcow2", "qcow2")
    assert "bytes of" in result.notes[0]


def _range_then_footer(tmp_path: Path, tail: int) -> tuple[Path, int]:
    """1 MiB of data and ``tail`` bytes, then the rest of a fixed VHD's footer: the range of
    1 MiB + ``tail`` bytes is raw, the same range read in whole sectors is a VHD."""
    vhd = tmp_path / "fixed.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on",
                    str(vhd), "1M"], check=True)  # fmt: skip
    footer = vhd.read_bytes()[-512:]
    bundle = tmp_path / "bundle.bin"
    bundle.write_bytes(b"\x5a" * (1 << 20) + footer)
    return bundle, (1 << 20) + tail


def test_a_range_is_inspected_as_qemu_reads_it_in_sectors(tmp_path: Path) -> None:
    bundle, length = _range_then_footer(tmp_path, 100)
    request = conv.Request(str(bundle), str(tmp_path / "o.raw"), "raw", source_length=length)
    with pytest.raises(conv.ConversionRefused, match="whole sectors"):
        conv.convert(request)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.bin", "fixed.vhd"]


def test_an_odd_range_converts_with_the_padding_qemu_reads(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.bin"
    bundle.write_bytes(b"\x5a" * ((1 << 20) + 100) + bytes(412))
    request = conv.Request(str(bundle), str(tmp_path / "o.raw"), "raw",
                           source_length=(1 << 20) + 100)  # fmt: skip
    result = conv.convert(request)
    assert result.output.virtual_size == (1 << 20) + 512
    assert (tmp_path / "o.raw").read_bytes() == bundle.read_bytes()


def test_a_range_outside_the_file_is_a_usage_error(tmp_path: Path, tmp_raw: Path) -> None:
    request = conv.Request(str(tmp_raw), str(tmp_path / "o"), "raw", source_offset=512,
                           source_length=tmp_raw.stat().st_size)  # fmt: skip
    with pytest.raises(UsageError, match="not inside the file"):
        conv.convert(request)


def test_a_plain_tar_given_whole_is_refused(tmp_path: Path, sources: dict[str, Path]) -> None:
    bundle = tmp_path / "appliance.ova"
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(sources["vmdk"], "disk.vmdk")
    code, _, err = _cli("convert", str(bundle), str(tmp_path / "o.qcow2"), "-O", "qcow2")
    assert code == 1
    assert "tar archive" in err and "extract the disk first" in err
    assert os.listdir(tmp_path) == ["appliance.ova"]


def test_a_backing_file_is_refused_and_nothing_written(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    top = tmp_path / "top.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(sources["qcow2"]), "-F", "qcow2",
         str(top)],
        check=True,
    )  # fmt: skip
    code, out, err = _cli("convert", str(top), str(tmp_path / "out.raw"), "-O", "raw", "--force")
    assert (code, out) == (1, "")
    assert "unsafe" in err and "backing-file" in err
    assert os.listdir(tmp_path) == ["top.qcow2"]


def test_a_claimed_source_format_must_match(tmp_path: Path, sources: dict[str, Path]) -> None:
    code, _, err = _cli(
        "convert", str(sources["qcow2"]), str(tmp_path / "o.raw"), "-O", "raw",
        "--source-format", "raw",
    )  # fmt: skip
    assert code == 1
    assert "format-mismatch" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["-O", "--force", 'json:{"driver":"null-co"}', "nbd:h:1"])
def test_hostile_names_stay_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: dict[str, Path], name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(sources["qcow2"], tmp_path / name)
    code, _, err = _cli("convert", "--quiet", "-O", "vdi", "--", name, f"{name}.vdi")
    assert code == 0, err
    assert _same(sources["qcow2"], "qcow2", tmp_path / f"{name}.vdi", "vdi")


def test_an_existing_destination_needs_force(tmp_path: Path, sources: dict[str, Path]) -> None:
    destination = tmp_path / "out.raw"
    destination.write_bytes(b"keep me")
    code, _, err = _cli("convert", str(sources["qcow2"]), str(destination), "-O", "raw")
    assert code == 2
    assert "--force" in err
    assert destination.read_bytes() == b"keep me"
    code, _, _ = _cli("convert", "--quiet", "--force", str(sources["qcow2"]), str(destination),
                      "-O", "raw")  # fmt: skip
    assert code == 0
    assert _same(sources["qcow2"], "qcow2", destination, "raw")


def test_the_source_is_never_its_own_destination(tmp_path: Path, tmp_raw: Path) -> None:
    link = tmp_path / "hardlink.raw"
    os.link(tmp_raw, link)
    before = tmp_raw.read_bytes()
    for destination in (tmp_raw, link):
        code, _, err = _cli("convert", "--force", str(tmp_raw), str(destination), "-O", "raw")
        assert code == 2
        assert "source itself" in err
    assert tmp_raw.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-O", "vhd", "-o", "backing_file=/etc/passwd"), "not an option"),
        (("-O", "qcow2", "-o", "data_file=x"), "not an option"),
        (("-O", "vmdk", "-o", "subformat=monolithicFlat"), "choose from"),
        (("-O", "vhd", "-c"), "compress"),
        (("-O", "vmdk", "-c"), "streamOptimized"),
        (("-O", "raw", "-S", "1000"), "multiple of 512"),
        (("-O", "raw", "-m", "17"), "between 1 and 16"),
        (("-O", "raw", "-o", "novalue"), "KEY=VALUE"),
    ],
)
def test_bad_options_are_usage_errors(
    tmp_path: Path, tmp_raw: Path, args: tuple[str, ...], message: str
) -> None:
    code, _, err = _cli("convert", str(tmp_raw), str(tmp_path / "out"), *args)
    assert code == 2
    assert message in err
    assert not (tmp_path / "out").exists()


def test_a_failed_verify_discards_the_output(
    tmp_path: Path, tmp_raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qemu, "compare", lambda *a: "Content mismatch at offset 0!")
    code, _, err = _cli(
        "convert", "--verify", str(tmp_raw), str(tmp_path / "o.qcow2"), "-O", "qcow2"
    )
    assert code == 1
    assert "Content mismatch" in err
    assert os.listdir(tmp_path) == ["src.raw"]


def test_progress_lines_when_not_a_terminal(tmp_path: Path, tmp_raw: Path) -> None:
    code, _, err = _cli("convert", str(tmp_raw), str(tmp_path / "o.qcow2"), "-O", "qcow2")
    assert code == 0
    lines = err.splitlines()
    assert lines[0].endswith(": 0%") and lines[-1].endswith(": 100%")
    assert all(line.startswith(f"imgfmt: converting {tmp_raw}: ") for line in lines)
    code, _, err = _cli(
        "convert", "--quiet", str(tmp_raw), str(tmp_path / "q.qcow2"), "-O", "qcow2"
    )
    assert (code, err) == (0, "")


def _big_random(path: Path, size: int) -> Path:
    chunk = os.urandom(MIB)
    with open(path, "wb") as f:
        for i in range(size // MIB):
            f.write(chunk[i % 997 :] + chunk[: i % 997])
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_leaves_nothing_and_the_destination_intact(
    tmp_path: Path, signum: signal.Signals
) -> None:
    source = _big_random(tmp_path / "big.raw", 256 * MIB)
    destination = tmp_path / "out.vmdk"
    destination.write_bytes(b"previous")
    proc = subprocess.Popen(
        [IMGFMT, "convert", str(source), str(destination), "-O", "vmdk", "-c",
         "-o", "subformat=streamOptimized", "--force"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = [proc.stderr.readline()]
    while seen[-1] and not seen[-1].rstrip().endswith(": 10%"):
        seen.append(proc.stderr.readline())
    assert seen[-1], f"the conversion ended before 10%: {''.join(seen)}"
    assert _leftovers(tmp_path), "the conversion should be under way"
    proc.send_signal(signum)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 128 + signum
    assert "interrupted" in rest
    assert _leftovers(tmp_path) == []
    assert destination.read_bytes() == b"previous"
    assert not _qemu_img_running(str(destination))


def _qemu_img_running(marker: str) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return any(line.startswith("qemu-img") and marker in line for line in out.stdout.splitlines())


@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_leaves_nothing_behind(tmp_path: Path, small_tmpfs: Path) -> None:
    source = _big_random(tmp_path / "big.raw", 16 * MIB)
    destination = small_tmpfs / "out.qcow2"
    code, _, err = _cli("convert", "--quiet", str(source), str(destination), "-O", "qcow2")
    assert code == 2
    assert "No space left on device" in err
    assert os.listdir(small_tmpfs) == []


def test_time_is_reported(tmp_path: Path, tmp_raw: Path) -> None:
    start = time.monotonic()
    result = conv.convert(conv.Request(str(tmp_raw), str(tmp_path / "o.vdi"), "vdi"))
    assert 0 < result.seconds <= time.monotonic() - start
    assert result.argv[:2] == ("qemu-img", "convert")


def _member_of(archive: Path, name: str, directory: Path) -> Path:
    """A copy of one member of a tar archive, to compare a conversion against."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None
        (directory / name).write_bytes(member.read())
    return directory / name


@pytest.mark.parametrize(("name", "disk"), [("good.ova", "disk.vmdk"), ("qcow2.ova", "disk.qcow2")])
def test_the_disk_of_an_ova_is_converted_in_place(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, name: str, disk: str
) -> None:
    inner = _member_of(BUILT[name], disk, tmp_path_factory.mktemp("inner"))
    destination = tmp_path / "out.qcow2"
    code, out, err = _cli("convert", "--quiet", "-f", "json", str(BUILT[name]), str(destination),
                          "-O", "qcow2")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["source"]["path"] == f"{BUILT[name]}:{disk}"
    assert result["source"]["location"]["name"] == disk
    assert f"bytes of {BUILT[name]} at" in result["notes"][0]
    assert _same(inner, disk.rsplit(".")[-1], destination, "qcow2")
    assert os.listdir(tmp_path) == ["out.qcow2"]


@pytest.mark.parametrize(
    ("name", "code"),
    [("host-file-vmdk.ova", "external-extent"), ("digest-mismatch.ova", "digest-mismatch")],
)
def test_an_unsafe_ova_is_refused_and_nothing_written(tmp_path: Path, name: str, code: str) -> None:
    status, out, err = _cli("convert", str(BUILT[name]), str(tmp_path / "o.qcow2"), "-O", "qcow2")
    assert (status, out) == (1, "")
    assert "unsafe OVA" in err and code in err
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def two_disk_ova(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OVA with a vmdk and a qcow2 disk, both 16 MiB, with a manifest."""
    directory = tmp_path_factory.mktemp("two-disks")
    vmdk = _member_of(BUILT["good.ova"], "disk.vmdk", directory).read_bytes()
    qcow2 = _member_of(BUILT["qcow2.ova"], "disk.qcow2", directory).read_bytes()
    file1 = '<File ovf:id="file1" ovf:href="disk.vmdk"/>'
    disk2 = (
        '<Disk ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:capacity="16" '
        'ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://qemu.org/qcow2"/>'
    )
    ovf = (
        ova_recipe.descriptor()
        .decode()
        .replace(file1, f'{file1}<File ovf:id="file2" ovf:href="data.qcow2"/>')
        .replace("</DiskSection>", f"{disk2}</DiskSection>")
        .encode()
    )
    files = {"appliance.ovf": ovf, "disk.vmdk": vmdk, "data.qcow2": qcow2}
    members = {"appliance.ovf": ovf, "appliance.mf": ova_recipe.manifest(files), **files}
    bundle = directory / "two.ova"
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bundle


def test_an_ova_with_several_disks_needs_member(tmp_path: Path, two_disk_ova: Path) -> None:
    destination = tmp_path / "out.raw"
    code, _, err = _cli("convert", str(two_disk_ova), str(destination), "-O", "raw")
    assert code == 2
    assert "holds 2 disks" in err and "disk.vmdk, data.qcow2" in err
    code, _, err = _cli("convert", "--member", "nope", str(two_disk_ova), str(destination),
                        "-O", "raw")  # fmt: skip
    assert code == 2
    assert "not a disk of" in err
    assert os.listdir(tmp_path) == []

    code, _, err = _cli("convert", "--quiet", "--member", "data.qcow2", str(two_disk_ova),
                        str(destination), "-O", "raw")  # fmt: skip
    assert code == 0, err
    inner = _member_of(two_disk_ova, "data.qcow2", two_disk_ova.parent)
    assert _same(inner, "qcow2", destination, "raw")


def test_a_claimed_format_is_checked_against_the_chosen_disk(
    tmp_path: Path, two_disk_ova: Path
) -> None:
    code, _, err = _cli("convert", "--member", "data.qcow2", "--source-format", "vmdk",
                        str(two_disk_ova), str(tmp_path / "o.raw"), "-O", "raw")  # fmt: skip
    assert code == 1
    assert "format-mismatch" in err
    assert os.listdir(tmp_path) == []


def test_member_is_only_for_an_ova(tmp_path: Path, tmp_raw: Path) -> None:
    code, _, err = _cli("convert", "--member", "disk.vmdk", str(tmp_raw), str(tmp_path / "o"),
                        "-O", "qcow2")  # fmt: skip
    assert code == 2
    assert "is not an OVA" in err


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, str]]:
    """Name -> (compressed file, the original, its format): the recipe's qcow2 in every
    compression, and its raw disk through xz."""
    directory = tmp_path_factory.mktemp("compressed")
    raw = BUILT["disk.raw.gz"].with_name("disk.raw")
    (directory / "disk.raw.xz").write_bytes(lzma.compress(raw.read_bytes()))
    found = {"disk.raw.xz": (directory / "disk.raw.xz", raw, "raw")}
    qcow2 = BUILT["disk.qcow2.gz"].with_name("disk.qcow2")
    for suffix in ("gz", "xz", "zst", "bz2"):
        found[f"disk.qcow2.{suffix}"] = (BUILT[f"disk.qcow2.{suffix}"], qcow2, "qcow2")
    return found


@pytest.mark.parametrize(
    "name", ["disk.raw.xz", "disk.qcow2.gz", "disk.qcow2.xz", "disk.qcow2.zst", "disk.qcow2.bz2"]
)
def test_a_compressed_image_is_decompressed_and_converted(
    tmp_path: Path, compressed: dict[str, tuple[Path, Path, str]], name: str
) -> None:
    source, original, fmt = compressed[name]
    destination = tmp_path / "out.vdi"
    result = conv.convert(conv.Request(str(source), str(destination), "vdi", verify=True))
    assert result.source.disk_format == fmt
    assert result.source.path == f"{source} (decompressed)"
    assert "decompressed the" in result.notes[0]
    assert _same(original, fmt, destination, "vdi")
    assert os.listdir(tmp_path) == ["out.vdi"]


def test_the_gzip_bomb_is_refused_quickly_and_leaves_nothing(tmp_path: Path) -> None:
    start = time.monotonic()
    code, out, err = _cli("convert", str(BUILT["bomb.raw.gz"]), str(tmp_path / "o.qcow2"),
                          "-O", "qcow2")  # fmt: skip
    assert (code, out) == (1, "")
    assert "decompression-limit" in err and "max_virtual_size" in err
    assert time.monotonic() - start < 20
    assert os.listdir(tmp_path) == []


def test_a_bomb_stops_at_max_virtual_size(tmp_path: Path) -> None:
    request = conv.Request(str(BUILT["bomb.raw.gz"]), str(tmp_path / "o.qcow2"), "qcow2")
    with pytest.raises(conv.ConversionRefused, match="decompresses to more than"):
        conv.convert(request, Policy(max_virtual_size=512 * MIB))
    assert os.listdir(tmp_path) == []


def test_decompression_past_the_cap_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conv, "_decompression_cap", lambda report, policy: MIB)
    code, _, err = _cli("convert", str(BUILT["disk.raw.gz"]), str(tmp_path / "o.qcow2"),
                        "-O", "qcow2")  # fmt: skip
    assert code == 1
    assert f"decompresses to more than {MIB} bytes" in err
    assert os.listdir(tmp_path) == []


def test_a_compressed_qcow2_with_a_backing_file_is_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    top = tmp_path / "top.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(sources["qcow2"]), "-F", "qcow2",
         str(top)],
        check=True,
    )  # fmt: skip
    packed = tmp_path / "top.qcow2.gz"
    packed.write_bytes(gzip.compress(top.read_bytes()))
    top.unlink()
    code, out, err = _cli("convert", str(packed), str(tmp_path / "out.raw"), "-O", "raw")
    assert (code, out) == (1, "")
    assert "backing-file" in err
    assert os.listdir(tmp_path) == ["top.qcow2.gz"]


def test_decompression_that_fills_the_disk_leaves_nothing(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    packed = tmp_path / "big.raw.gz"
    packed.write_bytes(gzip.compress(_big_random(tmp_path / "big.raw", 16 * MIB).read_bytes(), 1))
    code, _, err = _cli("convert", "--quiet", str(packed), str(small_tmpfs / "o.qcow2"),
                        "-O", "qcow2")  # fmt: skip
    assert code == 2
    assert "no space left to decompress" in err
    assert os.listdir(small_tmpfs) == []


def test_a_compressed_tar_is_refused(tmp_path: Path, tmp_raw: Path) -> None:
    packed = tmp_path / "rootfs.tar.gz"
    with tarfile.open(packed, "w:gz", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(tmp_raw, "disk.raw")
    code, _, err = _cli("convert", str(packed), str(tmp_path / "o.qcow2"), "-O", "qcow2")
    assert code == 1
    assert "(decompressed): looks like a tar archive" in err
    assert sorted(os.listdir(tmp_path)) == ["rootfs.tar.gz", "src.raw"]


def test_a_source_replaced_after_inspection_is_not_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qemu-img opens the source by path: a qcow2 swapped for one with a backing file after the
    inspection would have qemu-img copy the backing file (any file it can read) into the output."""
    source, secret, hostile = tmp_path / "src.qcow2", tmp_path / "secret", tmp_path / "hostile"
    secret.write_bytes(b"SECRET" * (MIB // 6) + bytes(MIB % 6))
    for argv in (
        ["qemu-img", "create", "-q", "-f", "qcow2", str(source), "1M"],
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(hostile)],
    ):
        subprocess.run(argv, check=True)
    real_run = qemu.run

    def swap_then_run(*args: object, **kwargs: object) -> bytes:
        os.replace(hostile, source)
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(qemu, "run", swap_then_run)
    destination = tmp_path / "out.raw"
    with pytest.raises(SourceError, match="replaced or changed"):
        conv.convert(conv.Request(str(source), str(destination), "raw"))
    assert sorted(os.listdir(tmp_path)) == ["secret", "src.qcow2"]


def _hold_until(event: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep each qemu-img run, once it has ended, from returning before ``event`` is set: the
    write-back thread then flushes the finished output at least once."""
    real_drain = qemu._drain

    def drain(proc: subprocess.Popen[bytes], on_progress: object) -> bytes:
        out = real_drain(proc, on_progress)  # type: ignore[arg-type]
        assert event.wait(10), "the write-back thread never flushed the output"
        return out

    monkeypatch.setattr(qemu, "_drain", drain)
    monkeypatch.setattr(conv, "WRITE_BACK_INTERVAL", 0.001)


def test_the_output_is_written_back_while_qemu_img_runs(
    tmp_path: Path, tmp_raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[str] = []
    event = threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fdatasync(fd)
        event.set()

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    _hold_until(event, monkeypatch)
    destination = tmp_path / "out.qcow2"
    conv.convert(conv.Request(str(tmp_raw), str(destination), "qcow2"))
    assert flushed
    assert {Path(p).parent.name.startswith(".out.qcow2.imgfmt-") for p in flushed} == {True}
    assert {Path(p).name for p in flushed} == {"out.qcow2"}


def test_a_failed_write_back_fails_the_conversion_and_leaves_nothing(
    tmp_path: Path, tmp_raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel reports a writeback error to one fsync only: one the write-back thread saw
    would never reach the fsync before the rename, so the thread's must fail the conversion."""
    event = threading.Event()

    def fdatasync(fd: int) -> None:
        event.set()
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    _hold_until(event, monkeypatch)
    with pytest.raises(SourceError, match="cannot write the output: Input/output error"):
        conv.convert(conv.Request(str(tmp_raw), str(tmp_path / "out.raw"), "raw"))
    assert os.listdir(tmp_path) == ["src.raw"]


def test_progress_is_in_bytes_of_the_virtual_disk(tmp_path: Path, tmp_raw: Path) -> None:
    """What the progress bar's rate and time left are computed from."""
    seen: list[tuple[int, int]] = []
    conv.convert(
        conv.Request(str(tmp_raw), str(tmp_path / "o.qcow2"), "qcow2"),
        on_progress=lambda done, size: seen.append((done, size)),
    )
    size = tmp_raw.stat().st_size
    assert {total for _, total in seen} == {size}
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (size, size)

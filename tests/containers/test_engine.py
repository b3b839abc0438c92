"""Containers through the whole engine: reports, members, caps, claims, libmagic names."""

from __future__ import annotations

import gzip
import io
import lzma
import struct
import tarfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import imgfmt
from imgfmt.containers import InspectMember
from imgfmt.containers.compressed import CompressedContainer, inspect_compressed
from imgfmt.detect import inspect_source
from imgfmt.source import BytesSource, Source, StreamSource
from tests.conftest import add_files, fixture_entries, ovf_descriptor, tar_of

BUILD = {e["name"]: e["path"] for e in fixture_entries() if e["recipe"] in {"ova", "docker"}}
BUILD.update({e["name"]: e["path"] for e in fixture_entries() if e["recipe"] == "compressed"})


def test_ova_member_is_the_disk_inspected_in_place() -> None:
    report = imgfmt.inspect(BUILD["good.ova"])

    (member,) = report.members
    assert member.path.endswith("good.ova:disk.vmdk")
    assert member.disk_format == "vmdk"
    assert member.details["create_type"] == "streamOptimized"
    assert report.details["disks"][0]["capacity"] == member.virtual_size


def test_ova_member_reports_where_it_lies() -> None:
    report = imgfmt.inspect(BUILD["good.ova"])
    with tarfile.open(BUILD["good.ova"]) as tar:
        disk = tar.getmember("disk.vmdk")

    (member,) = report.members
    assert member.location is not None
    assert member.to_dict()["location"] == {
        "name": "disk.vmdk",
        "offset": disk.offset_data,
        "length": disk.size,
    }
    assert report.to_dict()["location"] is None


def test_hostile_vmdk_in_ova_is_as_unsafe_as_bare() -> None:
    report = imgfmt.inspect(BUILD["host-file-vmdk.ova"])
    assert not report.members[0].safe
    assert "external-extent" in report.members[0].codes()


def test_docker_layers_are_listed() -> None:
    report = imgfmt.inspect(BUILD["oci.tar"])
    (image,) = report.details["images"]
    (layer,) = image["layers"]

    assert layer["media_type"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer["digest"].startswith("sha256:")
    assert layer["members"] > 0
    assert report.details["total_uncompressed_size"] == layer["uncompressed_size"]


def test_bomb_stops_at_the_cap() -> None:
    zeros = io.BytesIO()
    with gzip.GzipFile(fileobj=zeros, mode="wb") as out:
        for _ in range(64):
            out.write(bytes(1 << 20))
    source = BytesSource(zeros.getvalue(), "bomb.gz")

    found = inspect_compressed(source, inspect_source, cap=8 << 20)

    assert [str(f.code) for f in found.findings] == ["decompression-limit"]
    assert found.virtual_size is None
    assert source.bytes_read < 1 << 20


@pytest.mark.parametrize(
    "data",
    [gzip.compress(b"", mtime=0) * 20_000, b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * (1 << 20)],
    ids=["empty-members", "endless-name"],
)
def test_compressed_bytes_that_decompress_to_nothing_are_refused_early(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    # Each empty member or name byte is Python work in the gzip module: 1 GB took minutes.
    from imgfmt.containers import compressed

    monkeypatch.setattr(compressed, "MAX_INPUT_AHEAD", 64 * 1024)
    source = BytesSource(data, "empty.gz")

    report = imgfmt.inspect(source)

    assert [str(f.code) for f in report.findings] == ["invalid-header"]
    assert "decompress to only 0" in report.findings[0].message


def _rewritten(
    path: Path,
    edit: Callable[[tarfile.TarInfo, bytes], bytes],
    added: Mapping[str, bytes] = MappingProxyType({}),
) -> bytes:
    """A copy of the archive at ``path`` whose regular members' data went through ``edit``,
    followed by the ``added`` files (read after the copy, so ``edit`` may fill them in)."""
    buffer = io.BytesIO()
    with (
        tarfile.open(path) as original,
        tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as out,
    ):
        for member in original:
            if not member.isreg():
                out.addfile(member)
                continue
            data = edit(member, original.extractfile(member).read())  # type: ignore[union-attr]
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
        add_files(out, added.items())
    return buffer.getvalue()


def test_docker_layer_of_empty_gzip_members_is_refused_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imgfmt.containers import compressed

    monkeypatch.setattr(compressed, "MAX_INPUT_AHEAD", 64 * 1024)
    empty_members = gzip.compress(b"", mtime=0) * 20_000
    archive = _rewritten(
        BUILD["docker.tar"],
        lambda member, data: empty_members if member.name.endswith(".tar") else data,
    )

    report = imgfmt.inspect(BytesSource(archive, "empty-layer.tar"))

    messages = [f.message for f in report.findings if f.code == "invalid-header"]
    assert any("decompress to only 0" in m for m in messages), report.findings


def test_the_compressed_disks_of_one_ova_share_one_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each of many small bombs in one OVA decompressed to the whole cap: seconds apiece.
    def small_cap(cls: type, source: Source, inspect_member: InspectMember) -> Any:
        return inspect_compressed(source, inspect_member, cap=3 << 20)

    monkeypatch.setattr(CompressedContainer, "inspect", classmethod(small_cap))
    bomb = gzip.compress(bytes(2 << 20), mtime=0)
    descriptor = ovf_descriptor(f"d{n}.gz" for n in range(20))
    archive = tar_of([("a.ovf", descriptor), *((f"d{n}.gz", bomb) for n in range(20))])
    source = BytesSource(archive, "bombs.ova")

    report = imgfmt.inspect(source)

    # Each capped stream counts the one byte that showed it goes past its share.
    assert source.decompressed.count <= (3 << 20) + 20
    limited = [m for m in report.members if "decompression-limit" in m.codes()]
    assert len(limited) == 19
    assert "what its archive's other streams left of 3145728" in limited[-1].findings[0].message


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2", "zstd"])
def test_a_decompressing_reader_is_freed_when_dropped(kind: str) -> None:
    # The decoder's input referred back to the reader: through zstandard's reader the cycle
    # was invisible to the collector, and every zstd stream leaked its decoder (95 KB).
    import bz2
    import gc
    import weakref

    import zstandard

    from imgfmt.containers.compressed import open_decompressed

    compress = {
        "gzip": gzip.compress,
        "xz": lzma.compress,
        "bzip2": bz2.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[kind]
    stream = open_decompressed(kind, io.BytesIO(compress(b"x" * 1000)))
    assert stream.read(2000) == b"x" * 1000
    stream.close()
    gone = weakref.ref(stream)

    del stream
    gc.collect()

    assert gone() is None


def test_xz_dictionary_above_the_memory_cap_is_refused_before_allocation() -> None:
    # Stream header (12 bytes), then the block header: size, flags, filter id 0x21 (LZMA2),
    # properties size, the dictionary size code, padding, CRC32. Code 40 is 4 GiB - 1.
    data = bytearray(lzma.compress(bytes(4096), format=lzma.FORMAT_XZ))
    assert data[14:17] == b"\x21\x01\x16"
    data[16] = 40
    data[20:24] = struct.pack("<I", zlib.crc32(data[12:20]))

    report = imgfmt.inspect(BytesSource(bytes(data), "dict.xz"))

    assert report.container_format == "compressed"
    assert [str(f.code) for f in report.findings] == ["invalid-header"]
    assert "Memory usage limit" in report.findings[0].message


def test_gzipped_cpio_stays_an_initramfs() -> None:
    report = imgfmt.inspect(BUILD["initrd.cpio.gz"])
    assert (report.disk_format, report.container_format) == ("ari", "bare")


def test_gzip_with_a_vhd_footer_is_a_polyglot() -> None:
    # gunzip yields the qcow2 (trailing bytes ignored); qemu's vpc driver reads a fixed VHD.
    vhd = next(e["path"] for e in fixture_entries() if e["name"] == "fixed-10m")
    footer = Path(vhd).read_bytes()[-512:]
    data = Path(BUILD["disk.qcow2.gz"]).read_bytes() + footer

    report = imgfmt.inspect(BytesSource(data, "disk.qcow2.gz"))

    assert not report.safe
    assert report.details["formats"] == ["vhd", "compressed"]
    assert [str(f.code) for f in report.findings] == ["multiple-formats"]


@pytest.mark.parametrize(
    ("name", "claim", "ok"),
    [
        ("good.ova", "ova", True),
        ("good.ova", "bare", False),
        ("disk.qcow2.gz", "compressed", True),
        ("initrd.cpio.gz", "ari", True),
        ("initrd.cpio.gz", "aki", False),
        ("docker.tar", "docker", True),
    ],
)
def test_expect_container(name: str, claim: str, ok: bool) -> None:
    report = imgfmt.inspect(BUILD[name], expect_container=claim)
    assert ("format-mismatch" not in report.codes()) is ok


def test_no_image_is_named_by_libmagic(tmp_path: Path) -> None:
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(pdf, "doc.pdf")

    assert imgfmt.inspect(pdf).details["magic"].startswith("PDF document")
    report = imgfmt.inspect(plain)
    assert (report.disk_format, report.container_format) == ("raw", "bare")
    assert "tar archive" in report.details["magic"]


def test_libmagic_names_only_the_first_raw_disks_of_an_archive() -> None:
    # libmagic spends 0.2 s on 8 KiB of blank lines: an 880 KB OVA of 100 such files took 20 s.
    names = [f"d{n}" for n in range(6)]
    ovf = ovf_descriptor(names)
    archive = _tar_block("a.ovf", len(ovf)) + _padded(ovf)
    for name in names:
        archive += _tar_block(name, 8192) + b"\n" * 8192
    archive += bytes(1024)

    report = imgfmt.inspect(BytesSource(archive, "blank.ova"))

    magic = [member.details["magic"] for member in report.members]
    assert magic[:4] == ["ASCII text"] * 4
    assert magic[4:] == ["unknown: libmagic already ran 4 times on this archive"] * 2


def test_cli_table_shows_members_and_expect_container() -> None:
    from click.testing import CliRunner

    from imgfmt.cli.main import cli

    result = CliRunner().invoke(
        cli, ["inspect", "--expect-container", "ova", BUILD["good.ova"]], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "member" in result.output and "disk.vmdk" in result.output
    bad = CliRunner().invoke(cli, ["inspect", "--expect-container", "zip", BUILD["good.ova"]])
    assert bad.exit_code == 2


def _tar_block(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def test_ova_member_whose_start_a_stream_did_not_keep_is_not_raw() -> None:
    # The qcow2's header lies just past the kept head, the header after it starts the kept
    # tail: the archive walks, but detection cannot see what the disk is.
    head_window, tail_window = 64 * 1024, 4096
    qcow2 = next(e["path"] for e in fixture_entries() if e["name"] == "passwd.qcow2")
    disk = Path(qcow2).read_bytes()
    with tarfile.open(BUILD["good.ova"]) as tar:
        ovf = tar.extractfile("appliance.ovf").read()  # type: ignore[union-attr]
    ovf = ovf.replace(b'"disk.vmdk"', b'"disk.qcow2"')
    archive = _tar_block("appliance.ovf", len(ovf)) + _padded(ovf)
    filler = head_window - len(archive) - 2 * 512
    archive += _tar_block("filler", filler) + bytes(filler)
    archive += _tar_block("disk.qcow2", len(disk)) + _padded(disk)
    rest = tail_window - 512 - 1024
    archive += _tar_block("rest", rest) + bytes(rest) + bytes(1024)

    as_file = imgfmt.inspect(BytesSource(archive, "a.ova"))
    stream = StreamSource.drain(io.BytesIO(archive), "<stdin>", head_window, tail_window)
    as_stream = imgfmt.inspect(stream)

    assert as_file.members[0].disk_format == "qcow2"
    assert not as_file.members[0].safe
    (member,) = as_stream.members
    assert not member.safe
    assert "stream-unverifiable" in member.codes()


def test_ova_with_a_repeated_file_id_keeps_the_unsafe_disk(tmp_path: Path) -> None:
    with tarfile.open(BUILD["good.ova"]) as tar:
        ovf = tar.extractfile("appliance.ovf").read()  # type: ignore[union-attr]
        disk = tar.extractfile("disk.vmdk").read()  # type: ignore[union-attr]
    first = b'<File ovf:id="file1" ovf:href="evil.vmdk"/><File ovf:id="file1" '
    ovf = ovf.replace(b'<File ovf:id="file1" ', first)
    evil = b'version=1\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n'
    path = tmp_path / "repeated-id.ova"
    path.write_bytes(tar_of((("appliance.ovf", ovf), ("evil.vmdk", evil), ("disk.vmdk", disk))))

    report = imgfmt.inspect(path)

    assert not report.safe
    assert "unsafe-member" in {str(f.code) for f in report.findings}
    assert [m.path.rsplit(":", 1)[1] for m in report.members] == ["evil.vmdk"]


def _with_index(
    edit: Callable[[dict[str, Any]], None], added: Mapping[str, bytes] = MappingProxyType({})
) -> bytes:
    """A copy of the OCI fixture archive whose index.json went through ``edit``."""
    import json

    def rewrite(member: tarfile.TarInfo, data: bytes) -> bytes:
        if member.name != "index.json":
            return data
        index = json.loads(data)
        edit(index)
        return json.dumps(index).encode()

    return _rewritten(BUILD["oci.tar"], rewrite, added)


def test_ova_manifest_of_more_lines_than_files_is_refused() -> None:
    # Each line that is no digest line was a finding: 2 million in a 4 MB manifest.
    with tarfile.open(BUILD["good.ova"]) as tar:
        ovf = tar.extractfile("appliance.ovf").read()  # type: ignore[union-attr]
    manifest = b"x\n" * 5000
    archive = _tar_block("appliance.ovf", len(ovf)) + _padded(ovf)
    archive += _tar_block("appliance.mf", len(manifest)) + _padded(manifest) + bytes(1024)

    report = imgfmt.inspect(BytesSource(archive, "a.ova"))

    assert [str(f.code) for f in report.findings] == ["invalid-header"]
    assert "more than 4096 lines" in report.findings[0].message


def test_oci_indexes_naming_one_manifest_many_times_read_it_once() -> None:
    # Three levels of 40 entries each: 128,000 walks to the one manifest before, and 40 more
    # entries per level multiply it again; each index and manifest is now read once.
    import hashlib
    import json

    blobs: dict[str, bytes] = {}

    def fan_out(index: dict[str, Any]) -> None:
        entry = index["manifests"][0]
        for _ in range(3):
            nested = json.dumps({"schemaVersion": 2, "manifests": [entry] * 40}).encode()
            digest = hashlib.sha256(nested).hexdigest()
            blobs[f"blobs/sha256/{digest}"] = nested
            entry = {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": f"sha256:{digest}",
                "size": len(nested),
            }
        index["manifests"] = [entry, entry]

    archive = _with_index(fan_out, blobs)
    source = BytesSource(archive, "fan-out.tar")

    report = imgfmt.inspect(source)

    assert report.safe, report.findings
    assert len(report.details["images"]) == 1
    assert source.bytes_read < 4 * len(archive)


@pytest.mark.parametrize("media_type", [[], {}])
def test_oci_index_entry_whose_media_type_is_no_string_is_no_index(media_type: Any) -> None:

    def retype(index: dict[str, Any]) -> None:
        index["manifests"][0]["mediaType"] = media_type

    archive = _with_index(retype)

    report = imgfmt.inspect(BytesSource(archive, "media-type.tar"))

    assert report.container_format == "docker"
    assert len(report.details["images"]) == 1


def test_docker_save_oci_manifest_json_describing_another_image_is_walked_and_unsafe() -> None:
    # docker load reads manifest.json (classic image store) or index.json (containerd store):
    # a layer only manifest.json names must be walked too, and the disagreement is unsafe.
    import hashlib
    import json

    layer = tar_of([("../../etc/cron.d/x", b"evil")])
    evil = f"blobs/sha256/{hashlib.sha256(layer).hexdigest()}"

    def retarget(member: tarfile.TarInfo, data: bytes) -> bytes:
        if member.name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest[0]["Layers"] = [evil]
        return json.dumps(manifest).encode()

    archive = _rewritten(BUILD["docker-oci.tar"], retarget, {evil: layer})

    report = imgfmt.inspect(BytesSource(archive, "split.tar"))

    assert not report.safe
    # the layer is walked (its ../ member), and its DiffID is not the config's
    codes = {str(f.code) for f in report.findings}
    assert codes == {"invalid-header", "unsafe-member", "digest-mismatch"}


def _oci_archive(*layers: bytes, media_type: str) -> bytes:
    """An OCI image layout archive of one linux/amd64 image of ``layers``."""
    import hashlib
    import json

    def blob(data: bytes) -> tuple[str, bytes]:
        return f"sha256:{hashlib.sha256(data).hexdigest()}", data

    blobs = [blob(layer) for layer in layers]
    config = blob(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"digest": config[0], "size": len(config[1])},
                "layers": [{"mediaType": media_type, "digest": d} for d, _ in blobs],
            }
        ).encode()
    )
    index = {"schemaVersion": 2, "manifests": [{"digest": manifest[0]}]}
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps(index).encode(),
    }
    for digest, data in (*blobs, config, manifest):
        files[f"blobs/sha256/{digest[7:]}"] = data
    return tar_of(files.items())


def test_layers_share_one_decompression_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each layer may decompress to 16 GiB: 100 small bombs made hours of work before.
    from imgfmt.containers import docker

    layers = [gzip.compress(bytes(64 * 1024) + bytes([n]), mtime=0) for n in range(3)]
    archive = _oci_archive(*layers, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    source = BytesSource(archive, "three-layers.tar")

    assert imgfmt.inspect(source).safe
    monkeypatch.setattr(docker, "MAX_TOTAL_UNCOMPRESSED", 2 * (64 * 1024 + 4096))
    report = imgfmt.inspect(source)
    assert [str(f.code) for f in report.findings] == ["decompression-limit"]
    assert "for all layers" in report.findings[0].message


def test_a_layer_past_a_thousand_times_its_compressed_size_is_a_bomb() -> None:
    # 16 GiB of zeros are 600 KiB of zstd: four such layers walked 64 GiB, about a minute.
    import zstandard

    from imgfmt.containers import docker

    zeros = 80 * 1024 * 1024
    compressor = zstandard.ZstdCompressor().compressobj()
    layer = compressor.compress(_tar_block("zero", zeros))
    mebibyte = bytes(1024 * 1024)
    for _ in range(zeros // len(mebibyte)):
        layer += compressor.compress(mebibyte)
    layer += compressor.compress(bytes(1024)) + compressor.flush()
    archive = _oci_archive(layer, media_type="application/vnd.oci.image.layer.v1.tar+zstd")

    report = imgfmt.inspect(BytesSource(archive, "zstd-bomb.tar"))

    cap = docker.MAX_LAYER_RATIO * len(layer) + docker.LAYER_SLACK
    assert cap < zeros
    assert [str(f.code) for f in report.findings] == ["decompression-limit"]
    assert f"decompresses past {cap} bytes" in report.findings[0].message


def test_a_layer_named_by_many_paths_is_walked_once() -> None:
    # "layer.tar", "/layer.tar", "//layer.tar"... name one member: a 40 KB archive naming a
    # 1 GiB zstd layer 64 times walked 64 GiB.
    import json

    walked = tar_of([("zero", bytes(64 * 1024))])
    paths = ["/" * n + "layer.tar" for n in range(8)]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}
    files = {
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": paths}]).encode(),
        "c.json": json.dumps(config).encode(),
        "layer.tar": walked,
    }
    archive = tar_of(files.items())
    source = BytesSource(archive, "paths.tar")

    report = imgfmt.inspect(source)

    (image,) = report.details["images"]
    assert [layer["members"] for layer in image["layers"]] == [1] * 8
    assert source.bytes_read < 2 * len(files["layer.tar"]) + 64 * 1024


def test_a_config_named_by_many_paths_is_read_once() -> None:
    # Each of 100 names of one 4 MB config ("c.json", "/c.json", ...) was read, hashed and
    # parsed anew, and every parse kept: 740 MB.
    import json

    config = json.dumps({"architecture": "amd64", "os": "linux", "pad": "x" * 65536}).encode()
    entries = [{"Config": "/" * n + "c.json", "Layers": []} for n in range(50)]
    archive = tar_of((("manifest.json", json.dumps(entries).encode()), ("c.json", config)))
    source = BytesSource(archive, "configs.tar")

    report = imgfmt.inspect(source)

    assert [image["architecture"] for image in report.details["images"]] == ["amd64"] * 50
    assert source.bytes_read < 3 * len(config)


def test_layer_names_past_any_image_are_capped_and_their_findings_counted() -> None:
    # Each missing layer was a finding: 400000 names in a 3.5 MB archive took 9 s to print.
    import json

    layers = [f"{n:x}" for n in range(3000)]
    entries = [{"Config": "c.json", "Layers": layers}]
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    archive = tar_of((("manifest.json", json.dumps(entries).encode()), ("c.json", config)))

    report = imgfmt.inspect(BytesSource(archive, "layers.tar"))

    messages = [f.message for f in report.findings]
    assert messages[0] == "docker: 3000 c.json layers; only the first 1024 were read"
    assert messages[-1] == "docker: 769 more problems were found, not listed"
    assert len(messages) == 257
    assert len(report.details["images"][0]["layers"]) == 1024


def test_images_past_a_few_dozen_are_not_read() -> None:
    # Every image lists its layers in the details: 1000 images of 800 layers named "a"
    # printed 95 MB of JSON from a 4 MB archive.
    import json

    entries = [{"Config": "c.json", "Layers": ["a"] * 100}] * 100
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    archive = tar_of((("manifest.json", json.dumps(entries).encode()), ("c.json", config)))

    report = imgfmt.inspect(BytesSource(archive, "images.tar"))

    assert len(report.details["images"]) == 64
    assert "100 manifest.json entries; only the first 64 were read" in report.findings[0].message


def test_repositories_give_a_few_hundred_tags_of_names_docker_accepts() -> None:
    # Each tag copied its repository's name: one 1 MB name and 300 tags held 300 MB.
    import json

    repositories = {"r" * 256: {"t": "x"}, "ok": {f"{n:x}": "x" for n in range(1000)}}
    files = {
        "manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]).encode(),
        "c.json": json.dumps({"architecture": "amd64", "os": "linux"}).encode(),
        "repositories": json.dumps(repositories).encode(),
    }
    archive = tar_of(files.items())

    report = imgfmt.inspect(BytesSource(archive, "tags.tar"))

    tags = report.details["tags"]
    assert len(tags) == 256
    assert all(tag.startswith("ok:") for tag in tags)


def test_findings_of_a_layers_members_are_counted_past_a_few_hundred() -> None:
    # A 150 KB zstd layer of 99000 members named '../x' made 99000 findings: four such
    # layers took 13 s to print.
    import json

    walked = tar_of((f"../{n}", b"") for n in range(300))
    entries = [{"Config": "c.json", "Layers": ["layer.tar"]}]
    files = {
        "manifest.json": json.dumps(entries).encode(),
        "c.json": json.dumps({"architecture": "amd64", "os": "linux"}).encode(),
        "layer.tar": walked,
    }
    archive = tar_of(files.items())

    report = imgfmt.inspect(BytesSource(archive, "escapes.tar"))

    assert len(report.findings) == 257
    assert report.findings[-1].message == "docker: 44 more problems were found, not listed"
    assert not report.safe


def test_ova_descriptor_below_the_top_is_unsafe(tmp_path: Path) -> None:
    # DSP0243 resolves href "disk.vmdk" of sub/appliance.ovf to sub/disk.vmdk; imgfmt and
    # Glance look up disk.vmdk, so each would take another disk.
    with tarfile.open(BUILD["good.ova"]) as tar:
        ovf = tar.extractfile("appliance.ovf").read()  # type: ignore[union-attr]
        disk = tar.extractfile("disk.vmdk").read()  # type: ignore[union-attr]
    evil = b'version=1\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n'
    path = tmp_path / "below.ova"
    path.write_bytes(
        tar_of(
            (
                ("sub/appliance.ovf", ovf),
                ("disk.vmdk", disk),
                ("sub/disk.vmdk", evil),
            )
        )
    )

    report = imgfmt.inspect(path)

    assert not report.safe
    assert [str(f.code) for f in report.findings if str(f.severity) == "unsafe"] == [
        "unsafe-member"
    ]

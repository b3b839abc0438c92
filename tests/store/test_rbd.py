"""What only the RBD backend does, against the real Ceph of ``scripts/services/ceph.sh``.

Clones block delete; thin provisioning allocates less (``rbd du``); a stopped OSD is a timely
error that leaves nothing; a stream of unknown size is trimmed; ``--convert-to raw``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from click.testing import CliRunner

from imgfmt.cli.main import cli
from imgfmt.policy import Policy
from imgfmt.store import rbd as rbd_store
from imgfmt.store.catalog import Catalog, ImageRecord
from imgfmt.store.config import StoreConfig
from imgfmt.store.errors import InUse, StoreError
from imgfmt.store.images import delete_image
from imgfmt.store.rbd import SNAPSHOT, bindings
from imgfmt.store.upload import CreateRequest, create_image
from tests.store.conftest import digests, make_qcow2
from tests.store.rbd_env import image_names, pool, service_dir, store_config

#: rados_connect_timeout for the stopped-OSD test, in seconds.
TIMEOUT = 5


@pytest.fixture()
def ceph_dir() -> Path:
    return service_dir()


@pytest.fixture()
def store(ceph_dir: Path, tmp_path: Path) -> Iterator[tuple[StoreConfig, Catalog]]:
    config = store_config(tmp_path, ceph_dir)[1]
    catalog = Catalog(config.catalog_path)
    yield config, catalog
    catalog.close()


def _upload(
    config: StoreConfig, catalog: Catalog, file: str, stdin: BinaryIO | None = None
) -> ImageRecord:
    request = CreateRequest(name="img", file=file)
    return create_image(request, config, catalog, Policy(), stdin=stdin)


def _random_raw(path: Path, size: int, data: int) -> Path:
    with open(path, "wb") as f:
        f.write(os.urandom(data))
        f.truncate(size)
    return path


def test_location_and_snapshot_follow_glance(
    store: tuple[StoreConfig, Catalog], ceph_dir: Path, tmp_path: Path
) -> None:
    record = _upload(*store, str(_random_raw(tmp_path / "disk.raw", 12 << 20, 3 << 20)))

    rbd = bindings()[1]
    with pool(ceph_dir) as ioctx, rbd.Image(ioctx, record.id, read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == [SNAPSHOT]
        assert image.is_protected_snap(SNAPSHOT)
        assert image.features() & rbd.RBD_FEATURE_LAYERING
        assert not image.old_format()
        assert image.stat()["order"] == 23
        assert dict(image.metadata_list()) == {}
    conf = (ceph_dir / "ceph.conf").read_text()
    fsid = conf.split("fsid = ", 1)[1].split()[0]
    assert record.locations[0].url == f"rbd://{fsid}/images/{record.id}/snap"


def test_clone_blocks_delete(
    store: tuple[StoreConfig, Catalog], ceph_dir: Path, tmp_path: Path
) -> None:
    config, catalog = store
    record = _upload(config, catalog, str(_random_raw(tmp_path / "disk.raw", 4 << 20, 1 << 20)))
    clone = f"{record.id}-vm"
    rbd = bindings()[1]
    with pool(ceph_dir) as ioctx:
        rbd.RBD().clone(ioctx, record.id, SNAPSHOT, ioctx, clone, features=rbd.RBD_FEATURE_LAYERING)
    try:
        with pytest.raises(InUse, match=f"in use: cloned by images/{clone}"):
            delete_image(record, config, catalog)
        assert catalog.get(record.id).status == "active"
        with pool(ceph_dir) as ioctx, rbd.Image(ioctx, record.id, read_only=True) as image:
            assert image.is_protected_snap(SNAPSHOT)
    finally:
        with pool(ceph_dir) as ioctx:
            rbd.RBD().remove(ioctx, clone)
    assert delete_image(record, config, catalog) == []
    assert record.id not in image_names(ceph_dir)


def _used_bytes(ceph_dir: Path, name: str) -> int:
    out = subprocess.run(
        ["rbd", "-c", str(ceph_dir / "ceph.conf"), "du", "--format", "json", f"images/{name}"],
        check=True,
        capture_output=True,
    ).stdout
    return sum(int(entry["used_size"]) for entry in json.loads(out)["images"])


def test_thin_provisioning_allocates_less(ceph_dir: Path, tmp_path: Path) -> None:
    sparse = _random_raw(tmp_path / "sparse.raw", 64 << 20, 1 << 20)
    used = {}
    for thin in ("true", "false"):
        work = tmp_path / thin
        work.mkdir()
        config = store_config(work, ceph_dir, rbd_thin_provisioning=thin)[1]
        catalog = Catalog(config.catalog_path)
        record = _upload(config, catalog, str(sparse))
        assert record.size == 64 << 20
        used[thin] = _used_bytes(ceph_dir, record.id)
        delete_image(record, config, catalog)
        catalog.close()
    assert used["true"] <= 8 << 20
    assert used["false"] >= 64 << 20


def test_unknown_size_stream_is_trimmed(store: tuple[StoreConfig, Catalog], ceph_dir: Path) -> None:
    data = os.urandom((20 << 20) + 12345)
    record = _upload(*store, "-", stdin=io.BytesIO(data))

    assert record.size == len(data)
    rbd = bindings()[1]
    with pool(ceph_dir) as ioctx, rbd.Image(ioctx, record.id, snapshot=SNAPSHOT) as image:
        assert image.size() == len(data)
        assert image.read(len(data) - 100, 100) == data[-100:]


class _FreezingStream(io.RawIOBase):
    """Random data (``limit`` bytes at most) that freezes the OSD after ``freeze_at`` bytes."""

    def __init__(self, osd_pid: int, freeze_at: int, limit: int) -> None:
        self.osd_pid = osd_pid
        self.freeze_at = freeze_at
        self.limit = limit
        self.done = 0
        self.frozen_at: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self.done >= self.freeze_at and self.frozen_at is None:
            os.kill(self.osd_pid, signal.SIGSTOP)
            self.frozen_at = time.monotonic()
        n = min(len(buf), 1 << 20, self.limit - self.done)
        buf[:n] = os.urandom(n)
        self.done += n
        return n


def _thaw_when_abandoned(monkeypatch: pytest.MonkeyPatch, osd_pid: int) -> list[float]:
    """When the upload gives up its writes, note the time and let the OSD run again."""
    gave_up: list[float] = []
    abandon = rbd_store._WriteWindow.abandon

    def thaw_then_abandon(window: rbd_store._WriteWindow) -> None:
        gave_up.append(time.monotonic())
        os.kill(osd_pid, signal.SIGCONT)
        abandon(window)

    monkeypatch.setattr(rbd_store._WriteWindow, "abandon", thaw_then_abandon)
    return gave_up


def test_stopped_osd_is_a_timely_error_and_leaves_nothing(
    ceph_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OSD is frozen mid-upload and thawed as soon as the upload gives up, so that the
    cleanup can reach it. A librbd write is two operations (object map, data), each bounded."""
    config = store_config(tmp_path, ceph_dir, rados_connect_timeout=str(TIMEOUT))[1]
    catalog = Catalog(config.catalog_path)
    osd_pid = int((ceph_dir / "run" / "osd.0.pid").read_text())
    before = image_names(ceph_dir)
    stream = _FreezingStream(osd_pid, 32 << 20, 1 << 30)
    gave_up = _thaw_when_abandoned(monkeypatch, osd_pid)
    try:
        with pytest.raises(StoreError, match=f"rados_connect_timeout {TIMEOUT}s"):
            _upload(config, catalog, "-", io.BufferedReader(stream))
    finally:
        os.kill(osd_pid, signal.SIGCONT)
    assert stream.frozen_at is not None
    assert gave_up[0] - stream.frozen_at < 2 * TIMEOUT
    assert image_names(ceph_dir) - before == set()
    [record] = catalog.all()
    assert record.status == "killed"
    catalog.close()


def test_convert_to_raw_and_the_warning(ceph_dir: Path, tmp_path: Path) -> None:
    conf, config = store_config(tmp_path, ceph_dir)
    image = make_qcow2(tmp_path / "disk.qcow2")
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw], check=True)

    runner = CliRunner()
    base = ["--config-file", str(conf), "image", "create", "-f", "json"]
    plain = runner.invoke(cli, [*base, "as-is", "--file", str(image)])
    assert plain.exit_code == 0, plain.stderr
    assert "warning:" in plain.stderr and "--convert-to raw" in plain.stderr

    converted = runner.invoke(cli, [*base, "cow", "--file", str(image), "--convert-to", "raw"])
    assert converted.exit_code == 0, converted.stderr
    assert "warning" not in converted.stderr
    record = json.loads(converted.stdout)
    assert (record["disk_format"], record["size"]) == ("raw", 8 << 20)
    assert record["checksum"] == digests(raw)[0]
    assert list((tmp_path / "work").iterdir()) == []
    catalog = Catalog(config.catalog_path)
    for each in catalog.all():
        delete_image(each, config, catalog)
    catalog.close()


def test_missing_bindings_name_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rbd", None)  # makes `import rbd` raise ImportError
    with pytest.raises(StoreError, match="python3-rados python3-rbd"):
        bindings()

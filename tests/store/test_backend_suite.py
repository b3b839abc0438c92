"""The abstract backend suite: every backend passes these (file here; Swift and RBD too)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imgfmt.errors import SourceError
from imgfmt.store.catalog import ImageRecord
from imgfmt.store.errors import ImageRefused, NotFound, StoreError
from imgfmt.store.images import cleanup, delete_image, save_image
from imgfmt.store.upload import CreateRequest, create_image
from tests.store.conftest import StoreEnv, digests, make_backed_qcow2, make_qcow2


def _create(env: StoreEnv, path: Path | str, **kw: Any) -> ImageRecord:
    request = CreateRequest(name=str(kw.pop("name", "img")), file=str(path), **kw)
    return create_image(request, env.config, env.catalog, env.policy)


def test_create_save_delete_round_trip(store_env: StoreEnv, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "disk.qcow2")
    record = _create(store_env, image, properties={"os_distro": "cirros"})

    md5, sha512 = digests(image)
    assert record.status == "active"
    assert (record.checksum, record.os_hash_algo, record.os_hash_value) == (md5, "sha512", sha512)
    assert record.size == image.stat().st_size
    assert record.virtual_size == 8 << 20
    assert (record.disk_format, record.container_format) == ("qcow2", "bare")
    assert record.properties == {"os_distro": "cirros"}
    assert [loc.store for loc in record.locations] == [store_env.config.default]
    assert store_env.catalog.find("img").id == record.id

    out = tmp_path / "out.img"
    assert save_image(record, store_env.config, str(out)) == record.size
    assert out.read_bytes() == image.read_bytes()

    assert delete_image(record, store_env.config, store_env.catalog) == []
    assert store_env.catalog.get(record.id).status == "deleted"
    assert store_env.listing() == set()
    backend = store_env.config.spec(None).backend()
    with pytest.raises(NotFound):
        list(backend.read(record.locations[0]))


def test_unsafe_image_writes_nothing(store_env: StoreEnv, tmp_path: Path) -> None:
    image = make_backed_qcow2(tmp_path / "top.qcow2")
    with pytest.raises(ImageRefused, match="backing-file"):
        _create(store_env, image)
    assert store_env.catalog.all(include_deleted=True) == []
    assert store_env.listing() == set()


def test_claimed_format_must_match(store_env: StoreEnv, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "disk.qcow2")
    with pytest.raises(ImageRefused, match="format-mismatch"):
        _create(store_env, image, disk_format="raw")
    assert store_env.catalog.all(include_deleted=True) == []


def test_from_a_stream(store_env: StoreEnv, tmp_path: Path) -> None:
    image = make_qcow2(tmp_path / "disk.qcow2", "64M")
    request = CreateRequest(name="piped", file="-", disk_format="qcow2")
    record = create_image(
        request,
        store_env.config,
        store_env.catalog,
        store_env.policy,
        stdin=io.BytesIO(image.read_bytes()),
    )
    assert record.status == "active"
    assert record.checksum == digests(image)[0]
    assert record.virtual_size == 64 << 20


def test_unsafe_stream_writes_nothing(store_env: StoreEnv, tmp_path: Path) -> None:
    image = make_backed_qcow2(tmp_path / "top.qcow2")
    request = CreateRequest(name="piped", file="-")
    with pytest.raises(ImageRefused):
        create_image(
            request,
            store_env.config,
            store_env.catalog,
            store_env.policy,
            stdin=io.BytesIO(image.read_bytes()),
        )
    assert store_env.listing() == set()
    assert store_env.catalog.all(include_deleted=True) == []


class _Broken(io.RawIOBase):
    """A stream that fails after ``fail_at`` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self._data = memoryview(data)[:fail_at]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:
        if self._pos >= len(self._data):
            raise OSError("connection reset by peer")
        n = min(len(buf), len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_failure_mid_upload_leaves_nothing_and_kills_the_record(
    store_env: StoreEnv, tmp_path: Path
) -> None:
    data = make_qcow2(tmp_path / "disk.qcow2", "64M").read_bytes() + bytes(16 << 20)
    request = CreateRequest(name="broken", file="-")
    with pytest.raises(SourceError, match="connection reset"):
        create_image(
            request,
            store_env.config,
            store_env.catalog,
            store_env.policy,
            stdin=io.BufferedReader(_Broken(data, 9 << 20), 1 << 20),
        )
    assert store_env.listing() == set()
    [record] = store_env.catalog.all()
    assert record.status == "killed"
    assert "connection reset" in record.properties["imgfmt_kill_reason"]


def test_save_detects_corruption(store_env: StoreEnv, tmp_path: Path) -> None:
    record = _create(store_env, make_qcow2(tmp_path / "disk.qcow2"))
    store_env.corrupt(record.locations[0])
    out = tmp_path / "out.img"
    with pytest.raises(StoreError, match="corrupted"):
        save_image(record, store_env.config, str(out))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "imgfmt-partial" in p.name] == []


def test_delete_with_missing_data_is_reported(store_env: StoreEnv, tmp_path: Path) -> None:
    record = _create(store_env, make_qcow2(tmp_path / "disk.qcow2"))
    backend = store_env.config.spec(None).backend()
    backend.delete(record.locations[0])
    warnings = delete_image(record, store_env.config, store_env.catalog)
    assert len(warnings) == 1
    assert store_env.catalog.get(record.id).status == "deleted"


#: ``imgfmt image create`` that SIGKILLs itself where the record would become active: the data
#: is complete under its final name, the record still says saving.
_KILLED_BEFORE_ACTIVATION = """
import os, signal, sys
from imgfmt.store import upload
upload._activate = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
from imgfmt.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_cleanup_resolves_an_upload_killed_before_activation(
    store_env: StoreEnv, tmp_path: Path
) -> None:
    image = make_qcow2(tmp_path / "disk.qcow2")
    argv = ["--config-file", str(store_env.conf_path), "image", "create", "img"]
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_ACTIVATION, *argv, "--file", str(image)],
        capture_output=True,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    [record] = store_env.catalog.all()
    assert record.status == "saving"
    assert store_env.listing() != set()

    result = cleanup(store_env.config, store_env.catalog)
    assert result.killed_records == (record.id,)
    assert result.removed_data and all(record.id in name for name in result.removed_data)
    assert store_env.listing() == set()
    assert store_env.catalog.get(record.id).status == "killed"
    assert cleanup(store_env.config, store_env.catalog).removed_data == ()

"""The Swift backend beyond the shared suite: segments, failures, containers, credentials.

Tests that take ``env`` need the real Swift of ``scripts/services/swift.sh`` (see swift_env);
the others check configuration handling and need nothing running.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import swiftclient.client

from imgfmt.config import Config, ConfigError
from imgfmt.store import swift
from imgfmt.store.catalog import ImageRecord, Location
from imgfmt.store.config import StoreConfig
from imgfmt.store.errors import StoreError
from imgfmt.store.images import cleanup, delete_image, save_image
from imgfmt.store.upload import CreateRequest, create_image
from tests.store.conftest import StoreEnv
from tests.store.swift_env import (
    admin_connection,
    kill_proxy,
    service_dir,
    start_services,
    swift_env,
)

SEGMENTED = {"swift_store_large_object_size": 1, "swift_store_large_object_chunk_size": 1}
#: Writing from a stream starts once its first 8 MiB (the inspection head) have been read, so
#: failures are injected past that: 8 segments are stored, the 9th is on its way.
STREAM_SIZE = (12 << 20) + 7
FAIL_AT = 10 << 20


@pytest.fixture
def env(tmp_path: Path) -> StoreEnv:
    return swift_env(tmp_path, **SEGMENTED)


def _raw(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _create(env: StoreEnv, file: str, stdin: io.RawIOBase | None = None) -> ImageRecord:
    request = CreateRequest(name="img", file=file, disk_format="raw")
    stream = io.BufferedReader(stdin, 1 << 20) if stdin is not None else None
    return create_image(request, env.config, env.catalog, env.policy, stdin=stream)


def _segments(record: ImageRecord, count: int) -> set[str]:
    return {record.id} | {f"{record.id}-{n:05d}" for n in range(1, count + 1)}


def _round_trip(env: StoreEnv, record: ImageRecord, data: bytes, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    assert save_image(record, env.config, str(out)) == len(data)
    assert out.read_bytes() == data
    assert delete_image(record, env.config, env.catalog) == []
    assert env.listing() == set()


def test_large_image_is_a_static_large_object(env: StoreEnv, tmp_path: Path) -> None:
    image = _raw(tmp_path / "disk.raw", (4 << 20) + 12345)
    record = _create(env, str(image))

    assert env.listing() == _segments(record, 5)
    container = record.locations[0].url.split("/")[3]
    headers = admin_connection(service_dir()).head_object(container, record.id)
    assert headers["x-static-large-object"] == "True"
    assert int(headers["content-length"]) == record.size
    _round_trip(env, record, image.read_bytes(), tmp_path)


def test_stream_of_unknown_size_is_segmented_as_it_arrives(env: StoreEnv, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    record = _create(env, "-", _Stream(data))
    assert env.listing() == _segments(record, 3)
    _round_trip(env, record, data, tmp_path)


def test_small_image_is_one_object(tmp_path: Path) -> None:
    env = swift_env(tmp_path)
    image = _raw(tmp_path / "disk.raw", 1 << 20)
    record = _create(env, str(image))
    assert record.locations[0].url.endswith(f"/{record.id}")
    assert record.locations[0].url.startswith("swift+config://ref1/t")
    assert env.listing() == {record.id}
    _round_trip(env, record, image.read_bytes(), tmp_path)


def test_proxy_killed_mid_segment_is_retried(env: StoreEnv, tmp_path: Path) -> None:
    directory = service_dir()
    data = os.urandom(STREAM_SIZE)

    def crash() -> None:
        kill_proxy(directory)
        start_services(directory)

    record = _create(env, "-", _Stream(data, at=(FAIL_AT, crash)))
    assert env.listing() == _segments(record, 13)
    _round_trip(env, record, data, tmp_path)


def test_proxy_gone_fails_cleanly_and_cleanup_removes_segments(
    env: StoreEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = service_dir()
    monkeypatch.setattr(swift, "RETRIES", 1)
    stream = _Stream(os.urandom(STREAM_SIZE), at=(FAIL_AT, lambda: kill_proxy(directory)))
    try:
        with pytest.raises(StoreError, match=r"store objects: Swift at .* is unreachable"):
            _create(env, "-", stream)
    finally:
        start_services(directory)
    [record] = env.catalog.all()
    assert record.status == "killed"
    assert env.listing() == _segments(record, 8) - {record.id}

    monkeypatch.setattr(swift, "uploader_alive", lambda owner: False)
    result = cleanup(env.config, env.catalog)
    assert len(result.removed_data) == 8
    assert env.listing() == set()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_upload_leaves_nothing(
    env: StoreEnv, tmp_path: Path, error: type[BaseException]
) -> None:
    def interrupt() -> None:
        raise error("stop")

    with pytest.raises(error):
        _create(env, "-", _Stream(os.urandom(STREAM_SIZE), at=(FAIL_AT, interrupt)))
    assert env.listing() == set()
    assert env.catalog.all()[0].status == "killed"


def test_corrupted_segment_fails_the_save(env: StoreEnv, tmp_path: Path) -> None:
    record = _create(env, str(_raw(tmp_path / "disk.raw", 3 << 20)))
    env.corrupt(record.locations[0])
    out = tmp_path / "out.img"
    with pytest.raises(StoreError):
        save_image(record, env.config, str(out))
    assert not out.exists()


def test_missing_container_without_auto_creation(tmp_path: Path) -> None:
    env = swift_env(tmp_path, create="false")
    image = _raw(tmp_path / "disk.raw", 1 << 20)
    with pytest.raises(StoreError, match=r"does not exist in Swift.*create_container_on_put"):
        _create(env, str(image))
    assert env.catalog.all()[0].status == "killed"
    assert env.listing() == set()


def test_container_is_created_on_put(tmp_path: Path) -> None:
    env = swift_env(tmp_path)
    assert env.listing() == set()
    record = _create(env, str(_raw(tmp_path / "disk.raw", 1 << 20)))
    assert env.listing() == {record.id}


def test_wrong_key_is_a_clear_error_without_the_key(tmp_path: Path) -> None:
    real = (service_dir() / "glance-swift.conf").read_text()
    wrong_key = "wrong-" + os.urandom(8).hex()
    conf = tmp_path / "glance-swift.conf"
    conf.write_text("\n".join(_wrong_key(line, wrong_key) for line in real.splitlines()))
    env = swift_env(tmp_path, config_file=conf)

    with pytest.raises(StoreError) as caught:
        _create(env, str(_raw(tmp_path / "disk.raw", 1 << 20)))
    message = str(caught.value)
    assert "store objects: Swift at" in message
    assert "refused the credentials of reference 'ref1'" in message
    assert wrong_key not in message
    record = env.catalog.all()[0]
    assert wrong_key not in json.dumps(record.properties)


def _wrong_key(line: str, key: str) -> str:
    return f"key = {key}" if line.startswith("key") else line


def test_unreachable_swift_names_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swift, "RETRIES", 0)
    conf = tmp_path / "glance-swift.conf"
    conf.write_text("[ref1]\nauth_version = 1\nauth_address = http://127.0.0.1:9/auth/v1.0\n"
                    "user = test:tester\nkey = secret-key\n")  # fmt: skip
    env = swift_env(tmp_path, config_file=conf)
    with pytest.raises(StoreError, match=r"store objects: .* unreachable \(Connection refused\)"):
        _create(env, str(_raw(tmp_path / "disk.raw", 1 << 20)))


def test_multiple_containers_seed(tmp_path: Path) -> None:
    env = swift_env(tmp_path, swift_store_multiple_containers_seed=3, **SEGMENTED)
    image = _raw(tmp_path / "disk.raw", 2 << 20)
    record = _create(env, str(image))
    container = record.locations[0].url.split("/")[3]
    assert container.endswith(f"_{record.id[:3]}")
    assert env.listing() == _segments(record, 2)
    _round_trip(env, record, image.read_bytes(), tmp_path)


# Configuration: no Swift needed.


def _backend(tmp_path: Path, options: str, reference: str) -> swift.SwiftBackend:
    refs = tmp_path / "glance-swift.conf"
    refs.write_text(reference)
    conf = tmp_path / "imgfmt.conf"
    conf.write_text(
        "[DEFAULT]\nenabled_backends = objects:swift\n[objects]\n"
        f"swift_store_config_file = {refs}\n{options}\n"
    )
    backend = StoreConfig.load(Config.load(conf)).spec(None).backend()
    assert isinstance(backend, swift.SwiftBackend)
    return backend


V3 = (
    "[ref1]\nauth_address = http://keystone.invalid/v3\nuser = images:glance\nkey = s3cret\n"
    "user_domain_name = Users\n"
)


@pytest.mark.parametrize(
    ("seed", "image_id", "container"),
    [
        (0, "fdae39a1-bac5-4238-aba4-69bcc726e848", "glance"),
        (3, "FDAE39A1-bac5-4238-aba4-69bcc726e848", "glance_fda"),
        (10, "fdae39a1-bac5-4238-aba4-69bcc726e848", "glance_fdae39a1-ba"),
    ],
)
def test_container_names_follow_glance(
    tmp_path: Path, seed: int, image_id: str, container: str
) -> None:
    backend = _backend(tmp_path, f"swift_store_multiple_containers_seed = {seed}", V3)
    assert backend.container_for(image_id) == container


def test_keystone_v3_reference(tmp_path: Path) -> None:
    backend = _backend(tmp_path, "swift_store_region = RegionTwo", V3)
    reference = backend.reference("ref1")
    assert "s3cret" not in repr(reference)
    conn = reference.connect(backend.spec, 0)
    auth = conn.session.auth
    [method] = auth.auth_methods
    assert auth.auth_url == "http://keystone.invalid/v3"
    assert (method.username, method.password, method.user_domain_name) == (
        "glance",
        "s3cret",
        "Users",
    )
    assert (auth.project_name, auth.project_domain_id) == ("images", "default")
    assert conn.os_options["region_name"] == "RegionTwo"


@pytest.mark.parametrize(
    ("options", "reference", "problem"),
    [
        ("swift_store_multiple_containers_seed = 33", V3, "must be 0..32"),
        ("", V3.replace("[ref1]", "[other]"), r"\[ref1\] auth_address: no such reference"),
        ("", V3 + "auth_version = 2\n", "auth_version: must be 1 or 3"),
        ("", V3.replace("key = s3cret\n", ""), r"\[ref1\] key: is required"),
    ],
)
def test_configuration_errors(tmp_path: Path, options: str, reference: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        _backend(tmp_path, options, reference).reference("ref1")
    assert "s3cret" not in str(caught.value)


def test_foreign_location_is_refused(tmp_path: Path) -> None:
    backend = _backend(tmp_path, "", V3)
    with pytest.raises(StoreError, match="not a swift\\+config"):
        backend.read(Location("swift://user:key@host/glance/x", "objects"))


class _Stream(io.RawIOBase):
    """The image on standard input; calls ``at[1]`` once ``at[0]`` bytes have been read."""

    def __init__(self, data: bytes, at: tuple[int, Callable[[], None]] | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._at = at

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._at and self._pos >= self._at[0]:
            action, self._at = self._at[1], None
            action()
        n = min(len(buf), len(self._data) - self._pos, 1 << 18)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


class _Damaging:
    """A PUT body that flips one bit of the first byte it sends, after imgfmt hashed it."""

    def __init__(self, body: swift._Body) -> None:
        self.body = body
        self.damaged = False

    def read(self, size: int = -1) -> bytes:
        piece = bytes(self.body.read(size))
        if piece and not self.damaged:
            self.damaged = True
            return bytes([piece[0] ^ 1]) + piece[1:]
        return piece

    def reset(self, *args: object, **kwargs: object) -> None:
        self.body.reset(*args, **kwargs)


def test_a_segment_damaged_in_transit_fails_and_leaves_nothing(
    env: StoreEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = swiftclient.client.Connection.put_object

    def put_object(self: object, container: str, name: str, body: object, *a: Any, **k: Any) -> Any:
        if name.endswith("-00002"):
            body = _Damaging(body)  # type: ignore[arg-type]
        return real_put(self, container, name, body, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(swiftclient.client.Connection, "put_object", put_object)
    with pytest.raises(StoreError, match="damaged in transit"):
        _create(env, str(_raw(tmp_path / "disk.raw", 3 << 20)))
    assert env.listing() == set()
    assert env.catalog.all()[0].status == "killed"

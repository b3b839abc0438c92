"""The file backend on real, separate small filesystems; faults; concurrency; cleanup."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgfmt.config import Config
from imgfmt.store.catalog import Catalog
from imgfmt.store.config import StoreConfig
from imgfmt.store.errors import StoreError, StoreFull
from imgfmt.store.upload import CreateRequest, create_image
from tests.store.conftest import make_qcow2, write_conf

IMGFMT = str(Path(sys.executable).parent / "imgfmt")


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount tmpfs in CI: {proc.stderr.strip()}")
        pytest.skip(f"cannot mount tmpfs here: {proc.stderr.strip()}")


@pytest.fixture()
def mounts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    made: list[Path] = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, size)
        made.append(path)
        return path

    paths = {"hi": mount("hi", "4m"), "lo1": mount("lo1", "24m"), "lo2": mount("lo2", "40m")}
    yield paths
    for path in made:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _store(tmp_path: Path, datadirs: list[str], extra: str = "") -> tuple[StoreConfig, Catalog]:
    lines = "".join(f"filesystem_store_datadirs = {d}\n" for d in datadirs)
    conf = write_conf(
        tmp_path / "glance-api.conf",
        f"[glance_store]\ndefault_store = file\n{lines}{extra}"
        f"[database]\nconnection = sqlite:///{tmp_path / 'catalog.db'}\n",
    )
    config = StoreConfig.load(Config.load(conf))
    return config, Catalog(config.catalog_path)


def _upload(config: StoreConfig, catalog: Catalog, image: Path) -> object:
    from imgfmt.policy import Policy

    return create_image(CreateRequest("img", str(image)), config, catalog, Policy())


def _random_raw(path: Path, mib: int) -> Path:
    path.write_bytes(os.urandom(mib << 20))
    return path


def test_highest_priority_with_room_then_most_free(mounts: dict[str, Path], tmp_path: Path) -> None:
    config, catalog = _store(
        tmp_path, [f"{mounts['hi']}:200", f"{mounts['lo1']}:100", f"{mounts['lo2']}:100"]
    )
    small = _random_raw(tmp_path / "small.raw", 1)
    big = _random_raw(tmp_path / "big.raw", 8)

    first = _upload(config, catalog, small)
    assert first.locations[0].url.startswith(f"file://{mounts['hi']}/")
    second = _upload(config, catalog, big)
    assert second.locations[0].url.startswith(f"file://{mounts['lo2']}/")


def test_all_full_is_a_clear_error(mounts: dict[str, Path], tmp_path: Path) -> None:
    config, catalog = _store(tmp_path, [f"{mounts['hi']}:200", f"{mounts['lo1']}:100"])
    huge = _random_raw(tmp_path / "huge.raw", 48)
    with pytest.raises(StoreFull, match="no datadir has room"):
        _upload(config, catalog, huge)
    [record] = catalog.all()
    assert record.status == "killed"
    assert "no datadir has room" in record.properties["imgfmt_kill_reason"]


def test_disk_full_mid_write_removes_partial_data(mounts: dict[str, Path], tmp_path: Path) -> None:
    config, catalog = _store(tmp_path, [f"{mounts['lo1']}:100"])
    stream = _random_raw(tmp_path / "s.raw", 32)
    with open(stream, "rb") as f, pytest.raises(StoreFull, match="is full"):
        create_image(CreateRequest("img", "-", "raw"), config, catalog, _policy(), stdin=f)
    assert os.listdir(mounts["lo1"]) == []
    [record] = catalog.all()
    assert record.status == "killed"


def test_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        datadir = tmp_path / "ro"
        datadir.mkdir()
        subprocess.run(["chattr", "+i", str(datadir)], check=False, capture_output=True)
        if not _immutable(datadir):
            pytest.skip("root ignores permissions and chattr +i is unavailable here")
    else:
        datadir = tmp_path / "ro"
        datadir.mkdir(mode=0o555)
    try:
        config, catalog = _store(tmp_path, [f"{datadir}:1"])
        with pytest.raises(StoreError, match="failed"):
            _upload(config, catalog, _random_raw(tmp_path / "x.raw", 1))
        [record] = catalog.all()
        assert record.status == "killed"
    finally:
        subprocess.run(["chattr", "-i", str(datadir)], check=False, capture_output=True)


def _immutable(path: Path) -> bool:
    try:
        (path / "probe").write_bytes(b"")
    except OSError:
        return True
    (path / "probe").unlink()
    return False


def _policy() -> object:
    from imgfmt.policy import Policy

    return Policy()


def test_thin_provisioning_makes_holes(tmp_path: Path) -> None:
    config, catalog = _store(
        tmp_path, [f"{tmp_path / 'data'}:1"], "filesystem_thin_provisioning = true\n"
    )
    image = tmp_path / "sparse.raw"
    with open(image, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.seek(63 << 20)
        f.write(os.urandom(1 << 20))
    record = _upload(config, catalog, image)
    stored = Path(record.locations[0].url.removeprefix("file://"))
    assert stored.stat().st_size == 64 << 20
    assert stored.stat().st_blocks * 512 < 16 << 20
    assert stored.read_bytes() == image.read_bytes()


def _env(tmp_path: Path) -> dict[str, str]:
    conf = write_conf(
        tmp_path / "imgfmt.conf",
        f"[glance_store]\nfilesystem_store_datadir = {tmp_path / 'data'}\n"
        f"[database]\nconnection = sqlite:///{tmp_path / 'catalog.db'}\n",
    )
    return {**os.environ, "IMGFMT_CONFIG": str(conf)}


def _slow_upload(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """An upload from a pipe that is fed slowly, so it can be interrupted mid-way."""
    feeder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\n"
            "for i in range(400):\n"
            "    sys.stdout.buffer.write(bytes([i % 251]) * (1 << 20)); sys.stdout.flush()\n"
            "    time.sleep(0.02)\n",
        ],
        stdout=subprocess.PIPE,
    )
    proc = subprocess.Popen(
        [IMGFMT, "image", "create", "slow", "--file", "-", "--disk-format", "raw"],
        stdin=feeder.stdout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert feeder.stdout is not None
    feeder.stdout.close()
    _wait_for_partial(tmp_path / "data")
    return proc


def _wait_for_partial(datadir: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if datadir.exists() and any("imgfmt-partial" in n for n in os.listdir(datadir)):
            return
        time.sleep(0.05)
    raise AssertionError("the upload never started writing")


def _records(tmp_path: Path, env: dict[str, str]) -> list[dict[str, object]]:
    out = subprocess.run(
        [IMGFMT, "image", "list", "--long", "-f", "json"], env=env, capture_output=True, check=True
    ).stdout
    return list(json.loads(out))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_upload(tmp_path: Path, sig: signal.Signals) -> None:
    env = _env(tmp_path)
    proc = _slow_upload(tmp_path, env)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert os.listdir(tmp_path / "data") == []
    [record] = _records(tmp_path, env)
    assert record["Status"] == "killed"


def test_sigkill_then_cleanup(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = _slow_upload(tmp_path, env)
    proc.kill()
    proc.wait(timeout=30)
    assert any("imgfmt-partial" in n for n in os.listdir(tmp_path / "data"))
    assert _records(tmp_path, env)[0]["Status"] == "saving"

    out = subprocess.run(
        [IMGFMT, "store", "cleanup"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "removed partial data" in out and "killed" in out
    assert os.listdir(tmp_path / "data") == []
    assert _records(tmp_path, env)[0]["Status"] == "killed"


def test_eight_concurrent_creates(tmp_path: Path) -> None:
    env = _env(tmp_path)
    images = [make_qcow2(tmp_path / f"d{i}.qcow2", "4M") for i in range(8)]
    procs = [
        subprocess.Popen(
            [IMGFMT, "image", "create", f"img{i}", "--file", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, p in enumerate(images)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    records = _records(tmp_path, env)
    assert sorted(r["Name"] for r in records) == [f"img{i}" for i in range(8)]
    assert {r["Status"] for r in records} == {"active"}
    assert len(os.listdir(tmp_path / "data")) == 8


def _open_catalog(path: str) -> str:
    try:
        Catalog(path).close()
    except StoreError as exc:
        return str(exc)
    return "ok"


def test_processes_creating_one_catalog_together(tmp_path: Path) -> None:
    # The first image creates of a new store race to create its catalog; before opening
    # retried, about one opener in thirty failed with "database is locked".
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(8) as pool:
        for attempt in range(12):
            path = str(tmp_path / f"catalog{attempt}.db")
            assert pool.map(_open_catalog, [path] * 8) == ["ok"] * 8


def test_file_swapped_after_inspection_uploads_the_inspected_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing the path between inspection and upload must not store uninspected bytes."""
    import imgfmt.store.upload as upload
    from imgfmt.errors import SourceError
    from tests.store.conftest import digests, make_backed_qcow2

    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    image = _random_raw(tmp_path / "safe.raw", 1)
    expected = digests(image)
    hostile = make_backed_qcow2(tmp_path / "hostile.qcow2")
    real_inspect = upload.inspect

    def inspect_then_swap(*args: object, **kwargs: object) -> object:
        report = real_inspect(*args, **kwargs)  # type: ignore[arg-type]
        os.replace(hostile, image)
        return report

    monkeypatch.setattr(upload, "inspect", inspect_then_swap)
    try:
        record = _upload(config, catalog, image)
    except SourceError as exc:  # the replaced file's ctime moved as it lost its name
        assert "changed after it was inspected" in str(exc)
        assert os.listdir(tmp_path / "images") == []
    else:
        assert (record.checksum, record.os_hash_value) == expected


def test_file_changed_in_place_after_inspection_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imgfmt.store.upload as upload
    from imgfmt.errors import SourceError

    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    image = _random_raw(tmp_path / "safe.raw", 1)
    real_inspect = upload.inspect

    def inspect_then_append(*args: object, **kwargs: object) -> object:
        report = real_inspect(*args, **kwargs)  # type: ignore[arg-type]
        with open(image, "ab") as f:
            f.write(b"QFI\xfb" + bytes(508))
        return report

    monkeypatch.setattr(upload, "inspect", inspect_then_append)
    with pytest.raises(SourceError, match="changed after it was inspected"):
        _upload(config, catalog, image)
    assert os.listdir(tmp_path / "images") == []
    [record] = catalog.all()
    assert record.status == "killed"


def test_character_device_is_refused_not_read_forever(tmp_path: Path) -> None:
    from imgfmt.errors import SourceError

    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    with pytest.raises(SourceError, match="not a regular file or block device"):
        _upload(config, catalog, Path("/dev/zero"))
    assert catalog.all() == []


def test_image_deleted_while_uploading_keeps_no_data(tmp_path: Path) -> None:
    """``image delete`` of a saving image: the upload fails and removes what it wrote."""
    from imgfmt.policy import Policy
    from imgfmt.store.images import delete_image
    from imgfmt.store.upload import PIPE_CHUNK

    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    image = _random_raw(tmp_path / "x.raw", 9)
    other = Catalog(config.catalog_path)

    def delete_midway(done: int) -> None:
        if done == PIPE_CHUNK:
            [record] = other.all()
            assert record.status == "saving"
            delete_image(record, config, other)

    with pytest.raises(StoreError, match="deleted to active"):
        create_image(CreateRequest("img", str(image)), config, catalog, Policy(), delete_midway)
    assert os.listdir(tmp_path / "images") == []
    [record] = catalog.all(include_deleted=True)
    assert record.status == "deleted"


def test_catalog_failing_at_activation_removes_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    real_update = catalog.update

    def update(image_id: str, status: str | None = None, **fields: object) -> object:
        if status == "active":
            raise StoreError(f"catalog {catalog.path}: disk I/O error")
        return real_update(image_id, status, **fields)

    monkeypatch.setattr(catalog, "update", update)
    with pytest.raises(StoreError, match="disk I/O error"):
        _upload(config, catalog, _random_raw(tmp_path / "x.raw", 1))
    assert os.listdir(tmp_path / "images") == []
    [record] = catalog.all()
    assert record.status == "killed"
    assert "disk I/O error" in record.properties["imgfmt_kill_reason"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("filesystem_store_file_perm = 7777\n", "not an octal permission"),
        ("filesystem_store_file_perm = 1000\n", "not an octal permission"),
        ("filesystem_store_file_perm = rw\n", "not an octal permission"),
    ],
)
def test_bad_file_perm_names_file_section_and_option(
    tmp_path: Path, extra: str, message: str
) -> None:
    from imgfmt.config import ConfigError

    config, _ = _store(tmp_path, [f"{tmp_path / 'images'}:1"], extra)
    with pytest.raises(ConfigError) as caught:
        config.spec(None).backend()
    text = str(caught.value)
    assert message in text and "glance_store" in text and "filesystem_store_file_perm" in text
    assert str(tmp_path / "glance-api.conf") in text


def test_negative_file_perm_leaves_files_as_created(tmp_path: Path) -> None:
    config, catalog = _store(
        tmp_path, [f"{tmp_path / 'images'}:1"], "filesystem_store_file_perm = -1\n"
    )
    record = _upload(config, catalog, _random_raw(tmp_path / "x.raw", 1))
    mode = os.stat(tmp_path / "images" / record.id).st_mode  # type: ignore[attr-defined]
    assert mode & 0o7777 == 0o600


@pytest.mark.parametrize(
    ("datadirs", "message"),
    [
        (["{d}/a:high"], "priority 'high' is not a number"),
        (["{d}/a:100", "{d}/a/:200"], "listed more than once"),
    ],
)
def test_bad_datadirs_are_configuration_errors(
    tmp_path: Path, datadirs: list[str], message: str
) -> None:
    from imgfmt.config import ConfigError

    config, _ = _store(tmp_path, [d.format(d=tmp_path) for d in datadirs])
    with pytest.raises(ConfigError, match=message) as caught:
        config.spec(None).backend()
    assert "filesystem_store_datadirs" in str(caught.value)
    assert not (tmp_path / "a:high").exists()


def test_two_cleanups_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial file another cleanup removed first is not an error."""
    import imgfmt.store.file as file_store

    config, _ = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    backend = config.spec(None).backend()
    partial = tmp_path / "images" / ".0d2c-id.999999.imgfmt-partial"
    partial.write_bytes(b"x")

    def other_cleanup_first(owner: str) -> bool:
        partial.unlink(missing_ok=True)
        return False

    monkeypatch.setattr(file_store, "uploader_alive", other_cleanup_first)
    assert backend.cleanup() == []


def test_a_fifo_without_a_writer_is_refused_not_waited_on(tmp_path: Path) -> None:
    from imgfmt.errors import SourceError

    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def waited(signum: int, frame: object) -> None:
        raise TimeoutError("blocked opening a FIFO without a writer")

    signal.signal(signal.SIGALRM, waited)
    signal.alarm(10)
    try:
        with pytest.raises(SourceError, match="is a pipe"):
            _upload(config, catalog, fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert catalog.all() == []


def test_stream_whose_end_changes_its_format_is_refused(tmp_path: Path) -> None:
    """A fixed VHD past the head window: its head reads as raw, the whole stream as vhd.

    The record took raw from the head; activating it would store a vhd labelled raw.
    """
    import shutil

    from imgfmt.store.errors import ImageRefused

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    vhd = tmp_path / "fixed.vhd"
    subprocess.run(_fixed_vhd_argv(vhd), check=True)
    datadir = tmp_path / "data"
    config, catalog = _store(tmp_path, [f"{datadir}:1"])
    with open(vhd, "rb") as f, pytest.raises(ImageRefused, match="raw/bare but the whole"):
        create_image(CreateRequest("img", "-"), config, catalog, _policy(), stdin=f)
    [record] = catalog.all()
    assert record.status == "killed"
    assert not any(p.is_file() for p in datadir.rglob("*"))


class _Writes:
    """``os.write`` watched: how many bytes went direct (O_DIRECT) and how many buffered; a
    direct write numbered ``fail_at`` (from 1) fails with ``errno``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int = 0, errno: int = 0) -> None:
        self.direct = self.buffered = self.direct_calls = 0
        self.fail_at, self.errno = fail_at, errno
        self._write = os.write
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd: int, data: bytes) -> int:
        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            self.buffered += len(data)
            return self._write(fd, data)
        self.direct_calls += 1
        if self.direct_calls == self.fail_at:
            raise OSError(self.errno, os.strerror(self.errno))
        written = self._write(fd, data)
        self.direct += written
        return written


def _direct_store(tmp_path: Path) -> tuple[StoreConfig, Catalog]:
    """A store in the test directory; the test is skipped where its filesystem refuses
    O_DIRECT."""
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except OSError as exc:
        pytest.skip(f"the filesystem under {tmp_path} refuses O_DIRECT: {exc.strerror}")
    probe.unlink()
    return _store(tmp_path, [f"{tmp_path / 'images'}:1"])


def _stored(record: object) -> bytes:
    return Path(record.locations[0].url.removeprefix("file://")).read_bytes()  # type: ignore[attr-defined]


def test_whole_pages_go_past_the_page_cache_and_the_end_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, catalog = _direct_store(tmp_path)
    image = tmp_path / "odd.raw"
    image.write_bytes(os.urandom((9 << 20) + 1000))
    writes = _Writes(monkeypatch)
    record = _upload(config, catalog, image)
    assert (writes.direct, writes.buffered) == (9 << 20, 1000)
    assert _stored(record) == image.read_bytes()


@pytest.mark.parametrize(
    "pieces",
    [
        [12288, 100, 8192, -5000, 4096],
        [-8192, 4096, -4096, 3, -4096],
        [5, 4096, -(8 << 20), 1 << 20],
    ],
    ids=["odd-write", "page-holes", "odd-start"],
)
def test_any_chunk_sizes_and_holes_are_stored_exactly(tmp_path: Path, pieces: list[int]) -> None:
    """Positive: that many random bytes; negative: that many zeros, left as a hole."""
    config, _ = _store(
        tmp_path, [f"{tmp_path / 'images'}:1"], "filesystem_thin_provisioning = true\n"
    )
    chunks = [os.urandom(n) if n > 0 else bytes(-n) for n in pieces]
    stored = config.spec(None).backend().add("id", iter(chunks), None)
    assert stored.size == sum(map(len, chunks))
    assert (tmp_path / "images" / "id").read_bytes() == b"".join(chunks)


@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_a_filesystem_refusing_o_direct_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_at: str
) -> None:
    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    image = _random_raw(tmp_path / "x.raw", 9)
    if refused_at == "open":
        real_open = os.open

        def open_without_direct(path: str, flags: int, *args: int) -> int:
            if flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", open_without_direct)
    writes = _Writes(monkeypatch, fail_at=1, errno=errno.EINVAL)
    record = _upload(config, catalog, image)
    assert (writes.direct, writes.buffered) == (0, 9 << 20)
    assert _stored(record) == image.read_bytes()


def test_a_failed_direct_write_fails_the_upload_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, catalog = _direct_store(tmp_path)
    image = _random_raw(tmp_path / "x.raw", 9)
    writes = _Writes(monkeypatch, fail_at=2, errno=errno.EIO)
    with pytest.raises(StoreError, match="Input/output error"):
        _upload(config, catalog, image)
    assert writes.direct == 4 << 20
    assert os.listdir(tmp_path / "images") == []
    [record] = catalog.all()
    assert record.status == "killed"
    assert "Input/output error" in record.properties["imgfmt_kill_reason"]


def _fixed_vhd_argv(path: Path) -> list[str]:
    options = "subformat=fixed,force_size=on"
    return ["qemu-img", "create", "-q", "-f", "vpc", "-o", options, str(path), "10M"]


@pytest.mark.parametrize("claim", ["vhd", "qcow2"])
def test_a_fixed_vhd_claimed_from_a_stream_is_judged_at_its_end(tmp_path: Path, claim: str) -> None:
    """Claimed vhd, a fixed VHD's head (raw) cannot refute it: the whole stream decides and
    stores it as vhd. Any other claim the head refutes is refused before anything is written."""
    from imgfmt.store.errors import ImageRefused

    vhd = tmp_path / "fixed.vhd"
    subprocess.run(_fixed_vhd_argv(vhd), check=True)
    datadir = tmp_path / "data"
    config, catalog = _store(tmp_path, [f"{datadir}:1"])
    request = CreateRequest("img", "-", disk_format=claim)
    with open(vhd, "rb") as f:
        if claim != "vhd":
            with pytest.raises(ImageRefused, match="format-mismatch"):
                create_image(request, config, catalog, _policy(), stdin=f)
            assert catalog.all() == []
            return
        record = create_image(request, config, catalog, _policy(), stdin=f)
    assert (record.status, record.disk_format, record.virtual_size) == ("active", "vhd", 10 << 20)
    assert (datadir / record.id).read_bytes() == vhd.read_bytes()


def test_a_raw_stream_claimed_as_vhd_is_refused_at_its_end(tmp_path: Path) -> None:
    from imgfmt.store.errors import ImageRefused

    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(10 << 20))
    datadir = tmp_path / "data"
    config, catalog = _store(tmp_path, [f"{datadir}:1"])
    with open(raw, "rb") as f, pytest.raises(ImageRefused, match="format-mismatch"):
        create_image(
            CreateRequest("img", "-", disk_format="vhd"), config, catalog, _policy(), stdin=f
        )
    [record] = catalog.all()
    assert record.status == "killed"
    assert not any(p.is_file() for p in datadir.rglob("*"))


def test_cleanup_tells_a_dead_uploader_from_a_new_process_with_its_pid(tmp_path: Path) -> None:
    """The partial file and the record name this live process's pid with another start time:
    the pid was given again since the upload died, so cleanup resolves both."""
    from imgfmt.store.base import uploader
    from imgfmt.store.images import cleanup
    from imgfmt.store.upload import UPLOAD_PID

    config, catalog = _store(tmp_path, [f"{tmp_path / 'images'}:1"])
    pid, _, start = uploader().partition(".")
    assert start.isdigit()  # Linux: the start time is in /proc
    reused = f"{pid}.{int(start) + 1}"
    record = catalog.create("img", "raw", "bare", {UPLOAD_PID: reused})
    catalog.update(record.id, status="saving")
    live = catalog.create("live", "raw", "bare", {UPLOAD_PID: uploader()})
    catalog.update(live.id, status="saving")
    (tmp_path / "images").mkdir()
    partial = tmp_path / "images" / f".{record.id}.{reused}.imgfmt-partial"
    partial.write_bytes(b"x")
    mine = tmp_path / "images" / f".{live.id}.{uploader()}.imgfmt-partial"
    mine.write_bytes(b"x")

    result = cleanup(config, catalog)
    assert result.removed_data == (str(partial),)
    assert result.killed_records == (record.id,)
    assert catalog.get(live.id).status == "saving"
    assert mine.exists()


def test_glance_options_file_perm_metadata_file_and_hashing_algorithm(tmp_path: Path) -> None:
    import hashlib
    import stat

    from imgfmt.policy import Policy

    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"id": "nfs-1", "mountpoint": "/srv/images"}))
    datadir = tmp_path / "images"
    conf = write_conf(
        tmp_path / "glance-api.conf",
        "[DEFAULT]\nhashing_algorithm = sha256\n[glance_store]\ndefault_store = file\n"
        f"filesystem_store_datadir = {datadir}\nfilesystem_store_file_perm = 640\n"
        f"filesystem_store_metadata_file = {meta}\n"
        f"[database]\nconnection = sqlite:///{tmp_path / 'catalog.db'}\n",
    )
    config = StoreConfig.load(Config.load(conf))
    catalog = Catalog(config.catalog_path)
    image = _random_raw(tmp_path / "disk.raw", 2)
    record = create_image(CreateRequest("img", str(image)), config, catalog, Policy())

    data = image.read_bytes()
    assert record.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
    sha256 = hashlib.sha256(data).hexdigest()
    assert (record.os_hash_algo, record.os_hash_value) == ("sha256", sha256)
    assert dict(record.locations[0].metadata) == {"id": "nfs-1", "mountpoint": "/srv/images"}
    assert stat.S_IMODE((datadir / record.id).stat().st_mode) == 0o640

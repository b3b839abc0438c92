"""The abstract backend suite's plumbing: one ``StoreEnv`` per backend type.

Every test in ``test_backend_suite.py`` runs against each env. A backend is added by one
factory here that builds its configuration and knows how to list and corrupt its data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgfmt.config import Config
from imgfmt.policy import Policy
from imgfmt.store.catalog import Catalog, Location
from imgfmt.store.config import StoreConfig
from tests.store.rbd_env import rbd_env
from tests.store.swift_env import swift_env


@dataclass
class StoreEnv:
    """A configured store for tests, with the backend-specific inspection hooks."""

    name: str
    conf_path: Path
    config: StoreConfig
    catalog: Catalog
    listing: Callable[[], set[str]]
    corrupt: Callable[[Location], None]

    @property
    def policy(self) -> Policy:
        return Policy.from_config(self.config.config)


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _file_env(tmp: Path) -> StoreEnv:
    datadir = tmp / "images"
    conf = write_conf(
        tmp / "imgfmt.conf",
        f"[DEFAULT]\nenabled_backends = local:file\n[glance_store]\ndefault_backend = local\n"
        f"[local]\nfilesystem_store_datadir = {datadir}\n"
        f"[database]\nconnection = sqlite:///{tmp / 'catalog.db'}\n",
    )
    config = StoreConfig.load(Config.load(conf))

    def listing() -> set[str]:
        return set(os.listdir(datadir)) if datadir.exists() else set()

    def corrupt(location: Location) -> None:
        path = location.url.removeprefix("file://")
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"\xff\xfe")

    return StoreEnv("file", conf, config, Catalog(config.catalog_path), listing, corrupt)


ENV_FACTORIES: dict[str, Callable[[Path], StoreEnv]] = {
    "file": _file_env,
    "swift": swift_env,
    "rbd": rbd_env,
}


@pytest.fixture(params=sorted(ENV_FACTORIES))
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreEnv]:
    env = ENV_FACTORIES[request.param](tmp_path)
    yield env
    env.catalog.close()


def make_qcow2(path: Path, size: str = "8M", fill: bool = True) -> Path:
    """A qcow2 with some random data written into it through qemu-io-free means."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        f.truncate(_parse(size))
        if fill:
            f.seek(0)
            f.write(os.urandom(min(_parse(size), 1 << 20)))
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True
    )
    raw.unlink()
    return path


def make_backed_qcow2(path: Path) -> Path:
    base = make_qcow2(path.with_name("base.qcow2"), "1M", fill=False)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(path)],
        check=True,
    )
    return path


def digests(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()


def _parse(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)

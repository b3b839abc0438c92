"""The Ceph RBD ``StoreEnv``: a real single-node Ceph started by ``scripts/services/ceph.sh``.

``$IMGFMT_TEST_CEPH_DIR`` names the running cluster's directory (the services wrapper sets
it). Without it, without the bindings, or when the cluster does not answer, the RBD tests skip
with the reason; under ``CI=true`` they fail instead. The pool is shared by every test, so an
env's listing shows only the images that appeared after the env was made.
"""

from __future__ import annotations

import configparser
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from imgfmt.config import Config
from imgfmt.store.catalog import Catalog, Location
from imgfmt.store.config import StoreConfig
from imgfmt.store.errors import StoreError
from imgfmt.store.rbd import SNAPSHOT, bindings

if TYPE_CHECKING:
    from tests.store.conftest import StoreEnv

ENV_VAR = "IMGFMT_TEST_CEPH_DIR"
POOL = "images"
#: The stores id in the services imgfmt.conf.
STORE = "ceph"
#: Seconds a test waits for the cluster before calling it unavailable.
PROBE_TIMEOUT = 10


def service_dir() -> Path:
    """The running cluster's directory; skips (fails under CI) when there is none."""
    problem = _probe(os.environ.get(ENV_VAR, ""))
    if problem:
        message = f"Ceph is not available: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return Path(os.environ[ENV_VAR])


@functools.cache
def _probe(directory: str) -> str | None:
    """Why the cluster in ``directory`` cannot be used, or ``None``; asked once per session."""
    if not directory:
        return f"{ENV_VAR} is not set; run the tests through `make test`"
    try:
        with pool(Path(directory)) as ioctx:
            bindings()[1].RBD().list(ioctx)
    except (StoreError, OSError) as exc:
        return str(exc)
    except Exception as exc:  # the bindings' own errors: rados.Error, rbd.Error
        return f"the cluster in {directory} does not answer ({type(exc).__name__}: {exc})"
    return None


@contextmanager
def pool(directory: Path) -> Iterator[Any]:
    """An I/O context on the test pool, as the admin user, with short timeouts."""
    rados, _ = bindings()
    timeouts = {"client_mount_timeout": str(PROBE_TIMEOUT), "rados_mon_op_timeout": "30"}
    cluster = rados.Rados(conffile=str(directory / "ceph.conf"), conf=timeouts)
    cluster.connect()
    try:
        ioctx = cluster.open_ioctx(POOL)
        try:
            yield ioctx
        finally:
            ioctx.close()
    finally:
        cluster.shutdown()


def image_names(directory: Path) -> set[str]:
    with pool(directory) as ioctx:
        return set(bindings()[1].RBD().list(ioctx))


def store_config(tmp: Path, directory: Path, **options: str) -> tuple[Path, StoreConfig]:
    """The service's imgfmt.conf with this test's catalog, scratch directory and options."""
    parser = configparser.RawConfigParser()
    parser.read(directory / "imgfmt.conf")
    for key, value in options.items():
        parser.set(STORE, key, value)
    parser["database"] = {"connection": f"sqlite:///{tmp / 'catalog.db'}"}
    parser["task"] = {"work_dir": str(tmp / "work")}
    conf = tmp / "imgfmt.conf"
    with open(conf, "w") as f:
        parser.write(f)
    return conf, StoreConfig.load(Config.load(conf))


def corrupt_image(directory: Path, location: Location) -> None:
    """Change bytes that ``save`` reads: the data is read from the snapshot, so remake it."""
    name = location.url.split("/")[-2]
    rbd = bindings()[1]
    with pool(directory) as ioctx, rbd.Image(ioctx, name) as image:
        image.unprotect_snap(SNAPSHOT)
        image.remove_snap(SNAPSHOT)
        image.write(b"\xff\xfe", 100)
        image.create_snap(SNAPSHOT)
        image.protect_snap(SNAPSHOT)


def rbd_env(tmp: Path) -> StoreEnv:
    from tests.store.conftest import StoreEnv

    directory = service_dir()
    conf, config = store_config(tmp, directory)
    before = image_names(directory)

    def listing() -> set[str]:
        return image_names(directory) - before

    def corrupt(location: Location) -> None:
        corrupt_image(directory, location)

    return StoreEnv("rbd", conf, config, Catalog(config.catalog_path), listing, corrupt)

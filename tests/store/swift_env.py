"""The Swift ``StoreEnv``: a real Swift started by ``scripts/services/swift.sh``.

``$IMGFMT_TEST_SWIFT_DIR`` names the running service's directory (``scripts/with-services.sh``
sets it). Without it, or when Swift does not answer, the Swift tests skip with the reason;
under ``CI=true`` they fail instead. Each env gets a container of its own, so a listing shows
only what that test wrote.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

from imgfmt.config import Config
from imgfmt.store.catalog import Catalog, Location
from imgfmt.store.config import StoreConfig

if TYPE_CHECKING:
    from tests.store.conftest import StoreEnv

ENV_VAR = "IMGFMT_TEST_SWIFT_DIR"
SERVICE_SCRIPT = Path(__file__).parents[2] / "scripts" / "services" / "swift.sh"


def service_dir() -> Path:
    """The running Swift's directory; skips (fails under CI) when there is none."""
    directory = os.environ.get(ENV_VAR)
    if not directory:
        _unavailable(f"{ENV_VAR} is not set; run the tests through `make test`")
    path = Path(str(directory))
    try:
        admin_connection(path).head_account()
    except Exception as exc:
        _unavailable(f"the Swift in {path} does not answer ({type(exc).__name__}: {exc})")
    return path


def _unavailable(reason: str) -> None:
    message = f"Swift is not available: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def admin_connection(directory: Path) -> Connection:
    """A client with the test account's credentials, for listing and tampering."""
    parser = configparser.RawConfigParser()
    parser.read(directory / "glance-swift.conf")
    ref = parser["ref1"]
    return Connection(ref["auth_address"], ref["user"], ref["key"], retries=1)


def swift_conf(tmp: Path, container: str, **options: object) -> Path:
    """An imgfmt.conf with one Swift store ``objects`` using the test service's credentials."""
    directory = service_dir()
    lines = [
        "[DEFAULT]",
        "enabled_backends = objects:swift",
        "[glance_store]",
        "default_backend = objects",
        "[objects]",
        "default_swift_reference = ref1",
        f"swift_store_config_file = {options.pop('config_file', directory / 'glance-swift.conf')}",
        f"swift_store_container = {container}",
        f"swift_store_create_container_on_put = {options.pop('create', 'true')}",
        *(f"{name} = {value}" for name, value in options.items()),
        "[database]",
        f"connection = sqlite:///{tmp / 'catalog.db'}",
    ]
    path = tmp / "imgfmt.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def swift_env(tmp: Path, **options: object) -> StoreEnv:
    """A Swift-backed store in a fresh container (``<name>_...`` ones too, for seeds)."""
    from tests.store.conftest import StoreEnv

    container = f"t{uuid.uuid4().hex[:12]}"
    conf = swift_conf(tmp, container, **options)
    config = StoreConfig.load(Config.load(conf))
    conn = admin_connection(service_dir())

    def listing() -> set[str]:
        _, containers = conn.get_account(prefix=container, full_listing=True)
        names = set()
        for entry in containers:
            _, objects = conn.get_container(entry["name"], full_listing=True)
            names.update(o["name"] for o in objects)
        return names

    def corrupt(location: Location) -> None:
        target_container, name = _object_of(conn, location)
        data = bytearray(conn.get_object(target_container, name)[1])
        data[100:102] = bytes(b ^ 0xFF for b in data[100:102])
        conn.put_object(target_container, name, bytes(data))

    return StoreEnv("swift", conf, config, Catalog(config.catalog_path), listing, corrupt)


def _object_of(conn: Connection, location: Location) -> tuple[str, str]:
    """The object holding the image's first bytes: the object itself, or its first segment."""
    container, name = location.url.removeprefix("swift+config://").split("/", 2)[1:]
    headers = conn.head_object(container, name)
    if headers.get("x-static-large-object") != "True":
        return container, name
    _, manifest = conn.get_object(container, name, query_string="multipart-manifest=get")
    first = str(json.loads(manifest)[0]["name"])
    segment_container, segment = first.lstrip("/").split("/", 1)
    return segment_container, segment


def kill_proxy(directory: Path) -> None:
    """SIGKILL the proxy server, as a crash would."""
    pid = int((directory / "run" / "proxy.pid").read_text())
    os.kill(pid, signal.SIGKILL)


def start_services(directory: Path) -> None:
    """Start whatever is not running (here: a killed proxy) and wait until Swift answers."""
    subprocess.run([str(SERVICE_SCRIPT), "start", str(directory)], check=True, timeout=120)


def missing(conn: Connection, container: str, name: str) -> bool:
    try:
        conn.head_object(container, name)
    except ClientException as exc:
        return exc.http_status == 404
    return False

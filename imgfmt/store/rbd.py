"""The Ceph RBD backend, with glance_store's rbd driver's options and layout.

References: glance_store's ``_drivers/rbd.py`` (options, layout, delete order), Ceph's
``src/pybind/rbd/rbd.pyx`` and ``src/pybind/rados/rados.pyx`` (the bindings), and Ceph's
configuration reference for ``client_mount_timeout`` and ``rados_{osd,mon}_op_timeout``.

Options (section of the backend): ``rbd_store_pool`` (``images``), ``rbd_store_user`` (unset:
librados' own default, ``client.admin``), ``rbd_store_ceph_conf`` (``/etc/ceph/ceph.conf``),
``rbd_store_chunk_size`` (MiB, 8: the image's object size, rounded down to a power of two as
Glance's ``log2`` does), ``rbd_thin_provisioning`` and ``rados_connect_timeout`` (seconds, 0 for
librados' defaults; also bounds every monitor and OSD operation, so a stopped OSD is an error).

Layout, as Glance leaves it: format-2 image ``<id>`` in the pool with the cluster's
``rbd_default_features`` (layering when that is 0), a protected snapshot ``snap``, and location
``rbd://<fsid>/<pool>/<id>/snap``; Nova and Cinder clone that snapshot.

An upload writes chunk-size pieces with up to ``WRITE_WINDOW`` asynchronous writes in flight.
The image carries the metadata key ``imgfmt_partial`` (host and pid of the uploader) until it
is complete; ``cleanup`` removes partial images whose uploader died on this host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from ..config import ConfigError
from ..log import Logger
from .base import Backend, Stored, uploader, uploader_alive
from .catalog import Location
from .config import BackendSpec
from .errors import InUse, NotFound, StoreError, StoreFull

log = Logger(__name__)

DEFAULT_POOL = "images"
DEFAULT_CONF = "/etc/ceph/ceph.conf"
DEFAULT_CHUNK_MIB = 8
SNAPSHOT = "snap"
#: Asynchronous writes in flight, one chunk each (as rbd import's rbd_concurrent_management_ops).
WRITE_WINDOW = 10
#: librbd's object orders: 4 KiB .. 32 MiB objects.
MAX_ORDER = 25
#: Growth step for an image of unknown size, doubling up to this.
MAX_GROWTH = 8 << 30
PARTIAL_KEY = "imgfmt_partial"
INSTALL_HINT = "apt-get install python3-rados python3-rbd, then run scripts/setup.sh"
_TIMEOUT_OPTIONS = ("client_mount_timeout", "rados_osd_op_timeout", "rados_mon_op_timeout")


def bindings() -> tuple[ModuleType, ModuleType]:
    """librados' and librbd's Python modules, or a ``StoreError`` saying how to get them."""
    try:
        import rados
        import rbd
    except ImportError as exc:
        raise StoreError(
            f"the Ceph Python bindings are missing ({exc}); install them: {INSTALL_HINT}"
        ) from None
    return rados, rbd


class RbdBackend(Backend):
    """Images as RBD images with a protected snapshot, in one Ceph pool."""

    type: ClassVar[str] = "rbd"

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.rados, self.rbd = bindings()
        cfg, section = spec.config, spec.section
        self.pool = cfg.get(section, "rbd_store_pool") or DEFAULT_POOL
        self.user = cfg.get(section, "rbd_store_user") or None
        self.conf_file = cfg.get(section, "rbd_store_ceph_conf") or DEFAULT_CONF
        self.order = _order(spec)
        self.chunk_size = 1 << self.order
        self.thin = bool(cfg.get_bool(section, "rbd_thin_provisioning"))
        self.timeout = cfg.get_int(section, "rados_connect_timeout", 0)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """librados and librbd failures as ``StoreError``s that name the store and action."""
        try:
            yield
        except (self.rados.Error, self.rbd.Error, WriteFailed) as exc:
            raise self._store_error(action, exc) from exc

    def _store_error(self, action: str, exc: BaseException) -> StoreError:
        code = abs(getattr(exc, "errno", 0) or 0)
        message = f"store {self.id}: {action} failed: {exc}"
        if code in (errno.ENOSPC, errno.EDQUOT):
            return StoreFull(f"{message}; pool {self.pool} is full")
        if code == errno.ETIMEDOUT and self.timeout:
            return StoreError(f"{message} (no answer within rados_connect_timeout {self.timeout}s)")
        return StoreError(message)

    @contextmanager
    def _cluster(self) -> Iterator[Any]:
        overrides = {name: str(self.timeout) for name in _TIMEOUT_OPTIONS if self.timeout > 0}
        with self._errors(f"connecting to Ceph ({self.conf_file})"):
            cluster = self.rados.Rados(conffile=self.conf_file, rados_id=self.user, conf=overrides)
            try:
                cluster.connect()
            except BaseException:
                cluster.shutdown()
                raise
        try:
            yield cluster
        finally:
            cluster.shutdown()

    @contextmanager
    def _pool(self, pool: str) -> Iterator[tuple[Any, Any]]:
        """A connected cluster and an I/O context on ``pool``."""
        with self._cluster() as cluster:
            with self._errors(f"opening pool {pool}"):
                ioctx = cluster.open_ioctx(pool)
            try:
                yield cluster, ioctx
            finally:
                ioctx.close()

    def add(self, image_id: str, chunks: Iterable[bytes], size: int | None) -> Stored:
        with self._pool(self.pool) as (cluster, ioctx):
            with self._errors(f"creating image {image_id} in pool {self.pool}"):
                fsid = cluster.get_fsid()
                self._create(cluster, ioctx, image_id, size or 0)
            try:
                with self._errors(f"writing image {image_id}"):
                    written = self._fill(ioctx, image_id, chunks, size or 0)
            except BaseException:
                self._discard(ioctx, image_id)
                raise
        url = "rbd://" + "/".join(quote(p, safe="") for p in (fsid, self.pool, image_id, SNAPSHOT))
        return Stored(Location(url, self.id), written)

    def _create(self, cluster: Any, ioctx: Any, image_id: str, size: int) -> None:
        if image_id in self.rbd.RBD().list(ioctx):
            raise StoreError(f"store {self.id}: image {image_id} already exists in {self.pool}")
        default = cluster.conf_get("rbd_default_features")
        features = self.rbd.RBD_FEATURE_LAYERING if default in (None, "", "0") else None
        self.rbd.RBD().create(
            ioctx, image_id, size, order=self.order, old_format=False, features=features
        )

    def _fill(self, ioctx: Any, image_id: str, chunks: Iterable[bytes], capacity: int) -> int:
        """Write the data, trim to it, then snapshot and protect; return the bytes written."""
        with self.rbd.Image(ioctx, image_id) as image:
            image.metadata_set(PARTIAL_KEY, f"{socket.gethostname()}:{uploader()}")
            window = _WriteWindow(image, WRITE_WINDOW, self.timeout or None)
            try:
                written = self._write(image, window, chunks, capacity)
            except BaseException:
                window.abandon()
                raise
            window.drain()
            if image.size() != written:
                image.resize(written)
            image.metadata_remove(PARTIAL_KEY)
            image.create_snap(SNAPSHOT)
            image.protect_snap(SNAPSHOT)
        return written

    def _write(
        self, image: Any, window: _WriteWindow, chunks: Iterable[bytes], capacity: int
    ) -> int:
        """Queue the pieces, growing an image of unknown size as Glance does; skip holes."""
        zeros = bytes(self.chunk_size)
        offset = 0
        for piece in _pieces(chunks, self.chunk_size):
            end = offset + len(piece)
            if end > capacity:
                capacity = end + min(max(capacity, self.chunk_size), MAX_GROWTH)
                window.drain()  # librbd's resize waits for them too, without our timeout
                image.resize(capacity)
            if not (self.thin and piece == zeros[: len(piece)]):
                window.write(piece, offset)
            offset = end
        return offset

    def _discard(self, ioctx: Any, image_id: str) -> None:
        """Remove a failed upload's image, snapshot included; a failure here is only logged."""
        try:
            with self.rbd.Image(ioctx, image_id) as image:
                _drop_snapshot(image, SNAPSHOT)
            self.rbd.RBD().remove(ioctx, image_id)
        except (self.rados.Error, self.rbd.Error) as exc:
            log.warning(
                "store %s: could not remove partial image %s/%s (%s); "
                "'imgfmt store cleanup' removes it later",
                self.id,
                self.pool,
                image_id,
                exc,
            )

    def read(self, location: Location) -> Iterator[bytes]:
        pool, name, snapshot = self._parse(location)
        with self._pool(pool) as (_, ioctx), self._errors(f"reading {location.url}"):
            try:
                image = self.rbd.Image(ioctx, name, snapshot=snapshot, read_only=True)
            except self.rbd.ImageNotFound:
                raise NotFound(f"store {self.id}: {location.url} does not exist") from None
            with image:
                size = image.size()
                for offset in range(0, size, self.chunk_size):
                    yield image.read(offset, min(self.chunk_size, size - offset))

    def delete(self, location: Location) -> None:
        """Unprotect and remove the snapshot, then the image; refuse while clones exist."""
        pool, name, snapshot = self._parse(location)
        with self._pool(pool) as (_, ioctx), self._errors(f"deleting {location.url}"):
            try:
                with self.rbd.Image(ioctx, name) as image:
                    if snapshot is not None:
                        self._refuse_clones(image, location, snapshot)
                        _drop_snapshot(image, snapshot)
                self.rbd.RBD().remove(ioctx, name)
            except self.rbd.ImageNotFound:
                raise NotFound(f"store {self.id}: {location.url} was already gone") from None
            except (self.rbd.ImageBusy, self.rbd.ImageHasSnapshots) as exc:
                raise InUse(f"store {self.id}: {location.url} is in use ({exc})") from exc

    def _refuse_clones(self, image: Any, location: Location, snapshot: str) -> None:
        if snapshot not in {s["name"] for s in image.list_snaps()}:
            return
        image.set_snap(snapshot)
        children = image.list_children()
        image.set_snap(None)
        if children:
            names = ", ".join(f"{pool}/{child}" for pool, child in children)
            raise InUse(
                f"store {self.id}: {location.url} is in use: cloned by {names}; "
                "flatten or delete the clones first; nothing was changed"
            )

    def free_space(self) -> int | None:
        with self._cluster() as cluster, self._errors("asking the cluster for free space"):
            command = json.dumps({"prefix": "df", "format": "json"})
            ret, out, status = cluster.mon_command(command, b"")
            if ret < 0:
                raise StoreError(f"store {self.id}: ceph df failed: {status}")
        pools = json.loads(out).get("pools", [])
        return next((int(p["stats"]["max_avail"]) for p in pools if p["name"] == self.pool), None)

    def cleanup(self) -> list[str]:
        removed = []
        host = socket.gethostname()
        with self._pool(self.pool) as (_, ioctx), self._errors(f"cleaning up pool {self.pool}"):
            for name in self.rbd.RBD().list(ioctx):
                with self.rbd.Image(ioctx, name, read_only=True) as image:
                    owner = dict(image.metadata_list()).get(PARTIAL_KEY)
                uploader_host, _, process = (owner or "").rpartition(":")
                if uploader_host == host and uploader_alive(process) is False:
                    self._discard(ioctx, name)
                    removed.append(f"rbd://{self.pool}/{name}")
        return removed

    def discard(self, image_id: str) -> list[str]:
        with self._pool(self.pool) as (_, ioctx), self._errors(f"removing {image_id}"):
            if image_id not in self.rbd.RBD().list(ioctx):
                return []
            self._discard(ioctx, image_id)
            if image_id in self.rbd.RBD().list(ioctx):
                raise StoreError(f"store {self.id}: could not remove {self.pool}/{image_id}")
        return [f"rbd://{self.pool}/{image_id}"]

    def _parse(self, location: Location) -> tuple[str, str, str | None]:
        """Pool, image and snapshot of ``rbd://<fsid>/<pool>/<image>/<snap>`` or ``rbd://<image>``."""
        body = location.url.removeprefix("rbd://")
        parts = [unquote(p) for p in body.split("/")]
        if location.url.startswith("rbd://") and all(parts):
            if len(parts) == 4:
                return parts[1], parts[2], parts[3]
            if len(parts) == 1:
                return self.pool, parts[0], None
        raise StoreError(f"store {self.id}: {location.url} is not an rbd:// location")


class WriteFailed(OSError):
    """An asynchronous write completed with an error (errno and message as librbd gave)."""


@dataclass
class _Pending:
    completion: Any
    data: bytes  # librbd's aio_write does not keep the buffer alive: this reference does
    offset: int
    done: threading.Event


class _WriteWindow:
    """Asynchronous writes to one image with at most ``depth`` in flight.

    With a ``timeout`` (seconds), a write not complete that long after it is waited for is a
    failure, whatever librbd would still retry underneath.
    """

    def __init__(self, image: Any, depth: int, timeout: float | None) -> None:
        self.image = image
        self.depth = depth
        self.timeout = timeout
        self.pending: deque[_Pending] = deque()

    def write(self, data: bytes, offset: int) -> None:
        if len(self.pending) >= self.depth:
            self._finish_oldest()
        done = threading.Event()
        completion = self.image.aio_write(data, offset, lambda _: done.set())
        self.pending.append(_Pending(completion, data, offset, done))

    def _finish_oldest(self) -> None:
        oldest = self.pending[0]
        where = f"writing {len(oldest.data)} bytes at {oldest.offset:#x}"
        if not oldest.done.wait(self.timeout):
            raise WriteFailed(errno.ETIMEDOUT, f"{where}: no answer for {self.timeout}s")
        oldest.completion.wait_for_complete_and_cb()
        self.pending.popleft()
        ret = oldest.completion.get_return_value()
        if ret < 0:
            raise WriteFailed(-ret, f"{where}: {os.strerror(-ret)}")

    def drain(self) -> None:
        """Wait for every pending write; on a failure, wait for the rest and raise it."""
        try:
            while self.pending:
                self._finish_oldest()
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Wait for every pending write, ignoring their results (another error is on its way)."""
        for pending in self.pending:
            pending.completion.wait_for_complete_and_cb()
        self.pending.clear()


def _drop_snapshot(image: Any, snapshot: str) -> None:
    if snapshot not in {s["name"] for s in image.list_snaps()}:
        return
    if image.is_protected_snap(snapshot):
        image.unprotect_snap(snapshot)
    image.remove_snap(snapshot)


def _pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The data re-cut into ``size``-byte pieces (the last may be shorter)."""
    parts: list[bytes] = []
    held = 0
    for chunk in chunks:
        if not parts and len(chunk) == size:
            yield chunk
            continue
        parts.append(chunk)
        held += len(chunk)
        if held >= size:
            joined = b"".join(parts)
            cut = len(joined) - len(joined) % size
            for start in range(0, cut, size):
                yield joined[start : start + size]
            parts, held = ([joined[cut:]], len(joined) - cut) if cut < len(joined) else ([], 0)
    if held:
        yield b"".join(parts)


def _order(spec: BackendSpec) -> int:
    mib = spec.config.get_int(spec.section, "rbd_store_chunk_size", DEFAULT_CHUNK_MIB)
    if not 1 <= mib <= 1 << (MAX_ORDER - 20):
        raise ConfigError(
            spec.config.path,
            spec.section,
            "rbd_store_chunk_size",
            f"{mib} MiB is outside librbd's object sizes (1..{1 << (MAX_ORDER - 20)} MiB)",
        )
    return 20 + mib.bit_length() - 1

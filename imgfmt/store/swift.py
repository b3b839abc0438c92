"""The OpenStack Swift backend, with glance_store's Swift driver's options and object layout.

References: glance_store/_drivers/swift/store.py and utils.py (option names, the
``glance-swift.conf`` reference sections, ``get_container_name``, ``swift+config`` locations);
Swift's "Large Object Support" and ``swift/common/middleware/slo.py`` (Static Large Objects).

Options (section of the backend): ``default_swift_reference`` (default ``ref1``),
``swift_store_config_file``, ``swift_store_container`` (``glance``),
``swift_store_create_container_on_put`` (false), ``swift_store_large_object_size`` (MiB, 5120),
``swift_store_large_object_chunk_size`` (MiB, 200), ``swift_store_multiple_containers_seed``
(0..32), ``swift_store_region``, ``swift_store_endpoint_type`` (``publicURL``). A reference
section holds ``auth_address``, ``user`` (``project:user``), ``key``, ``auth_version`` (1 for
tempauth-style auth, 3 for Keystone, the default) and, for Keystone, ``project_name``,
``user_domain_id``/``_name`` and ``project_domain_id``/``_name``.

An image is the object ``<id>``. Above the large-object size, or of unknown size, it is a
Static Large Object: segments ``<id>-00001``, ... in the same container, each sent as it fills
and kept in memory (one segment at most) so that a retry resends the same bytes, then the
manifest with each segment's md5, which Swift checks. Glance's own driver writes Dynamic Large
Objects; Glance, Nova and the ``swift`` client read both. A failure removes every object the
upload wrote; where Swift is unreachable by then, ``imgfmt store cleanup`` removes them later
(segments carry the uploading host and pid). Locations read ``swift+config://<ref>/<container>/
<id>`` and carry no credential.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlparse

import swiftclient.client
from keystoneauth1 import exceptions as ks_exceptions
from requests import RequestException
from swiftclient.exceptions import ClientException

from ..config import ConfigError
from ..log import Logger
from .base import Backend, Stored, uploader, uploader_alive
from .catalog import Location
from .config import BackendSpec
from .errors import NotFound, StoreError
from .hashing import BackgroundDigest

LOG = Logger(__name__)

MIB = 1 << 20
DEFAULT_CONTAINER = "glance"
DEFAULT_REFERENCE = "ref1"
DEFAULT_LARGE_OBJECT_SIZE_MIB = 5120
DEFAULT_CHUNK_SIZE_MIB = 200
#: Swift's default ``max_manifest_segments`` for one SLO manifest.
SLO_MAX_SEGMENTS = 1000
#: Attempts after the first for each request, with backoff doubling from 1 s up to 16 s.
RETRIES = 5
STARTING_BACKOFF = 1.0
MAX_BACKOFF = 16.0
#: A failed upload's clean-up tries each object this many more times.
ROLLBACK_RETRIES = 1
#: Bytes handed to the HTTP layer at a time, and read back at a time.
IO_CHUNK = 1 * MIB
#: Object metadata naming the uploading process, for ``cleanup``.
UPLOAD_META = "X-Object-Meta-Imgfmt-Upload"
_SEGMENT = re.compile(r"^(?P<id>.+)-(?P<index>\d{5})$")
#: What a request failing on the network raises (swiftclient, requests, keystoneauth).
_NETWORK_ERRORS = (OSError, RequestException, ks_exceptions.ConnectionError)

# swiftclient logs up to 16 characters of a key or token at INFO; reveal none.
swiftclient.client.logger_settings["reveal_sensitive_prefix"] = 0


@dataclass(frozen=True)
class SwiftReference:
    """One account section of ``glance-swift.conf``; ``key`` never appears in a repr."""

    name: str
    config_file: str
    auth_address: str
    user: str
    key: str = field(repr=False)
    auth_version: str = "3"
    project_name: str | None = None
    domains: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: BackendSpec, name: str) -> SwiftReference:
        """The reference ``name`` from the backend's ``swift_store_config_file``."""
        path = spec.option("swift_store_config_file")
        if not path:
            raise ConfigError(
                spec.config.path,
                spec.section,
                "swift_store_config_file",
                "is required: the file with the Swift credentials (glance-swift.conf)",
            )
        parser = configparser.RawConfigParser()
        if not parser.read(path):
            raise ConfigError(
                spec.config.path, spec.section, "swift_store_config_file", f"cannot read {path}"
            )
        if not parser.has_section(name):
            raise ConfigError(path, name, "auth_address", "no such reference section")
        return cls._from_section(path, name, dict(parser.items(name)))

    @classmethod
    def _from_section(cls, path: str, name: str, values: dict[str, str]) -> SwiftReference:
        values = {k: _unquote(v) for k, v in values.items()}
        for required in ("auth_address", "user", "key"):
            if not values.get(required):
                raise ConfigError(path, name, required, "is required")
        version = values.get("auth_version", "3").removeprefix("v").split(".")[0]
        if version not in ("1", "3"):
            raise ConfigError(path, name, "auth_version", f"must be 1 or 3 (got {version!r})")
        domains = {
            k: values[k]
            for k in (
                "user_domain_id",
                "user_domain_name",
                "project_domain_id",
                "project_domain_name",
            )
            if values.get(k)
        }
        return cls(
            name,
            path,
            values["auth_address"],
            values["user"],
            values["key"],
            version,
            values.get("project_name"),
            domains,
        )

    def connect(self, spec: BackendSpec, retries: int) -> swiftclient.client.Connection:
        """A client; nothing is sent until its first request."""
        common: dict[str, Any] = {
            "retries": retries,
            "starting_backoff": STARTING_BACKOFF,
            "max_backoff": MAX_BACKOFF,
        }
        if self.auth_version == "1":
            return swiftclient.client.Connection(self.auth_address, self.user, self.key, **common)
        options = {"endpoint_type": spec.option("swift_store_endpoint_type") or "publicURL"}
        region = spec.option("swift_store_region")
        if region:
            options["region_name"] = region
        return swiftclient.client.Connection(
            session=self._keystone_session(), os_options=options, **common
        )

    def _keystone_session(self) -> Any:
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        project, sep, user = self.user.partition(":")
        if not sep:
            project, user = self.project_name or "", self.user
        user_domain_id, user_domain_name = self._domain("user")
        project_domain_id, project_domain_name = self._domain("project")
        auth = v3.Password(
            auth_url=self.auth_address,
            username=user,
            password=self.key,
            project_name=self.project_name or project,
            user_domain_id=user_domain_id,
            user_domain_name=user_domain_name,
            project_domain_id=project_domain_id,
            project_domain_name=project_domain_name,
        )
        return session.Session(auth=auth)

    def _domain(self, kind: str) -> tuple[str | None, str | None]:
        """(id, name) of the user's or project's domain; as in Glance, id "default" if neither."""
        domain_id = self.domains.get(f"{kind}_domain_id")
        domain_name = self.domains.get(f"{kind}_domain_name")
        return domain_id or (None if domain_name else "default"), domain_name


class SwiftBackend(Backend):
    """Images as objects (large ones as Static Large Objects) in a Swift account."""

    type: ClassVar[str] = "swift"

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        cfg, section = spec.config, spec.section
        self.reference_name = spec.option("default_swift_reference") or DEFAULT_REFERENCE
        self.container = spec.option("swift_store_container") or DEFAULT_CONTAINER
        self.create_container = bool(cfg.get_bool(section, "swift_store_create_container_on_put"))
        self.large_object_size = MIB * cfg.get_int(
            section, "swift_store_large_object_size", DEFAULT_LARGE_OBJECT_SIZE_MIB
        )
        self.chunk_size = MIB * cfg.get_int(
            section, "swift_store_large_object_chunk_size", DEFAULT_CHUNK_SIZE_MIB
        )
        self.seed = cfg.get_int(section, "swift_store_multiple_containers_seed", 0)
        if not 0 <= self.seed <= 32:
            raise ConfigError(
                cfg.path,
                section,
                "swift_store_multiple_containers_seed",
                f"must be 0..32 (got {self.seed})",
            )
        if self.chunk_size <= 0 or self.large_object_size <= 0:
            raise ConfigError(
                cfg.path,
                section,
                "swift_store_large_object_chunk_size",
                "sizes must be at least 1 MiB",
            )
        self._references: dict[str, SwiftReference] = {}
        self._connections: dict[str, swiftclient.client.Connection] = {}

    def container_for(self, image_id: str) -> str:
        """glance_store's ``get_container_name``: the seed counts characters, not dashes."""
        if self.seed == 0:
            return self.container
        image_id = image_id.lower()
        length = self.seed + image_id[: self.seed].count("-")
        return f"{self.container}_{image_id[:length]}"

    def add(self, image_id: str, chunks: Iterable[bytes], size: int | None) -> Stored:
        container = self.container_for(image_id)
        conn = self._connection(self.reference_name)
        with self._failures(f"storing {container}/{image_id}"):
            self._ensure_container(conn, container)
        if size is not None and size > self.chunk_size * SLO_MAX_SEGMENTS:
            raise StoreError(
                f"store {self.id}: {size} bytes need more than {SLO_MAX_SEGMENTS} segments of "
                f"{self.chunk_size // MIB} MiB; raise swift_store_large_object_chunk_size"
            )
        upload = _Upload(self, conn, container, image_id)
        try:
            with self._failures(f"storing {container}/{image_id}"):
                pieces = _Pieces(chunks)
                segmented = size is None or size > self.large_object_size
                written = upload.large(pieces) if segmented else upload.plain(pieces)
        except BaseException:
            upload.rollback()
            raise
        url = f"swift+config://{self.reference_name}/{container}/{image_id}"
        return Stored(Location(url, self.id, {}), written)

    def read(self, location: Location) -> Iterator[bytes]:
        ref, container, name = self._parse(location)
        conn = self._connection(ref)
        with self._failures(f"reading {container}/{name}", missing=True):
            _, body = conn.get_object(container, name, resp_chunk_size=IO_CHUNK)
        return self._stream(body, f"{container}/{name}")

    def _stream(self, body: Iterable[bytes], what: str) -> Iterator[bytes]:
        with self._failures(f"reading {what}"):
            yield from body

    def delete(self, location: Location) -> None:
        ref, container, name = self._parse(location)
        conn = self._connection(ref)
        with self._failures(f"deleting {container}/{name}", missing=True):
            headers = conn.head_object(container, name)
            is_slo = headers.get("x-static-large-object", "").lower() == "true"
            query = "multipart-manifest=delete" if is_slo else None
            conn.delete_object(container, name, query_string=query)

    def free_space(self) -> int | None:
        """What an account quota (``X-Account-Meta-Quota-Bytes``) leaves, else ``None``."""
        with self._failures("reading the account's quota"):
            headers = self._connection(self.reference_name).head_account()
        quota = headers.get("x-account-meta-quota-bytes")
        if quota is None or not quota.isdigit():
            return None
        return max(int(quota) - int(headers.get("x-account-bytes-used", 0)), 0)

    def cleanup(self) -> list[str]:
        """Segments without a manifest whose uploading process on this host has died."""
        conn = self._connection(self.reference_name)
        removed = []
        with self._failures("cleaning up after killed uploads"):
            for container in self._containers(conn):
                for name in _orphans(conn, container):
                    conn.delete_object(container, name)
                    removed.append(f"swift:{container}/{name}")
        return removed

    def discard(self, image_id: str) -> list[str]:
        """The manifest (or whole object) named ``image_id`` first, then its segments."""
        conn = self._connection(self.reference_name)
        container = self.container_for(image_id)
        removed = []
        with self._failures(f"removing what a dead upload left of {image_id}"):
            try:
                _, listing = conn.get_container(container, prefix=image_id, full_listing=True)
            except ClientException as exc:
                if exc.http_status == 404:
                    return []
                raise
            names = [o["name"] for o in listing]
            segments = [n for n in names if (m := _SEGMENT.match(n)) and m["id"] == image_id]
            for name in [n for n in names if n == image_id] + segments:
                conn.delete_object(container, name)
                removed.append(f"swift:{container}/{name}")
        return removed

    def _containers(self, conn: swiftclient.client.Connection) -> list[str]:
        if self.seed == 0:
            return [self.container]
        _, listing = conn.get_account(prefix=f"{self.container}_", full_listing=True)
        return [c["name"] for c in listing]

    def _ensure_container(self, conn: swiftclient.client.Connection, container: str) -> None:
        try:
            conn.head_container(container)
        except ClientException as exc:
            if exc.http_status != 404:
                raise
            if not self.create_container:
                raise StoreError(
                    f"store {self.id}: container {container} does not exist in Swift; create "
                    "it, or set swift_store_create_container_on_put = true"
                ) from None
            LOG.info("store %s: creating container %s", self.id, container)
            conn.put_container(container)

    def reference(self, name: str) -> SwiftReference:
        if name not in self._references:
            self._references[name] = SwiftReference.load(self.spec, name)
        return self._references[name]

    def _connection(self, name: str) -> swiftclient.client.Connection:
        if name not in self._connections:
            self._connections[name] = self.reference(name).connect(self.spec, RETRIES)
        return self._connections[name]

    def _parse(self, location: Location) -> tuple[str, str, str]:
        parsed = urlparse(location.url)
        container, _, name = parsed.path.lstrip("/").partition("/")
        if parsed.scheme != "swift+config" or not parsed.netloc or not container or not name:
            raise StoreError(
                f"store {self.id}: {location.url} is not a swift+config://REF/CONTAINER/ID location"
            )
        return parsed.netloc, container, name

    def _failures(self, action: str, missing: bool = False) -> _Failures:
        return _Failures(self, action, missing)


class _Failures:
    """Turns what swiftclient, requests and keystoneauth raise into errors naming the store."""

    def __init__(self, backend: SwiftBackend, action: str, missing: bool) -> None:
        self.backend = backend
        self.action = action
        self.missing = missing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, StoreError):
            return
        store = f"store {self.backend.id}"
        ref = self.backend.reference(self.backend.reference_name)
        status = getattr(exc, "http_status", None)
        if isinstance(exc, ClientException | ks_exceptions.ClientException) and status in (
            401,
            403,
        ):
            raise StoreError(
                f"{store}: Swift at {ref.auth_address} refused the credentials of reference "
                f"{ref.name!r} (user {ref.user}) in {ref.config_file} (HTTP {status}) while "
                f"{self.action}"
            ) from None
        if isinstance(exc, ClientException) and status == 404 and self.missing:
            raise NotFound(f"{store}: {self.action}: no such object in Swift") from None
        if isinstance(exc, ClientException):
            raise StoreError(f"{store}: Swift answered HTTP {status} while {self.action}") from None
        if isinstance(exc, _NETWORK_ERRORS):
            raise StoreError(
                f"{store}: Swift at {ref.auth_address} is unreachable ({_reason(exc)}) while "
                f"{self.action}; check that it runs"
            ) from None


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason (e.g. "Connection refused"), never a URL or header."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        for arg in getattr(seen, "args", ()):
            if isinstance(arg, BaseException):
                inner = _reason(arg)
                if inner != type(arg).__name__:
                    return inner
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    for known in ("connection refused", "connection reset", "connection aborted", "timed out"):
        if known in text:
            return known
    return type(exc).__name__


class _Pieces:
    """The image's chunks, cut where a segment ends."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def take(self, limit: int) -> memoryview:
        """Up to ``limit`` bytes; empty at the end of the image."""
        if self.at_end():
            return self._pending
        piece, self._pending = self._pending[:limit], self._pending[limit:]
        return piece

    def at_end(self) -> bool:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return True
            self._pending = memoryview(chunk)
        return False


class _Body:
    """What one PUT sends: the next ``limit`` bytes of the image, pulled as the PUT reads them.

    The bytes are kept (up to ``keep``) so that swiftclient's retry, which calls ``reset``,
    resends the same bytes. There is no ``seek``/``tell``: swiftclient would use them instead.
    """

    def __init__(self, pieces: _Pieces, limit: int, keep: int) -> None:
        self.pieces = pieces
        self.limit = limit
        self.keep = keep
        self.kept: list[memoryview] = []
        self.replay = 0
        self.size = 0
        self.md5 = BackgroundDigest(hashlib.md5(usedforsecurity=False))
        self.resendable = True

    def read(self, _size: int = -1) -> memoryview:
        if self.replay < len(self.kept):
            self.replay += 1
            return self.kept[self.replay - 1]
        if self.size == self.limit:
            return memoryview(b"")
        piece = self.pieces.take(min(self.limit - self.size, 4 * IO_CHUNK))
        self.size += len(piece)
        self.md5.update(piece)
        if self.size <= self.keep:
            self.kept.append(piece)
            self.replay += 1
        else:
            self.kept, self.resendable = [], False
        return piece

    def reset(self, *_: object, **__: object) -> None:
        if not self.resendable:
            raise StoreError(
                f"the PUT failed after {self.size} bytes, more than the {self.keep} kept to "
                "resend; lower swift_store_large_object_size to upload in segments"
            )
        self.replay = 0


class _Upload:
    """One ``add``: what it wrote, so that a failure can remove it all."""

    def __init__(
        self, backend: SwiftBackend, conn: swiftclient.client.Connection, container: str, id: str
    ) -> None:
        self.backend = backend
        self.conn = conn
        self.container = container
        self.image_id = id
        self.written: list[str] = []
        self.headers = {UPLOAD_META: f"{socket.gethostname()} {uploader()}"}

    def plain(self, pieces: _Pieces) -> int:
        body = _Body(pieces, self.backend.large_object_size, self.backend.chunk_size)
        self._put(self.image_id, body)
        if not pieces.at_end():
            raise StoreError(
                f"store {self.backend.id}: the image is larger than its announced size"
            )
        return body.size

    def large(self, pieces: _Pieces) -> int:
        segments: list[dict[str, Any]] = []
        while not pieces.at_end():
            if len(segments) == SLO_MAX_SEGMENTS:
                raise StoreError(
                    f"store {self.backend.id}: the image needs more than {SLO_MAX_SEGMENTS} "
                    "segments; raise swift_store_large_object_chunk_size"
                )
            name = f"{self.image_id}-{len(segments) + 1:05d}"
            size = self.backend.chunk_size
            body = _Body(pieces, size, size)
            etag = self._put(name, body)
            path = f"{self.container}/{name}"
            segments.append({"path": path, "etag": etag, "size_bytes": body.size})
        if not segments:
            return self.plain(pieces)
        self.written.append(self.image_id)
        self.conn.put_object(
            self.container,
            self.image_id,
            json.dumps(segments),
            query_string="multipart-manifest=put",
            headers={"Content-Type": "application/octet-stream"},
        )
        return sum(int(s["size_bytes"]) for s in segments)

    def _put(self, name: str, body: _Body) -> str:
        """PUT ``body`` as ``name``; its md5, which Swift's etag must equal."""
        self.written.append(name)
        try:
            etag = self.conn.put_object(
                self.container, name, body, chunk_size=IO_CHUNK, headers=self.headers
            )
        finally:
            body.md5.close()  # its thread ends however the PUT went
        sent = body.md5.hexdigest()
        if etag != sent:
            raise StoreError(
                f"store {self.backend.id}: Swift stored {self.container}/{name} with md5 {etag}, "
                f"but {sent} was sent: the data was damaged in transit"
            )
        LOG.debug("store %s: put %s/%s, %d bytes", self.backend.id, self.container, name, body.size)
        return sent

    def rollback(self) -> None:
        """Remove what was written, manifest first; say what could not be removed."""
        ref = self.backend.reference(self.backend.reference_name)
        conn = ref.connect(self.backend.spec, ROLLBACK_RETRIES)
        names = list(reversed(self.written))
        for index, name in enumerate(names):
            try:
                conn.delete_object(self.container, name)
            except ClientException as exc:
                if exc.http_status != 404:
                    LOG.warning(
                        "store %s: cannot remove %s/%s of a failed upload: HTTP %s",
                        self.backend.id,
                        self.container,
                        name,
                        exc.http_status,
                    )
            except (*_NETWORK_ERRORS, ks_exceptions.ClientException):
                LOG.warning(
                    "store %s: Swift is unreachable; %d object(s) of a failed upload remain in "
                    "%s; `imgfmt store cleanup` removes them once it answers",
                    self.backend.id,
                    len(names) - index,
                    self.container,
                )
                return


def _orphans(conn: swiftclient.client.Connection, container: str) -> list[str]:
    """Segments of this host's dead uploads: no manifest, and the uploading pid is gone."""
    _, listing = conn.get_container(container, full_listing=True)
    names = {o["name"] for o in listing}
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        match = _SEGMENT.match(name)
        if match and match["id"] not in names:
            groups.setdefault(match["id"], []).append(name)
    orphans = []
    for segments in groups.values():
        owner = conn.head_object(container, segments[0]).get(UPLOAD_META.lower(), "")
        host, _, process = owner.partition(" ")
        if host == socket.gethostname() and uploader_alive(process) is False:
            orphans.extend(segments)
    return orphans


def _unquote(value: str) -> str:
    """glance_store's config parser accepts values in matching single or double quotes."""
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[1:-1]
    return value

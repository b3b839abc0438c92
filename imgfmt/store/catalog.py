"""The catalog: image records in SQLite with Glance's fields and status machine.

Glance's statuses (glance/domain/__init__.py): queued -> saving -> active; queued/saving ->
killed on a failed upload; active <-> deactivated; any -> deleted. The catalog refuses any
other change. SQLite runs in WAL mode with a busy timeout so that concurrent ``image create``
runs each commit without "database is locked".
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import InvalidTransition, NotFound, StoreError

BUSY_TIMEOUT_MS = 30_000
#: Pause between attempts to open a catalog another process is creating.
OPEN_RETRY_S = 0.05

#: Allowed status changes (from -> to), after Glance's image state machine.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"saving", "active", "killed", "deleted", "uploading", "importing"}),
    "uploading": frozenset({"saving", "queued", "killed", "deleted", "importing"}),
    "importing": frozenset({"saving", "active", "killed", "deleted", "queued"}),
    "saving": frozenset({"active", "killed", "deleted", "queued"}),
    "active": frozenset({"deactivated", "deleted", "pending_delete"}),
    "deactivated": frozenset({"active", "deleted"}),
    "killed": frozenset({"deleted"}),
    "pending_delete": frozenset({"deleted"}),
    "deleted": frozenset(),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL,
    disk_format TEXT,
    container_format TEXT,
    size INTEGER,
    virtual_size INTEGER,
    checksum TEXT,
    os_hash_algo TEXT,
    os_hash_value TEXT,
    locations TEXT NOT NULL DEFAULT '[]',
    properties TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_name ON images(name);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
"""


@dataclass(frozen=True)
class Location:
    """Where an image's bytes are: a URI, the backend id, and backend metadata."""

    url: str
    store: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "metadata": {**self.metadata, "store": self.store}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Location:
        metadata = dict(data.get("metadata", {}))
        return cls(str(data["url"]), str(metadata.pop("store", "")), metadata)


@dataclass(frozen=True)
class ImageRecord:
    """One image, as Glance's API would show it."""

    id: str
    name: str | None
    status: str
    created_at: str
    updated_at: str
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    locations: tuple[Location, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def stores(self) -> str:
        return ",".join(loc.store for loc in self.locations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
            "size": self.size,
            "virtual_size": self.virtual_size,
            "checksum": self.checksum,
            "os_hash_algo": self.os_hash_algo,
            "os_hash_value": self.os_hash_value,
            "stores": self.stores,
            "locations": [loc.to_dict() for loc in self.locations],
            "properties": dict(self.properties),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Catalog:
    """Image records in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"catalog {self.path}: cannot open: {exc}") from exc
        self._db.row_factory = sqlite3.Row

    def _open(self) -> sqlite3.Connection:
        """Connect, switch to WAL and create the schema, retrying while another opener holds it.

        SQLite does not run its busy handler for the journal-mode switch, so processes opening a
        new catalog together see "database is locked" at once; they retry within the timeout.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                db.executescript(_SCHEMA)
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(OPEN_RETRY_S)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged catalog is a ``StoreError`` naming it, not a bare sqlite3 error."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"catalog {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"catalog {self.path}: {exc}") from exc

    def create(
        self,
        name: str | None,
        disk_format: str | None,
        container_format: str | None,
        properties: Mapping[str, str] | None = None,
        image_id: str | None = None,
    ) -> ImageRecord:
        """A new record in status ``queued``."""
        now = _now()
        record = ImageRecord(
            id=image_id or str(uuid.uuid4()),
            name=name,
            status="queued",
            created_at=now,
            updated_at=now,
            disk_format=disk_format,
            container_format=container_format,
            properties=dict(properties or {}),
        )
        with self._write() as db:
            db.execute(
                "INSERT INTO images (id, name, status, disk_format, container_format, "
                "properties, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    name,
                    "queued",
                    disk_format,
                    container_format,
                    json.dumps(record.properties),
                    now,
                    now,
                ),
            )
        return record

    def update(self, image_id: str, status: str | None = None, **fields: Any) -> ImageRecord:
        """Change fields (and maybe the status, checked against ``TRANSITIONS``)."""
        with self._write() as db:
            current = self._get(db, image_id)
            if status is not None and status != current.status:
                if status not in TRANSITIONS[current.status]:
                    raise InvalidTransition(
                        f"image {image_id}: cannot go from {current.status} to {status}"
                    )
                fields["status"] = status
            updated = replace(current, updated_at=_now(), **fields)
            db.execute(
                "UPDATE images SET name=?, status=?, disk_format=?, container_format=?, "
                "size=?, virtual_size=?, checksum=?, os_hash_algo=?, os_hash_value=?, "
                "locations=?, properties=?, updated_at=? WHERE id=?",
                (
                    updated.name,
                    updated.status,
                    updated.disk_format,
                    updated.container_format,
                    updated.size,
                    updated.virtual_size,
                    updated.checksum,
                    updated.os_hash_algo,
                    updated.os_hash_value,
                    json.dumps([loc.to_dict() for loc in updated.locations]),
                    json.dumps(dict(updated.properties)),
                    updated.updated_at,
                    image_id,
                ),
            )
        return updated

    def get(self, image_id: str) -> ImageRecord:
        with self._reading():
            return self._get(self._db, image_id)

    def find(self, ref: str) -> ImageRecord:
        """An image by id, or by name when exactly one live image has it."""
        try:
            return self.get(ref)
        except NotFound:
            pass
        with self._reading():
            rows = self._db.execute(
                "SELECT * FROM images WHERE name = ? AND status != 'deleted'", (ref,)
            ).fetchall()
        if not rows:
            raise NotFound(f"no image with id or name {ref!r}; see 'imgfmt image list'")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows)
            raise NotFound(f"more than one image is named {ref!r} ({ids}); use the id")
        return _record(rows[0])

    def all(self, include_deleted: bool = False) -> list[ImageRecord]:
        query = "SELECT * FROM images"
        if not include_deleted:
            query += " WHERE status != 'deleted'"
        with self._reading():
            return [_record(r) for r in self._db.execute(query + " ORDER BY created_at, id")]

    def in_status(self, *statuses: str) -> list[ImageRecord]:
        marks = ",".join("?" * len(statuses))
        with self._reading():
            rows = self._db.execute(f"SELECT * FROM images WHERE status IN ({marks})", statuses)
            return [_record(r) for r in rows]

    def _get(self, db: sqlite3.Connection, image_id: str) -> ImageRecord:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        return _record(row)


def _record(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disk_format=row["disk_format"],
        container_format=row["container_format"],
        size=row["size"],
        virtual_size=row["virtual_size"],
        checksum=row["checksum"],
        os_hash_algo=row["os_hash_algo"],
        os_hash_value=row["os_hash_value"],
        locations=tuple(Location.from_dict(d) for d in json.loads(row["locations"])),
        properties=json.loads(row["properties"]),
    )

"""The other image operations: save (verified download), delete, store listing, cleanup."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..signals import sigterm_raises
from .base import uploader_alive
from .catalog import Catalog, ImageRecord
from .config import StoreConfig
from .errors import NotFound, StoreError
from .hashing import ParallelHasher
from .upload import KILL_REASON, UPLOAD_PID


@dataclass(frozen=True)
class StoreInfo:
    """One backend as ``imgfmt store list`` shows it."""

    id: str
    type: str
    description: str
    weight: int
    free_space: int | None
    default: bool


@dataclass(frozen=True)
class CleanupResult:
    removed_data: tuple[str, ...]
    killed_records: tuple[str, ...]


def save_image(
    record: ImageRecord,
    config: StoreConfig,
    destination: str,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the image's bytes to ``destination`` atomically, verifying both hashes."""
    if record.status != "active" or not record.locations:
        raise StoreError(f"image {record.id} is {record.status}; only active images have data")
    location = record.locations[0]
    backend = config.spec(location.store).backend()
    target = Path(destination)
    if target.is_dir():
        raise StoreError(f"{destination}: is a directory; name the output file")
    try:
        fd, partial = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".imgfmt-partial", dir=target.parent
        )
    except OSError as exc:
        raise StoreError(f"{destination}: cannot write in {target.parent}: {exc.strerror}") from exc
    hasher = ParallelHasher(record.os_hash_algo or config.hashing_algorithm)
    try:
        with sigterm_raises():
            written = _copy_out(backend.read(location), fd, hasher, progress)
            md5, os_hash = hasher.finish()
            _verify(record, md5, os_hash, written)
            os.rename(partial, target)
    except BaseException as exc:
        hasher.close()
        os.unlink(partial)
        if isinstance(exc, OSError):
            raise StoreError(
                f"{destination}: saving failed: {exc.strerror or exc}; nothing was written"
            ) from exc
        raise
    finally:
        os.close(fd)
    return written


def _copy_out(
    chunks: Iterable[bytes], fd: int, hasher: ParallelHasher, progress: Callable[[int], None] | None
) -> int:
    written = 0
    for chunk in chunks:
        hasher.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        written += len(chunk)
        if progress:
            progress(written)
    return written


def _verify(record: ImageRecord, md5: str, os_hash: str, size: int) -> None:
    problems = []
    if record.size is not None and size != record.size:
        problems.append(f"size {size} != recorded {record.size}")
    if record.checksum and md5 != record.checksum:
        problems.append(f"md5 {md5} != recorded checksum {record.checksum}")
    if record.os_hash_value and os_hash != record.os_hash_value:
        problems.append(f"{record.os_hash_algo} differs from the recorded os_hash_value")
    if problems:
        raise StoreError(
            f"image {record.id}: stored data is corrupted ({'; '.join(problems)}); "
            "nothing was written; re-upload the image"
        )


def delete_image(record: ImageRecord, config: StoreConfig, catalog: Catalog) -> list[str]:
    """Remove the data and mark the record deleted; return warnings (e.g. data was missing)."""
    warnings = []
    for location in record.locations:
        try:
            config.spec(location.store).backend().delete(location)
        except NotFound as exc:
            warnings.append(str(exc))
    catalog.update(record.id, status="deleted", locations=())
    return warnings


def list_stores(config: StoreConfig) -> list[StoreInfo]:
    infos = []
    for spec in config.backends.values():
        try:
            free = spec.backend().free_space()
        except StoreError:
            free = None
        infos.append(
            StoreInfo(
                spec.id, spec.type, spec.description, spec.weight, free, spec.id == config.default
            )
        )
    return infos


def cleanup(config: StoreConfig, catalog: Catalog) -> CleanupResult:
    """Resolve what uploads killed with SIGKILL left: partial data and stuck records."""
    backends = [spec.backend() for spec in config.backends.values()]
    removed: list[str] = []
    for backend in backends:
        removed.extend(backend.cleanup())
    killed = []
    for record in catalog.in_status("queued", "saving"):
        owner = record.properties.get(UPLOAD_PID)
        if owner is not None and uploader_alive(owner) is False:
            for backend in backends:
                removed.extend(backend.discard(record.id))
            properties = {k: v for k, v in record.properties.items() if k != UPLOAD_PID}
            properties[KILL_REASON] = f"upload process {owner.partition('.')[0]} died"
            catalog.update(record.id, status="killed", properties=properties)
            killed.append(record.id)
    return CleanupResult(tuple(removed), tuple(killed))

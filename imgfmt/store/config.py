"""The store's configuration, read the way Glance reads glance-api.conf.

Multi-store form (glance_store's multi-backend support)::

    [DEFAULT]
    enabled_backends = fast:file, cheap:file, objects:swift
    [glance_store]
    default_backend = fast
    [fast]
    store_description = NVMe
    weight = 100
    filesystem_store_datadir = /srv/images

Single-store form: ``[glance_store] default_store = file`` with the driver's options in
``[glance_store]``. No store options at all: the embedded default, one file store and the
catalog under the user's data directory (``$XDG_DATA_HOME/imgfmt``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, ConfigError

if TYPE_CHECKING:
    from .base import Backend

#: Backend type -> "module:class" under imgfmt.store.
BACKEND_TYPES: Mapping[str, str] = {
    "file": "file:FileBackend",
    "swift": "swift:SwiftBackend",
    "rbd": "rbd:RbdBackend",
}
EMBEDDED_BACKEND = "file"
DEFAULT_HASHING = "sha512"


def data_dir() -> Path:
    """imgfmt's own data directory: ``$IMGFMT_DATA_DIR``, else ``$XDG_DATA_HOME/imgfmt``."""
    explicit = os.environ.get("IMGFMT_DATA_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(xdg) / "imgfmt"


@dataclass(frozen=True)
class BackendSpec:
    """One configured backend: its id, driver type, and where its options live."""

    id: str
    type: str
    section: str
    description: str
    weight: int
    config: Config
    embedded: bool = False

    def option(self, name: str) -> str | None:
        return self.config.get(self.section, name)

    def backend(self) -> Backend:
        """An instance of the driver, configured from this section."""
        target = BACKEND_TYPES.get(self.type)
        if target is None:
            raise ConfigError(
                self.config.path,
                "DEFAULT",
                "enabled_backends",
                f"unknown backend type {self.type!r} for {self.id!r} "
                f"(known: {', '.join(BACKEND_TYPES)})",
            )
        module_name, class_name = target.split(":")
        module = importlib.import_module(f"imgfmt.store.{module_name}")
        backend: Backend = getattr(module, class_name)(self)
        return backend


@dataclass(frozen=True)
class StoreConfig:
    """Every backend, the default one, and where the catalog and scratch space are."""

    config: Config
    backends: Mapping[str, BackendSpec]
    default: str
    catalog_path: Path
    hashing_algorithm: str
    work_dir: Path

    @classmethod
    def load(cls, config: Config) -> StoreConfig:
        backends, default = _backends(config)
        return cls(
            config=config,
            backends=backends,
            default=default,
            catalog_path=_catalog_path(config),
            hashing_algorithm=config.get("DEFAULT", "hashing_algorithm") or DEFAULT_HASHING,
            work_dir=Path(config.get("task", "work_dir") or data_dir() / "work"),
        )

    def spec(self, store_id: str | None) -> BackendSpec:
        """The backend named ``store_id``, or the default one."""
        name = store_id or self.default
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(self.backends)
            raise ConfigError(
                self.config.path,
                "DEFAULT",
                "enabled_backends",
                f"no store {name!r} is configured (stores: {known})",
            ) from None


def _backends(config: Config) -> tuple[dict[str, BackendSpec], str]:
    enabled = config.get_list("DEFAULT", "enabled_backends")
    if enabled:
        return _multi_store(config, enabled)
    default_store = config.get("glance_store", "default_store")
    if default_store or config.has_section("glance_store"):
        store_type = default_store or "file"
        spec = BackendSpec(store_type, store_type, "glance_store", "", 0, config)
        return {store_type: spec}, store_type
    spec = BackendSpec(
        EMBEDDED_BACKEND, "file", "glance_store", "embedded default", 0, config, embedded=True
    )
    return {EMBEDDED_BACKEND: spec}, EMBEDDED_BACKEND


def _multi_store(config: Config, enabled: list[str]) -> tuple[dict[str, BackendSpec], str]:
    backends: dict[str, BackendSpec] = {}
    for item in enabled:
        store_id, sep, store_type = item.partition(":")
        store_id, store_type = store_id.strip(), store_type.strip()
        if not sep or not store_id or not store_type:
            raise ConfigError(
                config.path, "DEFAULT", "enabled_backends", f"{item!r} is not of the form id:type"
            )
        if store_id in backends:
            raise ConfigError(
                config.path, "DEFAULT", "enabled_backends", f"store id {store_id!r} appears twice"
            )
        backends[store_id] = BackendSpec(
            id=store_id,
            type=store_type,
            section=store_id,
            description=config.get(store_id, "store_description") or "",
            weight=config.get_int(store_id, "weight", 0),
            config=config,
        )
    default = config.get("glance_store", "default_backend")
    if default is None and len(backends) == 1:
        default = next(iter(backends))
    if default is None or default not in backends:
        raise ConfigError(
            config.path,
            "glance_store",
            "default_backend",
            f"must name one of {', '.join(backends)} (got {default!r})",
        )
    return backends, default


def _catalog_path(config: Config) -> Path:
    connection = config.get("database", "connection")
    if not connection:
        return data_dir() / "catalog.db"
    prefix = "sqlite:///"
    if not connection.startswith(prefix):
        raise ConfigError(
            config.path, "database", "connection", "only sqlite:///PATH catalogs are supported"
        )
    return Path(connection[len(prefix) :])

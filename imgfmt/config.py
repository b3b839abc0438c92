"""Finding and reading imgfmt's configuration: Glance's INI dialect.

A glance-api.conf works as it is. The file is found, in order, from an explicit path
(``--config-file``), the ``IMGFMT_CONFIG`` environment variable, then
``$XDG_CONFIG_HOME/imgfmt/imgfmt.conf`` and ``/etc/imgfmt/imgfmt.conf``. No file at all is
fine: every option has a default.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from .errors import UsageError

if TYPE_CHECKING:
    import configparser

ENV_VAR = "IMGFMT_CONFIG"


class ConfigError(UsageError):
    """A configuration value is wrong; the message names file, section and option."""

    def __init__(self, path: str, section: str, option: str, problem: str) -> None:
        self.path = path
        self.section = section
        self.option = option
        super().__init__(f"{path}: [{section}] {option}: {problem}")


class _MultiValueDict(dict[str, object]):
    """Option storage that keeps every value of a repeated option (oslo.config's MultiStrOpt).

    While parsing, configparser stores each value as a list of lines; a repeated option's
    lines are appended instead of replacing the earlier ones, so ``get_multi`` sees them all.
    """

    def __setitem__(self, key: str, value: object) -> None:
        old = self.get(key)
        if isinstance(value, list) and isinstance(old, list):
            old.extend(value)
        else:
            super().__setitem__(key, value)


def config_candidates() -> list[str]:
    """The places searched for a configuration file when none is named."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [os.path.join(xdg, "imgfmt", "imgfmt.conf"), "/etc/imgfmt/imgfmt.conf"]


class Config(NamedTuple):
    """A parsed configuration file, or the defaults (no parser) when there is none."""

    path: str
    parser: configparser.RawConfigParser | None

    @classmethod
    def load(cls, explicit: str | os.PathLike[str] | None = None) -> Config:
        """Load the configuration from the first place that has one."""
        named = explicit or os.environ.get(ENV_VAR)
        if named:
            path = os.fspath(named)
            if not os.path.isfile(path):
                source = "--config-file" if explicit else ENV_VAR
                raise UsageError(f"{path}: configuration file (from {source}) does not exist")
            return cls.read(path)
        for candidate in config_candidates():
            if os.path.isfile(candidate):
                return cls.read(candidate)
        return cls("<defaults>", None)

    @classmethod
    def read(cls, path: str) -> Config:
        import configparser  # only when there is a file: the module and its patterns cost 2 ms

        parser = configparser.RawConfigParser(
            strict=False,
            interpolation=None,
            dict_type=_MultiValueDict,  # type: ignore[arg-type]
        )
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, UnicodeDecodeError, configparser.Error) as exc:
            raise UsageError(f"{path}: cannot read configuration: {exc}") from exc
        return cls(str(path), parser)

    def get(self, section: str, option: str) -> str | None:
        """The raw value, looked up in ``section`` then ``[DEFAULT]``, or ``None``."""
        if self.parser is not None and self.parser.has_option(section, option):
            value = self.parser.get(section, option)
            return value.strip() if value is not None else None
        return None

    def has_section(self, section: str) -> bool:
        return self.parser is not None and self.parser.has_section(section)

    def get_list(self, section: str, option: str) -> list[str] | None:
        value = self.get(section, option)
        if value is None:
            return None
        return [item.strip() for item in value.split(",") if item.strip()]

    def get_multi(self, section: str, option: str) -> list[str]:
        """Every value of an option that may be repeated (one per line), or ``[]``."""
        value = self.get(section, option)
        if value is None:
            return []
        return [line.strip() for line in value.splitlines() if line.strip()]

    def get_int(self, section: str, option: str, default: int) -> int:
        value = self.get(section, option)
        if value is None or value == "":
            return default
        try:
            return int(value, 0)
        except ValueError:
            raise ConfigError(self.path, section, option, f"{value!r} is not a number") from None

    def get_bool(self, section: str, option: str) -> bool | None:
        value = self.get(section, option)
        if value is None:
            return None
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(self.path, section, option, f"{value!r} is not a boolean")

"""Loggers that cost nothing until a record has somewhere to go.

Importing :mod:`logging` takes longer than inspecting most images, and no debug or info record
can be shown before an application has imported logging and given it a handler. So these
loggers pass debug and info records on only once logging is loaded, and import it for warnings
only, which logging's last-resort handler prints even when nothing was configured.
"""

from __future__ import annotations

import sys

DEBUG = 10
INFO = 20


class Logger:
    """``logging.getLogger(name)``, looked up only when a record is passed on."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        self._pass_on(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._pass_on(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        import logging

        logging.getLogger(self.name).warning(msg, *args, stacklevel=2)

    def _pass_on(self, level: int, msg: str, args: tuple[object, ...]) -> None:
        logging = sys.modules.get("logging")
        if logging is not None:
            # stacklevel 3: the record names the caller of debug() or info(), not this module.
            logging.getLogger(self.name).log(level, msg, *args, stacklevel=3)

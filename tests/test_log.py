"""imgfmt.log: records reach a configured logging from their caller; unconfigured, inspecting
an image never imports logging."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from imgfmt.log import Logger


def _log_both(log: Logger) -> None:
    log.debug("debug %d", 1)
    log.info("info %s", "two")
    log.warning("warning %r", 3)


def test_records_reach_logging_as_the_caller_made_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="imgfmt.test")
    _log_both(Logger("imgfmt.test"))
    assert [(r.name, r.levelno, r.getMessage(), r.funcName) for r in caplog.records] == [
        ("imgfmt.test", logging.DEBUG, "debug 1", "_log_both"),
        ("imgfmt.test", logging.INFO, "info two", "_log_both"),
        ("imgfmt.test", logging.WARNING, "warning 3", "_log_both"),
    ]


def test_inspecting_imports_no_logging_until_a_warning(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    script = (
        "import sys, imgfmt\n"
        f"assert imgfmt.inspect({str(image)!r}).safe\n"
        "print('logging' in sys.modules)\n"
        "imgfmt.log.Logger('imgfmt.x').debug('dropped')\n"
        "print('logging' in sys.modules)\n"
        "imgfmt.log.Logger('imgfmt.x').warning('shown')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "False"]
    assert done.stderr == "shown\n"

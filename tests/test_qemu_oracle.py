"""qemu-img 7.2, watched with strace, agrees with every fixture imgfmt calls safe.

For each bare fixture with a safe verdict, ``qemu-img info -f FORMAT`` must open no file but the
image (and its own runtime files), open it without error, report the same virtual size, and
report no backing file, data file or format-specific key imgfmt did not check (see
``tests/qemu_oracle.py``). One qemu-img run per fixture.
"""

from __future__ import annotations

from typing import Any

import pytest

import imgfmt
from imgfmt.policy import KNOWN_DISK_FORMATS
from tests import qemu_oracle
from tests.conftest import fixture_entries, fixture_ids

ENTRIES = tuple(
    e
    for e in fixture_entries()
    if e["safe"] and e["format"] is not None and e.get("container_format", "bare") == "bare"
)
MISSING = qemu_oracle.available()


@pytest.mark.skipif(MISSING is not None, reason=f"the qemu-img oracle cannot run: {MISSING}")
@pytest.mark.parametrize("entry", ENTRIES, ids=fixture_ids(ENTRIES))
def test_qemu_img_agrees_with_safe_verdict(entry: dict[str, Any]) -> None:
    report = imgfmt.inspect(entry["path"], policy=imgfmt.Policy(disk_formats=KNOWN_DISK_FORMATS))
    assert report.safe, report.to_dict()
    assert report.disk_format is not None

    verdict = qemu_oracle.check(
        entry["path"], report.disk_format, report.virtual_size, report.details
    )

    assert verdict.paths == [], verdict.problems
    assert verdict.agrees, verdict.problems

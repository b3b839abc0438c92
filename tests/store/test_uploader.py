"""imgfmt.store.base.uploader: the owner string uploads leave, and telling whether it still runs."""

from __future__ import annotations

import os
import subprocess
import sys

from imgfmt.store.base import uploader, uploader_alive


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_this_process_is_alive_and_a_new_one_with_its_pid_is_not() -> None:
    owner = uploader()
    pid, _, start = owner.partition(".")
    assert int(pid) == os.getpid() and start.isdigit()
    assert uploader_alive(owner) is True
    assert uploader_alive(f"{pid}.{int(start) + 1}") is False
    assert uploader_alive(pid) is True  # an older imgfmt's bare pid


def test_a_dead_process_and_strings_that_name_none() -> None:
    dead = _dead_pid()
    assert uploader_alive(str(dead)) is False
    assert uploader_alive(f"{dead}.12345") is False
    for text in ("", "abc", "12.x", "-1", "1.2.3", " 1"):
        assert uploader_alive(text) is None, text

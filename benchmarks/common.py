"""What the benchmark sections share: timing a command or a call, and a file of random bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

GIB = 1 << 30
#: The imgfmt command of the running virtual environment.
IMGFMT = str(Path(sys.executable).parent / "imgfmt")


def random_file(path: Path, size: int = GIB) -> None:
    """Write ``size`` bytes of random data (incompressible, no all-zero chunks), flush them to
    disk and read them once: every contender starts from the page cache, and none pays for
    writing back the input in the background."""
    block = 64 << 20
    with open(path, "wb") as f:
        for _ in range(size // block):
            f.write(os.urandom(block))
    os.sync()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds one command takes; it must succeed."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def best(run: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)

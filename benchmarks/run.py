"""Side-by-side benchmarks, run by ``make bench``: imgfmt and its peer in one run, as ratios.

    python -m benchmarks.run [SECTION ...]      # sections: inspect

Figures are medians of repeated runs on this machine; they are printed, never asserted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks import inspect_bench

SECTIONS: dict[str, Callable[[], None]] = {
    "inspect": inspect_bench.main,
}


def main(argv: list[str]) -> None:
    names = argv or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    for name in names:
        print(f"== {name}")
        SECTIONS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])

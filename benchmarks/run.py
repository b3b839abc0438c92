"""Side-by-side benchmarks, run by ``make bench``: imgfmt and its peer in one run, as ratios.

    python -m benchmarks.run [SECTION ...]      # default: every section

Figures are printed, never asserted. Each section is a module of this package with ``main()``.
"""

from __future__ import annotations

import importlib
import sys

#: Section name -> module under benchmarks/ (imported only when the section runs).
SECTIONS: dict[str, str] = {
    "inspect": "inspect_bench",
    "store": "store_bench",
    "convert": "convert_bench",
    "containers": "container_bench",
    "swift": "swift_bench",
    "rbd": "rbd_bench",
}


def main(argv: list[str]) -> None:
    names = argv or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{SECTIONS[name]}").main()


if __name__ == "__main__":
    main(sys.argv[1:])

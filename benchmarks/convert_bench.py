"""``imgfmt convert`` against bare ``qemu-img convert`` on a 1 GiB image with real data.

The image mixes random 64 KiB runs (incompressible), text-like runs (compressible) and holes,
about a third each. Each case runs three ways in one process, alternating, best of ``REPEAT``:
bare qemu-img; qemu-img followed by ``sync FILE`` (an fsync, which imgfmt does before its
rename so that a crash never leaves a half-written file under the final name); and
``imgfmt convert``. Overhead is printed against both. Target: under 5%.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import GIB, IMGFMT

CHUNK = 64 * 1024
REPEAT = 3
#: (name, source format, target driver, imgfmt target, extra qemu-img convert arguments)
CASES = (
    ("qcow2 -> raw", "qcow2", "raw", "raw", ()),
    ("raw -> qcow2", "raw", "qcow2", "qcow2", ()),
    ("raw -> vmdk streamOptimized", "raw", "vmdk", "vmdk", ("-o", "subformat=streamOptimized")),
)


def _make_raw(path: Path, size: int = GIB) -> None:
    rng = random.Random(4)
    words = [bytes(rng.choice(b"abcdefghij klmnop\n") for _ in range(7)) for _ in range(512)]
    with open(path, "wb") as f:
        for _ in range(size // CHUNK):
            kind = rng.randrange(3)
            if kind == 0:
                f.write(rng.randbytes(CHUNK))
            elif kind == 1:
                f.write(b"".join(rng.choices(words, k=CHUNK // 7 + 1))[:CHUNK])
            else:
                f.seek(CHUNK, os.SEEK_CUR)
        f.truncate(size)


def _timed(output: Path, *commands: list[str]) -> float:
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    for argv in commands:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    output.unlink()
    return elapsed


def _case(
    work: Path, sources: dict[str, Path], case: tuple[str, str, str, str, tuple[str, ...]]
) -> None:
    name, source_format, driver, target, extra = case
    source = sources[source_format]
    output = work / f"out.{target}"
    bare = [
        "qemu-img",
        "convert",
        "-f",
        source_format,
        "-O",
        driver,
        *extra,
        str(source),
        str(output),
    ]
    ours = [IMGFMT, "convert", "--quiet", str(source), str(output), "-O", target, *extra]
    runs: dict[str, tuple[list[str], ...]] = {
        "bare": (bare,),
        "synced": (bare, ["sync", str(output)]),
        "ours": (ours,),
    }
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(REPEAT):
        for key, commands in runs.items():
            times[key].append(_timed(output, *commands))
    best = {key: min(values) for key, values in times.items()}
    bare_pct = (best["ours"] - best["bare"]) / best["bare"] * 100
    synced_pct = (best["ours"] - best["synced"]) / best["synced"] * 100
    print(
        f"{name:28} qemu-img {best['bare']:6.2f} s, +sync {best['synced']:6.2f} s, "
        f"imgfmt {best['ours']:6.2f} s: overhead {bare_pct:+6.1f}% vs bare, "
        f"{synced_pct:+5.1f}% vs qemu-img+sync (target < 5%)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imgfmt-convert-bench-") as scratch:
        work = Path(scratch)
        raw = work / "source.raw"
        _make_raw(raw)
        qcow2 = work / "source.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                       check=True)  # fmt: skip
        print(
            f"1 GiB image, {raw.stat().st_blocks * 512 / GIB:.2f} GiB allocated; best of {REPEAT}"
        )
        for case in CASES:
            _case(work, {"raw": raw, "qcow2": qcow2}, case)


if __name__ == "__main__":
    main()

"""``imgfmt image create`` into Ceph RBD against Ceph's own ``rbd import``.

One 1 GiB file of random bytes, imported once each way into the Ceph that
``scripts/with-services.sh`` started (``$IMGFMT_TEST_CEPH_DIR``), both with 8 MiB objects
(order 23). imgfmt's time includes what ``rbd import`` does not do: inspecting the image, md5
and sha512 of the whole image, the protected snapshot and the catalog. Target: within 1.1x.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import IMGFMT, random_file, timed

ORDER = 23


def _imgfmt(service: Path, work: Path, image: Path) -> float:
    conf = work / "imgfmt.conf"
    conf.write_text(
        (service / "imgfmt.conf").read_text()
        + f"rbd_store_chunk_size = {1 << (ORDER - 20)}\n"
        + f"[database]\nconnection = sqlite:///{work / 'catalog.db'}\n"
        + f"[task]\nwork_dir = {work / 'scratch'}\n"
    )
    env = {**os.environ, "IMGFMT_CONFIG": str(conf)}
    seconds = timed([IMGFMT, "image", "create", "bench", "--file", str(image)], env)
    subprocess.run([IMGFMT, "image", "delete", "bench"], check=True, env=env)
    return seconds


def _rbd_import(service: Path, image: Path) -> float:
    rbd = ["rbd", "-c", str(service / "ceph.conf")]
    target = f"images/bench-rbd-import-{os.getpid()}"
    size = f"{1 << (ORDER - 20)}M"
    seconds = timed([*rbd, "import", "--no-progress", "--object-size", size, str(image), target])
    subprocess.run([*rbd, "rm", "--no-progress", target], check=True)
    return seconds


def main() -> None:
    directory = os.environ.get("IMGFMT_TEST_CEPH_DIR")
    if not directory:
        print("skipped: IMGFMT_TEST_CEPH_DIR is not set; run through scripts/with-services.sh")
        return
    service = Path(directory)
    work = Path(tempfile.mkdtemp(prefix="imgfmt-rbd-bench-", dir=os.environ.get("TMPDIR")))
    try:
        image = work / "random.raw"
        random_file(image)
        theirs = _rbd_import(service, image)
        ours = _imgfmt(service, work, image)
        print(
            f"1 GiB random into RBD (order {ORDER}): rbd import {theirs:.2f} s, "
            f"imgfmt image create {ours:.2f} s ({ours / theirs:.2f}x, target <= 1.1x)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

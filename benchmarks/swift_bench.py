"""``imgfmt image create`` into Swift against python-swiftclient's own ``swift upload``.

One 1 GiB file of random bytes, uploaded once each way into the Swift that
``scripts/with-services.sh`` started (``$IMGFMT_TEST_SWIFT_DIR``), with the same segment size,
both as Static Large Objects. imgfmt's time includes what ``swift upload`` does not do:
inspecting the image, md5 and sha512 of the whole image, and the catalog. Target: within 1.1x.
"""

from __future__ import annotations

import configparser
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import IMGFMT, random_file, timed

SEGMENT_MIB = 200
BIN = Path(sys.executable).parent


def _imgfmt(service: Path, work: Path, image: Path) -> float:
    conf = work / "imgfmt.conf"
    conf.write_text(
        (service / "imgfmt.conf").read_text()
        + f"swift_store_container = bench_imgfmt\nswift_store_large_object_size = {SEGMENT_MIB}\n"
        f"swift_store_large_object_chunk_size = {SEGMENT_MIB}\n"
        f"[database]\nconnection = sqlite:///{work / 'catalog.db'}\n"
    )
    argv = [IMGFMT, "--config-file", str(conf), "image", "create", "bench"]
    return timed([*argv, "--file", str(image), "--disk-format", "raw"])


def _swift_upload(service: Path, image: Path) -> float:
    ref = configparser.RawConfigParser()
    ref.read(service / "glance-swift.conf")
    auth = ["-A", ref["ref1"]["auth_address"], "-U", ref["ref1"]["user"]]
    env = {**os.environ, "ST_KEY": ref["ref1"]["key"]}
    argv = [str(BIN / "swift"), *auth, "upload", "bench_swift", str(image), "--object-name"]
    segments = ["--segment-size", str(SEGMENT_MIB << 20), "--use-slo"]
    return timed([*argv, "bench", *segments], env)


def main() -> None:
    directory = os.environ.get("IMGFMT_TEST_SWIFT_DIR")
    if not directory:
        print("skipped: no Swift running; use `make bench` (scripts/with-services.sh)")
        return
    service = Path(directory)
    with tempfile.TemporaryDirectory(prefix="imgfmt-swift-bench-", dir=".") as scratch:
        work = Path(scratch)
        image = work / "random.raw"
        random_file(image)
        swift_time = _swift_upload(service, image)
        ours = _imgfmt(service, work, image)
    print(
        f"1 GiB random raw, {SEGMENT_MIB} MiB segments: swift upload {swift_time:6.2f} s   "
        f"imgfmt image create {ours:6.2f} s   ratio {ours / swift_time:.2f}x (target <= 1.1x)"
    )


if __name__ == "__main__":
    main()

"""qemu-img 7.2 as the oracle of a "safe" verdict, watched with strace.

``check(path, report)`` runs ``qemu-img info --output=json -f DRIVER`` on an image imgfmt called
safe, with ``strace`` recording every path qemu-img opens, stats or reads a link of, and returns
the ways qemu-img disagrees with the promise of README "What safe means": a path other than the
image and qemu-img's own runtime files, a failure to open, another virtual size, or a backing
file, data file or format-specific key imgfmt did not report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

#: imgfmt's format names that qemu calls otherwise (iso, aki and ari are read as raw).
QEMU_DRIVER = {"vhd": "vpc", "ploop": "parallels", "iso": "raw", "aki": "raw", "ari": "raw"}
#: System calls that name a path.
TRACED = "openat,open,stat,newfstatat,statx,readlink,access"
#: What qemu-img itself touches on every run, whatever the image (seen tracing a plain raw
#: file): the dynamic loader, shared libraries, gnutls and locale configuration, its module
#: directories, a few /proc and /sys files of its own.
RUNTIME_PATHS = re.compile(
    r"""(
        /etc/ld\.so\.(cache|preload|conf(\.d/.*)?)
      | /etc/gnutls/config
      | /etc/localtime
      | (/usr)?/lib(32|64|x32)?/.*\.so(\.[0-9.]+)?
      | (/usr)?/lib(32|64|x32)?/x86_64-linux-gnu/(qemu|gconv)(/.*)?
      | (/usr)?/lib(32|64|x32)?/(x86_64-linux-gnu/)?(glibc-hwcaps|tls|haswell|x86_64)(/.*)?
      | (/usr)?/lib(32|64|x32)?/(x86_64-linux-gnu/)?
      | /usr/lib/locale(/.*)?
      | /usr/share/locale(/.*)?
      | /usr/(local/)?lib/.*/qemu(/.*)?
      | /var/run/qemu(/.*)?
      | /run/qemu(/.*)?
      | /usr/bin/qemu-img
      | /proc/self/(exe|status|maps|auxv)
      | /proc/sys/vm/overcommit_memory
      | /sys/devices/system/(cpu|node)(/.*)?
      | /sys/kernel/mm/transparent_hugepage/.*
      | /dev/null
      | /dev/urandom
    )""",
    re.VERBOSE,
)
#: A traced call that names a path: ``openat(AT_FDCWD, "/path", ...``.
_PATH_CALL = re.compile(
    r'^\d+\s+(\w+)\((?:AT_FDCWD|\d+), "((?:[^"\\]|\\.)*)"|^\d+\s+(\w+)\("((?:[^"\\]|\\.)*)"'
)

#: Format-specific keys of ``qemu-img info`` that carry nothing a safe verdict must have
#: checked, per driver. Any other key there is a disagreement to look at.
HARMLESS_SPECIFIC = {
    "qcow2": {
        "compat",
        "compression-type",
        "lazy-refcounts",
        "refcount-bits",
        "corrupt",
        "extended-l2",
        "bitmaps",
        "encrypt",
        "data-file-raw",
    },
    "vmdk": {"cid", "parent-cid", "create-type", "extents"},
    "vpc": set(),
    "vhdx": set(),
    "vdi": set(),
    "parallels": set(),
    "qed": set(),
    "luks": {
        "ivgen-alg",
        "hash-alg",
        "cipher-alg",
        "uuid",
        "cipher-mode",
        "slots",
        "payload-offset",
        "master-key-iters",
        "detached-header",
        "ivgen-hash-alg",
    },
    "raw": set(),
}


@dataclass
class Verdict:
    """What qemu-img did with one image."""

    driver: str
    info: dict[str, Any] | None
    paths: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.problems


def available() -> str | None:
    """Why the oracle cannot run here, or None."""
    for tool in ("qemu-img", "strace"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def driver(disk_format: str) -> str:
    return QEMU_DRIVER.get(disk_format, disk_format)


def check(path: str, disk_format: str, virtual_size: int | None, details: Any = None) -> Verdict:
    """Run qemu-img info on ``path`` as ``disk_format`` and compare it with imgfmt's answer."""
    drv = driver(disk_format)
    image = os.path.realpath(path)
    with tempfile.TemporaryDirectory(prefix="imgfmt-oracle-") as work:
        log = os.path.join(work, "strace.log")
        run = subprocess.run(
            [
                "strace",
                "-f",
                "-qq",
                "-e",
                f"trace={TRACED}",
                "-o",
                log,
                "qemu-img",
                "info",
                "--output=json",
                "-f",
                drv,
                image,
            ],
            capture_output=True,
            text=True,
            cwd=work,
            timeout=60,
            check=False,
        )
        with open(log, encoding="utf-8", errors="replace") as f:
            trace = f.read()
    verdict = Verdict(drv, None)
    verdict.paths = _foreign_paths(trace, image, work)
    for p in verdict.paths:
        verdict.problems.append(f"qemu-img touched {p}")
    if run.returncode != 0:
        verdict.problems.append(f"qemu-img failed to open it: {run.stderr.strip()}")
        return verdict
    info = json.loads(run.stdout)
    verdict.info = info
    if info.get("virtual-size") != virtual_size:
        verdict.problems.append(
            f"virtual size: qemu-img {info.get('virtual-size')}, imgfmt {virtual_size}"
        )
    for key in ("backing-filename", "full-backing-filename", "backing-filename-format"):
        if key in info:
            verdict.problems.append(f"qemu-img reports {key} {info[key]!r}")
    specific = info.get("format-specific", {}).get("data", {})
    data_file = specific.get("data-file")
    if data_file is not None and data_file != dict(details or {}).get("data_file"):
        verdict.problems.append(f"qemu-img reports data-file {data_file!r}")
    harmless = HARMLESS_SPECIFIC.get(drv, set())
    for key in sorted(set(specific) - harmless - {"data-file"}):
        verdict.problems.append(f"qemu-img reports format-specific {key}={specific[key]!r}")
    verdict.problems += _specific_problems(drv, specific, details or {}, image)
    return verdict


def _specific_problems(drv: str, specific: dict[str, Any], details: Any, image: str) -> list[str]:
    problems = []
    if drv == "qcow2":
        if specific.get("data-file-raw"):
            problems.append("qemu-img reports data-file-raw")
        if specific.get("corrupt"):
            problems.append("qemu-img reports corrupt")
    if drv == "vmdk":
        for extent in specific.get("extents", []):
            if extent.get("filename", image) != image:
                problems.append(f"vmdk extent {extent['filename']!r}")
            for key in ("backing-filename", "full-backing-filename"):
                if key in extent:
                    problems.append(f"vmdk extent with {key} {extent[key]!r}")
        # A parent CID alone opens nothing (parentFileNameHint does); imgfmt must report it.
        parent = specific.get("parent-cid")
        shown = details.get("parent_cid")
        if parent is not None and parent != 0xFFFFFFFF and shown != f"{parent:08x}":
            problems.append(f"vmdk parent-cid {parent:#x}, imgfmt {shown}")
    return problems


def _foreign_paths(trace: str, image: str, work: str) -> list[str]:
    allowed = {image, work, os.path.dirname(image)}
    foreign: list[str] = []
    for line in trace.splitlines():
        m = _PATH_CALL.match(line)
        if m is None:
            continue
        name = m[2] if m[2] is not None else m[4]
        # "" is a call on a descriptor (AT_EMPTY_PATH); "." is the empty working directory.
        if name in ("", ".") or name in allowed or RUNTIME_PATHS.fullmatch(name):
            continue
        if name not in foreign:
            foreign.append(name)
    return foreign

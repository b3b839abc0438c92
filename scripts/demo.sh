#!/usr/bin/env bash
# The main job on a sample image: build a small qcow2 with real data, then inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p sample
rm -f sample/disk.raw sample/disk.qcow2
.venv/bin/python - <<'PY'
import os
with open("sample/disk.raw", "wb") as f:
    f.truncate(64 * 1024 * 1024)
    for i in range(16):
        f.seek(i * 4 * 1024 * 1024)
        f.write(os.urandom(256 * 1024))
PY
sfdisk -q sample/disk.raw <<'SFDISK'
label: gpt
,32M,L
,,L
SFDISK
qemu-img convert -f raw -O qcow2 sample/disk.raw sample/disk.qcow2
echo "== imgfmt inspect sample/disk.qcow2"
.venv/bin/imgfmt inspect sample/disk.qcow2
echo "== imgfmt inspect --expect-format qcow2 --max-virtual-size 1G -f json sample/disk.qcow2"
.venv/bin/imgfmt inspect --expect-format qcow2 --max-virtual-size 1G -f json sample/disk.qcow2

#!/usr/bin/env bash
# The main job on the embedded default (a file store and an SQLite catalog under
# ${XDG_DATA_HOME:-~/.local/share}/imgfmt): build a sample image with real data, inspect it,
# convert it, upload it, list it.
set -euo pipefail
cd "$(dirname "$0")/.."
IMGFMT=.venv/bin/imgfmt
mkdir -p sample
rm -f sample/disk.raw sample/disk.qcow2 sample/disk.vmdk

echo "== building sample/disk.raw: a 64 MiB GPT disk with two partitions and some data"
.venv/bin/python - <<'PY'
import os
with open("sample/disk.raw", "wb") as f:
    f.truncate(64 * 1024 * 1024)
    for i in range(1, 16):
        f.seek(i * 4 * 1024 * 1024)
        f.write(os.urandom(256 * 1024))
PY
sfdisk -q sample/disk.raw <<'SFDISK'
label: gpt
,32M,L
,,L
SFDISK
qemu-img convert -f raw -O qcow2 sample/disk.raw sample/disk.qcow2

echo "== imgfmt inspect sample/disk.raw sample/disk.qcow2"
$IMGFMT inspect sample/disk.raw sample/disk.qcow2
echo "== imgfmt inspect --expect-format qcow2 --max-virtual-size 1G -f json sample/disk.qcow2"
$IMGFMT inspect --expect-format qcow2 --max-virtual-size 1G -f json sample/disk.qcow2
echo "== imgfmt convert sample/disk.qcow2 sample/disk.vmdk -O vmdk -o subformat=streamOptimized"
$IMGFMT convert sample/disk.qcow2 sample/disk.vmdk -O vmdk -o subformat=streamOptimized --verify
echo "== imgfmt image create imgfmt-sample --file sample/disk.vmdk"
$IMGFMT image create "imgfmt-sample-$(date +%Y%m%d%H%M%S)" --file sample/disk.vmdk \
  --property source=demo
echo "== imgfmt image list --long"
$IMGFMT image list --long
echo "== imgfmt store list"
$IMGFMT store list

#!/usr/bin/env bash
# Install what imgfmt needs on a Debian/Ubuntu machine: the system tools it drives or tests
# with (only those missing), a virtual environment in .venv, and the package with its extras.
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  qemu-utils libmagic1 file xorriso genisoimage fdisk xfsprogs dosfstools btrfs-progs
  cpio udftools zstd lz4 xz-utils bzip2 gzip cryptsetup-bin skopeo umoci
  python3-rados python3-rbd strace
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: $PYTHON is older than 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# EXTRAS: the optional dependency groups to install (make bench adds "bench").
extras="${EXTRAS:-dev}"
stamp=".venv/.imgfmt-installed-${extras//,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # compat mode: a plain path entry instead of an import hook, which costs every start-up.
  .venv/bin/python -m pip install -q -e ".[$extras]" --config-settings editable_mode=compat
  touch "$stamp"
fi
# Ceph's Python bindings exist only as Debian packages (python3-rados, python3-rbd), built for
# the system's CPython 3.11: link them into a 3.11 venv rather than exposing all dist-packages.
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  for binding in /usr/lib/python3/dist-packages/{rados,rbd}.cpython-311-x86_64-linux-gnu.so; do
    if [ -e "$binding" ]; then ln -sf "$binding" "$site/"; fi
  done
fi
# Byte-compile now: with PYTHONDONTWRITEBYTECODE set, every run would compile imgfmt anew.
.venv/bin/python -m compileall -q imgfmt >/dev/null
echo "setup: ready ($(.venv/bin/imgfmt --version))"

#!/usr/bin/env bash
# A throw-away single-node Ceph for imgfmt's tests: one mon, one mgr and one memstore OSD on
# 127.0.0.1, with its own fsid, conf and keyring in DIR, and an RBD pool `images`.
#
#   scripts/services/ceph.sh start DIR   # installs Debian's Ceph if missing; ready when it returns
#   scripts/services/ceph.sh stop DIR    # SIGTERM by recorded pid: OSD, mgr, mon
#
# DIR must be short (admin socket paths stay under 108 characters). `start` leaves
# DIR/ceph.conf (for `ceph -c` and `rbd -c`) and DIR/imgfmt.conf (an rbd store named `ceph`).
# What each setting is for: ../../../shared/SERVICES.md has the pitfalls they avoid.
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd)
POOL=images
MEMSTORE_BYTES=$((3 << 30))
READY_TIMEOUT=120

log() { echo "ceph.sh: $*" >&2; }
die() { log "$*"; exit 1; }

install_packages() {
  local missing=() pkg sudo=""
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local port
  for port in $(seq 6789 6889); do
    if ! port_taken "$port"; then echo "$port"; return; fi
  done
  die "no free port in 6789..6889 for the mon"
}

write_conf() {
  local dir=$1 fsid=$2 port=$3
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# A PG's read lease is heartbeat grace x this ratio (16 s by default); a lone OSD paused longer
# (the tests SIGSTOP it) stays "laggy" until it re-peers. 15 gives 300 s.
osd pool default read lease ratio = 15
[mon]
mon data = $dir/mon
mgr initial modules =
[mgr]
mgr data = $dir/mgr
[osd]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd memory target = 939524096
[client]
keyring = $dir/keyring
EOF
}

write_imgfmt_conf() {
  local dir=$1
  cat >"$dir/imgfmt.conf" <<EOF
[DEFAULT]
enabled_backends = ceph:rbd
[glance_store]
default_backend = ceph
[ceph]
store_description = single-node test Ceph in $dir
rbd_store_pool = $POOL
rbd_store_user = admin
rbd_store_ceph_conf = $dir/ceph.conf
rados_connect_timeout = 10
EOF
}

# Daemons fork and write their pid file afterwards.
wait_pid() {
  local file=$1 i
  for i in $(seq 100); do
    if [ -s "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then return; fi
    sleep 0.2
  done
  die "$(basename "$file" .pid) did not start; see the logs in $(dirname "$(dirname "$file")")/log"
}

start_mon() {
  local dir=$1 port=$2 fsid=$3
  {
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *'
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
      --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring"
    monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$port]" "$dir/monmap"
    ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
  } >>"$dir/log/setup.log"
  ceph-mon -c "$dir/ceph.conf" -i a 2>>"$dir/log/setup.log"
  wait_pid "$dir/run/mon.a.pid"
}

start_mgr() {
  local dir=$1
  ceph -c "$dir/ceph.conf" config set mgr mgr/devicehealth/enable_monitoring false --force
  mkdir -p "$dir/mgr"
  ceph -c "$dir/ceph.conf" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' \
    mds 'allow *' -o "$dir/mgr/keyring"
  ceph-mgr -c "$dir/ceph.conf" -i x 2>>"$dir/log/setup.log"
  wait_pid "$dir/run/mgr.x.pid"
}

start_osd() {
  local dir=$1 uuid id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(ceph -c "$dir/ceph.conf" osd new "$uuid")
  mkdir -p "$dir/osd"
  ceph-osd -c "$dir/ceph.conf" -i "$id" --mkfs --mkkey --osd-uuid "$uuid" --no-mon-config \
    2>>"$dir/log/setup.log"
  ceph -c "$dir/ceph.conf" auth add "osd.$id" osd 'allow *' mon 'allow profile osd' \
    mgr 'allow profile osd' -i "$dir/osd/keyring" 2>>"$dir/log/setup.log"
  ceph-osd -c "$dir/ceph.conf" -i "$id" 2>>"$dir/log/setup.log"
  wait_pid "$dir/run/osd.$id.pid"
}

# HEALTH_OK is not "ready": every PG must be active+clean, and an image must be creatable.
wait_ready() {
  local dir=$1 deadline=$((SECONDS + READY_TIMEOUT)) stat
  while ((SECONDS < deadline)); do
    stat=$(ceph -c "$dir/ceph.conf" pg stat --format json 2>/dev/null || true)
    if pgs_clean "$stat" && rbd -c "$dir/ceph.conf" create "$POOL/ready-probe" --size 1M \
      2>/dev/null; then
      rbd -c "$dir/ceph.conf" rm --no-progress "$POOL/ready-probe" >/dev/null
      return
    fi
    sleep 1
  done
  die "pool $POOL not ready after ${READY_TIMEOUT}s: $(ceph -c "$dir/ceph.conf" pg stat)"
}

pgs_clean() {
  /usr/bin/python3 - "$1" <<'EOF'
import json, sys
try:
    stat = json.loads(sys.argv[1])
except ValueError:
    sys.exit(1)
states = stat.get("pg_summary", stat).get("num_pg_by_state", [])
total = sum(s["num"] for s in states)
clean = sum(s["num"] for s in states if s["name"] == "active+clean")
sys.exit(0 if total and clean == total else 1)
EOF
}

start() {
  local dir=$1 fsid port
  install_packages
  [ ! -e "$dir/ceph.conf" ] || die "$dir already holds a cluster; stop it and use a fresh DIR"
  mkdir -p "$dir/run" "$dir/log" "$dir/mon"
  fsid=$(cat /proc/sys/kernel/random/uuid)
  port=$(free_port)
  write_conf "$dir" "$fsid" "$port"
  start_mon "$dir" "$port" "$fsid"
  start_mgr "$dir"
  start_osd "$dir"
  ceph -c "$dir/ceph.conf" osd pool create "$POOL" 8 8 >/dev/null 2>&1
  rbd -c "$dir/ceph.conf" pool init "$POOL"
  wait_ready "$dir"
  write_imgfmt_conf "$dir"
  log "ready: fsid $fsid, mon 127.0.0.1:$port, conf $dir/ceph.conf"
}

stop_daemon() {
  local file=$1 pid i
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill -CONT "$pid" 2>/dev/null || return 0  # a test may have paused it
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$(basename "$file" .pid) (pid $pid) ignored SIGTERM for 10s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  local dir=$1 file
  for file in "$dir"/run/osd.*.pid "$dir/run/mgr.x.pid" "$dir/run/mon.a.pid"; do
    [ -e "$file" ] && stop_daemon "$file"
  done
  return 0
}

case "${1:-}:${2:-}" in
  start:?*) start "$(realpath -m "$2")" ;;
  stop:?*) stop "$(realpath -m "$2")" ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

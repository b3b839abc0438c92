#!/usr/bin/env bash
# A private, single-replica OpenStack Swift for imgfmt's tests and benchmarks.
#
#   swift.sh start DIR    install Debian's swift and memcached if missing, configure DIR (once),
#                         start whatever is not running, wait for an authenticated request
#   swift.sh stop DIR     stop every server started from DIR, by recorded pid
#   swift.sh status DIR   say which servers run
#
# Everything binds to 127.0.0.1 on ports found free; proxy (tempauth, slo, dlo), account,
# container and object servers run one process each, logging to DIR/log. The test user's key is
# random per DIR and written only into DIR: glance-swift.conf (reference "ref1") and imgfmt.conf
# (store "objects"). See ../../../shared/SERVICES.md for why each step is as it is.
set -euo pipefail

PACKAGES=(swift swift-proxy swift-account swift-container swift-object memcached)
SERVERS=(account container object proxy)
PYTHON=/usr/bin/python3 # Debian's: the swift modules live there, not in a venv or pyenv
READY_TIMEOUT=60

die() {
  echo "swift.sh: $*" >&2
  exit 1
}

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "swift.sh: installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# Five free TCP ports on 127.0.0.1 (account, container, object, proxy, memcached).
free_ports() {
  "$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Swift 2.30 reads the hash prefix and suffix from /etc/swift/swift.conf only, newer releases
# from swift_dir: keep the system's file when there is one, and use the same in DIR.
write_swift_conf() {
  local dir=$1
  if [ ! -f /etc/swift/swift.conf ]; then
    mkdir -p /etc/swift
    printf '[swift-hash]\nswift_hash_path_prefix = %s\nswift_hash_path_suffix = %s\n%s\n' \
      "$(random_hex)" "$(random_hex)" '[storage-policy:0]
name = Policy-0
default = yes' >/etc/swift/swift.conf
  fi
  cp /etc/swift/swift.conf "$dir/swift.conf"
}

random_hex() {
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

write_server_conf() {
  local dir=$1 kind=$2 port=$3
  cat >"$dir/$kind-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
user = $(id -un)
swift_dir = $dir
devices = $dir/devices
mount_check = false
log_name = $kind-server

[pipeline:main]
pipeline = $kind-server

[app:$kind-server]
use = egg:swift#$kind
EOF
}

write_proxy_conf() {
  local dir=$1 port=$2 memcached=$3 key=$4
  cat >"$dir/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
user = $(id -un)
swift_dir = $dir
log_name = proxy-server

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempauth
  copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $key .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF
}

# One device per ring, part power 10, one replica: Swift's own RingBuilder, in under a second.
write_rings() {
  local dir=$1 account=$2 container=$3 object=$4
  "$PYTHON" - "$dir" "$account" "$container" "$object" <<'EOF'
import sys
from swift.common.ring import RingBuilder
directory = sys.argv[1]
for name, port in zip(("account", "container", "object"), sys.argv[2:]):
    builder = RingBuilder(10, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "d1", "weight": 100})
    builder.rebalance()
    builder.save(f"{directory}/{name}.builder")
    builder.get_ring().save(f"{directory}/{name}.ring.gz")
EOF
}

write_client_confs() {
  local dir=$1 proxy=$2 key=$3
  (
    umask 077
    cat >"$dir/glance-swift.conf" <<EOF
[ref1]
auth_version = 1
auth_address = http://127.0.0.1:$proxy/auth/v1.0
user = test:tester
key = $key
EOF
    cat >"$dir/imgfmt.conf" <<EOF
[DEFAULT]
enabled_backends = objects:swift

[glance_store]
default_backend = objects

[objects]
store_description = private test Swift
default_swift_reference = ref1
swift_store_config_file = $dir/glance-swift.conf
swift_store_create_container_on_put = true
EOF
  )
}

configure() {
  local dir=$1
  mkdir -p "$dir/devices/d1" "$dir/log" "$dir/run"
  "$PYTHON" -c 'import os, sys; os.setxattr(sys.argv[1], "user.swift.probe", b"1")' \
    "$dir/devices/d1" 2>/dev/null \
    || die "$dir does not support user xattrs, which Swift needs; choose another DIR"
  local ports account container object proxy memcached key
  ports=$(free_ports)
  read -r account container object proxy memcached <<<"$ports"
  key=$(random_hex)
  write_swift_conf "$dir"
  write_server_conf "$dir" account "$account"
  write_server_conf "$dir" container "$container"
  write_server_conf "$dir" object "$object"
  write_proxy_conf "$dir" "$proxy" "$memcached" "$key"
  write_rings "$dir" "$account" "$container" "$object"
  write_client_confs "$dir" "$proxy" "$key"
  echo "$memcached" >"$dir/memcached.port"
}

# True when the recorded pid runs and is the server we started (not a reused pid, not a zombie).
running() {
  local dir=$1 name=$2 pid state
  [ -f "$dir/run/$name.pid" ] || return 1
  pid=$(<"$dir/run/$name.pid")
  [ -r "/proc/$pid/cmdline" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -e "$dir" -e "memcached.*-p $(<"$dir/memcached.port")"
}

launch() {
  local dir=$1 name=$2
  shift 2
  running "$dir" "$name" && return 0
  setsid "$@" >>"$dir/log/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/run/$name.pid"
}

start_all() {
  local dir=$1 server
  launch "$dir" memcached memcached -l 127.0.0.1 -p "$(<"$dir/memcached.port")" -U 0 -m 64 \
    -u "$(id -un)"
  for server in "${SERVERS[@]}"; do
    launch "$dir" "$server" "/usr/bin/swift-$server-server" "$dir/$server-server.conf" -v
  done
}

# An authenticated HEAD of the test account: auth, memcached, proxy and account server answer.
wait_ready() {
  local dir=$1 deadline=$((SECONDS + READY_TIMEOUT))
  until "$PYTHON" - "$dir/glance-swift.conf" 2>/dev/null <<'EOF'; do
import configparser, sys, urllib.request
ref = configparser.ConfigParser()
ref.read(sys.argv[1])
r = ref["ref1"]
auth = urllib.request.Request(r["auth_address"],
                              headers={"X-Auth-User": r["user"], "X-Auth-Key": r["key"]})
with urllib.request.urlopen(auth, timeout=5) as resp:
    url, token = resp.headers["X-Storage-Url"], resp.headers["X-Auth-Token"]
head = urllib.request.Request(url, method="HEAD", headers={"X-Auth-Token": token})
urllib.request.urlopen(head, timeout=5).close()
EOF
    local server
    for server in memcached "${SERVERS[@]}"; do
      running "$dir" "$server" || die "$server exited; see $dir/log/$server.log"
    done
    ((SECONDS < deadline)) || die "no authenticated answer within ${READY_TIMEOUT}s; see $dir/log"
    sleep 0.5
  done
}

stop_one() {
  local dir=$1 name=$2 pid tries=0
  [ -f "$dir/run/$name.pid" ] || return 0
  pid=$(<"$dir/run/$name.pid")
  if running "$dir" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    while running "$dir" "$name" && ((tries < 50)); do
      sleep 0.2
      tries=$((tries + 1))
    done
    if running "$dir" "$name"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true # reaps it when this shell started it
  rm -f "$dir/run/$name.pid"
}

main() {
  local action=${1:-} dir=${2:-}
  [ -n "$action" ] && [ -n "$dir" ] || die "usage: swift.sh start|stop|status DIR"
  case "$action" in
    start)
      install_packages
      mkdir -p "$dir"
      dir=$(cd "$dir" && pwd)
      [ -f "$dir/imgfmt.conf" ] || configure "$dir"
      start_all "$dir"
      wait_ready "$dir"
      echo "swift.sh: Swift ready; imgfmt configuration in $dir/imgfmt.conf"
      ;;
    stop)
      [ -d "$dir" ] || return 0
      dir=$(cd "$dir" && pwd)
      local server
      for server in proxy object container account memcached; do stop_one "$dir" "$server"; done
      ;;
    status)
      dir=$(cd "$dir" && pwd)
      local server
      for server in memcached "${SERVERS[@]}"; do
        if running "$dir" "$server"; then echo "$server: running"; else echo "$server: stopped"; fi
      done
      ;;
    *) die "unknown action $action; use start, stop or status" ;;
  esac
}

main "$@"

#!/usr/bin/env bash
# Run a command with imgfmt's integration services up, and stop them whatever happens.
#
#   scripts/with-services.sh COMMAND [ARG...]
#
# Each service NAME is scripts/services/NAME.sh (start DIR / stop DIR); its directory is
# exported as IMGFMT_TEST_<NAME>_DIR. A service that cannot start is reported and left out:
# its tests then skip, or fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=(swift ceph)

root=$(mktemp -d "${TMPDIR:-/tmp}/imgfmt-svc.XXXXXX")
started=()

stop_services() {
  local name
  for name in "${started[@]}"; do
    "scripts/services/$name.sh" stop "$root/$name" \
      || echo "with-services: stopping $name failed" >&2
  done
  rm -rf "$root"
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for name in "${SERVICES[@]}"; do
  started+=("$name")
  if "scripts/services/$name.sh" start "$root/$name"; then
    export "IMGFMT_TEST_${name^^}_DIR=$root/$name"
  else
    echo "with-services: $name did not start; its tests will skip (or fail under CI)" >&2
  fi
done

"$@"

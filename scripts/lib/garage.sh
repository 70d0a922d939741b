#!/usr/bin/env bash
# A throw-away Garage (S3-compatible object store) for the tests: one node with
# replication_factor = 1, its metadata and data in a directory of its own under /tmp, its S3,
# RPC and admin ports on free loopback ports, one bucket and one key allowed to use it.
# `ensure_garage` (scripts/lib/setup.sh) installs the binary into $HATTAMA_TOOLS/bin.
#
# Sourced by scripts/test (start_test_garage, which exports HATTAMA_TEST_S3_ENDPOINT, _BUCKET,
# _REGION, _ACCESS_KEY_ID and _SECRET_ACCESS_KEY and stops the node when the script exits), or
# run by hand:
#   eval "$(scripts/lib/garage.sh start)"   # prints the exports
#   scripts/lib/garage.sh stop "$HATTAMA_TEST_S3_DIR"

HATTAMA_TOOLS=${HATTAMA_TOOLS:-$HOME/.cache/hattama-tools}
HATTAMA_GARAGE=${HATTAMA_GARAGE:-$HATTAMA_TOOLS/bin/garage}

# garage_free_ports N prints N free loopback TCP ports, one a line.
garage_free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# garage_start prints `export` lines for a new node's bucket, key and directory.
garage_start() {
  local dir ports s3 rpc admin garage node key_out key_id secret
  [ -x "$HATTAMA_GARAGE" ] || { echo "garage is missing: run ensure_garage (scripts/lib/setup.sh)" >&2; return 1; }
  dir=$(mktemp -d /tmp/hattama-garage.XXXXXX)
  chmod 0700 "$dir"
  mapfile -t ports < <(garage_free_ports 3)
  s3=${ports[0]} rpc=${ports[1]} admin=${ports[2]}
  cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
# Photos are JPEG or PNG, compressed already: zstd (Garage's default, level 1) would only spend
# CPU on them (measured by scripts/bench ingest --backend postgres: Garage spent 37-45 ms of CPU
# on a 4 MB photo with it, 27 without).
compression_level = "none"
# A PUT is answered once its data and metadata are on disk: a receipt is only for a durable photo.
data_fsync = true
metadata_fsync = true
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
  chmod 0600 "$dir/garage.toml"
  garage=("$HATTAMA_GARAGE" -c "$dir/garage.toml")
  "${garage[@]}" server >"$dir/server.log" 2>&1 &
  echo $! >"$dir/pid"
  # The node answers its CLI once its RPC port is up.
  for _ in $(seq 100); do
    node=$("${garage[@]}" node id -q 2>/dev/null) && break
    sleep 0.1
  done
  if [ -z "${node:-}" ]; then
    cat "$dir/server.log" >&2
    return 1
  fi
  {
    "${garage[@]}" layout assign -z dc1 -c 1G "${node%%@*}" &&
      "${garage[@]}" layout apply --version 1 &&
      "${garage[@]}" bucket create hattama-test &&
      key_out=$("${garage[@]}" key create hattama-test-key) &&
      "${garage[@]}" bucket allow --read --write --owner hattama-test --key hattama-test-key
  } >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" "$dir/server.log" >&2; return 1; }
  key_id=$(awk -F':[[:space:]]*' 'tolower($1) ~ /key id/ {print $2; exit}' <<<"$key_out")
  secret=$(awk -F':[[:space:]]*' 'tolower($1) ~ /secret key/ {print $2; exit}' <<<"$key_out")
  if [ -z "$key_id" ] || [ -z "$secret" ]; then
    echo "garage key create answered no key:" >&2
    echo "$key_out" | sed 's/\(Secret key:\).*/\1 …/' >&2
    return 1
  fi
  echo "export HATTAMA_TEST_S3_ENDPOINT='http://127.0.0.1:$s3'"
  echo "export HATTAMA_TEST_S3_BUCKET='hattama-test'"
  echo "export HATTAMA_TEST_S3_REGION='garage'"
  echo "export HATTAMA_TEST_S3_ACCESS_KEY_ID='$key_id'"
  echo "export HATTAMA_TEST_S3_SECRET_ACCESS_KEY='$secret'"
  echo "export HATTAMA_TEST_S3_DIR='$dir'"
}

# garage_stop DIR stops the node of DIR and removes it.
garage_stop() {
  local dir=$1
  [ -f "$dir/garage.toml" ] || return 0
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    sleep 0.2
  fi
  rm -rf "$dir"
}

# start_test_garage keeps a HATTAMA_TEST_S3_ENDPOINT that answers, or starts a node, exports its
# bucket and key and stops it when the calling shell exits.
start_test_garage() {
  if [ -n "${HATTAMA_TEST_S3_ENDPOINT:-}" ] && curl -s -o /dev/null "$HATTAMA_TEST_S3_ENDPOINT"; then
    return 0
  fi
  local exports
  exports=$(garage_start) || return 1
  eval "$exports"
  # Beside a trap set before (PostgreSQL's), not instead of it.
  local before=""
  if [ -n "$(trap -p EXIT)" ]; then
    eval "set -- $(trap -p EXIT)"
    before=$3
  fi
  # shellcheck disable=SC2064 # the directory is known now
  trap "${before:+$before; }garage_stop '$HATTAMA_TEST_S3_DIR'" EXIT
  echo "Garage test node in $HATTAMA_TEST_S3_DIR"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start) garage_start ;;
    stop) garage_stop "${2:?the node directory}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
  esac
fi

#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests: its own directory under /tmp, a Unix socket
# there (no TCP port), trust authentication for the one user `hattama`, and one database
# `hattama`. PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
# user that Debian's package creates.
#
# Sourced by scripts/test (start_test_postgres, which exports HATTAMA_TEST_POSTGRES_URL and
# stops the cluster when the script exits), or run by hand:
#   eval "$(scripts/lib/postgres.sh start)"   # prints the exports
#   scripts/lib/postgres.sh stop "$HATTAMA_TEST_POSTGRES_DIR"

# The binaries of Debian's postgresql-15 (not on PATH there).
HATTAMA_PG_BIN=${HATTAMA_PG_BIN:-/usr/lib/postgresql/15/bin}

# pg_cluster_start prints `export` lines for a new cluster's URL and directory.
pg_cluster_start() {
  local dir run=()
  dir=$(mktemp -d /tmp/hattama-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    run=(runuser -u postgres --)
  fi
  chmod 0700 "$dir"
  if ! "${run[@]}" "$HATTAMA_PG_BIN/initdb" -D "$dir/data" -U hattama -A trust -E UTF8 \
    --no-instructions >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    return 1
  fi
  if ! "${run[@]}" "$HATTAMA_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
    -o "-k $dir -c listen_addresses= -c max_connections=200" start >&2; then
    cat "$dir/server.log" >&2
    return 1
  fi
  "${run[@]}" "$HATTAMA_PG_BIN/createdb" -h "$dir" -U hattama hattama
  echo "export HATTAMA_TEST_POSTGRES_URL='host=$dir user=hattama dbname=hattama'"
  echo "export HATTAMA_TEST_POSTGRES_DIR='$dir'"
}

# pg_cluster_stop DIR stops the cluster of DIR and removes it.
pg_cluster_stop() {
  local dir=$1 run=()
  [ -d "$dir/data" ] || return 0
  [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
  "${run[@]}" "$HATTAMA_PG_BIN/pg_ctl" -D "$dir/data" -m immediate -s stop || true
  rm -rf "$dir"
}

# start_test_postgres keeps a HATTAMA_TEST_POSTGRES_URL that answers, or starts a cluster,
# exports its URL and stops it when the calling shell exits.
start_test_postgres() {
  if [ -n "${HATTAMA_TEST_POSTGRES_URL:-}" ] \
    && psql "$HATTAMA_TEST_POSTGRES_URL" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    return 0
  fi
  local exports
  exports=$(pg_cluster_start) || return 1
  eval "$exports"
  # shellcheck disable=SC2064 # the directory is known now
  trap "pg_cluster_stop '$HATTAMA_TEST_POSTGRES_DIR'" EXIT
  echo "PostgreSQL test cluster in $HATTAMA_TEST_POSTGRES_DIR"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start) pg_cluster_start ;;
    stop) pg_cluster_stop "${2:?the cluster directory}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
  esac
fi

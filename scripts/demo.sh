#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine with Rust: a throwaway PostgreSQL 15 with
# pg_stat_statements, and pgkpi polling it. Prints the URLs and runs until Ctrl-C.
#   DEMO_DIR   where the cluster lives (default /tmp/pgkpi-demo; removed on exit)
#   DEMO_PORT  PostgreSQL port (default 55432)
#   PGKPI_PORT pgkpi port (default 9188)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/cluster.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"

DEMO_DIR=${DEMO_DIR:-/tmp/pgkpi-demo}
DEMO_PORT=${DEMO_PORT:-55432}
PGKPI_PORT=${PGKPI_PORT:-9188}

echo "building pgkpi (release)..." >&2
cargo build --release --locked --quiet

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cluster_stop "$DEMO_DIR"
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT INT TERM

rm -rf "$DEMO_DIR"
cluster_start "$DEMO_DIR" "$DEMO_PORT"
psql -X -q -h 127.0.0.1 -p "$DEMO_PORT" -U postgres -d postgres \
  -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

DATA_SOURCE_NAME="host=127.0.0.1 port=$DEMO_PORT user=postgres dbname=postgres sslmode=disable" \
  ./target/release/pgkpi --web.listen-address "127.0.0.1:$PGKPI_PORT" &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:$PGKPI_PORT/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done

cat <<MSG

pgkpi demo is running.
  metrics:  http://127.0.0.1:$PGKPI_PORT/metrics
  status:   http://127.0.0.1:$PGKPI_PORT/
  postgres: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres
Press Ctrl-C to stop (the cluster in $DEMO_DIR is removed).
MSG
wait

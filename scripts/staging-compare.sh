#!/usr/bin/env bash
# The audit's staging comparison, end to end, on a throwaway PostgreSQL 15: the baseline schema
# and seed, pgkpi polling it with examples/pgkpi-staging.toml, Prometheus scraping pgkpi every
# second with the rules of alerts/, pgkpi-load for one phase, then migrations/001..009 (and the
# seed again, for the tables they create), the same load again, and `pgkpi report` on the two
# phases. With STAGING_HARMFUL=1, a third phase after dropping the notification queue's claim
# indexes, and a second report (migrated vs. harmful), which should fail.
#   STAGING_PHASE   length of each load phase (default 10m; the test uses about 1 minute)
#   STAGING_SETTLE  start of each phase left out of the report (default 30s)
#   STAGING_STEP    the report's step (default 30s)
#   STAGING_RATE    pgkpi-load operations per second (default 100)
#   STAGING_SCALE   seed scale (default 0.5)
#   STAGING_FORMAT  report format (default markdown)
#   STAGING_OUT     directory for the reports (default ./staging-report)
#   STAGING_HARMFUL 1 to add the harmful phase
#   STAGING_IGNORE  --ignore regex of the reports: rows shown but not counted for the exit code
#                   (the test's list and its reasons are in docs/report.md)
#   STAGING_HOLD    1 to keep PostgreSQL, pgkpi and Prometheus running after the reports (until
#                   Ctrl-C), to run `pgkpi report` again with other options
# Exit status: that of the (first) report: 0 when nothing regressed or misses its target.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/cluster.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"

PHASE=${STAGING_PHASE:-10m}
SETTLE=${STAGING_SETTLE:-30s}
STEP=${STAGING_STEP:-30s}
RATE=${STAGING_RATE:-100}
SCALE=${STAGING_SCALE:-0.5}
FORMAT=${STAGING_FORMAT:-markdown}
OUT=${STAGING_OUT:-staging-report}
HARMFUL=${STAGING_HARMFUL:-0}
mkdir -p "$OUT"

echo "building pgkpi and pgkpi-load (release)..." >&2
cargo build --release --locked --quiet --bins
pgkpi=./target/release/pgkpi

dir=$(mktemp -d /tmp/pgkpi-staging.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cluster_stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
port=$(free_port)
cluster_start "$dir" "$port"
sql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 \
  -h 127.0.0.1 -p "$port" -U postgres "$@" >/dev/null; }
sql -d postgres -c "CREATE DATABASE app"
sql -d app -c "CREATE EXTENSION pg_stat_statements"
echo "loading the baseline schema and the seed (scale $SCALE)..." >&2
sql -d app -f fixtures/baseline.sql
sql -d app -v scale="$SCALE" -f fixtures/seed.sql
dsn="host=127.0.0.1 port=$port user=postgres dbname=app sslmode=disable"

pgkpi_port=$(free_port)
DATA_SOURCE_NAME="$dsn" PGKPI_TARGET_NAME=app "$pgkpi" --config.file examples/pgkpi-staging.toml \
  --web.listen-address "127.0.0.1:$pgkpi_port" >"$dir/pgkpi.log" 2>&1 &
pids+=($!)
prom_port=$(free_port)
{
  echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
  echo "rule_files:"
  for rules in "$PWD"/alerts/*.yml; do
    [ "$(basename "$rules")" = alertmanager.yml ] || echo "  - $rules"
  done
  echo "scrape_configs: [{job_name: pgkpi, static_configs: [{targets: ['127.0.0.1:$pgkpi_port']}]}]"
} >"$dir/prometheus.yml"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" >"$dir/prometheus.log" 2>&1 &
pids+=($!)
for url in "http://127.0.0.1:$pgkpi_port/readyz" "http://127.0.0.1:$prom_port/-/ready"; do
  for _ in $(seq 60); do curl -fsS -o /dev/null "$url" 2>/dev/null && break; sleep 1; done
  curl -fsS -o /dev/null "$url" || { echo "not ready: $url" >&2; exit 1; }
done

# One phase of load; prints "START..END" of the part the report compares (after SETTLE).
phase() {
  local name=$1 start end settle
  start=$(date +%s)
  echo "phase $name: pgkpi-load for $PHASE at $RATE/s..." >&2
  local rc=0
  ./target/release/pgkpi-load --dsn "$dsn" --duration "$PHASE" --rate "$RATE" --seed 3 \
    --lock-contention --output json >"$OUT/load-$name.json" 2>"$dir/load-$name.log" || rc=$?
  # 1: the run finished with unexpected errors (listed in the summary); 2: it could not run.
  if [ "$rc" -ge 2 ]; then cat "$dir/load-$name.log" >&2; exit 1; fi
  [ "$rc" -eq 0 ] || echo "phase $name: pgkpi-load reported unexpected errors, see $OUT/load-$name.json" >&2
  end=$(date +%s)
  settle=$(humantime_seconds "$SETTLE")
  echo "$((start + settle))..$end"
}
humantime_seconds() {
  case $1 in
    *ms) echo 0 ;; *s) echo "${1%s}" ;; *m) echo $(( ${1%m} * 60 )) ;; *h) echo $(( ${1%h} * 3600 )) ;;
    *) echo "$1" ;;
  esac
}
report() {
  local name=$1 before=$2 after=$3 rc=0
  "$pgkpi" report --prometheus.url "http://127.0.0.1:$prom_port" --target app --database app \
    --before "$before" --after "$after" --step "$STEP" --format "$FORMAT" --quiet \
    ${STAGING_IGNORE:+--ignore "$STAGING_IGNORE"} \
    >"$OUT/$name.$FORMAT" || rc=$?
  echo "report $name: exit code $rc, $OUT/$name.$FORMAT" >&2
  return $rc
}

baseline=$(phase baseline)
echo "applying migrations/001..009 and the seed again..." >&2
for migration in migrations/0*.sql; do sql -d app -f "$migration"; done
sql -d app -v scale="$SCALE" -f fixtures/seed.sql
migrated=$(phase migrated)
rc=0
report migrations "$baseline" "$migrated" || rc=$?
if [ "$HARMFUL" = 1 ]; then
  echo "dropping the notification queue's claim indexes..." >&2
  sql -d app -c "DROP INDEX core.notification_queue_claim_order_idx" \
    -c "DROP INDEX core.notification_queue_claim_idx"
  harmful=$(phase harmful)
  report harmful "$migrated" "$harmful" || true
fi
if [ "${STAGING_HOLD:-0}" = 1 ]; then
  echo "holding: Prometheus http://127.0.0.1:$prom_port, ranges baseline $baseline," \
    "migrated $migrated${harmful:+, harmful $harmful}; Ctrl-C to stop" >&2
  # sleep in the background and wait, so that Ctrl-C or SIGTERM runs the cleanup at once
  while :; do sleep 3600 & wait $!; done
fi
exit $rc

#!/usr/bin/env bash
# Cost of the `locks` collector and the `activity_sampler`: database time per run (from
# pg_stat_statements, server side) and the series they export, first on a quiet server, then
# under lock contention (one holder, WAITERS sessions queued on its row, ACTIVE busy sessions).
# Usage: scripts/bench-locks.sh [SECONDS_PER_PHASE] [WAITERS] [ACTIVE]   (default 20 20 5)
# Starts its own throwaway PostgreSQL cluster and pgkpi (debug build); needs PostgreSQL 15+.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh
seconds=${1:-20}
waiters=${2:-20}
active=${3:-5}

bench_setup locks
web=$(free_port)
psql_ -d postgres -c "CREATE DATABASE bench"
psql_ -d bench -c "CREATE EXTENSION pg_stat_statements; CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)"

cargo build -q
exe=${CARGO_TARGET_DIR:-target}/debug/pgkpi
cat >"$dir/pgkpi.toml" <<EOF
[collectors.locks]
interval = "1s"
[[targets]]
name = "bench"
dsn = "host=127.0.0.1 port=$port user=postgres dbname=bench sslmode=disable"
EOF
"$exe" --config.file "$dir/pgkpi.toml" --web.listen-address "127.0.0.1:$web" --log.level warn \
  2>"$dir/pgkpi.log" &
pids+=($!)

report() {
  local phase=$1
  echo "== $phase ($seconds s, locks every 1 s, sampler every 1 s)"
  psql_ -d bench -F '|' -c "
    SELECT CASE WHEN query LIKE '%pgkpi activity_sampler%' THEN 'activity_sampler query'
                WHEN query LIKE '%pg_blocking_pids%' THEN 'locks: tree query'
                ELSE 'locks: inventory query' END,
           calls, round(mean_exec_time::numeric, 3), round(max_exec_time::numeric, 3)
    FROM pg_stat_statements
    WHERE query NOT LIKE '%pg_stat_statements%'
      AND (query LIKE '%pgkpi activity_sampler%' OR query LIKE '%pg_blocking_pids%'
           OR query LIKE '%FROM pg_locks l%')
    ORDER BY 1" \
    | awk -F'|' '{ printf "%-24s calls %5s  database time per call: mean %7s ms, max %7s ms\n", $1, $2, $3, $4 }'
  local body
  body=$(curl -s "http://127.0.0.1:$web/metrics")
  for collector in locks activity_sampler; do
    grep "^pgkpi_collector_last_duration_seconds{.*collector=\"$collector\"" <<<"$body" \
      | awk -v c="$collector" '{ printf "%-24s last run wall time (client side) %.2f ms\n", c, $2 * 1000 }'
  done
  echo "series: locks $(grep -cE '^pg_(locks_|lock_waiting|lock_oldest|blocking_)' <<<"$body")," \
    "activity_sampler $(grep -cE '^pg_(activity_samples|active_sessions_sampled|lock_wait_seconds)' <<<"$body")"
}

sleep 2
psql_ -d bench -c "SELECT pg_stat_statements_reset()" >/dev/null
sleep "$seconds"
report "quiet server"

# Contention: a holder keeps row 1 for the phase; waiters queue on it; busy sessions spin.
hold=$((seconds + 5))
psql_ -d bench -c "BEGIN; UPDATE t SET v = v + 1 WHERE id = 1; SELECT pg_sleep($hold); COMMIT" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
for _ in $(seq 1 "$waiters"); do
  psql_ -d bench -c "UPDATE t SET v = v + 1 WHERE id = 1" >/dev/null 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 "$active"); do
  psql_ -d bench -c "SELECT count(*) FROM generate_series(1, 10000000000)" >/dev/null 2>&1 &
  pids+=($!)
done
sleep 2
psql_ -d bench -c "SELECT pg_stat_statements_reset()" >/dev/null
sleep "$seconds"
report "under contention: 1 holder, $waiters waiters, $active busy sessions"
curl -s "http://127.0.0.1:$web/metrics" | grep -E '^pg_(blocking_blocked|blocking_max_depth|lock_waiting)'

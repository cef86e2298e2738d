#!/usr/bin/env bash
# What a server target costs as its number of databases grows: one pgkpi with default settings
# and one server target ([targets.databases], default budget of 3 connections) on a cluster of
# N small databases (each: 5 tables of 10 rows with a primary key and an index, one of them
# with a serial), for each N. Prints per N:
#   * first pass s: from start until every database had its first turn (pgkpi_database_up);
#   * RSS MiB: pgkpi's resident memory (VmRSS) at the end of the measured period, and peak
#     (VmHWM);
#   * series: samples in the last scrape;
#   * stmt ms/min: server time of pgkpi's statements (pg_stat_statements, all databases,
#     executed and planned) per minute of the measured period;
#   * active ms/min: pg_stat_database.active_time of the bench databases per minute (time their
#     backends spent running statements, connection setup included; only pgkpi connects there);
#   * sessions/min: connections pgkpi opened to the bench databases per minute (their turns);
#   * most conns: the most pgkpi sessions seen in pg_stat_activity, sampled every 0.2 s.
# Then the memory per additional database: (RSS at the largest N - RSS at the smallest) /
# (difference in N).
# Usage: scripts/bench-fleet.sh [COUNTS...]   (default: 10 100 300)
#   BENCH_SECONDS   measured period per count, after the first pass (default 300)
#   BENCH_PGKPI_BIN a pgkpi binary to use instead of building the release one
# Starts its own throwaway PostgreSQL cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/cluster.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"
counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(10 100 300)
seconds=${BENCH_SECONDS:-300}
if [ -z "${BENCH_PGKPI_BIN:-}" ]; then
  cargo build --release -q
  BENCH_PGKPI_BIN=${CARGO_TARGET_DIR:-target}/release/pgkpi
fi

bench_setup fleet
psql_ -d postgres -c "CREATE ROLE bench_pgkpi LOGIN IN ROLE pg_monitor" \
  -c "CREATE EXTENSION pg_stat_statements" \
  -c "CREATE DATABASE bench_template"
psql_ -d bench_template -c "DO \$\$ BEGIN FOR i IN 1..5 LOOP
    EXECUTE format('CREATE TABLE t%s (id %s PRIMARY KEY, code int, note text)', i,
                   CASE WHEN i = 1 THEN 'serial' ELSE 'int' END);
    EXECUTE format('CREATE INDEX t%s_code_idx ON t%s (code)', i, i);
    EXECUTE format('INSERT INTO t%s (id, code, note) SELECT g, g %% 3, ''n'' FROM generate_series(1, 10) g', i);
  END LOOP; END \$\$" -c "VACUUM ANALYZE"
psql_ -d postgres -c "ALTER DATABASE bench_template WITH IS_TEMPLATE true"

made=0
# Creates bench databases up to $1 (cumulative: 100 adds 90 to the first 10).
grow_to() {
  while [ "$made" -lt "$1" ]; do
    made=$((made + 1))
    psql_ -d postgres -c "CREATE DATABASE bench_$(printf %04d "$made") TEMPLATE bench_template"
  done
}

# The bench databases' totals: "active_ms sessions".
database_totals() {
  psql_ -d postgres -F ' ' -c "SELECT round(coalesce(sum(active_time), 0)::numeric), coalesce(sum(sessions), 0)
    FROM pg_stat_database WHERE datname LIKE 'bench\_0%'"
}

scrape() { curl -sf "http://127.0.0.1:$web/metrics"; }
value() { awk -v n="$1" '$1 == n { print $2 }'; }

printf '%-6s %12s %8s %8s %8s %12s %14s %13s %10s\n' \
  dbs "first pass s" "RSS MiB" "peak MiB" series "stmt ms/min" "active ms/min" "sessions/min" "most conns"
declare -A rss_kb
for n in "${counts[@]}"; do
  grow_to "$n"
  web=$(free_port)
  cat >"$dir/pgkpi.toml" <<TOML
[[targets]]
name = "fleet"
dsn = "host=127.0.0.1 port=$port user=bench_pgkpi dbname=postgres sslmode=disable"
[targets.databases]
include = ["bench_0*"]
TOML
  psql_ -d postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
  started=$(date +%s.%N)
  "$BENCH_PGKPI_BIN" --config.file "$dir/pgkpi.toml" --web.listen-address "127.0.0.1:$web" \
    --log.level warn 2>"$dir/pgkpi-$n.log" &
  pgkpi_pid=$!
  pids+=("$pgkpi_pid")
  # The first pass: every database has had a turn (a database_up sample of 1).
  for ((i = 0; i < 3000; i++)); do
    up=$(scrape 2>/dev/null | awk '/^pgkpi_database_up\{/ && $2 == 1 { c++ } END { print c + 0 }' || echo 0)
    [ "$up" -ge "$n" ] && break
    sleep 0.2
  done
  [ "$up" -ge "$n" ] || { echo "only $up of $n databases polled; see $dir/pgkpi-$n.log" >&2; exit 1; }
  first=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  psql_ -d postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
  read -r active0 sessions0 < <(database_totals)
  start=$(date +%s)
  most=0
  while [ $(($(date +%s) - start)) -lt "$seconds" ]; do
    c=$(psql_ -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench_pgkpi'")
    [ "$c" -gt "$most" ] && most=$c
    sleep 0.2
  done
  minutes=$(awk -v s="$(($(date +%s) - start))" 'BEGIN { print s / 60 }')
  kill -0 "$pgkpi_pid" 2>/dev/null || { echo "pgkpi exited early, see $dir/pgkpi-$n.log" >&2; exit 1; }
  body=$(scrape)
  series=$(grep -cv '^#' <<<"$body" || true)
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pgkpi_pid/status")
  peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pgkpi_pid/status")
  rss_kb[$n]=$rss
  stmt=$(psql_ -d postgres -c "SELECT round((coalesce(sum(total_exec_time + total_plan_time), 0) / $minutes)::numeric)
    FROM pg_stat_statements WHERE userid = 'bench_pgkpi'::regrole")
  read -r active1 sessions1 < <(database_totals)
  printf '%-6s %12s %8.1f %8.1f %8s %12s %14s %13s %10s\n' "$n" "$first" \
    "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$peak" 'BEGIN { print k / 1024 }')" \
    "$series" "$stmt" \
    "$(awk -v a="$active0" -v b="$active1" -v m="$minutes" 'BEGIN { printf "%.0f", (b - a) / m }')" \
    "$(awk -v a="$sessions0" -v b="$sessions1" -v m="$minutes" 'BEGIN { printf "%.1f", (b - a) / m }')" \
    "$most"
  kill "$pgkpi_pid"
  wait "$pgkpi_pid" 2>/dev/null || true
  errors=$(grep -c ' ERROR \| WARN ' "$dir/pgkpi-$n.log" || true)
  [ "$errors" -eq 0 ] || { echo "pgkpi logged $errors warnings or errors:" >&2; head -5 "$dir/pgkpi-$n.log" >&2; }
done
if [ ${#counts[@]} -ge 2 ]; then
  low=${counts[0]} high=${counts[${#counts[@]} - 1]}
  awk -v a="${rss_kb[$low]}" -v b="${rss_kb[$high]}" -v l="$low" -v h="$high" \
    'BEGIN { printf "memory per additional database: %.1f KiB ((RSS at %d - RSS at %d) / %d)\n", (b - a) / (h - l), h, l, h - l }'
fi

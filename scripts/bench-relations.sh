#!/usr/bin/env bash
# Cost of the table, index and partition collectors (relation_stats, relation_sizes,
# index_health, partitions) as the catalogue grows: for each scale, a fresh database with N
# tables (primary key + one secondary index, 10 analyzed rows each) plus 10 partitioned tables
# of 12 monthly partitions, then pgkpi polls it with the four collectors every 10s and
# default caps. Prints per collector the database time per run (pg_stat_statements, server
# side, summed over its queries), the last run's wall time (pgkpi_collector_last_duration_seconds,
# client side) and the series it exports, then pgkpi's resident memory at that scale.
# Usage: scripts/bench-relations.sh [SCALES...]   (default: 100 1000 10000)
# Starts its own throwaway PostgreSQL cluster and pgkpi (debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh
scales=("$@")
[ ${#scales[@]} -eq 0 ] && scales=(100 1000 10000)

bench_setup relations

cargo build -q
exe=${CARGO_TARGET_DIR:-target}/debug/pgkpi
collectors=(relation_stats relation_sizes index_health partitions)

# Query text fragments that identify each collector's statements in pg_stat_statements.
declare -A fragment=(
  [relation_stats]="%pg_stat_user_tables s JOIN pg_class c%|%idx_tup_read, s.idx_tup_fetch%"
  [relation_sizes]="%pg_table_size(t.relid)%|%amname = 'btree'%"
  [index_health]="%g.scans = 0%|%NOT x.indisvalid%|%first_value(x.indexrelid)%|%pg_postmaster_start_time()%"
  [partitions]="%pg_partition_tree(k.oid)%"
)
# Families of each collector, for the series count.
declare -A families=(
  [relation_stats]='^pg_(table_(seq_|idx_|tup_)|index_(scans|tup_|last_scan))'
  [relation_sizes]='^pg_(table_(size|heap_size|toast_size|indexes_size|bloat)|index_(size|bloat))_bytes'
  [index_health]='^pg_index_(unused|usage_stats|invalid|duplicate)'
  [partitions]='^pg_partitioned_table_'
)

runs() {
  curl -s "http://127.0.0.1:$web/metrics" \
    | grep "^pgkpi_collector_runs_total{collector=\"$1\"" | awk '{ print $2 }' || true
}

printf '%-8s %-15s %12s %12s %8s %8s\n' tables collector "db ms/run" "wall ms" series dropped
for n in "${scales[@]}"; do
  db="bench_$n"
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  psql_ -d "$db" -c "CREATE EXTENSION pg_stat_statements"
  # Tables in batches of 500 per transaction (max_locks_per_transaction).
  for ((from = 1; from <= n; from += 500)); do
    to=$((from + 499 < n ? from + 499 : n))
    psql_ -d "$db" -c "DO \$\$ BEGIN FOR i IN $from..$to LOOP
      EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, code int, note text)', i);
      EXECUTE format('CREATE INDEX t%s_code_idx ON t%s (code)', i, i);
      EXECUTE format('INSERT INTO t%s SELECT g, g %% 3, ''n'' FROM generate_series(1, 10) g', i);
    END LOOP; END \$\$"
  done
  bench_partitioned_tables "$db"
  psql_ -d "$db" -c "ANALYZE"

  web=$(free_port)
  {
    for c in "${collectors[@]}"; do printf '[collectors.%s]\ninterval = "10s"\n' "$c"; done
    printf '[session]\nstatement_timeout = "60s"\n'
    printf '[[targets]]\nname = "bench"\ndsn = "host=127.0.0.1 port=%s user=postgres dbname=%s sslmode=disable"\n' "$port" "$db"
  } >"$dir/pgkpi.toml"
  "$exe" --config.file "$dir/pgkpi.toml" --web.listen-address "127.0.0.1:$web" --log.level warn \
    2>"$dir/pgkpi-$n.log" &
  pgkpi_pid=$!
  pids+=("$pgkpi_pid")
  # One warm-up run of each, then measure three.
  for c in "${collectors[@]}"; do
    until [ "$(runs "$c")" ] && [ "$(runs "$c")" -ge 1 ]; do sleep 1; done
  done
  psql_ -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
  start=$(runs relation_sizes)
  for c in "${collectors[@]}"; do
    until [ "$(runs "$c")" -ge $((start + 3)) ]; do sleep 1; done
  done
  body=$(curl -s "http://127.0.0.1:$web/metrics")
  for c in "${collectors[@]}"; do
    like=$(sed "s/'/''/g; s/|/' OR query LIKE '/g" <<<"${fragment[$c]}")
    db_ms=$(psql_ -d "$db" -c "
      SELECT round((sum(total_exec_time) / greatest(max(calls), 1))::numeric, 1)
      FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND query NOT LIKE '%pg_stat_statements%' AND (query LIKE '$like')")
    wall=$(grep "^pgkpi_collector_last_duration_seconds{collector=\"$c\"" <<<"$body" | awk '{ printf "%.1f", $2 * 1000 }' || true)
    series=$(grep -cE "${families[$c]}" <<<"$body" || true)
    dropped=$(grep "^pgkpi_collector_dropped_series{collector=\"$c\"" <<<"$body" | awk '{ print $2 }' || true)
    errors=$(grep "^pgkpi_collector_errors_total{collector=\"$c\"" <<<"$body" | awk '{ print $2 }' || true)
    printf '%-8s %-15s %12s %12s %8s %8s%s\n' "$n" "$c" "$db_ms" "$wall" "$series" "${dropped:-0}" \
      "$([ "${errors:-0}" != 0 ] && echo "  ERRORS: $errors, see $dir/pgkpi-$n.log")"
  done
  rss=$(awk '/^process_resident_memory_bytes /{ printf "%.1f", $2 / 1048576 }' <<<"$body")
  printf '%-8s pgkpi resident memory: %s MiB\n' "$n" "$rss"
  kill "$pgkpi_pid"
  wait "$pgkpi_pid" 2>/dev/null || true
  pgkpi_pid=""
  psql_ -d postgres -c "DROP DATABASE $db"
done

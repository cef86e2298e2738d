#!/usr/bin/env bash
# Database cost of the `statements` collector with many distinct statements, next to the cost
# of one `SELECT * FROM pg_stat_statements` on the same server.
#
# Starts a throwaway PostgreSQL (pg_stat_statements.max = 10000), creates N distinct statement
# shapes (default 5000, each with a ~300-byte text like an ORM's), runs pgkpi with only the
# `server` and `statements` collectors at a 1 s interval, runs every shape once (all new: one
# text read), then keeps ~10 % of them busy for a while, and reads the exporter's own
# statements back from pg_stat_statements (they carry a `pgkpi statements: <what>` comment),
# and pgkpi's resident memory after the run.
#
# Usage: scripts/bench-statements.sh [N] [SECONDS]     (BENCH_PGKPI_BIN to use a built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh
n=${1:-5000}
seconds=${2:-20}
http=${BENCH_HTTP:-127.0.0.1:9199}
if [ -z "${BENCH_PGKPI_BIN:-}" ]; then
  cargo build --release -q
  BENCH_PGKPI_BIN=${CARGO_TARGET_DIR:-target}/release/pgkpi
fi

bench_setup statements
psql_ -d postgres -c "ALTER SYSTEM SET pg_stat_statements.max = 10000" >/dev/null
cluster_stop "$dir"
cluster_start "$dir" "$port"
psql_ -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_ -d bench -c "CREATE EXTENSION pg_stat_statements" >/dev/null

# N shapes: 100 columns in ceil(N/100) tables; `SELECT c<j> FROM t<k>` differ in queryid.
tables=$(( (n + 99) / 100 ))
{
  for k in $(seq 1 "$tables"); do
    printf 'CREATE TABLE t%d (' "$k"
    for j in $(seq 1 99); do printf 'c%d int, ' "$j"; done
    printf 'c100 int);\n'
  done
} | psql_ -d bench >/dev/null
pad=$(printf 'x%.0s' $(seq 1 250))
statements=$dir/statements.sql
for i in $(seq 0 $((n - 1))); do
  printf 'SELECT /* %s */ c%d FROM t%d WHERE c1 = 1;\n' "$pad" $((i % 100 + 1)) $((i / 100 + 1))
done >"$statements"
head -n $((n / 10)) "$statements" >"$dir/busy.sql"

cat >"$dir/pgkpi.toml" <<TOML
[web]
listen_address = "$http"
[collectors.statements]
interval = "1s"
[[statements.workloads]]
name = "chat"
query = 'chat\.(messages|conversations)'
[[targets]]
name = "bench"
dsn = "host=127.0.0.1 port=$port user=postgres dbname=bench sslmode=disable"
TOML
# Only `server` and `statements`: disable the other collectors pgkpi knows.
for c in $("$BENCH_PGKPI_BIN" metrics-reference | sed -n 's/^## Collector `\(.*\)`.*/\1/p'); do
  case $c in server | statements) ;; *) printf '[collectors.%s]\nenabled = false\n' "$c" >>"$dir/pgkpi.toml" ;; esac
done
"$BENCH_PGKPI_BIN" --config.file "$dir/pgkpi.toml" --log.level warn 2>"$dir/pgkpi.log" &
pgkpi_pid=$!
pids+=("$pgkpi_pid")
sleep 3
psql_ -d bench -c "SELECT pg_stat_statements_reset()" >/dev/null
sleep 2

psql_ -d bench -f "$statements" >/dev/null # every shape new once: one text read
end=$((SECONDS + seconds))
while [ $SECONDS -lt $end ]; do
  psql_ -d bench -f "$dir/busy.sql" >/dev/null
  sleep 0.5
done
sleep 2
rss=$(curl -s "http://$http/metrics" | awk '/^process_resident_memory_bytes /{ printf "%.1f", $2 / 1048576 }')
kill "$pgkpi_pid"
pgkpi_pid=

# The same server's cost of the naive read (query texts included), ten times.
for _ in $(seq 1 10); do
  psql_ -d bench -c "SELECT * FROM pg_stat_statements" >/dev/null
done

echo "pg_stat_statements entries: $(psql_ -d bench -c 'SELECT count(*) FROM pg_stat_statements')" \
  "  query text file: $(psql_ -d bench -c "SELECT pg_size_pretty(sum(length(query))) FROM pg_stat_statements")"
echo "pgkpi resident memory after the run (release build): ${rss:-?} MiB"
echo "server-side execution time (pg_stat_statements.total_exec_time), per call:"
psql_ -d bench -F ' | ' -P footer=off -c "
  SELECT rpad(coalesce(substring(query FROM 'pgkpi statements: ([a-z]+)'), 'SELECT * FROM pg_stat_statements'), 34),
         lpad(calls::text, 5) AS calls,
         lpad(round(mean_exec_time::numeric, 3)::text, 9) || ' ms mean',
         lpad(round(max_exec_time::numeric, 3)::text, 9) || ' ms max'
    FROM pg_stat_statements
   WHERE query LIKE '%pgkpi statements:%' OR query ~* '^SELECT \* FROM pg_stat_statements\$'
   ORDER BY 1"
psql_ -d bench -c "
  WITH own AS (SELECT sum(total_exec_time) FILTER (WHERE query NOT LIKE '%statements: text%') AS steady,
                      max(calls) FILTER (WHERE query LIKE '%statements: poll%') AS polls
                 FROM pg_stat_statements WHERE query LIKE '%pgkpi statements:%'),
       naive AS (SELECT mean_exec_time FROM pg_stat_statements
                  WHERE query ~* '^SELECT \* FROM pg_stat_statements\$')
  SELECT format('collector per poll (all its statements but the text read): %s ms over %s polls; '
                'SELECT * FROM pg_stat_statements: %s ms (%sx)',
                round((steady / polls)::numeric, 3), polls, round(naive.mean_exec_time::numeric, 3),
                round((naive.mean_exec_time / (steady / polls))::numeric, 1))
    FROM own, naive"

#!/usr/bin/env bash
# Parse rate and memory of the latency log source while it reads a large server log.
#
# Starts a throwaway PostgreSQL writing jsonlog (no rotation), runs pgkpi with only the
# `server` and `statements` collectors at a 1 s interval and `[statements.log] access = "path"`,
# then appends SIZE MiB (default 1024) of synthetic duration records (~500 bytes each, like
# `duration: 12.345 ms  execute s0: SELECT ...` with parameters in `detail`) to the server's
# current log file and follows pgkpi's counters until it has read them all. Prints the records
# parsed per second of wall time (bounded by the reader's 64 MiB per poll) and per second of
# pgkpi's CPU time, and pgkpi's resident memory at each quarter of the log: memory must not
# grow with the log's size.
#
# Usage: scripts/bench-log.sh [SIZE_MIB]     (BENCH_PGKPI_BIN to use a built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh
size_mib=${1:-1024}
http=${BENCH_HTTP:-127.0.0.1:9198}
if [ -z "${BENCH_PGKPI_BIN:-}" ]; then
  cargo build --release -q
  BENCH_PGKPI_BIN=${CARGO_TARGET_DIR:-target}/release/pgkpi
fi

bench_setup log
psql_ -d postgres -c "ALTER SYSTEM SET logging_collector = on" >/dev/null
psql_ -d postgres -c "ALTER SYSTEM SET log_destination = 'jsonlog'" >/dev/null
psql_ -d postgres -c "ALTER SYSTEM SET log_directory = 'log'" >/dev/null
psql_ -d postgres -c "ALTER SYSTEM SET log_rotation_size = 0" >/dev/null
psql_ -d postgres -c "ALTER SYSTEM SET log_rotation_age = 0" >/dev/null
psql_ -d postgres -c "ALTER SYSTEM SET log_min_duration_sample = 0" >/dev/null
psql_ -d postgres -c "ALTER SYSTEM SET log_statement_sample_rate = 0.01" >/dev/null
cluster_stop "$dir"
cluster_start "$dir" "$port"
psql_ -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_ -d bench -c "CREATE EXTENSION pg_stat_statements" >/dev/null
logfile=$dir/data/$(psql_ -d bench -c "SELECT pg_current_logfile('jsonlog')")

cat >"$dir/pgkpi.toml" <<TOML
[web]
listen_address = "$http"
[collectors.statements]
interval = "1s"
[statements.log]
access = "path"
[[statements.workloads]]
name = "chat"
query = 'chat\.messages'
[[targets]]
name = "bench"
dsn = "host=127.0.0.1 port=$port user=postgres dbname=bench sslmode=disable"
TOML
for c in $("$BENCH_PGKPI_BIN" metrics-reference | sed -n 's/^## Collector `\(.*\)`.*/\1/p'); do
  case $c in server | statements) ;; *) printf '[collectors.%s]\nenabled = false\n' "$c" >>"$dir/pgkpi.toml" ;; esac
done
"$BENCH_PGKPI_BIN" --config.file "$dir/pgkpi.toml" --log.level warn 2>"$dir/pgkpi.log" &
pgkpi_pid=$!
pids+=("$pgkpi_pid")
# CPU seconds of pgkpi from /proc (process_cpu_seconds_total is in whole seconds).
cpu_seconds() { awk -v tck="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / tck }' "/proc/$pgkpi_pid/stat"; }

# The sum of the samples of one family (or of the exact series given with its labels).
metric() { curl -s "http://$http/metrics" | awk -v m="$1" 'index($1, m) == 1 && (length($1) == length(m) || substr($1, length(m) + 1, 1) == "{" || substr(m, length(m)) == "}") { s += $NF } END { printf "%.0f", s }'; }
ok='pg_statement_log_source_status{target="bench",status="ok"}'
for _ in $(seq 1 60); do
  [ "$(metric "$ok")" = 1 ] && break
  sleep 1
done
[ "$(metric "$ok")" = 1 ] || {
  echo "the log source did not start; pgkpi log:" >&2
  cat "$dir/pgkpi.log" >&2
  exit 1
}

# A 4 MiB block of duration records, appended until SIZE MiB.
block=$dir/block.json
awk 'BEGIN {
  for (i = 0; bytes < 4 * 1048576; i++) {
    line = sprintf("{\"timestamp\":\"2026-12-04 20:00:%02d.%03d UTC\",\"user\":\"app\",\"dbname\":\"bench\",\"pid\":%d,\"remote_host\":\"10.0.0.7\",\"remote_port\":51234,\"session_id\":\"6750e8f0.%x\",\"line_num\":%d,\"ps\":\"SELECT\",\"session_start\":\"2026-12-04 19:00:00 UTC\",\"vxid\":\"3/%d\",\"txid\":0,\"error_severity\":\"LOG\",\"message\":\"duration: %d.%03d ms  execute s%d: SELECT m.id, m.body, m.created_at FROM chat.messages m WHERE m.conversation_id = $1 AND m.created_at > $2 ORDER BY m.created_at DESC LIMIT 50\",\"detail\":\"parameters: $1 = '\''%d'\'', $2 = '\''2026-12-01'\''\",\"application_name\":\"api\",\"backend_type\":\"client backend\",\"query_id\":-%d}",
      i % 60, i % 1000, 1000 + i % 50, i, i, i, (i * 7919) % 80, (i * 104729) % 1000, i % 8, i, 4242 + i % 16)
    print line
    bytes += length(line) + 1
  }
}' >"$block"
block_records=$(wc -l <"$block")
blocks=$(( (size_mib + 3) / 4 ))
expected=$(( $(metric pgkpi_statements_log_records_total) + blocks * block_records ))
cpu0=$(cpu_seconds)
rss0=$(curl -s "http://$http/metrics" | awk '/^process_resident_memory_bytes /{ printf "%.1f", $2 / 1048576 }')
start=$(date +%s.%N)
# The server's own writes go to the same file meanwhile; records are whole lines either way.
for _ in $(seq 1 "$blocks"); do cat "$block" >>"$logfile"; done
written=$(date +%s.%N)
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
echo "appended $((blocks * 4)) MiB ($((blocks * block_records)) records) in $(calc %.1f "$written - $start") s; pgkpi resident memory before: ${rss0} MiB"
quarter=1
# Bounded: at a 1 s poll the reader takes 64 MiB a second; allow ten times that, plus a minute.
deadline=$(( $(date +%s) + 60 + blocks * 4 * 10 / 64 ))
while :; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "pgkpi read $(metric pgkpi_statements_log_records_total) of $expected records before the deadline; lost: $(curl -s "http://$http/metrics" | grep '^pgkpi_statements_log_lost_total' | tr '\n' ' ')" >&2
    exit 1
  fi
  read_now=$(metric pgkpi_statements_log_records_total)
  done_share=$(( (read_now - (expected - blocks * block_records)) * 4 / (blocks * block_records) ))
  if [ "$done_share" -ge "$quarter" ] && [ "$quarter" -le 4 ]; then
    rss=$(curl -s "http://$http/metrics" | awk '/^process_resident_memory_bytes /{ printf "%.1f", $2 / 1048576 }')
    echo "  $((quarter * 25)) % read: pgkpi resident memory ${rss} MiB"
    quarter=$((quarter + 1))
  fi
  [ "$read_now" -ge "$expected" ] && [ "$quarter" -gt 4 ] && break
  sleep 0.2
done
end=$(date +%s.%N)
cpu1=$(cpu_seconds)
records=$((blocks * block_records))
wall=$(calc %.1f "$end - $start")
cpu=$(calc %.2f "$cpu1 - $cpu0")
echo "records parsed: $records in ${wall} s wall ($(calc %.0f "$records / $wall") records/s, bounded by 64 MiB per 1 s poll)"
echo "pgkpi CPU time: ${cpu} s ($(calc %.0f "$records / $cpu") records per CPU second)"
echo "lost: $(curl -s "http://$http/metrics" | grep '^pgkpi_statements_log_lost_total' | awk '{ printf "%s ", $0 }')"

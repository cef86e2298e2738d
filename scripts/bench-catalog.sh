#!/usr/bin/env bash
# Side by side on one database: the cost of pgkpi (defaults) and of postgres_exporter 0.11.1
# (its default collectors plus its example queries) as the catalogue grows. For each scale, a
# fresh database with N tables (primary key and two secondary indexes, 10 analyzed rows each)
# plus 10 partitioned tables of 12 monthly partitions and a DEFAULT each; both exporters run at
# the same time, each as its own role (pg_monitor), and both are scraped every 15 s for
# BENCH_SECONDS. Prints per exporter:
#   * /metrics median: wall time of its scrapes (curl's time_total, the body discarded),
#     median over the run, with every exporter scraped at the same instant (contention
#     included);
#   * apart: for pgkpi, the median of a second scrape half an interval later, alone, as
#     Prometheus spreads the scrapes of its targets over the interval;
#   * gzip: for pgkpi, the median of a third scrape right after it, alone, asking for gzip as
#     Prometheus does;
#   * series: samples in the last scrape (kept in a file, not timed);
#   * peak RSS: the process's VmHWM at the end of the run;
#   * db ms/min: server time of the role's statements (pg_stat_statements, top level, executed
#     and planned) per minute of the run, startup included (see BENCH_WARMUP); "slowest" is
#     the longest single statement execution (max_exec_time);
#   * backends MB: private memory (RssAnon) of the role's backends at the end of the run, summed
#     (and how many backends).
# Usage: scripts/bench-catalog.sh [SCALES...]   (default: 1000 10000 50000)
#   BENCH_SECONDS   measured period per scale (default 600: the backends' memory after 10 minutes)
#   BENCH_PGKPI_BIN a pgkpi binary to use instead of building the release one
#   BENCH_TOP       also print each exporter's N costliest statements (calls, total and max ms)
#   BENCH_BASELINE_BIN  another pgkpi binary (an earlier version) run in the same window as its
#                   own role, printed as "pgkpi baseline": before and after side by side
#   BENCH_EXPORTERS which of "pgkpi anchor" to run (default both; "pgkpi" alone measures pgkpi
#                   on a machine the anchor's scrapes do not saturate, as at 50 000 tables)
#   BENCH_WARMUP    seconds the exporters run before the measured period starts (default 0:
#                   their start, a large catalogue's first pass included, is measured)
#   BENCH_DIR       keep a cluster per scale in BENCH_DIR/N after the run, and reuse the
#                   database a run there has built (50 000 tables take minutes to build);
#                   pg_stat_statements is reset before each run either way. Each scale has a
#                   cluster of its own, as without BENCH_DIR: both exporters read the size of
#                   every database of the server, which would walk the other scales' files.
# Starts its own throwaway PostgreSQL cluster; installs postgres_exporter from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/cluster.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}" prometheus-postgres-exporter
scales=("$@")
[ ${#scales[@]} -eq 0 ] && scales=(1000 10000 50000)
seconds=${BENCH_SECONDS:-600}
if [ -z "${BENCH_PGKPI_BIN:-}" ]; then
  cargo build --release -q
  BENCH_PGKPI_BIN=${CARGO_TARGET_DIR:-target}/release/pgkpi
fi
anchor=/usr/bin/prometheus-postgres-exporter
queries=/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml

# The anchor's example queries read pg_stat_statements; both roles read statistics via pg_monitor.
create_roles() {
  local role
  for role in bench_pgkpi bench_anchor bench_baseline; do
    psql_ -d postgres -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE $role LOGIN IN ROLE pg_monitor;
      END IF; END \$\$"
  done
}
kept=${BENCH_DIR:-}
if [ -z "$kept" ]; then
  bench_setup catalog
  create_roles
fi
read -r -a exporters <<<"${BENCH_EXPORTERS:-pgkpi anchor}"
[ -n "${BENCH_BASELINE_BIN:-}" ] && exporters+=(baseline)

# Private memory (RssAnon, kB) of a role's backends: "total_kB count".
backend_memory() {
  local pids p total=0 count=0 kb
  pids=$(psql_ -d postgres -c "SELECT pid FROM pg_stat_activity WHERE usename = '$1'")
  for p in $pids; do
    kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    [ -n "$kb" ] || continue
    total=$((total + kb))
    count=$((count + 1))
  done
  echo "$total $count"
}

median() { sort -n "$1" | awk '{ t[NR] = $1 } END { if (NR) printf "%.2f", t[int((NR + 1) / 2)] * 1000 }'; }

printf '%-7s %-17s %10s %9s %8s %8s %10s %10s %10s %14s %7s\n' \
  tables exporter "median ms" "apart ms" "gzip ms" series "peak MiB" "db ms/min" "slowest ms" \
  "backends MB" errors
for n in "${scales[@]}"; do
  if [ -n "$kept" ]; then
    [ -n "${dir:-}" ] && cluster_stop "$dir"
    BENCH_DIR=$kept/$n bench_setup catalog
    create_roles
  fi
  db="bench_$n"
  # A database is marked built by its comment, set once everything below is in place.
  built=$(psql_ -d postgres -c "SELECT shobj_description(oid, 'pg_database') FROM pg_database
    WHERE datname = '$db'")
  if [ -n "${BENCH_DIR:-}" ] && [ "$built" = built ]; then
    echo "reusing $db in $dir" >&2
  else
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql_ -d "$db" -c "CREATE EXTENSION pg_stat_statements"
    # Tables in batches of 250 per transaction (max_locks_per_transaction).
    for ((from = 1; from <= n; from += 250)); do
      to=$((from + 249 < n ? from + 249 : n))
      psql_ -d "$db" -c "DO \$\$ BEGIN FOR i IN $from..$to LOOP
        EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, code int, at timestamptz, note text)', i);
        EXECUTE format('CREATE INDEX t%s_code_idx ON t%s (code)', i, i);
        EXECUTE format('CREATE INDEX t%s_at_idx ON t%s (at)', i, i);
        EXECUTE format('INSERT INTO t%s SELECT g, g %% 3, now(), ''n'' FROM generate_series(1, 10) g', i);
      END LOOP; END \$\$"
    done
    bench_partitioned_tables "$db"
    psql_ -d "$db" -c "VACUUM ANALYZE"
    psql_ -d "$db" -c "CHECKPOINT"
    psql_ -d postgres -c "COMMENT ON DATABASE $db IS 'built'"
  fi

  declare -A web pid name
  psql_ -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
  for who in "${exporters[@]}"; do
    web[$who]=$(free_port)
    if [ "$who" = anchor ]; then
      DATA_SOURCE_NAME="host=127.0.0.1 port=$port user=bench_anchor dbname=$db sslmode=disable" \
        "$anchor" --web.listen-address "127.0.0.1:${web[$who]}" --extend.query-path "$queries" \
        --log.level warn 2>"$dir/anchor-$n.log" &
      name[$who]=postgres_exporter
    else
      printf '[[targets]]\nname = "bench"\ndsn = "host=127.0.0.1 port=%s user=bench_%s dbname=%s sslmode=disable"\n' \
        "$port" "$who" "$db" >"$dir/$who.toml"
      exe=$BENCH_PGKPI_BIN
      [ "$who" = baseline ] && exe=$BENCH_BASELINE_BIN
      "$exe" --config.file "$dir/$who.toml" --web.listen-address "127.0.0.1:${web[$who]}" \
        --log.level warn 2>"$dir/$who-$n.log" &
      name[$who]=$([ "$who" = baseline ] && echo "pgkpi baseline" || echo pgkpi)
    fi
    pid[$who]=$!
    pids+=("${pid[$who]}")
    : >"$dir/$who-times"
    : >"$dir/$who-apart"
    : >"$dir/$who-gzip"
  done
  if [ "${BENCH_WARMUP:-0}" -gt 0 ]; then
    sleep "$BENCH_WARMUP"
    psql_ -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
  fi
  start=$(date +%s)
  while :; do
    tick=$(date +%s)
    last=$((tick + 15 - start >= seconds))
    scrapes=()
    for who in "${exporters[@]}"; do
      url="http://127.0.0.1:${web[$who]}/metrics"
      # Timed scrapes go to /dev/null: curl writing half a megabyte to a file takes about a
      # millisecond of its own, which is not the exporter's. The last one is kept, untimed,
      # for the series and errors.
      if [ "$last" = 1 ]; then
        curl -s -o "$dir/$who-body" "$url" &
      else
        curl -s -o /dev/null -w '%{time_total}\n' "$url" >>"$dir/$who-times" &
      fi
      scrapes+=($!)
    done
    wait "${scrapes[@]}" || true
    sleep $((tick + 7 - $(date +%s) > 0 ? tick + 7 - $(date +%s) : 0))
    for who in "${exporters[@]}"; do
      [ "$who" = anchor ] && continue
      curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:${web[$who]}/metrics" \
        >>"$dir/$who-apart"
      curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{time_total}\n' \
        "http://127.0.0.1:${web[$who]}/metrics" >>"$dir/$who-gzip"
    done
    [ $((tick + 15 - start)) -ge "$seconds" ] && break
    sleep $((tick + 15 - $(date +%s) > 0 ? tick + 15 - $(date +%s) : 0))
  done
  sleep $((start + seconds - $(date +%s) > 0 ? start + seconds - $(date +%s) : 0))
  minutes=$(awk -v s="$(($(date +%s) - start))" 'BEGIN { print s / 60 }')
  for who in "${exporters[@]}"; do
    role=bench_$who
    series=$(grep -cv '^#' "$dir/$who-body" || true)
    kill -0 "${pid[$who]}" 2>/dev/null || { echo "$who exited early, see $dir/$who-$n.log" >&2; exit 1; }
    peak=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/${pid[$who]}/status")
    read -r db_ms slowest < <(psql_ -d "$db" -F ' ' -c "
      SELECT round((coalesce(sum(total_exec_time + total_plan_time), 0) / $minutes)::numeric),
             round(coalesce(max(max_exec_time), 0)::numeric)
      FROM pg_stat_statements WHERE userid = '$role'::regrole")
    read -r kb count < <(backend_memory "$role")
    if [ "$who" = anchor ]; then
      errors=$(grep -c 'level=error' "$dir/anchor-$n.log" || true)
    else
      errors=$(awk '/^pgkpi_collector_errors_total/ { s += $2 } END { print s + 0 }' "$dir/$who-body")
    fi
    apart=$(median "$dir/$who-apart")
    gzip=$(median "$dir/$who-gzip")
    printf '%-7s %-17s %10s %9s %8s %8s %10s %10s %10s %14s %7s\n' "$n" "${name[$who]}" \
      "$(median "$dir/$who-times")" "${apart:--}" "${gzip:--}" "$series" "$peak" "$db_ms" \
      "$slowest" \
      "$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') ($count)" "$errors"
    if [ -n "${BENCH_TOP:-}" ]; then
      psql_ -d "$db" -F ' | ' -c "
        SELECT calls, round(total_exec_time::numeric), round(max_exec_time::numeric),
               left(regexp_replace(query, '\s+', ' ', 'g'), 90)
        FROM pg_stat_statements WHERE userid = '$role'::regrole
        ORDER BY total_exec_time DESC LIMIT $BENCH_TOP" | sed 's/^/    /'
    fi
  done
  kill "${pid[@]}"
  wait "${pid[@]}" 2>/dev/null || true
  [ -n "$kept" ] || psql_ -d postgres -c "DROP DATABASE $db"
done

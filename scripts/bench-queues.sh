#!/usr/bin/env bash
# Cost of the `queues` collector on a 1 000 000-row core.notification_queue (migrated schema,
# a queue that keeps its history): the plan of every statement the collector runs, captured
# by auto_explain (ANALYZE, BUFFERS) in pgkpi's own session as the unprivileged `pgkpi` role
# of migration 001, a check that none reads the queue sequentially, and the database time per
# poll from pg_stat_statements.
# Usage: scripts/bench-queues.sh [ROWS] [POLLS]   (default 1000000 20)
# Starts its own throwaway PostgreSQL cluster and pgkpi (debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh
rows=${1:-1000000}
polls=${2:-20}

bench_setup queues
web=$(free_port)
psql_ -d postgres -c "CREATE DATABASE bench"
for f in fixtures/baseline.sql migrations/001_monitoring.sql migrations/002_p0_notification_queue.sql \
         migrations/004_fase2_queue_functions.sql migrations/008_grants.sql \
         migrations/009_queue_claim_index.sql; do
  psql_ -d bench -f "$f" >/dev/null 2>&1 || { echo "applying $f failed" >&2; exit 1; }
done

echo "== loading $rows rows into core.notification_queue"
start=$(date +%s)
# A queue with history: 90% done, 2% dead, 6% ready and due, 1.5% scheduled, 0.5% leased (a
# fifth of those past their lease). Retries and channels spread over the rows.
psql_ -d bench <<SQL
INSERT INTO core.notifications (user_id, type, title) VALUES (1, 'booking', 'bench');
INSERT INTO core.notification_queue
    (notification_id, channel, priority_score, status, available_at, retry_count,
     locked_at, lock_owner, lease_expires_at, created_at, completed_at)
SELECT 1,
       (ARRAY['push', 'email', 'sms', 'in_app'])[1 + g % 4],
       g % 10,
       s.status,
       CASE s0.status WHEN 'ready' THEN now() - (g % 600) * interval '1 second'
                     WHEN 'scheduled' THEN now() + (g % 3600) * interval '1 second'
                     ELSE now() - interval '1 day' END,
       CASE WHEN g % 7 = 0 THEN 1 + g % 4 ELSE 0 END,
       CASE WHEN s.status = 'leased' THEN now() - (g % 600) * interval '1 second' END,
       CASE WHEN s.status = 'leased' THEN 'worker-' || g % 8 END,
       CASE WHEN s.status = 'leased' THEN now() + CASE WHEN g % 1000 = 995 THEN interval '-1 minute' ELSE interval '5 minutes' END END,
       now() - interval '1 day',
       CASE WHEN s.status IN ('done', 'dead') THEN now() - (g % 86400) * interval '1 second' END
FROM generate_series(1, $rows) g,
     LATERAL (SELECT CASE WHEN g % 1000 < 900 THEN 'done' WHEN g % 1000 < 920 THEN 'dead'
                          WHEN g % 1000 < 980 THEN 'ready' WHEN g % 1000 < 995 THEN 'scheduled'
                          ELSE 'leased' END AS status) s0,
     LATERAL (SELECT CASE WHEN s0.status = 'scheduled' THEN 'ready' ELSE s0.status END AS status) s;
VACUUM ANALYZE core.notification_queue;
SQL
echo "loaded in $(( $(date +%s) - start )) s: $(psql_ -d bench -c "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) n FROM core.notification_queue GROUP BY 1) s"); table $(psql_ -d bench -c "SELECT pg_size_pretty(pg_total_relation_size('core.notification_queue'))") with indexes"

# auto_explain in pgkpi's sessions only: every statement it runs is logged with its real plan.
psql_ -d postgres -c "ALTER ROLE pgkpi SET session_preload_libraries = 'auto_explain'" \
  -c "ALTER ROLE pgkpi SET auto_explain.log_min_duration = 0" \
  -c "ALTER ROLE pgkpi SET auto_explain.log_analyze = on" \
  -c "ALTER ROLE pgkpi SET auto_explain.log_buffers = on" \
  -c "ALTER ROLE pgkpi SET auto_explain.log_timing = on"

cargo build -q
exe=${CARGO_TARGET_DIR:-target}/debug/pgkpi
# Only the queues collector (and the server probe, which cannot be turned off here) runs.
others=$("$exe" metrics-reference | sed -n 's/^## Collector `\(.*\)`$/\1/p' | grep -vx -e queues -e server)
{
  for c in $others; do printf '[collectors.%s]\nenabled = false\n' "$c"; done
  cat <<EOF
[collectors.queues]
interval = "1s"
[[queues]]
name = "notifications"
preset = "notification_queue"
[[targets]]
name = "bench"
dsn = "host=127.0.0.1 port=$port user=pgkpi dbname=bench sslmode=disable"
EOF
} >"$dir/pgkpi.toml"
psql_ -d bench -c "SELECT pg_stat_statements_reset()" >/dev/null
log_start=$(wc -c <"$dir/server.log")
"$exe" --config.file "$dir/pgkpi.toml" --web.listen-address "127.0.0.1:$web" --log.level warn \
  2>"$dir/pgkpi.log" &
pids+=($!)
sleep $((polls + 1))
body=$(curl -s "http://127.0.0.1:$web/metrics")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

echo
echo "== exported (queue=\"notifications\")"
grep -E '^app_queue_(depth|depth_estimated|lag_seconds|expired_leases|oldest_lease_seconds|processed_total|inserted_total|retries_count)\{' <<<"$body" \
  | sed 's/target="bench",//'
echo
echo "== plans of the statements the collector ran (auto_explain, first poll), one line per node"
tail -c +"$log_start" "$dir/server.log" >"$dir/explain.log"
python3 - "$dir/explain.log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
blocks = re.split(r"\n(?=\S.*LOG:  duration: )", text)
seen, seq = set(), 0
for b in blocks:
    m = re.search(r"duration: ([\d.]+) ms  plan:\n\s*Query Text: (.*?)\n(.*)", b, re.S)
    if not m or "notification_queue" not in m.group(2):
        continue
    query = " ".join(m.group(2).split())
    if query in seen:
        continue
    seen.add(query)
    print(f"-- {m.group(1)} ms: {query[:150]}{'...' if len(query) > 150 else ''}")
    for line in m.group(3).splitlines():
        s = line.strip()
        if re.match(r"(->\s*)?[A-Z][A-Za-z ]+(Scan|Aggregate|Gather|Sort|BitmapOr|Append|Result)", s) or s.startswith("Buffers:"):
            print("     " + s[:140])
        # EXPLAIN-only statements are the collector's planning check: a plan with a Seq Scan
        # there is never executed (the count is estimated instead).
        if "Seq Scan on notification_queue" in s and not query.startswith("EXPLAIN"):
            seq += 1
executed = sum(1 for q in seen if not q.startswith("EXPLAIN"))
print(f"\nstatements executed on the queue: {executed} (plus {len(seen) - executed} EXPLAIN-only checks); "
      f"sequential scans of notification_queue executed: {seq}")
PY
per_poll() {
psql_ -d bench -F '|' -c "
  SELECT count(*), max(calls), round(sum(total_exec_time)::numeric, 2),
         round((sum(total_exec_time) / nullif(max(calls) FILTER (WHERE query LIKE '%to_regclass%'), 0))::numeric, 2),
         round(max(max_exec_time)::numeric, 2)
  FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
  WHERE r.rolname = 'pgkpi' AND (query LIKE '%notification_queue%' OR query LIKE '%to_regclass%')" \
  | awk -F'|' '{ printf "statements %s, polls %s, total %s ms, per poll %s ms, slowest statement %s ms\n", $1, $2, $3, $4, $5 }'
grep "^pgkpi_collector_last_duration_seconds{.*collector=\"queues\"" <<<"$body" \
  | awk '{ printf "last poll wall time seen by pgkpi (client side, debug build): %.1f ms\n", $2 * 1000 }'
}
echo
echo "== database time per poll with auto_explain (ANALYZE with timing inflates it)"
per_poll

# The same without auto_explain: the production cost.
psql_ -d postgres -c "ALTER ROLE pgkpi RESET ALL" >/dev/null
psql_ -d bench -c "SELECT pg_stat_statements_reset()" >/dev/null
"$exe" --config.file "$dir/pgkpi.toml" --web.listen-address "127.0.0.1:$web" --log.level warn \
  2>"$dir/pgkpi.log" &
pids+=($!)
sleep $((polls + 1))
body=$(curl -s "http://127.0.0.1:$web/metrics")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
echo
echo "== database time per poll without auto_explain (pg_stat_statements, pgkpi role)"
per_poll

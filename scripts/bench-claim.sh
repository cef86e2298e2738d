#!/usr/bin/env bash
# Latency of one single-item claim (core.claim_notifications(worker, 1)) against the size of the
# ready backlog of the migrated core.notification_queue: for each size, the queue is loaded with
# that many due ready rows (priorities 0-9, creation times spread over a day, VACUUM ANALYZE),
# the claim's plan is printed (EXPLAIN ANALYZE of its inner SELECT, rolled back), then CLAIMS
# claims run one after the other on one connection (pgbench, one transaction each, as a worker
# claims) and the median / p95 / max latency is printed.
# Usage: scripts/bench-claim.sh [CLAIMS] [SIZES...]   (default 200 10000 1000000)
#   BENCH_UPTO=008 applies only migrations/0*.sql up to that prefix (the claim before 009).
# Starts its own throwaway PostgreSQL cluster; needs pgbench next to psql (or on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cluster.sh
claims=${1:-200}
shift || true
sizes=("${@:-}")
[ -n "${sizes[0]}" ] || sizes=(10000 1000000)
upto=${BENCH_UPTO:-999}

bench_setup claim
pgbench=$bin/pgbench
[ -x "$pgbench" ] || pgbench=$(command -v pgbench)
psql_ -d postgres -c "CREATE DATABASE bench"
psql_ -d bench -f fixtures/baseline.sql >/dev/null
applied=()
for f in migrations/0*.sql; do
  name=$(basename "$f")
  [ "$((10#${name%%_*}))" -le "$((10#$upto))" ] || continue
  psql_ -d bench -f "$f" >/dev/null 2>&1 || { echo "applying $f failed" >&2; exit 1; }
  applied+=("${name%%_*}")
done
echo "== PostgreSQL $(psql_ -d bench -c 'SHOW server_version'), migrations ${applied[*]}"
echo "== indexes: $(psql_ -d bench -c "SELECT string_agg(indexrelid::regclass::text, ', ' ORDER BY 1) FROM pg_index WHERE indrelid = 'core.notification_queue'::regclass")"

claim_select="SELECT q.id FROM core.notification_queue q
 WHERE q.status = 'ready' AND q.available_at <= now()
 ORDER BY q.priority_score DESC, q.created_at, q.id LIMIT 1 FOR UPDATE SKIP LOCKED"
echo "SELECT id FROM core.claim_notifications('bench', 1);" >"$dir/claim.sql"
chmod 644 "$dir/claim.sql"

for n in "${sizes[@]}"; do
  psql_ -d bench <<SQL
TRUNCATE core.notification_queue;
INSERT INTO core.notifications (user_id, type, title)
  SELECT 1, 'booking', 'bench' WHERE NOT EXISTS (SELECT 1 FROM core.notifications);
INSERT INTO core.notification_queue (notification_id, priority_score, available_at, created_at)
SELECT (SELECT min(id) FROM core.notifications), g % 10,
       now() - interval '1 minute', now() - interval '1 day' + (g % 86400) * interval '1 second'
FROM generate_series(1, $n) g;
VACUUM ANALYZE core.notification_queue;
SQL
  echo
  echo "== $n ready rows: plan of the claim's SELECT (EXPLAIN ANALYZE, rolled back)"
  psql_ -d bench <<SQL
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $claim_select;
ROLLBACK;
SQL
  (cd "$dir" && "$pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c 1 -t "$claims" \
     -f claim.sql -l --log-prefix=lat bench >pgbench.out 2>&1) \
    || { cat "$dir/pgbench.out" >&2; exit 1; }
  # pgbench -l (files lat.PID): client transaction time epoch usec ...; column 3 = latency in microseconds.
  sort -n -k3,3 "$dir"/lat.* | awk -v n="$n" '
    { lat[NR] = $3 / 1000.0 }
    END {
      med = (NR % 2) ? lat[(NR + 1) / 2] : (lat[NR / 2] + lat[NR / 2 + 1]) / 2
      p95 = lat[int(NR * 0.95 + 0.999999)]
      printf "== %d ready rows: %d single-item claims, median %.2f ms, p95 %.2f ms, max %.2f ms\n",
             n, NR, med, p95, lat[NR]
    }'
  rm -f "$dir"/lat.*
  left=$(psql_ -d bench -c "SELECT count(*) FILTER (WHERE status = 'leased') || ' leased, ' || count(*) FILTER (WHERE status = 'ready') || ' ready' FROM core.notification_queue")
  echo "   after the run: $left"
done

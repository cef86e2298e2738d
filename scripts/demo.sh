#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine with Rust: a throwaway PostgreSQL 15 with
# pg_stat_statements, the audited application database `app` (fixtures/baseline.sql, seed,
# migrations/001..009, seed again), pgBouncer in transaction mode in front of it, pgkpi-load
# driving traffic through pgBouncer in the background, one pg_dump backup in a directory,
# pgkpi polling the database, the pooler and the backups, Prometheus scraping pgkpi with the
# rules of alerts/, and Alertmanager with
# alerts/alertmanager.yml: the docker-compose stack without Docker (and without Grafana; import
# dashboards/*.json into any Grafana pointed at this Prometheus). Prints the URLs and runs
# until Ctrl-C.
#   DEMO_DIR   where the cluster lives (default /tmp/pgkpi-demo; removed on exit)
#   DEMO_PORT  PostgreSQL port (default 55432)
#   PGBOUNCER_PORT pgBouncer port (default 56432)
#   PGKPI_PORT pgkpi port (default 9188)
#   DEMO_SCALE seed scale (default 0.2: a few seconds to load; 1 = the test fixture's size)
#   DEMO_RATE  pgkpi-load operations per second (default 50)
#   PROMETHEUS_PORT / ALERTMANAGER_PORT (defaults 9090 / 9093)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/cluster.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"

DEMO_DIR=${DEMO_DIR:-/tmp/pgkpi-demo}
DEMO_PORT=${DEMO_PORT:-55432}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-56432}
PGKPI_PORT=${PGKPI_PORT:-9188}
DEMO_SCALE=${DEMO_SCALE:-0.2}
DEMO_RATE=${DEMO_RATE:-50}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
# pgkpi reads PGKPI_* variables as configuration: keep the demo's own out of its environment.
export -n PGKPI_PORT

echo "building pgkpi and pgkpi-load (release)..." >&2
cargo build --release --locked --quiet --bins

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # pgBouncer runs as postgres under runuser: stop it by the pid it wrote.
  [ -f "$DEMO_DIR/pgbouncer/pgbouncer.pid" ] && kill "$(cat "$DEMO_DIR/pgbouncer/pgbouncer.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  cluster_stop "$DEMO_DIR"
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT INT TERM

# A cluster left by an interrupted run (kill -9) is stopped before its directory goes.
cluster_stop "$DEMO_DIR"
rm -rf "$DEMO_DIR"
cluster_start "$DEMO_DIR" "$DEMO_PORT"
# Sampled execution durations in jsonlog for pgkpi's latency log source (needs a restart).
cat examples/postgresql-demo-logging.conf >>"$DEMO_DIR/data/postgresql.auto.conf"
cluster_stop "$DEMO_DIR"
cluster_start "$DEMO_DIR" "$DEMO_PORT"
# psql -f sends one statement at a time: the migrations use CREATE INDEX CONCURRENTLY, which
# cannot run inside the single transaction that -c or a one-call batch would open.
sql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 \
  -h 127.0.0.1 -p "$DEMO_PORT" -U postgres "$@" >/dev/null; }
sql -d postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
sql -d postgres -c "CREATE DATABASE app"
echo "loading database app: baseline, seed (scale $DEMO_SCALE), migrations, seed again..." >&2
sql -d app -f fixtures/baseline.sql
sql -d app -v scale="$DEMO_SCALE" -f fixtures/seed.sql
for migration in migrations/0*.sql; do sql -d app -f "$migration"; done
sql -d app -v scale="$DEMO_SCALE" -f fixtures/seed.sql

APP_DSN="host=127.0.0.1 port=$DEMO_PORT user=postgres dbname=app sslmode=disable"

# The roadmap's daily full backup, once: pgkpi watches the directory ([backups]).
mkdir -p "$DEMO_DIR/backups"
pg_dump -h 127.0.0.1 -p "$DEMO_PORT" -U postgres -Fc -Z 6 \
  -f "$DEMO_DIR/backups/app_full_$(date -u +%Y%m%d).dump" app

# pgBouncer in transaction mode in front of app (it refuses to run as root). The application
# (pgkpi-load) connects through it; pgkpi reads its admin console as the stats user pgkpi.
pgb="$DEMO_DIR/pgbouncer"
mkdir -p "$pgb"
printf '"postgres" ""\n"pgkpi" ""\n' >"$pgb/userlist.txt"
cat >"$pgb/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$DEMO_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $pgb/userlist.txt
admin_users = postgres
stats_users = pgkpi
pool_mode = transaction
default_pool_size = 10
max_client_conn = 200
logfile = $pgb/pgbouncer.log
pidfile = $pgb/pgbouncer.pid
INI
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$pgb"
as_postgres /usr/sbin/pgbouncer -d "$pgb/pgbouncer.ini"
POOLED_DSN="host=127.0.0.1 port=$PGBOUNCER_PORT user=postgres dbname=app sslmode=disable"

# Bounded (24 h at most; it also stops with the demo) and loopback-only by construction.
./target/release/pgkpi-load --dsn "$POOLED_DSN" --pooled --duration 24h --rate "$DEMO_RATE" \
  --lock-contention --report-every 60s >"$DEMO_DIR/load.log" 2>&1 &
pids+=($!)

# The demo configuration adds the application KPIs (queue, webhooks) to the built-ins; the
# targets (database and pooler) and the backup directory are this run's.
{
  cat examples/pgkpi-demo.toml
  cat <<TOML

[backups]
directory = "$DEMO_DIR/backups"
pattern = "app_full_*.dump"
retention = "30d"

[[targets]]
name = "app"
dsn = "$APP_DSN"

[[targets]]
name = "pooler"
kind = "pgbouncer"
dsn = "host=127.0.0.1 port=$PGBOUNCER_PORT user=pgkpi dbname=pgbouncer sslmode=disable"
TOML
} >"$DEMO_DIR/pgkpi.toml"
./target/release/pgkpi --config.file "$DEMO_DIR/pgkpi.toml" --web.listen-address "127.0.0.1:$PGKPI_PORT" &
pids+=($!)

# Alertmanager and Prometheus, on loopback, their data inside DEMO_DIR.
prometheus-alertmanager --config.file=alerts/alertmanager.yml \
  --storage.path="$DEMO_DIR/alertmanager" --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
  --cluster.listen-address= >"$DEMO_DIR/alertmanager.log" 2>&1 &
pids+=($!)
{
  echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
  echo "rule_files:"
  for rules in "$PWD"/alerts/*.yml; do
    [ "$(basename "$rules")" = alertmanager.yml ] || echo "  - $rules"
  done
  echo "alerting: {alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$ALERTMANAGER_PORT']}]}]}"
  echo "scrape_configs: [{job_name: pgkpi, static_configs: [{targets: ['127.0.0.1:$PGKPI_PORT']}]}]"
} >"$DEMO_DIR/prometheus.yml"
prometheus --config.file="$DEMO_DIR/prometheus.yml" --storage.tsdb.path="$DEMO_DIR/prometheus" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$DEMO_DIR/prometheus.log" 2>&1 &
pids+=($!)

for url in "http://127.0.0.1:$PGKPI_PORT/readyz" "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" \
           "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready"; do
  for _ in $(seq 1 150); do
    if curl -fs "$url" >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
done

cat <<MSG

pgkpi demo is running.
  metrics:  http://127.0.0.1:$PGKPI_PORT/metrics
  status:   http://127.0.0.1:$PGKPI_PORT/   (locks now: /debug/locks)
  prometheus:   http://127.0.0.1:$PROMETHEUS_PORT/alerts   (pgkpi's rules loaded)
  alertmanager: http://127.0.0.1:$ALERTMANAGER_PORT/
  postgres: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres -d app
  pgbouncer: psql -h 127.0.0.1 -p $PGBOUNCER_PORT -U postgres pgbouncer -c 'SHOW POOLS'
  workload: pgkpi-load through pgBouncer (application_name pgkpi-load/<class>), log in $DEMO_DIR/load.log
  backups:  $DEMO_DIR/backups (one pg_dump)
Press Ctrl-C to stop (the cluster in $DEMO_DIR is removed).
MSG
wait

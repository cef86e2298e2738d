# Throwaway PostgreSQL clusters for the demo and benchmarks (the Rust tests have their own
# harness in tests/it/support). Runs the server as the postgres OS user when invoked as root.
# Usage: . scripts/lib/cluster.sh; cluster_start DIR PORT; cluster_stop DIR

pg_bindir() {
  if [ -n "${TEST_PG_BINDIR:-}" ]; then echo "$TEST_PG_BINDIR"; return; fi
  if [ -x /usr/lib/postgresql/15/bin/initdb ]; then echo /usr/lib/postgresql/15/bin; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_start() {
  local dir=$1 port=$2 bin
  bin=$(pg_bindir)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
    cat >"$dir/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_stat_statements'
track_io_timing = on
track_functions = all
max_connections = 200
log_min_messages = warning
CONF
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir/data/postgresql.auto.conf"
  fi
  # The port is given again: a kept cluster (BENCH_DIR) is started on this run's port.
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 start \
    >/dev/null
}

cluster_stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_postgres "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# A TCP port nobody listens on now, on 127.0.0.1 (for a throwaway server in a benchmark).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    ss -Htln "sport = :$port" 2>/dev/null | grep -q . || { echo "$port"; return; }
  done
}

# A benchmark's throwaway world, in one call: a temp dir (kept when BENCH_KEEP is set), a
# cluster in it on a free port (or BENCH_PORT), and on exit the processes listed in `pids`
# killed, the cluster stopped and the dir removed. Sets dir, port, bin and pids; psql_ then
# talks to the cluster (stopping at the first error). With BENCH_DIR, the cluster lives in
# that dir instead, is started again if it is already there, and is kept (stopped) at exit.
# Usage: bench_setup NAME
bench_setup() {
  if [ -n "${BENCH_DIR:-}" ]; then
    dir=$BENCH_DIR
    BENCH_KEEP=1
    mkdir -p "$dir"
  else
    dir=$(mktemp -d "/tmp/pgkpi-bench-$1.XXXXXX")
  fi
  chmod 755 "$dir"
  port=${BENCH_PORT:-$(free_port)}
  bin=$(pg_bindir)
  pids=()
  trap bench_cleanup EXIT
  cluster_start "$dir" "$port"
}

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cluster_stop "$dir"
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$dir"
}

psql_() { "$bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }

# The benchmarks' partitioned tables in database $1: 10 tables partitioned by month, each with
# an index, 12 monthly partitions around now and a DEFAULT.
bench_partitioned_tables() {
  psql_ -d "$1" -c "DO \$\$ BEGIN FOR p IN 1..10 LOOP
      EXECUTE format('CREATE TABLE h%s (id bigint, at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)', p);
      EXECUTE format('CREATE INDEX h%s_at_idx ON h%s (at)', p, p);
      EXECUTE format('CREATE TABLE h%s_default PARTITION OF h%s DEFAULT', p, p);
      FOR m IN 0..11 LOOP
        EXECUTE format('CREATE TABLE h%s_m%s PARTITION OF h%s FOR VALUES FROM (%L) TO (%L)', p, m, p,
          date_trunc('month', now()) + make_interval(months => m - 6),
          date_trunc('month', now()) + make_interval(months => m - 5));
      END LOOP;
    END LOOP; END \$\$"
}

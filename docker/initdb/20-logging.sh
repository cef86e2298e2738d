#!/usr/bin/env bash
# First start of the compose PostgreSQL: the demo's sampled logging for pgkpi's latency log
# source (examples/postgresql-demo-logging.conf, the same settings as scripts/demo.sh). Takes
# effect at the server's real start, after the init scripts (logging_collector needs a start).
set -euo pipefail
cat /pgkpi/examples/postgresql-demo-logging.conf >>"$PGDATA/postgresql.auto.conf"

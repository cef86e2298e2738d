#!/usr/bin/env bash
# Checks dashboards/*.json (or the dashboards in the directory given) against Grafana's
# published dashboard types: mixin/schema/check.mjs. Installs its npm packages first
# (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
ensure_schema_check
exec node mixin/schema/check.mjs "$@"

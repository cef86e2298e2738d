#!/usr/bin/env bash
# What a running pgkpi serves: series per metric family, and each collector's last run time
# (wall time of its queries, per target) with their sum, the database time of one poll cycle.
# Usage: scripts/inventory.sh [URL]   (default the demo's http://127.0.0.1:9188/metrics)
set -euo pipefail
url=${1:-http://127.0.0.1:9188/metrics}
body=$(curl -fsS "$url")
echo "== series per family"
grep -v '^#' <<<"$body" | sed -E 's/[{ ].*//; s/_(bucket|sum|count)$/ (histogram part: &)/' \
  | awk '{print $1}' | sort | uniq -c | sort -k2 | awk '{printf "%6d  %s\n", $1, $2}'
echo "== total: $(grep -vc '^#' <<<"$body") series, $(grep -c '^# TYPE' <<<"$body") families"
echo "== collector last run (seconds)"
grep '^pgkpi_collector_last_duration_seconds' <<<"$body" \
  | sed -E 's/.*collector="([^"]+)".*} (.*)/\2 \1/' | sort -rn \
  | awk '{printf "%10.4f  %s\n", $1, $2; total += $1} END {printf "%10.4f  total of one cycle\n", total}'

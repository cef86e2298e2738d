#!/usr/bin/env bash
# Scrape latency of a running pgkpi: N scrapes of the metrics URL, prints median, p90, max and
# the body size. Usage: scripts/bench-scrape.sh [URL] [N]   (default the demo, 100 scrapes)
set -euo pipefail
url=${1:-http://127.0.0.1:9188/metrics}
n=${2:-100}
times=$(for _ in $(seq 1 "$n"); do
  curl -s -o /dev/null -w '%{time_total}\n' "$url"
done | sort -n)
gz=$(curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{size_download}' "$url")
plain=$(curl -s -o /dev/null -w '%{size_download}' "$url")
awk -v n="$n" -v plain="$plain" -v gz="$gz" '
  { t[NR] = $1 * 1000 }
  END {
    printf "scrapes: %d  body: %d bytes (%d gzipped)\n", n, plain, gz
    printf "median: %.3f ms  p90: %.3f ms  max: %.3f ms\n", t[int((n + 1) / 2)], t[int(n * 0.9)], t[n]
  }' <<<"$times"

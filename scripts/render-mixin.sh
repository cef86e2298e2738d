#!/usr/bin/env bash
# Renders the monitoring mixin (mixin/) into alerts/ and dashboards/, or checks them (--check),
# or renders another _config into a directory (--config F --out DIR): mixin/render.py's options.
# Installs the Jsonnet evaluator first (target/py, idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
python="$(ensure_mixin_python)"
exec "$python" mixin/render.py "$@"

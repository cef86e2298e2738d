#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (deploy/kubernetes/), a step of scripts/test.sh;
# runs on its own too. No cluster is involved: what only a cluster proves is listed in
# deploy/kubernetes/README.md.
#   1. prometheusrule.yaml is what deploy/kubernetes/build.py renders from alerts/*.yml;
#   2. the built-in kinds are valid, strictly, against the Kubernetes schemas of the PyPI
#      package kubernetes-validate, and consistent with each other and with pgkpi
#      (scripts/lib/check_kubernetes.py);
#   3. the ServiceMonitors and PrometheusRules are valid against the Prometheus Operator's CRD
#      schemas of the npm package @kubernetes-models/prometheus-operator, with no field the
#      package does not declare (scripts/lib/validate-crds.mjs);
#   4. the PrometheusRules' groups pass promtool check rules, and the unit tests of
#      alerts/tests pass against them as they pass against alerts/*.yml;
#   5. the plain-Prometheus scrape configuration passes promtool check config (but for its
#      Kubernetes discovery blocks, see check_kubernetes.py);
#   6. the ConfigMap's pgkpi.toml passes pgkpi check-config.
# The tools are installed once, pinned, under target/ (idempotent): Python packages in a venv,
# because Debian 12's pip refuses to install into the system Python (PEP 668) and
# --break-system-packages could replace Debian's own PyYAML or jsonschema under other
# programs; the npm package in a directory of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
ensure_packages python3 python3-venv prometheus
command -v npm >/dev/null || ensure_packages nodejs npm

KUBERNETES_VALIDATE=1.37.0
OPERATOR_MODELS=6.0.0
venv=target/kubernetes-venv
npm_dir=target/kubernetes-npm
out=target/kubernetes-check

if [ "$(cat "$venv/.pinned" 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE"
  echo "$KUBERNETES_VALIDATE" >"$venv/.pinned"
fi
if [ "$(cat "$npm_dir/.pinned" 2>/dev/null)" != "$OPERATOR_MODELS" ]; then
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error \
      "@kubernetes-models/prometheus-operator@$OPERATOR_MODELS" >&2)
  echo "$OPERATOR_MODELS" >"$npm_dir/.pinned"
fi

echo "-- prometheusrule.yaml matches alerts/*.yml"
"$venv/bin/python" deploy/kubernetes/build.py --check
echo "-- built-in kinds (kubernetes-validate $KUBERNETES_VALIDATE, strict) and cross-references"
"$venv/bin/python" scripts/lib/check_kubernetes.py "$out"
echo "-- ServiceMonitor and PrometheusRule (@kubernetes-models/prometheus-operator $OPERATOR_MODELS)"
node scripts/lib/validate-crds.mjs "$npm_dir/node_modules" "$out/crds.json"
echo "-- PrometheusRule groups: promtool check rules, and alerts/tests against them"
shopt -s nullglob
rules=("$out"/rules/*.yml)
[ ${#rules[@]} -gt 0 ] || { echo "no PrometheusRule found in deploy/kubernetes" >&2; exit 1; }
promtool check rules "${rules[@]}" >"$out/promtool-check.out" 2>&1 || {
  cat "$out/promtool-check.out" >&2
  exit 1
}
# The unit tests name their rule files relatively (../database.yml): copied beside the
# rendered rule files, they test those.
sources=(alerts/tests/*_test.yml)
[ ${#sources[@]} -gt 0 ] || { echo "no promtool unit tests (alerts/tests/*_test.yml)" >&2; exit 1; }
rm -rf "$out/rules/tests"
mkdir -p "$out/rules/tests"
cp "${sources[@]}" "$out/rules/tests/"
tests=("$out"/rules/tests/*_test.yml)
(cd "$out/rules/tests" && promtool test rules *_test.yml) >"$out/promtool-test.out" 2>&1 || {
  cat "$out/promtool-test.out" >&2
  exit 1
}
echo "promtool: ${#rules[@]} rule files valid; ${#tests[@]} unit test files of alerts/tests pass against them"
echo "-- prometheus-scrape.yml: promtool check config (discovery blocks replaced by static targets)"
promtool check config "$out/prometheus-scrape.yml" >"$out/promtool-config.out" 2>&1 || {
  cat "$out/promtool-config.out" >&2
  exit 1
}
echo "promtool accepts deploy/kubernetes/prometheus-scrape.yml"
echo "-- the ConfigMap's pgkpi.toml: pgkpi check-config"
cargo build --locked --quiet --bin pgkpi
# The password file is the Secret's, which only the cluster has: a stand-in, same first line.
echo stand-in >"$out/password"
sed "s#\"/run/secrets/pgkpi/password\"#\"$PWD/$out/password\"#" "$out/pgkpi.toml" >"$out/pgkpi-local.toml"
target/debug/pgkpi check-config --config.file "$out/pgkpi-local.toml" >"$out/check-config.out" || {
  cat "$out/check-config.out" >&2
  exit 1
}
echo "pgkpi check-config accepts deploy/kubernetes/common/configmap.yaml's pgkpi.toml"

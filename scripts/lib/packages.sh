# Installs Debian packages that are missing; safe to run again (idempotent).
# Usage: . scripts/lib/packages.sh; ensure_packages pkg...

ensure_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # Debian's postgresql package would create and start a "main" cluster on port 5432; pgkpi's
  # tests and demo run their own throwaway clusters, so ask postgresql-common not to.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt run (unattended upgrades, a parallel script) instead of failing at once.
  local apt=(apt-get -o DPkg::Lock::Timeout=300)
  if ! $sudo "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/tmp/pgkpi-apt.log 2>&1; then
    $sudo "${apt[@]}" update >>/tmp/pgkpi-apt.log 2>&1
    $sudo "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >>/tmp/pgkpi-apt.log 2>&1 || {
      cat /tmp/pgkpi-apt.log >&2
      echo "apt-get install failed for: ${missing[*]}" >&2
      return 1
    }
  fi
}

# Packages every pgkpi command needs: PostgreSQL 15 (server, contrib, psql), pgBouncer (the
# pooler in front of the demo database and of the pooling tests) and openssl for
# the test certificates.
PGKPI_BASE_PACKAGES=(postgresql-15 postgresql-client-15 pgbouncer openssl ca-certificates curl prometheus prometheus-alertmanager docker-compose)

# The Python that renders the monitoring mixin (mixin/render.py): a virtual environment in
# target/py with PyPI's jsonnet (the C++ evaluator's bindings, a prebuilt wheel) and PyYAML
# (writes the rule files: Jsonnet's own std.manifestYamlDoc takes seconds per file), pinned so
# every machine renders the same bytes. A venv, because Debian's own python3 refuses pip
# installs outside one (PEP 668). Prints the interpreter's path.
PGKPI_JSONNET_VERSION=0.22.0
PGKPI_PYYAML_VERSION=6.0.3
ensure_mixin_python() {
  local root venv
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  venv="$root/target/py"
  if [ ! -x "$venv/bin/python3" ]; then
    python3 -m venv "$venv" >&2 2>/dev/null || {
      ensure_packages python3-venv >&2
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
    }
  fi
  local want="v$PGKPI_JSONNET_VERSION $PGKPI_PYYAML_VERSION"
  if [ "$("$venv/bin/python3" -c 'import _jsonnet, yaml; print(_jsonnet.version, yaml.__version__)' 2>/dev/null)" != "$want" ]; then
    echo "installing: jsonnet==$PGKPI_JSONNET_VERSION PyYAML==$PGKPI_PYYAML_VERSION (PyPI) into target/py" >&2
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
      "jsonnet==$PGKPI_JSONNET_VERSION" "PyYAML==$PGKPI_PYYAML_VERSION" >&2
  fi
  echo "$venv/bin/python3"
}

# The dashboard schema check's npm packages (mixin/schema/package-lock.json: @grafana/schema,
# grafana-foundation-sdk's types, typescript) in mixin/schema/node_modules; npm ci only when the
# lock file changed since the last install. Node.js comes with the machine; Debian's nodejs
# otherwise.
ensure_schema_check() {
  local root dir sum
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  dir="$root/mixin/schema"
  command -v npm >/dev/null || ensure_packages nodejs npm >&2
  sum="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$dir/node_modules/.pgkpi-lock-sha256" 2>/dev/null)" != "$sum" ]; then
    echo "installing: mixin/schema npm packages (npm ci)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$sum" >"$dir/node_modules/.pgkpi-lock-sha256"
  fi
}

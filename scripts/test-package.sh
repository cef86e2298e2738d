#!/usr/bin/env bash
# The Debian package on this machine, end to end (scripts/test.sh runs it after the cargo
# tests): build it from the binary the tests built, install it with dpkg -i, check the unit
# with systemd-analyze (verify, and security with a score threshold), the man page and the
# completions, run the installed binary as the service would against a throwaway PostgreSQL
# until it serves pg_up 1, reinstall it over itself (the edited conffile must stay), then
# remove and purge it and check what each step leaves behind.
#
# No systemd runs as PID 1 here (CI runs in a container), so the service is not started by
# systemctl. Its command line is run directly, taken from the installed unit: User=, the
# EnvironmentFile= read by a shell (systemd's syntax for plain KEY='value' lines), ExecStart=
# with $ARGS split into words as systemd splits it, and of the sandbox what setpriv can apply
# (no new privileges, an empty capability bounding set). The rest of the sandbox is checked by
# systemd-analyze, not exercised.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/packages.sh
. scripts/lib/cluster.sh
# systemd for systemd-analyze; dpkg-dev (dpkg-shlibdeps) and binutils (strip) to build the
# package; man-db to read its man page; adduser for its maintainer scripts.
ensure_packages "${PGKPI_BASE_PACKAGES[@]}" systemd dpkg-dev binutils man-db adduser

fail() {
  echo "test-package: FAIL: $*" >&2
  exit 1
}
step() { echo "-- $*"; }
# dpkg, waiting (up to 5 min) while another apt or dpkg holds its lock, as on a machine shared
# with other builds; any other failure is returned at once, with dpkg's output.
dpkg_() {
  local out status
  for _ in $(seq 1 150); do
    status=0
    out=$(dpkg "$@" 2>&1) || status=$?
    if [ "$status" -ne 0 ] && grep -q "lock" <<<"$out"; then
      sleep 2
      continue
    fi
    [ "$status" -eq 0 ] || echo "$out" >&2
    return "$status"
  done
  echo "$out" >&2
  return 1
}
# installed, config-files, not-installed, or nothing when dpkg never heard of it.
package_state() { dpkg-query -W -f='${db:Status-Status}' pgkpi 2>/dev/null || true; }

unit=/lib/systemd/system/pgkpi.service
work=$(mktemp -d /tmp/pgkpi-package.XXXXXX)
chmod 755 "$work"
exporter_pid=""
cleanup() {
  [ -z "$exporter_pid" ] || kill "$exporter_pid" 2>/dev/null || true
  cluster_stop "$work/pg"
  # Leave the machine as it was, whatever failed.
  case $(package_state) in installed | config-files | half-*) dpkg_ --purge pgkpi || true ;; esac
  rm -rf "$work"
}
trap cleanup EXIT

case $(package_state) in
  "" | not-installed) ;;
  *)
    echo "test-package: purging a pgkpi package left by an earlier run"
    dpkg_ --purge pgkpi
    ;;
esac

step "build: scripts/build-deb.sh from the debug binary of the cargo tests"
cargo build --locked --bin pgkpi
# gzip at level 1: this package is installed once and thrown away; xz, the default, would
# add about 25 s compressing the debug binary.
deb=$(DPKG_DEB_COMPRESSOR_TYPE=gzip DPKG_DEB_COMPRESSOR_LEVEL=1 bash scripts/build-deb.sh target/debug/pgkpi "$work")
dpkg-deb --field "$deb" Package Version Architecture Depends Installed-Size
echo "dpkg -c $(basename "$deb"):"
dpkg -c "$deb" | awk '{print "  " $1, $2, $NF}'

step "install: dpkg -i"
dpkg_ -i "$deb" || fail "dpkg -i"
[ -x /usr/bin/pgkpi ] || fail "/usr/bin/pgkpi missing"
passwd=$(getent passwd pgkpi) || fail "no pgkpi user after install"
uid=$(echo "$passwd" | cut -d: -f3)
shell=$(echo "$passwd" | cut -d: -f7)
[ "$uid" -lt 1000 ] && [ "$shell" = /usr/sbin/nologin ] \
  || fail "pgkpi should be a system user without a shell: $passwd"
conffiles=$(dpkg-query -W -f='${Conffiles}' pgkpi)
for file in /etc/default/pgkpi /etc/pgkpi/pgkpi.toml; do
  grep -q " $file " <<<"$conffiles" || fail "$file is not a conffile: $conffiles"
done
[ "$(stat -c %a /etc/default/pgkpi)" = 600 ] || fail "/etc/default/pgkpi must be 0600 (it may hold a password)"
echo "user: $passwd; conffiles: /etc/default/pgkpi /etc/pgkpi/pgkpi.toml"

step "unit: systemd-analyze verify"
systemd-analyze verify "$unit" >"$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "systemd-analyze verify"; }
# Warnings do not change the exit code; they fail this test too.
[ ! -s "$work/verify.log" ] || { cat "$work/verify.log"; fail "systemd-analyze verify warned"; }
echo "verify: no findings"

step "unit: systemd-analyze security (offline; fails above exposure 1.5)"
systemd-analyze security --offline=true --threshold=15 --no-pager "$unit" >"$work/security.log" 2>&1 \
  || { cat "$work/security.log"; fail "exposure above 1.5"; }
grep -E '^✗' "$work/security.log" | sed 's/^/  /' || true
grep -E "Overall exposure level" "$work/security.log" || fail "no exposure score"

step "man page and completions from the command-line definition"
[ "$(man -w pgkpi)" = /usr/share/man/man1/pgkpi.1.gz ] || fail "man -w pgkpi: $(man -w pgkpi 2>&1)"
manual=$(MANWIDTH=100 man -P cat pgkpi 2>/dev/null)
flags=$(/usr/bin/pgkpi --help | grep -oE -- '--[a-z][a-z.-]+' | sort -u)
for flag in $flags check-config metrics-reference DATA_SOURCE_NAME /etc/default/pgkpi; do
  grep -qF -- "$flag" <<<"$manual" || fail "the man page does not mention $flag"
done
! grep -qw generate <<<"$manual" || fail "the man page shows the hidden generate command"
bash -c '. /usr/share/bash-completion/completions/pgkpi && complete -p pgkpi' >/dev/null \
  || fail "the bash completion does not register for pgkpi"
grep -q -- "config.file" /usr/share/zsh/vendor-completions/_pgkpi || fail "zsh completion"
grep -q -- "config.file" /usr/share/fish/vendor_completions.d/pgkpi.fish || fail "fish completion"
echo "man page: $(wc -l <<<"$manual") lines, every flag; completions: bash, zsh, fish"

step "run: the installed binary as the service runs it, against a throwaway PostgreSQL"
pg_port=$(free_port)
cluster_start "$work/pg" "$pg_port"
"$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres \
  -c "CREATE ROLE pgkpi LOGIN IN ROLE pg_monitor" postgres
http_port=$(free_port)
# What the README tells an administrator to do: name the database in /etc/default/pgkpi.
sed -i \
  -e "s|^DATA_SOURCE_NAME=.*|DATA_SOURCE_NAME='postgresql://pgkpi@127.0.0.1:$pg_port/postgres?sslmode=disable'|" \
  -e "s|^ARGS='\(.*\)'|ARGS='\1 --web.listen-address=127.0.0.1:$http_port'|" \
  /etc/default/pgkpi
user=$(sed -n 's/^User=//p' "$unit")
env_file=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' "$unit")
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$user" = pgkpi ] && [ "$env_file" = /etc/default/pgkpi ] && [ -n "$exec_start" ] \
  || fail "unexpected unit: User=$user EnvironmentFile=$env_file ExecStart=$exec_start"
# A clean environment plus the EnvironmentFile; ExecStart's $ARGS split into words and not
# otherwise interpreted (eval of an unquoted expansion), as systemd does; the exec chain keeps
# one process id from env to pgkpi.
as_service=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c '
  set -a; . "$1"; set +a
  eval "command=($3)"
  exec setpriv --reuid="$2" --regid="$2" --init-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all "${command[@]}" "${@:4}"' _ "$env_file" "$user" "$exec_start")
"${as_service[@]}" check-config >"$work/check-config.log" 2>&1 \
  || { cat "$work/check-config.log"; fail "check-config with the packaged configuration"; }
"${as_service[@]}" >"$work/pgkpi.log" 2>&1 &
exporter_pid=$!
metrics=""
for _ in $(seq 1 60); do
  metrics=$(curl -fsS "http://127.0.0.1:$http_port/metrics" 2>/dev/null) || metrics=""
  grep -q '^pg_up{target="default"} 1$' <<<"$metrics" && break
  kill -0 "$exporter_pid" 2>/dev/null || { cat "$work/pgkpi.log"; fail "the installed pgkpi exited"; }
  sleep 0.5
done
grep '^pg_up{' <<<"$metrics" || true
grep -q '^pg_up{target="default"} 1$' <<<"$metrics" || { cat "$work/pgkpi.log"; fail "no pg_up 1 within 30 s"; }
# The process itself, from /proc (procps may not be installed): the package's user, and the
# unit's NoNewPrivileges and empty capability bounding set.
status_of() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$exporter_pid/status"; }
[ "$(readlink "/proc/$exporter_pid/exe")" = /usr/bin/pgkpi ] || fail "pid $exporter_pid is not /usr/bin/pgkpi"
[ "$(status_of Uid)" = "$(id -u pgkpi)" ] || fail "the exporter runs as uid $(status_of Uid), not pgkpi"
[ "$(status_of NoNewPrivs)" = 1 ] || fail "the exporter may gain privileges"
[ "$(status_of CapBnd)" = 0000000000000000 ] || fail "capability bounding set $(status_of CapBnd)"
echo "/usr/bin/pgkpi (pid $exporter_pid, user pgkpi, NoNewPrivs 1, no capabilities) serves pg_up 1 on 127.0.0.1:$http_port"
kill -TERM "$exporter_pid"
status=0
wait "$exporter_pid" || status=$?
exporter_pid=""
[ "$status" -eq 0 ] || { cat "$work/pgkpi.log"; fail "pgkpi exited with $status on SIGTERM"; }
cluster_stop "$work/pg"

step "reinstall (the upgrade path): the administrator's /etc/default/pgkpi stays"
edited=$(cat /etc/default/pgkpi)
dpkg_ -i "$deb" || fail "dpkg -i over the installed package"
[ "$(cat /etc/default/pgkpi)" = "$edited" ] || fail "reinstalling replaced the edited /etc/default/pgkpi"
[ "$(package_state)" = installed ] || fail "state after reinstall: $(package_state)"
echo "reinstalled; the edited conffile kept"

step "remove: dpkg -r keeps the configuration and the user"
dpkg_ -r pgkpi || fail "dpkg -r"
[ ! -e /usr/bin/pgkpi ] && [ ! -e "$unit" ] || fail "files left after dpkg -r"
[ -f /etc/default/pgkpi ] && [ -f /etc/pgkpi/pgkpi.toml ] || fail "conffiles lost by dpkg -r"
[ "$(package_state)" = config-files ] || fail "state after dpkg -r: $(package_state)"
getent passwd pgkpi >/dev/null || fail "dpkg -r removed the user"
echo "after dpkg -r: $(package_state); /etc/default/pgkpi, /etc/pgkpi and the user kept"

step "purge: dpkg -P leaves nothing"
dpkg_ -P pgkpi || fail "dpkg -P"
left=$(ls -d /etc/default/pgkpi /etc/pgkpi /etc/systemd/system/*/pgkpi.service \
  /etc/systemd/system/pgkpi.service /var/lib/systemd/deb-systemd-helper-*/*pgkpi* 2>/dev/null || true)
[ -z "$left" ] || fail "left after purge: $left"
! getent passwd pgkpi >/dev/null || fail "user pgkpi left after purge"
! getent group pgkpi >/dev/null || fail "group pgkpi left after purge"
case $(package_state) in "" | not-installed) ;; *) fail "state after purge: $(package_state)" ;; esac
echo "after dpkg -P: no files, no user, no group, no systemd state"
echo "test-package: OK"

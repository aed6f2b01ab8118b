#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` (installs cargo-deb from crates.io when it is
# missing) and checks it without installing it:
#  - contents (dpkg-deb -c / -I): the binary, the systemd unit, the conffile, the
#    maintainer scripts (system user `wspush`, unit enable/start);
#  - the unit passes `systemd-analyze verify` (run on a copy whose ExecStart points at the
#    extracted binary, since /usr/bin/wspush is not installed here), with no warning;
#  - the example config is complete and right: every option of `serve --print-config`
#    appears in it as `#key = default`, and uncommenting them all changes nothing;
#  - the packaged binary, extracted with dpkg-deb -x, prints its version and commit,
#    serves /healthz on 127.0.0.1:0 and stops on SIGTERM.
# CHECK_PACKAGE_INSTALL=1 also installs the package with dpkg -i (the user must appear)
# and purges it (the user must go): that changes this machine, so it is off by default.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
say() { printf -- '-- %s\n' "$*"; }
fail() { echo "check-package: $*" >&2; exit 1; }

need=()
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if ! cargo deb --version >/dev/null 2>&1; then
  say "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

say "cargo deb ($(cargo deb --version))"
deb=$(cargo deb --locked 2>&1 | tee /dev/stderr | grep -E '\.deb$' | tail -1)
[ -f "$deb" ] || fail "cargo deb printed no package path"
printf '\npackage: %s (%s)\n' "$deb" "$(du -h "$deb" | cut -f1)"

work=$(mktemp -d)
server=""
cleanup() { if [ -n "$server" ]; then kill -9 "$server" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

say "dpkg-deb -I"
dpkg-deb -I "$deb" | tee "$work/info"
say "dpkg-deb -c"
dpkg-deb -c "$deb" | tee "$work/contents"
for path in ./usr/bin/wspush ./etc/wspush/wspush.toml ./usr/share/doc/wspush/copyright; do
  grep -qE " $path\$" "$work/contents" || fail "$path missing from the package"
done
unit=$(grep -oE ' \./(usr/)?lib/systemd/system/wspush\.service$' "$work/contents" | sed 's/^ \.\///')
[ -n "$unit" ] || fail "lib/systemd/system/wspush.service missing from the package"
grep -qE '^-rwxr-xr-x .* \./usr/bin/wspush$' "$work/contents" || fail "usr/bin/wspush is not mode 755"

dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/wspush/wspush.toml "$work/control/conffiles" || fail "/etc/wspush/wspush.toml is not a conffile"
grep -q 'adduser --system' "$work/control/postinst" || fail "postinst does not create the wspush user"
grep -q 'deb-systemd-helper' "$work/control/postinst" || fail "postinst does not enable the unit"
grep -q 'deluser --system' "$work/control/postrm" || fail "postrm does not remove the wspush user"
for script in "$work"/control/{postinst,postrm,prerm,preinst}; do
  [ -f "$script" ] && { sh -n "$script" || fail "$(basename "$script") has a syntax error"; }
done
echo "conffiles: $(tr '\n' ' ' < "$work/control/conffiles")"
echo "maintainer scripts: $(cd "$work/control" && ls | grep -vE '^(control|md5sums|conffiles)$' | tr '\n' ' ')"

say "dpkg-deb -x"
dpkg-deb -x "$deb" "$work/root"
bin="$work/root/usr/bin/wspush"

say "systemd-analyze verify"
for key in 'User=wspush' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' \
  'PrivateTmp=yes' 'LimitNOFILE=1048576' 'Restart=on-failure' \
  'ExecStart=/usr/bin/wspush serve --config /etc/wspush/wspush.toml --no-console'; do
  grep -qxF "$key" "$work/root/$unit" || fail "the unit lacks $key"
done
# Verified under its own name, with the binary and the config paths of the extracted tree.
mkdir -p "$work/unit"
sed -e "s#/usr/bin/wspush#$bin#" -e "s#/etc/wspush/#$work/root/etc/wspush/#" \
  "$work/root/$unit" > "$work/unit/wspush.service"
set +e
verify=$(systemd-analyze verify "$work/unit/wspush.service" 2>&1)
rc=$?
set -e
echo "systemd-analyze verify: exit $rc${verify:+, said: $verify}"
[ $rc -eq 0 ] && [ -z "$verify" ] || fail "systemd-analyze verify did not pass cleanly"

say "packaged binary"
"$bin" --version
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
"$bin" --version | grep -qE "^wspush $version \(commit ([0-9a-f]{7,}|unknown)\)$" \
  || fail "--version does not print the version and commit"

# The example config: every default option listed, uncommented it equals the defaults.
conf="$work/root/etc/wspush/wspush.toml"
(cd "$work" && "$bin" serve --print-config) > "$work/defaults.toml"
missing=$(cut -d' ' -f1 "$work/defaults.toml" | grep -vx namespaces | while read -r key; do
  grep -qE "^#$key = " "$conf" || echo "$key"; done)
[ -z "$missing" ] || fail "packaging/wspush.toml lacks #key = default lines for: $missing"
sed -nE 's/^#([a-z_]+ = )/\1/p' "$conf" > "$work/uncommented.toml"
"$bin" serve --config "$work/uncommented.toml" --print-config > "$work/from-example.toml"
diff -u "$work/defaults.toml" "$work/from-example.toml" || fail "a default shown in packaging/wspush.toml is wrong"
"$bin" serve --config "$conf" --print-config >/dev/null || fail "the packaged config does not load"
echo "example config: $(wc -l < "$work/uncommented.toml") options with their defaults, all correct"

"$bin" serve --config "$conf" --listen 127.0.0.1:0 --no-console --quiet </dev/null >"$work/out" 2>"$work/err" &
server=$!
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's#^listening on http://##p' "$work/out")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/err" >&2; fail "the packaged server exited"; }
  sleep 0.1
done
[ -n "$addr" ] || fail "the packaged server did not start listening within 10 s"
health=$(curl -fsS --max-time 5 "http://$addr/healthz")
echo "GET http://$addr/healthz -> $health"
case $health in *'"status":"ok"'*) ;; *) fail "unexpected /healthz answer" ;; esac
kill -TERM "$server"
rc=0
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
kill -0 "$server" 2>/dev/null && fail "the packaged server still runs 10 s after SIGTERM"
wait "$server" || rc=$?
server=""
[ $rc -eq 0 ] || fail "the packaged server exited $rc on SIGTERM"
echo "stopped on SIGTERM, exit 0"

if [ "${CHECK_PACKAGE_INSTALL:-0}" = 1 ]; then
  say "dpkg -i / dpkg --purge (CHECK_PACKAGE_INSTALL=1)"
  dpkg -i "$deb"
  getent passwd wspush || fail "postinst did not create the wspush user"
  stat -c '%U:%G %a %n' /etc/wspush /etc/wspush/wspush.toml
  /usr/bin/wspush --version
  dpkg --purge wspush
  ! getent passwd wspush >/dev/null || fail "postrm did not remove the wspush user"
  [ ! -e /etc/wspush ] || fail "/etc/wspush is left after purge"
  echo "installed and purged; the wspush user came and went"
fi
echo "check-package: ok"

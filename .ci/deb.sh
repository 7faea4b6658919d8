#!/usr/bin/env bash
# Builds the .deb with cargo-deb, installs it with dpkg on this machine, checks files,
# permissions, the unit (systemd-analyze verify + security score <= 1.5) and --version,
# then removes and purges it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version '^3'
cargo deb --locked
deb=$(ls -t target/debian/pa-auth_*.deb | head -n 1)
echo "package: $deb"
dpkg-deb --info "$deb" | sed -n '1,20p'
dpkg -i "$deb"
trap 'dpkg -P pa-auth >/dev/null 2>&1 || true' EXIT

check_mode() { # path mode owner
  local got
  got=$(stat -c '%a %U' "$1")
  [ "$got" = "$2 $3" ] || { echo "bad mode/owner for $1: $got (want $2 $3)"; exit 1; }
}
check_mode /usr/bin/pa-auth 755 root
check_mode /lib/systemd/system/pa-auth.service 644 root
check_mode /etc/default/pa-auth 644 root
check_mode /usr/share/doc/pa-auth/README.md 644 root
test -f /usr/share/doc/pa-auth/examples/nginx/pa-auth.conf
/usr/bin/pa-auth --version | grep -E '^pa-auth [0-9.]+ \(commit [0-9a-f]{12}\)$'
/usr/bin/pa-auth --help >/dev/null
/usr/bin/pa-auth check-config >/dev/null

systemd-analyze verify /lib/systemd/system/pa-auth.service
score=$(systemd-analyze security --offline=true /lib/systemd/system/pa-auth.service 2>/dev/null \
  | grep -oE 'Overall exposure level for [^:]+: [0-9.]+' | awk '{print $NF}')
echo "systemd-analyze security: $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }' || { echo "exposure $score > 1.5"; exit 1; }
# Nothing started by the install.
if pgrep -f '^/usr/bin/pa-auth' >/dev/null; then echo "postinst started pa-auth"; exit 1; fi

dpkg -r pa-auth
test ! -e /usr/bin/pa-auth
test ! -e /lib/systemd/system/pa-auth.service
test -e /etc/default/pa-auth   # conffile kept until purge
dpkg -P pa-auth
test ! -e /etc/default/pa-auth
trap - EXIT
echo "deb: built, installed, verified and removed cleanly"

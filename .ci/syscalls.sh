#!/usr/bin/env bash
# Runs pa-auth under strace through a representative session (start, create/verify/list/
# delete tokens, login, metrics, the CLI through the control socket, SIGTERM) and checks that every syscall it made is allowed
# by the unit's filter: in @system-service and in none of the groups the unit denies.
# This machine has no running systemd, so this stands in for starting the unit for real.
# Usage: .ci/syscalls.sh [path/to/pa-auth]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/pa-auth}
command -v strace >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace; }
unit=systemd/pa-auth.service
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
strace -f -qq -c -o "$work/strace.txt" "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --flush-interval 1 2>"$work/server.log" &
tracer=$!
base="http://127.0.0.1:$port"
for _ in $(seq 200); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
pw=$(cat "$work/data/initial-admin-password")
tok=$(curl -fs -u "admin:$pw" -H 'Content-Type: application/json' -d '{"name":"strace"}' "$base/admin/api/tokens")
secret=$(printf '%s' "$tok" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
id=$(printf '%s' "$tok" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 20); do curl -fs -H "Authorization: Bearer $secret" "$base/auth/verify" >/dev/null; done
curl -fs -u "admin:$pw" "$base/admin/api/tokens" >/dev/null
curl -fs -c "$work/cookies" -H 'Content-Type: application/json' -d "{\"username\":\"admin\",\"password\":\"$pw\"}" "$base/admin/api/session" >/dev/null
curl -fs "$base/metrics" >/dev/null
# The CLI through the control socket (the server's accept and SO_PEERCRED are traced).
"$bin" token list --data-dir "$work/data" >/dev/null
"$bin" token create --name strace-cli --data-dir "$work/data" >/dev/null 2>&1
sleep 1.5
curl -fs -u "admin:$pw" -X DELETE "$base/admin/api/tokens/$id" >/dev/null
server=$(pgrep -P "$tracer" -x pa-auth)
kill -TERM "$server"
wait "$tracer"

# Syscalls made (strace -c table: the last column of each data row).
awk 'NR>2 && $NF!="total" && $1!~/^-/ {print $NF}' "$work/strace.txt" | sort -u >"$work/used"

expand() { # group or name → names, recursively
  local item=$1
  if [[ $item == @* ]]; then
    systemd-analyze syscall-filter "$item" | awk 'NR>1 && $1!~/^#/ && NF {print $1}' | while read -r x; do expand "$x"; done
  else
    echo "$item"
  fi
}
expand @system-service | sort -u >"$work/allowed"
denied_groups=$(grep '^SystemCallFilter=~' "$unit" | sed 's/^SystemCallFilter=~//')
for g in $denied_groups; do expand "$g"; done | sort -u >"$work/denied"
bad=0
while read -r sc; do
  if ! grep -qx "$sc" "$work/allowed"; then echo "NOT ALLOWED (outside @system-service): $sc"; bad=1; fi
  if grep -qx "$sc" "$work/denied"; then echo "DENIED by the unit: $sc"; bad=1; fi
done <"$work/used"
echo "syscalls used by pa-auth ($(wc -l <"$work/used")): $(tr '\n' ' ' <"$work/used")"
[ "$bad" = 0 ] && echo "syscall filter check: all allowed"
exit "$bad"

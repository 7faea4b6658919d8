#!/usr/bin/env bash
# Scale figures with many tokens, each measured on the real binary:
#
#   bench/scale.sh [TOKENS] [DATA_DIR [SECRETS]]   (defaults: 1000000, a fresh temporary dir)
#
# Fills DATA_DIR with TOKENS tokens (offline generator; skipped if DATA_DIR already holds a
# store, whose generator SECRETS file may then be given), then reports: generation time,
# data dir size; start-up to ready (`serve` until /healthz answers) once by scanning the
# store (no index.snapshot: the first start, or after a crash) and 3 times from the snapshot
# a clean stop leaves; RSS at rest after each kind of start and after 10 s of verifications
# over 100,000 distinct tokens; stop time (SIGTERM to exit: final flush + snapshot); the
# first page of the admin list (with Basic auth, so it includes one Argon2id), and the same
# page with a session cookie (no Argon2). Output: stdout and bench/results/<date>-scale-<tokens>.md.
# Reports only; nothing asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
tokens=${1:-1000000}
dir=${2:-}
secrets=${3:-}
cargo build --release --locked -q
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "$dir" ] || dir="$tmp/data"
port=$(free_port)
base="http://127.0.0.1:$port"
gen="(existing store, not regenerated)"
if [ ! -e "$dir/db" ]; then
  started=$(date +%s.%N)
  secrets="$tmp/secrets"
  cargo bench --locked -q --bench generate_tokens -- "$dir" "$tokens" "$secrets" >&2
  gen="$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f s", b-a}')"
fi

start() { # sets pid and took (seconds to ready)
  local t0; t0=$(date +%s.%N)
  ./target/release/pa-auth serve --listen "127.0.0.1:$port" --data-dir "$dir" --log-level warn >/dev/null 2>>"$tmp/log" &
  pid=$!
  until curl -fs "$base/healthz" >/dev/null 2>&1; do sleep 0.01; done
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
}
stop() { # sets stopped (seconds from SIGTERM to exit)
  local t0; t0=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  stopped=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
}
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }

rm -f "$dir/index.snapshot"
start; scan_start=$took; sleep 2; rss_scan=$(rss); stop
starts=(); stops=("$stopped")
for _ in 1 2 3; do start; starts+=("$took"); stop; stops+=("$stopped"); done
# The first start created the admin account and its initial password file.
password=$(cat "$dir/initial-admin-password" 2>/dev/null || true)
[ -n "$password" ] || { echo "needs $dir/initial-admin-password (a store whose admin password was never changed)" >&2; exit 1; }
start
sleep 2
rss_rest=$(rss)
if [ -n "$secrets" ] && [ -s "$secrets" ]; then
  head -n 100000 "$secrets" >"$tmp/rotate"
  PA_SECRETS="$tmp/rotate" wrk -t2 -c32 -d10s -s bench/rotate.lua "$base/" >/dev/null
  rss_busy=$(rss)
else
  rss_busy="(no secrets file for an existing store)"
fi
basic=()
for _ in 1 2 3; do
  basic+=("$(curl -s -o /dev/null -w '%{time_total}' -u "admin:$password" "$base/admin/api/tokens?limit=100")")
done
curl -s -c "$tmp/jar" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" "$base/admin/api/session" >"$tmp/session.json"
csrf=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("csrfToken",""))' "$tmp/session.json")
session=()
for _ in 1 2 3; do
  session+=("$(curl -s -o /dev/null -w '%{time_total}' -b "$tmp/jar" -H "X-CSRF-Token: $csrf" "$base/admin/api/tokens?limit=100")")
done
stop
size=$(du -sh "$dir" | cut -f1)

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-scale-${tokens}.md"
{
  echo "# pa-auth at scale — $(date -u +%Y-%m-%dT%H:%MZ), $tokens tokens"
  echo
  echo "Machine: $(machine_line). pa-auth $(./target/release/pa-auth --version | cut -d' ' -f2-)."
  echo
  echo "| what | figure |"
  echo "|---|---|"
  echo "| generation (offline, batched) | $gen |"
  echo "| data dir size | $size |"
  echo "| start-up to ready, scanning the store (first start, or after a crash) | $scan_start s |"
  echo "| start-up to ready from index.snapshot (3 starts after clean stops) | ${starts[*]} s |"
  echo "| RSS at rest after the scanning start | $rss_scan MiB |"
  echo "| RSS at rest after a snapshot start | $rss_rest MiB |"
  echo "| RSS after 10 s of verifications over $(wc -l <"$tmp/rotate" 2>/dev/null || echo 0) distinct tokens | $rss_busy MiB |"
  echo "| admin list, first page of 100, Basic auth (one Argon2id) | ${basic[*]} s |"
  echo "| admin list, first page of 100, session cookie | ${session[*]} s |"
  echo "| stop (SIGTERM to exit: drain, final flush, snapshot), 4 stops | ${stops[*]} s |"
} | tee "$out"
echo "written: $out" >&2

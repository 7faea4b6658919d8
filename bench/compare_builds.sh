#!/usr/bin/env bash
# Two builds of pa-auth side by side: did a change cost anything?
#
#   [ROUNDS=3] [ONLY=text] bench/compare_builds.sh OLD_REV [TOKENS] [SECONDS]   (defaults: 1000 tokens, 10 s)
#   ONLY: run only the scenarios whose name contains the text.
#
# Builds OLD_REV (a git worktree, release) and the working tree (release), fills one data dir
# with TOKENS tokens and gives each server its own copy, then runs each scenario alternating
# old / new ROUNDS times with wrk on the same machine and prints req/s and p50/p99/p99.9 with
# the new/old ratios. Scenarios: forward-auth keep-alive and Connection: close, an invalid
# token, GET /api/token, forward-auth paced (the tail is the server's), and the last-used
# flush of 100,000 distinct tokens every 5 s, paced (the flush pacing). Output: stdout and
# bench/results/<date>-builds-<old>.md. Reports only; nothing here asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
old_rev=${1:?usage: bench/compare_builds.sh OLD_REV [TOKENS] [SECONDS]}
tokens=${2:-1000}
secs=${3:-10}
rounds=${ROUNDS:-3}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
old_short=$(git rev-parse --short "$old_rev")
new_short=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo +dirty)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git worktree remove --force "$work/old" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building $old_short and the working tree..." >&2
git worktree add -q --detach "$work/old" "$old_rev"
old_target=${OLD_TARGET_DIR:-$PWD/target/old-$old_short}
(cd "$work/old" && CARGO_TARGET_DIR="$old_target" cargo build --release --locked -q)
cp "$old_target/release/pa-auth" "$work/pa-auth-old"
cargo build --release --locked -q
cp target/release/pa-auth "$work/pa-auth-new"

echo "generating $tokens tokens..." >&2
cargo bench --locked -q --bench generate_tokens -- "$work/data" "$tokens" "$work/secrets" >&2
cp -a "$work/data" "$work/data-old"
cp -a "$work/data" "$work/data-new"
valid=$(head -n 1 "$work/secrets")
invalid=pa_0000000000000000000000000000000000000000000000
head -n 100000 "$work/secrets" >"$work/rotate"

start() { # which flush-interval
  port=$(free_port)
  "$work/pa-auth-$1" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$1" \
    --log-level warn --flush-interval "$2" 2>>"$work/$1.log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "pa-auth ($1) did not start" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; }
run_wrk() { # path conns extra-args...
  local path=$1 conns=$2; shift 2
  wrk -t2 -c"$conns" -d"${secs}s" --latency -s "${WRK_SCRIPT:-bench/report.lua}" "$@" "http://127.0.0.1:$port$path" | grep '^RESULT'
}
avg() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2]; n++ } } END { printf "%.3f", s/n }' <<<"$2"; }

declare -A rows
names=()
scenario() { # name flush-interval path conns args...
  local name=$1 flush=$2 path=$3 conns=$4; shift 4
  local old_runs="" new_runs=""
  [[ -z "${ONLY:-}" || "$name" == *"$ONLY"* ]] || return 0
  names+=("$name")
  for _ in $(seq "$rounds"); do
    start old "$flush"; old_runs+=$(run_wrk "$path" "$conns" "$@")$'\n'; stop
    start new "$flush"; new_runs+=$(run_wrk "$path" "$conns" "$@")$'\n'; stop
  done
  rows[$name]="$old_runs|$new_runs"
}

scenario "forward-auth, keep-alive, 32 conns" 10 /auth/verify 32 -H "Authorization: Bearer $valid"
scenario "forward-auth, Connection: close, 32 conns" 10 /auth/verify 32 -H "Authorization: Bearer $valid" -H "Connection: close"
scenario "invalid token, keep-alive, 32 conns" 10 /auth/verify 32 -H "Authorization: Bearer $invalid"
scenario "/api/token, keep-alive, 32 conns" 10 /api/token 32 -H "Authorization: Bearer $valid"
WRK_SCRIPT=bench/paced.lua scenario "forward-auth, paced 1 req/ms per conn, 32 conns" 10 /auth/verify 32 -H "Authorization: Bearer $valid"
export PA_SECRETS="$work/rotate" PA_PACED=1
WRK_SCRIPT=bench/rotate.lua scenario "100,000 tokens rotated, flush every 5 s, paced" 5 / 32
unset PA_SECRETS PA_PACED

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-builds-$old_short${ONLY:+-only}.md"
{
  echo "# pa-auth $new_short vs $old_short — $(date -u +%Y-%m-%dT%H:%MZ), $tokens tokens, ${secs} s runs, mean of $rounds alternating rounds"
  echo
  echo "Machine: $(machine_line). Both release builds, --log-level warn; wrk -t2 on the same machine."
  echo "Command: \`ROUNDS=$rounds${ONLY:+ ONLY=\"$ONLY\"} bench/compare_builds.sh $old_rev $tokens $secs\`."
  echo
  echo "| scenario | old req/s | new req/s | new/old | old p50 / p99 / p99.9 ms | new p50 / p99 / p99.9 ms | p99 new/old |"
  echo "|---|---|---|---|---|---|---|"
  for name in "${names[@]}"; do
    o=${rows[$name]%%|*}; n=${rows[$name]##*|}
    printf '| %s | %.0f | %.0f | %.2f | %s / %s / %s | %s / %s / %s | %.2f |\n' "$name" \
      "$(avg rps "$o")" "$(avg rps "$n")" "$(awk -v a="$(avg rps "$n")" -v b="$(avg rps "$o")" 'BEGIN{print a/b}')" \
      "$(avg p50 "$o")" "$(avg p99 "$o")" "$(avg p999 "$o")" "$(avg p50 "$n")" "$(avg p99 "$n")" "$(avg p999 "$n")" \
      "$(awk -v a="$(avg p99 "$n")" -v b="$(avg p99 "$o")" 'BEGIN{print a/b}')"
  done
  echo
  echo "Per-round req/s (old | new):"
  echo
  for name in "${names[@]}"; do
    o=${rows[$name]%%|*}; n=${rows[$name]##*|}
    echo "- $name: $(grep -o 'rps=[0-9.]*' <<<"$o" | cut -d= -f2 | cut -d. -f1 | tr '\n' ' ')| $(grep -o 'rps=[0-9.]*' <<<"$n" | cut -d= -f2 | cut -d. -f1 | tr '\n' ' ')"
  done
} | tee "$out"
echo "written: $out" >&2

#!/usr/bin/env bash
# Per-request costs of the forward-auth hot path, counted on the running server:
#
#   bench/syscalls_and_allocs.sh [REQUESTS]        (default 200000)
#
# Starts pa-auth (release) with 1,000 tokens, sends REQUESTS keep-alive /auth/verify requests
# with wrk (32 connections), and divides by the request count:
#   - malloc and realloc calls (perf uprobes on libc; needs root and perf),
#   - syscalls by name (strace -c -f).
# Reports only; nothing asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
requests=${1:-200000}
for tool in perf strace wrk; do command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install linux-perf strace wrk)" >&2; exit 1; }; done
cargo build --release --locked -q
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cargo bench --locked -q --bench generate_tokens -- "$work/data" 1000 "$work/secrets" >&2
valid=$(head -n 1 "$work/secrets")
libc=$(ldd target/release/pa-auth | awk '/libc.so/ {print $3}')
perf probe -q -x "$libc" malloc 2>/dev/null || true
perf probe -q -x "$libc" realloc 2>/dev/null || true
port=$(free_port)
# A wrk script (one thread) that stops after REQUESTS responses.
cat >"$work/count.lua" <<LUA
local per, n = $requests, 0
response = function() n = n + 1; if n >= per then wrk.thread:stop() end end
LUA

run() { # label, command prefix...
  local label=$1; shift
  ./target/release/pa-auth serve --listen "127.0.0.1:$port" --data-dir "$work/data" --log-level warn 2>/dev/null &
  pid=$!
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  "$@" -p "$pid" -o "$work/$label.txt" &
  local counter=$!
  sleep 1
  wrk -t1 -c32 -d60s -s "$work/count.lua" -H "Authorization: Bearer $valid" "http://127.0.0.1:$port/auth/verify" >"$work/wrk.txt"
  sleep 0.5
  kill -INT "$counter"; wait "$counter" 2>/dev/null || true
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  pid=""
  sent=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
}

run allocs perf stat -e probe_libc:malloc -e probe_libc:realloc
echo "requests: $sent"
awk -v n="$sent" '/probe_libc/ { gsub(",", "", $1); printf "%-22s %10d  %.2f per request\n", $2, $1, $1 / n }' "$work/allocs.txt"
run syscalls strace -c -f -q
echo "syscalls (strace -c -f), requests: $sent"
awk -v n="$sent" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $4 > n / 100 { printf "%-16s %10d  %.3f per request\n", $NF, $4, $4 / n }' "$work/syscalls.txt"

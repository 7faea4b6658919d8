#!/usr/bin/env bash
# Admin API latency while forward-auth is flooded:
#
#   [ROUNDS=2] [TLS=1] bench/admin_under_flood.sh [SECONDS]   (default 30 s per run)
#
# Starts pa-auth (release build, 1,000 tokens, --log-level warn; over HTTPS with a self-signed
# EC P-256 certificate if TLS=1) and asks `GET /admin/api/tokens?limit=100` with HTTP Basic
# (the one admin credential) at a paced low rate — wrk -c1 with bench/every_50ms.lua, about
# 20 requests/s — once alone and once while a second wrk floods /auth/verify with the valid
# token over 32 keep-alive connections, alternating ROUNDS times. Prints the admin requests'
# p50/p99/p99.9 with and without the flood, and the flood's requests/s.
# pa-auth remembers a successful Basic check for 60 s, so what is measured is the remembered
# check plus the page, not Argon2: each run gets a freshly started pa-auth whose memory is
# filled by one request just before it (runs longer than ~55 s would include one Argon2 check
# per minute). Output: stdout and bench/results/<date>-admin-under-flood.md. Reports only;
# nothing here asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
secs=${1:-30}
rounds=${ROUNDS:-2}   # alternating alone/flood rounds (the machine is noisy)
tls=${TLS:-}
[ "$secs" -le 55 ] || echo "note: ${secs} s runs outlive the 60 s Basic memory; one Argon2 check per minute lands in them" >&2
need=()
command -v wrk >/dev/null || need+=(wrk)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -q
bin=${CARGO_TARGET_DIR:-target}/release/pa-auth
work=$(mktemp -d)
pids=()
pa_pid=""
cleanup() { for p in "${pids[@]}" $pa_pid; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "generating 1000 tokens..." >&2
cargo bench --locked -q --bench generate_tokens -- "$work/data" 1000 "$work/secrets" >&2
valid=$(head -n 1 "$work/secrets")
port=$(free_port)
scheme=http
tls_args=()
curl_tls=()
if [ -n "$tls" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  scheme=https
  tls_args=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
  curl_tls=(--cacert "$work/cert.pem")
fi
base="$scheme://127.0.0.1:$port"
admin_url="$base/admin/api/tokens?limit=100"

start_pa_auth() { # a fresh process: empty Basic memory, then one full check fills it
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --log-level warn "${tls_args[@]}" 2>>"$work/pa-auth.log" &
  pa_pid=$!
  for _ in $(seq 300); do curl -fs "${curl_tls[@]}" "$base/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  # The first start created the admin account and its initial password file.
  [ -n "${basic:-}" ] || basic=$(printf 'admin:%s' "$(cat "$work/data/initial-admin-password")" | base64 -w0)
  local code
  code=$(curl -s "${curl_tls[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Basic $basic" "$admin_url")
  [ "$code" = 200 ] || { echo "admin list answered $code, not 200" >&2; exit 1; }
}
stop_pa_auth() { kill -TERM "$pa_pid"; wait "$pa_pid" 2>/dev/null || true; pa_pid=""; }

admin_run() {
  wrk -t1 -c1 -d"${secs}s" --latency -s bench/every_50ms.lua -H "Authorization: Basic $basic" "$admin_url" | grep '^RESULT'
}

alone="" during="" flood=""
for _ in $(seq "$rounds"); do
  start_pa_auth
  alone+=$(admin_run)$'\n'
  stop_pa_auth

  start_pa_auth
  wrk -t1 -c32 -d"$((secs + 2))s" --latency -s bench/report.lua -H "Authorization: Bearer $valid" \
    "$base/auth/verify" >"$work/flood.txt" &
  flood_pid=$!
  pids+=("$flood_pid")
  sleep 1
  during+=$(admin_run)$'\n'
  wait "$flood_pid"
  flood+=$(grep '^RESULT' "$work/flood.txt")$'\n'
  stop_pa_auth
done

avg() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2]; n++ } } END { printf "%.3f", s/n }' <<<"$2"; }
total() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2] } } END { printf "%d", s }' <<<"$2"; }

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-admin-under-flood.md"
{
  echo "# pa-auth admin list under a forward-auth flood — $(date -u +%Y-%m-%dT%H:%MZ), ${secs} s runs, mean of $rounds alternating rounds${tls:+, HTTPS}"
  echo
  echo "Machine: $(machine_line)."
  echo "pa-auth $("$bin" --version | cut -d' ' -f2-), $(nproc) event loops, --log-level warn, 1000 tokens${tls:+, TLS (self-signed EC P-256)}; wrk on the same machine."
  echo "Admin: \`GET /admin/api/tokens?limit=100\`, HTTP Basic remembered (one full check just before each run, on a fresh process), wrk -t1 -c1, one request per 50 ms. Flood: wrk -t1 -c32 keep-alive \`/auth/verify\`, valid token."
  echo
  echo "| admin requests | req/s | p50 / p99 / p99.9 ms | socket errors | non-2xx |"
  echo "|---|---|---|---|---|"
  printf '| alone | %.1f | %s / %s / %s | %s | %s |\n' "$(avg rps "$alone")" "$(avg p50 "$alone")" "$(avg p99 "$alone")" "$(avg p999 "$alone")" "$(total errors "$alone")" "$(total non2xx "$alone")"
  printf '| during the flood | %.1f | %s / %s / %s | %s | %s |\n' "$(avg rps "$during")" "$(avg p50 "$during")" "$(avg p99 "$during")" "$(avg p999 "$during")" "$(total errors "$during")" "$(total non2xx "$during")"
  echo
  printf 'p99 ratio during/alone: %.2f. Flood: %.0f req/s, p50 / p99 %s / %s ms, socket errors %s, non-2xx %s.\n' \
    "$(awk -v a="$(avg p99 "$alone")" -v b="$(avg p99 "$during")" 'BEGIN{print b/a}')" \
    "$(avg rps "$flood")" "$(avg p50 "$flood")" "$(avg p99 "$flood")" "$(total errors "$flood")" "$(total non2xx "$flood")"
} | tee "$out"
echo "written: $out" >&2

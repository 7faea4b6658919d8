#!/usr/bin/env bash
# pa-auth side by side with nginx on this machine, the way proxies use it.
#
#   [ROUNDS=2] bench/compare_nginx.sh [TOKENS] [SECONDS]   (defaults: 1000 tokens, 10 s per run)
#
# Installs or finds wrk and nginx-light, fills a data dir with TOKENS tokens, starts pa-auth
# (release build, request logging off like nginx's `access_log off`) and nginx with the
# equivalent static check (a `map` on the Authorization header: 200 for the valid token,
# 401 otherwise; nginx gets as many worker processes as the machine has cores), then runs
# each scenario alternating pa-auth / nginx twice and prints requests/s, p50/p99/p99.9 and
# the pa-auth/nginx ratio (one scenario paced, so its tail is the server's, not the CPU
# queue's). Extra rows: valid-token p99 during a flood of invalid tokens, and p99 while
# last-used flushes of many distinct tokens run, saturated and paced. Output: stdout and
# bench/results/<date>-<tokens>.md. Reports only; nothing here asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
tokens=${1:-1000}
secs=${2:-10}
rounds=${ROUNDS:-2}   # alternating pa-auth/nginx rounds per scenario (the machine is noisy)
# LOGS=1: both servers log every request to a file (pa-auth --log-level info, nginx
# access_log), as a site would run them; the default is logging off on both sides.
if [ "${LOGS:-0}" = 1 ]; then
  pa_log_level=info; suffix=-logs
else
  pa_log_level=warn; suffix=""
fi
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "generating $tokens tokens..." >&2
cargo bench --locked -q --bench generate_tokens -- "$work/data" "$tokens" "$work/secrets" >&2
valid=$(head -n 1 "$work/secrets")
# A well-formed token (right length, alphabet and checksum) that is not stored.
invalid=$(python3 - <<'PY'
import random, string, zlib
alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
body = "".join(random.SystemRandom().choice(alphabet) for _ in range(40))
crc, digits = zlib.crc32(body.encode()), ""
for _ in range(6):
    digits = alphabet[crc % 62] + digits
    crc //= 62
print("pa_" + body + digits)
PY
)

start_pa_auth() { # flush interval
  pa_port=$(free_port)
  ./target/release/pa-auth serve --listen "127.0.0.1:$pa_port" --data-dir "$work/data" \
    --log-level "$pa_log_level" --flush-interval "$1" 2>>"$work/pa-auth.log" &
  pa_pid=$!
  pids+=("$pa_pid")
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$pa_port/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "pa-auth did not start" >&2; exit 1
}
stop_pa_auth() { kill -TERM "$pa_pid"; wait "$pa_pid" 2>/dev/null || true; }

cores=$(nproc)
ng_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $cores;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  $( [ "${LOGS:-0}" = 1 ] && echo "access_log $work/nginx/access.log;" || echo "access_log off;" )
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  map_hash_bucket_size 128;
  map \$http_authorization \$pa_ok { "Bearer $valid" 1; default 0; }
  server {
    listen 127.0.0.1:$ng_port;
    location /auth/verify {
      if (\$pa_ok = 0) { return 401; }
      add_header X-PA-Token-Id 00000000-0000-4000-8000-000000000000;
      add_header X-PA-Token-Name bench;
      return 200;
    }
    location = /api/token {
      if (\$pa_ok = 0) { return 401; }
      default_type application/json;
      return 200 '{"id":"00000000-0000-4000-8000-000000000000","name":"bench-0000000","createdAt":"2026-11-30T00:00:00Z","expiresAt":null,"lastUsedAt":"2026-11-30T00:00:00Z","status":"active"}';
    }
  }
}
EOF
/usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null -H "Authorization: Bearer $valid" "http://127.0.0.1:$ng_port/auth/verify" && break; sleep 0.05; done

run_wrk() { # url conns extra-args...
  local url=$1 conns=$2; shift 2
  wrk -t2 -c"$conns" -d"${secs}s" --latency -s "${WRK_SCRIPT:-bench/report.lua}" "$@" "$url" | grep '^RESULT'
}
field() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$2"; }

start_pa_auth 10
declare -A rows
scenario() { # name path conns header...
  local name=$1 path=$2 conns=$3; shift 3
  local pa_sum="" ng_sum=""
  for _ in $(seq "$rounds"); do
    pa_sum+=$(run_wrk "http://127.0.0.1:$pa_port$path" "$conns" "$@")$'\n'
    ng_sum+=$(run_wrk "http://127.0.0.1:$ng_port$path" "$conns" "$@")$'\n'
  done
  rows[$name]="$pa_sum|$ng_sum"
}
avg() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2]; n++ } } END { printf "%.3f", s/n }' <<<"$2"; }

scenario "valid, keep-alive, 32 conns" /auth/verify 32 -H "Authorization: Bearer $valid"
scenario "valid, Connection: close, 32 conns" /auth/verify 32 -H "Authorization: Bearer $valid" -H "Connection: close"
scenario "invalid token, keep-alive, 32 conns" /auth/verify 32 -H "Authorization: Bearer $invalid"
scenario "/api/token, keep-alive, 32 conns" /api/token 32 -H "Authorization: Bearer $valid"
# The rows above saturate both cores (server and wrk share them), so their tails are CPU
# queueing. Paced at 1 request/ms per connection (~30k req/s), the tail is the server's.
WRK_SCRIPT=bench/paced.lua scenario "valid, keep-alive, 32 conns, paced 1 req/ms each" /auth/verify 32 -H "Authorization: Bearer $valid"

# Valid requests during a flood of invalid tokens (pa-auth only).
alone=$(run_wrk "http://127.0.0.1:$pa_port/auth/verify" 8 -H "Authorization: Bearer $valid")
wrk -t1 -c24 -d"$((secs + 2))s" -H "Authorization: Bearer $invalid" "http://127.0.0.1:$pa_port/auth/verify" >/dev/null &
flood=$!
sleep 1
during=$(run_wrk "http://127.0.0.1:$pa_port/auth/verify" 8 -H "Authorization: Bearer $valid")
wait "$flood"
stop_pa_auth

# Last-used flushes of many distinct tokens: p99 with a 5 s flush interval vs none in the run.
# Saturated (as fast as wrk can) and paced (PA_PACED: 1 request/ms per connection), each
# alternating a run with no flush (interval 3600 s) and one with a flush every 5 s, twice.
head -n 100000 "$work/secrets" >"$work/rotate"
rotate_run() { PA_SECRETS="$work/rotate" wrk -t2 -c32 -d"${secs}s" --latency -s bench/rotate.lua "http://127.0.0.1:$pa_port/" | grep '^RESULT'; }
no_flush="" with_flush="" no_flush_paced="" with_flush_paced=""
for round in 1 2; do
  start_pa_auth 3600; no_flush+=$(rotate_run)$'\n'; stop_pa_auth
  start_pa_auth 5; with_flush+=$(rotate_run)$'\n'; stop_pa_auth
  start_pa_auth 3600; no_flush_paced+=$(PA_PACED=1 rotate_run)$'\n'; stop_pa_auth
  start_pa_auth 5; with_flush_paced+=$(PA_PACED=1 rotate_run)$'\n'; stop_pa_auth
done

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-${tokens}-tokens${suffix}.md"
{
  echo "# pa-auth vs nginx — $(date -u +%Y-%m-%dT%H:%MZ), $tokens tokens, ${secs} s runs, mean of $rounds alternating rounds"
  echo
  echo "Machine: $(machine_line)."
  echo "pa-auth $(./target/release/pa-auth --version | cut -d' ' -f2-), $cores event loops, --log-level $pa_log_level; nginx $(/usr/sbin/nginx -v 2>&1 | cut -d/ -f2), $cores workers, access_log $( [ "${LOGS:-0}" = 1 ] && echo "to a file" || echo off ); wrk -t2 on the same machine."
  echo
  echo "| scenario | pa-auth req/s | nginx req/s | ratio | pa-auth p50 / p99 / p99.9 ms | nginx p50 / p99 / p99.9 ms |"
  echo "|---|---|---|---|---|---|"
  for name in "valid, keep-alive, 32 conns" "valid, Connection: close, 32 conns" "invalid token, keep-alive, 32 conns" "/api/token, keep-alive, 32 conns" "valid, keep-alive, 32 conns, paced 1 req/ms each"; do
    pa=${rows[$name]%%|*}; ng=${rows[$name]##*|}
    pr=$(avg rps "$pa"); nr=$(avg rps "$ng")
    printf '| %s | %.0f | %.0f | %.2f | %s / %s / %s | %s / %s / %s |\n' "$name" "$pr" "$nr" "$(awk -v a="$pr" -v b="$nr" 'BEGIN{print a/b}')" \
      "$(avg p50 "$pa")" "$(avg p99 "$pa")" "$(avg p999 "$pa")" "$(avg p50 "$ng")" "$(avg p99 "$ng")" "$(avg p999 "$ng")"
  done
  echo
  echo "Valid-token p99 (8 conns), alone: $(field p99 "$alone") ms at $(field rps "$alone") req/s; during a 24-connection flood of invalid tokens: $(field p99 "$during") ms at $(field rps "$during") req/s."
  echo
  echo "Last-used flush, $(wc -l <"$work/rotate") distinct tokens rotated over 32 conns (mean of 2 alternating runs each):"
  echo
  echo "| load | no flush: req/s, p50 / p99 / p99.9 ms | flush every 5 s: req/s, p50 / p99 / p99.9 ms | p99 ratio |"
  echo "|---|---|---|---|"
  for load in saturated paced; do
    if [ "$load" = paced ]; then a=$no_flush_paced; b=$with_flush_paced; else a=$no_flush; b=$with_flush; fi
    printf '| %s | %.0f, %s / %s / %s | %.0f, %s / %s / %s | %.2f |\n' "$load" \
      "$(avg rps "$a")" "$(avg p50 "$a")" "$(avg p99 "$a")" "$(avg p999 "$a")" \
      "$(avg rps "$b")" "$(avg p50 "$b")" "$(avg p99 "$b")" "$(avg p999 "$b")" \
      "$(awk -v a="$(avg p99 "$a")" -v b="$(avg p99 "$b")" 'BEGIN{print b/a}')"
  done
} | tee "$out"
echo "written: $out" >&2

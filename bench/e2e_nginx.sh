#!/usr/bin/env bash
# End to end through nginx `auth_request`, pa-auth versus an ideal auth server:
#
#   [ROUNDS=2] bench/e2e_nginx.sh [SECONDS]   (default 10 s per run)
#
# Two nginx fronts, each the shipped deploy/nginx/pa-auth.conf with its addresses replaced (as
# tests/integration/forward_auth.rs start_nginx does; its access log kept, in a temporary
# file), in front of the same static upstream (an nginx `return 200`). One front's pa_auth
# upstream is pa-auth (release build, 1,000 tokens, --log-level warn); the other's is an ideal
# auth server: an nginx server block that answers `return 204` with the two identity headers
# and does nothing else. wrk sends keep-alive requests with the valid token to /api/ on each
# front over 32 connections, alternating pa-auth / ideal ROUNDS times, and prints requests/s,
# p50/p99/p99.9, socket errors and the pa-auth/ideal ratio. Every nginx gets as many workers as
# cores. Output: stdout and bench/results/<date>-e2e-nginx.md. Reports only; nothing here
# asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
secs=${1:-10}
rounds=${ROUNDS:-2}   # alternating pa-auth/ideal rounds (the machine is noisy)
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -q
bin=${CARGO_TARGET_DIR:-target}/release/pa-auth
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "generating 1000 tokens..." >&2
cargo bench --locked -q --bench generate_tokens -- "$work/data" 1000 "$work/secrets" >&2
valid=$(head -n 1 "$work/secrets")

pa_port=$(free_port)
"$bin" serve --listen "127.0.0.1:$pa_port" --data-dir "$work/data" --log-level warn 2>>"$work/pa-auth.log" &
pids+=($!)
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$pa_port/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

cores=$(nproc)
start_nginx() { # dir (holding a site.conf) — http-level settings as compare_nginx.sh's nginx
  local d=$1
  cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes $cores;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $d/body; proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  keepalive_requests 1000000;
  include $d/site.conf;
}
EOF
  /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" &
  pids+=($!)
}
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

# The static upstream and the ideal auth server, in one nginx of their own.
api_port=$(free_port)
ideal_port=$(free_port)
mkdir -p "$work/backend"
cat >"$work/backend/site.conf" <<EOF
access_log off;
server {
  listen 127.0.0.1:$api_port;
  location / { return 200; }
}
server {
  listen 127.0.0.1:$ideal_port;
  location / {
    add_header X-PA-Token-Id 00000000-0000-4000-8000-000000000000;
    add_header X-PA-Token-Name bench;
    return 204;
  }
}
EOF
start_nginx "$work/backend"

front() { # name auth-port: the shipped site, addresses replaced; sets port (not a subshell:
  local d="$work/$1"                    # nginx's pid must reach pids)
  port=$(free_port)
  mkdir -p "$d"
  sed -e "s|server 127.0.0.1:8080;|server 127.0.0.1:$2;|" \
      -e "s|server 127.0.0.1:9000;|server 127.0.0.1:$api_port;|" \
      -e "s|listen 8443;|listen 127.0.0.1:$port;|" \
      -e "s|/var/log/nginx/api-access.log|$d/access.log|" deploy/nginx/pa-auth.conf >"$d/site.conf"
  for want in "server 127.0.0.1:$2;" "server 127.0.0.1:$api_port;" "listen 127.0.0.1:$port;" "$d/access.log"; do
    grep -qF "$want" "$d/site.conf" || { echo "deploy/nginx/pa-auth.conf changed: could not set '$want'" >&2; exit 1; }
  done
  start_nginx "$d"
}
front front-pa-auth "$pa_port"; pa_front=$port
front front-ideal "$ideal_port"; ideal_front=$port
for p in "$api_port" "$ideal_port" "$pa_front" "$ideal_front"; do wait_port "$p"; done

# Through the pa-auth front: 200 with the valid token, 401 without; through the ideal: 200.
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code -H "Authorization: Bearer $valid" "http://127.0.0.1:$pa_front/api/x")" = 200 ] || { echo "pa-auth front: valid token not 200" >&2; exit 1; }
[ "$(code -H "Authorization: Bearer pa_x" "http://127.0.0.1:$pa_front/api/x")" = 401 ] || { echo "pa-auth front: bad token not 401" >&2; exit 1; }
[ "$(code -H "Authorization: Bearer $valid" "http://127.0.0.1:$ideal_front/api/x")" = 200 ] || { echo "ideal front: not 200" >&2; exit 1; }

run_wrk() { # url
  wrk -t2 -c32 -d"${secs}s" --latency -s bench/report.lua -H "Authorization: Bearer $valid" "$1" | grep '^RESULT'
}
pa="" ideal=""
for _ in $(seq "$rounds"); do
  pa+=$(run_wrk "http://127.0.0.1:$pa_front/api/x")$'\n'
  ideal+=$(run_wrk "http://127.0.0.1:$ideal_front/api/x")$'\n'
done
avg() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2]; n++ } } END { printf "%.3f", s/n }' <<<"$2"; }
total() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2] } } END { printf "%d", s }' <<<"$2"; }

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-e2e-nginx.md"
{
  echo "# nginx auth_request end to end: pa-auth vs an ideal auth server — $(date -u +%Y-%m-%dT%H:%MZ), ${secs} s runs, mean of $rounds alternating rounds"
  echo
  echo "Machine: $(machine_line)."
  echo "Front: deploy/nginx/pa-auth.conf (addresses replaced, access log to a temporary file), nginx $(/usr/sbin/nginx -v 2>&1 | cut -d/ -f2), $cores workers; upstream API: nginx \`return 200\`; ideal auth: nginx \`return 204\` + identity headers. pa-auth $("$bin" --version | cut -d' ' -f2-), $cores event loops, --log-level warn, 1000 tokens. wrk -t2 -c32 keep-alive, valid token, on the same machine."
  echo
  echo "| auth server behind the front | req/s | p50 / p99 / p99.9 ms | socket errors | non-2xx |"
  echo "|---|---|---|---|---|"
  for row in pa-auth ideal; do
    if [ "$row" = pa-auth ]; then r=$pa; else r=$ideal; fi
    printf '| %s | %.0f | %s / %s / %s | %s | %s |\n' "$row" "$(avg rps "$r")" "$(avg p50 "$r")" "$(avg p99 "$r")" "$(avg p999 "$r")" "$(total errors "$r")" "$(total non2xx "$r")"
  done
  echo
  printf 'Ratio pa-auth/ideal: req/s %.2f, p50 %.2f, p99 %.2f.\n' \
    "$(awk -v a="$(avg rps "$pa")" -v b="$(avg rps "$ideal")" 'BEGIN{print a/b}')" \
    "$(awk -v a="$(avg p50 "$pa")" -v b="$(avg p50 "$ideal")" 'BEGIN{print a/b}')" \
    "$(awk -v a="$(avg p99 "$pa")" -v b="$(avg p99 "$ideal")" 'BEGIN{print a/b}')"
} | tee "$out"
echo "written: $out" >&2

#!/usr/bin/env bash
# pa-auth over HTTPS side by side with nginx over HTTPS, the same certificate on both:
#
#   [ROUNDS=2] bench/compare_tls.sh [TOKENS] [SECONDS]   (defaults: 1000 tokens, 10 s per run)
#
# Installs or finds wrk and nginx-light, fills a data dir with TOKENS tokens, makes one
# self-signed EC P-256 certificate for 127.0.0.1 with openssl, starts pa-auth (release build,
# --tls-cert/--tls-key, --log-level warn) and nginx (`listen ... ssl` with that certificate,
# ciphers at their defaults, TLSv1.3 on as newer nginx has it, access_log off, as many
# workers as cores) doing compare_nginx.sh's static check (a `map` on the Authorization
# header: 200 for the valid token, 401 otherwise). Then runs wrk over https, keep-alive valid-token forward-auth at 32
# and at 512 connections, alternating pa-auth / nginx ROUNDS times, and prints requests/s,
# p50/p99/p99.9, socket errors and the pa-auth/nginx ratio. Handshakes happen once per
# connection (keep-alive), so this is mostly the record layer. The negotiated protocol and
# cipher of each server are printed with the results. Output: stdout and
# bench/results/<date>-tls-<tokens>-tokens.md. Reports only; nothing here asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
tokens=${1:-1000}
secs=${2:-10}
rounds=${ROUNDS:-2}   # alternating pa-auth/nginx rounds per scenario (the machine is noisy)
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -q
bin=${CARGO_TARGET_DIR:-target}/release/pa-auth
# 512 connections: wrk's sockets, pa-auth's and nginx's all count against the limit.
[ "$(ulimit -n)" -ge 4096 ] || ulimit -n 4096
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "generating $tokens tokens..." >&2
cargo bench --locked -q --bench generate_tokens -- "$work/data" "$tokens" "$work/secrets" >&2
valid=$(head -n 1 "$work/secrets")
# One certificate for both servers (as the tests make theirs).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

pa_port=$(free_port)
"$bin" serve --listen "127.0.0.1:$pa_port" --data-dir "$work/data" --log-level warn \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" 2>>"$work/pa-auth.log" &
pids+=($!)
for _ in $(seq 300); do curl -fs --cacert "$work/cert.pem" "https://127.0.0.1:$pa_port/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

cores=$(nproc)
ng_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $cores;
worker_rlimit_nofile 8192;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  map_hash_bucket_size 128;
  map \$http_authorization \$pa_ok { "Bearer $valid" 1; default 0; }
  server {
    listen 127.0.0.1:$ng_port ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    # nginx 1.22's default protocols stop at TLSv1.2; this is the default of nginx >= 1.23.4,
    # so both servers speak TLSv1.3. Ciphers stay at the default.
    ssl_protocols TLSv1.2 TLSv1.3;
    location /auth/verify {
      if (\$pa_ok = 0) { return 401; }
      add_header X-PA-Token-Id 00000000-0000-4000-8000-000000000000;
      add_header X-PA-Token-Name bench;
      return 200;
    }
  }
}
EOF
/usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
for _ in $(seq 100); do curl -fs --cacert "$work/cert.pem" -o /dev/null -H "Authorization: Bearer $valid" "https://127.0.0.1:$ng_port/auth/verify" && break; sleep 0.05; done

# Both answer the valid token with 200 and another with 401, over verified TLS.
for port in "$pa_port" "$ng_port"; do
  ok=$(curl -s --cacert "$work/cert.pem" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $valid" "https://127.0.0.1:$port/auth/verify")
  no=$(curl -s --cacert "$work/cert.pem" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer pa_x" "https://127.0.0.1:$port/auth/verify")
  [ "$ok $no" = "200 401" ] || { echo "port $port answered $ok/$no, not 200/401" >&2; exit 1; }
done
negotiated() { openssl s_client -connect "127.0.0.1:$1" -servername 127.0.0.1 </dev/null 2>/dev/null | awk '/^New, / {sub(/,$/, "", $2); print $2, $NF; exit}'; }
pa_tls=$(negotiated "$pa_port")
ng_tls=$(negotiated "$ng_port")

run_wrk() { # url conns extra-args...
  local url=$1 conns=$2; shift 2
  wrk -t2 -c"$conns" -d"${secs}s" --latency -s bench/report.lua "$@" "$url" | grep '^RESULT'
}

declare -A rows
scenario() { # name conns
  local name=$1 conns=$2
  local pa_sum="" ng_sum=""
  for _ in $(seq "$rounds"); do
    pa_sum+=$(run_wrk "https://127.0.0.1:$pa_port/auth/verify" "$conns" -H "Authorization: Bearer $valid")$'\n'
    ng_sum+=$(run_wrk "https://127.0.0.1:$ng_port/auth/verify" "$conns" -H "Authorization: Bearer $valid")$'\n'
  done
  rows[$name]="$pa_sum|$ng_sum"
}
avg() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2]; n++ } } END { printf "%.3f", s/n }' <<<"$2"; }
total() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); s+=a[2] } } END { printf "%d", s }' <<<"$2"; }

names=("valid, keep-alive, 32 conns" "valid, keep-alive, 512 conns")
scenario "${names[0]}" 32
scenario "${names[1]}" 512

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-tls-${tokens}-tokens.md"
{
  echo "# pa-auth vs nginx over TLS — $(date -u +%Y-%m-%dT%H:%MZ), $tokens tokens, ${secs} s runs, mean of $rounds alternating rounds"
  echo
  echo "Machine: $(machine_line)."
  echo "pa-auth $("$bin" --version | cut -d' ' -f2-), $cores event loops (rustls on the loops), --log-level warn; nginx $(/usr/sbin/nginx -v 2>&1 | cut -d/ -f2), $cores workers, access_log off; wrk -t2 https on the same machine."
  echo "One self-signed EC P-256 certificate for both; ciphers at each server's defaults, nginx ssl_protocols TLSv1.2 TLSv1.3 (1.22 lacks 1.3 by default). Negotiated (openssl s_client): pa-auth ${pa_tls:-?}, nginx ${ng_tls:-?}."
  echo
  echo "| scenario | pa-auth req/s | nginx req/s | ratio | pa-auth p50 / p99 / p99.9 ms | nginx p50 / p99 / p99.9 ms | socket errors pa-auth / nginx | non-2xx pa-auth / nginx |"
  echo "|---|---|---|---|---|---|---|---|"
  for name in "${names[@]}"; do
    pa=${rows[$name]%%|*}; ng=${rows[$name]##*|}
    pr=$(avg rps "$pa"); nr=$(avg rps "$ng")
    printf '| %s | %.0f | %.0f | %.2f | %s / %s / %s | %s / %s / %s | %s / %s | %s / %s |\n' "$name" "$pr" "$nr" "$(awk -v a="$pr" -v b="$nr" 'BEGIN{print a/b}')" \
      "$(avg p50 "$pa")" "$(avg p99 "$pa")" "$(avg p999 "$pa")" "$(avg p50 "$ng")" "$(avg p99 "$ng")" "$(avg p999 "$ng")" \
      "$(total errors "$pa")" "$(total errors "$ng")" "$(total non2xx "$pa")" "$(total non2xx "$ng")"
  done
  echo
  echo "Socket errors and non-2xx are totals over the $rounds runs of each server."
} | tee "$out"
echo "written: $out" >&2

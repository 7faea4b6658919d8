#!/usr/bin/env bash
# Cluster mode at scale (issue 17): start-up of a node on a database of many tokens, the
# database writes last-used tracking costs under a load over 100,000 distinct tokens (with
# --last-used-resolution 1 and 60), and delete propagation across three nodes.
#
#   bench/cluster_scale.sh [TOKENS] [SECONDS]   (defaults 1000000 and 30)
#
# Starts its own PostgreSQL (as the postgres user when run as root) on a loopback port.
# Tokens are generated into a sled data dir (bench/generate_tokens.rs) and moved into the
# database with `pa-auth migrate` (timed too). Start-up: from exec until /healthz answers
# 200, three starts each, of a cluster node and of a sled node on the same tokens. Writes:
# wrk rotates over 100,000 secrets for SECONDS on one node (flush every 10 s); rows updated
# and transactions committed come from pg_stat_* before and after. Deletes: 200 tokens deleted
# one by one on node B (until its 204, which waits for A and C), and node C's propagation
# histogram. Output: stdout and bench/results/<date>-cluster-scale.md. Reports only.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
tokens=${1:-1000000}
secs=${2:-30}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -n 1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --locked -q
cargo bench --locked -q --bench generate_tokens --no-run 2>/dev/null
work=$(mktemp -d)
chmod 755 "$work"
pids=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
pg_port=$(free_port)
as_pg "$bin/initdb" -D "$work/pg/data" -A trust -U pa --no-sync >/dev/null
as_pg "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
sql() { psql -h 127.0.0.1 -p "$pg_port" -U pa -d "${DB:-bench}" -Atqc "$1"; }
DB=postgres sql "CREATE DATABASE bench"
url="postgres://pa@127.0.0.1:$pg_port/bench"

echo "generating $tokens tokens..." >&2
cargo bench --locked -q --bench generate_tokens -- "$work/sled" "$tokens" "$work/secrets" >&2
t0=$(date +%s.%N)
./target/release/pa-auth migrate --from-data-dir "$work/sled" --to "$url" >"$work/migrate.log" 2>&1
t1=$(date +%s.%N)
migrate_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
echo "migrated in $migrate_s s" >&2

start_node() { # name extra-args...   (sets $port and $started_s; pids are kept for the cleanup)
  local name=$1; shift
  port=$(free_port)
  local t0; t0=$(date +%s.%N)
  ./target/release/pa-auth serve --listen "127.0.0.1:$port" --log-level warn "$@" \
    >/dev/null 2>>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 6000); do
    if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      started_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
      return
    fi
    sleep 0.01
  done
  echo "pa-auth ($name) did not start" >&2; cat "$work/$name.log" >&2; exit 1
}
stop_last() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# Start-up, alternating: a cluster node (reads every token from the database) and a sled node.
st_cluster=(); st_sled=()
for _ in 1 2 3; do
  start_node cl --data-dir "$work/node-a" --database-url "$url"; st_cluster+=("$started_s"); stop_last
  start_node sl --data-dir "$work/sled"; st_sled+=("$started_s"); stop_last
done

# Three nodes for the rest.
start_node a --data-dir "$work/node-a" --database-url "$url" --flush-interval 10; a=$port
start_node b --data-dir "$work/node-b" --database-url "$url"; b=$port
start_node c --data-dir "$work/node-c" --database-url "$url"; c=$port

writes_run() { # resolution -> "rows/s commits/s req/s"
  local res=$1 port
  start_node "w$res" --data-dir "$work/node-w$res" --database-url "$url" --flush-interval 10 \
    --last-used-resolution "$res"
  # Warm-up: every token used once and flushed (the first write of each is never skipped).
  PA_SECRETS="$work/secrets" wrk -t2 -c32 -d15s -s bench/rotate.lua \
    -H 'Connection: keep-alive' "http://127.0.0.1:$port/auth/verify" >/dev/null
  sleep 11
  local u0 x0 u1 x1 r
  u0=$(sql "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'pa_auth_tokens'")
  x0=$(sql "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
  r=$(PA_SECRETS="$work/secrets" wrk -t2 -c32 -d"${secs}s" -s bench/rotate.lua \
    "http://127.0.0.1:$port/auth/verify" | grep '^RESULT' | sed 's/.*rps=\([0-9.]*\).*/\1/')
  sleep 1
  u1=$(sql "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'pa_auth_tokens'")
  x1=$(sql "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
  stop_last
  awk -v u="$((u1 - u0))" -v x="$((x1 - x0))" -v s="$((secs + 1))" -v r="$r" \
    'BEGIN{printf "%.0f %.0f %.0f", u/s, x/s, r}'
}
read -r rows1 xact1 rps1 <<<"$(writes_run 1)"
read -r rows60 xact60 rps60 <<<"$(writes_run 60)"

# Deletes on B, waited for by A and C.
# The first cluster node started made the database's first admin; its file is in its dir.
admin_pw=$(cat "$work/node-a/initial-admin-password")
create() { # port -> id
  curl -fs -u "admin:$admin_pw" -H 'Content-Type: application/json' -d "{\"name\":\"$2\"}" \
    "http://127.0.0.1:$1/admin/api/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
del=""
for i in $(seq 200); do
  id=$(create "$a" "del-$i")
  del+=$(curl -fs -o /dev/null -w '%{time_total}\n' -X DELETE -u "admin:$admin_pw" \
    "http://127.0.0.1:$b/admin/api/tokens/$id")$'\n'
done
pct() { sort -n <<<"$2" | awk -v p="$1" '{ a[NR]=$1 } END { i=int(NR*p/100); if (i<1) i=1; printf "%.1f", a[i]*1000 }'; }
hist=$(curl -fs "http://127.0.0.1:$c/metrics" | grep '^pa_auth_cluster_propagation_seconds_bucket' \
  | sed 's/.*le="\([^"]*\)"} \(.*\)/\1:\2/' | tr '\n' ' ')

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-cluster-scale.md"
{
  echo "# Cluster mode at scale — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(machine_line). PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on the same machine (default settings, fsync on)."
  echo "Command: \`bench/cluster_scale.sh $tokens $secs\`."
  echo
  echo "| what | figure |"
  echo "|---|---|"
  echo "| \`pa-auth migrate\` of $tokens tokens from sled into the database (verified) | $migrate_s s |"
  echo "| start-up to /healthz 200, cluster node, $tokens tokens (3 starts) | ${st_cluster[*]} s |"
  echo "| start-up to /healthz 200, sled node, same tokens (3 starts, alternating) | ${st_sled[*]} s |"
  echo "| last-used under load over 100,000 distinct tokens, \`--last-used-resolution 1\`: rows updated/s, transactions/s, req/s | $rows1 / $xact1 / $rps1 |"
  echo "| same, \`--last-used-resolution 60\` | $rows60 / $xact60 / $rps60 |"
  echo "| DELETE on B until its 204 (A and C applied it), p50 / p99 / max ms, 200 deletes | $(pct 50 "$del") / $(pct 99 "$del") / $(pct 100 "$del") |"
  echo "| node C's propagation histogram (le seconds: cumulative count) | $hist |"
  echo
  echo "Rows and transactions are the database's own counters (pg_stat_user_tables, pg_stat_database) over the ${secs} s run plus 1 s; transactions include the followers' polls (4/s a node) and every other statement."
} | tee "$out"
echo "written: $out" >&2

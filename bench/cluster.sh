#!/usr/bin/env bash
# Cluster mode (issue 17): what a shared PostgreSQL store costs, side by side with sled.
#
#   [ROUNDS=3] bench/cluster.sh [SECONDS]   (default 8 s per run)
#
# Starts its own PostgreSQL (initdb/pg_ctl; as the postgres user when run as root) on a
# loopback port, three pa-auth nodes on one database and one sled node, then reports:
# forward-auth req/s and p99 on a cluster node vs the sled node (keep-alive, 32 conns,
# alternating rounds), and the latency of a DELETE on one node until its 204 (which waits for
# the other two nodes to apply it) vs a DELETE on the sled node. Output: stdout and
# bench/results/<date>-cluster.md. Reports only; nothing here asserts a threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
secs=${1:-8}
rounds=${ROUNDS:-3}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -n 1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --locked -q
work=$(mktemp -d)
chmod 755 "$work"   # the postgres user must reach its data dir inside
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
psql -h 127.0.0.1 -p "$pg_port" -U pa -d postgres -qc "CREATE DATABASE bench"
url="postgres://pa@127.0.0.1:$pg_port/bench"

start_node() { # name extra-args...   (sets $port; pids are kept for the cleanup)
  local name=$1; shift
  port=$(free_port)
  ./target/release/pa-auth serve --listen "127.0.0.1:$port" --data-dir "$work/$name" \
    --log-level warn "$@" >/dev/null 2>>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "pa-auth ($name) did not start" >&2; exit 1
}
start_node a --database-url "$url"; a=$port
start_node b --database-url "$url"; b=$port
start_node c --database-url "$url"; c=$port
start_node sled; s=$port
pw_cluster=$(cat "$work/a/initial-admin-password")
pw_sled=$(cat "$work/sled/initial-admin-password")

create() { # port password name -> "id token"
  curl -fs -u "admin:$2" -H 'Content-Type: application/json' -d "{\"name\":\"$3\"}" \
    "http://127.0.0.1:$1/admin/api/tokens" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["id"], v["token"])'
}
read -r _ tok_cluster <<<"$(create "$a" "$pw_cluster" verify)"
read -r _ tok_sled <<<"$(create "$s" "$pw_sled" verify)"
sleep 1

run_wrk() { wrk -t2 -c32 -d"${secs}s" --latency -s bench/report.lua -H "Authorization: Bearer $2" "http://127.0.0.1:$1/auth/verify" | grep '^RESULT'; }
avg() { awk -v k="$1" '{ for (i=1;i<=NF;i++) if ($i ~ "^"k"=") { split($i,a,"="); t+=a[2]; n++ } } END { printf "%.3f", t/n }' <<<"$2"; }
cl=""; sl=""
for _ in $(seq "$rounds"); do
  cl+=$(run_wrk "$b" "$tok_cluster")$'\n'
  sl+=$(run_wrk "$s" "$tok_sled")$'\n'
done

# DELETE latency: 30 tokens each, deleted one by one (timed by curl).
delete_times() { # port password
  local out=""
  for i in $(seq 30); do
    read -r id _ <<<"$(create "$1" "$2" "del-$i")"
    out+=$(curl -fs -o /dev/null -w '%{time_total}\n' -X DELETE -u "admin:$2" "http://127.0.0.1:$1/admin/api/tokens/$id")$'\n'
  done
  printf '%s' "$out"
}
sleep 1
del_cluster=$(delete_times "$b" "$pw_cluster")
del_sled=$(delete_times "$s" "$pw_sled")
pct() { sort -n <<<"$2" | awk -v p="$1" '{ a[NR]=$1 } END { i=int(NR*p/100); if (i<1) i=1; printf "%.1f", a[i]*1000 }'; }

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%d)-cluster.md"
{
  echo "# Cluster mode vs the embedded store — $(date -u +%Y-%m-%dT%H:%MZ), ${secs} s runs, mean of $rounds alternating rounds"
  echo
  echo "Machine: $(machine_line). PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on the same machine; 3 pa-auth nodes on one database, 1 sled node; wrk -t2 on the same machine."
  echo "Command: \`ROUNDS=$rounds bench/cluster.sh $secs\`."
  echo
  echo "| what | cluster node | sled node | cluster / sled |"
  echo "|---|---|---|---|"
  printf '| forward-auth req/s, keep-alive, 32 conns | %.0f | %.0f | %.2f |\n' "$(avg rps "$cl")" "$(avg rps "$sl")" "$(awk -v a="$(avg rps "$cl")" -v b="$(avg rps "$sl")" 'BEGIN{print a/b}')"
  printf '| forward-auth p99 ms | %s | %s | %.2f |\n' "$(avg p99 "$cl")" "$(avg p99 "$sl")" "$(awk -v a="$(avg p99 "$cl")" -v b="$(avg p99 "$sl")" 'BEGIN{print a/b}')"
  printf '| DELETE until 204, p50 / p90 / max ms (30 each) | %s / %s / %s | %s / %s / %s | — |\n' \
    "$(pct 50 "$del_cluster")" "$(pct 90 "$del_cluster")" "$(pct 100 "$del_cluster")" \
    "$(pct 50 "$del_sled")" "$(pct 90 "$del_sled")" "$(pct 100 "$del_sled")"
  echo
  echo "A cluster DELETE includes the wait until the two other nodes have applied it (NOTIFY wakes them); a sled DELETE includes its fsync."
} | tee "$out"
echo "written: $out" >&2

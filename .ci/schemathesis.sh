#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a real pa-auth built by the test run, using
# docs/openapi.json as served at /openapi.json: status codes, content types, headers and
# response schemas must match the document, and nothing may answer 5xx.
# One worker per run: CPython 3.11 ast.parse is not thread-safe (cpython gh-106905) and
# hypothesis parses lambdas with it, which failed a CI run with "AST constructor recursion
# depth mismatch" under --workers 2.
# Usage: .ci/schemathesis.sh [path/to/pa-auth]   (default target/debug/pa-auth)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/pa-auth}
command -v schemathesis >/dev/null || python3 -m pip install -q 'schemathesis>=4,<5'
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" 2>"$work/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port"
pw=$(cat "$work/data/initial-admin-password")
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

# 1. Admin routes with HTTP Basic. Login and password change are run last: failed attempts
#    there lock the address out (429) by design, which would starve the other operations.
schemathesis run "$base/openapi.json" --auth "admin:$pw" --checks "$checks" \
  --exclude-tag forward-auth --exclude-tag api-token \
  --exclude-operation-id login --exclude-operation-id changePassword \
  --max-examples 60 --workers 1

# 2. Token routes with a real API token.
token=$(curl -fs -u "admin:$pw" -H 'Content-Type: application/json' \
  -d '{"name":"schemathesis"}' "$base/admin/api/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
schemathesis run "$base/openapi.json" -H "Authorization: Bearer $token" --checks "$checks" \
  --include-tag forward-auth --include-tag api-token --include-tag public \
  --max-examples 60 --workers 1

# 3. Login and password change (429s once throttled are documented responses).
schemathesis run "$base/openapi.json" --auth "admin:$pw" --checks "$checks" \
  --include-operation-id login --include-operation-id changePassword \
  --max-examples 30 --workers 1
echo "schemathesis: all runs passed"

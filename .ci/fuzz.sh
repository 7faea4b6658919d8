#!/usr/bin/env bash
# The fuzz workspace builds with its committed lock file and every target runs a short smoke
# from its corpus, so a stale target, a stale fuzz/Cargo.lock or a new crash fails CI instead
# of waiting for a tester. cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 unlocks them
# on the stable toolchain this machine has.
# Usage: .ci/fuzz.sh [seconds per target]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# cargo fuzz has no --locked: check the lock file first, so a stale one fails here.
cargo metadata --locked --format-version 1 >/dev/null
cargo fuzz build
new=$(mktemp -d)
trap 'rm -rf "$new"' EXIT
for target in $(cargo fuzz list); do
  # New inputs go to a scratch dir; the committed corpus is only read.
  mkdir -p "$new/$target"
  log="$new/$target.log"
  if ! cargo fuzz run "$target" "$new/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz target $target failed (input under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units' "$log" || true
  echo "fuzz target $target: ${seconds}s smoke passed"
done

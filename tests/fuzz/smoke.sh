#!/usr/bin/env bash
# Runs every fuzz target briefly on its committed corpus, so that a change
# that makes a known input crash again (or a nearby one) fails CI. The long
# runs that grew the corpora are described in README.md here.
#
#   tests/fuzz/smoke.sh            # about 60 s of fuzzing in all, after the build
#   K2_FUZZ_SECONDS=300 tests/fuzz/smoke.sh
#
# cargo-fuzz runs on the stable toolchain with `-s none`: without a
# sanitizer it passes rustc only stable flags (libFuzzer's coverage
# instrumentation, `--cfg fuzzing`, debug assertions). AddressSanitizer
# would need nightly; K2's code is safe Rust, and what is hunted is panics,
# overflows (debug assertions are on), hangs and runaway memory.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
total_seconds="${K2_FUZZ_SECONDS:-60}"
# Instrumented builds must not mix with the workspace's own artifacts.
target_dir="${K2_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-/var/cache/k2-target}-fuzz}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  # In a temporary target directory, not the shared one CI exports.
  env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked
fi
cargo fuzz --version

(cd "$fuzz_dir" && cargo fmt --check)

mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
seconds_each=$((total_seconds / ${#targets[@]}))
if [ "$seconds_each" -lt 1 ]; then
  seconds_each=1
fi

fuzz() {
  cargo fuzz "$1" -s none --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" "${@:2}"
}

start=$(date +%s)
fuzz build
echo "built ${#targets[@]} targets in $(($(date +%s) - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  # New inputs go to a scratch directory: the committed corpus is only read.
  mkdir -p "$work/$target"
  log="$work/$target.log"
  status=0
  fuzz run "$target" "$work/$target" "$fuzz_dir/corpus/$target" -- \
    -max_total_time="$seconds_each" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs="$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log")"
  corpus="$(find "$fuzz_dir/corpus/$target" -type f | wc -l)"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "FAIL $target (exit $status) after ${runs:-?} executions; the last lines of its log:"
    tail -n 40 "$log"
  else
    echo "ok   $target: ${runs:-?} executions in ${seconds_each} s from $corpus committed inputs"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]}; reproduce with"
  echo "  cargo fuzz run -s none --fuzz-dir tests/fuzz <target> <crash file>"
  exit 1
fi
echo "all ${#targets[@]} fuzz targets ran clean"

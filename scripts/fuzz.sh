#!/usr/bin/env bash
# Runs every coverage-guided fuzz target in fuzz/ for a bounded time (issue #12) and fails
# if any of them crashes. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# (default: 30 s each, every target). Targets start from the seeds in fuzz/corpus/TARGET;
# what they discover goes to fuzz/target/corpus/TARGET (not committed), and a crashing
# input to fuzz/artifacts/TARGET/ (reproduce: cargo fuzz run TARGET FILE).
#
# cargo fuzz needs nightly compiler flags (-Zsanitizer, coverage): on the stable
# toolchain RUSTC_BOOTSTRAP=1 allows them; a nightly toolchain, when installed, is the
# fallback if that build fails.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-30}"
[ $# -gt 0 ] && shift
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 64 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

toolchain=()
export RUSTC_BOOTSTRAP=1
echo "== building the fuzz targets ($(rustc --version))"
if ! cargo fuzz build; then
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "== the stable build failed; trying nightly"
    unset RUSTC_BOOTSTRAP
    toolchain=(+nightly)
    cargo "${toolchain[@]}" fuzz build
  else
    exit 1
  fi
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  work="target/corpus/$target"
  mkdir -p "$work"
  # New inputs go to the first directory; the committed seeds are only read.
  if ! cargo "${toolchain[@]}" fuzz run "$target" "$work" "corpus/$target" -- \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "== fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"

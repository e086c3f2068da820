#!/usr/bin/env bash
# Fuzzes every harness that has a seed corpus in fuzz/corpus/<harness>/ for a bounded time, a
# few at a time. Any crash, leak, sanitizer report, timeout (a hang) or oversized allocation
# fails the run and leaves the input in BUILD_DIR/fuzz-work/<harness>/artifacts/.
#
#   fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_EACH] [PARALLEL]
#
# `make test-fuzz` runs it on build-asan, the sanitizer build that also holds the harnesses.
#
# New inputs go to BUILD_DIR/fuzz-work/<harness>/corpus, never into the committed seeds; an input
# that found a bug is committed by hand (docs/hardening.md).
set -uo pipefail
build_dir=$(cd "${1:?usage: run_fuzzers.sh BUILD_DIR [SECONDS_EACH] [PARALLEL]}" && pwd)
seconds=${2:-60}
parallel=${3:-2}
source_dir=$(cd "$(dirname "$0")" && pwd)

# halt_on_error and no recovery make any report fatal; leaks are reported at the end of a run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

run_one() {
  local name=$1
  local work=$build_dir/fuzz-work/$name
  mkdir -p "$work/corpus" "$work/artifacts"
  # -timeout: one input taking 10 s is a hang. -malloc_limit_mb: no input of at most 4 KiB may
  # make the readers allocate 256 MiB at once (a header claiming a huge shape must fail before
  # allocating). -rss_limit_mb bounds the whole process.
  "$build_dir/bin/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=256 -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$source_dir/corpus/$name" \
    >"$work/log.txt" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAILED $name (exit $rc); last lines of $work/log.txt:"
    tail -n 40 "$work/log.txt"
    ls -l "$work/artifacts"
    return 1
  fi
  echo "ok     $name: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/log.txt" |
    grep -Eo '[0-9]+$') runs in ${seconds}s, corpus $(ls "$work/corpus" | wc -l) new inputs"
}

harnesses=()
for dir in "$source_dir"/corpus/*/; do
  name=$(basename "$dir")
  if [ ! -x "$build_dir/bin/$name" ]; then
    echo "no harness binary $build_dir/bin/$name for the corpus fuzz/corpus/$name" >&2
    exit 1
  fi
  harnesses+=("$name")
done

status=0
running=0
pids=()
for name in "${harnesses[@]}"; do
  run_one "$name" &
  pids+=($!)
  running=$((running + 1))
  if [ $running -ge "$parallel" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
done
while [ $running -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
exit $status

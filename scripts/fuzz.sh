#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in build-fuzz (clang, ASan and
# UBSan) and runs each for SECONDS, two at a time, from the seeds in
# tests/fuzz/corpus. Usage: scripts/fuzz.sh [SECONDS] (or FUZZ_SECONDS; 60).
# Prints one line per target; exits 1 when one crashed or broke an invariant,
# naming its crash file. Nothing is written into the tree but build-fuzz: the
# inputs found, the logs and the crash files go to a temporary directory,
# kept when something failed or with FUZZ_KEEP=1. docs/fuzzing.md says more.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-60}}"
parallel="${FUZZ_JOBS:-2}"
targets=(request_head range conditional path heads record_codec record_log meta_reply)
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "fuzz.sh: SECONDS must be a positive number" >&2; exit 2; }

scripts/deps.sh build fuzz
if [[ ! -f build-fuzz/build.ninja ]]; then
    CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true -Db_lundef=false --wrap-mode=nofallback
fi
outputs=()
for target in "${targets[@]}"; do outputs+=("tests/fuzz/${target}_fuzz"); done
ninja -C build-fuzz "${outputs[@]}" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/smp-fuzz.XXXXXX")
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $parallel at a time; output in $work"

# Runs one target; its log is $work/<target>.log. The first corpus directory
# is the one libFuzzer adds to, so the seeds in the tree are only read.
run_target() {
    local target=$1 max_len=8192
    [[ $target == record_codec ]] && max_len=70000  # a whole datagram (kMaxBatchBytes) and more
    [[ $target == record_log ]] && max_len=70000     # frames of records up to kMaxRecordBytes
    mkdir -p "$work/corpus/$target"
    UBSAN_OPTIONS=print_stacktrace=1 "build-fuzz/tests/fuzz/${target}_fuzz" "$work/corpus/$target" \
        "tests/fuzz/corpus/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$work/$target-" >"$work/$target.log" 2>&1
}

pids=()
for target in "${targets[@]}"; do
    while [[ $(jobs -rp | wc -l) -ge $parallel ]]; do wait -n || true; done
    run_target "$target" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done

failed=0
for target in "${targets[@]}"; do
    log="$work/$target.log"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [[ -n "$runs" ]] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$log" | tail -1)
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [[ -n "$crash" ]]; then
        failed=1
        why=$(grep -m1 -E 'invariant broken|ERROR: (AddressSanitizer|libFuzzer)|runtime error' "$log" || true)
        result="CRASH: $crash (${why:-see $log})"
    elif grep -q '^Done [0-9]* runs' "$log"; then
        result="ok"
    else
        failed=1
        result="FAILED: see $log"
    fi
    echo "fuzz $target: ${runs:-0} executions, ${cov:-0} coverage, $result"
done

if [[ $failed -eq 0 && -z "${FUZZ_KEEP:-}" ]]; then
    rm -rf "$work"
else
    echo "fuzz: logs, crash files and the inputs found are in $work"
fi
exit $failed

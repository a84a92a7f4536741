#!/usr/bin/env bash
# Installs what SMProtocol and its tests need, builds, and runs every test:
#  1. the doctest unit tests and the integration tests against the real binary
#     with real clients (curl, wget, aria2c, nginx, memcached, ...), in build/;
#  2. the same tests against build-asan/ (AddressSanitizer and
#     UndefinedBehaviorSanitizer): any report from any process fails the run;
#  3. each libFuzzer target for FUZZ_SECONDS (60) seconds (scripts/fuzz.sh).
# Arguments go to both `meson test` runs (e.g. --suite unit); SMP_SANITIZE=0
# skips step 2 and FUZZ_SECONDS=0 step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build test fuzz
scripts/build.sh
status=0
meson test -C build --print-errorlogs "$@" || status=$?

if [[ ${SMP_SANITIZE:-1} != 0 ]]; then
  scripts/build.sh asan
  # Every sanitized process (the server's master, workers and collector, the
  # stats command, the unit tests) writes its reports here, one file per pid:
  # a worker that dies of one is replaced, so its report is the only trace.
  reports=$(mktemp -d "${TMPDIR:-/tmp}/smp-sanitizers.XXXXXX")
  # SMP_SANITIZED: the few checks of memory use (RSS) do not hold under ASan.
  SMP_SANITIZED=1 ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1" \
  UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1" \
    meson test -C build-asan --print-errorlogs --timeout-multiplier 3 "$@" || status=$?
  if compgen -G "$reports/*" >/dev/null; then
    echo "sanitizer reports ($reports):"
    for report in "$reports"/*; do echo "== $report"; head -60 "$report"; done
    status=1
  else
    echo "sanitizers: no report"
    rm -rf "$reports"
  fi
fi

fuzz_log=$(mktemp "${TMPDIR:-/tmp}/smp-fuzz-summary.XXXXXX")
if [[ ${FUZZ_SECONDS:-60} != 0 ]]; then
  scripts/fuzz.sh "${FUZZ_SECONDS:-60}" | tee "$fuzz_log" || status=$?
fi

FUZZ_LOG="$fuzz_log" /usr/bin/python3 - <<'PY'
import json, os
results = []
for build in ('build', 'build-asan'):
    path = os.path.join(build, 'meson-logs', 'testlog.json')
    if os.path.exists(path) and (build == 'build' or os.environ.get('SMP_SANITIZE', '1') != '0'):
        results += [json.loads(line)["result"] for line in open(path)]
for line in open(os.environ['FUZZ_LOG']):
    if line.startswith('fuzz ') and ':' in line.split()[1]:
        results.append('OK' if line.rstrip().endswith(', ok') else 'FAIL')
passed = sum(r in ("OK", "EXPECTEDFAIL") for r in results)
skipped = sum(r == "SKIP" for r in results)
print(f"tests: {passed} passed, {len(results) - passed - skipped} failed, {skipped} skipped")
PY
rm -f "$fuzz_log"
exit $status

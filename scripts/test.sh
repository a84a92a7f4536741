#!/usr/bin/env bash
# Installs what SMProtocol and its tests need, builds, and runs every test:
# the doctest unit tests and the integration tests against the real binary
# with real clients (curl, wget, aria2c).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build test
scripts/build.sh
status=0
meson test -C build --print-errorlogs "$@" || status=$?
/usr/bin/python3 - <<'PY'
import json
results = [json.loads(line)["result"] for line in open("build/meson-logs/testlog.json")]
passed = sum(r in ("OK", "EXPECTEDFAIL") for r in results)
skipped = sum(r == "SKIP" for r in results)
print(f"tests: {passed} passed, {len(results) - passed - skipped} failed, {skipped} skipped")
PY
exit $status

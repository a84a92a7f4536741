#!/usr/bin/env bash
# Configures (once) and builds SMProtocol. Never downloads: every dependency
# comes from the Debian packages scripts/deps.sh installs.
#   scripts/build.sh          build/       the build that is installed and run
#   scripts/build.sh asan     build-asan/  the same code with AddressSanitizer and
#                                          UndefinedBehaviorSanitizer, for the tests
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "")   dir=build; options=() ;;
  # b_lundef=false: the modules are shared objects that take the sanitizers'
  # runtime from the binary that loads them.
  asan) dir=build-asan; options=(-Db_sanitize=address,undefined -Db_lundef=false) ;;
  *)    echo "build.sh: unknown variant '$1' (none, or asan)" >&2; exit 2 ;;
esac
if [[ ! -f $dir/build.ninja ]]; then
  meson setup "$dir" --wrap-mode=nofallback --buildtype=debugoptimized "${options[@]}"
fi
ninja -C "$dir"

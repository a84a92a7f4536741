#!/usr/bin/env bash
# Configures (once) and builds SMProtocol in build/. Never downloads: every
# dependency comes from the Debian packages scripts/deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f build/build.ninja ]]; then
  meson setup build --wrap-mode=nofallback --buildtype=debugoptimized
fi
ninja -C build

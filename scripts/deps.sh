#!/usr/bin/env bash
# Installs SMProtocol's Debian 12 packages. Usage: scripts/deps.sh [build] [test] [bench] [fuzz]
# Skips apt-get entirely when everything asked for is already installed.
set -euo pipefail

declare -A groups=(
  [build]="g++ meson ninja-build pkg-config libsystemd-dev libuv1-dev libyaml-cpp-dev libspdlog-dev doctest-dev libhttp-parser-dev libmaxminddb-dev libsqlite3-dev libmongoc-dev libmemcached-dev libssl-dev media-types"
  [test]="openssl python3 python3-pymongo memcached curl wget aria2 libmaxmind-db-writer-perl nginx-light wrk systemd procps slowhttptest iproute2 chromium python3-websocket prometheus haproxy"
  [bench]="nginx-light wrk curl python3 util-linux"
  # scripts/fuzz.sh: libclang_rt.fuzzer and the sanitizers' runtimes come with
  # libclang-rt-14-dev; llvm-symbolizer (llvm) names the lines of a crash.
  [fuzz]="clang libclang-rt-14-dev llvm"
)

wanted=()
for group in "${@:-build}"; do
  [[ -n "${groups[$group]:-}" ]] || { echo "deps.sh: unknown group '$group'" >&2; exit 2; }
  read -ra names <<< "${groups[$group]}"
  wanted+=("${names[@]}")
done

missing=()
for name in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" || missing+=("$name")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "Installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

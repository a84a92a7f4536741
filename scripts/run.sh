#!/usr/bin/env bash
# Installs what SMProtocol needs, builds it, and runs it in the foreground on
# an example config serving FOLDER (default: a small demo folder it creates),
# with download tracking into build/demo-state/stats.db.
# Usage: scripts/run.sh [FOLDER] [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
scripts/build.sh

folder="${1:-}"
port="${2:-8081}"
if [[ -z "$folder" ]]; then
  folder="$PWD/demo"
  if [[ ! -d "$folder" ]]; then
    mkdir -p "$folder/docs"
    echo "Hello from SMProtocol" > "$folder/hello.txt"
    head -c $((8 * 1024 * 1024)) /dev/urandom > "$folder/sample-8MiB.bin"
    printf '# Demo\nServed by SMProtocol.\n' > "$folder/docs/readme.md"
  fi
fi
folder="$(cd "$folder" && pwd)"

config="build/demo.yaml"
sed -e "s|@ROOT@|$folder|" -e "s|@PORT@|$port|" -e "s|@STATE@|$PWD/build|" etc/demo.yaml.in > "$config"
echo "Serving $folder"
echo "Try:  curl -O http://127.0.0.1:$port/hello.txt    (Ctrl-C stops the server)"
echo "Then: build/core/smprotocol stats --config $config summary"
exec build/core/smprotocol --config "$config"

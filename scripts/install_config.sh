#!/bin/sh
# meson install step: puts the sample configuration at its place (e.g.
# /etc/smprotocol.yaml) only when no file is there yet, so that an upgrade
# never overwrites what the administrator edited. Honours DESTDIR.
# Usage: install_config.sh SAMPLE TARGET
set -eu
sample="$1"
target="${DESTDIR:-}$2"
if [ -e "$target" ]; then
  echo "Keeping $target (the new sample is $sample)"
  exit 0
fi
[ -n "${MESON_INSTALL_DRY_RUN:-}" ] && { echo "Would install $target"; exit 0; }
mkdir -p "$(dirname "$target")"
cp "${DESTDIR:-}$sample" "$target"
chmod 0644 "$target"
echo "Installing $target"

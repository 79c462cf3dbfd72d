#!/bin/sh
# Builds dovecot-xaps (plugin, worker, tests) in ./build.
# XAPS_SKIP_DEPS=1 skips installing the Debian packages it needs.
set -eu
cd "$(dirname "$0")/.."

if [ "${XAPS_SKIP_DEPS:-0}" != 1 ]; then
  sh scripts/install-deps.sh
fi

if [ ! -f build/build.ninja ]; then
  if [ -d build/meson-private ]; then
    meson setup --wipe build # an interrupted setup
  else
    meson setup build
  fi
fi
ninja -C build -j2

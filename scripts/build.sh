#!/bin/sh
# Builds dovecot-xaps (plugin, worker, tests, benchmarks) in ./build.
# XAPS_SKIP_DEPS=1 skips installing the Debian packages it needs.
set -eu
cd "$(dirname "$0")/.."

if [ "${XAPS_SKIP_DEPS:-0}" != 1 ]; then
  sh scripts/install-deps.sh
fi

# The benchmarks (bench/) are compiled too, not run, so that they keep up
# with the code they drive; scripts/bench.sh runs them in a release build.
if [ ! -f build/build.ninja ]; then
  if [ -d build/meson-private ]; then
    meson setup --wipe build -Dbenchmarks=true # an interrupted setup
  else
    meson setup build -Dbenchmarks=true
  fi
fi
ninja -C build -j2

#!/bin/sh
# A load run, not part of scripts/test.sh: a real Dovecot with the plugin and
# the worker (as built in ./build), SESSIONS concurrent IMAP sessions that
# register a device and re-register it every one to two seconds (renew), or
# register once and IDLE under the shipped configuration (idle), while mail
# is delivered over LMTP and a local mock APNs takes the pushes. Prints
# progress every 10 s, then errors, registration and delivery latencies,
# the worker's memory, and whether every registration that got OK is
# present. Needs root (it runs Dovecot and creates test users).
#
#   sh scripts/load-test.sh [SESSIONS=500] [SECONDS=120] [MAILS_PER_SECOND=20] [renew|idle]
#
# XAPS_BUILD_DIR: the build directory (default ./build).
set -eu
cd "$(dirname "$0")/.."
build=${XAPS_BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
  sh scripts/build.sh
fi
ninja -C "$build" -j2 tests/e2e/xaps-load-test apns-worker/xaps-worker plugin/lib95_xaps_plugin.so \
  tests/pki/ca.pem >/dev/null
# Each session is a thread of the driver and a process of Dovecot's.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$build/tests/e2e/xaps-load-test" "${1:-500}" "${2:-120}" "${3:-20}" "${4:-renew}"

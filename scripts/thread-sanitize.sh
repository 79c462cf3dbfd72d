#!/bin/sh
# Builds the unit tests of the code that runs threads with ThreadSanitizer in
# build-tsan/ and runs them there. Ends with "N passed, M failed"; exits
# non-zero if a test failed or ThreadSanitizer reported anything.
#
# The worker has two threads besides its event loop: the shared store's
# (apns-worker/shared-store-link.cc, with the PostgreSQL module it drives)
# and name resolution (apns-worker/apns/address-resolution.cc). Only their
# tests are built here, which keeps this run to minutes: everything else is
# single-threaded, and the AddressSanitizer run (scripts/sanitize.sh) covers
# it.
#
# Every report is written to a file under a fresh directory in /tmp,
# printed at the end, and fails the run.
#
# XAPS_TSAN_BUILD_DIR: the build directory (default ./build-tsan).
# XAPS_SKIP_DEPS=1: do not install the Debian packages the build needs.
set -eu
cd "$(dirname "$0")/.."

build=${XAPS_TSAN_BUILD_DIR:-build-tsan}
tests="test-shared-store-link test-store-writes test-store-migration test-shared-store-module"
tests="$tests test-address-resolution test-poll-event-loop"
targets=""
# With libpq (scripts/install-deps.sh installs it), the PostgreSQL store too.
if pkg-config --exists libpq; then
  tests="$tests test-pgsql-registration-store test-registration-store-conformance"
  targets="apns-worker/xaps-store-pgsql.so"
fi

if [ "${XAPS_SKIP_DEPS:-0}" != 1 ]; then
  sh scripts/install-deps.sh
fi
if [ ! -f "$build/build.ninja" ]; then
  # As in scripts/sanitize.sh: the module leaves the runtime's symbols to
  # the test that loads it, and gcc 12 warns falsely inside libstdc++ under
  # the sanitizers.
  meson setup "$build" -Db_sanitize=thread -Db_lundef=false \
    -Dcpp_args=-Wno-maybe-uninitialized
fi
for test in $tests; do
  targets="$targets tests/unit/$test"
done
# shellcheck disable=SC2086 # $targets is a list of targets
ninja -C "$build" -j2 $targets

python3 scripts/count-tests.py --clean "$build"
reports=$(mktemp -d /tmp/xaps-thread-sanitizer-XXXXXX)
status=0
# shellcheck disable=SC2086 # $tests is a list of test names
TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:log_path=$reports/tsan" \
  meson test -C "$build" --no-rebuild --print-errorlogs $tests || status=1

sh scripts/sanitizer-reports.sh "$reports" thread-sanitize || status=1

python3 scripts/count-tests.py "$build" || status=1
exit "$status"

#!/bin/sh
# Builds, runs every test suite (unit and e2e; e2e needs root), and ends with
# one line "N passed, M failed" counting individual GoogleTest test cases.
# Exits non-zero if any test failed or none ran.
set -eu
cd "$(dirname "$0")/.."

sh scripts/build.sh

# A test executable that crashes writes no XML report: remove old reports
# first so that a stale one is not counted instead.
python3 scripts/count-tests.py --clean build

status=0
meson test -C build --print-errorlogs || status=$?

if ! python3 scripts/count-tests.py build && [ "$status" = 0 ]; then
  status=1
fi
exit "$status"

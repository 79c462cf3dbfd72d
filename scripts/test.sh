#!/bin/sh
# Builds, runs every test suite (unit and e2e; e2e needs root), the fuzzers
# (scripts/fuzz.sh), the sanitizer builds (scripts/sanitize.sh,
# scripts/thread-sanitize.sh), the package
# test (scripts/package-test.sh), then the unit, e2e and package tests and the
# package build once more on Dovecot 2.4 in a Debian 13 root
# (scripts/trixie.sh), and ends with one line
# "N passed, M failed" counting individual GoogleTest test cases.
# Exits non-zero if any test failed or none ran.
set -eu
cd "$(dirname "$0")/.."

# ccache: CI builds a fresh clone each time, at a path of its own, so the
# cache keys leave the path out; and one run compiles the tree several times
# (plain, fuzzers, two sanitizers, two packages), more than ccache's default
# 5 GB keeps.
CCACHE_BASEDIR=$(pwd)
CCACHE_NOHASHDIR=1
CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-15G}
export CCACHE_BASEDIR CCACHE_NOHASHDIR CCACHE_MAXSIZE

# Where the time goes, for a CI run that comes near its limit.
started=$(date +%s)
stage() {
  echo "test.sh [$(($(date +%s) - started))s]: $*"
}

stage "build"
sh scripts/build.sh

# A test executable that crashes writes no XML report: remove old reports
# first so that a stale one is not counted instead.
python3 scripts/count-tests.py --clean build

status=0
stage "unit and e2e suites"
# The package suites run below, against the installed .deb.
meson test -C build --no-suite package --no-suite package-upgrade --print-errorlogs || status=$?

# libFuzzer: each target for a bounded time (XAPS_FUZZ_SECONDS, default 60;
# 0 skips), from the committed seeds; a crash keeps its input under
# tests/fuzz/regressions/ and counts as a failed test.
fuzz_log="build/meson-logs/fuzz-testlog.json"
rm -f "$fuzz_log"
if [ "${XAPS_FUZZ_SECONDS:-60}" != 0 ]; then
  stage "fuzzing"
  sh scripts/fuzz.sh "${XAPS_FUZZ_SECONDS:-60}" > build/meson-logs/fuzz.txt 2>&1 || status=$?
  cat build/meson-logs/fuzz.txt
  python3 scripts/fuzz-results.py build/meson-logs/fuzz.txt "$fuzz_log"
fi

# AddressSanitizer + UndefinedBehaviorSanitizer: the unit and e2e suites again
# in build-asan/ (scripts/sanitize.sh). Counted as one test per suite run
# ("asan/<name>"), plus one failure if a sanitizer reported anything.
# XAPS_SKIP_SANITIZE=1 skips it.
asan_log="build/meson-logs/asan-testlog.json"
rm -f "$asan_log"
if [ "${XAPS_SKIP_SANITIZE:-0}" != 1 ]; then
  asan_status=0
  stage "sanitizers"
  XAPS_SKIP_DEPS=1 sh scripts/sanitize.sh || asan_status=$?
  python3 scripts/prefix-testlog.py asan "$asan_status" "$asan_log" \
    build-asan/meson-logs/unit.json build-asan/meson-logs/testlog.json
  [ "$asan_status" = 0 ] || status=$asan_status
fi

# ThreadSanitizer: the unit tests of the code that runs threads (the shared
# store's thread, name resolution) in build-tsan/ (scripts/thread-sanitize.sh).
# Counted as "tsan/<name>", plus one failure if it reported anything.
# XAPS_SKIP_SANITIZE=1 skips it too.
tsan_log="build/meson-logs/tsan-testlog.json"
rm -f "$tsan_log"
if [ "${XAPS_SKIP_SANITIZE:-0}" != 1 ]; then
  tsan_status=0
  stage "thread sanitizer"
  XAPS_SKIP_DEPS=1 sh scripts/thread-sanitize.sh || tsan_status=$?
  python3 scripts/prefix-testlog.py tsan "$tsan_status" "$tsan_log" build-tsan/meson-logs/testlog.json
  [ "$tsan_status" = 0 ] || status=$tsan_status
fi

# Builds the .deb, installs it, runs the package suite, purges it again; then
# installs the previous release and upgrades it to the new .deb (the
# package-upgrade suite, counted with the package suite's cases).
# XAPS_SKIP_PACKAGE_TEST=1 skips it (it takes minutes and needs root).
package_log=""
if [ "${XAPS_SKIP_PACKAGE_TEST:-0}" = 1 ]; then
  echo "package test skipped (XAPS_SKIP_PACKAGE_TEST=1)"
elif [ "$(id -u)" != 0 ]; then
  echo "package test skipped: installing the package needs root"
else
  stage "package test"
  sh scripts/package-test.sh build || status=$?
  package_log="--extra-log build/meson-logs/package-testlog.json"
fi

# Dovecot 2.4: the unit, e2e and package tests and the package build again, in a
# Debian 13 root (scripts/trixie.sh; prepared once, reused after). Counted
# case by case as "trixie/<test>/<case>". XAPS_SKIP_TRIXIE=1 skips it.
trixie_log="build/meson-logs/trixie-testlog.json"
rm -f "$trixie_log"
if [ "${XAPS_SKIP_TRIXIE:-0}" = 1 ]; then
  echo "Dovecot 2.4 run skipped (XAPS_SKIP_TRIXIE=1)"
elif [ "$(id -u)" != 0 ]; then
  echo "Dovecot 2.4 run skipped: debootstrap and chroot need root"
else
  trixie_status=0
  stage "Dovecot 2.4 (Debian 13 root)"
  cases=$(mktemp)
  XAPS_TRIXIE_TESTLOG="$cases" sh scripts/trixie.sh || trixie_status=$?
  if [ -s "$cases" ]; then
    python3 scripts/prefix-testlog.py trixie "$trixie_status" "$trixie_log" "$cases"
  else
    python3 scripts/prefix-testlog.py trixie "$trixie_status" "$trixie_log" scripts/trixie.sh-wrote-no-results
  fi
  rm -f "$cases"
  [ "$trixie_status" = 0 ] || status=$trixie_status
fi

stage "done"
extra_logs="$package_log"
for log in "$fuzz_log" "$asan_log" "$tsan_log" "$trixie_log"; do
  if [ -f "$log" ]; then
    extra_logs="$extra_logs --extra-log $log"
  fi
done
# shellcheck disable=SC2086 # $extra_logs is a list of options
if ! python3 scripts/count-tests.py build $extra_logs && [ "$status" = 0 ]; then
  status=1
fi
exit "$status"

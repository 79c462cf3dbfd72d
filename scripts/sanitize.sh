#!/bin/sh
# Builds the whole project with AddressSanitizer + UndefinedBehaviorSanitizer
# in build-asan/ and runs the unit and end-to-end suites there. Ends with
# "N passed, M failed"; exits non-zero if a test failed or a sanitizer
# reported anything.
#
# What runs instrumented:
#  * unit suite: the whole core (store, APNs client and connection,
#    scheduler, request handler, protocol codec, parsers, fuzz regressions),
#    with ASan, UBSan and LeakSanitizer.
#  * e2e suite: the worker (xaps-worker is itself an ASan executable, started
#    by Dovecot's master as user xaps), the mail plugin inside Dovecot's imap,
#    lmtp and dovecot-lda processes, and the doveadm plugin inside doveadm.
#    Those are Dovecot's own uninstrumented binaries: the ASan runtime is
#    preloaded into them (LD_PRELOAD; the master hands it to its children
#    through import_environment, which tests/support/test-machine-overrides.cc sets
#    when XAPS_TEST_SANITIZER=1, together with vsz_limit 0 because ASan's
#    shadow memory needs an unlimited address space). Our code there is
#    fully checked; Dovecot's own code is not instrumented, and leak checking
#    is off in the e2e suite (Dovecot's processes, and the worker killed by
#    tests on purpose, exit without freeing everything; and LeakSanitizer
#    cannot run in the chrooted login processes, which have no /proc: it
#    would fail imap-login and anvil with exit status 1).
#
# Every report is written to a file under a fresh directory in /tmp (mode
# 1777: the worker and the mail processes write there as their own users),
# printed at the end, and fails the run.
#
# XAPS_ASAN_BUILD_DIR: the build directory (default ./build-asan).
# XAPS_SKIP_DEPS=1: do not install the Debian packages the build needs.
set -eu
cd "$(dirname "$0")/.."

build=${XAPS_ASAN_BUILD_DIR:-build-asan}
if [ "${XAPS_SKIP_DEPS:-0}" != 1 ]; then
  sh scripts/install-deps.sh
fi
if [ ! -f "$build/build.ninja" ]; then
  # b_lundef=false: an instrumented shared module leaves the runtime's
  # symbols to the process that loads it. -Wno-maybe-uninitialized: with
  # the sanitizers, gcc 12 warns falsely inside libstdc++'s <regex> (and
  # warnings are errors).
  meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false \
    -Dcpp_args=-Wno-maybe-uninitialized
fi
ninja -C "$build" -j2

libasan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  echo "sanitize: gcc has no libasan.so" >&2
  exit 1
fi
libasan=$(readlink -f "$libasan")
# Preloaded too: ASan resolves the real __cxa_throw when it starts, and
# Dovecot's binaries are C, so libstdc++ would otherwise come only with our
# plugin (dlopen) and the first exception the plugin throws would abort
# ("CHECK failed: real___cxa_throw != 0").
libstdcxx=$(readlink -f "$(gcc -print-file-name=libstdc++.so.6)")

reports=$(mktemp -d /tmp/xaps-sanitizer-XXXXXX)
chmod 1777 "$reports"

python3 scripts/count-tests.py --clean "$build"
status=0

ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
  meson test -C "$build" --suite unit --logbase unit --print-errorlogs || status=1

# quarantine_size_mb: ASan keeps freed memory resident (256 MiB by default),
# which would hide what the e2e tests measure: the worker's RSS stays bounded.
XAPS_TEST_SANITIZER=1 \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:quarantine_size_mb=16:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
  meson test -C "$build" --suite e2e --wrapper "env LD_PRELOAD=$libasan:$libstdcxx" \
  --print-errorlogs || status=1
# With --wrapper, meson names its log after the wrapper (testlog-env.json);
# count-tests.py reads the last run's log as testlog.json.
cp "$build/meson-logs/testlog-env.json" "$build/meson-logs/testlog.json" || status=1

sh scripts/sanitizer-reports.sh "$reports" sanitize || status=1

python3 scripts/count-tests.py "$build" --extra-log "$build/meson-logs/unit.json" || status=1
exit "$status"

#!/bin/sh
# Fuzzes every target of tests/fuzz/ with libFuzzer (clang, ASan + UBSan) for
# a bounded time each: scripts/fuzz.sh [SECONDS_PER_TARGET, default 60].
#
# Each run starts from a fresh copy of the committed seeds and regressions in
# the build directory, so the committed corpus never grows. An input that
# crashes, leaks, times out or breaks an invariant is copied into
# tests/fuzz/regressions/<target>/ (test-fuzz-regressions replays it from then
# on) and the script exits non-zero after every target has run.
#
# XAPS_FUZZ_BUILD_DIR: where targets and run data go (default ./build-fuzz).
# XAPS_SKIP_DEPS=1: do not install clang's fuzzer runtime when it is missing.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)

seconds=${1:-60}
case $seconds in
'' | *[!0-9]*)
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
  ;;
esac
build=${XAPS_FUZZ_BUILD_DIR:-$repo/build-fuzz}
mkdir -p "$build"
build=$(cd "$build" && pwd)

# The code under test of each target, besides tests/fuzz/<target>.cc.
sources_of() {
  case $1 in
  fuzz-xaps-request) echo plugin/xaps-request.cc common/registration-rules.cc ;;
  fuzz-worker-protocol) echo common/worker-protocol.cc common/tab-escape.cc common/xaps-error.cc ;;
  fuzz-apns-response)
    echo apns-worker/apns/apns-payload.cc apns-worker/apns/hex-digest.cc common/registration-rules.cc common/xaps-error.cc
    ;;
  fuzz-xapsd-import) echo plugin/xapsd-import.cc common/registration-rules.cc common/xaps-error.cc ;;
  fuzz-caservice-response)
    echo provisioning/caservice-messages.cc provisioning/caservice-crypto.cc \
      apns-worker/apns/credential-file.cc common/xaps-error.cc
    ;;
  *) return 1 ;;
  esac
}
# The libraries each target links (pkg-config names), besides the sanitizers.
packages_of() {
  case $1 in
  fuzz-apns-response) echo jsoncpp openssl ;;
  fuzz-xapsd-import) echo jsoncpp ;;
  fuzz-caservice-response) echo libplist-2.0 openssl ;;
  *) echo "" ;;
  esac
}
targets="fuzz-xaps-request fuzz-worker-protocol fuzz-apns-response fuzz-xapsd-import"
targets="$targets fuzz-caservice-response"

cxxflags="-std=gnu++20 -O1 -g -fno-omit-frame-pointer
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
  -Wall -Wextra -Wpedantic -Werror"

# Debian's clang links -fsanitize=fuzzer only with compiler-rt's libFuzzer
# (libclang-rt-*-dev); try it on an empty target rather than guess the version.
fuzzer_links() {
  probe="$build/toolchain-probe"
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char *, unsigned long) { return 0; }\n' \
    >"$probe.cc"
  command -v clang++ >/dev/null 2>&1 &&
    clang++ -fsanitize=fuzzer,address,undefined "$probe.cc" -o "$probe" >/dev/null 2>&1
}
if ! fuzzer_links; then
  if [ "${XAPS_SKIP_DEPS:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
    echo "fuzz: clang++ cannot link -fsanitize=fuzzer: install clang and libclang-rt-dev" >&2
    exit 1
  fi
  echo "fuzz: installing clang and libclang-rt-dev"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    clang libclang-rt-dev >/dev/null
  fuzzer_links || {
    echo "fuzz: clang++ still cannot link -fsanitize=fuzzer" >&2
    exit 1
  }
fi

# Any sanitizer report is fatal and comes with a stack.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# "#123 DONE cov: 1 ft: 2 corp: 3/4b ..." -> the value after the given word.
final_stat() {
  grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse|RELOAD)' "$2" | tail -n 1 |
    sed -n "s/.* $1 \\([^ ]*\\).*/\\1/p"
}
libfuzzer_stat() {
  sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

failed=0
for target in $targets; do
  work="$build/$target"
  rm -rf "$work.corpus" "$work.artifacts"
  mkdir -p "$work.corpus" "$work.artifacts"

  packages=$(packages_of "$target")
  package_flags=""
  [ -z "$packages" ] || package_flags=$(pkg-config --cflags --libs $packages)
  # shellcheck disable=SC2046,SC2086 # the lists are meant to split into words
  clang++ $cxxflags -Icommon -Iplugin -Iapns-worker -Iapns-worker/apns -Iapns-worker/store \
    -Iprovisioning -Itests/fuzz \
    "tests/fuzz/$target.cc" tests/fuzz/fuzz-invariant-abort.cc $(sources_of "$target") \
    $package_flags -o "$work"

  seeds=0
  for dir in "tests/fuzz/corpus/$target" "tests/fuzz/regressions/$target"; do
    if [ -d "$dir" ]; then
      for file in "$dir"/*; do
        [ -f "$file" ] || continue
        cp "$file" "$work.corpus/"
        seeds=$((seeds + 1))
      done
    fi
  done

  dict=""
  [ -f "tests/fuzz/$target.dict" ] && dict="-dict=tests/fuzz/$target.dict"

  # One in-process worker: libFuzzer's default, the leanest on 2 cores
  # (-jobs/-workers would only add a supervising process and a log file).
  status=0
  # shellcheck disable=SC2086 # $dict is empty or one word
  "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work.artifacts/" $dict "$work.corpus" >"$work.log" 2>&1 || status=$?

  runs=$(libfuzzer_stat number_of_executed_units "$work.log")
  speed=$(libfuzzer_stat average_exec_per_sec "$work.log")
  cov=$(final_stat cov: "$work.log")
  features=$(final_stat ft: "$work.log")
  corpus=$(final_stat corp: "$work.log")
  stats="${runs:-?} runs, ${speed:-?} exec/s, cov ${cov:-?}, ft ${features:-?}"
  stats="$stats, corpus $seeds -> ${corpus:-?}"

  artifacts=$(find "$work.artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ "$status" = 0 ] && [ -z "$artifacts" ]; then
    echo "fuzz: $target: ok, ${seconds}s, $stats"
    continue
  fi

  failed=1
  kept=""
  if [ -n "$artifacts" ]; then
    mkdir -p "tests/fuzz/regressions/$target"
    for artifact in $artifacts; do
      cp "$artifact" "tests/fuzz/regressions/$target/"
      kept="$kept tests/fuzz/regressions/$target/$(basename "$artifact")"
    done
  fi
  echo "--- fuzz: $target: end of $work.log" >&2
  tail -n 60 "$work.log" >&2
  echo "fuzz: $target: FAILED (libFuzzer exit $status), ${seconds}s, $stats; kept:${kept:- nothing}"
done

exit "$failed"

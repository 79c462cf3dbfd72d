#!/bin/sh
# The performance benchmarks (bench/): builds them in release mode in their own
# build directory and runs them against a real Dovecot and the mock APNs
# server, then prints one table: every figure with its unit, its target and
# whether it was met. Not part of the normal test run. Needs root (it runs
# Dovecot and creates the users vmail and xaps) and h2load (nghttp2-client);
# bench-shared-store also needs libpq-dev (at configure time) and postgresql.
# About 6-8 minutes on a 2-core machine; --quick takes about 2.
#
#   sh scripts/bench.sh [--quick]
#
# XAPS_BENCH_BUILD_DIR overrides the build directory (default build-release/).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${XAPS_BENCH_BUILD_DIR:-$repo/build-release}
quick=no
case "${1:-}" in
--quick) quick=yes ;;
"") ;;
*)
    echo "usage: sh scripts/bench.sh [--quick]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    echo "bench.sh runs Dovecot and creates system users: run it as root" >&2
    exit 2
fi
if ! command -v h2load >/dev/null 2>&1; then
    echo "bench.sh compares with h2load: apt-get install nghttp2-client" >&2
    exit 2
fi

# -Wno-restrict: GCC 12 at -O3 reports a false -Wrestrict inside
# std::string's operator+ (GCC bug 105329), which -Werror would make fatal.
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$repo" --buildtype=release -Dbenchmarks=true \
        -Dcpp_args=-Wno-restrict >/dev/null
else
    meson configure "$build" -Dbenchmarks=true >/dev/null
fi
ninja -C "$build" -j2 benchmarks >/dev/null

results=$(mktemp)
trap 'rm -f "$results"' EXIT
failed=0

# run NAME ARGS...: progress goes to the terminal, figures to $results.
run() {
    name=$1
    shift
    echo "== $name $*" >&2
    if ! timeout 600 "$build/bench/$name" "$@" >>"$results"; then
        echo "== $name FAILED" >&2
        failed=1
    fi
}

# The shared store's benchmark is built only with libpq (libpq-dev) and
# runs its own PostgreSQL (postgresql).
run_if_built() {
    if [ -x "$build/bench/$1" ]; then
        run "$@"
    else
        echo "== $1 skipped: not built (needs libpq-dev at configure time)" >&2
    fi
}

if [ "$quick" = yes ]; then
    run bench-push --rounds 3 --connections 1,4
    run bench-latency --steps 1:5,10:50,100:300
    run bench-delivery --rounds 3 --round-ms 1500
    run bench-register --duration-ms 2000
    run bench-scale --large 100000
    run bench-connections
    run bench-list-import --list-rows 100000 --import-rows 20000
    run_if_built bench-shared-store --registrations 20000 --batches 30 --single-puts 100 \
        --pg-lookups 1000
else
    run bench-push --rounds 7 --connections 1,4 --devices 50000
    run bench-latency
    run bench-delivery --rounds 7 --round-ms 2500
    run bench-register --duration-ms 4000
    run bench-scale
    run bench-connections
    run bench-list-import
    run_if_built bench-shared-store
fi

echo
echo "dovecot-xaps benchmarks ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
grep '^XAPS-BENCH' "$results" | awk -F '\t' '
    BEGIN {
        printf "%-16s %-58s %12s %-12s %-10s %s\n", "figure", "metric", "value", "unit", "target", "verdict"
    }
    {
        printf "%-16s %-58s %12s %-12s %-10s %s\n", $2, $3, $4, $5, $6, $7
    }'
exit "$failed"

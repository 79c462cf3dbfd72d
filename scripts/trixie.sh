#!/bin/sh
# Builds, tests and packages dovecot-xaps against Dovecot 2.4 in a Debian 13
# ("trixie") root, from this tree, on any Debian host. Run as root.
#
#   sh scripts/trixie.sh
#
# 1. Prepares the root once with `debootstrap --variant=minbase trixie`
#    ($XAPS_TRIXIE_ROOT, default /var/tmp/xaps-trixie) and reuses it after.
# 2. Installs Dovecot 2.4 and every build and test dependency in it
#    (scripts/install-deps.sh, run inside; nothing to do when all are there).
# 3. Mounts /proc, /dev, a tmpfs /tmp and this tree (read-only, as /src) into
#    it, and unmounts them again on exit.
# 4. Builds with meson in /build/xaps inside the root, runs the unit and the
#    end-to-end suites against the root's Dovecot 2.4, and builds the package
#    with dpkg-buildpackage (the .deb lands in the root's /build/pkg).
# 5. Runs scripts/package-test.sh in the root: the .deb installed, the package
#    suite against it and Dovecot 2.4, purged, the root checked as before.
#
# The last line is "N passed, M failed": the test cases (with the package
# suite's), plus one for the package build. Exits non-zero if anything failed.
#
#   sh scripts/trixie.sh --shell [COMMAND]
# runs COMMAND (default: an interactive shell) in the prepared root, with the
# same mounts, instead of steps 2 to 4.
#
# XAPS_TRIXIE_MIRROR  Debian mirror (default http://deb.debian.org/debian)
# XAPS_TRIXIE_JOBS    ninja jobs (default 2)
# XAPS_TRIXIE_PACKAGE=0 skips the package build and the package test.
# XAPS_TRIXIE_TESTLOG=FILE also writes every counted case (and the package
#   build) to FILE as a meson-style test log, for scripts/test.sh to count.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${XAPS_TRIXIE_ROOT:-/var/tmp/xaps-trixie}
mirror=${XAPS_TRIXIE_MIRROR:-http://deb.debian.org/debian}
jobs=${XAPS_TRIXIE_JOBS:-2}
build_package=${XAPS_TRIXIE_PACKAGE:-1}
package_build=""
# Written last when the root is complete: a root without it is rebuilt.
prepared_marker=.xaps-trixie-prepared

started=$(date +%s)
say() { # with the seconds since the start, so that slow steps show
  printf 'trixie [%ss]: %s\n' "$(($(date +%s) - started))" "$*" >&2
}

if [ "$(id -u)" != 0 ]; then
  say "needs root (debootstrap, chroot, mounts)"
  exit 1
fi

# --- 1. the root -------------------------------------------------------------
if [ ! -f "$root/$prepared_marker" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap on the host"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  # An interrupted run leaves the partial root behind: start over.
  partial="$root.partial"
  rm -rf "$partial"
  mkdir -p "$(dirname "$root")"
  say "debootstrap trixie into $root (once; later runs reuse it)"
  debootstrap --variant=minbase trixie "$partial" "$mirror" >"$partial.log" 2>&1 || {
    tail -n 20 "$partial.log" >&2
    say "debootstrap failed (full log: $partial.log)"
    exit 1
  }
  rm -f "$partial.log"
  rm -rf "$root"
  mv "$partial" "$root"
  touch "$root/$prepared_marker"
fi

# One run at a time per root: two would share the mounts and the build.
exec 9>"$root.lock"
if ! flock -n 9; then
  say "another run is using $root"
  exit 1
fi

# --- mounts ------------------------------------------------------------------
mounted=""
cleanup() {
  # Reverse order; a lazy unmount when something inside still holds a mount.
  for dir in $mounted; do
    umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || say "could not unmount $dir"
  done
  mounted=""
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mount_at() { # mount_at DIR MOUNT-ARGS...
  dir=$1
  shift
  mkdir -p "$dir"
  mount "$@" "$dir"
  mounted="$dir $mounted"
}

# The root itself a mount point: inside, "/" can then be made private in a
# new mount namespace (the doveadm e2e tests bind-mount doveadm's module dir).
mount_at "$root" --bind "$root"
mount_at "$root/proc" -t proc proc
mount_at "$root/dev" --bind /dev
mount_at "$root/tmp" -t tmpfs -o mode=1777 tmpfs
mount_at "$root/src" --bind "$repo"
mount -o remount,bind,ro "$root/src"
# apt needs the host's name resolution.
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

in_root() { # in_root SHELL-COMMAND
  chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb CCACHE_DIR=/var/cache/ccache \
    XAPS_JOBS="$jobs" \
    /bin/sh -c "$1"
}

if [ "${1:-}" = --shell ]; then
  shift
  if [ $# = 0 ]; then
    chroot "$root" /bin/bash -l
  else
    in_root "$*"
  fi
  exit
fi

# --- 2. dependencies -----------------------------------------------------------
say "dependencies (scripts/install-deps.sh in the root)"
in_root 'sh /src/scripts/install-deps.sh'
in_root 'printf "Dovecot %s, ABI %s\n" "$(dovecot --version)" "$(cat /usr/share/dovecot/dovecot-abi)"' >&2

# --- 3. build and test -----------------------------------------------------------
say "build (/build/xaps in the root)"
in_root '
  set -e
  if [ ! -f /build/xaps/build.ninja ]; then
    rm -rf /build/xaps
    mkdir -p /build
    meson setup /build/xaps /src >/build/meson-setup.log 2>&1 || {
      cat /build/meson-setup.log; exit 1; }
  fi
  ninja -C /build/xaps -j"$XAPS_JOBS"
'

say "tests (unit and e2e, Dovecot 2.4)"
test_status=0
in_root '
  python3 /src/scripts/count-tests.py --clean /build/xaps
  # The package suites need the .deb installed: step 5.
  meson test -C /build/xaps --no-suite package --no-suite package-upgrade --num-processes "$XAPS_JOBS" --print-errorlogs
' || test_status=$?

# --- 4. package ----------------------------------------------------------------
if [ "$build_package" = 1 ]; then
  say "dpkg-buildpackage (trixie)"
  # dpkg-buildpackage writes into the source tree and next to it: a copy
  # without build directories and version control.
  if in_root '
    set -e
    rm -rf /build/pkg
    mkdir -p /build/pkg/dovecot-xaps
    tar -C /src --exclude=./.git --exclude="./build*" --exclude="./obj-*" \
      --exclude=./debian/.debhelper --exclude=./debian/dovecot-xaps \
      --exclude="./debian/*.log" --exclude="./debian/*.substvars" \
      --exclude=./debian/files --exclude=./debian/debhelper-build-stamp \
      -cf - . | tar -C /build/pkg/dovecot-xaps -xf -
    cd /build/pkg/dovecot-xaps
    # nocheck: the unit tests ran above, on the same tree.
    DEB_BUILD_OPTIONS="nocheck parallel=$XAPS_JOBS" dpkg-buildpackage -us -uc -b \
      >/build/pkg/build.log 2>&1 || { tail -n 40 /build/pkg/build.log; exit 1; }
    # The 2.4 build of the package: its ABI, its settings module, its 2.4 conf.
    set -- /build/pkg/dovecot-xaps_*.deb
    [ $# = 1 ] && [ -f "$1" ] || { echo "not exactly one .deb: $*"; exit 1; }
    printf "%s\nDepends: %s\n" "$1" "$(dpkg-deb -f "$1" Depends)"
    dpkg-deb -f "$1" Depends | grep "dovecot-abi-$(cat /usr/share/dovecot/dovecot-abi)" >/dev/null ||
      { echo "the package does not depend on this Dovecot ABI"; exit 1; }
    dpkg-deb -c "$1" | grep "/usr/lib/dovecot/modules/settings/libxaps_settings.so" >/dev/null ||
      { echo "the package lacks the settings module"; exit 1; }
    dpkg-deb --fsys-tarfile "$1" | tar -xOf - ./etc/dovecot/conf.d/95-xaps.conf |
      grep "^#xaps_apns_cert_file" >/dev/null ||
      { echo "the package does not ship the 2.4 95-xaps.conf"; exit 1; }
  ' >&2; then
    package_build=OK
  else
    say "the package build failed"
    package_build=FAIL
  fi
fi

# --- 5. the installed package ------------------------------------------------------
# scripts/package-test.sh in the root: builds the .deb again from the tree,
# installs it, runs the package suite against the installed files and
# Dovecot 2.4, purges it and checks that the root is as before; then the
# upgrade from the previous release, whose tree (the commit package-test.sh
# pins) is unpacked here, since the root has no git.
package_log=""
if [ "$build_package" = 1 ]; then
  say "package test (install, package suite, upgrade, purge; in the root)"
  previous_release=$(sed -n 's/^previous_release=//p' "$repo/scripts/package-test.sh")
  rm -rf "$root/build/previous-release"
  mkdir -p "$root/build/previous-release"
  git -C "$repo" archive "$previous_release" | tar -C "$root/build/previous-release" -xf - ||
    say "cannot unpack the previous release $previous_release: the upgrade test will fail"
  in_root 'cd /src && XAPS_PREVIOUS_RELEASE_SOURCE=/build/previous-release sh scripts/package-test.sh /build/xaps' >&2 || true
  package_log="--extra-log /build/xaps/meson-logs/package-testlog.json"
fi

# --- results -------------------------------------------------------------------
# Every counted case, as a meson-style log the host can count (and prefix).
cases_log=/build/xaps/meson-logs/cases.json
counts=$(in_root "rm -f $cases_log
  python3 /src/scripts/count-tests.py /build/xaps $package_log --cases-log $cases_log" |
  tail -n 1) || true
passed=$(printf '%s\n' "$counts" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
failed=$(printf '%s\n' "$counts" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
passed=${passed:-0}
failed=${failed:-0}
results=$(mktemp)
cp "$root$cases_log" "$results" 2>/dev/null || true
record() { # record NAME OK|FAIL
  printf '{"name": "%s", "result": "%s"}\n' "$1" "$2" >>"$results"
}
if [ "$test_status" != 0 ] && [ "$failed" = 0 ]; then
  failed=1 # meson failed outside any counted test
  record meson-test FAIL
fi

if [ -n "$package_build" ]; then
  record package-build "$package_build"
  if [ "$package_build" = OK ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
fi

if [ -n "${XAPS_TRIXIE_TESTLOG:-}" ]; then
  cp "$results" "$XAPS_TRIXIE_TESTLOG"
fi
rm -f "$results"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]

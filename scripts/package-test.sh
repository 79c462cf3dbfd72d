#!/bin/sh
# Tests the Debian package as an admin gets it: builds the .deb from this tree
# (without the unit tests, which already ran), installs it on this machine,
# runs the 'package' test suite against the installed files, then purges it
# and checks that the machine is as before: /etc/dovecot byte for byte, the
# xaps user and group, /var/lib/dovecot-xaps, the list of installed packages.
# Before the install it configures a Lua push_notification driver, as an
# admin may already run one, so that the suite can check that it keeps
# working next to xaps; it goes again with the package.
# Needs root and a meson build directory of this tree (for the test program).
#
# Usage: scripts/package-test.sh [BUILD_DIR]     (default: build)
#
# XAPS_PACKAGE_DEB=FILE tests that .deb instead of building one (to iterate
# on the tests: the build takes minutes).
#
# Then the upgrade test: purges the package, installs the previous release
# (the .deb of the commit pinned in previous_release below, built once and
# kept in BUILD_DIR/package-upgrade/) and runs the 'package-upgrade' suite,
# which installs the new .deb over it while Dovecot serves registered phones.
# XAPS_SKIP_UPGRADE_TEST=1 skips it. It needs the pinned commit in this
# clone's git history (a shallow clone lacks it), or
# XAPS_PREVIOUS_RELEASE_SOURCE=DIR: that commit's tree, unpacked by the caller
# (scripts/trixie.sh does so for its Debian 13 root, which has no git).
#
# A run that is killed (SIGKILL, a power cut, the end of a CI slot) cannot
# clean up. What each run changes is therefore written down as it goes, in
# /var/lib/xaps-package-test/, and the next run first undoes what a killed
# one left. Files that carry this script's mark but no such record (a killed
# run of a version without it) are removed too.
#
# Results: BUILD_DIR/meson-logs/package-testlog.json, the suite's meson log
# plus one failed entry per step of this script that failed (package-build,
# package-install, package-purge, machine-restore, ...); count-tests.py
# --extra-log counts them. Exit status: 0 when the tests and every step passed.
# shellcheck disable=SC2317 # the functions run from the EXIT trap
set -u
cd "$(dirname "$0")/.." || exit 1
repo=$(pwd)
build_dir=${1:-build}

package=dovecot-xaps
# The previous release that the upgrade test starts from: the last commit
# before version 0.2.0 (debian/changelog still says 0.1.0 there).
previous_release=0a6fd52eef188cdd9b64d23cce55e44a95cb7a61
state_dir=/var/lib/dovecot-xaps
policy_rc=/usr/sbin/policy-rc.d
lua_driver_conf=/etc/dovecot/conf.d/90-xaps-package-test-lua.conf
lua_driver_script=/etc/dovecot/xaps-package-test-push.lua
# The first line of everything this script writes outside its temporary
# directory: what lets a later run know a leftover as its own.
written_mark="Written by dovecot-xaps scripts/package-test.sh, removed when it ends."
journal=/var/lib/xaps-package-test
log_json=$build_dir/meson-logs/package-testlog.json

failed_steps=""
installed=no
policy_rc_saved=no
lua_driver_written=no
# Whether this run may delete the journal: not before it has undone an older
# run's.
journal_owned=no
tmp=""
xaps_user_before=""
xaps_group_before=""

say() {
  echo "package-test: $*"
}

# Records a failed step; count-tests.py counts it as a failed test.
step_failed() {
  say "FAILED: $1${2:+ ($2)}" >&2
  failed_steps="$failed_steps $1"
}

now() {
  date +%s
}

# What must be the same after the purge as before the install.
snapshot() {
  echo "## /etc/dovecot"
  (cd /etc/dovecot && find . -print0 | sort -z | xargs -0 stat -c '%n %a %U:%G %F %s' &&
    find . -type f -print0 | sort -z | xargs -0 md5sum)
  echo "## users and groups"
  getent passwd xaps || echo "no user xaps"
  getent group xaps || echo "no group xaps"
  echo "## $state_dir"
  ls -ld "$state_dir" 2>/dev/null || echo "absent"
  echo "## $policy_rc"
  md5sum "$policy_rc" 2>/dev/null || echo "absent"
  echo "## packages"
  # Installed (or half-installed) ones: dpkg may remember a purged package.
  dpkg-query -W -f '${db:Status-Abbrev} ${Package}:${Architecture} ${Version}\n' |
    grep -v '^.n'
}

# The working tree (tracked and untracked files that git does not ignore),
# without build directories and without git's own files.
copy_source_tree() {
  mkdir -p "$1"
  if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # shellcheck disable=SC2016 # expanded by the inner sh
    git -C "$repo" ls-files -z --cached --others --exclude-standard |
      xargs -0 sh -c 'for f; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\0" "$f"; fi; done' sh |
      tar -C "$repo" --null --no-recursion -T - -cf - | tar -C "$1" -xf -
  else
    tar -C "$repo" --exclude=./.git --exclude='./build*' --exclude='./obj-*' -cf - . |
      tar -C "$1" -xf -
  fi
}

# A Lua push_notification driver that appends "<event> <mailbox>" to
# <home>-lua-push-events for every new mail delivered by LMTP, in the syntax
# of the installed Dovecot. imap loads it too: the driver's setting (2.3) or
# filter (2.4) reaches every protocol.
write_lua_driver() {
  cat >"$lua_driver_script" <<EOF_LUA
-- $written_mark
-- Next to the home rather than in it: a home is made only when needed.
function dovecot_lua_notify_begin_txn(user)
  return { events = user.home .. "-lua-push-events" }
end

function dovecot_lua_notify_event_message_new(ctx, event)
  local file = assert(io.open(ctx.events, "a"))
  file:write(event.name .. " " .. event.mailbox .. "\n")
  file:close()
end

function dovecot_lua_notify_end_txn(ctx)
end
EOF_LUA
  case "$(dovecot --version)" in
  2.3.*)
    cat >"$lua_driver_conf" <<EOF_CONF
# $written_mark
protocol imap {
  mail_plugins = \$mail_plugins mail_lua notify push_notification push_notification_lua
}
protocol lmtp {
  mail_plugins = \$mail_plugins mail_lua notify push_notification push_notification_lua
}
plugin {
  push_notification_driver = lua:file=$lua_driver_script
}
EOF_CONF
    ;;
  *)
    cat >"$lua_driver_conf" <<EOF_CONF
# $written_mark
protocol imap {
  mail_plugins {
    mail_lua = yes
    notify = yes
    push_notification = yes
    push_notification_lua = yes
  }
}
protocol lmtp {
  mail_plugins {
    mail_lua = yes
    notify = yes
    push_notification = yes
    push_notification_lua = yes
  }
}
push_notification lua {
  driver = lua
  lua_file = $lua_driver_script
}
EOF_CONF
    ;;
  esac
}

# user:x:uid:gid:gecos:home:shell and group:x:gid: as they were before.
restore_xaps_user() {
  if [ "$xaps_group_before" ] && ! getent group xaps >/dev/null; then
    gid=$(echo "$xaps_group_before" | cut -d: -f3)
    groupadd --system --gid "$gid" xaps
  fi
  if [ "$xaps_user_before" ] && ! getent passwd xaps >/dev/null; then
    uid=$(echo "$xaps_user_before" | cut -d: -f3)
    gid=$(echo "$xaps_user_before" | cut -d: -f4)
    gecos=$(echo "$xaps_user_before" | cut -d: -f5)
    home=$(echo "$xaps_user_before" | cut -d: -f6)
    shell=$(echo "$xaps_user_before" | cut -d: -f7)
    useradd --system --uid "$uid" --gid "$gid" --comment "$gecos" --home-dir "$home" \
      --no-create-home --shell "$shell" xaps
  fi
}

# Purges the package if this run installed it (the new one or the previous
# release); safe to run twice.
purge_package() {
  if [ "$installed" = yes ]; then
    # Once per run: a purge that failed is left to the next run's journal.
    installed=no
    started=$(now)
    # Not known to dpkg: a run killed before its install got that far.
    if ! dpkg-query -W "$package" >/dev/null 2>&1 ||
      DEBIAN_FRONTEND=noninteractive apt-get purge -y "$package" >"$tmp/purge.log" 2>&1; then
      rm -f "$journal/installed"
      say "purged $package ($(($(now) - started)) s)"
    else
      cat "$tmp/purge.log" >&2
      step_failed package-purge "apt-get purge $package"
      return 1
    fi
  fi
}

# The journal: one file per change this run made and has not undone yet
# (installed, policy_rc_saved, lua_driver_written), plus what restoring needs
# (the admin's policy-rc.d, the xaps user and group as they were before).
# Flags live both as shell variables and as files, set and cleared together.
journal_set() { # journal_set FLAG
  mkdir -p "$journal" && : >"$journal/$1" && eval "$1=yes"
}
journal_clear() { # journal_clear FLAG
  eval "$1=no"
  rm -f "$journal/$1"
}

# Purges what this run installed and puts back what it changed; safe to run
# twice. Runs on every exit, also after an error or a signal, and at the
# start for a run that was killed.
restore_machine() {
  restored=yes
  purge_package || restored=no
  if [ "$policy_rc_saved" = yes ]; then
    if [ -e "$journal/policy-rc.d.saved" ]; then
      cp -p "$journal/policy-rc.d.saved" "$policy_rc"
    else
      rm -f "$policy_rc"
    fi
    journal_clear policy_rc_saved
  fi
  if [ "$lua_driver_written" = yes ]; then
    rm -f "$lua_driver_conf" "$lua_driver_script"
    journal_clear lua_driver_written
  fi
  if ! restore_xaps_user; then
    step_failed machine-restore "cannot recreate the xaps user or group"
    restored=no
  fi
  # Kept after a failure: the next run tries again.
  if [ "$restored" = yes ] && [ "$journal_owned" = yes ]; then
    rm -rf "$journal"
  fi
}

# Undoes what a killed run left: from its journal, and by this script's mark
# for the files of a run that kept none.
recover_interrupted_run() {
  journal_owned=yes
  if [ -d "$journal" ]; then
    say "undoing what an interrupted run left (its journal: $journal)"
    for flag in installed policy_rc_saved lua_driver_written; do
      if [ -e "$journal/$flag" ]; then
        eval "$flag=yes"
      fi
    done
    xaps_user_before=$(cat "$journal/xaps-user-before" 2>/dev/null || true)
    xaps_group_before=$(cat "$journal/xaps-group-before" 2>/dev/null || true)
    restore_machine
    xaps_user_before=""
    xaps_group_before=""
    [ "$restored" = yes ] || exit 1
  fi
  # Older versions of this script marked policy-rc.d by its name alone.
  for leftover in "$lua_driver_conf" "$lua_driver_script" "$policy_rc"; do
    if [ -f "$leftover" ] && grep -qF "scripts/package-test.sh" "$leftover"; then
      say "removing $leftover, left by an interrupted run"
      rm -f "$leftover"
    fi
  done
}

finish() {
  status=$?
  trap - EXIT INT TERM
  restore_machine
  if [ -n "${snapshot_before:-}" ]; then
    snapshot >"$tmp/after.txt" 2>&1
    if ! diff -u "$tmp/before.txt" "$tmp/after.txt" >"$tmp/restore.diff"; then
      cat "$tmp/restore.diff" >&2
      step_failed machine-restore "the machine differs from before the install (diff above)"
    else
      say "machine restored: /etc/dovecot, users, $state_dir and packages as before"
    fi
  fi
  mkdir -p "$(dirname "$log_json")"
  for step in $failed_steps; do
    printf '{"name": "%s", "result": "FAIL"}\n' "$step" >>"$log_json"
  done
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    rm -rf "$tmp"
  fi
  if [ -n "$failed_steps" ] && [ "$status" = 0 ]; then
    status=1
  fi
  say "done in $(($(now) - script_started)) s, exit status $status"
  exit "$status"
}

script_started=$(now)
rm -f "$log_json" "$build_dir/meson-logs/package-testlog.txt"
trap finish EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
  step_failed package-preconditions "needs root: it installs and purges $package"
  exit 1
fi
if [ ! -f "$build_dir/build.ninja" ]; then
  step_failed package-preconditions "no meson build directory at $build_dir"
  exit 1
fi
tmp=$(mktemp -d /tmp/xaps-package-test.XXXXXX)
# apt's unprivileged download user must be able to read the .deb.
chmod 0755 "$tmp"
recover_interrupted_run
# A package this run did not install is not this run's to purge.
case "$(dpkg-query -W -f '${db:Status-Abbrev}' "$package" 2>/dev/null)" in
"" | ?n*) ;; # unknown, or known but not installed
*)
  step_failed package-preconditions "$package is installed (or its conffiles are): purge it first"
  exit 1
  ;;
esac
if [ -e "$state_dir" ]; then
  step_failed package-preconditions "$state_dir exists (registrations?); move it away first"
  exit 1
fi
for leftover in "$lua_driver_conf" "$lua_driver_script"; do
  if [ -e "$leftover" ]; then
    step_failed package-preconditions "$leftover exists and is not this script's: move it away first"
    exit 1
  fi
done

xaps_user_before=$(getent passwd xaps || true)
xaps_group_before=$(getent group xaps || true)
mkdir -p "$journal"
printf '%s' "$xaps_user_before" >"$journal/xaps-user-before"
printf '%s' "$xaps_group_before" >"$journal/xaps-group-before"
snapshot >"$tmp/before.txt" 2>&1
snapshot_before=yes

# --- build -------------------------------------------------------------------
# dpkg-buildpackage with ccache: debhelper gives the build a HOME of its own,
# so ccache's default directory there would start empty every time; the
# source paths (a new temporary directory per run) are left out of the keys.
debian_build() {
  (cd "$1" && CCACHE_DIR=${CCACHE_DIR:-$(ccache -k cache_dir 2>/dev/null || echo "$HOME/.cache/ccache")} \
    CCACHE_BASEDIR=$1 CCACHE_NOHASHDIR=1 DEB_BUILD_OPTIONS="nocheck parallel=2" \
    dpkg-buildpackage -b -us -uc)
}

# In a copy of the tree: dpkg-buildpackage writes into debian/ and the parent
# directory, and others may be building or editing in this tree meanwhile.
started=$(now)
if [ -n "${XAPS_PACKAGE_DEB:-}" ]; then
  cp "$XAPS_PACKAGE_DEB" "$tmp/" || {
    step_failed package-build "cannot copy $XAPS_PACKAGE_DEB"
    exit 1
  }
  chmod 0644 "$tmp"/*.deb
else
  copy_source_tree "$tmp/src"
  if ! debian_build "$tmp/src" >"$tmp/build.log" 2>&1; then
    tail -n 60 "$tmp/build.log" >&2
    step_failed package-build "dpkg-buildpackage"
    exit 1
  fi
fi
set -- "$tmp"/"$package"_*_"$(dpkg --print-architecture)".deb
if [ $# != 1 ] || [ ! -f "$1" ] || [ "$(dpkg-deb -f "$1" Package)" != "$package" ]; then
  ls -l "$tmp" >&2
  step_failed package-build "not exactly one $package .deb produced"
  exit 1
fi
deb=$1
say "built $(basename "$deb") ($(($(now) - started)) s)"

# --- install -----------------------------------------------------------------
# No maintainer script may start or restart the machine's own Dovecot.
rm -f "$journal/policy-rc.d.saved"
if [ -e "$policy_rc" ]; then
  cp -p "$policy_rc" "$journal/policy-rc.d.saved"
fi
journal_set policy_rc_saved
printf '#!/bin/sh\n# %s\n# No service starts during the test.\nexit 101\n' "$written_mark" \
  >"$policy_rc"
chmod 0755 "$policy_rc"

journal_set lua_driver_written
write_lua_driver

started=$(now)
journal_set installed
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log" >&2
  step_failed package-install "apt-get install $(basename "$deb")"
  exit 1
fi
say "installed $package ($(($(now) - started)) s)"

# --- test --------------------------------------------------------------------
started=$(now)
rm -f "$build_dir/test-installed-package.xml"
test_status=0
# Two compile jobs at most: the machine may be shared.
if ninja -C "$build_dir" -j2 tests/package/test-installed-package; then
  meson test -C "$build_dir" --no-rebuild --suite package --print-errorlogs \
    --logbase package-testlog || test_status=$?
else
  test_status=1
fi
if [ ! -s "$log_json" ]; then
  step_failed package-suite "meson test wrote no $log_json"
fi
say "package suite: exit status $test_status ($(($(now) - started)) s)"

# --- upgrade from the previous release ------------------------------------------
if [ "${XAPS_SKIP_UPGRADE_TEST:-0}" = 1 ]; then
  say "upgrade test skipped (XAPS_SKIP_UPGRADE_TEST=1)"
  exit "$test_status"
fi
purge_package || exit 1

# Built once per Dovecot ABI and kept: the pinned commit does not change.
# Most of its files compile as in the new build: ccache has them.
abi=$(tr -c 'A-Za-z0-9.\n' _ </usr/share/dovecot/dovecot-abi)
previous_dir=$(cd "$build_dir" && pwd)/package-upgrade/$previous_release-$abi
started=$(now)
set -- "$previous_dir"/"$package"_*_"$(dpkg --print-architecture)".deb
if [ ! -f "$1" ]; then
  if [ -z "${XAPS_PREVIOUS_RELEASE_SOURCE:-}" ] &&
    ! git -C "$repo" cat-file -e "$previous_release^{commit}" 2>/dev/null; then
    step_failed package-upgrade "commit $previous_release (the previous release) is not in\
 this clone's history: clone the whole repository (or git fetch --unshallow)"
    exit 1
  fi
  rm -rf "$previous_dir"
  mkdir -p "$previous_dir/src"
  if [ -n "${XAPS_PREVIOUS_RELEASE_SOURCE:-}" ]; then
    unpack_previous() { tar -C "$XAPS_PREVIOUS_RELEASE_SOURCE" -cf - . | tar -C "$previous_dir/src" -xf -; }
  else
    unpack_previous() { git -C "$repo" archive "$previous_release" | tar -C "$previous_dir/src" -xf -; }
  fi
  if ! unpack_previous || ! debian_build "$previous_dir/src" >"$tmp/build-previous.log" 2>&1; then
    tail -n 60 "$tmp/build-previous.log" >&2
    step_failed package-upgrade "building the previous release's package ($previous_release)"
    exit 1
  fi
  rm -rf "$previous_dir/src"
  set -- "$previous_dir"/"$package"_*_"$(dpkg --print-architecture)".deb
fi
if [ ! -f "$1" ]; then
  step_failed package-upgrade "no $package .deb built from $previous_release"
  exit 1
fi
cp "$1" "$tmp/previous.deb"
chmod 0644 "$tmp/previous.deb"
say "previous release: $(basename "$1") ($(($(now) - started)) s)"

started=$(now)
journal_set installed
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$tmp/previous.deb" \
  >"$tmp/install-previous.log" 2>&1; then
  cat "$tmp/install-previous.log" >&2
  step_failed package-upgrade "apt-get install of the previous release"
  exit 1
fi
say "installed the previous release ($(($(now) - started)) s)"

started=$(now)
upgrade_log=$build_dir/meson-logs/package-upgrade-testlog.json
rm -f "$build_dir/test-package-upgrade.xml" "$upgrade_log"
upgrade_status=0
if ninja -C "$build_dir" -j2 tests/package/test-package-upgrade; then
  XAPS_UPGRADE_TO_DEB=$deb meson test -C "$build_dir" --no-rebuild --suite package-upgrade \
    --print-errorlogs --logbase package-upgrade-testlog || upgrade_status=$?
else
  upgrade_status=1
fi
# Counted with the package suite's cases.
if [ -s "$upgrade_log" ]; then
  cat "$upgrade_log" >>"$log_json"
else
  step_failed package-upgrade "meson test wrote no $upgrade_log"
fi
say "upgrade suite: exit status $upgrade_status ($(($(now) - started)) s)"
[ "$test_status" = 0 ] || exit "$test_status"
exit "$upgrade_status"

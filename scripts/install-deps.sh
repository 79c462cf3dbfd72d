#!/bin/sh
# Installs everything needed to build, test, package and demo dovecot-xaps on
# Debian 12. Idempotent: does nothing when all packages are already there.
# Run as root.
set -eu

packages="
  build-essential pkg-config meson ninja-build ccache
  clang clang-format
  dovecot-dev dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sieve
  libnghttp2-dev libssl-dev liblmdb-dev libjsoncpp-dev
  libplist-dev libcurl4-openssl-dev
  libpq-dev postgresql
  libgtest-dev libgmock-dev
  openssl ca-certificates nghttp2-client python3 adduser
  debhelper devscripts fakeroot lintian
"

missing=""
for package in $packages; do
  status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = installed ] || missing="$missing $package"
done

if [ -z "$missing" ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages:$missing" >&2
  echo "install-deps: run as root (or set XAPS_SKIP_DEPS=1 and install them yourself)" >&2
  exit 1
fi

echo "install-deps: installing$missing"

# In a container the stock Dovecot service may not be able to start (no init
# system, no TLS certificate yet): keep dpkg from trying, so that installing
# dovecot-core cannot fail because of it. An existing policy-rc.d is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, from dovecot-xaps scripts/install-deps.sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
  trap 'exit 130' INT TERM
fi

# The tests start PostgreSQL servers of their own from temporary directories:
# keep the postgresql package from creating (and starting) a "main" cluster
# on this machine.
if [ ! -e /etc/postgresql-common/createcluster.d/dovecot-xaps.conf ]; then
  mkdir -p /etc/postgresql-common/createcluster.d
  printf '# from dovecot-xaps scripts/install-deps.sh: the tests run their own servers\ncreate_main_cluster = false\n' \
    >/etc/postgresql-common/createcluster.d/dovecot-xaps.conf
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null

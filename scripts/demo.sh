#!/bin/sh
# Builds dovecot-xaps and runs the end-to-end demo: a real Dovecot from a
# temporary directory, an IMAP client registering like iOS Mail, a delivery
# over LMTP, and the push arriving at a local mock APNs server.
set -eu
cd "$(dirname "$0")/.."

sh scripts/build.sh
exec build/tests/e2e/xaps-demo "$@"

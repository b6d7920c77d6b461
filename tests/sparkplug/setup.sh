#!/bin/sh
# Installs the test peer of tests/sparkplug (Eclipse Tahu's JavaScript `sparkplug-payload`, pinned in
# package-lock.json) into tests/sparkplug/node_modules, with `npm ci`, when node_modules is missing
# or older than package-lock.json; otherwise does nothing, at once. Idempotent; safe to run before
# every test (tests/unit/sparkplug_payload_test.cpp runs it; packaging/test.sh may run it first).
# Needs node and npm (Debian: nodejs, npm) and the npm registry.
set -eu
cd "$(dirname "$0")"
command -v node >/dev/null 2>&1 || { echo "tests/sparkplug/setup.sh: node is needed (Debian package nodejs)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "tests/sparkplug/setup.sh: npm is needed (Debian package npm)" >&2; exit 1; }
stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ ! package-lock.json -nt "$stamp" ]; then
  exit 0
fi
# Concurrent test runs (ctest -j) must not run two installs at once in the same directory.
exec 9>.setup.lock
flock 9
if [ -f "$stamp" ] && [ ! package-lock.json -nt "$stamp" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >&2
# npm ci writes its own copy of the lock file; touched, so a lock file changed later (by git) reads as newer.
touch "$stamp"

#!/bin/sh
# Builds tank (release) and starts it on its embedded default configuration.
#   packaging/quickstart.sh            as root: state in /var/lib/tank
#   packaging/quickstart.sh [ARGS]     ARGS go to `tank run`, e.g. -c my.toml
# Without root, missing packages are listed (not installed) and the state goes to
# build/state instead of /var/lib/tank.
set -eu
cd "$(dirname "$0")/.."
packaging/setup-debian.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANK_BUILD_TESTS=OFF -DTANK_BUILD_BENCH=OFF >/dev/null
cmake --build build/release
if [ "$(id -u)" -ne 0 ] && [ -z "${STATE_DIRECTORY:-}" ]; then
  STATE_DIRECTORY="$(pwd)/build/state"
  export STATE_DIRECTORY
  echo "not root: keeping tank's state in $STATE_DIRECTORY"
fi
exec build/release/agent/tank run "$@"

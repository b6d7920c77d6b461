#!/bin/sh
# The end-to-end fault harness's long profile (tests/e2e, docs/reliability.md): the same
# scenarios as CI's short profile with 20 kills, a 2-minute upstream outage, 20 flaps, longer
# broker and disk outages. Needs root (the disk-full scenario mounts a tmpfs), like the suite.
#
#   tests/e2e/run-long.sh [BUILD_DIR]     (default: build; built first if needed)
#
# Prints each scenario's verdict and writes them all to BUILD_DIR/e2e-long-summary.txt.
set -eu
cd "$(dirname "$0")/../.."
build="${1:-build}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target tank tank_e2e_tests
summary="$(pwd)/$build/e2e-long-summary.txt"
: > "$summary"
start=$(date +%s)
status=0
TANK_E2E_PROFILE=long TANK_E2E_SUMMARY="$summary" "$build/tests/tank_e2e_tests" "[e2e]" || status=$?
echo "== long profile: $(( $(date +%s) - start )) s, exit $status; verdicts in $summary"
cat "$summary"
exit $status

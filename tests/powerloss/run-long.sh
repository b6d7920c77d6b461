#!/bin/sh
# The power-cut simulator's long run (tests/powerloss/README.md): rounds of fresh recordings,
# each explored with thousands of states per fsync mode (CI explores a fixed-seed sample).
#
#   tests/powerloss/run-long.sh [BUILD_DIR]     (default: build; built first if needed)
#
# Environment: TANK_POWERLOSS_ROUNDS (3), TANK_POWERLOSS_STATES (1000 per mode and round for
# always and interval; never and the self-tests get fewer), TANK_POWERLOSS_SEED (the first round's;
# default: the time, printed), TANK_POWERLOSS_DURATION_MS (8000), TANK_POWERLOSS_PARALLEL (2),
# TANK_POWERLOSS_NAMES (posix | journaled), TANK_POWERLOSS_KEEP (BUILD_DIR/powerloss-failures).
# Prints each mode's summary line and writes them all to BUILD_DIR/powerloss-long-summary.txt.
set -eu
cd "$(dirname "$0")/../.."
build="${1:-build}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target tank tank_powerloss_tests
summary="$(pwd)/$build/powerloss-long-summary.txt"
: > "$summary"
rounds="${TANK_POWERLOSS_ROUNDS:-3}"
seed="${TANK_POWERLOSS_SEED:-$(date +%s)}"
export TANK_POWERLOSS_STATES="${TANK_POWERLOSS_STATES:-1000}"
export TANK_POWERLOSS_DURATION_MS="${TANK_POWERLOSS_DURATION_MS:-8000}"
export TANK_POWERLOSS_KEEP="${TANK_POWERLOSS_KEEP:-$(pwd)/$build/powerloss-failures}"
export TANK_POWERLOSS_SUMMARY="$summary"
start=$(date +%s)
status=0
round=0
while [ "$round" -lt "$rounds" ]; do
  echo "== round $((round + 1)) of $rounds: seed $((seed + round)), $TANK_POWERLOSS_STATES states" | tee -a "$summary"
  TANK_POWERLOSS_SEED=$((seed + round)) "$build/tests/tank_powerloss_tests" "~[recorder]" || status=$?
  round=$((round + 1))
done
echo "== power-cut long run: $(( $(date +%s) - start )) s, exit $status; failing states under $TANK_POWERLOSS_KEEP"
cat "$summary"
exit $status

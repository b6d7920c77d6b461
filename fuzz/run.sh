#!/bin/sh
# Builds the libFuzzer targets (clang, -DTANK_FUZZ=ON: ASan + UBSan + libFuzzer) and runs each on
# a copy of its corpus for SECONDS_PER_TARGET seconds (default 30), as many at once as there are
# cores. Fails when a target crashes, leaks, times out on one input or runs out of memory; the
# input is then kept in $TANK_FUZZ_BUILD_DIR/artifacts/ and its log printed (fuzz/README.md says
# how to make it a regression test).
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]    (targets: see TANK_FUZZ_TARGETS below)
# Environment: TANK_FUZZ_BUILD_DIR (default build/fuzz), TANK_FUZZ_JOBS (default: the cores),
# TANK_FUZZ_CFLAGS (default "-O0 -gline-tables-only"), TANK_FUZZ_SEED (default: random).
set -eu
cd "$(dirname "$0")/.."
seconds="${1:-30}"
[ $# -gt 0 ] && shift
targets="${*:-json line_framer http_ingest http_response config dead_letter sparkplug lua_record}"
build="${TANK_FUZZ_BUILD_DIR:-build/fuzz}"
jobs="${TANK_FUZZ_JOBS:-$(nproc)}"

command -v clang++ >/dev/null || { echo "fuzz/run.sh: clang++ is needed (packaging/setup-debian.sh --with-tests)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# No NDEBUG: assertions on. -O0 with line tables builds ~2.7x faster than -O1 -g (for a short CI
# run the build is most of the cost); TANK_FUZZ_CFLAGS="-O1 -g" runs faster, for long runs.
flags="${TANK_FUZZ_CFLAGS:--O0 -gline-tables-only}"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$flags" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$flags" \
  -DTANK_FUZZ=ON -DTANK_WERROR=ON -DTANK_BUILD_TESTS=OFF -DTANK_BUILD_BENCH=OFF >/dev/null
binaries=""
for t in $targets; do binaries="$binaries ${t}_fuzz"; done
# shellcheck disable=SC2086
if ! ninja -C "$build" -j "$jobs" $binaries >"$work/build.log" 2>&1; then
  grep -v '^\[' "$work/build.log" | tail -n 80 >&2
  echo "fuzz/run.sh: building the fuzz targets failed" >&2
  exit 1
fi
echo "built in $(( $(date +%s) - start ))s"

artifacts="$build/artifacts"
mkdir -p "$artifacts"

run_one() {
  t="$1"
  mkdir -p "$work/corpus-$t"
  cp fuzz/corpus/"$t"/* "$work/corpus-$t/"
  # TANK_FUZZ_SEED: a fixed seed (CI), so that a run explores the same way each time; unset, a
  # random one (local runs, to find new things).
  set -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    ${TANK_FUZZ_SEED:+-seed="$TANK_FUZZ_SEED"} \
    -artifact_prefix="$artifacts/$t-"
  [ -f "fuzz/dict/$t.dict" ] && set -- "$@" -dict="fuzz/dict/$t.dict"
  # stdin from /dev/null: nothing a target does may wait on the terminal.
  if "$build/fuzz/${t}_fuzz" "$@" "$work/corpus-$t" </dev/null >"$work/$t.log" 2>&1; then
    echo ok >"$work/$t.status"
  else
    echo failed >"$work/$t.status"
  fi
}

running=0
for t in $targets; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait
    running=0
  fi
done
wait

failed=""
for t in $targets; do
  log="$work/$t.log"
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)"
  features="$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)"
  printf '%-14s %-6s %10s execs %7s exec/s  cov %6s  ft %6s  corpus +%s\n' "$t" "$(cat "$work/$t.status")" \
    "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "${cov:-?}" "${features:-?}" \
    "$(stat new_units_added)"
  if [ "$(cat "$work/$t.status")" != ok ]; then
    failed="$failed $t"
    echo "---- $t: the end of its log" >&2
    tail -n 60 "$log" >&2
  fi
done
if [ -n "$failed" ]; then
  echo "fuzz/run.sh: failed:$failed (inputs in $artifacts/; see fuzz/README.md)" >&2
  exit 1
fi
echo "fuzzing passed: $(echo "$targets" | wc -w) targets, ${seconds}s each, $(( $(date +%s) - start ))s in all"

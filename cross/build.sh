#!/bin/sh
# Builds a static tank for one architecture, in one command:
#   cross/build.sh <amd64|arm64|armhf> [--full] [--tests | --queue-tests] [--deb] [--fully-static]
#
#   --full          the `full` flavour: every plugin (TANK_PLUGINS=all), outputs.kafka too, with
#                   librdkafka built by `build-deps.sh --kafka`; build directory
#                   build-static-<arch>-full. Without it, the default flavour: every plugin but
#                   outputs.kafka, within the 6 MiB budget (plugins/CMakeLists.txt).
#   --tests         also build the unit test programs and run them (ctest -L unit); for
#                   arm64/armhf they run under qemu-user (CMAKE_CROSSCOMPILING_EMULATOR).
#   --queue-tests   also build only the queue's unit tests (tank_queue_unit_tests: the queue, its
#                   records, recovery, bounds and map, and sizes) and run them, under qemu-user for
#                   arm64/armhf: what CI runs for armhf, where size_t has 32 bits.
#   --deb           also make the Debian package (CPack): build-static-<arch>/tank_<version>_<arch>.deb
#   --fully-static  link the C library statically too (TANK_FULLY_STATIC): see README.md for
#                   what that means for name resolution. Build directory suffix -libc.
#
# Steps: cross/build-deps.sh <arch> (host packages, static Paho C++ / prometheus-cpp, cached),
# configure build-static-<arch> (Release, TANK_STATIC=ON, the cross toolchain file), build
# `tank`, write a stripped copy build-static-<arch>/tank.stripped and print its size, `file` and
# `ldd` (for arm64/armhf, `tank version` is run under qemu instead of ldd).
# Environment: TANK_DEPS_CACHE (see build-deps.sh), TANK_JOBS (default: nproc),
# TANK_BUILD_DIR (default: <source>/build-static-<arch>[-full][-libc]).
set -eu

usage() { echo "usage: $0 <amd64|arm64|armhf> [--full] [--tests | --queue-tests] [--deb] [--fully-static]" >&2; exit 2; }
[ $# -ge 1 ] || usage
arch=$1
shift
case "$arch" in
  amd64) triple=x86_64-linux-gnu qemu="" ;;
  arm64) triple=aarch64-linux-gnu qemu=qemu-aarch64 ;;
  armhf) triple=arm-linux-gnueabihf qemu=qemu-arm ;;
  *) usage ;;
esac
tests=OFF
queue_tests=OFF
full=OFF
fully_static=OFF
deb=OFF
for a in "$@"; do
  case "$a" in
    --full) full=ON ;;
    --tests) tests=ON ;;
    --queue-tests) queue_tests=ON ;;
    --deb) deb=ON ;;
    --fully-static) fully_static=ON ;;
    *) usage ;;
  esac
done
# --tests runs the queue's tests too (they are part of tank_unit_tests): one or the other.
if [ "$tests" = ON ] && [ "$queue_tests" = ON ]; then usage; fi
build_tests=$tests
if [ "$queue_tests" = ON ]; then build_tests=ON; fi

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
jobs=${TANK_JOBS:-$(nproc)}
suffix=""
[ "$full" = ON ] && suffix=-full
[ "$fully_static" = ON ] && suffix=$suffix-libc
build=${TANK_BUILD_DIR:-$src/build-static-$arch$suffix}

say() { echo "build[$arch]: $*"; }

# 1. Dependencies; build-deps.sh prints prefix=... and, for cross builds, debroot=...
# The full flavour's librdkafka is built only for it (--kafka).
deps_kafka=""
[ "$full" = ON ] && deps_kafka=--kafka
start=$(date +%s)
deps_out=$("$here/build-deps.sh" "$arch" $deps_kafka) || exit 1
say "dependencies took $(( $(date +%s) - start )) s"

prefix=$(printf '%s\n' "$deps_out" | sed -n 's/^prefix=//p')
debroot=$(printf '%s\n' "$deps_out" | sed -n 's/^debroot=//p')

# Release at -Os: the static binary is for devices, where flash is scarce. Measured on amd64
# (docs/BENCHMARKS.md, "Binary size: -Os"): 8.31 MiB stripped against 9.58 MiB at -O2, and
# TCP -> HTTP no slower (1.25-1.28M records/s against 1.15-1.17M, 0.96-1.00 CPU-s per million
# against 1.02). Not -O3: larger, and GCC 12's -O3 warns falsely (-Wrestrict) on std::string.
# With link-time optimisation (CMAKE_INTERPROCEDURAL_OPTIMIZATION): 0.25 MiB less on amd64, and
# the build is faster (docs/BENCHMARKS.md, "Binary size").
set -- -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANK_STATIC=ON -DTANK_FULLY_STATIC=$fully_static \
  -DCMAKE_C_FLAGS_RELEASE="-Os -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-Os -DNDEBUG" \
  -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=ON \
  -DTANK_BUILD_TESTS=$build_tests -DTANK_BUILD_BENCH=OFF -DCMAKE_PREFIX_PATH="$prefix" -DOPENSSL_ROOT_DIR="$prefix"
# The flavour: every plugin, or plugins/CMakeLists.txt's default for static builds (its cache
# entry removed, so a build directory that had another list gets the default again).
if [ "$full" = ON ]; then
  set -- "$@" -DTANK_PLUGINS=all
else
  set -- "$@" -UTANK_PLUGINS
fi
if [ "$arch" != amd64 ]; then
  set -- "$@" -DCMAKE_TOOLCHAIN_FILE="$here/$triple.cmake" -DTANK_CROSS_DEBROOT="$debroot"
fi

# 2. Configure and build.
start=$(date +%s)
say "configuring $build"
mkdir -p "$build"
# Where the dependencies were found is looked up again on each run (-U): build-deps.sh may have
# built them anew, or moved them (OpenSSL and zstd came from Debian's -dev packages before).
cmake -S "$src" -B "$build" -U 'OPENSSL_*' -U '_OPENSSL_*' -U 'pkgcfg_lib__OPENSSL_*' -U 'ZSTD_*' \
  -U 'PAHO_MQTT_C_*' "$@" >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; exit 1; }
say "building tank with $jobs jobs"
cmake --build "$build" --target tank -j "$jobs"
build_rc=0
if [ "$tests" = ON ]; then
  # The unit test programs (Catch2 lists each program's tests after linking it, under qemu for
  # cross builds). Keep going past a broken test program: the unit tests of the others still
  # run, and the failure is reported and kept for the exit status.
  say "building the unit tests"
  cmake --build "$build" -j "$jobs" --target tank_unit_tests tank_process_tests tank_plugin_tests -- -k 0 ||
    build_rc=$?
  [ "$build_rc" -eq 0 ] || say "warning: some targets failed to build (see above); a unit test program that did not build is missing from the ctest list below"
fi
if [ "$queue_tests" = ON ]; then
  say "building the queue's unit tests"
  cmake --build "$build" -j "$jobs" --target tank_queue_unit_tests
fi
say "build took $(( $(date +%s) - start )) s"

# 3. Stripped copy and what it links.
bin=$build/agent/tank
strip_tool="strip"
[ "$arch" != amd64 ] && strip_tool=$triple-strip
"$strip_tool" -o "$build/tank.stripped" "$bin"
size=$(stat -c %s "$build/tank.stripped")
say "tank.stripped: $size bytes ($(awk "BEGIN { printf \"%.2f\", $size / 1048576 }") MiB)"
# The size goal for x86-64 (issue 6, docs/BENCHMARKS.md "Binary size"): said, not enforced.
if [ "$arch" = amd64 ] && [ "$full" = OFF ] && [ "$fully_static" = OFF ] && [ "$size" -gt 6291456 ]; then
  say "warning: over the 6 MiB size goal for the static x86-64 binary by $(( size - 6291456 )) bytes (docs/BENCHMARKS.md, \"Binary size\")"
fi
file -b "$build/tank.stripped" | sed 's/^/  file: /'
echo "  NEEDED:"
needed=$(readelf -d "$build/tank.stripped" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
printf '%s\n' "$needed" | sed '/^$/d; s/^/    /'
# Only the C library's own objects (libc, libm, the dynamic loader) may be linked dynamically.
others=$(printf '%s\n' "$needed" | grep -Ev '^(libc\.so\.6|libm\.so\.6|ld-linux[-a-z0-9_.]*\.so\.[0-9]+)?$' || true)
if [ -n "$others" ]; then
  say "error: tank links these shared libraries, not only the C library's: $others" >&2
  exit 1
fi
if [ "$arch" = amd64 ]; then
  echo "  ldd:"
  ldd "$build/tank.stripped" 2>&1 | sed 's/^/    /' || true
  version=$("$build/tank.stripped" version)
  printf '%s\n' "$version" | sed 's/^/  tank version: /'
else
  version=$($qemu -L "/usr/$triple" "$build/tank.stripped" version)
  printf '%s\n' "$version" | sed "s/^/  $qemu tank version: /"
fi
# The full flavour has outputs.kafka (and so every plugin); the default one has not.
if [ "$full" = ON ] && ! printf '%s\n' "$version" | grep -Eq '^outputs:.*\<kafka\>'; then
  say "error: the full build's \`tank version\` does not list outputs.kafka" >&2
  exit 1
fi
if [ "$deb" = ON ]; then
  (cd "$build" && cpack -G DEB -B "$build" >"$build/cpack.log" 2>&1) || { cat "$build/cpack.log" >&2; exit 1; }
  for p in "$build"/tank_*.deb; do say "package: $p"; done
fi

# 4. Unit tests.
if [ "$tests" = ON ]; then
  start=$(date +%s)
  say "running the unit tests${qemu:+ under $qemu}"
  rc=0
  # Under qemu-user one test cannot pass: qemu 7.2 reports zeros in /proc/self/stat, from which
  # the process metrics test reads the resident memory (cross/README.md, "Known limits").
  exclude='^$'
  [ -n "$qemu" ] && exclude='registry serves counters, collectables and process metrics'
  (cd "$build" && ctest -L unit -E "$exclude" --output-on-failure -j "$jobs") || rc=$?
  say "unit tests took $(( $(date +%s) - start )) s"
  # Only the unit test programs are built here; one of them missing is worth saying.
  not_built=$(cd "$build" && ctest -N | sed -n 's/.*: \(.*\)_NOT_BUILT.*/\1/p' |
    grep -E '^tank_(unit|process|plugin)_tests$' | sort -u | tr '\n' ' ' || true)
  [ -z "$not_built" ] || say "unit test programs not built, so not run: $not_built"
  [ "$rc" -ne 0 ] || rc=$build_rc
  exit "$rc"
fi
if [ "$queue_tests" = ON ]; then
  start=$(date +%s)
  say "running the queue's unit tests${qemu:+ under $qemu}"
  emulator=""
  [ -n "$qemu" ] && emulator="$qemu -L /usr/$triple"
  # Four runs of the program at once, each test in exactly one: the three disk-mode model tests
  # take most of the time (1.5 to 3 minutes each under qemu-arm, much of it waiting for the disk),
  # so each has a run of its own and the fourth run takes everything else. Catch2's report goes to
  # queue-unit-tests.<n>.out and is shown, the queue's log lines (thousands) to
  # queue-unit-tests.<n>.log, whose end is shown for a run that failed. A hang must not hold CI to
  # its time limit: 30 minutes at most.
  model='*random operations agree with the model:'
  queue_run() {
    n=$1
    shift
    (cd "$build/tests" && timeout 1800 $emulator ./tank_queue_unit_tests --warn NoTests "$@") \
      >"$build/queue-unit-tests.$n.out" 2>"$build/queue-unit-tests.$n.log"
  }
  queue_run 1 "$model drop_oldest" & run1=$!
  queue_run 2 "$model drop_newest" & run2=$!
  queue_run 3 "$model block" & run3=$!
  queue_run 4 "~$model drop_oldest" "~$model drop_newest" "~$model block" & run4=$!
  rc=0
  failures=""
  for n in 1 2 3 4; do
    run_rc=0
    eval "wait \$run$n" || run_rc=$?
    cat "$build/queue-unit-tests.$n.out"
    if [ "$run_rc" -ne 0 ] && ! grep -q "FAILED" "$build/queue-unit-tests.$n.out"; then
      # No test failed (Catch2 reports an assertion, an exception or a signal in tank's code as
      # FAILED): the emulator itself died, or the run outlived its 30 minutes. Said, and the run
      # is repeated once; a second such end fails the build like a test.
      say "the queue's unit tests, run $n of 4, ended with exit status $run_rc and no test failure reported" \
        "(qemu died, or the time limit); the end of its log, then the run once more:"
      tail -n 20 "$build/queue-unit-tests.$n.log" >&2
      run_rc=0
      case $n in
        1) queue_run 1 "$model drop_oldest" || run_rc=$? ;;
        2) queue_run 2 "$model drop_newest" || run_rc=$? ;;
        3) queue_run 3 "$model block" || run_rc=$? ;;
        4) queue_run 4 "~$model drop_oldest" "~$model drop_newest" "~$model block" || run_rc=$? ;;
      esac
      cat "$build/queue-unit-tests.$n.out"
    fi
    if [ "$run_rc" -ne 0 ]; then
      rc=$run_rc
      failures="$failures $n"
      say "the queue's unit tests, run $n of 4, failed (exit status $run_rc); the end of its log:"
      tail -n 60 "$build/queue-unit-tests.$n.log" >&2
    fi
  done
  say "queue unit tests took $(( $(date +%s) - start )) s"
  # What failed, last, where a CI excerpt (the end of the output) shows it.
  for n in $failures; do
    say "run $n of 4 failed; Catch2's report of it:"
    if grep -q "FAILED" "$build/queue-unit-tests.$n.out"; then
      grep -B 3 -A 25 "FAILED" "$build/queue-unit-tests.$n.out" | tail -n 80 >&2
    else
      tail -n 40 "$build/queue-unit-tests.$n.out" >&2
    fi
  done
  exit "$rc"
fi

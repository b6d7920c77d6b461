#!/bin/sh
# Builds tank and runs the whole test suite twice: a normal build with warnings as errors, then
# an AddressSanitizer + UndefinedBehaviorSanitizer build; a short run of the libFuzzer targets
# (fuzz/README.md); then the static builds (cross/README.md): amd64's default flavour (its size
# against the 6 MiB goal) and its full flavour (every plugin, outputs.kafka too; the integration
# tests run against it), arm64 full (its unit tests under qemu-aarch64) and armhf full (the queue's
# unit tests under qemu-arm, where size_t has 32 bits); the .deb packages are of the full builds;
# the amd64 package installed and run under systemd in a Debian 12 VM, with power cuts (tests/vm).
# Installs what it needs first.
# This is what CI runs (.ci/run).
set -eu
cd "$(dirname "$0")/.."
packaging/setup-debian.sh --with-tests
jobs="$(nproc)"
start=$(date +%s)
# Each phase is announced with the seconds since the start, so a log shows where the time goes.
phase() { echo "== [$(( $(date +%s) - start ))s] $*"; }

# Every compile goes through ccache (cache in ~/.cache/ccache, 10 GiB at most), so a second run on
# the same machine, from any clone, compiles only what changed: a result is keyed by the source,
# every header it reads and the compiler's options, and is the object file the compiler would
# write. Paths are hashed relative to the clone (CCACHE_BASEDIR). TANK_CCACHE=0: no cache.
# (CMake reads CMAKE_<LANG>_COMPILER_LAUNCHER from the environment when a build directory is
# configured the first time; cross/build.sh, cross/build-deps.sh and fuzz/run.sh inherit it.)
if [ "${TANK_CCACHE:-1}" = 1 ] && command -v ccache >/dev/null 2>&1; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-10G}"
  ccache --zero-stats >/dev/null
fi

phase "build (warnings as errors)"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANK_WERROR=ON >/dev/null
cmake --build build/ci
phase "tests"
(cd build/ci && ctest -j "$jobs" --output-on-failure)

phase "build (ASan + UBSan)"
cmake -S . -B build/ci-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTANK_WERROR=ON -DTANK_SANITIZE=ON \
  -DTANK_BUILD_BENCH=OFF >/dev/null
cmake --build build/ci-asan
phase "tests (ASan + UBSan)"
(cd build/ci-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest -j "$jobs" --output-on-failure)

phase "fuzzing (libFuzzer, 30 s per target)"
TANK_FUZZ_BUILD_DIR=build/ci-fuzz TANK_FUZZ_SEED=1 fuzz/run.sh 30

phase "static builds: amd64 default flavour (only the C library linked dynamically; its size)"
cross/build.sh amd64
# The full flavour: every plugin, librdkafka built from its Debian source (cached like the other
# static libraries); its objects are ccache hits of the build above but for outputs.kafka.
phase "static build: amd64 full flavour, with its package"
cross/build.sh amd64 --full --deb
phase "integration tests against the static amd64 full binary (its own OpenSSL, zstd and librdkafka, -Os, LTO)"
(cd build/ci && TANK_BINARY="$PWD/../../build-static-amd64-full/tank.stripped" \
  ctest -L integration -j "$jobs" --output-on-failure)
# tank as a user installs it: the package above in Debian 12 under systemd in qemu-system-x86_64
# (TCG), then three power cuts under load (tests/vm/README.md). The image is cached in
# ~/.cache/tank-vm (built once, about 2 minutes).
phase "VM: the amd64 package under systemd (notify, reload, watchdog, hardening, upgrade, purge), 3 power cuts"
tests/vm/run.sh amd64
phase "static builds: arm64 full (unit tests under qemu-aarch64), armhf full (the queue's unit tests under qemu-arm), with their packages"
cross/build.sh arm64 --full --tests --deb
cross/build.sh armhf --full --queue-tests --deb

if [ -n "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]; then
  echo "== ccache: $(ccache --print-stats | awk -F'\t' '$1=="direct_cache_hit"||$1=="preprocessed_cache_hit"{h+=$2} $1=="cache_miss"{m=$2} END{printf "%d hits, %d misses", h, m}')"
fi
echo "== all tests passed in both builds and the static ARM builds ($(( $(date +%s) - start ))s)"

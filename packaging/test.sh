#!/bin/sh
# Builds tank and runs the whole test suite twice: a normal build with warnings as errors, then
# an AddressSanitizer + UndefinedBehaviorSanitizer build; a short run of the libFuzzer targets
# (fuzz/README.md); then the static builds for amd64,
# arm64 (its unit tests under qemu-aarch64) and armhf (cross/README.md). Installs what it needs
# first.
# This is what CI runs (.ci/run).
set -eu
cd "$(dirname "$0")/.."
packaging/setup-debian.sh --with-tests
jobs="$(nproc)"
start=$(date +%s)

echo "== build (warnings as errors)"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANK_WERROR=ON >/dev/null
cmake --build build/ci
echo "== tests"
(cd build/ci && ctest -j "$jobs" --output-on-failure)

echo "== build (ASan + UBSan)"
cmake -S . -B build/ci-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTANK_WERROR=ON -DTANK_SANITIZE=ON \
  -DTANK_BUILD_BENCH=OFF >/dev/null
cmake --build build/ci-asan
echo "== tests (ASan + UBSan)"
(cd build/ci-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest -j "$jobs" --output-on-failure)

echo "== fuzzing (libFuzzer, 30 s per target)"
TANK_FUZZ_BUILD_DIR=build/ci-fuzz TANK_FUZZ_SEED=1 fuzz/run.sh 30

echo "== static builds: amd64 (only the C library linked dynamically), arm64 (unit tests under qemu-aarch64), armhf (tank version under qemu-arm), with their packages"
cross/build.sh amd64 --deb
cross/build.sh arm64 --tests --deb
cross/build.sh armhf --deb

echo "== all tests passed in both builds and the static ARM builds ($(( $(date +%s) - start ))s)"

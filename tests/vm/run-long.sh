#!/bin/sh
# The long VM series (tests/vm/README.md), not run by CI:
#   tests/vm/run-long.sh [amd64] [arm64]      (default: both)
#
#  - amd64: the scenario, then 50 power cuts with fsync = "always" and 50 with "interval"
#    (TANK_VM_CUTS per mode, default 50);
#  - arm64: the scenario in qemu-system-aarch64 (-M virt, TCG), then 3 power cuts per mode
#    (TANK_VM_ARM64_CUTS), with the package `cross/build.sh arm64 --full --deb` made.
# Each architecture's summary: build/vm-<arch>/summary.txt (boot to READY, cuts survived per mode).
# Exit 0 only when every check of every architecture passed.
set -eu
cd "$(dirname "$0")/../.."
archs=${*:-amd64 arm64}
series() {  # series <n>: "always" n times, then "interval" n times
  i=0; s=""
  while [ $i -lt "$1" ]; do s="$s always"; i=$((i + 1)); done
  i=0
  while [ $i -lt "$1" ]; do s="$s interval"; i=$((i + 1)); done
  echo $s
}
rc=0
for arch in $archs; do
  case "$arch" in
    amd64) n=${TANK_VM_CUTS:-50} ;;
    arm64) n=${TANK_VM_ARM64_CUTS:-3} ;;
    *) echo "usage: $0 [amd64] [arm64]" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  if tests/vm/run.sh "$arch" --series "$(series "$n")"; then r=passed; else r=FAILED; rc=1; fi
  summary=build/vm-$arch/summary.txt
  {
    echo "== $arch: $r in $(( $(date +%s) - start )) s"
    for mode in always interval; do
      total=$(grep -c "CHECK .* power cut .*(fsync = $mode)" "$summary" || true)
      good=$(grep -c "CHECK ok power cut .*(fsync = $mode)" "$summary" || true)
      echo "   fsync = $mode: $good of $total cuts survived"
    done
    sed -n 's/^\(cut-[0-9]*\|final\): boot_to_ready_ms //p' "$summary" | sort -n |
      awk '{ v[NR] = $1 } END { if (NR) printf "   boot to READY after a cut, guest time: min %d ms, median %d ms, max %d ms over %d boots\n", v[1], v[int((NR + 1) / 2)], v[NR], NR }'
  } | tee -a build/vm-long-summary.txt
done
exit $rc

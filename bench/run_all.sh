#!/bin/bash
# The benchmark suite of issue 7 in one command: builds the benchmark targets in an existing
# build directory (cmake --build, nothing else), runs every benchmark with the fixed arguments
# below and prints one Markdown report (machine, commands, tables) on stdout and into --out.
#
#   bench/run_all.sh [--build DIR] [--data DIR] [--repeat N] [--quick] [--out FILE]
#
#   --build DIR   a configured build directory (default: build-bench; configure it with
#                 cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANK_BUILD_TESTS=OFF)
#   --data DIR    where the queues and files go (default /work/bench-data; the depth sweep
#                 needs about 1.5 GiB free there)
#   --repeat N    runs per figure, the median reported (default 3; 1 with --quick)
#   --quick       fewer records and smaller sweeps: a smoke run of a few minutes
#   --out FILE    also write the report there
#
# The full run takes about 6-10 minutes on a 2-vCPU VM, --quick about 2. Progress and per-run figures go to
# stderr; the per-benchmark outputs are kept in DATA/logs.
set -euo pipefail

build=build-bench
data=/work/bench-data
repeat=""
quick=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$repeat" ] || { [ $quick = 1 ] && repeat=1 || repeat=3; }
cd "$(dirname "$0")/.."
[ -f "$build/build.ninja" ] || [ -f "$build/Makefile" ] || {
  echo "run_all.sh: $build is not a configured build directory" >&2; exit 2; }

cmake --build "$build" --target tank queue_bench validate_bench aggregate_bench e2e_bench >&2
tank="$build/agent/tank"
bin="$build/bench"
logs="$data/logs"
mkdir -p "$logs"

if [ $quick = 1 ]; then
  q_args=(--quick)
  tcp_records=1000000; mqtt_records=50000; file_records=500000; proc_records=1000000
  paced_seconds=3; validate_records=100000
  sizes=100,1024,8192,65536; size_bytes=$((64 << 20))
  depths=0,64,256; depth_records=500000
else
  q_args=()
  tcp_records=5000000; mqtt_records=300000; file_records=3000000; proc_records=3000000
  paced_seconds=10; validate_records=200000
  sizes=100,1024,8192,65536; size_bytes=$((512 << 20))
  depths=0,64,256,1024; depth_records=2000000
fi

commands=()
# Runs one benchmark: its command line is recorded for the report, its output kept in $logs/$1.
run() {
  local name=$1; shift
  commands+=("$*")
  echo "== $name: $*" >&2
  "$@" > "$logs/$name.out" 2> >(tee "$logs/$name.err" >&2)
}

e2e=("$bin/e2e_bench" --tank "$tank" --dir "$data/e2e" --repeat "$repeat" --paced-seconds "$paced_seconds")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
started_utc=$(date -u '+%Y-%m-%d %H:%M UTC')
run queue "$bin/queue_bench" --dir "$data/queue" --only pipeline --repeat "$repeat" "${q_args[@]}"
run validate "$bin/validate_bench" --records "$validate_records" --repeat 5
run aggregate "$bin/aggregate_bench" --repeat 5
run tcp-http "${e2e[@]}" --scenario tcp-http --records "$tcp_records"
run mqtt-http "${e2e[@]}" --scenario mqtt-http --records "$mqtt_records"
run file-mqtt "${e2e[@]}" --scenario file-mqtt --records "$file_records"
run validate-http "${e2e[@]}" --scenario validate-http --records "$proc_records"
run aggregate-e2e "${e2e[@]}" --scenario aggregate --records "$proc_records"
run size "${e2e[@]}" --scenario size --sizes "$sizes" --size-bytes "$size_bytes"
run depth "${e2e[@]}" --scenario depth --depths "$depths" --depth-records "$depth_records"
finished=$(date +%s)

# The commit built: from git, or from the file COMMIT of a tree exported with git archive.
source_version() {
  if git rev-parse --short HEAD >/dev/null 2>&1; then
    echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- agent plugins || echo ' with uncommitted changes under agent/ or plugins/')"
  elif [ -f COMMIT ]; then
    echo "$(cat COMMIT) (exported tree)"
  else
    echo "unknown commit"
  fi
}
rows() { grep '^| ' "$logs/$1.out" | grep -v '^| scenario\|^|---\|^| record size\|^| backlog'; }
report() {
  echo "### Machine"
  echo
  echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) vCPUs"
  echo "- RAM: $(free -g | awk '/^Mem:/ {print $2}') GiB; Debian $(cat /etc/debian_version); kernel $(uname -r)"
  echo "- tank: $(source_version), build type $(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")"
  echo "- run: started $started_utc, took $(( (finished - started) / 60 )) min; load average (1, 5, 15 min) before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- mode: $([ $quick = 1 ] && echo 'quick (smoke run)' || echo full), median of $repeat runs"
  echo
  echo "### Commands"
  echo
  echo '```sh'
  for c in "${commands[@]}"; do echo "$c"; done
  echo '```'
  echo
  echo "### Pipelines"
  echo
  echo "| scenario | records | records/s (range) | MB/s | CPU-s per M | peak RSS / anon MiB | p50 ms | p99 ms | paced records/s | p50 ms paced | p99 ms paced |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  rows tcp-http; rows mqtt-http; rows file-mqtt; rows validate-http; rows aggregate-e2e
  # Library figures (one process, no tank binary): the queue, decode + validate, aggregation.
  grep '^| 100 B | 1000 |' "$logs/queue.out" | awk -F'|' -v rss="$(sed -n 's/^peak RSS of the process: //p' "$logs/queue.out")" \
    '{ gsub(/ /, "", $4); gsub(/ /, "", $5); gsub(/ /, "", $6);
       printf "| queue append + read + ack (library; 100 B, batches of 1000, fsync interval) | %s | %s | %.1f | %s | %s (process) | - | - | - | - | - |\n", $4, $5, $5 * 121 / 1e6, $6, rss }'
  awk '/^decode\+validate  / { printf "| decode + validate (library, one thread, ~150 B) | %s | %s (best; median %s) | - | %.2f | - | - | - | - | - | - |\n", '"$validate_records"', $2, $7, 1e6 / $2 }' "$logs/validate.out"
  awk -F'|' '/^\| full / { gsub(/ /, "", $3); printf "| parse + aggregate (library, one thread, 10,000 devices) | 1000000 | %s | - | %.2f | - | - | - | - | - | - |\n", $3, 1e6 / $3 }' "$logs/aggregate.out"
  echo
  echo "### Record size (TCP -> queue -> HTTP, flat out)"
  echo
  grep '^|' "$logs/size.out"
  echo
  echo "### Queue depth (TCP -> queue -> HTTP; upstream held until the backlog is built)"
  echo
  grep '^|' "$logs/depth.out"
}
if [ -n "$out" ]; then report | tee "$out"; else report; fi

#!/bin/sh
# tank on a real Debian 12 under systemd, in qemu-system (TCG), with virtual power cuts
# (tests/vm/README.md):
#   tests/vm/run.sh <amd64|arm64> [--series "always interval interval"] [--deb FILE] [--seed N]
#
#  1. The package: FILE, else build-static-<arch>-full/tank_*.deb of this tree, else it is built
#     (cross/build.sh <arch> --full --deb). A second package, the same with the version
#     <version>+vmtest and a changed conffile, is made from it for the upgrade.
#  2. The image: tests/vm/image.sh <arch> (cached, keyed by package versions).
#  3. Boot 1, the scenario (tests/vm/guest/guest.sh): install, notify, reload, watchdog,
#     hardening (and its controls), journal priorities, upgrade, purge, install again; then the
#     load of the first power cut.
#  4. Power cuts, one per word of --series (an fsync mode each; default "always interval
#     interval"): the host kills qemu (SIGKILL) at a random moment of the load, 0.5 to 4.5 s after
#     its first acknowledgement; the next boot lists the queue (the verdict of that cut:
#     tests/vm/verdict.py), switches the mode if the next word differs (on an empty queue), and
#     runs the next load; a last boot verifies the last cut.
#
# The guest has no network (-nic none). Work files: build/vm-<arch>/ (each boot's console, the
# guest's output and files). Exit 0 only when every check passed; a summary goes to
# build/vm-<arch>/summary.txt. Heavy steps run under `nice -n 19`.
set -eu

usage() { echo "usage: $0 <amd64|arm64> [--series \"always interval interval\"] [--deb FILE] [--seed N]" >&2; exit 2; }
[ $# -ge 1 ] || usage
arch=$1
shift
series="always interval interval" deb="" seed=$(date +%s)
while [ $# -gt 0 ]; do
  case "$1" in
    --series) series=$2; shift 2 ;;
    --deb) deb=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) usage ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
case "$arch" in
  amd64) qemu=qemu-system-x86_64 cc=gcc console=ttyS0
         machine="-M pc -cpu max" ;;
  arm64) qemu=qemu-system-aarch64 cc=aarch64-linux-gnu-gcc console=ttyAMA0
         machine="-M virt -cpu cortex-a72" ;;
  *) usage ;;
esac
work=$src/build/vm-$arch
rm -rf "$work"
mkdir -p "$work"
summary=$work/summary.txt
: >"$summary"
t0=$(date +%s)
say() { echo "vm[$arch] [$(( $(date +%s) - t0 ))s] $*" | tee -a "$summary"; }
die() { say "error: $*"; exit 1; }
failures=0

# --- 1. packages, guest programs, image ------------------------------------------------------
if [ -z "$deb" ]; then
  deb=$(ls "$src/build-static-$arch-full"/tank_*_"$arch".deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then
    say "no package yet: cross/build.sh $arch --full --deb"
    nice -n 19 "$src/cross/build.sh" "$arch" --full --deb >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log"; die "cross/build.sh failed"; }
    deb=$(ls "$src/build-static-$arch-full"/tank_*_"$arch".deb | head -n 1)
  fi
fi
[ -f "$deb" ] || die "no package $deb"
payload=$work/payload
mkdir -p "$payload"
cp "$deb" "$payload/tank_a.deb"
# The upgrade: the same package with a newer version and a changed conffile.
rm -rf "$work/repack"
dpkg-deb -R "$deb" "$work/repack"
version=$(dpkg-deb -f "$deb" Version)
sed -i "s/^Version: .*/Version: $version+vmtest/" "$work/repack/DEBIAN/control"
echo "# (the package of tests/vm's upgrade)" >>"$work/repack/etc/tank/tank.toml"
(cd "$work/repack" && find etc usr lib -type f 2>/dev/null | sort | xargs md5sum >DEBIAN/md5sums)
dpkg-deb -b -Zxz "$work/repack" "$payload/tank_b.deb" >/dev/null
rm -rf "$work/repack"
for prog in probe loadgen; do
  $cc -static -O2 -Wall -Wextra -Werror -o "$payload/$prog" "$here/guest/$prog.c" || die "cannot build $prog for $arch"
done
cp "$here/guest/guest.sh" "$payload/guest.sh"
image=$(nice -n 19 "$here/image.sh" "$arch") || die "tests/vm/image.sh $arch failed"
say "image $image, package $(basename "$deb") ($version)"

# --- booting -----------------------------------------------------------------------------------
# boot <name> <params> [cut]: boots the system disk with a payload holding <params>; waits for
# DONE (or, with "cut", for LOAD RUNNING and then kills qemu after a random delay). Sets
# `boot_dir`. Files: <name>/console.log (serial), markers.log (the guest's output), results/.
disk=$work/system.qcow2
boots=0
qemu-img create -q -f qcow2 -b "$image/rootfs.img" -F raw "$disk"
boot() {
  name=$1 params=$2 mode=${3:-done}
  boot_dir=$work/$name
  mkdir -p "$boot_dir/results"
  printf '%s\n' "$params" >"$payload/params"
  tar -C "$payload" -cf "$boot_dir/payload.tar" .
  truncate -s 64M "$boot_dir/results.img"
  truncate -s 64M "$boot_dir/acks.img"
  : >"$boot_dir/markers.log"
  set -- -accel tcg $machine -m 1024 -smp 2 -nodefaults -display none -no-reboot -nic none \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda ro console=$console quiet panic=-1" \
    -serial "file:$boot_dir/console.log" \
    -device virtio-serial-pci -chardev "file,id=markers,path=$boot_dir/markers.log" -device virtconsole,chardev=markers \
    -drive "file=$disk,if=virtio,format=qcow2" \
    -drive "file=$boot_dir/payload.tar,if=virtio,format=raw,readonly=on" \
    -drive "file=$boot_dir/results.img,if=virtio,format=raw" \
    -drive "file=$boot_dir/acks.img,if=virtio,format=raw"
  start=$(date +%s%N)
  nice -n 19 "$qemu" "$@" >"$boot_dir/qemu.log" 2>&1 &
  qpid=$!
  waited=0
  want="DONE"
  [ "$mode" = cut ] && want="LOAD RUNNING"
  limit=${TANK_VM_BOOT_TIMEOUT:-900}
  while ! grep -q "^$want" "$boot_dir/markers.log"; do
    if ! kill -0 "$qpid" 2>/dev/null; then
      cat "$boot_dir/markers.log"; tail -n 30 "$boot_dir/console.log"
      die "$name: qemu ended before \"$want\""
    fi
    waited=$((waited + 1))
    if [ "$waited" -gt $((limit * 5)) ]; then
      kill -9 "$qpid"; cat "$boot_dir/markers.log"; tail -n 30 "$boot_dir/console.log"
      die "$name: no \"$want\" within $limit s"
    fi
    sleep 0.2
  done
  if [ "$mode" = cut ]; then
    # A random moment in the load: 0.5 to 4.5 s after its first acknowledgement.
    boots=$((boots + 1))
    delay=$(awk -v s="$seed" -v n="$boots" 'BEGIN { srand(s + n * 7919); printf "%.2f", 0.5 + 4 * rand() }')
    sleep "$delay"
    kill -9 "$qpid"
    wait "$qpid" 2>/dev/null || true
    boot_wall=$(( ($(date +%s%N) - start) / 1000000 ))
    say "$name: power cut ${delay} s into the load (boot to cut $boot_wall ms wall)"
  else
    # Clean shutdown after DONE (the results are on their disk already).
    n=0
    while kill -0 "$qpid" 2>/dev/null && [ $n -lt 300 ]; do sleep 0.2; n=$((n + 1)); done
    kill -0 "$qpid" 2>/dev/null && { kill -9 "$qpid"; say "$name: no power-off within 60 s, killed"; }
    wait "$qpid" 2>/dev/null || true
  fi
  # The virtio console is a tty: its lines end in \r\n.
  tr -d '\r' <"$boot_dir/markers.log" >"$boot_dir/markers.tmp" && mv "$boot_dir/markers.tmp" "$boot_dir/markers.log"
  tar -C "$boot_dir/results" -xf "$boot_dir/results.img" 2>/dev/null || say "$name: no results on the results disk"
  grep '^CHECK FAIL' "$boot_dir/markers.log" | sed "s/^/$name: /" | tee -a "$summary" || true
  n=$(grep -c '^CHECK ok' "$boot_dir/markers.log" || true)
  f=$(grep -c '^CHECK FAIL' "$boot_dir/markers.log" || true)
  failures=$((failures + f))
  [ $((n + f)) -eq 0 ] || say "$name: $n checks passed, $f failed"
  grep '^MEASURE' "$boot_dir/markers.log" | sed "s/^MEASURE /$name: /" >>"$summary" || true
}

# --- 2. the scenario, then the load of the first power cut ------------------------------------
# verdict <cut number> <boot that verified it>
verdict() {
  vk=$1 vmode=$(echo "$series" | cut -d' ' -f$(($1 + 1)))
  # The backlog: what the verification of the cut before saw, when it was of the same mode (a
  # change of mode starts on an empty queue).
  previous=""
  [ "$vk" -gt 0 ] && [ "$(echo "$series" | cut -d' ' -f"$vk")" = "$vmode" ] && previous="$work/verdict-state-$((vk - 1)).json"
  python3 "$here/verdict.py" --mode "$vmode" --acks "$work/$(boot_name "$vk")/acks.img" --ids "$work/$2/results/ids.txt" \
    --prefix "c$vk" --state "$work/verdict-state-$vk.json" ${previous:+--previous "$previous"} \
    --name "cut $vk" >"$work/verdict-$vk.txt" 2>&1 || failures=$((failures + 1))
  cat "$work/verdict-$vk.txt" | tee -a "$summary"
  # The verdict's own control: the same cut with the first acknowledged record taken out of the
  # queue's list must fail (a lost record, and a hole before the ones present).
  if python3 "$here/verdict.py" --mode "$vmode" --acks "$work/$(boot_name "$vk")/acks.img" \
    --ids "$work/$2/results/ids.txt" --drop-first --prefix "c$vk" --state "$work/verdict-control.json" \
    --name "cut $vk (control)" >"$work/verdict-control-$vk.txt" 2>&1; then
    say "CHECK FAIL verdict control: cut $vk with its first record removed was not caught"
    failures=$((failures + 1))
  fi
}
boot_name() { if [ "$1" -eq 0 ]; then echo boot1; else echo "cut-$1"; fi; }
set -- $series
total=$#
first_mode=$1
start_ms=$(date +%s%N)
boot boot1 "PHASE=scenario
MODE=$first_mode
CUT=0
LOAD=1
PER_REQUEST=20" cut
# The in-guest rating against the offline one of the unit in the package (the suite's own check
# rates the tree's, which is the same file when the package was built from this tree).
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/tank.service >"$work/tank.service"
guest_score=$(sed -n 's/^MEASURE security_exposure //p' "$work/boot1/markers.log")
offline_score=$(systemd-analyze security --offline=true --no-pager "$work/tank.service" 2>/dev/null |
  sed -n 's/.*Overall exposure level for tank.service: \([0-9.]*\).*/\1/p')
weak_score=$(sed -n 's/^MEASURE security_exposure_weakened //p' "$work/boot1/markers.log")
if [ -n "$guest_score" ] && [ "$guest_score" = "$offline_score" ]; then
  say "CHECK ok hardening: systemd-analyze security in the guest rates the running unit $guest_score, as offline ($offline_score); weakened by the control's drop-in: $weak_score"
else
  say "CHECK FAIL hardening: systemd-analyze security in the guest ${guest_score:-?} against ${offline_score:-?} offline"
  failures=$((failures + 1))
fi
cmp -s "$work/tank.service" "$src/systemd/tank.service" || say "note: the package's unit is not this tree's systemd/tank.service"

# --- 3. power cuts: each boot verifies the cut before it and runs the load of the next -------------
k=1
while [ "$k" -lt "$total" ]; do
  mode=$(echo "$series" | cut -d' ' -f$((k + 1)))
  before=$(echo "$series" | cut -d' ' -f$k)
  reset=0
  [ "$mode" != "$before" ] && reset=1
  boot "cut-$k" "PHASE=cut
CUT=$k
MODE=$mode
RESET=$reset
FINAL=0
PER_REQUEST=20" cut
  verdict $((k - 1)) "cut-$k"
  k=$((k + 1))
done
boot final "PHASE=cut
CUT=$k
MODE=$mode
RESET=0
FINAL=1
PER_REQUEST=20"
verdict $((k - 1)) final

say "seed $seed; $failures failed checks; $(( $(date +%s) - t0 )) s in all"
[ "$failures" -eq 0 ]

#!/bin/sh
# Builds (or finds in its cache) a minimal Debian 12 disk image with systemd and Debian's kernel,
# for the tests that run tank as a real user would, under qemu-system (tests/vm/README.md):
#   tests/vm/image.sh <amd64|arm64>
# Prints the image directory on stdout: rootfs.img (raw ext4, the root file system), vmlinuz,
# initrd.img, packages (what is installed, `dpkg-query -W`), key.
#
# How: mmdebstrap (variant minbase, plus systemd, udev, curl and the kernel) into a tarball, for
# arm64 a foreign root whose maintainer scripts run under qemu-user-static (binfmt_misc: the
# qemu-aarch64 handler is registered when missing), then `mke2fs -d` makes the ext4 image from the
# unpacked tree without mounting anything. No network in the guest, no password: the image runs
# one unit, tank-vm-runner.service, which unpacks the tar on the second disk and runs its
# guest.sh (tests/vm/guest/), writing to the virtio console.
#
# Cache: ${TANK_VM_CACHE:-$HOME/.cache/tank-vm}/<arch>-<key>, where the key is a hash of this
# script and of the versions of every package the image would install now (read from the Debian
# indexes, with a private apt state as in cross/build-deps.sh: the host's apt is not touched). The
# indexes are read again when older than 12 hours or with TANK_VM_REFRESH=1; a new version of any
# package makes a new image. Older images of the arch are deleted once a new one is built.
set -eu

RECIPE=1
MIRROR=${TANK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${TANK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

arch=${1:-}
case "$arch" in
  amd64) kernel_pkg=linux-image-cloud-amd64 ;;
  arm64) kernel_pkg=linux-image-cloud-arm64 ;;
  *) echo "usage: $0 <amd64|arm64>" >&2; exit 2 ;;
esac
packages="systemd systemd-sysv udev curl $kernel_pkg"

here=$(cd "$(dirname "$0")" && pwd)
cache=${TANK_VM_CACHE:-$HOME/.cache/tank-vm}
say() { echo "vm-image[$arch]: $*" >&2; }
die() { echo "vm-image[$arch]: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap in root mode, mke2fs -d with owners)"
for tool in mmdebstrap mke2fs; do command -v "$tool" >/dev/null || die "$tool missing: packaging/setup-debian.sh --with-tests"; done

# --- the key: the versions of every package the image installs -------------------------------
aptdir=$cache/apt-$arch
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/none"
[ -e "$aptdir/status" ] || : > "$aptdir/status"
papt() {
  prog=$1
  shift
  "$prog" -q -o Dir::Etc::SourceList="$aptdir/sources.list" -o Dir::Etc::SourceParts="$aptdir/none" \
    -o Dir::State::Lists="$aptdir/lists" -o Dir::Cache="$aptdir/cache" -o Dir::State::status="$aptdir/status" \
    -o APT::Architecture="$arch" -o APT::Architectures="$arch" -o APT::Sandbox::User=root \
    -o Debug::NoLocking=1 "$@" 2>/dev/null
}
cat > "$aptdir/sources.list" <<EOF
deb [arch=$arch signed-by=$KEYRING] $MIRROR $SUITE main
deb [arch=$arch signed-by=$KEYRING] $MIRROR $SUITE-updates main
deb [arch=$arch signed-by=$KEYRING] $SECURITY_MIRROR $SUITE-security main
EOF
if [ "${TANK_VM_REFRESH:-0}" = 1 ] || [ -z "$(find "$aptdir/updated" -mmin -720 2>/dev/null)" ]; then
  say "reading the Debian package indexes"
  if papt apt-get update >/dev/null; then : > "$aptdir/updated"; else say "warning: cannot read the indexes; using the last ones"; fi
fi
# Every package of a minbase system plus ours, with the versions apt would pick now.
essential=$(papt apt-cache dumpavail | awk '/^Package:/ {p=$2} /^(Essential: yes|Priority: required)/ {print p}' | sort -u)
# shellcheck disable=SC2086
resolved=$(papt apt-get install -s --no-install-recommends $essential apt $packages | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p' | sort)
[ -n "$resolved" ] || die "cannot resolve the package set from the indexes in $aptdir (network? mirror?)"
key=$( { echo "recipe $RECIPE"; cat "$0"; echo "$resolved"; } | sha256sum | cut -c1-16)
out=$cache/$arch-$key
if [ -e "$out/done" ]; then
  say "cached: $out"
  echo "$out"
  exit 0
fi

# --- build ------------------------------------------------------------------------------------
start=$(date +%s)
say "building the image (cache key $key): $packages"
tmp=$cache/tmp-$arch-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
if [ "$arch" = arm64 ]; then
  # The foreign root's maintainer scripts run under qemu-aarch64-static through binfmt_misc.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
    die "binfmt_misc is not available: cannot run the arm64 root's maintainer scripts"
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ] || die "qemu-user-static is missing: packaging/setup-debian.sh --with-tests"
    say "registering the qemu-aarch64 binfmt_misc handler (qemu-user-static's)"
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
  fi
fi
# initramfs-tools: only the drivers to find and mount the root (virtio disks, ext4), so the
# initrd is small and quick to unpack under TCG.
cat > "$tmp/setup-hook" <<'EOF'
#!/bin/sh
set -e
mkdir -p "$1/usr/share/initramfs-tools/modules.d" "$1/etc/initramfs-tools/conf.d"
printf 'virtio_pci\nvirtio_mmio\nvirtio_blk\next4\n' > "$1/usr/share/initramfs-tools/modules.d/tank-vm"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$1/etc/initramfs-tools/conf.d/tank-vm"
EOF
chmod +x "$tmp/setup-hook"
list=$(echo "$packages" | tr ' ' ',')
nice -n 19 mmdebstrap --quiet --variant=minbase --architectures="$arch" --include="$list" \
  --setup-hook="$tmp/setup-hook" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -f "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"' \
  "$SUITE" "$tmp/root.tar" "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main" >"$tmp/mmdebstrap.log" 2>&1 ||
  { tail -n 40 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
root=$tmp/root
mkdir "$root"
tar -C "$root" -xf "$tmp/root.tar"
rm "$tmp/root.tar"

# The guest's configuration: no network, no login prompt, one test runner.
echo tank-vm > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttank-vm\n::1\tlocalhost ip6-localhost\n' > "$root/etc/hosts"
printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' > "$root/etc/fstab"
: > "$root/etc/machine-id"
rm -f "$root/etc/systemd/system/getty.target.wants/"*
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/getty-static.service"
# Periodic maintenance that only slows a boot under TCG (e2scrub_reap alone takes 6 s there).
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer fstrim.timer \
  dpkg-db-backup.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
mkdir -p "$root/var/log/journal" "$root/usr/local/sbin"
cat > "$root/usr/local/sbin/tank-vm-runner" <<'EOF'
#!/bin/sh
# Unpacks the test payload (a tar on the second disk) and runs its guest.sh; its output goes to
# the virtio console, which the host writes to a file.
modprobe virtio_console 2>/dev/null || true
i=0
while [ ! -e /dev/hvc0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# On the root file system: /run is mounted noexec, and the probe runs as tank's ExecStartPre=.
rm -rf /opt/tank-vm
mkdir -p /opt/tank-vm
tar -C /opt/tank-vm -xf /dev/vdb
/bin/sh /opt/tank-vm/guest.sh >/dev/hvc0 2>&1
echo "RUNNER guest.sh ended: $?" >/dev/hvc0
systemctl poweroff
EOF
chmod 755 "$root/usr/local/sbin/tank-vm-runner"
cat > "$root/etc/systemd/system/tank-vm-runner.service" <<'EOF'
[Unit]
Description=tank VM test runner (tests/vm)
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/tank-vm-runner

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/tank-vm-runner.service "$root/etc/systemd/system/multi-user.target.wants/tank-vm-runner.service"

mkdir -p "$tmp/image"
cp "$root"/boot/vmlinuz-* "$tmp/image/vmlinuz"
cp "$root"/boot/initrd.img-* "$tmp/image/initrd.img"
chroot_query() { dpkg-query --admindir="$root/var/lib/dpkg" -W "$@"; }
chroot_query > "$tmp/image/packages"
# Room for the queue and the journal beside the system; sparse.
nice -n 19 mke2fs -q -t ext4 -L root -d "$root" "$tmp/image/rootfs.img" 3G >&2
echo "$key" > "$tmp/image/key"
rm -rf "$out"
mv "$tmp/image" "$out"
: > "$out/done"
# Older images of this arch.
for old in "$cache/$arch"-*; do
  [ "$old" = "$out" ] || rm -rf "$old"
done
say "built $out in $(( $(date +%s) - start )) s"
echo "$out"

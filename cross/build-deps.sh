#!/bin/sh
# Prepares what a static build of tank needs for one Debian architecture:
#   cross/build-deps.sh [amd64|arm64|armhf]        (default: amd64)
#
#  1. Host packages (as root; installs only what is missing): cmake, ninja, pkg-config,
#     dpkg-dev, file, the -dev packages of the native build; for arm64/armhf also the cross
#     compiler g++-<triple> and qemu-user.
#  2. arm64/armhf only: the target's Debian -dev packages of the libraries Debian ships as static
#     archives (OpenSSL, zlib, zstd, LMDB, Paho C) and fmt, downloaded with `apt-get download`
#     and unpacked into <cache>/<arch>/debroot (multiarch layout, usr/lib/<triple>). A private
#     apt state under <cache>/apt is used, so the host's own package set and apt configuration
#     stay untouched (see cross/README.md for why not `dpkg --add-architecture`).
#  3. The libraries Debian ships only as shared objects, Paho MQTT C++ and prometheus-cpp (core),
#     built as static archives (-O2, -ffunction-sections -fdata-sections) from their Debian
#     source packages (`apt-get source`, patches applied) and installed into <cache>/<arch>.
#
# <cache> is ${TANK_DEPS_CACHE:-$HOME/.cache/tank-deps}. Each library is rebuilt only when its
# Debian source version (or this script's recipe number) changes; when everything is present
# the script only checks, in about a second. TANK_DEPS_REFRESH=1 re-reads the package indexes.
# Progress goes to stderr; stdout gets `prefix=<cache>/<arch>` (and `debroot=...` for cross builds).
set -eu

# Bump when the way the libraries are built changes: every cached build is then redone.
RECIPE=2
MIRROR=${TANK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${TANK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

here=$(cd "$(dirname "$0")" && pwd)
arch=${1:-amd64}
case "$arch" in
  amd64) triple=x86_64-linux-gnu ;;
  arm64) triple=aarch64-linux-gnu ;;
  armhf) triple=arm-linux-gnueabihf ;;
  -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
  *) echo "usage: $0 [amd64|arm64|armhf]" >&2; exit 2 ;;
esac
host_arch=$(dpkg --print-architecture)
if [ "$host_arch" != amd64 ]; then
  echo "build-deps: this script expects an amd64 Debian 12 host (found $host_arch)" >&2
  exit 1
fi
cross=no
[ "$arch" != "$host_arch" ] && cross=yes

cache_root=${TANK_DEPS_CACHE:-$HOME/.cache/tank-deps}
prefix=$cache_root/$arch
debroot=$prefix/debroot
jobs=${TANK_JOBS:-$(nproc)}

# Messages go to stderr: stdout carries only the prefix=/debroot= lines, for cross/build.sh.
say() { echo "build-deps[$arch]: $*" >&2; }
die() { echo "build-deps[$arch]: error: $*" >&2; exit 1; }

# --- 1. host packages -----------------------------------------------------------------------
host_packages="g++ cmake ninja-build pkg-config dpkg-dev file binutils ca-certificates \
  libboost1.81-dev libpaho-mqttpp-dev libpaho-mqtt-dev liblmdb-dev libzstd-dev \
  libtomlplusplus-dev prometheus-cpp-dev libvalijson-dev libssl-dev libfmt-dev zlib1g-dev catch2"
if [ "$cross" = yes ]; then
  host_packages="$host_packages g++-$triple qemu-user"
fi
missing=""
for p in $host_packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" -eq 0 ] || die "missing host packages:$missing (install them as root: apt-get install --no-install-recommends$missing)"
  say "installing host packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! apt-get install -y -q --no-install-recommends $missing >&2; then
    apt-get update -q >&2 || true
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >&2
  fi
fi

# --- private apt state ----------------------------------------------------------------------
# papt <name> <apt arch> apt-get-arguments... (papt_cache: apt-cache): apt-get with its own sources, lists and cache in
# <cache>/apt/<name>, so nothing of the host's apt or dpkg state is read or written.
papt() { papt_run apt-get "$@"; }
papt_cache() { papt_run apt-cache "$@"; }
papt_run() {
  prog=$1 d=$cache_root/apt/$2 a=$3
  shift 3
  "$prog" -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts="$d/none" \
    -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" -o Dir::State::status="$d/status" \
    -o APT::Architecture="$a" -o APT::Architectures="$a" -o APT::Sandbox::User=root \
    -o Debug::NoLocking=1 "$@"
}

# papt_init <name> <apt arch> <deb|deb-src>: writes the sources and reads the indexes when they
# are missing (or TANK_DEPS_REFRESH=1). The security suite is optional: Debian's mirrors can
# be briefly out of sync for it, and the static archives do not need its latest fixes to build.
papt_init() {
  d=$cache_root/apt/$1
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/none"
  [ -e "$d/status" ] || : > "$d/status"
  opts="[arch=$2 signed-by=$KEYRING]"
  [ "$3" = deb-src ] && opts="[signed-by=$KEYRING]"
  cat > "$d/sources.list.new" <<EOF
$3 $opts $MIRROR $SUITE main
$3 $opts $MIRROR $SUITE-updates main
$3 $opts $SECURITY_MIRROR $SUITE-security main
EOF
  if ! cmp -s "$d/sources.list.new" "$d/sources.list" 2>/dev/null; then
    mv "$d/sources.list.new" "$d/sources.list"
    rm -f "$d/updated"
  else
    rm -f "$d/sources.list.new"
  fi
  if [ ! -e "$d/updated" ] || [ "${TANK_DEPS_REFRESH:-0}" = 1 ]; then
    say "reading the Debian package indexes ($1)"
    if papt "$1" "$2" update >"$d/update.log" 2>&1; then
      : > "$d/updated"
    else
      # Not marked as read: the next run tries again.
      grep -E '^(E|W):' "$d/update.log" >&2 || true
      set -- "$d/lists/"*"_${SUITE}_main_"*
      [ -e "$1" ] || die "cannot read the Debian indexes, see $d/update.log"
      say "warning: some Debian indexes could not be read (see above); going on with the others"
    fi
  fi
}

# --- 2. target libraries from Debian binary packages (cross builds) ---------------------------
# Static archives and headers: libssl.a libcrypto.a libz.a libzstd.a liblmdb.a libpaho-mqtt3as.a.
# fmt is used header-only; its CMake package refers to libfmt.so, hence libfmt9.
target_debs="libssl-dev zlib1g-dev libzstd-dev liblmdb-dev libpaho-mqtt-dev libfmt-dev libfmt9"
if [ "$cross" = yes ]; then
  papt_init "$arch" "$arch" deb
  # The key is the list of package versions: unpack again only when one changes.
  # shellcheck disable=SC2086
  key=$(papt_cache "$arch" "$arch" show --no-all-versions $target_debs 2>/dev/null |
        sed -n 's/^Package: //p; s/^Version: //p' | tr '\n' ' ')
  [ -n "$key" ] || die "the $arch package indexes list none of: $target_debs"
  if [ "$(cat "$debroot/.key" 2>/dev/null || true)" != "$key" ]; then
    say "unpacking $arch packages into $debroot: $target_debs"
    dl=$cache_root/apt/$arch/debs
    rm -rf "$debroot" "$dl"
    mkdir -p "$debroot" "$dl"
    # shellcheck disable=SC2086
    (cd "$dl" && papt "$arch" "$arch" download $target_debs >/dev/null)
    for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$debroot"; done
    # Debian's .pc files and CMake packages are relocatable with the root, but absolute
    # symlinks (lib*.so -> /usr/lib/...) are not: point them into the root.
    find "$debroot" -type l | while read -r link; do
      target=$(readlink "$link")
      case "$target" in /*) ln -sf "$debroot$target" "$link" ;; esac
    done
    rm -rf "$dl"
    echo "$key" > "$debroot/.key"
    # Paho C++ and prometheus-cpp were built against the previous headers: build them again.
    rm -rf "$prefix/stamps"
  fi
fi

# --- 3. static Paho MQTT C++ and prometheus-cpp from Debian source packages --------------------
papt_init source amd64 deb-src

# source_version <source package>: the version `apt-get source` fetches.
source_version() {
  papt source amd64 source --print-uris "$1" 2>/dev/null |
    sed -n "s/^'[^']*' $1_\\(.*\\)\\.dsc .*/\\1/p" | head -n 1
}

# fetch_source <source package> <version>: unpacked source tree (Debian patches applied), shared
# by all architectures; prints its path.
fetch_source() {
  dir=$cache_root/src/$1_$2
  if [ ! -e "$dir/.unpacked" ]; then
    say "fetching Debian source package $1 $2"
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$dir" && papt source amd64 source "$1=$2" >"$dir/apt-get-source.log" 2>&1) ||
      { cat "$dir/apt-get-source.log" >&2; die "apt-get source $1=$2 failed"; }
    : > "$dir/.unpacked"
  fi
  for d in "$dir"/*/; do
    [ -e "$d/CMakeLists.txt" ] && { echo "${d%/}"; return 0; }
  done
  die "no source tree in $dir"
}

toolchain_args=""
if [ "$cross" = yes ]; then
  toolchain_args="-DCMAKE_TOOLCHAIN_FILE=$here/$triple.cmake -DTANK_CROSS_DEBROOT=$debroot"
fi

# build_static <source package> <cmake options...>
build_static() {
  src=$1
  shift
  version=$(source_version "$src")
  [ -n "$version" ] || die "no Debian source package $src (deb-src index in $cache_root/apt/source)"
  stamp=$prefix/stamps/${src}_$version-r$RECIPE
  if [ -e "$stamp" ]; then
    say "$src $version: static library present"
    return 0
  fi
  tree=$(fetch_source "$src" "$version")
  build=$cache_root/build/$arch/$src
  say "$src $version: building the static library (log: $build.log)"
  rm -rf "$build"
  mkdir -p "$build" "$prefix/stamps"
  start=$(date +%s)
  # shellcheck disable=SC2086
  if ! { cmake -S "$tree" -B "$build" -G Ninja $toolchain_args \
           -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
           -DCMAKE_C_FLAGS="-ffunction-sections -fdata-sections" \
           -DCMAKE_CXX_FLAGS="-ffunction-sections -fdata-sections" \
           -DCMAKE_POSITION_INDEPENDENT_CODE=OFF -DBUILD_SHARED_LIBS=OFF \
           -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
           -DCMAKE_PREFIX_PATH="$prefix" "$@" &&
         cmake --build "$build" -j "$jobs" &&
         cmake --install "$build"; } >"$build.log" 2>&1; then
    tail -n 30 "$build.log" >&2
    die "$src: build failed, see $build.log"
  fi
  case "$src" in
    paho.mqtt.cpp)
      # Paho C++ lists `c` and `stdc++` as link dependencies of its library (LIBS_SYSTEM). The
      # compiler driver links both anyway; named explicitly, -lstdc++ would bring the shared
      # libstdc++ back into a -static-libstdc++ link.
      sed -i 's/\\$<LINK_ONLY:c>;\\$<LINK_ONLY:stdc++>;//' "$prefix/lib/cmake/PahoMqttCpp/PahoMqttCppTargets.cmake"
      ! grep -q 'LINK_ONLY:stdc++' "$prefix/lib/cmake/PahoMqttCpp/PahoMqttCppTargets.cmake" ||
        die "paho.mqtt.cpp: could not remove stdc++ from its link interface"
      ;;
  esac
  rm -f "$prefix/stamps/${src}_"*
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start )) s" > "$stamp"
  say "$src $version: installed into $prefix ($(( $(date +%s) - start )) s)"
}

# Paho C itself is Debian's static libpaho-mqtt3as.a (libpaho-mqtt-dev), found by Paho C++'s
# FindPahoMqttC when tank is configured with TANK_STATIC.
build_static paho.mqtt.cpp \
  -DPAHO_BUILD_STATIC=ON -DPAHO_BUILD_SHARED=OFF -DPAHO_WITH_SSL=ON \
  -DPAHO_BUILD_SAMPLES=OFF -DPAHO_BUILD_TESTS=OFF -DPAHO_BUILD_DOCUMENTATION=OFF
build_static prometheus-cpp \
  -DENABLE_PULL=OFF -DENABLE_PUSH=OFF -DENABLE_COMPRESSION=OFF -DENABLE_TESTING=OFF \
  -DUSE_THIRDPARTY_LIBRARIES=OFF -DGENERATE_PKGCONFIG=OFF

echo "prefix=$prefix"
[ "$cross" = yes ] && echo "debroot=$debroot"
exit 0

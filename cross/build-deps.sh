#!/bin/sh
# Prepares what a static build of tank needs for one Debian architecture:
#   cross/build-deps.sh [amd64|arm64|armhf] [--kafka]      (default: amd64)
#
#  1. Host packages (as root; installs only what is missing): cmake, ninja, pkg-config,
#     dpkg-dev, file, the -dev packages of the native build; for arm64/armhf also the cross
#     compiler g++-<triple> and qemu-user.
#  2. arm64/armhf only: the target's Debian -dev packages of the libraries Debian ships as static
#     archives (zlib, LMDB, Paho C, nanopb) and fmt, downloaded with `apt-get download`
#     and unpacked into <cache>/<arch>/debroot (multiarch layout, usr/lib/<triple>). A private
#     apt state under <cache>/apt is used, so the host's own package set and apt configuration
#     stay untouched (see cross/README.md for why not `dpkg --add-architecture`).
#  3. Built as static archives from their Debian source packages (`apt-get source`, patches
#     applied) and installed into <cache>/<arch>: OpenSSL, configured down to what tank uses
#     (-Os, -ffunction-sections; see build_openssl below: 2.0 MiB of a static amd64 tank
#     instead of Debian's libcrypto.a's 3.25 MiB), zstd (-O2, -ffunction-sections), and the libraries Debian ships only as shared
#     objects, Paho MQTT C++ and prometheus-cpp (core) (-Os, -ffunction-sections -fdata-sections:
#     57 KB less than at -O2, neither is on the per-record path).
#     libmodbus (inputs.modbus), which Debian ships only as a shared object, from its source too.
#  4. With --kafka (cross/build.sh --full): librdkafka for outputs.kafka, from its Debian source
#     package, static, with only what tank uses (build_librdkafka below). Not built otherwise, so
#     the default flavour's dependencies take no longer.
#
# <cache> is ${TANK_DEPS_CACHE:-$HOME/.cache/tank-deps}. Each library is rebuilt only when its
# Debian source version (or this script's recipe number) changes; when everything is present
# the script only checks, in about a second. TANK_DEPS_REFRESH=1 re-reads the package indexes.
# Progress goes to stderr; stdout gets `prefix=<cache>/<arch>` (and `debroot=...` for cross builds).
set -eu

# Bump when the way the libraries are built changes: every cached build is then redone.
RECIPE=5
MIRROR=${TANK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${TANK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

here=$(cd "$(dirname "$0")" && pwd)
arch=amd64
kafka=no
for a in "$@"; do
  case "$a" in
    amd64|arm64|armhf) arch=$a ;;
    --kafka) kafka=yes ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "usage: $0 [amd64|arm64|armhf] [--kafka]" >&2; exit 2 ;;
  esac
done
case "$arch" in
  amd64) triple=x86_64-linux-gnu ;;
  arm64) triple=aarch64-linux-gnu ;;
  armhf) triple=arm-linux-gnueabihf ;;
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
  libtomlplusplus-dev prometheus-cpp-dev libvalijson-dev libssl-dev libfmt-dev zlib1g-dev catch2 \
  nanopb libnanopb-dev liblua5.4-dev autoconf automake libtool libxxhash-dev"
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
      rm -f "$cache_root/src/"*.unavailable
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
# Static archives and headers: libz.a libpaho-mqtt3as.a (liblmdb.a is no longer linked: tank builds
# its patched LMDB from third_party/lmdb; the package stays in the list, which keys the cache).
# fmt is used header-only; its CMake package refers to libfmt.so, hence libfmt9.
# OpenSSL and zstd are built from source (step 3), not taken from Debian's -dev packages.
target_debs="zlib1g-dev liblmdb-dev libpaho-mqtt-dev libfmt-dev libfmt9"
# Libraries that nothing of step 3 is built against, keyed apart, so that adding or updating one
# does not rebuild OpenSSL, Paho C++, prometheus-cpp and librdkafka: nanopb's runtime
# libprotobuf-nanopb.a and its CMake package (the Sparkplug B payloads; the generator, package
# nanopb, is the host's: it writes C); liblua5.4-c++.a and the Lua headers (processors.lua, in the
# full flavour).
leaf_debs="libnanopb-dev liblua5.4-dev"

# unpack_debs <key file> <fresh> <packages...>: downloads the target's packages and unpacks them
# into $debroot (emptied first when <fresh> is yes), unless <key file> there lists the versions the
# indexes have now. Sets `unpacked` to yes when it unpacked them. (Not called as a condition: `set
# -e` would not apply inside it.)
unpack_debs() {
  keyfile=$debroot/$1 fresh=$2
  shift 2
  unpacked=no
  # The key is the list of package versions: unpack again only when one changes.
  key=$(papt_cache "$arch" "$arch" show --no-all-versions "$@" 2>/dev/null |
        sed -n 's/^Package: //p; s/^Version: //p' | tr '\n' ' ')
  [ -n "$key" ] || die "the $arch package indexes list none of: $*"
  [ "$(cat "$keyfile" 2>/dev/null || true)" != "$key" ] || return 0
  say "unpacking $arch packages into $debroot: $*"
  dl=$cache_root/apt/$arch/debs
  [ "$fresh" = no ] || rm -rf "$debroot"
  rm -rf "$dl"
  mkdir -p "$debroot" "$dl"
  (cd "$dl" && papt "$arch" "$arch" download "$@" >/dev/null)
  for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$debroot"; done
  # Debian's .pc files and CMake packages are relocatable with the root, but absolute
  # symlinks (lib*.so -> /usr/lib/...) are not: point them into the root (those of an earlier
  # unpacking point there already).
  find "$debroot" -type l | while read -r link; do
    target=$(readlink "$link")
    case "$target" in "$debroot"/*) ;; /*) ln -sf "$debroot$target" "$link" ;; esac
  done
  rm -rf "$dl"
  echo "$key" > "$keyfile"
  unpacked=yes
}

if [ "$cross" = yes ]; then
  papt_init "$arch" "$arch" deb
  # A change of target_debs unpacks a fresh root, and the leaf packages into it again.
  # shellcheck disable=SC2086
  unpack_debs .key yes $target_debs
  # Paho C++ and prometheus-cpp were built against the previous headers: build them again.
  [ "$unpacked" = no ] || rm -rf "$prefix/stamps"
  # shellcheck disable=SC2086
  unpack_debs .key-leaf no $leaf_debs
fi

# --- 3. static Paho MQTT C++ and prometheus-cpp from Debian source packages --------------------
papt_init source amd64 deb-src

# source_versions <source package>: the versions the deb-src indexes list, newest first.
source_versions() {
  papt_cache source amd64 showsrc "$1" 2>/dev/null | sed -n 's/^Version: //p' | sort -V -r -u
}

# prepare_source <source package> [<file that marks the tree>]: sets `version` and `tree`. `tree`
# is empty when a build of `version` is installed already (its stamp exists). Versions are tried
# newest first: a mirror can list a version whose files it does not have yet (seen for openssl
# on the security mirror), and then the next one is taken.
prepare_source() {
  versions=$(source_versions "$1")
  [ -n "$versions" ] || die "no Debian source package $1 (deb-src index in $cache_root/apt/source)"
  for version in $versions; do
    tree=""
    [ -e "$prefix/stamps/$1_$version-r$RECIPE" ] && return 0
    # A version that could not be fetched is not tried again until the indexes are read again.
    [ -e "$cache_root/src/$1_$version.unavailable" ] && continue
    tree=$(fetch_source "$1" "$version" "${2:-CMakeLists.txt}") && return 0
    : > "$cache_root/src/$1_$version.unavailable"
    say "warning: cannot fetch Debian source package $1 $version; trying an older version"
  done
  die "cannot fetch any version of Debian source package $1 ($(echo $versions))"
}

# fetch_source <source package> <version> [<file that marks the tree>]: unpacked source tree
# (Debian patches applied), shared by all architectures; prints its path.
fetch_source() {
  marker=${3:-CMakeLists.txt}
  dir=$cache_root/src/$1_$2
  if [ ! -e "$dir/.unpacked" ]; then
    say "fetching Debian source package $1 $2"
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$dir" && papt source amd64 source "$1=$2" >"$dir/apt-get-source.log" 2>&1) ||
      { grep -E '^(E|W):' "$dir/apt-get-source.log" >&2; rm -rf "$dir"; die "apt-get source $1=$2 failed"; }
    : > "$dir/.unpacked"
  fi
  for d in "$dir"/*/; do
    [ -e "$d/$marker" ] && { echo "${d%/}"; return 0; }
  done
  die "no source tree in $dir"
}

toolchain_args=""
if [ "$cross" = yes ]; then
  toolchain_args="-DCMAKE_TOOLCHAIN_FILE=$here/$triple.cmake -DTANK_CROSS_DEBROOT=$debroot"
fi

# begin_build <source package> [<file that marks the tree>]: prepares the source (prepare_source).
# Returns 1 when that version is installed already; otherwise sets `build` (the build directory,
# removed; its parent made), `stamp` and `start`.
begin_build() {
  prepare_source "$1" "${2:-CMakeLists.txt}"
  stamp=$prefix/stamps/$1_$version-r$RECIPE
  if [ -z "$tree" ]; then
    say "$1 $version: static library present"
    return 1
  fi
  build=$cache_root/build/$arch/$1
  say "$1 $version: building the static library (log: $build.log)"
  rm -rf "$build"
  mkdir -p "$(dirname "$build")" "$prefix/stamps" "$prefix/lib" "$prefix/include"
  start=$(date +%s)
}

# end_build <source package>: records the build; its stamp replaces those of older versions.
end_build() {
  rm -f "$prefix/stamps/$1_"*
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start )) s" > "$stamp"
  say "$1 $version: installed into $prefix ($(( $(date +%s) - start )) s)"
}

# build_failed <source package>: the end of its log, and stop.
build_failed() {
  tail -n 30 "$build.log" >&2
  die "$1: build failed, see $build.log"
}

# build_static <source package> <cmake options...>
build_static() {
  src=$1
  shift
  begin_build "$src" || return 0
  # shellcheck disable=SC2086
  if ! { cmake -S "$tree" -B "$build" -G Ninja $toolchain_args \
           -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_C_FLAGS_RELEASE="-Os -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-Os -DNDEBUG" \
           -DCMAKE_C_FLAGS="-ffunction-sections -fdata-sections" \
           -DCMAKE_CXX_FLAGS="-ffunction-sections -fdata-sections" \
           -DCMAKE_POSITION_INDEPENDENT_CODE=OFF -DBUILD_SHARED_LIBS=OFF \
           -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
           -DCMAKE_PREFIX_PATH="$prefix" "$@" &&
         cmake --build "$build" -j "$jobs" &&
         cmake --install "$build"; } >"$build.log" 2>&1; then
    build_failed "$src"
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
  end_build "$src"
}

# OpenSSL, static, from Debian's source package, configured for what tank uses: TLS 1.2/1.3
# clients (outputs.http, outputs.mqtt, inputs.mqtt) with RSA, ECDSA, Ed25519/Ed448 and DH
# certificates and keys, SHA-256 for idempotency keys. Debian's libcrypto.a is 3.7 MiB of a static
# tank: it has every algorithm of the default and legacy providers, and no -ffunction-sections.
# Left out (no-*): the legacy provider, engines and loadable modules, algorithms no TLS suite of
# OpenSSL's default security level uses (ARIA, Blowfish, Camellia, CAST, DSA, GOST, IDEA, MD4,
# MDC2, OCB, RC2/4/5, RIPEMD-160, SEED, SipHash, SIV, SM2/3/4, Whirlpool, binary-field curves,
# scrypt), and protocols tank never speaks (SSLv3, DTLS, SCTP, SRTP, SRP, NPN, CT, OCSP
# stapling, compression). Deprecated APIs stay (Paho C calls some); unused functions are dropped
# at link time (--gc-sections). No unwind tables for its C code (-fno-asynchronous-unwind-tables;
# its assembly keeps its own): they were 0.29 MiB of a static tank, and are needed only for a C++
# exception to pass through OpenSSL's frames. The only code of tank's OpenSSL calls is the
# password callback for tls_key_password, a plain function that cannot throw
# (agent/common/tls.cpp). OPENSSLDIR is Debian's /usr/lib/ssl: the device's CA store
# (/usr/lib/ssl/certs -> /etc/ssl/certs) and openssl.cnf are found as with Debian's own library.
build_openssl() {
  begin_build openssl Configure || return 0
  case "$arch" in
    amd64) target=linux-x86_64 ;;
    arm64) target=linux-aarch64 ;;
    armhf) target=linux-armv4 ;;
  esac
  cross_prefix=""
  [ "$cross" = yes ] && cross_prefix=--cross-compile-prefix=$triple-
  # shellcheck disable=SC2086
  if ! { mkdir "$build" && cd "$build" &&
         "$tree/Configure" "$target" $cross_prefix --prefix="$prefix" --libdir=lib \
           --openssldir=/usr/lib/ssl \
           no-shared no-module no-dso no-engine no-legacy no-tests no-fuzz-afl no-fuzz-libfuzzer \
           no-aria no-bf no-camellia no-cast no-dsa no-ec2m no-gost no-idea no-md4 no-mdc2 \
           no-ocb no-rc2 no-rc4 no-rc5 no-rmd160 no-seed no-siphash no-siv no-sm2 no-sm3 no-sm4 \
           no-whirlpool no-scrypt \
           no-ssl3 no-dtls no-sctp no-srtp no-srp no-nextprotoneg no-ct no-ocsp no-comp \
           no-cms no-ts no-rfc3779 \
           -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables &&
         make -j "$jobs" build_libs &&
         make install_dev; } >"$build.log" 2>&1; then
    build_failed openssl
  fi
  cd "$here"
  # Everything else links OpenSSL: build it again against this one.
  rm -f "$prefix/stamps/"*
  end_build openssl
}
build_openssl

# zstd, static, from Debian's source package: tank only compresses (outputs' `compression =
# "zstd"`, level 3). Debian's libzstd.a is 0.42 MiB of a static tank (no -ffunction-sections, the
# dictionary builder, legacy formats); built here at -O2 with -ffunction-sections and without
# those, it compresses as fast as Debian's (measured: 1.17 GB/s against 1.15 GB/s on JSON lines;
# -Os would cost 30 %) and is about 0.14 MiB smaller in tank. tank compresses at level 3 only
# (agent/output/batch.cpp), which is the dfast strategy for every input size; the strategies of
# levels 5 and up (lazy, btopt/btultra, long-distance matching: zstd_lazy.c, zstd_opt.c,
# zstd_ldm.c) are linked because a table refers to them, but never run: those three files at
# -Os, 0.08 MiB less. No unwind tables: zstd calls no code of tank's (no C++ exception can pass
# through its frames).
build_zstd() {
  begin_build libzstd Makefile || return 0
  cc=cc ar=ar
  [ "$cross" = yes ] && cc=$triple-gcc ar=$triple-ar
  # The library's Makefile builds in its source tree: build in a copy.
  if ! { cp -a "$tree" "$build" &&
         make -C "$build/lib" -j "$jobs" libzstd.a CC="$cc" AR="$ar" \
           CFLAGS="-O2 -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables" \
           --eval='%/zstd_lazy.o %/zstd_opt.o %/zstd_ldm.o: override CFLAGS += -Os' \
           ZSTD_LIB_DICTBUILDER=0 ZSTD_LIB_DEPRECATED=0 ZSTD_LEGACY_SUPPORT=0 &&
         cp "$build/lib/libzstd.a" "$prefix/lib/" &&
         cp "$build/lib/zstd.h" "$build/lib/zstd_errors.h" "$prefix/include/"; } >"$build.log" 2>&1; then
    build_failed libzstd
  fi
  end_build libzstd
}
build_zstd

# Paho C is Debian's static libpaho-mqtt3as.a (libpaho-mqtt-dev; this mirror does not serve its
# source tarball), built against the same OpenSSL 3.0 API; Paho C++'s FindPahoMqttC finds it.
build_static paho.mqtt.cpp \
  -DOPENSSL_ROOT_DIR="$prefix" \
  -DPAHO_BUILD_STATIC=ON -DPAHO_BUILD_SHARED=OFF -DPAHO_WITH_SSL=ON \
  -DPAHO_BUILD_SAMPLES=OFF -DPAHO_BUILD_TESTS=OFF -DPAHO_BUILD_DOCUMENTATION=OFF
build_static prometheus-cpp \
  -DENABLE_PULL=OFF -DENABLE_PUSH=OFF -DENABLE_COMPRESSION=OFF -DENABLE_TESTING=OFF \
  -DUSE_THIRDPARTY_LIBRARIES=OFF -DGENERATE_PKGCONFIG=OFF

# libmodbus, static, from Debian's source package, for inputs.modbus (Debian ships only the shared
# library). Its own autotools build (Debian's source has no generated configure: autoreconf, hence
# autoconf, automake and libtool among the host packages), static only, -Os with
# -ffunction-sections: about 50 KB, mostly unused functions dropped at link time. The build runs
# in a copy of the tree, as zstd's.
build_libmodbus() {
  begin_build libmodbus configure.ac || return 0
  host_args=""
  [ "$cross" = yes ] && host_args="--host=$triple"
  # shellcheck disable=SC2086
  if ! { cp -a "$tree" "$build" && cd "$build" && autoreconf -fi &&
         ./configure $host_args --prefix="$prefix" --libdir="$prefix/lib" --disable-shared --enable-static \
           --without-documentation --disable-tests CFLAGS="-Os -ffunction-sections -fdata-sections" &&
         make -C src -j "$jobs" &&
         make -C src install; } >"$build.log" 2>&1; then
    build_failed libmodbus
  fi
  cd "$here"
  end_build libmodbus
}
build_libmodbus

# librdkafka, static, from Debian's source package, for outputs.kafka (the `full` flavour:
# cross/build.sh --full). Debian's librdkafka.a cannot be linked here: it needs -lsasl2 and -llz4,
# which have no static archives. Built with librdkafka's own ./configure (mklove) against the
# OpenSSL and zstd above and zlib (the host's for amd64, the debroot's for cross builds), with
# what tank uses: TLS, SASL PLAIN/SCRAM (and OAUTHBEARER, built in with TLS), zstd, gzip, and the
# built-in lz4 and snappy. Left out: GSSAPI (Cyrus SASL), libcurl (OAUTHBEARER OIDC), syslog, and
# dlopen() with it the plugin loader (`plugin.library.paths`), which a static tank cannot use.
# Never --install-deps or --source-deps-only: those download. -Os like OpenSSL (configure puts
# its own -O2 before CFLAGS, so -Os is the one that applies): the producer's per-record work is
# copying into its buffers and the CRC32C, which has its own hardware path.
build_librdkafka() {
  begin_build librdkafka configure.self || return 0
  cc=cc cxx=c++ ar=ar ranlib=ranlib
  cppflags="-I$prefix/include" ldflags="-L$prefix/lib"
  if [ "$cross" = yes ]; then
    cc=$triple-gcc cxx=$triple-g++ ar=$triple-ar ranlib=$triple-ranlib
    cppflags="$cppflags -I$debroot/usr/include -I$debroot/usr/include/$triple"
    ldflags="$ldflags -L$debroot/usr/lib/$triple"
  fi
  # pkg-config sees only this prefix (OpenSSL's .pc files); the host's, for amd64 too, never:
  # they would name Debian's shared libssl. zstd and zlib are found by configure's link checks.
  # tank's OpenSSL is built no-engine; librdkafka 2.0.2 uses ENGINE_* whenever OpenSSL >= 1.1
  # (fixed upstream later, confluentinc/librdkafka#4852): the same guard, in its build copy.
  if ! { cp -a "$tree" "$build" && cd "$build" &&
         sed -i 's/    !defined(OPENSSL_IS_BORINGSSL)$/    !defined(OPENSSL_IS_BORINGSSL) \&\& !defined(OPENSSL_NO_ENGINE)/' \
           src/rdkafka_conf.h &&
         grep -q 'OPENSSL_NO_ENGINE' src/rdkafka_conf.h &&
         PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" PKG_CONFIG_PATH="" RANLIB=$ranlib \
         CPPFLAGS="$cppflags" LDFLAGS="$ldflags" CFLAGS="-Os -ffunction-sections -fdata-sections" \
         ./configure --no-download --prefix="$prefix" --cc="$cc" --cxx="$cxx" \
           --disable-debug-symbols \
           --enable-ssl --enable-zstd --enable-zlib \
           --disable-gssapi --disable-curl --disable-lz4-ext --disable-syslog &&
         grep -q '^#define WITH_SSL 1' config.h && grep -q '^#define WITH_ZSTD 1' config.h &&
         grep -q '^#define WITH_ZLIB 1' config.h && grep -q '^#define WITH_SASL_SCRAM 1' config.h &&
         sed -i 's/^WITH_LIBDL=.*/WITH_LIBDL=n/; s/^WITH_PLUGINS=.*/WITH_PLUGINS=n/' Makefile.config &&
         sed -i 's/^#define WITH_LIBDL .*/#define WITH_LIBDL 0/; s/^#define WITH_PLUGINS .*/#define WITH_PLUGINS 0/;
                 /^#define BUILT_WITH /s/ LIBDL PLUGINS / /' config.h &&
         make -C src -j "$jobs" librdkafka.a AR="$ar" RANLIB="$ranlib" &&
         cp src/librdkafka.a "$prefix/lib/" &&
         mkdir -p "$prefix/include/librdkafka" &&
         cp src/rdkafka.h src/rdkafka_mock.h "$prefix/include/librdkafka/"; } >"$build.log" 2>&1; then
    cd "$here"
    build_failed librdkafka
  fi
  cd "$here"
  end_build librdkafka
}
[ "$kafka" = no ] || build_librdkafka

echo "prefix=$prefix"
[ "$cross" = yes ] && echo "debroot=$debroot"
exit 0

#!/bin/sh
# Installs the Debian 12 packages tank needs to build (and, with --with-tests, to run its test
# suite). Idempotent: when everything is installed it only checks, in well under a second.
# Installing needs root; without root it lists what is missing and how to install it.
set -eu

build_packages="g++ cmake ninja-build pkg-config git \
  libboost1.81-dev libpaho-mqttpp-dev libpaho-mqtt-dev lmdb-utils libzstd-dev \
  libtomlplusplus-dev prometheus-cpp-dev libvalijson-dev libssl-dev libfmt-dev zlib1g-dev librdkafka-dev \
  nanopb libnanopb-dev libmodbus-dev libxxhash-dev liblua5.4-dev"
# nanopb: the generator (nanopb_generator.py, run at build time) and libnanopb-dev its static runtime,
# for the Sparkplug B payloads of inputs.mqtt (plugins/inputs_mqtt/sparkplug/CMakeLists.txt).
# libxxhash-dev: XXH3, header only (process/record_key.cpp), the keys of deadband, dedup, throttle.
# liblua5.4-dev: processors.lua (its liblua5.4-c++, the .a too for static builds).
# clang (libFuzzer) and llvm (llvm-symbolizer, for the sanitizers' stack traces): fuzz/run.sh.
# ccache: packaging/test.sh compiles through it, so a second run compiles only what changed.
# kcat: an independent Kafka consumer for outputs.kafka's tests (against librdkafka's mock cluster).
# python3-pymodbus (with python3-serial-asyncio, which it only recommends, for RTU) and socat (a pty
# pair for RTU): the Modbus server of inputs.modbus's tests and benchmark.
# mmdebstrap, qemu-system-x86, qemu-system-arm, qemu-utils (qemu-img), qemu-user-static (the arm64
# root's maintainer scripts, through binfmt_misc) and arch-test: tests/vm, Debian 12 under systemd
# in qemu-system (tests/vm/README.md).
test_packages="catch2 mosquitto mosquitto-clients prometheus logrotate json-schema-test-suite qemu-user systemd \
  nginx tinyproxy clang llvm ccache kcat python3-pymodbus python3-serial-asyncio socat \
  mmdebstrap qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static arch-test"

packages="$build_packages"
# node and npm run the Sparkplug B test peers (Eclipse Tahu's JavaScript packages, tests/sparkplug).
# A machine that has them already (Debian's, or NodeSource's nodejs, which bundles npm) keeps them;
# otherwise Debian's nodejs and npm are installed.
node_packages=""
command -v node >/dev/null 2>&1 || node_packages="nodejs"
command -v npm >/dev/null 2>&1 || node_packages="$node_packages npm"
case "${1:-}" in
  --with-tests) packages="$build_packages $test_packages $node_packages" ;;
  "") ;;
  *) echo "usage: $0 [--with-tests]" >&2; exit 2 ;;
esac

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "tank needs these Debian packages:$missing" >&2
  echo "install them as root: apt-get install --no-install-recommends$missing" >&2
  exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# The test peers (mosquitto, nginx, tinyproxy) come with services that would start at install
# and listen on their usual ports; the tests start their own on free ports. So, unless the
# machine has its own policy, services are not started while installing (invoke-rc.d's
# policy-rc.d, exit 101: "action forbidden").
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
if ! apt-get install -y --no-install-recommends $missing >/dev/null 2>&1; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
fi

# CMake toolchain file: Debian 12 cross build for 64-bit ARM (Debian architecture arm64).
#   apt-get install g++-aarch64-linux-gnu qemu-user     (cross/build-deps.sh arm64 does it)
#   cmake -G Ninja -DCMAKE_TOOLCHAIN_FILE=cross/aarch64-linux-gnu.cmake ...
# or just: cross/build.sh arm64
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(TANK_CROSS_TRIPLE aarch64-linux-gnu)
set(TANK_CROSS_QEMU qemu-aarch64)
include("${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake")

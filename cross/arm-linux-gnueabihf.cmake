# CMake toolchain file: Debian 12 cross build for 32-bit ARMv7 hard-float (Debian architecture
# armhf: ARMv7-A, Thumb-2, VFPv3-D16).
#   apt-get install g++-arm-linux-gnueabihf qemu-user   (cross/build-deps.sh armhf does it)
#   cmake -G Ninja -DCMAKE_TOOLCHAIN_FILE=cross/arm-linux-gnueabihf.cmake ...
# or just: cross/build.sh armhf
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(TANK_CROSS_TRIPLE arm-linux-gnueabihf)
set(TANK_CROSS_QEMU qemu-arm)
include("${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake")
# GCC notes on every std::vector<...>::iterator parameter that its passing changed in GCC 7.1
# (-Wpsabi): irrelevant here, everything is built with the same compiler.
set(CMAKE_C_FLAGS_INIT "-Wno-psabi")
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")

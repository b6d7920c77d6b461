# Shared part of the cross toolchain files (aarch64-linux-gnu.cmake, arm-linux-gnueabihf.cmake).
# The including file sets TANK_CROSS_TRIPLE, CMAKE_SYSTEM_PROCESSOR and TANK_CROSS_QEMU.
#
# Compilers: Debian's cross compilers (g++-<triple>), whose C library lives in /usr/<triple>.
# Libraries: Debian multiarch layout, /usr/lib/<triple> and /usr/include/<triple>, either
#   - installed with `dpkg --add-architecture <arch>` and `apt-get install lib...-dev:<arch>`, or
#   - unpacked from the same Debian packages into a directory given as TANK_CROSS_DEBROOT
#     (cross/build-deps.sh does this: it keeps the host's package set untouched, see README.md).
# Arch-independent headers (Boost, toml++, valijson, Catch2) come from the host's /usr/include,
# which Debian's cross compilers search after their own include directory.
set(CMAKE_SYSTEM_NAME Linux)

set(CMAKE_C_COMPILER ${TANK_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${TANK_CROSS_TRIPLE}-g++)
set(CMAKE_AR ${TANK_CROSS_TRIPLE}-ar CACHE FILEPATH "Archiver")
set(CMAKE_RANLIB ${TANK_CROSS_TRIPLE}-ranlib CACHE FILEPATH "Ranlib")
set(CMAKE_STRIP ${TANK_CROSS_TRIPLE}-strip CACHE FILEPATH "Strip")
set(CMAKE_LIBRARY_ARCHITECTURE ${TANK_CROSS_TRIPLE})

# ctest (and Catch2's test discovery) run the cross-built programs under qemu-user; -L makes the
# target's dynamic loader and C library, from Debian's libc6-<arch>-cross, the ones it finds.
set(CMAKE_CROSSCOMPILING_EMULATOR ${TANK_CROSS_QEMU} -L /usr/${TANK_CROSS_TRIPLE})

# The unpacked package root is passed on to the try_compile projects CMake configures.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TANK_CROSS_DEBROOT)
if(NOT TANK_CROSS_DEBROOT AND DEFINED ENV{TANK_CROSS_DEBROOT})
  set(TANK_CROSS_DEBROOT "$ENV{TANK_CROSS_DEBROOT}")
endif()

if(TANK_CROSS_DEBROOT)
  list(PREPEND CMAKE_PREFIX_PATH "${TANK_CROSS_DEBROOT}/usr")
  # opensslconf.h includes <openssl/configuration.h>, which is in the multiarch include directory.
  set(CMAKE_C_STANDARD_INCLUDE_DIRECTORIES "${TANK_CROSS_DEBROOT}/usr/include/${TANK_CROSS_TRIPLE}")
  set(CMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES "${TANK_CROSS_DEBROOT}/usr/include/${TANK_CROSS_TRIPLE}")
  # pkg-config reads the target's .pc files only, and prefixes their /usr paths with the root.
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "${TANK_CROSS_DEBROOT}")
  set(ENV{PKG_CONFIG_LIBDIR}
      "${TANK_CROSS_DEBROOT}/usr/lib/${TANK_CROSS_TRIPLE}/pkgconfig:${TANK_CROSS_DEBROOT}/usr/share/pkgconfig")
else()
  set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${TANK_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
endif()

# No CMAKE_FIND_ROOT_PATH: with multiarch, target and host share one file system; the target's
# libraries are told apart by the directory /usr/lib/<triple> (CMAKE_LIBRARY_ARCHITECTURE).

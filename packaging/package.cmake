# Installation layout and the Debian package (CPack DEB), for amd64, arm64 and armhf:
#   /usr/bin/tank
#   /etc/tank/tank.toml                      conffile: the embedded default configuration
#   /lib/systemd/system/tank.service         the hardened unit (systemd/tank.service)
#   /usr/share/doc/tank/                     README, operations, configuration reference
# `cpack -G DEB` in a build directory makes build/tank_<version>_<arch>.deb; cross/build.sh does it
# for each architecture. The binary is stripped in the package.

install(TARGETS tank RUNTIME DESTINATION bin)
install(FILES "${CMAKE_SOURCE_DIR}/config/default.toml" DESTINATION /etc/tank RENAME tank.toml)
install(FILES "${CMAKE_SOURCE_DIR}/systemd/tank.service" DESTINATION /lib/systemd/system)
install(FILES "${CMAKE_SOURCE_DIR}/README.md" "${CMAKE_SOURCE_DIR}/docs/operations.md"
              "${CMAKE_SOURCE_DIR}/docs/configuration.md" "${CMAKE_SOURCE_DIR}/docs/architecture.md"
              "${CMAKE_SOURCE_DIR}/docs/queue.md" "${CMAKE_SOURCE_DIR}/docs/inputs.md"
              "${CMAKE_SOURCE_DIR}/docs/outputs.md" "${CMAKE_SOURCE_DIR}/docs/processing.md"
        DESTINATION share/doc/tank)

# Debian's name for the target architecture.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  set(TANK_DEB_ARCH arm64)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^arm")
  set(TANK_DEB_ARCH armhf)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|amd64|AMD64)$")
  set(TANK_DEB_ARCH amd64)
else()
  set(TANK_DEB_ARCH "${CMAKE_SYSTEM_PROCESSOR}")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tank)
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT "tank maintainers <tank@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "edge/IoT ingestion agent with a bounded write-ahead queue")
# The upstreams named are those compiled in (the packages are of the full build: all three).
set(TANK_DEB_UPSTREAMS "HTTP and MQTT")
if("outputs_kafka" IN_LIST TANK_PLUGINS)
  set(TANK_DEB_UPSTREAMS "HTTP, MQTT and Kafka")
endif()
set(CPACK_PACKAGE_DESCRIPTION
    "tank reads MQTT, files and sockets, keeps what it reads in a bounded LMDB-backed write-ahead \
queue, validates, dead-letters and aggregates locally, and forwards batches upstream over \
${TANK_DEB_UPSTREAMS} with at-least-once delivery and idempotency keys.")
set(CPACK_STRIP_FILES TRUE)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE "${TANK_DEB_ARCH}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
if(TANK_STATIC)
  # Only the C library is linked dynamically (cross/README.md); 2.36 for arc4random (libstdc++).
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6 (>= 2.36)")
else()
  # A build against Debian's shared libraries: dpkg-shlibdeps names them.
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${CMAKE_SOURCE_DIR}/packaging/deb/conffiles"
    "${CMAKE_SOURCE_DIR}/packaging/deb/postinst" "${CMAKE_SOURCE_DIR}/packaging/deb/prerm"
    "${CMAKE_SOURCE_DIR}/packaging/deb/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)

# kafka_mock_cluster: librdkafka's mock Kafka cluster as a child process for the tests of
# outputs.kafka (protocol in the header comment of kafka_mock_cluster.cpp).
#
# Include from tests/CMakeLists.txt (after tank_warnings exists):
#   include(support/kafka_mock_cluster.cmake)
# It links librdkafka (with its rdkafka_mock.h) as outputs.kafka does (tank_rdkafka,
# plugins/outputs_kafka/CMakeLists.txt) when that plugin is built, else finds it through pkg-config
# (Debian: librdkafka-dev). Where librdkafka is missing it defines nothing and says so: guard users with
# `if(TARGET kafka_mock_cluster)` and pass the program's path as "$<TARGET_FILE:kafka_mock_cluster>".
# With kcat installed, the program's own check (kafka_mock_cluster_check.sh, ~15 s, loopback only)
# is a ctest test too; without kcat that test reports skipped.

if(NOT TARGET tank_rdkafka)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(RDKAFKA IMPORTED_TARGET rdkafka)
  if(TARGET PkgConfig::RDKAFKA)
    add_library(tank_rdkafka INTERFACE)
    target_link_libraries(tank_rdkafka INTERFACE PkgConfig::RDKAFKA)
  endif()
endif()

if(TARGET tank_rdkafka)
  add_executable(kafka_mock_cluster "${CMAKE_CURRENT_LIST_DIR}/kafka_mock_cluster.cpp")
  target_compile_features(kafka_mock_cluster PRIVATE cxx_std_20)
  target_link_libraries(kafka_mock_cluster PRIVATE tank_rdkafka tank_warnings)

  add_test(NAME "integration: kafka_mock_cluster check"
           COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/kafka_mock_cluster_check.sh" "$<TARGET_FILE:kafka_mock_cluster>")
  set_tests_properties("integration: kafka_mock_cluster check" PROPERTIES
    LABELS integration TIMEOUT 300 SKIP_RETURN_CODE 77)
else()
  message(STATUS "librdkafka not found (pkg-config rdkafka): no kafka_mock_cluster, no Kafka tests")
endif()

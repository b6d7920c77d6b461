#pragma once

// The fuzz targets (one <name>_fuzz.cpp each). Each returns 0; a bug aborts or trips a sanitizer.

#include <cstddef>
#include <cstdint>

namespace tank::fuzz {

int json_target(const std::uint8_t* data, std::size_t size);
int line_framer_target(const std::uint8_t* data, std::size_t size);
int http_ingest_target(const std::uint8_t* data, std::size_t size);
int http_response_target(const std::uint8_t* data, std::size_t size);
int config_target(const std::uint8_t* data, std::size_t size);
int dead_letter_target(const std::uint8_t* data, std::size_t size);
int sparkplug_target(const std::uint8_t* data, std::size_t size);
int lua_record_target(const std::uint8_t* data, std::size_t size);  // with processors_lua

}  // namespace tank::fuzz

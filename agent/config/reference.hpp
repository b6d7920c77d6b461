#pragma once

#include <string>

#include "config/schema.hpp"

namespace tank::config {

// The configuration reference in Markdown (docs/configuration.md), rendered from the option
// declarations, so the reference cannot drift from what tank accepts.
std::string render_reference(const Schema& schema);

}  // namespace tank::config

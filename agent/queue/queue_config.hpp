#pragma once

// The [queue] configuration section and its translation into queue::Options.

#include <filesystem>

#include "config/document.hpp"
#include "config/schema.hpp"
#include "queue/queue.hpp"

namespace tank::queue {

const config::Section& config_section();

// Options from a validated [queue] section. `dir` is where the LMDB environment lives
// (<data_dir>/queue).
Options options_from(const config::SectionValues& values, const std::filesystem::path& dir);

}  // namespace tank::queue

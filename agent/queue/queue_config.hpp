#pragma once

// The [queue] configuration section and its translation into queue::Options.

#include <filesystem>

#include "config/document.hpp"
#include "config/schema.hpp"
#include "queue/queue.hpp"

namespace tank::queue {

const config::Section& config_section();
const config::Section& dead_letter_section();

// Options from the validated [queue] and [dead_letter] sections of `document`. `dir` is where
// the LMDB environment lives (<data_dir>/queue).
Options options_from(const config::Document& document, const std::filesystem::path& dir);

}  // namespace tank::queue

#pragma once

// Finding the files inputs.file reads (file_tail.hpp): the patterns' directories, the names
// never read, and inotify's events.
//
// The input rescans every poll_interval, and at once when inotify reports a new or moved file in
// a pattern's directory (file_tail.hpp, "Discovery").

#include <string>
#include <string_view>
#include <vector>

namespace tank::input::tail {

// The directory part of a pattern before its first wildcard, e.g. "/var/log/app" for
// "/var/log/app/*.log" and "/var/log" for "/var/log/*/x.log".
std::string fixed_directory(const std::string& pattern);

// Compressed files (.gz, .bz2, .xz, .zst, .lz4, .zip, .Z, .tgz) are never read.
bool compressed_name(std::string_view path);

// Whether `path` matches one of the `exclude` glob patterns.
bool excluded(const std::string& path, const std::vector<std::string>& exclude);

// Reads pending inotify events; true when one may mean new or moved files.
bool drain_inotify(int inotify_fd);

}  // namespace tank::input::tail

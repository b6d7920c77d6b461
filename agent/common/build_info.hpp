#pragma once

// What this binary is: filled in at build time (agent/common/build_info.cmake).
namespace tank::build {
extern const char* const version;     // project version, e.g. "0.1.0"
extern const char* const git_commit;  // short commit, "-dirty" when built from a modified tree
extern const char* const build_type;  // CMake build type, "+asan+ubsan" when sanitized
// Seconds since the Unix epoch of the commit built (git; else SOURCE_DATE_EPOCH or the build's
// time): a wall clock earlier than this is certainly wrong (common/clock_sync.hpp).
extern const long long source_epoch_s;
}  // namespace tank::build

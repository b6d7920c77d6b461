#pragma once

// What this binary is: filled in at build time (agent/common/build_info.cmake).
namespace tank::build {
extern const char* const version;     // project version, e.g. "0.1.0"
extern const char* const git_commit;  // short commit, "-dirty" when built from a modified tree
extern const char* const build_type;  // CMake build type, "+asan+ubsan" when sanitized
}  // namespace tank::build

#pragma once

// A tmpfs of a given size mounted on a fresh directory for the life of the object: a real
// device that fills up (ENOSPC). Mounting needs root, as the failure tests have
// (packaging/test.sh); without it the test fails saying so.

#include <sys/mount.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "support/helpers.hpp"

namespace tank::test {

class SmallFilesystem {
 public:
  explicit SmallFilesystem(std::uint64_t bytes) : mount_point_(dir_ / "fs") {
    std::filesystem::create_directories(mount_point_);
    std::string options = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", mount_point_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      FAIL("cannot mount a tmpfs (the failure tests run as root, like packaging/test.sh): " << std::strerror(errno));
    }
  }
  ~SmallFilesystem() { ::umount2(mount_point_.c_str(), MNT_DETACH); }
  SmallFilesystem(const SmallFilesystem&) = delete;
  SmallFilesystem& operator=(const SmallFilesystem&) = delete;
  const std::filesystem::path& path() const { return mount_point_; }

 private:
  TempDir dir_;
  std::filesystem::path mount_point_;
};

}  // namespace tank::test

#include "tail_scan.hpp"

#include <fnmatch.h>
#include <sys/inotify.h>
#include <unistd.h>

namespace tank::input::tail {

// The directory part of a pattern before its first wildcard, e.g. "/var/log/app" for
// "/var/log/app/*.log" and "/var/log" for "/var/log/*/x.log".
std::string fixed_directory(const std::string& pattern) {
  std::size_t wild = pattern.find_first_of("*?[{");
  std::string prefix = pattern.substr(0, wild);
  auto slash = prefix.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? std::string("/") : prefix.substr(0, slash);
}

bool compressed_name(std::string_view path) {
  for (std::string_view suffix : {".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z", ".tgz"}) {
    if (path.ends_with(suffix)) return true;
  }
  return false;
}

bool excluded(const std::string& path, const std::vector<std::string>& exclude) {
  for (const auto& pattern : exclude) {
    if (::fnmatch(pattern.c_str(), path.c_str(), FNM_PATHNAME) == 0) return true;
  }
  return false;
}

// Reads pending inotify events; true when one may mean new or moved files.
bool drain_inotify(int inotify_fd) {
  if (inotify_fd < 0) return false;
  bool structural = false;
  alignas(inotify_event) char buf[8192];
  for (;;) {
    ssize_t n = ::read(inotify_fd, buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      if (e->mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF |
                     IN_Q_OVERFLOW | IN_IGNORED)) {
        structural = true;
      }
      p += sizeof(inotify_event) + e->len;
    }
  }
  return structural;
}

}  // namespace tank::input::tail

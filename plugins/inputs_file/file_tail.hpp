#pragma once

// Tailing files: lines from files matching glob patterns, read while they are written and
// across every kind of rotation logrotate does.
//
// Identity. A file is known by its device and inode, confirmed by a fingerprint: its first
// bytes (up to fingerprint_bytes). A file whose inode is known but whose first bytes differ
// is a new file that reused the inode, and is read from its beginning.
//
// Offsets. The offset after the last complete line read is stored in the queue's component
// state ("file/<input>/<dev>:<inode>") in the same transaction as the records read up to it.
// After kill -9 a restart resumes exactly there: no line is lost, none is read twice.
//
// Rotation.
//   rename + create   the renamed file keeps its inode: it is read to its end from the open
//                     descriptor (also once its name no longer matches), and the new file at
//                     the path is read from its beginning.
//   copytruncate,     a file smaller than the offset, or with other first bytes, was
//   truncation        truncated: reading restarts at 0. Its offset and fingerprint are stored
//                     (state "file/<input>/retired/<seq>", at most 64) in the same transaction.
//                     A new file whose first bytes match a known or truncated file is a copy of
//                     it: it is read from that file's offset (also when the copy is still being
//                     written, and also after kill -9), so lines written between tank's last
//                     read and the truncation are not lost and none is read twice -- if the
//                     copy matches `paths` (e.g. "app.log*"). A new file is identified once its
//                     size held still for max(poll_interval, 250ms), at most rotate_wait.
//                     Two different files whose first 64+ bytes are equal (a fixed banner)
//                     would be taken for copies: keep such banners out of `paths` or vary them.
//   compressed        names ending in .gz, .bz2, .xz, .zst, .lz4, .zip, .Z are ignored.
//
// Discovery uses inotify on the directories of the patterns, and a rescan every poll_interval
// (new files, and file systems where inotify sees nothing, such as NFS). Files that exist when
// the input first starts, without a stored offset, are read from their beginning or end
// (read_from); files that appear later are read from their beginning.
//
// Backpressure costs nothing here: while the queue refuses records the input does not read,
// and a refused batch is read again later from the committed offset.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "plugin/input.hpp"

namespace tank::input {

struct FileTailSettings {
  std::vector<std::string> paths;    // glob patterns
  std::vector<std::string> exclude;  // glob patterns matched against the full path
  bool read_from_end = false;        // for files present at the first start without an offset
  std::size_t max_line_bytes = 64 * 1024;
  std::size_t fingerprint_bytes = 256;
  std::chrono::nanoseconds poll_interval = std::chrono::seconds(1);
  // How long a rotated-away file is still read after it stopped growing (the writer may append
  // until it reopens its log).
  std::chrono::nanoseconds rotate_wait = std::chrono::seconds(5);
  bool inotify = true;
  std::size_t max_open_files = 1024;
};

std::unique_ptr<plugin::Input> make_file_tail_input(const FileTailSettings& settings,
                                                    const plugin::InputContext& context);

}  // namespace tank::input

// inputs.file: lines from files matching glob patterns, across rotations, with the read offset
// committed together with the records (see file_tail.hpp).

#include <fmt/format.h>

#include "file_tail.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using config::Option;
using config::Type;

constexpr std::string_view kReadFrom[] = {"beginning", "end"};

const Option kOptions[] = {
    plugin::format_option("\"text\""),
    {.name = "paths",
     .type = Type::string_list,
     .default_value = "",
     .description = "Glob patterns of the files to read, e.g. [\"/var/log/app/*.log\"]. With copytruncate "
                    "rotation, include the rotated name (\"app.log*\") so that lines written between tank's last "
                    "read and the truncation are read from the copy. Compressed files (.gz, .bz2, .xz, .zst, .lz4, "
                    ".zip, .Z) are ignored.",
     .required = true},
    {.name = "exclude",
     .type = Type::string_list,
     .default_value = "[]",
     .description = "Glob patterns of paths not to read, matched against the full path."},
    {.name = "read_from",
     .type = Type::choice,
     .default_value = "\"beginning\"",
     .description = "Where to start files that exist when this input first starts and have no stored offset: "
                    "\"beginning\" or \"end\" (new lines only). Files that appear later are read from their "
                    "beginning; files with a stored offset resume there.",
     .choices = kReadFrom},
    {.name = "max_line_bytes",
     .type = Type::size,
     .default_value = "\"64KiB\"",
     .description = "The longest line taken as a record. A longer line is never split: it goes to the dead-letter "
                    "store with reason `line_too_long` (as much of its start as fits one commit, at most 64 KiB, is kept), and reading goes on.",
     .min = "16B",
     .max = "4MiB"},
    {.name = "fingerprint_bytes",
     .type = Type::size,
     .default_value = "\"256B\"",
     .description = "How many first bytes identify a file together with its device and inode (a reused inode "
                    "with other first bytes is a new file).",
     .min = "16B",
     .max = "64KiB"},
    {.name = "poll_interval",
     .type = Type::duration,
     .default_value = "\"1s\"",
     .description = "How often the patterns are matched again and the files checked, besides inotify events.",
     .min = "10ms",
     .max = "1h"},
    {.name = "rotate_wait",
     .type = Type::duration,
     .default_value = "\"5s\"",
     .description = "How long a file that was rotated away is still read after it stopped growing (the writer may "
                    "append to it until it reopens its log).",
     .min = "0",
     .max = "1h"},
    {.name = "inotify",
     .type = Type::boolean,
     .default_value = "true",
     .description = "Use inotify to notice new lines and files at once (polling remains as a fallback)."},
    {.name = "max_open_files",
     .type = Type::integer,
     .default_value = "1024",
     .description = "The most files read at once; beyond it new files wait (logged once, counted).",
     .min = "1",
     .max = "65536"},
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  const auto& paths = values.strings("paths");
  if (paths.empty()) {
    diagnostics.error(values.location_of("paths"), values.path() + ".paths", "give at least one glob pattern");
  }
  for (const auto& p : paths) {
    if (p.empty() || p.front() != '/') {
      diagnostics.error(values.location_of("paths"), values.path() + ".paths",
                        fmt::format("\"{}\" is not an absolute path (tank's working directory is not yours)", p));
    }
  }
}

const config::Section kSection{
    .path = "inputs.file",
    .summary = "Lines from files matching glob patterns, one record per line, the file's path kept as the `path` "
               "attribute. The read offset is committed in the same transaction as the records read up to it, so "
               "kill -9 loses and duplicates nothing. Rename+create, copytruncate and truncation in place are "
               "followed; files are identified by device, inode and their first bytes.",
    .options = kOptions,
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::FileTailSettings s;
  s.paths = v.strings("paths");
  s.exclude = v.strings("exclude");
  s.read_from_end = v.choice("read_from") == "end";
  s.max_line_bytes = v.size("max_line_bytes");
  s.fingerprint_bytes = v.size("fingerprint_bytes");
  s.poll_interval = v.duration("poll_interval");
  s.rotate_wait = v.duration("rotate_wait");
  s.inotify = v.boolean("inotify");
  s.max_open_files = static_cast<std::size_t>(v.integer("max_open_files"));
  return input::make_file_tail_input(s, context);
}

}  // namespace

void register_inputs_file(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "file",
                .section = &kSection,
                .summary = "lines from files, across rotations",
                .create_input = create});
}

}  // namespace tank::plugins

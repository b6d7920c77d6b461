// inputs.file: lines from files matching glob patterns, across rotations, with the read offset
// committed together with the records (see file_tail.hpp).

#include <fmt/format.h>

#include "config/bind.hpp"
#include "file_tail.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

constexpr std::string_view kReadFrom[] = {"beginning", "end"};

using S = input::FileTailSettings;

const config::Options<S> kOptions{
    plugin::format_option("\"text\""),
    config::string_list("paths", &S::paths)
        .describe("Glob patterns of the files to read, e.g. [\"/var/log/app/*.log\"]. With copytruncate "
                  "rotation, include the rotated name (\"app.log*\") so that lines written between tank's last "
                  "read and the truncation are read from the copy. Compressed files (.gz, .bz2, .xz, .zst, .lz4, "
                  ".zip, .Z) are ignored.")
        .required(),
    config::string_list("exclude", &S::exclude)
        .default_value("[]")
        .describe("Glob patterns of paths not to read, matched against the full path."),
    config::choice("read_from", kReadFrom, &S::read_from_end, {false, true})
        .default_value("beginning")
        .describe("Where to start files that exist when this input first starts and have no stored offset: "
                  "\"beginning\" or \"end\" (new lines only). Files that appear later are read from their "
                  "beginning; files with a stored offset resume there."),
    config::size("max_line_bytes", &S::max_line_bytes)
        .default_value("64KiB")
        .describe("The longest line taken as a record. A longer line is never split: it goes to the dead-letter "
                  "store with reason `line_too_long` (as much of its start as fits one commit, at most 64 KiB, is kept), and reading goes on.")
        .min("16B")
        .max("4MiB"),
    config::size("fingerprint_bytes", &S::fingerprint_bytes)
        .default_value("256B")
        .describe("How many first bytes identify a file together with its device and inode (a reused inode "
                  "with other first bytes is a new file).")
        .min("16B")
        .max("64KiB"),
    config::duration("poll_interval", &S::poll_interval)
        .default_value("1s")
        .describe("How often the patterns are matched again and the files checked, besides inotify events.")
        .min("10ms")
        .max("1h"),
    config::duration("rotate_wait", &S::rotate_wait)
        .default_value("5s")
        .describe("How long a file that was rotated away is still read after it stopped growing (the writer may "
                  "append to it until it reopens its log).")
        .min("0")
        .max("1h"),
    config::boolean("inotify", &S::inotify)
        .default_value(true)
        .describe("Use inotify to notice new lines and files at once (polling remains as a fallback)."),
    config::integer("max_open_files", &S::max_open_files)
        .default_value(1024)
        .describe("The most files read at once; beyond it new files wait (logged once, counted).")
        .min("1")
        .max("65536"),
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
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  return input::make_file_tail_input(kOptions.read(v), context);
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

// outputs.file: batches appended to files under a directory, each one written and flushed to
// stable storage (fdatasync) before it is acknowledged. For local archives, debugging and the
// embedded default configuration.
//
// Files are named <output>-<UTC time of creation>.ndjson, with .zst or .gz appended when the
// batches are compressed (file_names.hpp): each batch is one zstd frame or gzip member, and
// concatenated frames and members are what `zstdcat` and `zcat` read as one stream. A new file is
// started when the current one would pass max_file_bytes or is older than max_file_age; beyond
// max_files the oldest of this output's files are deleted (names of exactly its own form, so
// outputs may share a directory). A batch sent again after a crash (at-least-once) may appear
// twice.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "file_names.hpp"

#include "common/log.hpp"
#include "common/units.hpp"
#include "config/bind.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

namespace fs = std::filesystem;

struct FileSettings {
  fs::path directory;
  std::uint64_t max_file_bytes = 64 << 20;
  std::chrono::nanoseconds max_file_age = std::chrono::hours(1);
  std::size_t max_files = 24;
};
using S = FileSettings;

const config::Options<S> kOptions{
    config::string("directory", &S::directory)
        .describe("The directory the files go to (created if missing).")
        .required(),
    config::size("max_file_bytes", &S::max_file_bytes)
        .default_value("64MiB")
        .describe("A new file is started when a batch would make the current one larger than this.")
        .min("4KiB"),
    config::duration("max_file_age", &S::max_file_age)
        .default_value("1h")
        .describe("A new file is started for the first batch after the current one is this old.")
        .min("1s"),
    config::integer("max_files", &S::max_files)
        .default_value(24)
        .describe("The most files of this output kept in the directory; the oldest are deleted beyond it, so "
                  "the directory holds at most max_files x max_file_bytes (plus one batch). Its files are the names "
                  "of exactly its form, <name>-<UTC time>[-<n>].ndjson[.zst|.gz]: other files, those of other "
                  "outputs in the same directory too, are never deleted.")
        .min("1")
        .max("1000000"),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (v.has("max_in_flight") && v.integer("max_in_flight") > 1) {
    diagnostics.error(v.location_of("max_in_flight"), v.path() + ".max_in_flight",
                      "outputs.file writes one batch at a time to its current file: remove max_in_flight");
  }
  if (v.has("encoding") && v.choice("encoding") == "json_array") {
    diagnostics.error(v.location_of("encoding"), v.path() + ".encoding",
                      "outputs.file appends batches to a file, which is NDJSON only: remove encoding or set \"ndjson\"");
  }
}

const config::Section kSection{
    .path = "outputs.file",
    .summary = "Appends batches to NDJSON files under a directory (zstd or gzip compressed unless compression = "
               "\"none\"), each flushed to disk (fdatasync) before it is acknowledged; files rotate by size and age "
               "and the oldest are deleted beyond max_files.",
    .options = kOptions.all(),
    .common = plugin::output_common_options(),
    .repeated = true,
    .check = check,
};

class FileOutput final : public plugin::Output {
 public:
  // `compression` is an option every output has (plugin::output_common_options).
  FileOutput(const FileSettings& s, std::string_view compression, const plugin::OutputContext& context)
      : name_(context.name),
        directory_(s.directory),
        extension_(file_output::extension_of(compression)),
        max_file_bytes_(s.max_file_bytes),
        max_file_age_(s.max_file_age),
        max_files_(s.max_files),
        clock_(context.clock) {}

  ~FileOutput() override { close_file(); }

  void start() override {
    std::error_code ec;
    fs::create_directories(directory_, ec);
    if (ec) {
      throw plugin::StartError(fmt::format("cannot create the directory {}: {}; create it or choose another `directory`",
                                           directory_.string(), ec.message()));
    }
    if (::access(directory_.c_str(), W_OK) != 0) {
      throw plugin::StartError(fmt::format("cannot write to the directory {}: {}", directory_.string(),
                                           std::strerror(errno)));
    }
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    const std::int64_t now = clock_.wall_ns();
    if (fd_ >= 0 && ((size_ + batch.body.size() > max_file_bytes_ && size_ > 0) ||
                     now - opened_ns_ >= max_file_age_.count())) {
      close_file();
    }
    if (fd_ < 0) {
      if (std::string error = open_file(now); !error.empty()) return {plugin::SendStatus::retry, error, std::nullopt};
    }
    const std::uint64_t before = size_;
    const char* p = batch.body.data();
    std::size_t left = batch.body.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return failed(fmt::format("writing {} failed: {}{}", path_.string(), std::strerror(errno),
                                  errno == ENOSPC ? " (the batch is written again when there is space)" : ""),
                      before);
      }
      p += n;
      left -= static_cast<std::size_t>(n);
      size_ += static_cast<std::uint64_t>(n);
    }
    if (::fdatasync(fd_) != 0) {
      return failed(fmt::format("flushing {} to disk failed: {}", path_.string(), std::strerror(errno)), before);
    }
    return {plugin::SendStatus::delivered, {}, std::nullopt};
  }

  void stop() override { close_file(); }

 private:
  std::string open_file(std::int64_t now) {
    for (int n = 0;; ++n) {
      path_ = directory_ / file_output::file_name(name_, now, n, extension_);
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) return fmt::format("cannot create {}: {}", path_.string(), std::strerror(errno));
    // The new name must survive a crash too.
    const int dir = ::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
    size_ = 0;
    opened_ns_ = now;
    prune();
    return {};
  }

  // A failed write or flush: the part of the batch written is cut off again (the file ends with
  // the last whole batch) and the file stays open, so that the next attempt appends to it
  // instead of leaving broken files behind (which max_files would count). When that cut fails
  // too, the file is closed (a reader then sees one broken line or frame at its end) and the
  // next attempt starts a new one.
  plugin::SendResult failed(std::string detail, std::uint64_t size_before) {
    if (::ftruncate(fd_, static_cast<off_t>(size_before)) == 0) {
      size_ = size_before;
    } else {
      close_file();
    }
    return {plugin::SendStatus::retry, std::move(detail), std::nullopt};
  }

  void close_file() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Deletes the oldest files of this output beyond max_files (file_output::created_before). Its
  // files are the names of exactly its form: another output's name may start with "<name>-".
  void prune() {
    std::vector<fs::path> mine;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(directory_, ec)) {
      if (file_output::is_file_of(entry.path().filename().string(), name_, extension_)) mine.push_back(entry.path());
    }
    if (mine.size() <= max_files_) return;
    std::sort(mine.begin(), mine.end(), [&](const fs::path& a, const fs::path& b) {
      return file_output::created_before(a.filename().string(), b.filename().string(), name_);
    });
    for (std::size_t i = 0; i + max_files_ < mine.size(); ++i) {
      if (mine[i] == path_) continue;
      fs::remove(mine[i], ec);
      if (ec) log::warn("output " + name_, "cannot delete {} (max_files): {}", mine[i].string(), ec.message());
    }
  }

  std::string name_;
  fs::path directory_;
  std::string extension_;
  std::uint64_t max_file_bytes_;
  std::chrono::nanoseconds max_file_age_;
  std::size_t max_files_;
  const Clock& clock_;
  int fd_ = -1;
  fs::path path_;
  std::uint64_t size_ = 0;
  std::int64_t opened_ns_ = 0;
};

std::unique_ptr<plugin::Output> create(const config::SectionValues& v, const plugin::OutputContext& context) {
  return std::make_unique<FileOutput>(kOptions.read(v), v.choice("compression"), context);
}

}  // namespace

void register_outputs_file(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::output,
                .name = "file",
                .section = &kSection,
                .summary = "appends batches to NDJSON files, fsynced before they are acknowledged",
                .create_output = create});
}

}  // namespace tank::plugins

// outputs.file's names: the name of each file, and which names an output owns (its max_files
// deletes those and no others).

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "../../plugins/outputs_file/file_names.hpp"

using namespace tank::plugins::file_output;

namespace {

// 2026-11-21T23:19:00.123Z
constexpr std::int64_t kWhen = 1'795'303'140'123'000'000;

}  // namespace

TEST_CASE("outputs.file names: output, UTC time of creation with milliseconds, sequence, extension",
          "[outputs][file]") {
  CHECK(file_name("archive", kWhen, 0, extension_of("zstd")) == "archive-20261121T231900.123Z.ndjson.zst");
  CHECK(file_name("archive", kWhen, 2, extension_of("gzip")) == "archive-20261121T231900.123Z-2.ndjson.gz");
  CHECK(file_name("archive", 0, 0, extension_of("none")) == "archive-19700101T000000.000Z.ndjson");
}

TEST_CASE("outputs.file names: an output owns exactly the names it writes", "[outputs][file]") {
  const std::string_view zst = extension_of("zstd");
  for (int sequence : {0, 1, 9, 10, 123}) {
    CHECK(is_file_of(file_name("arc", kWhen, sequence, zst), "arc", zst));
  }
  // Another output's name that starts with "arc-" (issue 18: arc's max_files deleted them).
  CHECK_FALSE(is_file_of(file_name("arc-1", kWhen, 0, zst), "arc", zst));
  CHECK_FALSE(is_file_of(file_name("arc-1", kWhen, 3, zst), "arc", zst));
  CHECK_FALSE(is_file_of(file_name("arc-x", kWhen, 0, zst), "arc", zst));
  CHECK_FALSE(is_file_of(file_name("arc", kWhen, 0, zst), "arc-1", zst));
  // Its own name with another extension, or a name that is not its pattern at all.
  CHECK_FALSE(is_file_of(file_name("arc", kWhen, 0, ".ndjson"), "arc", zst));
  CHECK_FALSE(is_file_of(file_name("arc", kWhen, 0, zst), "arc", ".ndjson"));
  for (std::string_view name : {
           "arc-.ndjson.zst",
           "arc-notes.ndjson.zst",
           "arc-20261121T231900.123Z.ndjson.zst.tmp",
           "arc-20261121T231900.123Z-0.ndjson.zst",   // sequences start at 1
           "arc-20261121T231900.123Z-01.ndjson.zst",  // and have no leading zero
           "arc-20261121T231900.123Z-.ndjson.zst",
           "arc-20261121T231900.123Z-1a.ndjson.zst",
           "arc-20261121T2319.123Z.ndjson.zst",
           "arc-20261121 231900.123Z.ndjson.zst",
           "arc-20261121T231900Z.ndjson.zst",
           "xarc-20261121T231900.123Z.ndjson.zst",
           "arc20261121T231900.123Z.ndjson.zst",
       }) {
    INFO(name);
    CHECK_FALSE(is_file_of(name, "arc", zst));
  }
}

TEST_CASE("outputs.file names: outputs with different names never own the same name, however they are spelled",
          "[outputs][file]") {
  // Names of one output that spell out what follows another's name: a stamp, a sequence, an
  // extension. Each owns its own names only.
  const std::string stamp = "20261121T231900.123Z";
  const std::vector<std::string> outputs = {"arc",
                                            "arc-1",
                                            "arc-" + stamp,
                                            "arc-" + stamp + "-1",
                                            "arc-" + stamp + ".ndjson",
                                            "arc-" + stamp + "-1.ndjson",
                                            "arc-2026",
                                            "a",
                                            "a-r",
                                            "Z",
                                            "arc-Z"};
  for (std::string_view compression : {"none", "zstd", "gzip"}) {
    const std::string_view ext = extension_of(compression);
    for (const auto& writer : outputs) {
      for (int sequence : {0, 1, 12}) {
        const std::string name = file_name(writer, kWhen, sequence, ext);
        for (const auto& other : outputs) {
          for (std::string_view other_compression : {"none", "zstd", "gzip"}) {
            INFO(name << " and output " << other << " (" << other_compression << ")");
            const bool same = other == writer && other_compression == compression;
            CHECK(is_file_of(name, other, extension_of(other_compression)) == same);
          }
        }
      }
    }
  }
}

TEST_CASE("outputs.file names: the oldest file is the one created first, by time then sequence as a number",
          "[outputs][file]") {
  using tank::plugins::file_output::created_before;
  using tank::plugins::file_output::file_name;
  const std::int64_t t = 1'795'000'000'123'000'000;
  std::vector<std::string> in_order = {file_name("arc", t, 0, ".ndjson"),      file_name("arc", t, 1, ".ndjson"),
                                       file_name("arc", t, 2, ".ndjson"),      file_name("arc", t, 10, ".ndjson"),
                                       file_name("arc", t + 1'000'000, 0, ".ndjson"),
                                       file_name("arc", t + 1'000'000'000, 3, ".ndjson")};
  for (std::size_t i = 0; i < in_order.size(); ++i) {
    for (std::size_t j = 0; j < in_order.size(); ++j) {
      INFO(in_order[i] << " vs " << in_order[j]);
      CHECK(created_before(in_order[i], in_order[j], "arc") == (i < j));
    }
  }
  std::vector<std::string> shuffled = {in_order[3], in_order[5], in_order[0], in_order[2], in_order[4], in_order[1]};
  std::sort(shuffled.begin(), shuffled.end(),
            [](const std::string& a, const std::string& b) { return created_before(a, b, "arc"); });
  CHECK(shuffled == in_order);
}

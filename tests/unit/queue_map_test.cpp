// The LMDB map in the address space (issue 17, point 6): its size is computed once
// (queue::map_bytes_for), and a map that a 32-bit tank cannot map is refused by `tank check` and
// at the start, naming the largest max_disk_bytes that fits. The 32-bit limit is a parameter of
// the check, so these tests apply it on 64-bit hosts too.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstddef>
#include <limits>
#include <optional>

#include "common/units.hpp"
#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "plugin/registry.hpp"
#include "queue/queue_config.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::kMapLimit32Bit;
using queue::Queue;

namespace {

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kPage = 4096;

config::LoadOptions no_env() {
  config::LoadOptions o;
  o.environment = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  return o;
}

// The [queue] and [dead_letter] sections of `text`, loaded with their own option checks but
// without the whole schema's map check, which the tests apply by hand with the limit they test.
config::Document queue_document(std::string_view text) {
  config::Schema schema;
  schema.sections = {&queue::config_section(), &queue::dead_letter_section()};
  auto r = config::load_text(text, "q.toml", schema, no_env());
  INFO((r.diagnostics.all().empty() ? std::string() : r.diagnostics.all().front().to_string()));
  REQUIRE(r.document);
  return *r.document;
}

std::vector<config::Diagnostic> map_check(std::string_view text, std::uint64_t limit) {
  config::Diagnostics diagnostics;
  queue::check_map_size(queue_document(text), diagnostics, limit, kPage);
  return diagnostics.sorted();
}

}  // namespace

TEST_CASE("the map is sized by one function, the one the queue opens with", "[queue][map]") {
  // max_disk_bytes + margin + dead_letter.max_bytes + 1/128 of it, in whole pages.
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  CHECK(queue::map_bytes_for(1ULL << 30, 64 * kMiB, kPage) ==
        (1ULL << 30) + Queue::margin_for(1ULL << 30) + 64 * kMiB + 512 * 1024);
  CHECK(queue::map_bytes_for(1ULL << 30, 64 * kMiB, kPage) == (1024 + 25 + 64) * kMiB + 512 * 1024);
  CHECK(queue::map_bytes_for(1000, 0, kPage) % kPage == 0);
  CHECK(queue::map_bytes_for(1000, 0, kPage) >= 1000 + Queue::margin_for(1000));
  for (std::uint64_t max_disk : {std::uint64_t{256} << 10, std::uint64_t{1} << 20, std::uint64_t{3000000}}) {
    INFO(max_disk);
    TempDir dir;
    ManualClock clock;
    auto opts = small_queue(dir / "q", max_disk);
    opts.dead_letter_max_bytes = 100000;  // not a multiple of 128 or of a page
    auto q = Queue::open(opts, clock, nullptr);
    CHECK(q->file_limit_bytes() == queue::map_bytes_for(max_disk, opts.dead_letter_max_bytes, page));
  }
}

TEST_CASE("sizing the map never wraps", "[queue][map]") {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  CHECK(queue::map_bytes_for(kMax, 0, kPage) == kMax);
  CHECK(queue::map_bytes_for(0, kMax, kPage) == kMax);
  CHECK(queue::map_bytes_for(kMax - 4096, 4096, kPage) == kMax);
  // The options' own bounds stay far from that: 1 TiB and 64 GiB.
  CHECK(queue::map_bytes_for(1ULL << 40, 64ULL << 30, kPage) < (1ULL << 41));
  // Within the platform's limit a map converts to size_t as it is (4 GiB would wrap to less
  // than 128 MiB where size_t has 32 bits).
  CHECK(queue::platform_map_limit() <= std::numeric_limits<std::size_t>::max());
  if (sizeof(std::size_t) == 4) {
    CHECK(queue::platform_map_limit() == kMapLimit32Bit);
  } else {
    CHECK(queue::platform_map_limit() >= queue::map_bytes_for(1ULL << 40, 64ULL << 30, kPage));
  }
}

TEST_CASE("the default bounds fit a 32-bit tank's map", "[queue][map]") {
  // The embedded default configuration must start on armhf: 1 GiB + 64 MiB of dead letters.
  CHECK(queue::map_bytes_for(1ULL << 30, 64 * kMiB, kPage) <= kMapLimit32Bit);
  CHECK(queue::map_too_large(1ULL << 30, 64 * kMiB, kPage, kMapLimit32Bit).empty());
  CHECK(map_check("", kMapLimit32Bit).empty());
}

TEST_CASE("the largest max_disk_bytes that fits is found with the queue's own formula", "[queue][map]") {
  for (std::uint64_t dead_letter : std::initializer_list<std::uint64_t>{64 * kMiB, 64 * 1024, 1ULL << 30, 100000}) {
    INFO(dead_letter);
    const std::uint64_t largest = queue::largest_max_disk_bytes(dead_letter, kPage, kMapLimit32Bit);
    REQUIRE(largest > 0);
    CHECK(largest % kMiB == 0);
    CHECK(queue::map_bytes_for(largest, dead_letter, kPage) <= kMapLimit32Bit);
    CHECK(queue::map_bytes_for(largest + kMiB, dead_letter, kPage) > kMapLimit32Bit);
    CHECK(queue::map_too_large(largest, dead_letter, kPage, kMapLimit32Bit).empty());
    CHECK_FALSE(queue::map_too_large(largest + kMiB, dead_letter, kPage, kMapLimit32Bit).empty());
  }
  // The reference (docs/configuration.md) states the largest for the default dead-letter bound.
  const std::string stated = units::format_size(queue::largest_max_disk_bytes(64 * kMiB, kPage, kMapLimit32Bit));
  bool found = false;
  for (const config::Option& o : queue::config_section().options) {
    if (o.name != "max_disk_bytes") continue;
    found = true;
    INFO(o.description);
    CHECK(o.description.find(stated) != std::string_view::npos);
    CHECK(o.description.find(units::format_size(kMapLimit32Bit)) != std::string_view::npos);
  }
  CHECK(found);
  // A dead-letter store that leaves no room at all.
  CHECK(queue::largest_max_disk_bytes(kMapLimit32Bit, kPage, kMapLimit32Bit) == 0);
}

TEST_CASE("tank check refuses a map a 32-bit tank cannot map, at the option, naming the largest that fits",
          "[queue][map][config]") {
  const std::string largest = units::format_size(queue::largest_max_disk_bytes(64 * kMiB, kPage, kMapLimit32Bit));

  // max_disk_bytes set in the file: the error is there.
  auto d = map_check("[queue]\nmax_disk_bytes = \"4GiB\"\n", kMapLimit32Bit);
  REQUIRE(d.size() == 1);
  CHECK(d[0].severity == config::Diagnostic::Severity::error);
  CHECK(d[0].to_string().starts_with("q.toml:2:18: queue.max_disk_bytes: queue.max_disk_bytes = 4GiB and "
                                     "dead_letter.max_bytes = 64MiB need an LMDB map of 4.1 GiB"));
  CHECK(d[0].message.find("more than the " + units::format_size(kMapLimit32Bit) + " a 32-bit tank can map") !=
        std::string::npos);
  CHECK(d[0].message.find("the largest max_disk_bytes this platform takes is " + largest + ": set max_disk_bytes = \"" +
                          largest + "\" or less") != std::string::npos);
  CHECK(d[0].message.find("64-bit build (arm64)") != std::string::npos);

  // Just past the largest, and the largest itself.
  const std::uint64_t at = queue::largest_max_disk_bytes(64 * kMiB, kPage, kMapLimit32Bit);
  CHECK(map_check("[queue]\nmax_disk_bytes = \"" + units::format_size(at + kMiB) + "\"\n", kMapLimit32Bit).size() == 1);
  CHECK(map_check("[queue]\nmax_disk_bytes = \"" + units::format_size(at) + "\"\n", kMapLimit32Bit).empty());

  // The largest depends on the dead-letter bound the file sets.
  const std::string with_1g =
      units::format_size(queue::largest_max_disk_bytes(1ULL << 30, kPage, kMapLimit32Bit));
  d = map_check("[queue]\nmax_disk_bytes = \"1GiB\"\n[dead_letter]\nmax_bytes = \"1GiB\"\n", kMapLimit32Bit);
  REQUIRE(d.size() == 1);
  CHECK(d[0].to_string().starts_with("q.toml:2:18: queue.max_disk_bytes: "));
  CHECK(d[0].message.find("largest max_disk_bytes this platform takes is " + with_1g + ":") != std::string::npos);

  // Only the dead-letter bound set in the file: the error is at that one.
  d = map_check("[dead_letter]\nmax_bytes = \"1GiB\"\n", kMapLimit32Bit);
  REQUIRE(d.size() == 1);
  CHECK(d[0].to_string().starts_with("q.toml:2:13: dead_letter.max_bytes: queue.max_disk_bytes = 1GiB and "
                                     "dead_letter.max_bytes = 1GiB need an LMDB map"));

  // A dead-letter store that alone is too large.
  d = map_check("[queue]\nmax_disk_bytes = \"1MiB\"\n[dead_letter]\nmax_bytes = \"2GiB\"\n", kMapLimit32Bit);
  REQUIRE(d.size() == 1);
  CHECK(d[0].message.find("the dead-letter store alone takes nearly all of it: lower dead_letter.max_bytes") !=
        std::string::npos);

  // Without the 32-bit limit (a 64-bit tank) the options' largest values are fine.
  CHECK(map_check("[queue]\nmax_disk_bytes = \"1TiB\"\n[dead_letter]\nmax_bytes = \"64GiB\"\n",
                  std::numeric_limits<std::uint64_t>::max())
            .empty());
}

TEST_CASE("the whole configuration's check applies this platform's limit", "[queue][map][config]") {
  plugin::Registry plugins;
  plugin::register_builtin(plugins);
  auto r = config::load_text("[queue]\nmax_disk_bytes = \"4GiB\"\n", "t.toml", engine::build_schema(plugins), no_env());
  if (sizeof(std::size_t) == 4) {
    // tank check and the start (both load through this schema) refuse it.
    CHECK_FALSE(r.document);
    REQUIRE(r.diagnostics.error_count() == 1);
    CHECK(r.diagnostics.all()[0].to_string().starts_with("t.toml:2:18: queue.max_disk_bytes: "));
  } else {
    CHECK(r.document);
    CHECK(r.diagnostics.all().empty());
  }
}

TEST_CASE("a queue whose map this platform cannot map is refused at open, never wrapped", "[queue][map]") {
  if (sizeof(std::size_t) != 4) {
    SUCCEED("every map of the options' bounds fits a 64-bit size_t and address space");
    return;
  }
  // Callers that bypass tank check (tests, `tank dlq`): 4 GiB would become a map of about 113 MiB.
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 4ULL << 30);
  opts.dead_letter_max_bytes = 64 * kMiB;
  try {
    auto q = Queue::open(opts, clock, nullptr);
    FAIL("opened with a map of " << q->file_limit_bytes() << " bytes");
  } catch (const queue::OpenError& e) {
    CHECK(std::string(e.what()).find("a 32-bit tank can map") != std::string::npos);
  }
}

// Log lines: the three formats, the journal detected from JOURNAL_STREAM only when stderr is the
// journal, and a repeated condition logged once per episode with its count.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <regex>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "support/helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// Captures every line while it lives; restores stderr and the level after.
struct Captured {
  explicit Captured(log::Format format, log::Level level = log::Level::debug) {
    log::configure({level, format});
    log::set_sink([this](std::string_view line) {
      std::lock_guard lock(mutex);
      lines.emplace_back(line);
    });
  }
  ~Captured() {
    log::set_sink(nullptr);
    log::configure({log::Level::info, log::Format::text});
  }
  std::vector<std::string> all() {
    std::lock_guard lock(mutex);
    return lines;
  }
  std::mutex mutex;
  std::vector<std::string> lines;
};

}  // namespace

TEST_CASE("log: journal lines carry the syslog priority for journald", "[log]") {
  Captured c(log::Format::journal);
  log::debug("queue", "d");
  log::info("queue", "opened {}", "/var/lib/tank/queue");
  log::warn("output cloud", "w");
  log::error("agent", "e");
  const std::vector<std::string> expected{"<7>queue: d", "<6>queue: opened /var/lib/tank/queue",
                                          "<4>output cloud: w", "<3>agent: e"};
  CHECK(c.all() == expected);
}

TEST_CASE("log: text lines have a UTC time stamp and the level", "[log]") {
  Captured c(log::Format::text, log::Level::info);
  log::debug("queue", "not written below the level");
  log::warn("queue", "full");
  const auto lines = c.all();
  REQUIRE(lines.size() == 1);
  INFO(lines[0]);
  CHECK(std::regex_match(lines[0], std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warn  queue: full)")));
}

TEST_CASE("log: json lines are one object each and escape what they carry", "[log]") {
  Captured c(log::Format::json);
  log::error("input plant", "a \"quoted\" name\nand a new line");
  const auto lines = c.all();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find('\n') == std::string::npos);
  const auto v = boost::json::parse(lines[0]).as_object();
  CHECK(v.at("level").as_string() == "error");
  CHECK(v.at("component").as_string() == "input plant");
  CHECK(v.at("msg").as_string() == "a \"quoted\" name\nand a new line");
  CHECK(v.at("ts").as_string().size() == 24);
}

TEST_CASE("log: JOURNAL_STREAM counts only when it names the file stderr is", "[log]") {
  TempDir dir;
  const auto path = dir / "stderr";
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  const std::string same = fmt::format("{}:{}", st.st_dev, st.st_ino);
  CHECK(log::is_journal_stream(same.c_str(), fd));
  const std::string other = fmt::format("{}:{}", st.st_dev, st.st_ino + 1);
  CHECK_FALSE(log::is_journal_stream(other.c_str(), fd));  // stderr redirected elsewhere
  CHECK_FALSE(log::is_journal_stream(nullptr, fd));
  CHECK_FALSE(log::is_journal_stream("", fd));
  CHECK_FALSE(log::is_journal_stream("12", fd));
  CHECK_FALSE(log::is_journal_stream((same + "x").c_str(), fd));
  ::close(fd);
}

TEST_CASE("log: a repeated condition is logged once per episode with its count", "[log]") {
  Captured c(log::Format::journal);
  log::Episode refused("input plant", log::Level::warn);
  CHECK(refused.occur("the queue is full: records refused"));
  for (int i = 0; i < 999; ++i) CHECK_FALSE(refused.occur("the queue is full: records refused"));
  CHECK(refused.active());
  CHECK(refused.end("the queue takes records again"));
  CHECK_FALSE(refused.end("again"));
  CHECK(refused.occur("the queue is full: records refused"));
  CHECK(refused.end("the queue takes records again"));
  const std::vector<std::string> expected{
      "<4>input plant: the queue is full: records refused",
      "<6>input plant: the queue takes records again (1000 occurrences in this episode)",
      "<4>input plant: the queue is full: records refused",
      "<6>input plant: the queue takes records again (1 occurrence in this episode)"};
  CHECK(c.all() == expected);
}

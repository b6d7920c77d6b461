#include <catch2/catch.hpp>

#include "common/strings.hpp"
#include "common/units.hpp"

using namespace std::chrono_literals;
using tank::units::parse_duration;
using tank::units::parse_size;

TEST_CASE("sizes parse exactly with decimal and binary units", "[units]") {
  CHECK(*parse_size("0B").value == 0);
  CHECK(*parse_size("100B").value == 100);
  CHECK(*parse_size("1kB").value == 1000);
  CHECK(*parse_size("1KB").value == 1000);
  CHECK(*parse_size("64MiB").value == 64ULL << 20);
  CHECK(*parse_size("1GiB").value == 1ULL << 30);
  CHECK(*parse_size("1.5GiB").value == 3ULL << 29);
  CHECK(*parse_size("2TB").value == 2'000'000'000'000ULL);
  CHECK(*parse_size("0.5KiB").value == 512);
}

TEST_CASE("sizes refuse what is not exactly one number of bytes", "[units]") {
  for (const char* bad : {"", "64", "64 MiB", "64mib", "64M", "-1MiB", "1.3B", "MiB", "1.MiB", "1..5MiB", "1e3B",
                          "99999999999TiB", "18446744073709551616B", "15EiB"}) {
    INFO(bad);
    auto r = parse_size(bad);
    CHECK_FALSE(r.value.has_value());
    CHECK_FALSE(r.error.empty());
  }
  CHECK(parse_size("64mib").error.find("did you mean \"64MiB\"") != std::string::npos);
  CHECK(parse_size("64").error.find("needs a unit") != std::string::npos);
  CHECK(parse_size("1.3B").error.find("whole number of bytes") != std::string::npos);
  CHECK(parse_size("18446744073709551616B").error.find("too large") != std::string::npos);
  CHECK(*parse_size("18446744073709551615B").value == UINT64_MAX);
}

TEST_CASE("durations parse Go-style sequences", "[units]") {
  CHECK(*parse_duration("0").value == 0ns);
  CHECK(*parse_duration("200ms").value == 200ms);
  CHECK(*parse_duration("10s").value == 10s);
  CHECK(*parse_duration("1h30m").value == 90min);
  CHECK(*parse_duration("1.5s").value == 1500ms);
  CHECK(*parse_duration("500us").value == 500us);
  CHECK(*parse_duration("500\xC2\xB5s").value == 500us);
  CHECK(*parse_duration("7d").value == std::chrono::hours(168));
  CHECK(*parse_duration("100ns").value == 100ns);
}

TEST_CASE("durations refuse missing units, unknown units, negatives and overflow", "[units]") {
  for (const char* bad : {"", "200", "-1s", "10 s", "10sec", "1y", "s", "1.s", "300000d"}) {
    INFO(bad);
    auto r = parse_duration(bad);
    CHECK_FALSE(r.value.has_value());
    CHECK_FALSE(r.error.empty());
  }
  CHECK(parse_duration("200").error.find("needs a unit") != std::string::npos);
  CHECK(parse_duration("10sec").error.find("unknown unit \"sec\"") != std::string::npos);
  CHECK(parse_duration("300000d").error.find("too long") != std::string::npos);
}

TEST_CASE("sizes and durations format back to their shortest exact spelling", "[units]") {
  using tank::units::format_duration;
  using tank::units::format_size;
  CHECK(format_size(64ULL << 20) == "64MiB");
  CHECK(format_size(1ULL << 30) == "1GiB");
  CHECK(format_size(1500) == "1500B");
  CHECK(format_size(0) == "0B");
  CHECK(format_duration(200ms) == "200ms");
  CHECK(format_duration(90min) == "1h30m");
  CHECK(format_duration(0s) == "0s");
  CHECK(format_duration(std::chrono::hours(48)) == "2d");
  for (const char* text : {"64MiB", "1GiB", "3KiB", "12345B"}) CHECK(format_size(*parse_size(text).value) == text);
  for (const char* text : {"200ms", "1h30m", "45s", "7d", "250us"}) {
    CHECK(format_duration(*parse_duration(text).value) == text);
  }
}

TEST_CASE("did-you-mean suggests close words only", "[strings]") {
  using tank::strings::closest;
  std::vector<std::string> options{"fsync", "fsync_interval", "overflow", "max_disk_bytes", "mode"};
  CHECK(closest("fsnyc", options) == "fsync");
  CHECK(closest("Fsync", options) == "fsync");
  CHECK(closest("max_disk_byte", options) == "max_disk_bytes");
  CHECK(closest("overflw", options) == "overflow");
  CHECK_FALSE(closest("colour", options).has_value());
  CHECK_FALSE(closest("fsync", options).has_value());  // exact: nothing to suggest
  std::vector<std::string> sections{"agent", "queue", "metrics"};
  CHECK(closest("qeueu", sections) == "queue");
  CHECK(tank::strings::edit_distance("kitten", "sitting") == 3);
  CHECK(tank::strings::printable(std::string("a\x01\\b", 4), 10) == "a\\x01\\\\b");
  CHECK(tank::strings::printable("abcdef", 3) == "abc...");
}

TEST_CASE("URLs are shown without their userinfo", "[strings][secrets]") {
  using tank::strings::redact_url_userinfo;
  CHECK(redact_url_userinfo("http://alice:S3cr3t@proxy.local:31x8") == "http://***@proxy.local:31x8");
  CHECK(redact_url_userinfo("https://token@example.com/v1/in?x=1") == "https://***@example.com/v1/in?x=1");
  CHECK(redact_url_userinfo("mqtts://alice:pw@[::1]:8883") == "mqtts://***@[::1]:8883");
  CHECK(redact_url_userinfo("http://@host") == "http://***@host");
  // Without a scheme (HTTPS_PROXY=alice:pw@proxy:3128), the userinfo starts the text.
  CHECK(redact_url_userinfo("alice:S3cr3t@proxy:3128") == "***@proxy:3128");
  // A password with an unescaped '@', '/', '#', '?' or "://": up to the last '@', all of it goes.
  CHECK(redact_url_userinfo("http://alice:p@ss@proxy:3128") == "http://***@proxy:3128");
  CHECK(redact_url_userinfo("http://alice:pa/ss#w?d@proxy:3128/x") == "http://***@proxy:3128/x");
  CHECK(redact_url_userinfo("alice:a://b@proxy:3128") == "***@proxy:3128");
  // ... and so does a path's '@' (shown cut short rather than a secret shown).
  CHECK(redact_url_userinfo("https://example.com/users/@me") == "https://***@me");
  // Nothing to hide: as it is.
  CHECK(redact_url_userinfo("http://proxy.local:3128/path") == "http://proxy.local:3128/path");
  CHECK(redact_url_userinfo("") == "");
  CHECK(redact_url_userinfo("not a url") == "not a url");
}

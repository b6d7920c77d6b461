// Replays the fuzz corpus (fuzz/corpus/<target>/) through each fuzz target's function, in the
// normal and the sanitizer builds: every seed, and every input that once crashed a target, must
// go through without a crash or a violated property (fuzz/README.md).

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../../fuzz/targets.hpp"

namespace {

using Target = int (*)(const std::uint8_t*, std::size_t);

void replay(const char* name, Target target) {
  const std::filesystem::path dir = std::filesystem::path(TANK_SOURCE_DIR) / "fuzz" / "corpus" / name;
  REQUIRE(std::filesystem::is_directory(dir));
  std::vector<std::filesystem::path> inputs;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) inputs.push_back(entry.path());
  }
  std::sort(inputs.begin(), inputs.end());
  REQUIRE(inputs.size() >= 5);
  for (const auto& path : inputs) {
    INFO(path.string());
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    // A copy of exactly the input's size, so that ASan sees any read past its end.
    const std::vector<std::uint8_t> data(bytes.begin(), bytes.end());
    const int result = target(data.data(), data.size());
    CHECK(result >= -1);
  }
}

}  // namespace

TEST_CASE("the json fuzz corpus replays", "[fuzz]") { replay("json", tank::fuzz::json_target); }
TEST_CASE("the line_framer fuzz corpus replays", "[fuzz]") { replay("line_framer", tank::fuzz::line_framer_target); }
TEST_CASE("the http_ingest fuzz corpus replays", "[fuzz]") { replay("http_ingest", tank::fuzz::http_ingest_target); }
TEST_CASE("the http_response fuzz corpus replays", "[fuzz]") {
  replay("http_response", tank::fuzz::http_response_target);
}
TEST_CASE("the config fuzz corpus replays", "[fuzz]") { replay("config", tank::fuzz::config_target); }
TEST_CASE("the dead_letter fuzz corpus replays", "[fuzz]") { replay("dead_letter", tank::fuzz::dead_letter_target); }
TEST_CASE("the sparkplug fuzz corpus replays", "[fuzz]") { replay("sparkplug", tank::fuzz::sparkplug_target); }
#ifdef TANK_WITH_PROCESSORS_LUA
TEST_CASE("the lua_record fuzz corpus replays", "[fuzz]") { replay("lua_record", tank::fuzz::lua_record_target); }
#endif

// data_dir/agent-id: the id chosen at the first start stays when the host is renamed; agent.id
// wins and a change is a warning; a damaged file is a warning, never a failure.

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "engine/agent_identity.hpp"
#include "support/helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::function<std::string()> host(std::string name) {
  return [name] { return name; };
}

bool mentions(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& l : lines) {
    if (l.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("agent id: the host name at the first start, kept when the host is renamed", "[agent][identity]") {
  TempDir dir;
  auto first = engine::resolve_agent_identity(dir.path(), "", host("gw-0042"));
  CHECK(first.id == "gw-0042");
  CHECK(first.warnings.empty());
  CHECK(mentions(first.notes, "agent id \"gw-0042\" (the host name) stored in"));
  CHECK(read_file(dir / "agent-id") == "gw-0042\n");

  // The host is renamed: the stored id stays, and the log says where it came from.
  auto renamed = engine::resolve_agent_identity(dir.path(), "", host("plant-7.example"));
  CHECK(renamed.id == "gw-0042");
  CHECK(renamed.warnings.empty());
  CHECK(mentions(renamed.notes, "not the host name \"plant-7.example\""));
  CHECK(read_file(dir / "agent-id") == "gw-0042\n");

  // Same host again: nothing to say.
  auto again = engine::resolve_agent_identity(dir.path(), "", host("gw-0042"));
  CHECK(again.id == "gw-0042");
  CHECK(again.warnings.empty());
  CHECK(again.notes.empty());
}

TEST_CASE("agent id: agent.id wins over the stored id, the change is a warning and is stored", "[agent][identity]") {
  TempDir dir;
  auto first = engine::resolve_agent_identity(dir.path(), "", host("old-host"));
  REQUIRE(first.id == "old-host");

  auto set = engine::resolve_agent_identity(dir.path(), "gw-7", host("old-host"));
  CHECK(set.id == "gw-7");
  REQUIRE(set.warnings.size() == 1);
  CHECK(set.warnings[0].starts_with(
      "agent.id changed from \"old-host\" to \"gw-7\"; idempotency keys of batches sent before now differ"));
  CHECK(read_file(dir / "agent-id") == "gw-7\n");

  // The same agent.id again: no warning. agent.id removed later: the stored one stays.
  auto same = engine::resolve_agent_identity(dir.path(), "gw-7", host("old-host"));
  CHECK(same.id == "gw-7");
  CHECK(same.warnings.empty());
  CHECK(same.notes.empty());
  auto removed = engine::resolve_agent_identity(dir.path(), "", host("old-host"));
  CHECK(removed.id == "gw-7");
  CHECK(removed.warnings.empty());

  // agent.id at the first start is stored too, with no warning.
  TempDir fresh;
  auto configured = engine::resolve_agent_identity(fresh.path(), "gw-8", host("h"));
  CHECK(configured.id == "gw-8");
  CHECK(configured.warnings.empty());
  CHECK(mentions(configured.notes, "agent id \"gw-8\" (agent.id) stored in"));
  CHECK(read_file(fresh / "agent-id") == "gw-8\n");
}

TEST_CASE("agent id: a stored id written by hand may have spaces and newlines around it", "[agent][identity]") {
  TempDir dir;
  write_file(dir / "agent-id", "  gw-0042 \r\n\n");
  auto r = engine::resolve_agent_identity(dir.path(), "", host("gw-0042"));
  CHECK(r.id == "gw-0042");
  CHECK(r.warnings.empty());
  // It holds the id: left as it is.
  CHECK(read_file(dir / "agent-id") == "  gw-0042 \r\n\n");
}

TEST_CASE("agent id: a damaged or unreadable file is a warning, the host name or agent.id replaces it",
          "[agent][identity]") {
  TempDir dir;
  SECTION("not an id") {
    write_file(dir / "agent-id", std::string("gw 42\x01\n", 7));
    auto r = engine::resolve_agent_identity(dir.path(), "", host("new-host"));
    CHECK(r.id == "new-host");
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("does not hold an agent id (it holds \"gw 42??\"; expected 1 to 64 letters") !=
          std::string::npos);
    CHECK(r.warnings[0].find("using the host name \"new-host\" as the agent id and storing it there") !=
          std::string::npos);
    CHECK(read_file(dir / "agent-id") == "new-host\n");
  }
  SECTION("empty") {
    write_file(dir / "agent-id", "");
    auto r = engine::resolve_agent_identity(dir.path(), "gw-9", host("new-host"));
    CHECK(r.id == "gw-9");
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("does not hold an agent id (it holds \"\"") != std::string::npos);
    CHECK(r.warnings[0].find("using agent.id \"gw-9\"") != std::string::npos);
    CHECK(read_file(dir / "agent-id") == "gw-9\n");
  }
  SECTION("too large") {
    write_file(dir / "agent-id", std::string(10000, 'a'));
    auto r = engine::resolve_agent_identity(dir.path(), "", host("new-host"));
    CHECK(r.id == "new-host");
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("has more than 4096 bytes") != std::string::npos);
  }
  SECTION("a directory in its place, which cannot be replaced") {
    std::filesystem::create_directory(dir / "agent-id");
    write_file(dir / "agent-id" / "x", "x");
    auto r = engine::resolve_agent_identity(dir.path(), "", host("new-host"));
    CHECK(r.id == "new-host");
    REQUIRE(r.warnings.size() == 2);
    CHECK(r.warnings[0].find("cannot read") != std::string::npos);
    CHECK(r.warnings[1].find("cannot store the agent id: ") != std::string::npos);
    CHECK(r.warnings[1].find("\"new-host\" is used now, but the next start chooses the id again") !=
          std::string::npos);
  }
}

TEST_CASE("agent id: a host name that is not an id is made one", "[agent][identity]") {
  CHECK(engine::id_from_host_name("gw-0042.plant_a") == "gw-0042.plant_a");
  CHECK(engine::id_from_host_name("gw 42/ü") == "gw-42---");  // ü is two bytes
  CHECK(engine::id_from_host_name(std::string(100, 'h')) == std::string(64, 'h'));
  CHECK(engine::id_from_host_name("") == "tank");
  TempDir dir;
  CHECK(engine::resolve_agent_identity(dir.path(), "", host("")).id == "tank");
  CHECK(read_file(dir / "agent-id") == "tank\n");
}

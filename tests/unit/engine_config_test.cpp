#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "common/units.hpp"
#include "config/loader.hpp"
#include "config/reference.hpp"
#include "engine/agent_config.hpp"
#include "engine/run_state.hpp"
#include "net/listen_address.hpp"
#include "queue/queue_config.hpp"
#include "support/helpers.hpp"

using namespace tank;

namespace {

config::Schema real_schema() {
  plugin::Registry plugins;
  plugin::register_builtin(plugins);
  return engine::build_schema(plugins);
}

config::LoadOptions no_env() {
  config::LoadOptions o;
  o.environment = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  return o;
}

}  // namespace

TEST_CASE("the embedded default configuration is valid and silent", "[config][default]") {
  auto r = engine::load_configuration("", real_schema(), no_env());
  INFO((r.diagnostics.all().empty() ? std::string() : r.diagnostics.all().front().to_string()));
  REQUIRE(r.document);
  CHECK(r.diagnostics.all().empty());
  auto agent = engine::agent_settings(*r.document);
  CHECK(agent.data_dir == "/var/lib/tank");
  CHECK(agent.configured_id.empty());  // data_dir/agent-id or the host name, at start
  auto metrics = engine::metrics_settings(*r.document);
  CHECK(metrics.enabled);
  CHECK(metrics.listen.host == "127.0.0.1");
  CHECK(metrics.listen.port == 9464);
  auto q = queue::options_from(*r.document, "/x/queue");
  CHECK(q.mode == queue::Mode::disk);
  CHECK(q.max_disk_bytes == 1ULL << 30);
  CHECK(q.fsync == queue::Fsync::interval);
  CHECK(q.overflow == queue::Overflow::block);
  CHECK(q.dead_letter_max_bytes == 64ULL << 20);
  // A complete local pipeline: HTTP ingest on loopback, a bounded file archive in the state dir.
  const auto& inputs = r.document->instances("inputs.http");
  REQUIRE(inputs.size() == 1);
  CHECK(inputs[0].string("listen") == "127.0.0.1:9880");
  const auto& outputs = r.document->instances("outputs.file");
  REQUIRE(outputs.size() == 1);
  CHECK(outputs[0].string("directory") == "/var/lib/tank/archive");
  CHECK(outputs[0].size("max_file_bytes") * static_cast<std::uint64_t>(outputs[0].integer("max_files")) <= 128ULL << 20);
}

TEST_CASE("systemd's STATE_DIRECTORY moves the default data_dir", "[config][default]") {
  config::LoadOptions o;
  o.environment = [](std::string_view name) -> std::optional<std::string> {
    if (name == "STATE_DIRECTORY") return "/var/lib/private/tank";
    return std::nullopt;
  };
  auto r = engine::load_configuration("", real_schema(), o);
  REQUIRE(r.document);
  CHECK(engine::agent_settings(*r.document).data_dir == "/var/lib/private/tank");
}

TEST_CASE("every option's default and bounds parse under its own type", "[config][schema]") {
  for (const config::Section* s : real_schema().sections) {
    std::vector<config::Option> all(s->common.begin(), s->common.end());
    all.insert(all.end(), s->options.begin(), s->options.end());
    for (const config::Option& o : all) {
      INFO(s->path << "." << o.name);
      if (o.type == config::Type::size) {
        if (!o.min.empty()) CHECK(units::parse_size(o.min).value.has_value());
        if (!o.max.empty()) CHECK(units::parse_size(o.max).value.has_value());
      }
      if (o.type == config::Type::duration) {
        if (!o.min.empty()) CHECK(units::parse_duration(o.min).value.has_value());
        if (!o.max.empty()) CHECK(units::parse_duration(o.max).value.has_value());
      }
      CHECK_FALSE(o.description.empty());
      if (o.type == config::Type::choice) CHECK_FALSE(o.choices.empty());
    }
  }
  // Loading nothing exercises every default.
  auto r = config::load_text("", "empty.toml", real_schema(), no_env());
  CHECK(r.document.has_value());
  CHECK(r.diagnostics.all().empty());
}

TEST_CASE("configuration reference matches the declarations", "[config][docs]") {
  std::ifstream in(std::string(TANK_SOURCE_DIR) + "/docs/configuration.md");
  REQUIRE(in);
  std::stringstream committed;
  committed << in.rdbuf();
  INFO("docs/configuration.md is out of date: regenerate it with `build/agent/tank reference > "
       "docs/configuration.md` (from a build with every plugin)");
  const std::string rendered = config::render_reference(real_schema());
  // A build without some plugins (TANK_PLUGINS; the static builds leave outputs.kafka out) has
  // no section for them: the committed reference, written by a build with every plugin, is
  // compared without those sections.
  std::string expected = committed.str();
  for (std::size_t at = expected.find("\n## [["); at != std::string::npos; at = expected.find("\n## [[", at + 1)) {
    const std::size_t eol = expected.find('\n', at + 1);
    const std::string heading = expected.substr(at + 1, eol - at - 1);
    if (rendered.find("\n" + heading + "\n") != std::string::npos) continue;
    const std::size_t next = expected.find("\n## ", at + 1);
    expected.erase(at, next == std::string::npos ? std::string::npos : next - at);
    at = at == 0 ? 0 : at - 1;
  }
  CHECK(expected == rendered);
}

TEST_CASE("cross-option checks warn about options that have no effect", "[config][queue]") {
  auto r = config::load_text("[queue]\nfsync = \"always\"\nfsync_interval = \"1s\"\nmax_memory_bytes = \"1MiB\"\n",
                             "w.toml", real_schema(), no_env());
  REQUIRE(r.document);
  REQUIRE(r.diagnostics.all().size() == 2);
  auto d = r.diagnostics.sorted();
  CHECK(d[0].to_string() == "w.toml:3:18: warning: queue.fsync_interval: has no effect with fsync = \"always\"");
  CHECK(d[1].to_string() ==
        "w.toml:4:20: warning: queue.max_memory_bytes: has no effect with mode = \"disk\" (records are not held in RAM)");
}

TEST_CASE("agent and metrics sections validate their values", "[config]") {
  auto r = config::load_text("[agent]\nid = \"gw 1\"\ndata_dir = \"\"\n[metrics]\nlisten = \"9464\"\n", "a.toml",
                             real_schema(), no_env());
  CHECK_FALSE(r.document);
  std::vector<std::string> lines;
  for (const auto& d : r.diagnostics.sorted()) lines.push_back(d.to_string());
  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == "a.toml:2:6: agent.id: \"gw 1\" is not a valid id: use 1 to 64 letters, digits, '.', '_' or '-'");
  CHECK(lines[1] == "a.toml:3:12: agent.data_dir: must not be empty");
  CHECK(lines[2].rfind("a.toml:5:10: metrics.listen: expected \"host:port\"", 0) == 0);
}

TEST_CASE("listen addresses parse IPv4, IPv6, localhost and a bare port", "[metrics]") {
  std::string error;
  auto a = net::parse_listen_address("127.0.0.1:9464", &error);
  REQUIRE(a);
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 9464);
  auto b = net::parse_listen_address("[::1]:0", &error);
  REQUIRE(b);
  CHECK(b->host == "::1");
  CHECK(b->port == 0);
  CHECK(net::parse_listen_address("localhost:80", &error)->host == "127.0.0.1");
  CHECK(net::parse_listen_address(":9464", &error)->host == "0.0.0.0");
  for (const char* bad : {"9464", "::1:9464", "127.0.0.1:99999", "127.0.0.1:", "example.com:80", "[::1]9464", "1.2.3:4"}) {
    INFO(bad);
    CHECK_FALSE(net::parse_listen_address(bad, &error));
  }
}

TEST_CASE("the previous run decides how thoroughly the queue is checked", "[engine]") {
  using engine::choose_verification;
  using queue::Verification;
  CHECK(choose_verification(std::nullopt, "boot-a").depth == Verification::quick);
  engine::RunState s;
  s.boot_id = "boot-a";
  s.state = "stopped";
  CHECK(choose_verification(s, "boot-b").depth == Verification::quick);
  s.state = "running";
  CHECK(choose_verification(s, "boot-a").depth == Verification::quick);  // process crash: the OS kept the writes
  CHECK(choose_verification(s, "boot-b").depth == Verification::full);   // rebooted without stopping
  s.corruption_detected = true;
  CHECK(choose_verification(s, "boot-a").depth == Verification::full);
  s.corruption_detected = false;
  s.state = "starting";  // died during start-up, same boot
  s.unclean_exits = 0;
  CHECK(choose_verification(s, "boot-a").depth == Verification::quick);
  s.unclean_exits = 1;  // ... and the run before that did not stop either
  CHECK(choose_verification(s, "boot-a").depth == Verification::full);
  CHECK(engine::unclean_exits(s) == 2);
  s.state = "stopped";
  CHECK(engine::unclean_exits(s) == 0);
}

TEST_CASE("the run state survives a round trip through run.json", "[engine]") {
  test::TempDir dir;
  engine::RunState s;
  s.state = "running";
  s.pid = 42;
  s.boot_id = "b";
  s.metrics_address = "127.0.0.1:1234";
  s.started_ns = 1'700'000'000'000'000'000;
  s.unclean_exits = 3;
  s.corruption_detected = true;
  auto path = engine::run_state_path(dir.path());
  REQUIRE(engine::write_run_state(path, s).empty());
  std::string error;
  auto back = engine::read_run_state(path, &error);
  REQUIRE(back);
  CHECK(back->state == "running");
  CHECK(back->pid == 42);
  CHECK(back->metrics_address == "127.0.0.1:1234");
  CHECK(back->started_ns == s.started_ns);
  CHECK(back->unclean_exits == 3);
  CHECK(back->corruption_detected);
  test::write_file(path, "{not json");
  CHECK_FALSE(engine::read_run_state(path, &error));
  CHECK(error.find("not valid JSON") != std::string::npos);
}

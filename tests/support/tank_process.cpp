#include "support/tank_process.hpp"

#include <signal.h>

#include <catch2/catch.hpp>
#include <boost/json.hpp>

#include "engine/run_state.hpp"

namespace tank::test {

std::filesystem::path write_test_config(const TempDir& dir, const std::string& extra, const std::string& name) {
  std::string text = "[agent]\nid = \"test-agent\"\ndata_dir = \"" + (dir / "data").string() +
                     "\"\nlog_format = \"text\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n" + extra;
  auto path = dir / name;
  write_file(path, text);
  return path;
}

TankProcess::TankProcess(const std::filesystem::path& config, std::map<std::string, std::string> env,
                         std::vector<std::string> prefix) {
  for (std::string arg : {tank_binary(), std::string("run"), std::string("-c"), config.string()}) {
    prefix.push_back(std::move(arg));
  }
  process_ = std::make_unique<Process>(std::move(prefix), std::move(env));
}

std::string TankProcess::wait_running(const std::filesystem::path& data_dir) {
  std::string address;
  bool ok = wait_until([&] {
    if (!process_->running()) return true;
    std::string text = read_file(data_dir / "run.json");
    if (text.empty()) return false;
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec || !v.is_object()) return false;
    const auto& o = v.as_object();
    if (o.at("state").as_string() != "running" || o.at("pid").as_int64() != process_->pid()) return false;
    address = std::string(o.at("metrics_address").as_string());
    return true;
  });
  INFO("tank stderr:\n" << process_->err());
  REQUIRE(ok);
  REQUIRE(process_->running());
  return address;
}

std::optional<int> TankProcess::stop() {
  process_->signal(SIGTERM);
  return process_->wait(std::chrono::seconds(30));
}

std::string scrape(const std::string& address) {
  auto r = http_get(address, "/metrics");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return r->body;
}

std::string input_address(const std::filesystem::path& data_dir, const std::string& input) {
  auto state = engine::read_run_state(data_dir / "run.json", nullptr);
  REQUIRE(state);
  for (const auto& [name, where] : state->inputs) {
    if (name == input) return where;
  }
  FAIL("input " << input << " does not listen");
  return {};
}

void run_until_failpoint(const std::filesystem::path& config, const std::string& point, std::string& logs) {
  TankProcess tank(config, {{"TANK_FAILPOINTS", point}});
  CHECK(tank.process().wait(std::chrono::seconds(60)) == 128 + SIGKILL);  // the failpoint killed it
  logs += tank.process().err() + "---- " + point + "\n";
  REQUIRE(tank.process().err().find("reached: killing this process") != std::string::npos);
}

}  // namespace tank::test

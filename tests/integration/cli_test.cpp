// The command line of the real binary: help, version, check, exit codes.

#include <catch2/catch.hpp>

#include "support/tank_process.hpp"

using namespace tank::test;

namespace {

ProcessResult tank_cli(std::vector<std::string> args) {
  args.insert(args.begin(), tank_binary());
  return run(std::move(args));
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("tank version names the version, commit, build type and plugins", "[cli]") {
  auto r = tank_cli({"version"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("tank 0.", 0) == 0);
  CHECK(contains(r.out, "\ncommit:     "));
  CHECK(contains(r.out, "\nbuild type: "));
  CHECK(contains(r.out, "\ninputs:     "));
  CHECK(contains(r.out, "\noutputs:    "));
  CHECK(contains(r.out, "LMDB 0.9."));
}

TEST_CASE("every command has --help and exits 0 with it", "[cli]") {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--help"}, {"help"}, {"run", "--help"}, {"check", "--help"}, {"queue", "--help"}, {"version", "--help"},
           {"reference", "--help"}, {"run", "-h"}}) {
    auto r = tank_cli(args);
    INFO(args[0]);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "Usage: tank"));
  }
}

TEST_CASE("usage errors exit 2 with a message", "[cli]") {
  auto none = tank_cli({});
  CHECK(none.exit_code == 2);
  CHECK(contains(none.err, "Usage: tank <command>"));
  auto typo = tank_cli({"chek"});
  CHECK(typo.exit_code == 2);
  CHECK(contains(typo.err, "unknown command \"chek\" (did you mean \"check\"?)"));
  auto option = tank_cli({"run", "--confg", "x"});
  CHECK(option.exit_code == 2);
  CHECK(contains(option.err, "unknown option --confg (did you mean --config?)"));
  auto missing = tank_cli({"check", "-c"});
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.err, "option -c needs a value"));
  auto queue = tank_cli({"queue"});
  CHECK(queue.exit_code == 2);
  CHECK(contains(queue.err, "stats, peek, verify or salvage"));
  auto sub = tank_cli({"queue", "peak"});
  CHECK(sub.exit_code == 2);
  CHECK(contains(sub.err, "did you mean \"peek\""));
  auto n = tank_cli({"queue", "peek", "zero", "--data-dir", "/tmp"});
  CHECK(n.exit_code == 2);
  CHECK(contains(n.err, "N must be a positive number"));
}

TEST_CASE("tank check accepts a valid file and the embedded default", "[cli][check]") {
  TempDir dir;
  auto config = write_test_config(dir, "[queue]\nmax_disk_bytes = \"64MiB\"\n");
  auto r = tank_cli({"check", "-c", config.string()});
  CHECK(r.exit_code == 0);
  CHECK(r.out == config.string() + ": configuration OK\n");
  CHECK(r.err.empty());
  auto d = tank_cli({"check"});
  CHECK(d.exit_code == 0);
  CHECK(d.out == "<embedded default>: configuration OK\n");
  auto p = tank_cli({"check", "--print-default"});
  CHECK(p.exit_code == 0);
  CHECK(contains(p.out, "[queue]"));
  CHECK(contains(p.out, "listen = \"127.0.0.1:9464\""));
}

TEST_CASE("an empty configuration file is refused by check and run, saying why", "[cli][check]") {
  TempDir dir;
  for (const std::string& text : {std::string(), std::string("\n  \n\t\n")}) {
    write_file(dir / "empty.toml", text);
    const std::string f = (dir / "empty.toml").string();
    for (const char* command : {"check", "run"}) {
      auto r = tank_cli({command, "-c", f});
      INFO(command << " on " << text.size() << " bytes");
      CHECK(r.exit_code == 2);
      CHECK(contains(r.err, f + ": the file is empty (a power cut just after it was written, or a failed copy?); "
                            "nothing was started"));
    }
  }
  // A comment alone is a file someone wrote: valid, as before.
  write_file(dir / "comment.toml", "# nothing yet\n");
  CHECK(tank_cli({"check", "-c", (dir / "comment.toml").string()}).exit_code == 0);
}

TEST_CASE("tank check lists every error with file:line:column and exits 2", "[cli][check]") {
  TempDir dir;
  write_file(dir / "bad.toml", R"([agent]
data_dir = "/tmp/x"
[queue]
max_disk_bytes = "64 megs"
fsnyc = "always"
overflow = "drop_oldets"
[metrics]
listen = "localhost"
[[inputs.mqtt]]
brokers = ["tcp://127.0.0.1:1883"]
topics = ["a/#"]
)");
  auto r = tank_cli({"check", "-c", (dir / "bad.toml").string()});
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  std::string f = (dir / "bad.toml").string();
  CHECK(contains(r.err, f + ":4:18: queue.max_disk_bytes: expected a size such as \"64MiB\""));
  CHECK(contains(r.err, f + ":5:1: queue.fsnyc: unknown option in [queue]; did you mean \"fsync\"?"));
  CHECK(contains(r.err, f + ":6:12: queue.overflow: expected one of \"block\", \"drop_oldest\" or \"drop_newest\", "
                            "got \"drop_oldets\" (did you mean \"drop_oldest\"?)"));
  CHECK(contains(r.err, f + ":8:10: metrics.listen: expected \"host:port\""));
  CHECK(contains(r.err, f + ":10:1: inputs.mqtt[0].brokers: unknown option in [inputs.mqtt]"));
  CHECK(contains(r.err, f + ":9:1: inputs.mqtt[0].servers: required option is missing"));
  CHECK(contains(r.err, f + ": 6 errors; nothing was started"));
}

TEST_CASE("warnings do not fail tank check", "[cli][check]") {
  TempDir dir;
  auto config = write_test_config(dir, "[queue]\nfsync = \"never\"\nfsync_interval = \"1s\"\n");
  auto r = tank_cli({"check", "-c", config.string()});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.err, "warning: queue.fsync_interval: has no effect with fsync = \"never\""));
}

TEST_CASE("a missing or unreadable configuration file is a configuration error", "[cli][check]") {
  auto r = tank_cli({"check", "-c", "/nonexistent/tank.toml"});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "cannot read /nonexistent/tank.toml: No such file or directory"));
  auto run_r = tank_cli({"run", "-c", "/nonexistent/tank.toml"});
  CHECK(run_r.exit_code == 2);
}

TEST_CASE("tank reference prints the configuration reference", "[cli]") {
  auto r = tank_cli({"reference"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.rfind("# Configuration reference", 0) == 0);
  CHECK(contains(r.out, "## [queue]"));
  CHECK(contains(r.out, "`max_disk_bytes`"));
}

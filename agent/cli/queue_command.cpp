// tank queue stats | peek | verify: look into the queue, also while the agent runs (LMDB lets
// a second process read a consistent snapshot without disturbing the writer).

#include <iostream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "cli/args.hpp"
#include "cli/cli_support.hpp"
#include "cli/commands.hpp"
#include "common/clock.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/units.hpp"
#include "engine/agent_config.hpp"
#include "engine/control.hpp"
#include "engine/pipeline.hpp"
#include "queue/queue.hpp"
#include "queue/queue_config.hpp"
#include "queue/salvage.hpp"
#include "queue/verify.hpp"

namespace tank::cli {
namespace {

namespace json = boost::json;

const char* kUsage =
    "Usage: tank queue stats [-c FILE | --data-dir DIR] [--json]\n"
    "       tank queue peek [N] [-c FILE | --data-dir DIR] [--json] [--full]\n"
    "       tank queue verify [-c FILE | --data-dir DIR]\n"
    "       tank queue salvage DAMAGED_DIR [-c FILE | --data-dir DIR] [--dry-run] [--json]\n";

const char* kHelp =
    "\nLooks into the write-ahead queue in <data_dir>/queue, also while tank runs.\n\n"
    "  stats        records, bytes, disk use, oldest record, each consumer's position and lag\n"
    "  peek [N]     the oldest N records (default 10)\n"
    "  verify       reads every page and record, as tank does after an unclean reboot\n"
    "  salvage DAMAGED_DIR\n"
    "               puts every record that proves itself intact (its checksum) in a damaged queue\n"
    "               (one tank moved aside, queue.damaged-<time>) back into this queue, through the\n"
    "               running agent, or directly when none runs (then -c FILE is needed); records\n"
    "               every output had already acknowledged are left out. Run again after an\n"
    "               interruption: it goes on where it stopped\n\n"
    "  -c, --config FILE   take data_dir from this configuration (default: the embedded one)\n"
    "  --data-dir DIR      use this data directory\n"
    "  --json              machine-readable output (one JSON object; NDJSON for peek)\n"
    "  --full              peek: print whole payloads (default: the first 200 bytes)\n"
    "  --dry-run           salvage: count what would be recovered, change nothing\n"
    "  -h, --help          this help\n\n"
    "With queue.mode = \"memory\", records held in the running agent's RAM are not visible here.\n"
    "Exit codes: 0 ok, 1 the queue cannot be read (or verify found damage), 2 usage error.\n";

struct Target {
  std::filesystem::path data_dir;
  std::uint64_t max_disk_bytes = 0;  // 0 when unknown (--data-dir)
};

std::optional<Target> resolve(const ParsedArgs& args, const plugin::Registry& plugins, int* exit_code) {
  std::optional<config::Document> document;
  auto dir = resolve_data_dir(args, plugins, exit_code, &document);
  if (!dir) return std::nullopt;
  Target t;
  t.data_dir = *dir;
  if (document) t.max_disk_bytes = document->section("queue").size("max_disk_bytes");
  return t;
}

std::string age_text(std::int64_t ingest_ns) {
  if (ingest_ns <= 0) return "-";
  std::int64_t age = system_clock().wall_ns() - ingest_ns;
  if (age < 0) age = 0;
  return fmt::format("{} ({:.1f}s ago)", fs::rfc3339_utc(ingest_ns), static_cast<double>(age) / 1e9);
}

int stats(queue::Queue& q, const Target& t, bool as_json) {
  queue::Stats s = q.stats();
  std::vector<std::uint64_t> positions;
  for (const auto& c : s.consumers) positions.push_back(c.acked);
  const std::vector<std::uint64_t> lag_bytes = q.disk_bytes_after(positions);
  const std::int64_t now = system_clock().wall_ns();
  auto lag_seconds = [&](const queue::ConsumerStats& c) {
    return c.oldest_unacked_ns > 0 ? static_cast<double>(std::max<std::int64_t>(now - c.oldest_unacked_ns, 0)) / 1e9
                                   : 0.0;
  };
  if (as_json) {
    json::object o;
    o["dir"] = (t.data_dir / "queue").string();
    o["records"] = s.records;
    o["bytes"] = s.bytes;
    o["disk_used_bytes"] = s.disk_used_bytes;
    o["file_bytes"] = s.file_bytes;
    if (t.max_disk_bytes != 0) o["disk_limit_bytes"] = t.max_disk_bytes;
    o["first_seq"] = s.first_seq;
    o["last_seq"] = s.last_seq;
    o["next_seq"] = s.next_seq;
    o["oldest_ingest_time"] = s.oldest_ingest_ns > 0 ? json::value(fs::rfc3339_utc(s.oldest_ingest_ns)) : nullptr;
    json::array consumers;
    for (std::size_t i = 0; i < s.consumers.size(); ++i) {
      const auto& c = s.consumers[i];
      json::object co;
      co["name"] = c.name;
      co["acked"] = c.acked;
      co["lag_records"] = c.lag_records;
      co["lag_bytes"] = lag_bytes[i];
      co["lag_seconds"] = lag_seconds(c);
      co["oldest_unacknowledged_time"] =
          c.oldest_unacked_ns > 0 ? json::value(fs::rfc3339_utc(c.oldest_unacked_ns)) : nullptr;
      consumers.push_back(std::move(co));
    }
    o["consumers"] = std::move(consumers);
    std::cout << json::serialize(o) << "\n";
    return kExitOk;
  }
  std::cout << fmt::format("queue      {}\n", (t.data_dir / "queue").string());
  std::cout << fmt::format("records    {} ({})\n", s.records, units::human_size(s.bytes));
  std::cout << fmt::format("disk       {} used{}; file {}\n", units::human_size(s.disk_used_bytes),
                           t.max_disk_bytes ? " of " + units::human_size(t.max_disk_bytes) : std::string(),
                           units::human_size(s.file_bytes));
  std::cout << fmt::format("oldest     {}\n", age_text(s.oldest_ingest_ns));
  std::cout << fmt::format("sequence   first {}, last {}, next {}\n", s.first_seq, s.last_seq, s.next_seq);
  if (s.consumers.empty()) {
    std::cout << "consumers  (none: records stay until an output reads them)\n";
  } else {
    std::cout << "consumers\n";
    for (std::size_t i = 0; i < s.consumers.size(); ++i) {
      const auto& c = s.consumers[i];
      std::cout << fmt::format("  {:<20} acknowledged up to {}, lag {} records ({}), oldest unacknowledged {}\n",
                               c.name, c.acked, c.lag_records, units::human_size(lag_bytes[i]),
                               age_text(c.oldest_unacked_ns));
    }
  }
  return kExitOk;
}

int peek(queue::Queue& q, std::size_t n, bool as_json, bool full) {
  std::uint64_t after = 0;
  std::size_t shown = 0;
  while (shown < n) {
    queue::ReadLimits limits;
    limits.max_records = std::min<std::size_t>(n - shown, 1000);
    queue::ReadBatch batch = q.read(after, limits);
    if (batch.empty()) break;
    for (const auto& r : batch.records()) {
      if (as_json) {
        json::object o;
        o["seq"] = r.seq;
        o["ingest_time"] = fs::rfc3339_utc(r.ingest_ns);
        o["input"] = valid_utf8(r.input) ? json::value(r.input) : json::value(base64(r.input));
        json::object attrs;
        r.for_each_attribute([&](std::string_view k, std::string_view v) {
          std::string key = valid_utf8(k) ? std::string(k) : base64(k);
          attrs[key] = valid_utf8(v) ? json::value(v) : json::value(base64(v));
        });
        o["attributes"] = std::move(attrs);
        if (valid_utf8(r.payload)) {
          o["payload"] = r.payload;
        } else {
          o["payload_base64"] = base64(r.payload);
        }
        std::cout << json::serialize(o) << "\n";
      } else {
        std::string attrs;
        r.for_each_attribute([&](std::string_view k, std::string_view v) {
          attrs += fmt::format(" {}={}", strings::printable(k, 64), strings::printable(v, 200));
        });
        std::cout << fmt::format("#{} {} input={}{} {} B: {}\n", r.seq, fs::rfc3339_utc(r.ingest_ns),
                                 strings::printable(r.input, 64), attrs, r.payload.size(),
                                 strings::printable(r.payload, full ? r.payload.size() : 200));
      }
      ++shown;
    }
    after = batch.scanned_to();
  }
  if (!as_json && shown == 0) std::cout << "(the queue is empty)\n";
  return kExitOk;
}

// tank queue salvage: through the running agent (it alone writes its queue), or, when none
// answers, directly under the data directory's lock.
int salvage(const ParsedArgs& args, const plugin::Registry& plugins) {
  std::error_code ec;
  const std::filesystem::path damaged = std::filesystem::absolute(args.positional[1], ec);
  if (!std::filesystem::exists(damaged / "data.mdb", ec)) {
    std::cerr << fmt::format("tank queue salvage: {} holds no data.mdb (give the damaged queue's directory, e.g. "
                             "<data_dir>/queue.damaged-<time>)\n",
                             damaged.string());
    return kExitUsage;
  }
  int exit_code = kExitOk;
  std::optional<config::Document> document;
  auto data_dir = resolve_data_dir(args, plugins, &exit_code, &document);
  if (!data_dir) return exit_code;
  if (std::filesystem::equivalent(damaged, *data_dir / "queue", ec)) {
    std::cerr << "tank queue salvage: that is the live queue itself; salvage takes a damaged copy\n";
    return kExitUsage;
  }
  const bool dry_run = args.has("--dry-run");
  queue::SalvageReport report;
  boost::json::object request{{"command", "queue.salvage"}, {"dir", damaged.string()}, {"dry_run", dry_run}};
  engine::ControlReply asked = engine::control_request(*data_dir / engine::kControlSocketName, request);
  if (asked.status == engine::ControlStatus::failed) {
    std::cerr << "tank queue salvage: " << asked.error << "\n";
    return kExitFailure;
  }
  if (asked.status == engine::ControlStatus::answered) {
    if (!asked.reply.contains("recovered")) {
      const auto* e = asked.reply.if_contains("error");
      std::cerr << "tank queue salvage: the agent refused: "
                << (e != nullptr && e->is_string() ? std::string(e->as_string()) : "?") << "\n";
      return kExitFailure;
    }
    report = queue::salvage_report_from_json(asked.reply);
  } else {
    if (!document) {
      std::cerr << fmt::format("tank queue salvage: no agent is running on {}; give -c FILE (its configuration) "
                               "instead of --data-dir to salvage without it\n",
                               data_dir->string());
      return kExitUsage;
    }
    auto offline = open_queue_offline(*data_dir, *document, plugins, "tank queue salvage");
    if (!offline) return kExitFailure;
    try {
      auto& q = offline->queue;
      queue::SalvageOptions salvage_options;
      salvage_options.dry_run = dry_run;
      report = queue::salvage(damaged, *q, salvage_options);
      q->close();
    } catch (const std::exception& e) {
      std::cerr << fmt::format("tank queue salvage: {}\n", e.what());
      return kExitFailure;
    }
  }
  if (args.has("--json")) {
    std::cout << boost::json::serialize(queue::to_json(report)) << "\n";
  } else {
    std::cout << (dry_run ? "dry run (nothing changed): " : "") << queue::describe(report, damaged) << "\n";
  }
  return report.stopped.empty() ? kExitOk : kExitFailure;
}

}  // namespace

int queue_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  static const OptionSpec kOptions[] = {
      {{"-c", "--config"}, true},
      {{"--data-dir"}, true},
      {{"--json"}, false},
      {{"--full"}, false},
      {{"--dry-run"}, false},
      {{"-h", "--help"}, false},
  };
  ParsedArgs args = parse_args(argv, kOptions);
  if (args.has("--help")) {
    std::cout << kUsage << kHelp;
    return kExitOk;
  }
  auto usage_error = [&](const std::string& why) {
    std::cerr << "tank queue: " << why << "\n" << kUsage;
    return kExitUsage;
  };
  if (!args.error.empty()) return usage_error(args.error);
  if (args.positional.empty()) return usage_error("which one: stats, peek, verify or salvage?");
  const std::string& sub = args.positional[0];
  if (sub != "stats" && sub != "peek" && sub != "verify" && sub != "salvage") {
    std::vector<std::string> subs{"stats", "peek", "verify", "salvage"};
    auto suggestion = strings::closest(sub, subs);
    return usage_error(fmt::format("unknown subcommand \"{}\"{}", sub,
                                   suggestion ? fmt::format(" (did you mean \"{}\"?)", *suggestion) : ""));
  }
  std::size_t n = 10;
  if (sub == "peek" && args.positional.size() == 2) {
    try {
      std::size_t used = 0;
      long long v = std::stoll(args.positional[1], &used);
      if (used != args.positional[1].size() || v <= 0) throw std::invalid_argument("n");
      n = static_cast<std::size_t>(v);
    } catch (...) {
      return usage_error(fmt::format("N must be a positive number, got \"{}\"", args.positional[1]));
    }
  } else if (sub == "salvage") {
    if (args.positional.size() != 2) return usage_error("salvage needs the damaged queue's directory");
  } else if (args.positional.size() > 1) {
    return usage_error(fmt::format("unexpected argument \"{}\"", args.positional.back()));
  }
  if (args.has("--data-dir") && args.has("--config")) return usage_error("give -c or --data-dir, not both");
  if (sub == "salvage") return salvage(args, plugins);

  int exit_code = kExitOk;
  auto target = resolve(args, plugins, &exit_code);
  if (!target) return exit_code;
  std::filesystem::path dir = target->data_dir / "queue";

  if (sub == "verify") {
    queue::VerifyOptions verify;
    verify.depth = queue::Verification::full;
    verify.use_lock_file = true;  // tank may be running
    queue::VerifyResult r = queue::verify_in_child(dir, verify);
    switch (r.outcome) {
      case queue::VerifyResult::Outcome::ok:
        std::cout << fmt::format("{}: sound\n", dir.string());
        return kExitOk;
      case queue::VerifyResult::Outcome::damaged:
        std::cout << fmt::format("{}: DAMAGED: {}\n(tank moves a damaged queue aside when it starts; see "
                                 "docs/operations.md)\n",
                                 dir.string(), r.problem);
        return kExitFailure;
      case queue::VerifyResult::Outcome::inaccessible:
      case queue::VerifyResult::Outcome::newer_format:
        std::cerr << fmt::format("{}: {}\n", dir.string(), r.problem);
        return kExitFailure;
    }
  }
  try {
    auto q = queue::Queue::open_read_only(dir, system_clock());
    if (sub == "stats") return stats(*q, *target, args.has("--json"));
    return peek(*q, n, args.has("--json"), args.has("--full"));
  } catch (const queue::OpenError& e) {
    std::cerr << "tank queue: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "tank queue: reading the queue failed: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace tank::cli

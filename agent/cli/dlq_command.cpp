// tank dlq list | show: the dead-letter store, read while the agent runs.

#include <iostream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "cli/cli_support.hpp"
#include "common/clock.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/units.hpp"
#include "queue/queue.hpp"

namespace tank::cli {
namespace {

namespace json = boost::json;

const char* kUsage =
    "Usage: tank dlq list [--input NAME] [--reason CODE] [--since TIME] [--limit N] [-c FILE | --data-dir DIR] [--json]\n"
    "       tank dlq show ID [-c FILE | --data-dir DIR] [--json]\n";

const char* kHelp =
    "\nThe dead-letter store: input tank could not take as a record, kept with the reason.\n\n"
    "  list           the entries, oldest first (id, time, input, reason, size, detail)\n"
    "  show ID        one entry with its original bytes\n\n"
    "  --input NAME   only entries from this input\n"
    "  --reason CODE  only entries with this reason (line_too_long, ...)\n"
    "  --since TIME   only entries at or after TIME (RFC 3339, e.g. 2026-11-21T10:00:00Z, or a\n"
    "                 duration back from now, e.g. 1h)\n"
    "  --limit N      at most N entries (default 100)\n"
    "  -c, --config FILE   take data_dir from this configuration (default: the embedded one)\n"
    "  --data-dir DIR      use this data directory\n"
    "  --json              machine-readable output (NDJSON for list)\n\n"
    "Exit codes: 0 ok, 1 the store cannot be read or the entry does not exist, 2 usage error.\n";

json::object to_json(const queue::StoredDeadLetter& d, bool with_original) {
  json::object o;
  o["id"] = d.id;
  o["time"] = fs::rfc3339_utc(d.letter.time_ns);
  o["input"] = d.letter.input;
  o["reason"] = d.letter.reason;
  o["detail"] = d.letter.detail;
  o["original_size"] = d.letter.original_size;
  o["truncated"] = d.truncated;
  o["tank_version"] = d.version;
  if (with_original) {
    if (valid_utf8(d.letter.original)) o["original"] = d.letter.original;
    else o["original_base64"] = base64(d.letter.original);
  }
  return o;
}

}  // namespace

int dlq_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  static const OptionSpec kOptions[] = {
      {{"-c", "--config"}, true}, {{"--data-dir"}, true}, {{"--input"}, true}, {{"--reason"}, true},
      {{"--since"}, true},        {{"--limit"}, true},    {{"--json"}, false}, {{"-h", "--help"}, false},
  };
  ParsedArgs args = parse_args(argv, kOptions);
  if (args.has("--help")) {
    std::cout << kUsage << kHelp;
    return kExitOk;
  }
  auto usage_error = [&](const std::string& why) {
    std::cerr << "tank dlq: " << why << "\n" << kUsage;
    return kExitUsage;
  };
  if (!args.error.empty()) return usage_error(args.error);
  if (args.positional.empty()) return usage_error("which one: list or show?");
  const std::string& sub = args.positional[0];
  if (sub != "list" && sub != "show") {
    std::vector<std::string> subs{"list", "show"};
    auto suggestion = strings::closest(sub, subs);
    return usage_error(fmt::format("unknown subcommand \"{}\"{}", sub,
                                   suggestion ? fmt::format(" (did you mean \"{}\"?)", *suggestion) : ""));
  }
  if (args.has("--data-dir") && args.has("--config")) return usage_error("give -c or --data-dir, not both");

  queue::DeadLetterQuery query;
  std::uint64_t show_id = 0;
  if (sub == "show") {
    if (args.positional.size() != 2) return usage_error("show takes one ID");
    auto id = parse_positive(args.positional[1]);
    if (!id) return usage_error(fmt::format("ID must be a positive number, got \"{}\"", args.positional[1]));
    show_id = *id;
  } else {
    if (args.positional.size() > 1) return usage_error(fmt::format("unexpected argument \"{}\"", args.positional[1]));
    query.input = args.value("--input").value_or("");
    query.reason = args.value("--reason").value_or("");
    if (auto limit = args.value("--limit")) {
      auto n = parse_positive(*limit);
      if (!n) return usage_error(fmt::format("--limit must be a positive number, got \"{}\"", *limit));
      query.limit = static_cast<std::size_t>(*n);
    }
    if (auto since = args.value("--since")) {
      std::string error;
      auto t = parse_time(*since, system_clock().wall_ns(), &error);
      if (!t) return usage_error(error);
      query.since_ns = *t;
    }
  }

  int exit_code = kExitOk;
  auto data_dir = resolve_data_dir(args, plugins, &exit_code);
  if (!data_dir) return exit_code;
  try {
    auto q = queue::Queue::open_read_only(*data_dir / "queue", system_clock());
    const bool as_json = args.has("--json");
    if (sub == "show") {
      auto d = q->dead_letter(show_id);
      if (!d) {
        std::cerr << fmt::format("tank dlq: no dead letter with id {}\n", show_id);
        return kExitFailure;
      }
      if (as_json) {
        std::cout << json::serialize(to_json(*d, true)) << "\n";
        return kExitOk;
      }
      std::cout << fmt::format("id          {}\ntime        {}\ninput       {}\nreason      {}\ndetail      {}\n", d->id,
                               fs::rfc3339_utc(d->letter.time_ns), d->letter.input, d->letter.reason, d->letter.detail);
      std::cout << fmt::format("size        {} bytes{}\ntank        {}\noriginal    {}\n", d->letter.original_size,
                               d->truncated ? fmt::format(" (the first {} kept)", d->letter.original.size()) : "",
                               d->version, strings::printable(d->letter.original, d->letter.original.size()));
      return kExitOk;
    }
    std::size_t shown = 0;
    for (const auto& d : q->dead_letters(query)) {
      if (as_json) {
        std::cout << json::serialize(to_json(d, false)) << "\n";
      } else {
        std::cout << fmt::format("#{} {} input={} reason={} {} B: {}\n", d.id, fs::rfc3339_utc(d.letter.time_ns),
                                 d.letter.input, d.letter.reason, d.letter.original_size,
                                 strings::printable(d.letter.detail, 200));
      }
      ++shown;
    }
    if (!as_json && shown == 0) std::cout << "(no dead letters)\n";
    return kExitOk;
  } catch (const queue::OpenError& e) {
    std::cerr << "tank dlq: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "tank dlq: reading the dead letters failed: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace tank::cli

// tank dlq list | show | replay | purge: the dead-letter store. list and show read it directly,
// also while the agent runs; replay and purge ask the running agent over its control socket
// (it alone writes its queue) and, when none runs, open the queue themselves.

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
#include "engine/control.hpp"
#include "engine/dead_letter_ops.hpp"
#include "engine/pipeline.hpp"
#include "engine/routes.hpp"
#include "metrics/registry.hpp"
#include "queue/queue.hpp"
#include "queue/queue_config.hpp"

namespace tank::cli {
namespace {

namespace json = boost::json;

const char* kUsage =
    "Usage: tank dlq list [--input NAME] [--reason CODE] [--since TIME] [--limit N] [-c FILE | --data-dir DIR] [--json]\n"
    "       tank dlq show ID [-c FILE | --data-dir DIR] [--json]\n"
    "       tank dlq replay (ID... | --all | --input NAME | --reason CODE | --since TIME) [-c FILE | --data-dir DIR] [--json]\n"
    "       tank dlq purge (ID... | --all | --input NAME | --reason CODE | --since TIME) [-c FILE | --data-dir DIR] [--json]\n";

const char* kHelp =
    "\nThe dead-letter store: input tank could not take as a record, kept with the reason.\n\n"
    "  list           the entries, oldest first (id, time, input, reason, size, detail)\n"
    "  show ID        one entry with its original bytes\n"
    "  replay         put entries back at the start of their input's pipeline (decoding, validation),\n"
    "                 e.g. after fixing a schema; an entry that fails again returns to the store with\n"
    "                 its new reason. By the running agent, or directly when none runs.\n"
    "  purge          delete entries\n\n"
    "  ID...          these entries (replay, purge)\n"
    "  --all          every entry (replay, purge; or give filters)\n"
    "  --input NAME   only entries from this input\n"
    "  --reason CODE  only entries with this reason (line_too_long, ...)\n"
    "  --since TIME   only entries at or after TIME (RFC 3339, e.g. 2026-11-21T10:00:00Z, or a\n"
    "                 duration back from now, e.g. 1h)\n"
    "  --limit N      at most N entries (default 100)\n"
    "  -c, --config FILE   take data_dir from this configuration (default: the embedded one)\n"
    "  --data-dir DIR      use this data directory\n"
    "  --json              machine-readable output (NDJSON for list)\n\n"
    "Exit codes: 0 ok, 1 the store cannot be read or written, the entry does not exist, or the replay\n"
    "stopped early (e.g. the queue is full), 2 usage error.\n";

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
    json::object attributes;
    for (const auto& a : queue::decode_attributes(d.letter.attributes)) attributes[a.key] = a.value;
    o["attributes"] = std::move(attributes);
    if (valid_utf8(d.letter.original)) o["original"] = d.letter.original;
    else o["original_base64"] = base64(d.letter.original);
  }
  return o;
}

// replay | purge: by the running agent, or on the queue directly when none runs.
int dlq_change(const std::string& sub, const ParsedArgs& args, const plugin::Registry& plugins) {
  auto usage_error = [&](const std::string& why) {
    std::cerr << "tank dlq " << sub << ": " << why << "\n" << kUsage;
    return kExitUsage;
  };
  if (args.has("--data-dir") && args.has("--config")) return usage_error("give -c or --data-dir, not both");
  if (args.has("--limit")) return usage_error("--limit is for list");
  engine::DeadLetterSelection selection;
  for (std::size_t i = 1; i < args.positional.size(); ++i) {
    auto id = parse_positive(args.positional[i]);
    if (!id) return usage_error(fmt::format("ID must be a positive number, got \"{}\"", args.positional[i]));
    selection.ids.push_back(*id);
  }
  selection.filter.input = args.value("--input").value_or("");
  selection.filter.reason = args.value("--reason").value_or("");
  if (auto since = args.value("--since")) {
    std::string error;
    auto t = parse_time(*since, system_clock().wall_ns(), &error);
    if (!t) return usage_error(error);
    selection.filter.since_ns = *t;
  }
  const bool filtered = !selection.filter.input.empty() || !selection.filter.reason.empty() || args.has("--since");
  if (!selection.ids.empty() && (filtered || args.has("--all"))) {
    return usage_error("give IDs or --all/filters, not both");
  }
  if (selection.ids.empty() && !filtered && !args.has("--all")) {
    return usage_error(fmt::format("which entries? give IDs, --all, or --input/--reason/--since"));
  }

  int exit_code = kExitOk;
  std::optional<config::Document> document;
  auto data_dir = resolve_data_dir(args, plugins, &exit_code, &document);
  if (!data_dir) return exit_code;
  const bool as_json = args.has("--json");

  boost::json::object request = engine::to_json(selection);
  request["command"] = sub == "replay" ? "dlq.replay" : "dlq.purge";
  engine::ControlReply asked = engine::control_request(*data_dir / engine::kControlSocketName, request);
  boost::json::object reply;
  if (asked.status == engine::ControlStatus::failed) {
    std::cerr << "tank dlq " << sub << ": " << asked.error << "\n";
    return kExitFailure;
  }
  if (asked.status == engine::ControlStatus::answered) {
    reply = std::move(asked.reply);
    if (auto* ok = reply.if_contains("ok"); ok != nullptr && ok->is_bool() && !ok->as_bool() &&
                                            !reply.contains(sub == "replay" ? "replayed" : "purged")) {
      const auto* e = reply.if_contains("error");
      std::cerr << "tank dlq " << sub << ": the agent refused: " << (e != nullptr && e->is_string() ? std::string(e->as_string()) : "?")
                << "\n";
      return kExitFailure;
    }
  } else {
    // No agent answers: do it here, holding the data directory's lock so that none starts meanwhile.
    if (!document) {
      std::cerr << fmt::format("tank dlq {}: no agent is running on {}; give -c FILE (its configuration) instead of "
                               "--data-dir to {} without it\n",
                               sub, data_dir->string(), sub);
      return kExitUsage;
    }
    auto offline = open_queue_offline(*data_dir, *document, plugins, "tank dlq " + sub);
    if (!offline) return kExitFailure;
    try {
      queue::Queue* q = offline->queue.get();
      if (sub == "replay") {
        metrics::Registry scratch;  // the checks' metrics: not served by a command
        engine::RoutePlan plan = engine::plan_routes(*document, plugins);
        auto routes = engine::build_routes(plan, engine::RouteServices{scratch, system_clock(), "", *data_dir});
        reply = engine::to_json(engine::replay_dead_letters(
            *q,
            [&](std::string_view input) -> std::shared_ptr<const process::Route> {
              auto it = routes.find(input);
              return it == routes.end() ? nullptr : it->second;
            },
            selection, system_clock()));
      } else {
        reply = engine::to_json(engine::purge_dead_letters(*q, selection));
      }
      q->close();
    } catch (const std::exception& e) {
      std::cerr << fmt::format("tank dlq {}: {}\n", sub, e.what());
      return kExitFailure;
    }
  }

  if (as_json) {
    std::cout << boost::json::serialize(reply) << "\n";
  } else if (sub == "replay") {
    engine::ReplayOutcome o = engine::replay_outcome_from_json(reply);
    std::cout << fmt::format("replayed {} entr{}; {} failed again (back in the store with the new reason); {} kept{}\n",
                             o.replayed, o.replayed == 1 ? "y" : "ies", o.failed_again, o.kept,
                             o.missing > 0 ? fmt::format("; {} id(s) not found", o.missing) : "");
    for (const auto& p : o.problems) std::cout << "  kept: " << p << "\n";
  } else {
    engine::PurgeOutcome o = engine::purge_outcome_from_json(reply);
    std::cout << fmt::format("purged {} entr{}{}\n", o.purged, o.purged == 1 ? "y" : "ies",
                             o.missing > 0 ? fmt::format("; {} id(s) not found", o.missing) : "");
  }
  const auto* error = reply.if_contains("error");
  if (error != nullptr && error->is_string() && !error->as_string().empty()) {
    std::cerr << "tank dlq " << sub << ": stopped early: " << std::string(error->as_string()) << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

int dlq_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  static const OptionSpec kOptions[] = {
      {{"-c", "--config"}, true}, {{"--data-dir"}, true}, {{"--input"}, true}, {{"--reason"}, true},
      {{"--since"}, true},        {{"--limit"}, true},    {{"--json"}, false}, {{"-h", "--help"}, false},
      {{"--all"}, false},
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
  if (args.positional.empty()) return usage_error("which one: list, show, replay or purge?");
  const std::string& sub = args.positional[0];
  if (sub == "replay" || sub == "purge") return dlq_change(sub, args, plugins);
  if (sub != "list" && sub != "show") {
    std::vector<std::string> subs{"list", "show", "replay", "purge"};
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

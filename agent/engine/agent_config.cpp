#include "engine/agent_config.hpp"
#include "engine/routes.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "common/units.hpp"
#include "input/batch.hpp"
#include "queue/queue.hpp"
#include "queue/queue_config.hpp"

namespace tank::engine {
namespace {

using config::Option;
using config::Type;

constexpr std::string_view kLogLevels[] = {"debug", "info", "warn", "error"};
constexpr std::string_view kLogFormats[] = {"auto", "text", "journal", "json"};
constexpr std::string_view kClockTrust[] = {"auto", "ntp", "trust"};

const Option kAgentOptions[] = {
    {.name = "id",
     .type = Type::string,
     .default_value = "",
     .description = "Names this agent in idempotency keys, metrics and logs: letters, digits, '.', '_' and '-', at "
                    "most 64. The id of the first start is stored in data_dir/agent-id and kept by later starts, "
                    "also when the host is renamed; setting agent.id replaces it (logged as a warning: batches sent "
                    "before then carry keys with the old id).",
     .default_note = "data_dir/agent-id, else the host name"},
    {.name = "data_dir",
     .type = Type::string,
     .default_value = "\"/var/lib/tank\"",
     .description = "Directory for the queue (data_dir/queue), the run state (data_dir/run.json), the agent's id "
                    "(data_dir/agent-id) and the lock that keeps a second tank out. Created if missing; must be "
                    "writable."},
    {.name = "log_level",
     .type = Type::choice,
     .default_value = "\"info\"",
     .description = "The least severe log lines written.",
     .choices = kLogLevels},
    {.name = "log_format",
     .type = Type::choice,
     .default_value = "\"auto\"",
     .description = "\"text\": time-stamped lines for people; \"journal\": lines with <N> syslog priority prefixes "
                    "for journald; \"json\": one JSON object per line for log shippers; \"auto\": journal under "
                    "systemd (stderr is the journal: JOURNAL_STREAM names it), text otherwise.",
     .choices = kLogFormats},
    {.name = "stall_timeout",
     .type = Type::duration,
     .default_value = "\"20s\"",
     .description = "A thread of tank's (an input's reader, an output's sender, a processor) that has not come "
                    "round its loop for this long, beyond the time its own timeouts allow a send, is stuck: tank "
                    "logs which one and stops its systemd watchdog pings (WATCHDOG=1), so that systemd restarts it "
                    "(WatchdogSec in the unit). Waiting for work, for a retry or for a full queue is not stuck.",
     .min = "1s",
     .max = "1h"},
    {.name = "clock",
     .type = Type::choice,
     .default_value = "\"auto\"",
     .description = "When the wall clock counts as not synchronized (records committed meanwhile carry the attribute "
                    "clock_unsynced, and event-time stages hold or pass them: on_unsynced_clock). \"auto\": while it "
                    "is before this build's commit time (a gateway without a real-time clock booting in 1970), or "
                    "while the kernel says so (adjtimex STA_UNSYNC) and a time-sync service (systemd-timesyncd, "
                    "chrony, ntpd) runs and has not synchronized it yet in this boot. \"ntp\": also whenever the "
                    "kernel says so, with or without a known service. \"trust\": never (a battery-backed clock).",
     .choices = kClockTrust},
};

void check_agent(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  if (values.has("id") && !valid_id(values.string("id"))) {
    diagnostics.error(values.location_of("id"), "agent.id",
                      fmt::format("\"{}\" is not a valid id: use 1 to 64 letters, digits, '.', '_' or '-'",
                                  values.string("id")));
  }
  if (values.string("data_dir").empty()) {
    diagnostics.error(values.location_of("data_dir"), "agent.data_dir", "must not be empty");
  }
}

const config::Section kAgentSection{
    .path = "agent",
    .summary = "Who this agent is and where it keeps its state.",
    .options = kAgentOptions,
    .repeated = false,
    .check = check_agent,
};

const Option kMetricsOptions[] = {
    {.name = "enabled",
     .type = Type::boolean,
     .default_value = "true",
     .description = "Serve /metrics (Prometheus text format), /healthz and /readyz."},
    {.name = "listen",
     .type = Type::string,
     .default_value = "\"127.0.0.1:9464\"",
     .description = "Address to serve on, \"host:port\" (\"[::1]:9464\" for IPv6; port 0 picks a free port, "
                    "which tank logs and writes to data_dir/run.json)."},
};

void check_metrics(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  std::string error;
  if (!net::parse_listen_address(values.string("listen"), &error)) {
    diagnostics.error(values.location_of("listen"), "metrics.listen", error);
  }
}

const config::Section kMetricsSection{
    .path = "metrics",
    .summary = "tank's own HTTP endpoint: /metrics for Prometheus, /healthz (the process works) and /readyz "
               "(started and not stopping).",
    .options = kMetricsOptions,
    .repeated = false,
    .check = check_metrics,
};

// Input names are unique (records, metrics and routes refer to them) and well formed.
void check_input_names(const config::Document& document, config::Diagnostics& diagnostics) {
  std::map<std::string, const config::SectionValues*> seen;
  for (const auto& [path, instances] : document.plugins) {
    if (!path.starts_with("inputs.")) continue;
    const std::string type = path.substr(7);
    for (const auto& values : instances) {
      std::string name = plugin::input_name(values, type);
      if (!valid_id(name)) {
        diagnostics.error(values.location_of("name"), values.path() + ".name",
                          fmt::format("\"{}\" is not a valid input name: use 1 to 64 letters, digits, '.', '_' or '-'",
                                      name));
        continue;
      }
      auto [it, fresh] = seen.emplace(name, &values);
      if (!fresh) {
        diagnostics.error(values.location_of("name"), values.path() + ".name",
                          fmt::format("another input is named \"{}\" ({} at {}); give each input its own `name`", name,
                                      it->second->path(), it->second->where().to_string()));
      }
    }
  }
}

// A line or message one input may take must fit in one commit of the queue as a record, with its
// header, the input's name and its attributes (input::kAttributeReserve).
void check_record_limits(const config::Document& document, config::Diagnostics& diagnostics) {
  const std::uint64_t max_disk = document.section("queue").size("max_disk_bytes");
  const std::uint64_t commit = queue::Queue::max_commit_for(max_disk);
  for (const auto& [path, instances] : document.plugins) {
    if (!path.starts_with("inputs.")) continue;
    for (const auto& values : instances) {
      const std::string name = plugin::input_name(values, path.substr(7));
      const std::uint64_t overhead = queue::kRecordHeaderBytes + name.size() + input::kAttributeReserve;
      const std::uint64_t largest = commit > overhead ? commit - overhead : 0;
      for (const char* option : {"max_line_bytes", "max_message_bytes", "max_body_bytes"}) {
        if (!values.has(option)) continue;
        const std::uint64_t limit = values.size(option);
        if (std::string_view(option) == "max_body_bytes") {
          // An HTTP body is usually many records: it only has to fit one commit as a whole (a
          // body that is one record too large for it is dead-lettered, and its answer says so).
          if (limit <= commit) continue;
          diagnostics.error(values.location_of(option), values.path() + "." + option,
                            fmt::format("{}{} is more than one commit of the queue may carry ({} with queue.max_disk_bytes "
                                        "= {}: max_disk_bytes / 64, at most 4 MiB); lower it or raise max_disk_bytes",
                                        units::format_size(limit), values.is_set(option) ? "" : " (the default)",
                                        units::format_size(commit), units::format_size(max_disk)));
          continue;
        }
        if (limit <= largest) continue;
        diagnostics.error(
            values.location_of(option), values.path() + "." + option,
            fmt::format("{}{} is more than one record in one commit of the queue may carry: with queue.max_disk_bytes "
                        "= {} a commit holds {} (max_disk_bytes / 64, at most 4 MiB), and a record also carries its "
                        "header, the input's name and up to {} of attributes, so the largest {} that fits is {} "
                        "bytes: set {} = \"{}KiB\" or less, or raise max_disk_bytes",
                        units::format_size(limit), values.is_set(option) ? "" : " (the default)",
                        units::format_size(max_disk), units::format_size(commit),
                        units::format_size(input::kAttributeReserve), option, largest, option, largest / 1024));
      }
    }
  }
}

}  // namespace

bool is_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

bool valid_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), is_id_char);
}

const config::Section& agent_section() { return kAgentSection; }
const config::Section& metrics_section() { return kMetricsSection; }

config::Schema build_schema(const plugin::Registry& plugins) {
  config::Schema schema;
  schema.checks.push_back(check_input_names);
  schema.checks.push_back(check_record_limits);
  // The queue's LMDB map must fit in this platform's address space (32-bit: queue_config.hpp).
  schema.checks.push_back([](const config::Document& document, config::Diagnostics& diagnostics) {
    queue::check_map_size(document, diagnostics);
  });
  // The schema keeps its own copy of the registry (descriptors only), so it outlives `plugins`.
  schema.checks.push_back([registry = plugins](const config::Document& document, config::Diagnostics& diagnostics) {
    check_routes(document, registry, diagnostics);
  });
  schema.sections.push_back(&kAgentSection);
  schema.sections.push_back(&queue::config_section());
  schema.sections.push_back(&queue::dead_letter_section());
  schema.sections.push_back(&kMetricsSection);
  for (const auto& d : plugins.all()) schema.sections.push_back(d.section);
  return schema;
}

config::LoadResult load_configuration(const std::filesystem::path& path, const config::Schema& schema,
                                      const config::LoadOptions& options) {
  if (path.empty()) return config::load_text(default_config_text(), std::string(kDefaultConfigName), schema, options);
  return config::load_file(path, schema, options);
}

AgentSettings agent_settings(const config::Document& document) {
  const auto& v = document.section("agent");
  AgentSettings s;
  if (v.has("id")) s.configured_id = v.string("id");
  s.data_dir = v.string("data_dir");
  s.stall_timeout = v.duration("stall_timeout");
  s.clock_trust = parse_clock_trust(v.choice("clock")).value_or(ClockTrust::automatic);
  const std::string& level = v.choice("log_level");
  s.log.level = level == "debug" ? log::Level::debug
                : level == "warn" ? log::Level::warn
                : level == "error" ? log::Level::error
                                   : log::Level::info;
  const std::string& format = v.choice("log_format");
  s.log.format = format == "text"      ? log::Format::text
                 : format == "journal" ? log::Format::journal
                 : format == "json"    ? log::Format::json
                                       : log::default_format();
  return s;
}

MetricsSettings metrics_settings(const config::Document& document) {
  const auto& v = document.section("metrics");
  MetricsSettings s;
  s.enabled = v.boolean("enabled");
  std::string error;
  if (auto a = net::parse_listen_address(v.string("listen"), &error)) s.listen = *a;
  return s;
}

}  // namespace tank::engine

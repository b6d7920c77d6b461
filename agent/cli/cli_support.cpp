#include "cli/cli_support.hpp"

#include <charconv>
#include <ctime>
#include <iostream>

#include <fmt/format.h>

#include "common/strings.hpp"
#include "common/units.hpp"
#include "common/clock.hpp"
#include "engine/agent_config.hpp"
#include "engine/pipeline.hpp"
#include "queue/queue_config.hpp"

namespace tank::cli {

std::optional<std::filesystem::path> resolve_data_dir(const ParsedArgs& args, const plugin::Registry& plugins,
                                                      int* exit_code, std::optional<config::Document>* document) {
  if (auto dir = args.value("--data-dir")) return std::filesystem::path(*dir);
  config::Schema schema = engine::build_schema(plugins);
  std::filesystem::path path = args.value("--config").value_or("");
  config::LoadResult result = engine::load_configuration(path, schema);
  if (!result.document) {
    for (const auto& d : result.diagnostics.sorted()) std::cerr << d.to_string() << "\n";
    *exit_code = 2;
    return std::nullopt;
  }
  auto dir = engine::agent_settings(*result.document).data_dir;
  if (document != nullptr) *document = std::move(result.document);
  return dir;
}

std::optional<OfflineQueue> open_queue_offline(const std::filesystem::path& data_dir, const config::Document& document,
                                               const plugin::Registry& plugins, std::string_view command) {
  std::string lock_error;
  auto lock = fs::ExclusiveLock::acquire(data_dir / "tank.lock", &lock_error);
  if (!lock) {
    std::cerr << fmt::format("{}: {} (an agent holds the data directory but its control socket does not answer; "
                             "retry once it finished starting)\n",
                             command, lock_error);
    return std::nullopt;
  }
  try {
    queue::Options options = queue::options_from(document, data_dir / "queue");
    options.consumers = engine::Pipeline::consumers(document, plugins);
    return OfflineQueue{std::move(*lock), queue::Queue::open(options, system_clock(), nullptr)};
  } catch (const std::exception& e) {
    std::cerr << fmt::format("{}: {}\n", command, e.what());
    return std::nullopt;
  }
}

bool valid_utf8(std::string_view s) { return !strings::invalid_utf8_at(s).has_value(); }

std::string base64(std::string_view s) { return strings::base64(s); }

std::optional<std::uint64_t> parse_positive(std::string_view text) {
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || v == 0) return std::nullopt;
  return v;
}

std::optional<std::int64_t> parse_time(std::string_view text, std::int64_t now_ns, std::string* error) {
  if (auto d = units::parse_duration(text)) return now_ns - d.value->count();
  std::tm tm{};
  std::string owned(text);
  const char* rest = ::strptime(owned.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) {
    if (error) *error = fmt::format("expected a time such as 2026-11-21T10:00:00Z or a duration such as 1h, got \"{}\"", text);
    return std::nullopt;
  }
  std::int64_t frac_ns = 0;
  if (*rest == '.') {
    ++rest;
    std::int64_t scale = 100'000'000;
    while (*rest >= '0' && *rest <= '9') {
      frac_ns += (*rest - '0') * scale;
      scale /= 10;
      ++rest;
    }
  }
  std::int64_t offset_s = 0;
  if (*rest == 'Z') {
    ++rest;
  } else if (*rest == '+' || *rest == '-') {
    int sign = *rest == '-' ? -1 : 1;
    int hh = 0, mm = 0;
    if (std::sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2) {
      if (error) *error = fmt::format("bad UTC offset in \"{}\"", text);
      return std::nullopt;
    }
    offset_s = sign * (hh * 3600 + mm * 60);
    rest += 6;
  } else {
    if (error) *error = fmt::format("\"{}\" needs a time zone: end it with Z or an offset such as +01:00", text);
    return std::nullopt;
  }
  if (*rest != '\0') {
    if (error) *error = fmt::format("unexpected \"{}\" after the time in \"{}\"", rest, text);
    return std::nullopt;
  }
  std::int64_t secs = static_cast<std::int64_t>(::timegm(&tm)) - offset_s;
  return secs * 1'000'000'000 + frac_ns;
}

}  // namespace tank::cli

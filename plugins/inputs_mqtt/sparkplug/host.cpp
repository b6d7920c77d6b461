#include "host.hpp"

#include <algorithm>
#include <array>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "payload.hpp"

namespace tank::sparkplug {

namespace json = boost::json;

namespace {

constexpr std::string_view kNamespace = "spBv1.0";
// What one metric of a table takes besides its name (twice: the def and the by_name key): the
// def, and an entry in each index.
constexpr std::size_t kMetricDefBytes = sizeof(std::uint64_t) * 12;

struct TypeName {
  std::string_view name;
  Topic::Type type;
  bool device;
};
constexpr std::array<TypeName, 8> kTypes{{
    {"NBIRTH", Topic::Type::nbirth, false},
    {"NDEATH", Topic::Type::ndeath, false},
    {"DBIRTH", Topic::Type::dbirth, true},
    {"DDEATH", Topic::Type::ddeath, true},
    {"NDATA", Topic::Type::ndata, false},
    {"DDATA", Topic::Type::ddata, true},
    {"NCMD", Topic::Type::ncmd, false},
    {"DCMD", Topic::Type::dcmd, true},
}};

std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) return parts;
    start = slash + 1;
  }
}

bool is_signed(std::uint32_t t) {
  return t == static_cast<std::uint32_t>(DataType::int8) || t == static_cast<std::uint32_t>(DataType::int16) ||
         t == static_cast<std::uint32_t>(DataType::int32) || t == static_cast<std::uint32_t>(DataType::int64);
}

// A data metric sent without its datatype was decoded by the value field that was set (int_value
// as a UInt32, long_value as a UInt64): a signed type from the birth takes its low bits again.
void reinterpret_signed(json::value& v, std::uint32_t t) {
  std::uint64_t bits = 0;
  if (v.is_uint64()) {
    bits = v.get_uint64();
  } else if (v.is_int64()) {
    bits = static_cast<std::uint64_t>(v.get_int64());
  } else {
    return;
  }
  switch (static_cast<DataType>(t)) {
    case DataType::int8: v = static_cast<std::int64_t>(static_cast<std::int8_t>(bits & 0xff)); break;
    case DataType::int16: v = static_cast<std::int64_t>(static_cast<std::int16_t>(bits & 0xffff)); break;
    case DataType::int32: v = static_cast<std::int64_t>(static_cast<std::int32_t>(bits & 0xffffffff)); break;
    case DataType::int64: v = static_cast<std::int64_t>(bits); break;
    default: break;
  }
}

std::optional<std::uint64_t> bdseq_of(const Payload& p) {
  for (const auto& m : p.metrics) {
    if (m.name && *m.name == "bdSeq") {
      if (m.value.is_uint64()) return m.value.get_uint64();
      if (m.value.is_int64() && m.value.get_int64() >= 0) return static_cast<std::uint64_t>(m.value.get_int64());
    }
  }
  return std::nullopt;
}

// Appends `text` (valid UTF-8) as a JSON string.
void append_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += fmt::format("\\u{:04x}", u);
    } else {
      out += c;
    }
  }
  out += '"';
}

// The fields every record of a message shares, as they are written.
struct RecordHead {
  std::string prefix;  // {"group":..,"edge_node":..
  std::string suffix;  // ,"seq":..,"message":..
};

// One record (host.hpp lists its members), written directly: a message of 20 metrics makes 20,
// and building each as a json::object cost more than reading the payload did.
std::string write_record(const RecordHead& head, std::string_view device, std::string_view name,
                         std::optional<std::uint64_t> alias, std::uint64_t timestamp_ms, std::uint32_t datatype,
                         const json::value& value, bool is_null, bool historical, bool stale,
                         const json::value* properties) {
  std::string r;
  r.reserve(head.prefix.size() + head.suffix.size() + name.size() + 160);
  r += head.prefix;
  r += R"(,"device":)";
  if (device.empty()) {
    r += "null";
  } else {
    append_string(r, device);
  }
  r += R"(,"metric":)";
  append_string(r, name);
  r += R"(,"alias":)";
  r += alias ? std::to_string(*alias) : std::string("null");
  r += R"(,"timestamp":)";
  r += std::to_string(timestamp_ms);
  r += R"(,"datatype":")";
  r += to_string(static_cast<DataType>(datatype));
  r += R"(","value":)";
  r += json::serialize(value);
  r += is_null ? R"(,"is_null":true)" : R"(,"is_null":false)";
  r += historical ? R"(,"is_historical":true)" : R"(,"is_historical":false)";
  r += head.suffix;
  r += stale ? R"(,"stale":true)" : R"(,"stale":false)";
  if (properties != nullptr && !properties->is_null()) {
    r += R"(,"properties":)";
    r += json::serialize(*properties);
  }
  r += '}';
  return r;
}

}  // namespace

std::optional<Topic> parse_topic(std::string_view topic) {
  const auto parts = split(topic);
  if (parts.size() < 3 || parts[0] != kNamespace) return std::nullopt;
  for (auto p : parts) {
    if (p.empty()) return std::nullopt;
  }
  if (parts[1] == "STATE") {
    if (parts.size() != 3) return std::nullopt;
    return Topic{Topic::Type::state, {}, parts[2], {}};
  }
  if (parts.size() != 4 && parts.size() != 5) return std::nullopt;
  for (const auto& t : kTypes) {
    if (t.name != parts[2]) continue;
    if (t.device != (parts.size() == 5)) return std::nullopt;
    return Topic{t.type, parts[1], parts[3], t.device ? parts[4] : std::string_view()};
  }
  return std::nullopt;
}

std::string_view to_string(Topic::Type type) {
  if (type == Topic::Type::state) return "STATE";
  for (const auto& t : kTypes) {
    if (t.type == type) return t.name;
  }
  return "?";
}

std::size_t Conversion::bytes() const {
  std::size_t n = 0;
  for (const auto& r : records) n += r.json.size() + 64;
  for (const auto& [k, v] : state_puts) n += k.size() + v.size();
  return n;
}

Host::Host(HostSettings settings, std::function<void(std::string_view)> event)
    : settings_(std::move(settings)), event_(std::move(event)) {}

std::string Host::entity_key(std::string_view group, std::string_view node, std::string_view device) const {
  std::string key = fmt::format("input/{}/sparkplug/{}/{}", settings_.input, group, node);
  if (!device.empty()) {
    key += '/';
    key += device;
  }
  return key;
}

std::string Host::seq_key(std::string_view group, std::string_view node) const {
  return fmt::format("input/{}/sparkplug-seq/{}/{}", settings_.input, group, node);
}

std::string Host::encode_entity(const Entity& e) const {
  json::object o;
  o["online"] = e.online;
  o["bdseq"] = e.bdseq ? json::value(*e.bdseq) : json::value(nullptr);
  json::array metrics;
  if (e.table) {
    metrics.reserve(e.table->metrics.size());
    for (const auto& m : e.table->metrics) {
      metrics.push_back(json::array{json::value(m.name), m.alias ? json::value(*m.alias) : json::value(nullptr),
                                    json::value(m.datatype)});
    }
  }
  o["metrics"] = std::move(metrics);
  return json::serialize(o);
}

void Host::load(const queue::Queue& queue) {
  const std::string component = "input " + settings_.input;
  const std::string prefix = fmt::format("input/{}/sparkplug/", settings_.input);
  for (const auto& [key, value] : queue.state_with_prefix(prefix)) {
    try {
      const json::object o = json::parse(value).as_object();
      Entity e;
      e.online = o.at("online").as_bool();
      if (const auto& b = o.at("bdseq"); !b.is_null()) e.bdseq = b.to_number<std::uint64_t>();
      auto table = std::make_shared<Table>();
      for (const auto& m : o.at("metrics").as_array()) {
        const auto& a = m.as_array();
        MetricDef d;
        d.name = json::value_to<std::string>(a.at(0));
        if (!a.at(1).is_null()) d.alias = a.at(1).to_number<std::uint64_t>();
        d.datatype = a.at(2).to_number<std::uint32_t>();
        if (d.alias) table->by_alias[*d.alias] = table->metrics.size();
        table->by_name[d.name] = table->metrics.size();
        table->bytes += 2 * d.name.size() + kMetricDefBytes;
        table->metrics.push_back(std::move(d));
      }
      e.table = std::move(table);
      put_entity(key, std::move(e));
    } catch (const std::exception& error) {
      log::warn(component,
                "the stored Sparkplug table {} cannot be read ({}): that node or device is unknown until its "
                "next birth",
                key, error.what());
    }
  }
  const std::string seq_prefix = fmt::format("input/{}/sparkplug-seq/", settings_.input);
  for (const auto& [key, value] : queue.state_with_prefix(seq_prefix)) {
    try {
      seqs_[key].last = std::stoull(value);
    } catch (const std::exception&) {
      log::warn(component, "the stored Sparkplug sequence number {} = \"{}\" cannot be read; ignored", key, value);
    }
  }
}

void Host::put_entity(const std::string& key, Entity e) {
  auto [it, fresh] = nodes_.try_emplace(key);
  if (!fresh && it->second.table) table_bytes_ -= std::min(table_bytes_, it->second.table->bytes);
  if (e.table) table_bytes_ += e.table->bytes;
  it->second = std::move(e);
}

void Host::erase_entity(const std::string& key) {
  auto it = nodes_.find(key);
  if (it == nodes_.end()) return;
  if (it->second.table) table_bytes_ -= std::min(table_bytes_, it->second.table->bytes);
  nodes_.erase(it);
}

void Host::remember(const std::string& key) {
  Undo u;
  u.key = key;
  if (auto it = nodes_.find(key); it != nodes_.end()) u.entity = it->second;
  undo_.push_back(std::move(u));
}

void Host::remember_seq(const std::string& key) {
  Undo u;
  u.key = key;
  u.seq = true;
  if (auto it = seqs_.find(key); it != seqs_.end()) u.node_seq = it->second;
  undo_.push_back(std::move(u));
}

void Host::committed(std::size_t mark) {
  mark = std::min(mark, undo_.size());
  undo_.erase(undo_.begin(), undo_.begin() + static_cast<std::ptrdiff_t>(mark));
}

void Host::rollback() {
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
    if (it->seq) {
      if (it->node_seq) {
        seqs_[it->key] = *it->node_seq;
      } else {
        seqs_.erase(it->key);
      }
    } else if (it->entity) {
      put_entity(it->key, *it->entity);
    } else {
      erase_entity(it->key);
    }
  }
  undo_.clear();
}

Conversion Host::convert(std::string_view topic_text, std::string_view payload_bytes, std::int64_t now_ns) {
  Conversion out;
  const auto topic = parse_topic(topic_text);
  if (!topic) {
    event_("bad_topic");
    out.dead_letter = Conversion::DeadLetter{
        "sparkplug_bad_topic",
        fmt::format("\"{}\" is not a Sparkplug B topic (spBv1.0/<group>/<NBIRTH|NDEATH|NDATA|NCMD>/<edge node> or "
                    "spBv1.0/<group>/<DBIRTH|DDEATH|DDATA|DCMD>/<edge node>/<device>, or spBv1.0/STATE/<host>); "
                    "subscribe this input to Sparkplug topics only",
                    topic_text)};
    return out;
  }
  if (topic->type == Topic::Type::state) {
    event_("state_message");
    return out;
  }
  if (topic->type == Topic::Type::ncmd || topic->type == Topic::Type::dcmd) {
    event_("command_message");
    return out;
  }
  std::string error;
  auto payload = decode(payload_bytes, error);
  if (!payload) {
    event_("bad_payload");
    out.dead_letter =
        Conversion::DeadLetter{"sparkplug_bad_payload", fmt::format("not a Sparkplug B payload: {}", error)};
    return out;
  }
  if (payload->uuid && *payload->uuid == "SPBV1.0_COMPRESSED") {
    // Tahu's compression (its body DEFLATE or GZIP): not part of Sparkplug 3.0, not read.
    event_("bad_payload");
    out.dead_letter = Conversion::DeadLetter{
        "sparkplug_compressed",
        "a compressed payload (uuid SPBV1.0_COMPRESSED, Eclipse Tahu's compression, not part of Sparkplug 3.0): "
        "tank does not inflate it; turn compression off on the edge node"};
    return out;
  }
  const std::string_view type_name = to_string(topic->type);
  const std::uint64_t now_ms = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0) / 1000000);
  const std::uint64_t message_ms = payload->timestamp_ms.value_or(now_ms);
  const std::string node_key = entity_key(topic->group, topic->node, {});
  const std::string device_key = topic->device.empty() ? std::string() : entity_key(topic->group, topic->node, topic->device);
  const std::string sequence_key = seq_key(topic->group, topic->node);

  auto ask_rebirth = [&] {
    if (!settings_.rebirth) return;
    const auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = rebirth_asked_.try_emplace(node_key, now);
    if (!fresh) {
      if (now - it->second < settings_.rebirth_interval) return;
      it->second = now;
    }
    Payload request;
    request.timestamp_ms = now_ms;
    Metric m;
    m.name = "Node Control/Rebirth";
    m.datatype = static_cast<std::uint32_t>(DataType::boolean);
    m.value = true;
    request.metrics.push_back(std::move(m));
    out.publishes.push_back({fmt::format("{}/{}/NCMD/{}", kNamespace, topic->group, topic->node), encode(request)});
    event_("rebirth_requested");
  };

  // What every record of this message shares; group, node and device come from the topic (MQTT
  // topics are UTF-8).
  RecordHead head;
  head.prefix = R"({"group":)";
  append_string(head.prefix, topic->group);
  head.prefix += R"(,"edge_node":)";
  append_string(head.prefix, topic->node);
  head.suffix = R"(,"seq":)";
  head.suffix += payload->seq ? std::to_string(*payload->seq) : std::string("null");
  head.suffix += R"(,"message":")";
  head.suffix += type_name;
  head.suffix += '"';
  const std::string_view this_device = topic->device;

  // A record of one metric of this message.
  auto add_record = [&](std::string_view name, std::optional<std::uint64_t> alias, std::uint64_t timestamp_ms,
                        std::uint32_t datatype, const json::value& value, bool is_null, bool historical,
                        const json::value* properties) {
    out.records.push_back({write_record(head, this_device, name, alias, timestamp_ms, datatype, value, is_null,
                                        historical, false, properties),
                           historical});
  };

  auto no_birth = [&](std::string what) {
    event_("no_birth");
    out.dead_letter = Conversion::DeadLetter{
        "sparkplug_no_birth",
        fmt::format("{} {}: its metrics cannot be named or typed{}", type_name, std::move(what),
                    settings_.rebirth ? "; a rebirth was asked for" : "; set rebirth = true to ask the node for one")};
    ask_rebirth();
  };

  // The sequence number: every message of a node but NDEATH carries the next (0-255).
  auto check_seq = [&](bool birth) {
    if (!payload->seq) return;
    remember_seq(sequence_key);
    NodeSeq& s = seqs_[sequence_key];
    if (!birth && s.last && *payload->seq != (*s.last + 1) % 256) {
      event_("seq_gap");
      log::debug("input " + settings_.input, "Sparkplug node {}/{}: seq {} after {}", topic->group, topic->node,
                 *payload->seq, *s.last);
      ask_rebirth();
    }
    s.last = *payload->seq;
    out.state_puts.emplace_back(sequence_key, std::to_string(*payload->seq));
  };

  // A birth's table. A metric without a name is left out (and dead-lettered by metric_records).
  auto make_table = [&] {
    auto table = std::make_shared<Table>();
    for (const Metric& m : payload->metrics) {
      if (!m.name) continue;
      MetricDef d{*m.name, m.alias, m.datatype.value_or(0)};
      if (d.alias) table->by_alias[*d.alias] = table->metrics.size();
      table->by_name[d.name] = table->metrics.size();
      table->bytes += 2 * d.name.size() + kMetricDefBytes;
      table->metrics.push_back(std::move(d));
    }
    return table;
  };

  // Whether `table` may replace what `key` holds within kMaxTableBytes; if not, the birth's
  // records are kept and the message is dead-lettered.
  auto within_limit = [&](const std::string& key, const Table& table) {
    std::size_t now = table_bytes_;
    if (auto it = nodes_.find(key); it != nodes_.end() && it->second.table) now -= std::min(now, it->second.table->bytes);
    if (now + table.bytes <= kMaxTableBytes) return true;
    event_("table_limit");
    out.dead_letter = Conversion::DeadLetter{
        "sparkplug_table_limit",
        fmt::format("{} of {}: its {} metric(s) would take the alias tables of all edge nodes and devices past {} "
                    "MiB; the birth's values were stored, its later data cannot be resolved. Are there that many "
                    "edge nodes on this broker, or does one use ever new names? Subscribe this input to fewer "
                    "groups",
                    type_name, topic_text, table.metrics.size(), kMaxTableBytes >> 20)};
    return false;
  };

  // The metrics of a birth or data message as records; what cannot be named or read goes into
  // the message's dead letter.
  auto metric_records = [&](const Table* table) {
    std::vector<std::string> unknown;
    std::vector<std::string> bad;
    for (std::size_t i = 0; i < payload->metrics.size(); ++i) {
      Metric& m = payload->metrics[i];
      const MetricDef* def = nullptr;
      if (table != nullptr) {
        if (m.alias) {
          if (auto it = table->by_alias.find(*m.alias); it != table->by_alias.end()) def = &table->metrics[it->second];
        }
        if (def == nullptr && m.name) {
          if (auto it = table->by_name.find(*m.name); it != table->by_name.end()) def = &table->metrics[it->second];
        }
      }
      if (!m.name && def == nullptr) {
        unknown.push_back(m.alias ? fmt::format("alias {}", *m.alias) : fmt::format("metric {} (no name, no alias)", i));
        continue;
      }
      if (!m.value_error.empty()) {
        bad.push_back(fmt::format("{}: {}", m.name ? *m.name : def->name, m.value_error));
        continue;
      }
      std::uint32_t datatype = m.datatype.value_or(def != nullptr ? def->datatype : 0);
      if (!m.datatype && def != nullptr && is_signed(datatype)) reinterpret_signed(m.value, datatype);
      add_record(m.name ? std::string_view(*m.name) : std::string_view(def->name),
                 m.alias ? m.alias : (def != nullptr ? def->alias : std::nullopt), m.timestamp_ms.value_or(message_ms),
                 datatype, m.value, m.is_null, m.is_historical, &m.properties);
    }
    if (!unknown.empty() || !bad.empty()) {
      const bool aliases = !unknown.empty();
      event_(aliases ? "unknown_alias" : "bad_value");
      std::string detail = fmt::format("{} of {}: ", type_name, topic_text);
      if (aliases) {
        detail += fmt::format("{} metric(s) not defined by the birth: {}", unknown.size(), fmt::join(unknown, ", "));
      }
      if (!bad.empty()) {
        detail += fmt::format("{}{} metric(s) whose value does not fit the datatype: {}", aliases ? "; " : "",
                              bad.size(), fmt::join(bad, "; "));
      }
      detail += fmt::format("; the message's other {} metric(s) were stored", out.records.size());
      out.dead_letter =
          Conversion::DeadLetter{aliases ? "sparkplug_unknown_alias" : "sparkplug_bad_value", std::move(detail)};
      ask_rebirth();
    }
  };

  // Stale records for every metric of `e`.
  auto stale_records = [&](const Entity& e, std::string_view device) {
    if (!e.table) return;
    const json::value null;
    for (const auto& d : e.table->metrics) {
      out.records.push_back(
          {write_record(head, device, d.name, d.alias, message_ms, d.datatype, null, true, false, true, nullptr),
           false});
    }
  };

  switch (topic->type) {
    case Topic::Type::nbirth: {
      Entity e;
      e.online = true;
      e.bdseq = bdseq_of(*payload);
      e.table = make_table();
      if (!within_limit(node_key, *e.table)) {
        metric_records(e.table.get());
        break;
      }
      remember(node_key);
      put_entity(node_key, e);
      out.state_puts.emplace_back(node_key, encode_entity(e));
      check_seq(true);
      event_("node_birth");
      metric_records(e.table.get());
      break;
    }
    case Topic::Type::ndeath: {
      auto it = nodes_.find(node_key);
      const auto death_bdseq = bdseq_of(*payload);
      if (it == nodes_.end() || !it->second.online ||
          (death_bdseq && it->second.bdseq && *death_bdseq != *it->second.bdseq)) {
        // An earlier session's will (its bdSeq is not the current birth's), or a node not alive.
        event_("stale_death");
        break;
      }
      event_("node_death");
      remember(node_key);
      it->second.online = false;
      out.state_puts.emplace_back(node_key, encode_entity(it->second));
      stale_records(it->second, {});
      // Its devices die with it.
      const std::string device_prefix = node_key + "/";
      for (auto d = nodes_.lower_bound(device_prefix);
           d != nodes_.end() && d->first.compare(0, device_prefix.size(), device_prefix) == 0; ++d) {
        if (!d->second.online) continue;
        remember(d->first);
        d->second.online = false;
        out.state_puts.emplace_back(d->first, encode_entity(d->second));
        stale_records(d->second, std::string_view(d->first).substr(device_prefix.size()));
      }
      break;
    }
    case Topic::Type::dbirth: {
      auto node = nodes_.find(node_key);
      if (node == nodes_.end() || !node->second.online) {
        no_birth(fmt::format("for device \"{}\" of edge node {}/{}, which is not born (no NBIRTH since it started "
                             "or died)",
                             topic->device, topic->group, topic->node));
        break;
      }
      check_seq(false);
      Entity e;
      e.online = true;
      e.table = make_table();
      if (!within_limit(device_key, *e.table)) {
        metric_records(e.table.get());
        break;
      }
      remember(device_key);
      put_entity(device_key, e);
      out.state_puts.emplace_back(device_key, encode_entity(e));
      event_("device_birth");
      metric_records(e.table.get());
      break;
    }
    case Topic::Type::ddeath: {
      auto node = nodes_.find(node_key);
      auto device = nodes_.find(device_key);
      if (node == nodes_.end() || !node->second.online || device == nodes_.end() || !device->second.online) {
        event_("stale_death");
        break;
      }
      check_seq(false);
      event_("device_death");
      remember(device_key);
      device->second.online = false;
      out.state_puts.emplace_back(device_key, encode_entity(device->second));
      stale_records(device->second, topic->device);
      break;
    }
    case Topic::Type::ndata:
    case Topic::Type::ddata: {
      const bool is_device = topic->type == Topic::Type::ddata;
      auto node = nodes_.find(node_key);
      if (node == nodes_.end() || !node->second.online) {
        no_birth(fmt::format("from edge node {}/{}, which is not born (no NBIRTH since it started or died)",
                             topic->group, topic->node));
        break;
      }
      const Entity* owner = &node->second;
      if (is_device) {
        auto device = nodes_.find(device_key);
        if (device == nodes_.end() || !device->second.online) {
          no_birth(fmt::format("from device \"{}\" of edge node {}/{}, which is not born (no DBIRTH since it started "
                               "or died)",
                               topic->device, topic->group, topic->node));
          break;
        }
        owner = &device->second;
      }
      check_seq(false);
      // The table stays alive through the records even if it is replaced meanwhile.
      const std::shared_ptr<const Table> table = owner->table;
      metric_records(table.get());
      break;
    }
    case Topic::Type::ncmd:
    case Topic::Type::dcmd:
    case Topic::Type::state:
      break;
  }
  return out;
}

}  // namespace tank::sparkplug

// outputs.mqtt: each batch is one QoS 1 PUBLISH to an upstream broker (AWS IoT, EMQX, mosquitto,
// ...) through Paho MQTT C++, delivered when its PUBACK arrives.
//
// tank's queue is the buffer while the broker is away: Paho gets no persistence and no offline
// buffer (a publish while disconnected fails and is retried by the delivery engine), a clean
// session, and no automatic reconnect (send() connects when it has to). A batch whose PUBACK
// does not come within publish_timeout is retried on a new connection, under the same key.
//
// What a batch carries:
//   MQTT 5    the body as the payload; the Content Type property; user properties
//             idempotency-key, content-encoding (when compressed) and records.
//   MQTT 3.1.1 (no properties) an envelope: one JSON line, then the body --
//             {"idempotency_key":"...","content_type":"application/x-ndjson",
//              "content_encoding":"zstd","records":500}\n<body>
//
// Outcome: PUBACK (any reason code below 0x80, e.g. 0x10 "no matching subscribers") delivered;
// MQTT 5 PUBACK 0x87 not authorized, 0x90 topic name invalid, 0x95 packet too large and 0x99
// payload format invalid: rejected (dead-lettered); everything else -- no connection, a refused
// CONNECT, a lost connection, a timeout, another reason code -- is retried.

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <fmt/format.h>
#include <mqtt/async_client.h>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/tls.hpp"
#include "mqtt/broker_uri.hpp"
#include "plugin/mqtt_options.hpp"
#include "plugin/registry.hpp"
#include "plugin/tls_options.hpp"

namespace tank::plugins {
namespace {

struct MqttOutputSettings {
  std::vector<std::string> servers;
  std::string topic;  // {agent_id}, {output} and {input} not yet replaced
  std::string client_id;  // "": tank-<agent id>-<output name>
  int protocol_version = MQTTVERSION_5;
  bool retain = false;
  std::chrono::seconds keep_alive{30};
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds publish_timeout{30000};
  std::string username;
  std::string password;
  tls::ClientSettings tls;
};
using S = MqttOutputSettings;
namespace mqtt_options = plugin::mqtt_options;
static_assert(mqtt_options::kProtocolLevels[0] == MQTTVERSION_3_1_1 && mqtt_options::kProtocolLevels[1] == MQTTVERSION_5);

const config::Options<S> kOptions{
    mqtt_options::servers(&S::servers)
        .default_value("[]")
        .describe("Broker URIs tried in order: tcp://host:1883 or ssl://host:8883 (also mqtt://, mqtts://)."),
    config::string("topic", &S::topic)
        .default_value("tank/{agent_id}/{output}")
        .describe("The topic of each batch. {agent_id}, {output} and {input} are replaced; with {input}, every "
                  "batch holds the records of one input."),
    mqtt_options::client_id(&S::client_id)
        .describe("The MQTT client identifier. Empty: tank-<agent id>-<output name>."),
    mqtt_options::protocol_version(&S::protocol_version)
        .default_value("5")
        .describe("\"5\": the idempotency key travels as the user property idempotency-key. \"3.1.1\": in an "
                  "envelope, a JSON line before the body."),
    config::boolean("retain", &S::retain).default_value(false).describe("Publish with the retain flag."),
    mqtt_options::keep_alive(&S::keep_alive),
    mqtt_options::connect_timeout(&S::connect_timeout)
        .describe("How long one connection attempt (TCP, TLS, CONNECT/CONNACK) may take."),
    config::duration("publish_timeout", &S::publish_timeout)
        .default_value("30s")
        .describe("How long the PUBACK of a batch may take; then the batch is sent again on a new connection.")
        .min("100ms")
        .max("1h"),
    mqtt_options::username(&S::username),
    mqtt_options::password(&S::password),
    config::nested(&S::tls, plugin::tls_client_bindings()),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (v.has("servers")) {
    const auto& servers = v.strings("servers");
    if (servers.empty()) diagnostics.error(v.location_of("servers"), v.path() + ".servers", "give at least one broker");
    for (std::size_t i = 0; i < servers.size(); ++i) {
      std::string error;
      if (!input::parse_broker_uri(servers[i], error)) {
        diagnostics.error(v.location_of("servers"), fmt::format("{}.servers[{}]", v.path(), i), error);
      }
    }
  }
  const std::string& topic = v.string("topic");
  if (topic.empty() || topic.find_first_of("+#") != std::string::npos || topic.find('\0') != std::string::npos) {
    diagnostics.error(v.location_of("topic"), v.path() + ".topic",
                      fmt::format("\"{}\" is not a topic to publish to: it must not be empty or hold + or #", topic));
  }
  plugin::check_topic_template(v, diagnostics, "topic");
  plugin::check_tls_client_options(v, diagnostics);
}

const config::Section kSection{
    .path = "outputs.mqtt",
    .summary = "Publishes each batch with QoS 1 to an upstream MQTT broker (Paho MQTT C++), delivered on PUBACK; the "
               "idempotency key as the MQTT 5 user property idempotency-key, or in a JSON envelope line with 3.1.1. "
               "tank's queue is the buffer while the broker is away.",
    .options = kOptions.all(),
    .common = plugin::output_common_options(),
    .repeated = true,
    .check = check,
};

// Paho C accepts tcp:// and ssl://; mqtt:// and mqtts:// are their other names.
std::string paho_uri(const std::string& uri) {
  if (uri.starts_with("mqtt://")) return "tcp://" + uri.substr(7);
  if (uri.starts_with("mqtts://")) return "ssl://" + uri.substr(8);
  return uri;
}

bool permanent(int reason_code) {
  switch (reason_code) {
    case mqtt::ReasonCode::NOT_AUTHORIZED:
    case mqtt::ReasonCode::TOPIC_NAME_INVALID:
    case mqtt::ReasonCode::PACKET_TOO_LARGE:
    case mqtt::ReasonCode::PAYLOAD_FORMAT_INVALID:
      return true;
    default:
      return false;
  }
}

class MqttOutput final : public plugin::Output {
 public:
  MqttOutput(const MqttOutputSettings& s, const plugin::OutputContext& context)
      : name_(context.name), agent_id_(context.agent_id), component_("output " + context.name) {
    servers_ = s.servers;
    topic_ = strings::replace_all(strings::replace_all(s.topic, "{agent_id}", agent_id_), "{output}", name_);
    client_id_ = s.client_id.empty() ? fmt::format("tank-{}-{}", agent_id_, name_) : s.client_id;
    // With max_in_flight > 1 every instance is a client of its own: the broker needs unique ids.
    if (context.instance > 0) client_id_ += fmt::format("-{}", context.instance);
    version_ = s.protocol_version;
    retain_ = s.retain;
    keep_alive_ = s.keep_alive;
    connect_timeout_ = s.connect_timeout;
    publish_timeout_ = s.publish_timeout;
    username_ = s.username;
    password_ = s.password;
    tls_ = s.tls;
  }

  ~MqttOutput() override { stop(); }

  void start() override {
    try {
      // No persistence (nullptr) and no offline buffer: tank's queue is the buffer.
      client_ = std::make_unique<mqtt::async_client>(paho_uri(servers_.front()), client_id_,
                                                     mqtt::create_options(version_), nullptr);
    } catch (const mqtt::exception& e) {
      throw plugin::StartError(fmt::format("cannot create the MQTT client for {}: {}", servers_.front(), e.what()));
    }
    client_->set_connection_lost_handler([this](const std::string& cause) {
      std::lock_guard lock(mutex_);
      lost_cause_ = cause.empty() ? "the connection was lost" : "the connection was lost: " + cause;
    });
    auto servers = std::make_shared<mqtt::string_collection>();
    bool any_tls = false;
    for (const auto& s : servers_) {
      servers->push_back(paho_uri(s));
      any_tls = any_tls || s.starts_with("ssl://") || s.starts_with("mqtts://");
    }
    auto builder = mqtt::connect_options_builder()
                       .mqtt_version(version_)
                       .keep_alive_interval(keep_alive_)
                       .connect_timeout(connect_timeout_)
                       .automatic_reconnect(false)
                       .servers(servers);
    if (version_ == MQTTVERSION_5) {
      builder.clean_start(true);
    } else {
      builder.clean_session(true);
    }
    if (!username_.empty()) builder.user_name(username_);
    if (!password_.empty()) builder.password(password_);
    if (any_tls) {
      auto ssl = mqtt::ssl_options_builder()
                     .enable_server_cert_auth(tls_.verify)
                     .verify(tls_.verify)
                     .ssl_version(MQTT_SSL_VERSION_TLS_1_2)
                     .finalize();
      // No error_handler: Paho C++ 1.2 hands Paho C a pointer to the ssl_options object that the
      // connect call copies, and calls it after that copy is gone (found by ASan). A failed TLS
      // connect is explained by tank's own handshake check instead (diagnose_tls).
      if (!tls_.ca_file.empty()) ssl.set_trust_store(tls_.ca_file);
      if (!tls_.cert_file.empty()) {
        ssl.set_key_store(tls_.cert_file);
        ssl.set_private_key(tls_.key_file);
      }
      if (!tls_.key_password.empty()) ssl.set_private_key_password(tls_.key_password);
      // Paho only finds out about unreadable files when it connects; say so at start instead.
      try {
        (void)tls::make_client_context(tls_);
      } catch (const std::runtime_error& e) {
        throw plugin::StartError(e.what());
      }
      builder.ssl(std::move(ssl));
    }
    connect_options_ = builder.finalize();
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    if (interrupted_) return retry("stopping");
    if (!client_->is_connected()) {
      if (auto failed = connect()) return *failed;
    }
    mqtt::message_ptr message = make_message(batch);
    try {
      mqtt::delivery_token_ptr token = client_->publish(message);
      if (!wait(*token, publish_timeout_)) {
        disconnect();
        return retry(interrupted_ ? "stopping"
                                  : fmt::format("no PUBACK within {} ms: the batch goes again on a new connection",
                                                publish_timeout_.count()));
      }
      const int reason = token->get_reason_code();
      if (reason >= 0x80) return refused(reason);
      return {plugin::SendStatus::delivered, fmt::format("PUBACK on {}", message->get_topic()), std::nullopt};
    } catch (const mqtt::exception& e) {
      if (e.get_reason_code() >= 0x80) return refused(e.get_reason_code());
      std::string cause;
      {
        std::lock_guard lock(mutex_);
        cause = lost_cause_;
      }
      disconnect();
      return retry(fmt::format("publishing to {} failed: {}{}", message->get_topic(), e.what(),
                               cause.empty() ? "" : " (" + cause + ")"));
    }
  }

  void interrupt() override { interrupted_ = true; }

  void stop() override {
    if (client_) {
      disconnect();
      // Destroying a Paho client while its connect is still under way can hang or crash Paho C
      // (paho.mqtt.c #220, paho.mqtt.cpp #204): let that attempt end first (it has its timeout).
      if (connect_token_ && !connect_token_->is_complete()) {
        try {
          connect_token_->wait_for(connect_timeout_ * static_cast<int>(servers_.size()) + std::chrono::seconds(1));
        } catch (const mqtt::exception&) {
          // It failed: what we waited for.
        }
      }
      connect_token_.reset();
      client_.reset();
    }
  }

 private:
  static plugin::SendResult retry(std::string detail) {
    return {plugin::SendStatus::retry, std::move(detail), std::nullopt};
  }

  plugin::SendResult refused(int reason) {
    const std::string detail = fmt::format("PUBACK reason code 0x{:02x} ({})", reason,
                                           mqtt::exception::reason_code_str(reason));
    return {permanent(reason) ? plugin::SendStatus::rejected : plugin::SendStatus::retry, detail, std::nullopt};
  }

  mqtt::message_ptr make_message(const plugin::OutgoingBatch& batch) const {
    const std::string topic = strings::replace_all(topic_, "{input}", batch.input.empty() ? "mixed" : batch.input);
    if (version_ == MQTTVERSION_5) {
      auto message = mqtt::make_message(topic, batch.body.data(), batch.body.size(), 1, retain_);
      mqtt::properties props;
      props.add({mqtt::property::CONTENT_TYPE, std::string(batch.content_type)});
      props.add({mqtt::property::USER_PROPERTY, "idempotency-key", std::string(batch.idempotency_key)});
      if (!batch.content_encoding.empty()) {
        props.add({mqtt::property::USER_PROPERTY, "content-encoding", std::string(batch.content_encoding)});
      }
      props.add({mqtt::property::USER_PROPERTY, "records", std::to_string(batch.records)});
      message->set_properties(std::move(props));
      return message;
    }
    std::string payload = "{\"idempotency_key\":";
    strings::append_json_string(payload, batch.idempotency_key);
    payload += ",\"content_type\":";
    strings::append_json_string(payload, batch.content_type);
    if (!batch.content_encoding.empty()) {
      payload += ",\"content_encoding\":";
      strings::append_json_string(payload, batch.content_encoding);
    }
    payload += fmt::format(",\"records\":{}}}\n", batch.records);
    payload.append(batch.body);
    return mqtt::make_message(topic, payload.data(), payload.size(), 1, retain_);
  }

  // Waits for a token in slices, so that interrupt() ends the wait soon. Throws what the token
  // throws (mqtt::exception).
  bool wait(mqtt::token& token, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!interrupted_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      if (token.wait_for(std::min(left, std::chrono::milliseconds(100)))) return true;
    }
    return false;
  }

  std::optional<plugin::SendResult> connect() {
    {
      std::lock_guard lock(mutex_);
      lost_cause_.clear();
    }
    const std::string where = fmt::format("connecting to {}", strings::join_alternatives(servers_, false));
    try {
      mqtt::token_ptr token = client_->connect(connect_options_);
      connect_token_ = token;
      if (!wait(*token, connect_timeout_ * static_cast<int>(servers_.size()) + std::chrono::seconds(1))) {
        disconnect();
        return retry(interrupted_ ? "stopping" : where + ": timed out");
      }
      return std::nullopt;
    } catch (const mqtt::exception& e) {
      const std::string tls_error = e.get_return_code() == MQTTASYNC_FAILURE ? diagnose_tls() : std::string();
      std::string detail = fmt::format("{}: {}", where, e.what());
      if (e.get_reason_code() >= 0x80) {
        detail += fmt::format(" (the broker refused: {})", mqtt::exception::reason_code_str(e.get_reason_code()));
      } else if (e.get_return_code() >= 1 && e.get_return_code() <= 5) {
        detail += " (the broker refused the CONNECT: check client_id, username and password)";
      } else if (e.get_return_code() == MQTTASYNC_FAILURE && tls_error.empty()) {
        detail += " (no broker answered: is it running and listening at that address? is the scheme right, tcp:// "
                  "or ssl://?)";
      }
      if (!tls_error.empty()) detail += " (" + tls_error + ")";
      return retry(detail);
    }
  }

  // Paho says only "TCP/TLS connect failure". For ssl:// servers, one TLS handshake of tank's
  // own (common/tls.hpp, the checks Paho makes: chain, name, client certificate) finds out why,
  // in the words inputs.mqtt and outputs.http use. Empty when every handshake succeeds or no
  // TLS server answers.
  std::string diagnose_tls() {
    namespace asio = boost::asio;
    using tcp = asio::ip::tcp;
    for (const auto& uri : servers_) {
      if (interrupted_) return {};
      std::string error;
      auto address = input::parse_broker_uri(uri, error);
      if (!address || !address->tls) continue;
      try {
        asio::io_context io;
        asio::ssl::context context = tls::make_client_context(tls_);
        asio::ssl::stream<tcp::socket> stream(io, context);
        if (std::string e = tls::prepare_client(stream.native_handle(), address->host, tls_.verify); !e.empty()) {
          return e;
        }
        std::string found;
        tcp::resolver resolver(io);
        resolver.async_resolve(address->host, address->port, [&](const boost::system::error_code& rec,
                                                                   const tcp::resolver::results_type& endpoints) {
          if (rec) return;
          auto connected = [&](const boost::system::error_code& cec, const tcp::endpoint&) {
            if (cec) return;
            stream.async_handshake(asio::ssl::stream_base::client, [&](const boost::system::error_code& hec) {
              if (hec) {
                found = tls::explain_handshake_failure(stream.native_handle(), hec, tls_, address->host,
                                                       address->port, "broker");
              }
            });
          };
          asio::async_connect(stream.next_layer(), endpoints, connected);
        });
        // All of it within the connect timeout (at most 5 s), in slices so that stop() ends it.
        const auto until = std::chrono::steady_clock::now() +
                           std::min<std::chrono::milliseconds>(connect_timeout_, std::chrono::seconds(5));
        while (!io.stopped() && !interrupted_ && std::chrono::steady_clock::now() < until) {
          io.run_for(std::chrono::milliseconds(100));
        }
        if (!found.empty()) return found;
      } catch (const std::exception&) {
        continue;  // not reachable now: nothing to explain
      }
    }
    return {};
  }

  void disconnect() {
    try {
      if (client_->is_connected()) client_->disconnect(std::chrono::milliseconds(0))->wait_for(std::chrono::seconds(2));
    } catch (const mqtt::exception&) {
      // Already gone: nothing to release.
    }
  }

  std::string name_;
  std::string agent_id_;
  std::string component_;
  std::vector<std::string> servers_;
  std::string topic_;  // {agent_id} and {output} replaced
  std::string client_id_;
  int version_ = MQTTVERSION_5;
  bool retain_ = false;
  std::chrono::seconds keep_alive_{30};
  std::chrono::milliseconds connect_timeout_{10000};
  std::chrono::milliseconds publish_timeout_{30000};

 public:
  // Connecting to each broker in turn, the PUBACK, and dropping a connection that timed out.
  std::chrono::nanoseconds longest_send() const override {
    return connect_timeout_ * static_cast<int>(servers_.size() + 1) + publish_timeout_ + std::chrono::seconds(5);
  }

 private:
  std::string username_;
  std::string password_;
  tls::ClientSettings tls_;
  mqtt::connect_options connect_options_;
  std::unique_ptr<mqtt::async_client> client_;
  mqtt::token_ptr connect_token_;  // the last connect
  std::atomic<bool> interrupted_{false};
  std::mutex mutex_;  // what Paho's threads report
  std::string lost_cause_;
};

std::unique_ptr<plugin::Output> create(const config::SectionValues& v, const plugin::OutputContext& context) {
  return std::make_unique<MqttOutput>(kOptions.read(v), context);
}

}  // namespace

void register_outputs_mqtt(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::output,
                .name = "mqtt",
                .section = &kSection,
                .summary = "Publishes batches with QoS 1 to an upstream MQTT broker",
                .create_output = create,
                .split_by_input = [](const config::SectionValues& v) {
                  return v.string("topic").find("{input}") != std::string::npos;
                }});
}

}  // namespace tank::plugins

#pragma once

// The Sparkplug B host application of inputs.mqtt (`format = "sparkplug_b"`, Eclipse Sparkplug
// 3.0): what each message under spBv1.0/ becomes.
//
// Records. One JSON record per metric of NBIRTH, DBIRTH, NDATA and DDATA:
//   {"group", "edge_node", "device" (null for the node's own metrics), "metric", "alias",
//    "timestamp" (ms since the epoch: the metric's, else the payload's, else the arrival time),
//    "datatype" (the specification's name), "value", "is_null", "is_historical", "seq",
//    "message" (NBIRTH, NDATA, ...), "stale" (false), "properties" (when the metric has any)}
// with the attributes topic and, for historical metrics, historical = "true" (the event-time
// stages pass such records, marked, instead of dropping them as late). A data metric without a
// datatype takes its birth's.
// NDEATH / DDEATH give one record per metric of the node (and its devices) / of the device, with
// "value": null, "is_null": true, "stale": true and the death's time.
//
// Aliases and sequence. NBIRTH / DBIRTH define the node's / device's metrics (name, alias,
// datatype); NDATA / DDATA that name a metric by alias resolve it there. The tables and the last
// `seq` of each node are the input's state in the queue (WriteBatch::state_puts of the batch that
// holds the records that built or used them), so a kill -9 never loses a table or makes it
// disagree with the records; they are loaded again at start. A gap in `seq` (0-255, wrapping) is
// counted (event seq_gap) and its records kept; an NDEATH whose bdSeq is not its NBIRTH's is an
// old session's will (event stale_death) and changes nothing.
//
// What cannot be resolved is dead-lettered, the whole message once, never dropped silently:
//   sparkplug_bad_topic    a topic that is not spBv1.0/<group>/<type>/<node>[/<device>]
//   sparkplug_bad_payload  not a Sparkplug B payload (the decoder's message)
//   sparkplug_compressed   Eclipse Tahu's compressed payload (uuid SPBV1.0_COMPRESSED), not inflated
//   sparkplug_no_birth     data (or a DBIRTH, DDEATH) from a node / device not born, or dead
//   sparkplug_unknown_alias  metrics whose alias the birth did not define (the others are kept)
//   sparkplug_bad_value    metrics whose value does not fit their datatype (the others are kept)
//   sparkplug_table_limit  a birth whose table would take the tables of all nodes and devices
//                          past kMaxTableBytes (its records are kept; its data then has no birth)
// With `rebirth` on, the last three ask the node for a rebirth (an NCMD with
// "Node Control/Rebirth" = true, at most one per node per rebirth_interval); so does a seq gap.
//
// STATE messages (spBv1.0/STATE/<host>) are JSON, not protobuf: recognised and passed over, like
// NCMD and DCMD (commands to nodes are not plant data). Counted as events.
//
// Not thread-safe: one host per input, used from the input's connection thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "queue/queue.hpp"

namespace tank::sparkplug {

// The parts of a topic in the Sparkplug namespace.
struct Topic {
  enum class Type { nbirth, ndeath, dbirth, ddeath, ndata, ddata, ncmd, dcmd, state };
  Type type{};
  std::string_view group;    // empty for STATE
  std::string_view node;     // the host id for STATE
  std::string_view device;   // empty for node messages
};
// nullopt for a topic outside the namespace (or malformed inside it: a missing device, an
// unknown message type).
std::optional<Topic> parse_topic(std::string_view topic);
std::string_view to_string(Topic::Type type);

// The memory the alias tables of all nodes and devices may take together (names, aliases, types):
// a bound, so that births from ever new node names cannot grow tank without limit.
inline constexpr std::size_t kMaxTableBytes = 64u << 20;

struct HostSettings {
  std::string input;  // the input's name: its state keys are input/<input>/sparkplug/...
  bool rebirth = false;
  std::chrono::milliseconds rebirth_interval{10000};
};

// One record, dead letter, state change or message to publish a Sparkplug message became.
struct Conversion {
  struct Record {
    std::string json;
    bool historical = false;  // the attribute historical = "true" (besides the topic)
  };
  struct DeadLetter {
    std::string reason;
    std::string detail;
  };
  struct Publish {
    std::string topic;
    std::string payload;
  };
  std::vector<Record> records;
  std::optional<DeadLetter> dead_letter;  // of the whole message (its payload as original)
  std::vector<std::pair<std::string, std::string>> state_puts;
  std::vector<Publish> publishes;  // rebirth requests (QoS 0)
  std::size_t bytes() const;       // what the records and state take in a batch
};

class Host {
 public:
  // `event` counts what happened (seq_gap, unknown_alias, no_birth, stale_death, bad_value,
  // bad_payload, bad_topic, rebirth_requested, node_birth, node_death, device_birth,
  // device_death, state_message, command_message).
  Host(HostSettings settings, std::function<void(std::string_view event)> event);

  // Loads the tables and sequence numbers committed before (queue state under this input's
  // prefix). A value that cannot be read is logged and skipped (that node is then unknown until
  // its next birth). Call once, before the first message.
  void load(const queue::Queue& queue);

  // What one message becomes. Its changes to the tables are made at once (later messages see
  // them) and remembered until committed() or rolled back by rollback().
  Conversion convert(std::string_view topic, std::string_view payload, std::int64_t now_ns);

  // The changes made up to mark() (taken after a conversion whose records and state went into a
  // batch) are committed to the queue: forget how to undo them.
  std::size_t mark() const { return undo_.size(); }
  void committed(std::size_t mark);
  // The conversions not committed were discarded (their messages will come again): undoes their
  // changes, newest first.
  void rollback();

  // Nodes and devices known (born, alive or dead), for tests and logs.
  std::size_t nodes() const { return nodes_.size(); }

 private:
  struct MetricDef {
    std::string name;
    std::optional<std::uint64_t> alias;
    std::uint32_t datatype = 0;
  };
  struct Table {
    std::size_t bytes = 0;  // what it holds in memory, about
    std::vector<MetricDef> metrics;
    std::unordered_map<std::uint64_t, std::size_t> by_alias;
    std::unordered_map<std::string, std::size_t> by_name;
  };
  // One node or device. The table is shared between the current entity and the undo log's copies.
  struct Entity {
    bool online = false;
    std::optional<std::uint64_t> bdseq;  // nodes: the NBIRTH's bdSeq
    std::shared_ptr<const Table> table;
  };
  struct NodeSeq {
    std::optional<std::uint64_t> last;
  };
  struct Undo {
    std::string key;               // of entities_ (a node or device key) or, with seq, of seqs_
    bool seq = false;
    std::optional<Entity> entity;  // the entity before the change (nullopt: it did not exist)
    std::optional<NodeSeq> node_seq;
  };

  std::string entity_key(std::string_view group, std::string_view node, std::string_view device) const;
  std::string seq_key(std::string_view group, std::string_view node) const;
  void remember(const std::string& key);
  void remember_seq(const std::string& key);
  std::string encode_entity(const Entity& e) const;
  // Every change of nodes_ goes through these two, which keep table_bytes_.
  void put_entity(const std::string& key, Entity e);
  void erase_entity(const std::string& key);

  HostSettings settings_;
  std::function<void(std::string_view)> event_;
  std::map<std::string, Entity> nodes_;     // key: entity_key (devices too: "<node key>/<device>")
  std::map<std::string, NodeSeq> seqs_;     // key: seq_key
  std::map<std::string, std::chrono::steady_clock::time_point> rebirth_asked_;  // per node
  std::vector<Undo> undo_;
  std::size_t table_bytes_ = 0;  // of the tables in nodes_
};

}  // namespace tank::sparkplug

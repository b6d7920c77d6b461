#pragma once

// The plugins compiled into this tank binary.
//
// plugins/CMakeLists.txt lists every plugin explicitly and generates register_builtin(), which
// calls each plugin's registration function in turn. There is no registration by static
// initialisers, so a static link keeps every plugin.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/schema.hpp"
#include "plugin/input.hpp"
#include "plugin/output.hpp"
#include "plugin/processor.hpp"

namespace tank::plugin {

enum class Kind { input, processor, output };

std::string_view kind_name(Kind kind);  // "input", "processor", "output"
std::string_view kind_section(Kind kind);  // "inputs", "processors", "outputs"

struct Descriptor {
  Kind kind;
  std::string_view name;           // "mqtt"
  const config::Section* section;  // its options; section->path is "inputs.mqtt"
  std::string_view summary;
  InputFactory create_input = {};  // for inputs
  CheckFactory create_check = {};  // for processors that check records before the queue
  StageFactory create_stage = {};  // for processors that read the queue
  OutputFactory create_output = {};  // for outputs
  // For processors: whether this instance needs its inputs' records decoded as JSON.
  bool (*needs_json)(const config::SectionValues& options) = nullptr;
  // For outputs: whether this instance needs every batch to hold the records of one input
  // (e.g. an MQTT topic naming the input).
  bool (*split_by_input)(const config::SectionValues& options) = nullptr;
  // For outputs: whether the output sends each record on its own (OutgoingBatch::each; e.g. one
  // Kafka message per record) rather than the batch's body. The engine then encodes no body
  // (OutgoingBatch::body is empty; the idempotency key hashes the records), and the output may
  // refuse single records (SendResult::rejected_records).
  bool sends_records = false;
  // For outputs: whether the first attempts of batches begin in queue order, each once the batch
  // before it was handed off (OutgoingBatch::handed_off). An output whose max_in_flight instances
  // send through one shared client that keeps order (a Kafka producer) thereby keeps queue order
  // with max_in_flight > 1 too, while the answers of several batches are awaited at once. Only a
  // batch that is retried is overtaken by later ones.
  bool hands_off_in_order = false;
  // For outputs: max_in_flight when the section does not set it; 0: the common default (1).
  unsigned default_max_in_flight = 0;
};

class Registry {
 public:
  // Adds a plugin. Throws std::logic_error for a duplicate (kind, name) or a section whose path
  // is not "<kind section>.<name>" or is not marked repeated.
  void add(const Descriptor& descriptor);
  std::span<const Descriptor> all() const { return plugins_; }
  const Descriptor* find(Kind kind, std::string_view name) const;

 private:
  std::vector<Descriptor> plugins_;
};

// Registers every plugin compiled in (generated from plugins/CMakeLists.txt).
void register_builtin(Registry& registry);

}  // namespace tank::plugin

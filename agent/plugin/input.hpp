#pragma once

// What an input plugin is to the agent.
//
// An input reads from a source (a broker, files, sockets), encodes what it reads into records
// and commits them to the queue with Queue::commit. It acknowledges its source only after the
// commit returned `committed` (invariant 1). When the queue refuses records (overflow =
// "block"), the input stops reading until the queue accepts them again, so that the source
// slows down; what it cannot hold back (a UDP datagram) it counts as dropped. Bad input gets a
// dead letter or a reason, never silence.
//
// Life cycle, driven by the engine from one thread: create (validated options, shared context),
// start(), any number of set_paused() calls from committing threads, stop(), destruction.

#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

#include "common/clock.hpp"
#include "common/clock_sync.hpp"
#include "config/document.hpp"
#include "config/schema.hpp"

namespace tank::metrics {
class Registry;
}
namespace tank::queue {
class Queue;
}
namespace tank::process {
class Route;
}

namespace tank::plugin {

// Raised by a plugin that cannot start (a port in use, a bad certificate). The message is
// logged as it is, so it names what failed and why.
class StartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct InputContext {
  std::string name;  // the instance's unique name; every record it produces carries it
  queue::Queue& queue;
  metrics::Registry& metrics;
  const Clock& clock;
  std::string agent_id;
  std::filesystem::path data_dir;
  // The decoding and checks each record goes through before it is committed (null: none). The
  // input passes it to every input::PendingBatch it makes.
  std::shared_ptr<const process::Route> route = nullptr;
  // Whether the wall clock is trusted (null: always). The input passes it to every
  // input::PendingBatch it makes, which marks records committed while it is not.
  const ClockSync* clock_sync = nullptr;
};

class Input {
 public:
  virtual ~Input() = default;

  // Starts reading. Returns once the input is running; throws StartError when it cannot start.
  virtual void start() = 0;

  // Stops reading and returns once nothing more will be committed. What was read and committed
  // is kept; what was read but not committed is not acknowledged to its source (a broker or a
  // client sends it again, a file is read again from the committed offset). Idempotent; must
  // finish within a few seconds.
  virtual void stop() = 0;

  // The queue started (true) or stopped (false) refusing records. Called from the thread that
  // committed, outside the queue's locks; must not block.
  virtual void set_paused(bool paused) = 0;

  // Where the input listens once started ("127.0.0.1:5170", a socket path), or "" for inputs that
  // do not listen. Port 0 in the configuration shows here as the port the kernel picked.
  virtual std::string listening_on() const { return {}; }
};

using InputFactory = std::function<std::unique_ptr<Input>(const config::SectionValues& options,
                                                         const InputContext& context)>;

// The `format` option of inputs whose records may be JSON, text or raw bytes (inputs.http has
// none: it takes JSON only). The engine reads it to build the input's route (process/route.hpp).
inline constexpr std::string_view kRecordFormats[] = {"json", "text", "raw"};
constexpr config::Option format_option(std::string_view default_value) {
  return {.name = "format",
          .type = config::Type::choice,
          .default_value = default_value,
          .description = "How each record is decoded before it is committed: \"json\" (one JSON value; anything "
                         "else goes to the dead-letter store with reason `decode_error`, the parser's message and "
                         "the byte offset), \"text\" (UTF-8; invalid UTF-8 is a `decode_error`) or \"raw\" (any "
                         "bytes). Processors that read fields (validate with a schema or time_field, aggregate) "
                         "need \"json\".",
          .choices = kRecordFormats};
}

// Options every input has, declared once: `name`.
std::span<const config::Option> input_common_options();

// The name an input instance gets: its `name` option, or the plugin's name when unset.
std::string input_name(const config::SectionValues& values, std::string_view plugin_name);

}  // namespace tank::plugin

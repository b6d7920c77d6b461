#pragma once

// What happens to one input's records before they are committed: decoding by the input's
// `format`, then each record check (processors.validate) that takes the input, in file order.
//
//   payload --decode--> (json document) --check 1--> --check 2--> admitted: a record
//              |                            |            |
//         decode_error                    reason       reason  -> a dead letter
//
// A Route is immutable and shared by every thread of the input; each thread (each
// input::PendingBatch) holds its own Route::Session, which owns the decoder's memory and each
// check's session.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/processor.hpp"
#include "process/processor_metrics.hpp"

namespace tank::process {

class JsonDecoder;

enum class Format {
  json,  // one JSON value per record; anything else is a dead letter (decode_error)
  text,  // UTF-8 text; invalid UTF-8 is a dead letter (decode_error)
  raw,   // any bytes, taken as they are
};
std::optional<Format> parse_format(std::string_view text);
std::string_view to_string(Format format);

class Route {
 public:
  struct Check {
    std::string processor;  // its name, for dead-letter details
    std::shared_ptr<const plugin::RecordCheck> check;
    std::shared_ptr<ProcessorMetrics> metrics;
  };

  Route(std::string input, Format format, std::vector<Check> checks);

  const std::string& input() const { return input_; }
  Format format() const { return format_; }
  const std::vector<Check>& checks() const { return checks_; }

  class Session {
   public:
    explicit Session(const Route& route);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Decides one record. True: commit it as a record. False: `rejection` holds the reason code
    // and a detail that names what refused it (the decoder or the processor) and why.
    // `known_json`: the input already parsed the payload as one JSON value (inputs.http), so
    // decoding is skipped unless a check needs the document.
    bool admit(std::string_view payload, plugin::Rejection& rejection, bool known_json = false);

   private:
    const Route& route_;
    std::unique_ptr<JsonDecoder> decoder_;
    std::vector<std::unique_ptr<plugin::RecordCheck::Session>> checks_;
    bool needs_document_ = false;
  };

  // A session for one input thread. It refers to this Route, which must outlive it (the
  // pipeline keeps routes for as long as any input runs).
  std::unique_ptr<Session> session() const { return std::make_unique<Session>(*this); }

 private:
  std::string input_;
  Format format_;
  std::vector<Check> checks_;
};

}  // namespace tank::process

#pragma once

// Splits an HTTP ingest body into record payloads (Boost.JSON).
//
//   one JSON document  -> one payload: the document as sent (surrounding whitespace removed)
//   a JSON array       -> one payload per element, serialized compactly
//   NDJSON             -> one payload per non-empty line, as sent (several documents in the
//                         body, or `ndjson` set from the Content-Type)
// Every payload is checked to be JSON before any is returned: a body with one bad line is
// refused whole, with the line and byte where parsing failed.

#include <string>
#include <string_view>
#include <vector>

namespace tank::input {

struct JsonBody {
  std::vector<std::string_view> payloads;  // views into the body, or into `owned`
  std::vector<std::string> owned;          // serialized array elements
  std::string error;                       // why the body was refused (empty on success)
};

// `ndjson`: the sender declared NDJSON (application/x-ndjson, application/jsonlines).
// The result's views point into `body` or into its own `owned`: keep both alive while using it.
JsonBody split_json_body(std::string_view body, bool ndjson);

}  // namespace tank::input

#include "process/json_schema.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "process/json_schema_adapter.hpp"
#include "process/json_schema_detail.hpp"

namespace tank::process {
namespace json = boost::json;
using namespace schema_detail;

// =============================================================================================
// JsonSchema

namespace {

// Loads schema text into `impl`; `check_meta` is false only for the meta-schema itself.
void build_schema(JsonSchema::Impl& impl, std::string_view text, const SchemaResolver& resolver, bool check_meta);

const JsonSchema& meta_schema();

}  // namespace

namespace schema_detail {

// Checks a schema document against the draft 7 meta-schema, so that a wrong keyword is reported
// with its place rather than with valijson's bare message.
void check_against_meta_schema(const json::value& document) {
  valijson::Validator validator;
  DocAdapter adapter(document);
  if (validator.validate(meta_schema().impl().schema, adapter, nullptr)) return;
  valijson::ValidationResults results;
  validator.validate(meta_schema().impl().schema, adapter, &results);
  std::vector<Violation> violations;
  report_violations(results, document, 8, &violations);
  throw SchemaDocError{fmt::format("not a valid JSON Schema (draft 7): {}; fix the keywords at those places",
                                   describe(violations))};
}

}  // namespace schema_detail

namespace {

// Thrown from inside valijson's parser (through its fetch callback) so that the error about a
// fetched document keeps its own message.
struct FetchError {
  std::string message;
};

void build_schema(JsonSchema::Impl& impl, std::string_view text, const SchemaResolver& resolver, bool check_meta) {
  try {
    PreparedDocument root = prepare_document(parse_schema_json(text, impl.origin), impl.regexes, check_meta);
    impl.pattern_properties = root.pattern_properties;

    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    add_tank_keywords(parser, impl.regexes);

    auto fetch = [&](const std::string& uri) -> const json::value* {
      // The draft 7 meta-schema is known without fetching it (a schema may refer to it to say
      // "a value here is a schema").
      if (uri == "http://json-schema.org/draft-07/schema" || uri == "https://json-schema.org/draft-07/schema") {
        PreparedDocument doc = prepare_document(parse_schema_json(draft7_meta_schema_text(), uri), impl.regexes, false);
        return new json::value(std::move(doc.value));
      }
      if (!resolver) {
        throw FetchError{fmt::format(
            "$ref to another document \"{}\" cannot be resolved here; copy what it refers to under \"definitions\" "
            "and refer to it as \"#/definitions/...\"",
            uri)};
      }
      std::optional<std::string> fetched;
      try {
        fetched = resolver(uri);
      } catch (const std::exception& e) {
        throw FetchError{fmt::format("$ref to \"{}\" cannot be resolved: {}", uri, e.what())};
      }
      if (!fetched) {
        throw FetchError{fmt::format("$ref to \"{}\" cannot be resolved: no such document", uri)};
      }
      try {
        PreparedDocument doc = prepare_document(parse_schema_json(*fetched, uri), impl.regexes, check_meta);
        impl.pattern_properties = impl.pattern_properties || doc.pattern_properties;
        return new json::value(std::move(doc.value));
      } catch (const SchemaDocError& e) {
        throw FetchError{fmt::format("in the document \"{}\" it refers to: {}", uri, e.message)};
      }
    };
    auto free_document = [](const json::value* document) { delete document; };
    DocAdapter adapter(root.value);
    parser.populateSchema(adapter, impl.schema, fetch, free_document);
    check_compiled_loops(impl.schema);
  } catch (const SchemaDocError& e) {
    if (e.has_origin) throw SchemaError("schema " + e.message);
    throw SchemaError(fmt::format("schema {}: {}", impl.origin, e.message));
  } catch (const FetchError& e) {
    throw SchemaError(fmt::format("schema {}: {}", impl.origin, e.message));
  } catch (const std::exception& e) {
    throw SchemaError(fmt::format("schema {}: not a valid JSON Schema (draft 7): {}; fix the schema", impl.origin,
                                  e.what()));
  }
}

}  // namespace

JsonSchema::JsonSchema(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
JsonSchema::~JsonSchema() = default;

const std::string& JsonSchema::origin() const { return impl_->origin; }

namespace {

const JsonSchema& meta_schema() {
  // Built once, then only read (by any thread).
  static const std::shared_ptr<const JsonSchema> meta = [] {
    auto impl = std::make_unique<JsonSchema::Impl>();
    impl->origin = "draft-07 meta-schema";
    build_schema(*impl, draft7_meta_schema_text(), {}, false);
    return std::make_shared<const JsonSchema>(std::move(impl));
  }();
  return *meta;
}

}  // namespace

std::shared_ptr<const JsonSchema> JsonSchema::parse(std::string_view text, std::string origin, Resolver resolver) {
  auto impl = std::make_unique<Impl>();
  impl->origin = std::move(origin);
  build_schema(*impl, text, resolver, true);
  return std::make_shared<const JsonSchema>(std::move(impl));
}

namespace {

// Reads a whole file; nullopt and errno's text in `error` when it cannot.
std::optional<std::string> read_whole_file(const std::filesystem::path& file, std::string* error) {
  constexpr std::size_t kMaxSchemaBytes = 16 * 1024 * 1024;
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::strerror(errno);
    return std::nullopt;
  }
  std::string content;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > kMaxSchemaBytes) {
      *error = fmt::format("larger than {} MiB, which is not a schema", kMaxSchemaBytes >> 20);
      ::close(fd);
      return std::nullopt;
    }
  }
  ::close(fd);
  return content;
}

bool has_scheme(const std::string& uri) {
  const std::size_t colon = uri.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  return std::all_of(uri.begin(), uri.begin() + static_cast<std::ptrdiff_t>(colon), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
           c == '.';
  });
}

}  // namespace

std::shared_ptr<const JsonSchema> JsonSchema::load(const std::filesystem::path& file) {
  std::string error;
  std::optional<std::string> text = read_whole_file(file, &error);
  if (!text) {
    throw SchemaError(fmt::format("schema {}: cannot read it: {}; check the path and that tank may read the file",
                                  file.string(), error));
  }
  const std::filesystem::path dir = file.parent_path();
  Resolver next_to_file = [dir](const std::string& uri) -> std::optional<std::string> {
    if (has_scheme(uri)) {
      throw std::runtime_error(
          "tank does not fetch schemas from URIs; save the document next to the schema and refer to it by its "
          "relative path");
    }
    std::string why;
    std::optional<std::string> content = read_whole_file(dir / uri, &why);
    if (!content) throw std::runtime_error(fmt::format("cannot read {}: {}", (dir / uri).string(), why));
    return content;
  };
  return parse(*text, file.string(), std::move(next_to_file));
}

}  // namespace tank::process

// JsonDecoder (json_schema.hpp): one reusable parser and arena per thread.

#include "process/json_schema.hpp"

#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace tank::process {
namespace json = boost::json;

// =============================================================================================
// JsonDecoder

namespace {

// The arena grows to hold the largest document seen, up to this; a larger document still
// decodes, with the excess allocated for that call only.
constexpr std::size_t kInitialArenaBytes = 4 * 1024;
constexpr std::size_t kMaxArenaBytes = 1024 * 1024;

// Upstream of the arena: counts what the arena had to ask for beyond its buffer, so that the
// decoder knows when to grow the buffer.
class CountingResource final : public json::memory_resource {
 public:
  std::size_t requested() const { return requested_; }
  void reset() { requested_ = 0; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    requested_ += bytes;
    return ::operator new(bytes, std::align_val_t(align));
  }
  // Unsized: Boost.JSON 1.81's monotonic_resource::release() passes a size that differs from
  // the one it allocated (AddressSanitizer reports new-delete-type-mismatch with sized delete).
  void do_deallocate(void* p, std::size_t /*bytes*/, std::size_t align) override {
    ::operator delete(p, std::align_val_t(align));
  }
  bool do_is_equal(const json::memory_resource& other) const noexcept override { return this == &other; }

  std::size_t requested_ = 0;
};

}  // namespace

struct JsonDecoder::State {
  explicit State(std::size_t depth) : max_depth(depth), parser(json::storage_ptr(), options(depth)) {
    rebuild_arena(kInitialArenaBytes);
  }

  static json::parse_options options(std::size_t depth) {
    json::parse_options o;
    o.max_depth = depth;
    return o;
  }

  void rebuild_arena(std::size_t bytes) {
    document.reset();
    arena.reset();
    buffer.reset(new unsigned char[bytes]);
    buffer_size = bytes;
    arena.emplace(buffer.get(), buffer_size, json::storage_ptr(&upstream));
  }

  std::size_t max_depth;
  json::parser parser;
  CountingResource upstream;
  std::unique_ptr<unsigned char[]> buffer;
  std::size_t buffer_size = 0;
  std::optional<json::monotonic_resource> arena;
  std::optional<json::value> document;  // lives in `arena`
};

JsonDecoder::JsonDecoder(std::size_t max_depth) : state_(std::make_unique<State>(max_depth)) {}
JsonDecoder::~JsonDecoder() = default;
JsonDecoder::JsonDecoder(JsonDecoder&&) noexcept = default;
JsonDecoder& JsonDecoder::operator=(JsonDecoder&&) noexcept = default;

std::size_t JsonDecoder::max_depth() const { return state_->max_depth; }

const json::value* JsonDecoder::decode(std::string_view bytes, DecodeError* error) {
  State& s = *state_;
  // The previous document goes first: its memory is about to be recycled. With a monotonic
  // arena its destructor frees nothing, so this is cheap.
  s.document.reset();
  if (s.upstream.requested() > 0 && s.buffer_size < kMaxArenaBytes) {
    std::size_t want = s.buffer_size;
    while (want < s.buffer_size + s.upstream.requested() && want < kMaxArenaBytes) want *= 2;
    s.rebuild_arena(std::min(want, kMaxArenaBytes));
  } else {
    s.arena->release();
  }
  s.upstream.reset();

  auto fail = [&](std::string message, std::size_t offset) -> const json::value* {
    if (error != nullptr) {
      error->message = std::move(message);
      error->offset = std::min(offset, bytes.size());
    }
    s.parser.reset();  // drop the partial document before the arena is recycled
    return nullptr;
  };

  s.parser.reset(json::storage_ptr(&*s.arena));
  json::error_code ec;
  const std::size_t consumed = s.parser.write_some(bytes.data(), bytes.size(), ec);
  if (ec) {
    std::string message = ec.message();
    if (ec == json::error::too_deep) message += fmt::format(" (nested deeper than {})", s.max_depth);
    return fail(std::move(message), consumed);
  }
  // The parser stops after the value and the whitespace that follows it.
  std::size_t rest = consumed;
  while (rest < bytes.size() &&
         (bytes[rest] == ' ' || bytes[rest] == '\t' || bytes[rest] == '\n' || bytes[rest] == '\r')) {
    ++rest;
  }
  if (rest < bytes.size()) {
    return fail(json::make_error_code(json::error::extra_data).message() + " after the JSON value", rest);
  }
  s.document.emplace(s.parser.release());
  return &*s.document;
}

}  // namespace tank::process

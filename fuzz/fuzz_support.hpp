#pragma once

// What the fuzz targets share. Each target is a function `int <name>_target(data, size)` that
// feeds the bytes through tank's own code (never a copy of its logic) and checks what must hold
// whatever the bytes. TANK_FUZZ_TARGET makes it libFuzzer's entry point in the fuzz build
// (TANK_FUZZ_ENTRY, fuzz/CMakeLists.txt); the unit tests call the same functions on the
// checked-in corpus (tests/unit/fuzz_corpus_test.cpp).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>

#ifdef TANK_FUZZ_ENTRY
#define TANK_FUZZ_TARGET(function)                                                   \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { \
    return function(data, size);                                                     \
  }
#else
#define TANK_FUZZ_TARGET(function)
#endif

namespace tank::fuzz {

// A property that must hold for every input; a violation aborts, which libFuzzer reports as a
// crash with the input that caused it.
inline void require(bool holds, const char* what) {
  if (!holds) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what);
    std::abort();
  }
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Takes control bytes (flags, sizes) off the front of an input; 0 once it is used up.
class Controls {
 public:
  Controls(const std::uint8_t*& data, std::size_t& size) : data_(data), size_(size) {}
  std::uint8_t byte() {
    if (size_ == 0) return 0;
    --size_;
    return *data_++;
  }

 private:
  const std::uint8_t*& data_;
  std::size_t& size_;
};

// A Boost.Asio SyncReadStream over bytes in memory, handed out at most `chunk` bytes per read,
// then end of stream: Beast's own read algorithms (http::read_header, http::read) run on it the
// way the agent's connections run them on sockets.
class MemoryStream {
 public:
  MemoryStream(std::string_view bytes, std::size_t chunk) : bytes_(bytes), chunk_(std::max<std::size_t>(chunk, 1)) {}

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    if (bytes_.empty()) {
      ec = boost::asio::error::eof;
      return 0;
    }
    ec = {};
    const std::size_t n = boost::asio::buffer_copy(
        buffers, boost::asio::buffer(bytes_.data(), std::min(chunk_, bytes_.size())));
    bytes_.remove_prefix(n);
    return n;
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

  bool done() const { return bytes_.empty(); }

 private:
  std::string_view bytes_;
  std::size_t chunk_;
};

}  // namespace tank::fuzz

#pragma once

// Splits a byte stream into lines: newline-delimited records for stream sockets and files.
//
// A line is the bytes before '\n', without a trailing '\r'. Empty lines carry nothing and are
// skipped. A line longer than max_line_bytes is never split into records: it is reported once,
// with its first bytes (for the dead letter) and its full length, and skipped to its end.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "queue/dead_letter.hpp"

namespace tank::input {

class LineFramer {
 public:
  explicit LineFramer(std::size_t max_line_bytes) : max_(max_line_bytes) {}

  // Feeds bytes. Calls on_line(std::string_view line) for each complete line and
  // on_oversize(std::string_view head, std::uint64_t length) for each line over the limit.
  // Views are valid only during the call.
  template <class OnLine, class OnOversize>
  void feed(std::string_view data, OnLine&& on_line, OnOversize&& on_oversize);

  // End of stream: a final line without '\n' is delivered (a connection closed after its last
  // record, a file whose last line is complete but unterminated is handled by the caller).
  template <class OnLine, class OnOversize>
  void finish(OnLine&& on_line, OnOversize&& on_oversize);

  // Bytes held of a line not yet terminated.
  std::size_t pending_bytes() const { return discarding_ ? 0 : partial_.size(); }
  bool in_oversize_line() const { return discarding_; }

  // Where the framer is inside the current line: what a connection handed over across a reload
  // carries to the framer that goes on reading it (input/handover.hpp).
  struct State {
    std::string partial;
    bool discarding = false;
    std::string oversize_head;
    std::uint64_t oversize_length = 0;
    char oversize_last = '\0';
  };
  // Moves the state out; the framer is then at the start of a line.
  State take_state() {
    State s{std::move(partial_), discarding_, std::move(oversize_head_), oversize_length_, oversize_last_};
    restore({});
    return s;
  }
  // Goes on from `s`, as if the bytes that led to it had been fed to this framer.
  void restore(State s) {
    partial_ = std::move(s.partial);
    discarding_ = s.discarding;
    oversize_head_ = std::move(s.oversize_head);
    oversize_length_ = s.oversize_length;
    oversize_last_ = s.oversize_last;
  }

 private:
  static std::string_view trim_cr(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  }

  std::size_t max_;
  std::string partial_;          // the start of the current line (at most max_ + 1 bytes)
  bool discarding_ = false;      // inside a line that is too long
  std::string oversize_head_;    // its first bytes, for the dead letter
  std::uint64_t oversize_length_ = 0;  // its bytes so far, a final '\r' included
  char oversize_last_ = '\0';          // its last byte so far
  // The length reported for the oversize line: without a final '\r', as for a line taken.
  std::uint64_t oversize_content() const { return oversize_length_ - (oversize_last_ == '\r' ? 1 : 0); }
};

template <class OnLine, class OnOversize>
void LineFramer::feed(std::string_view data, OnLine&& on_line, OnOversize&& on_oversize) {
  constexpr std::size_t cap = queue::kMaxDeadLetterBytes;
  // The first bytes of partial_ + chunk, for a dead letter.
  auto head_of = [&](std::string_view chunk) {
    std::string head = partial_.substr(0, cap);
    if (head.size() < cap) head.append(chunk.substr(0, cap - head.size()));
    return head;
  };
  while (!data.empty()) {
    const std::size_t nl = data.find('\n');
    const std::string_view chunk = nl == std::string_view::npos ? data : data.substr(0, nl);
    if (discarding_) {
      oversize_length_ += chunk.size();
      if (!chunk.empty()) oversize_last_ = chunk.back();
      if (oversize_head_.size() < cap) oversize_head_.append(chunk.substr(0, cap - oversize_head_.size()));
      if (nl == std::string_view::npos) return;
      on_oversize(std::string_view(oversize_head_), oversize_content());
      discarding_ = false;
      oversize_head_.clear();
      oversize_length_ = 0;
      data.remove_prefix(nl + 1);
      continue;
    }
    const std::size_t total = partial_.size() + chunk.size();
    if (nl == std::string_view::npos) {
      // Unterminated: hold it, unless it is already too long even if its end turns out to be "\r".
      if (total > max_ + 1) {
        oversize_head_ = head_of(chunk);
        oversize_length_ = total;
        oversize_last_ = chunk.back();  // total > max_ + 1 > partial_.size(): chunk is not empty
        partial_.clear();
        discarding_ = true;
      } else {
        partial_.append(chunk);
      }
      return;
    }
    const char last = !chunk.empty() ? chunk.back() : (!partial_.empty() ? partial_.back() : '\0');
    const std::size_t content = total - (last == '\r' ? 1 : 0);
    if (content > max_) {
      std::string head = head_of(chunk);
      partial_.clear();
      on_oversize(std::string_view(head), static_cast<std::uint64_t>(content));
    } else if (partial_.empty()) {
      if (content > 0) on_line(chunk.substr(0, content));
    } else {
      partial_.append(chunk);
      if (content > 0) on_line(std::string_view(partial_).substr(0, content));
      partial_.clear();
    }
    data.remove_prefix(nl + 1);
  }
}

template <class OnLine, class OnOversize>
void LineFramer::finish(OnLine&& on_line, OnOversize&& on_oversize) {
  if (discarding_) {
    on_oversize(std::string_view(oversize_head_), oversize_content());
    discarding_ = false;
    oversize_head_.clear();
    oversize_length_ = 0;
  } else if (!partial_.empty()) {
    // partial_ may hold max_ + 1 bytes (room for a '\r' that a '\n' would have followed).
    std::string_view line = trim_cr(partial_);
    if (line.size() > max_) {
      on_oversize(std::string_view(partial_).substr(0, queue::kMaxDeadLetterBytes), line.size());
    } else if (!line.empty()) {
      on_line(line);
    }
  }
  partial_.clear();
}

}  // namespace tank::input

// Reads the recorder's log (trace.hpp): entries in log order, then sorted by the instant each call returned.

#include "powerloss/trace.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "powerloss/recorder/record_format.h"

namespace tank::powerloss {

std::string_view to_string(Op::Kind kind) {
  switch (kind) {
    case Op::Kind::create: return "create";
    case Op::Kind::write: return "write";
    case Op::Kind::truncate: return "truncate";
    case Op::Kind::fallocate: return "fallocate";
    case Op::Kind::sync: return "sync";
    case Op::Kind::sync_range: return "sync_file_range";
    case Op::Kind::sync_all: return "sync_all";
    case Op::Kind::mkdir: return "mkdir";
    case Op::Kind::rename: return "rename";
    case Op::Kind::unlink: return "unlink";
    case Op::Kind::rmdir: return "rmdir";
  }
  return "?";
}

std::string Op::describe() const {
  switch (kind) {
    case Kind::write:
      return fmt::format("write {} @{} +{}{}", path, offset, data.size(), dsync ? " (O_DSYNC)" : "");
    case Kind::truncate: return fmt::format("truncate {} to {}", path, offset);
    case Kind::fallocate: return fmt::format("fallocate {} @{} +{} mode {}", path, offset, length, mode);
    case Kind::sync: return fmt::format("{} {}{}", datasync ? "fdatasync" : "fsync", path.empty() ? "." : path, dir ? "/" : "");
    case Kind::rename: return fmt::format("rename {} -> {}", path, path2);
    default: return fmt::format("{} {}", to_string(kind), path);
  }
}

namespace {

// `abs` relative to `root`; throws when it lies outside.
std::string relative(const std::string& root, std::string_view abs, std::size_t at) {
  if (abs == root) return "";
  if (abs.size() > root.size() && abs.substr(0, root.size()) == root && abs[root.size()] == '/') {
    return std::string(abs.substr(root.size() + 1));
  }
  throw std::runtime_error(fmt::format("recorder log entry at byte {} names {} outside {}", at, abs, root));
}

}  // namespace

Trace Trace::load(const std::filesystem::path& log) {
  Trace t;
  std::ifstream in(log, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read the recorder log " + log.string());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string& bytes = t.storage_.emplace_back(ss.str());
  std::size_t at = 0;
  while (at < bytes.size()) {
    tank_rec_header h{};
    const std::size_t left = bytes.size() - at;
    if (left < sizeof h) {
      t.torn_tail_ = true;
      break;
    }
    std::memcpy(&h, bytes.data() + at, sizeof h);
    if (h.magic != TANK_REC_MAGIC) throw std::runtime_error(fmt::format("{}: no entry at byte {}", log.string(), at));
    if (h.total > left) {
      t.torn_tail_ = true;
      break;
    }
    const std::size_t data_bytes = h.kind == TANK_REC_WRITE ? h.length : 0;
    if (sizeof h + h.path_len + h.path2_len + data_bytes + 4 != h.total) {
      throw std::runtime_error(fmt::format("{}: entry at byte {} has inconsistent lengths", log.string(), at));
    }
    std::uint32_t trailer = 0;
    std::memcpy(&trailer, bytes.data() + at + h.total - 4, 4);
    if (trailer != (TANK_REC_TRAILER ^ h.total)) {
      if (at + h.total == bytes.size()) {
        t.torn_tail_ = true;
        break;
      }
      throw std::runtime_error(fmt::format("{}: entry at byte {} has a bad trailer", log.string(), at));
    }
    const char* p = bytes.data() + at + sizeof h;
    std::string_view path(p, h.path_len);
    std::string_view path2(p + h.path_len, h.path2_len);
    std::string_view data(p + h.path_len + h.path2_len, data_bytes);
    Op op;
    op.start_ns = h.start_ns;
    op.end_ns = h.end_ns;
    op.pid = h.pid;
    op.tid = h.tid;
    op.dev = h.dev;
    op.ino = h.ino;
    op.offset = h.offset;
    op.length = h.length;
    op.dir = (h.flags & TANK_REC_DIR) != 0;
    op.dsync = (h.flags & TANK_REC_DSYNC) != 0;
    op.datasync = (h.flags & TANK_REC_DATASYNC) != 0;
    bool keep = true;
    switch (h.kind) {
      case TANK_REC_BEGIN:
        if (t.root_.empty()) t.root_ = std::string(path);
        if (t.root_ != path) throw std::runtime_error(fmt::format("{}: two recorded directories", log.string()));
        ++t.processes_;
        keep = false;
        break;
      case TANK_REC_OPEN:
        // Only what changes the disk: a creation, and O_TRUNC of an existing file.
        keep = false;
        if (h.flags & TANK_REC_CREATED) {
          Op c = op;
          c.kind = Op::Kind::create;
          c.path = relative(t.root_, path, at);
          t.ops_.push_back(c);
        }
        if (h.flags & TANK_REC_TRUNCATED) {
          Op c = op;
          c.kind = Op::Kind::truncate;
          c.offset = 0;
          c.path = relative(t.root_, path, at);
          t.ops_.push_back(c);
        }
        break;
      case TANK_REC_WRITE: op.kind = Op::Kind::write; op.data = data; break;
      case TANK_REC_TRUNCATE: op.kind = Op::Kind::truncate; break;
      case TANK_REC_FALLOCATE: op.kind = Op::Kind::fallocate; op.mode = h.result; break;
      case TANK_REC_SYNC: op.kind = Op::Kind::sync; break;
      case TANK_REC_SYNC_RANGE: op.kind = Op::Kind::sync_range; break;
      case TANK_REC_SYNC_ALL: op.kind = Op::Kind::sync_all; path = t.root_; break;
      case TANK_REC_MKDIR: op.kind = Op::Kind::mkdir; break;
      case TANK_REC_RENAME: op.kind = Op::Kind::rename; break;
      case TANK_REC_UNLINK: op.kind = Op::Kind::unlink; break;
      case TANK_REC_RMDIR: op.kind = Op::Kind::rmdir; break;
      default: throw std::runtime_error(fmt::format("{}: entry at byte {} has unknown kind {}", log.string(), at, h.kind));
    }
    if (keep) {
      if (t.root_.empty()) throw std::runtime_error(fmt::format("{}: entries before the first BEGIN", log.string()));
      op.path = relative(t.root_, path, at);
      if (op.kind == Op::Kind::rename) {
        if (path.empty() || path2.empty()) {
          throw std::runtime_error(fmt::format("{}: a rename into or out of the recorded directory is not modelled ({} -> {})",
                                               log.string(), path, path2));
        }
        op.path2 = relative(t.root_, path2, at);
      }
      t.ops_.push_back(std::move(op));
    }
    at += h.total;
  }
  t.sort();
  return t;
}

Trace Trace::from_ops(std::vector<Op> ops, std::string root) {
  Trace t;
  t.root_ = std::move(root);
  t.processes_ = 1;
  for (auto& op : ops) {
    if (op.kind == Op::Kind::write) op.data = t.storage_.emplace_back(op.data);
  }
  t.ops_ = std::move(ops);
  t.sort();
  return t;
}

void Trace::sort() {
  std::stable_sort(ops_.begin(), ops_.end(), [](const Op& a, const Op& b) { return a.end_ns < b.end_ns; });
}

}  // namespace tank::powerloss

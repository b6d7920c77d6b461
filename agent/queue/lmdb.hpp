#pragma once

// Thin RAII wrappers over the LMDB C API, used only inside agent/queue.
//
// Failures throw lmdb::Error carrying LMDB's code, so callers can tell MDB_MAP_FULL, ENOSPC or
// MDB_CORRUPTED apart. Keys of the records database are big-endian u64 sequence numbers, so
// LMDB's default byte-wise ordering is numeric ordering and MDB_APPEND applies.

#include <lmdb.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tank::queue::lmdb {

class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& what);
  int code() const { return code_; }

 private:
  int code_;
};

// Throws Error(rc, "<what>: <LMDB's message>") when rc != 0.
void check(int rc, const char* what);

// True for the codes that mean the file's content is not a sound LMDB database.
bool is_damage(int rc);

inline MDB_val value_of(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view view_of(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

// Sequence number keys.
struct SeqKey {
  unsigned char bytes[8];
  explicit SeqKey(std::uint64_t seq) {
    for (int i = 7; i >= 0; --i) {
      bytes[i] = static_cast<unsigned char>(seq & 0xff);
      seq >>= 8;
    }
  }
  MDB_val val() { return MDB_val{8, bytes}; }
};
// Decodes a sequence key; throws Error(MDB_CORRUPTED) when the key is not 8 bytes.
std::uint64_t seq_of(const MDB_val& key);

std::string encode_u64(std::uint64_t v);
// Decodes an 8-byte little-endian value; throws Error(MDB_CORRUPTED) otherwise.
std::uint64_t decode_u64(const MDB_val& v);

class Env {
 public:
  Env();
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  MDB_env* get() const { return env_; }

 private:
  MDB_env* env_ = nullptr;
};

class Txn {
 public:
  Txn(MDB_env* env, unsigned flags);
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  MDB_txn* get() const { return txn_; }
  void commit();
  void abort();

 private:
  MDB_txn* txn_ = nullptr;
};

class Cursor {
 public:
  Cursor(MDB_txn* txn, MDB_dbi dbi);
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  MDB_cursor* get() const { return cursor_; }
  // Returns false at MDB_NOTFOUND, throws on other errors.
  bool get(MDB_val& key, MDB_val& value, MDB_cursor_op op);

 private:
  MDB_cursor* cursor_ = nullptr;
};

}  // namespace tank::queue::lmdb

#include "queue/lmdb.hpp"

#include <cerrno>

#include <fmt/format.h>

namespace tank::queue::lmdb {

Error::Error(int code, const std::string& what) : std::runtime_error(what), code_(code) {}

void check(int rc, const char* what) {
  if (rc != 0) throw Error(rc, fmt::format("{}: {}", what, mdb_strerror(rc)));
}

bool is_damage(int rc) {
  switch (rc) {
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
    case MDB_BAD_TXN:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
      return true;
    default:
      return false;
  }
}

std::uint64_t seq_of(const MDB_val& key) {
  if (key.mv_size != 8) throw Error(MDB_CORRUPTED, fmt::format("record key of {} bytes, expected 8", key.mv_size));
  const auto* p = static_cast<const unsigned char*>(key.mv_data);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

std::string encode_u64(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) {
    out[static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

std::uint64_t decode_u64(const MDB_val& v) {
  if (v.mv_size != 8) throw Error(MDB_CORRUPTED, fmt::format("stored number of {} bytes, expected 8", v.mv_size));
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  std::uint64_t out = 0;
  for (int i = 7; i >= 0; --i) out = (out << 8) | p[i];
  return out;
}

Env::Env() { check(mdb_env_create(&env_), "mdb_env_create"); }
Env::~Env() {
  if (env_ != nullptr) mdb_env_close(env_);
}

Txn::Txn(MDB_env* env, unsigned flags) { check(mdb_txn_begin(env, nullptr, flags, &txn_), "mdb_txn_begin"); }
Txn::~Txn() {
  if (txn_ != nullptr) mdb_txn_abort(txn_);
}
void Txn::commit() {
  MDB_txn* t = txn_;
  txn_ = nullptr;
  check(mdb_txn_commit(t), "mdb_txn_commit");
}
void Txn::abort() {
  if (txn_ != nullptr) mdb_txn_abort(txn_);
  txn_ = nullptr;
}

Cursor::Cursor(MDB_txn* txn, MDB_dbi dbi) { check(mdb_cursor_open(txn, dbi, &cursor_), "mdb_cursor_open"); }
Cursor::~Cursor() {
  if (cursor_ != nullptr) mdb_cursor_close(cursor_);
}
bool Cursor::get(MDB_val& key, MDB_val& value, MDB_cursor_op op) {
  int rc = mdb_cursor_get(cursor_, &key, &value, op);
  if (rc == MDB_NOTFOUND) return false;
  check(rc, "mdb_cursor_get");
  return true;
}

}  // namespace tank::queue::lmdb

#pragma once

// Writes a queue's LMDB environment directly, as an older tank (or a test of damage) left it:
// one write transaction, committed by commit() (else aborted), the environment closed at the end.

#include <catch2/catch.hpp>
#include <lmdb.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace tank::test {

class RawLmdb {
 public:
  explicit RawLmdb(const std::filesystem::path& dir, unsigned maxdbs = 8) {
    std::filesystem::create_directories(dir);
    REQUIRE(mdb_env_create(&env_) == 0);
    mdb_env_set_maxdbs(env_, maxdbs);
    mdb_env_set_mapsize(env_, 64 << 20);
    REQUIRE(mdb_env_open(env_, dir.c_str(), 0, 0640) == 0);
    REQUIRE(mdb_txn_begin(env_, nullptr, 0, &txn_) == 0);
  }
  ~RawLmdb() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
    mdb_env_close(env_);
  }
  RawLmdb(const RawLmdb&) = delete;
  RawLmdb& operator=(const RawLmdb&) = delete;

  MDB_txn* txn() const { return txn_; }
  MDB_dbi db(const char* name, bool create = false) {
    MDB_dbi dbi = 0;
    REQUIRE(mdb_dbi_open(txn_, name, create ? MDB_CREATE : 0, &dbi) == 0);
    return dbi;
  }
  void put(MDB_dbi dbi, std::string_view key, std::string_view value) {
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    REQUIRE(mdb_put(txn_, dbi, &k, &v, 0) == 0);
  }
  void commit() {
    REQUIRE(mdb_txn_commit(txn_) == 0);
    txn_ = nullptr;
  }

  // A meta value (u64, native order: little-endian on every platform tank runs on).
  static std::string u64(std::uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
  // A record key: the sequence number big-endian.
  static std::string seq_key(std::uint64_t seq) {
    std::string key(8, '\0');
    for (int i = 0; i < 8; ++i) key[static_cast<std::size_t>(7 - i)] = static_cast<char>((seq >> (8 * i)) & 0xff);
    return key;
  }

 private:
  MDB_env* env_ = nullptr;
  MDB_txn* txn_ = nullptr;
};

}  // namespace tank::test

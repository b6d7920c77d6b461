#pragma once

// librdkafka's mock Kafka cluster in a child process (tests/support/kafka_mock_cluster.cpp, which
// says what each command does), driven over pipes: the peer for outputs.kafka's tests.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tank::test {

class KafkaMock {
 public:
  struct Message {
    int partition = 0;
    std::int64_t offset = 0;
    std::optional<std::string> key;
    std::map<std::string, std::string> headers;
    std::string value;
  };

  // Starts a cluster of `brokers` with `topics` ("name:partitions:replication"); REQUIREs that it
  // printed its bootstrap list.
  explicit KafkaMock(int brokers = 3, std::vector<std::string> topics = {"t:3:3"});
  ~KafkaMock();  // quit, or SIGKILL when it does not exit
  KafkaMock(const KafkaMock&) = delete;
  KafkaMock& operator=(const KafkaMock&) = delete;

  const std::string& bootstraps() const { return bootstraps_; }
  // "host:port" of each broker, as TOML: ["127.0.0.1:1", ...].
  std::string brokers_toml() const;
  // Sends one command and returns its answer line ("ok ..." or "error: ..."); REQUIREs an answer.
  std::string command(const std::string& line);
  // Every message of `topic`, partitions in order, offsets in order within one.
  std::vector<Message> dump(const std::string& topic);

 private:
  std::string read_line();

  pid_t pid_ = -1;
  int to_ = -1;    // its stdin
  int from_ = -1;  // its stdout
  std::string buffer_;
  std::string bootstraps_;
};

}  // namespace tank::test

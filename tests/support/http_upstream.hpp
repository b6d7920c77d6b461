#pragma once

// A real HTTP/1.1 server for the output tests (Boost.Beast, on 127.0.0.1, a port the kernel
// picks): it records every request (its Idempotency-Key, its body decompressed) and answers from
// a script -- a status, a Retry-After, a delay, or a connection reset -- then 200. With TLS it
// serves https (OpenSSL), optionally requiring a client certificate.

#include <chrono>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tank::test {

// `bytes` decompressed per a Content-Encoding ("zstd": concatenated frames, "gzip": members,
// anything else: as it is). Throws std::runtime_error for bytes that do not decompress.
std::string decompress_body(const std::string& encoding, const std::string& bytes);

class HttpUpstream {
 public:
  struct Reply {
    unsigned status = 200;
    std::string retry_after = {};  // sent when not empty
    bool reset = false;       // close the connection without an answer
    std::chrono::milliseconds delay{0};
    std::string body = {};
    std::string raw = {};  // when set: these bytes instead of a response, then the connection closes
  };
  struct Received {
    std::string key;       // the Idempotency-Key header
    std::string encoding;  // Content-Encoding
    std::string body;      // decompressed
    std::string header(const std::string& name) const;
    unsigned answered = 0;  // the status sent, 0 for a reset
    std::chrono::steady_clock::time_point at;  // when the request was read
    std::vector<std::pair<std::string, std::string>> headers;
    std::string client_subject;  // TLS: the common name of the client's certificate, if it sent one
  };
  struct Tls {
    std::filesystem::path cert_file, key_file;  // the server's certificate (PEM) and key
    std::filesystem::path client_ca_file = {};  // set: a client certificate signed by this CA is required
  };

  HttpUpstream();
  explicit HttpUpstream(const Tls& tls);
  ~HttpUpstream();
  HttpUpstream(const HttpUpstream&) = delete;
  HttpUpstream& operator=(const HttpUpstream&) = delete;

  std::string url(const std::string& path = "/ingest") const;
  // Replies to the next requests, in order; after them, 200 (or chaos).
  void script(std::vector<Reply> replies);
  // After the script: each reply drawn at random (seeded) from these weights, 200 otherwise.
  struct Chaos {
    unsigned seed = 1;
    double status_503 = 0, status_429 = 0, reset = 0, slow = 0, status_400 = 0;  // probabilities
    std::chrono::milliseconds slow_delay{1500};
  };
  void chaos(const Chaos& chaos);
  std::vector<Received> received() const;
  // TLS: connections from now on are served with this certificate (a renewed one).
  void set_tls(const Tls& tls);
  // TLS: handshakes that failed, and how the last one failed.
  std::size_t failed_handshakes() const;
  // The upstream goes away: its listening socket is closed (connections are refused) and open
  // connections are reset. up() listens again on the same port.
  void down();
  void up();

 private:
  void reset_connections();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tank::test

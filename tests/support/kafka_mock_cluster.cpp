// kafka_mock_cluster: a Kafka cluster on loopback for the tests of outputs.kafka.
//
// What and why
// ------------
// The tests of outputs.kafka run the real tank binary against a Kafka protocol peer that nobody
// here wrote: the mock cluster built into librdkafka (rdkafka_mock.h, librdkafka 2.0.2 on this
// machine). It speaks the broker side of the protocol (Metadata, Produce with idempotence
// sequence checks, Fetch, ListOffsets, groups, ...) and lets a test inject faults. This program
// hosts such a cluster in its own process, so a test starts it as a child, points tank at the
// printed bootstrap addresses, and drives faults deterministically over stdin/stdout while tank
// runs (and across kill -9 of tank). It uses only librdkafka's C API and the standard library.
//
// Usage
// -----
//   kafka_mock_cluster [--brokers N] [--topic NAME:PARTITIONS[:REPLICATION]]... [--scan-timeout-ms MS]
//
//   --brokers N          brokers with ids 1..N (default 3)
//   --topic ...          a topic to create (repeatable). Partition p is led by broker
//                        p % min(3, N) + 1 (the mock's replica set of every partition is its first
//                        min(3, N) brokers; the REPLICATION number is only checked to be <= N:
//                        librdkafka 2.0.2's mock ignores it).
//   --scan-timeout-ms    how long `count` and `dump` may take before answering an error
//                        (default 10000; a partition whose leader is down never reaches its end).
//
// On start it creates the cluster (rd_kafka_mock_cluster_new on a dedicated producer handle with
// no bootstrap servers), checks that every listener of this process is on 127.0.0.1 (the
// bootstrap list, and /proc/self/net/tcp{,6} against the process's socket inodes), creates the
// topics and prints exactly one line to stdout:
//
//   bootstraps=127.0.0.1:PORT,127.0.0.1:PORT,...      (broker 1 first; ports are ephemeral)
//
// or, if it cannot start, one line `error: <message>` and exit status 2.
//
// Protocol
// --------
// Then it reads commands from stdin, one per line, words separated by blanks. Every command
// (an empty line too) gets exactly one answer line, `ok...` or `error: <message>`, flushed;
// `dump` writes its `msg` lines before that answer.
//
//   broker_down <id>            rd_kafka_mock_broker_set_down (id -1 = every broker). The listener
//                               refuses connections (same port, not listening) and open
//                               connections are closed. Leaders do NOT move: produce to the
//                               partitions it leads waits (kcat with message.timeout.ms=3000:
//                               "Message timed out") until `broker_up` or `leader ... <other id>`
//                               (then delivered within about a second); partitions led by other
//                               brokers keep working. `count`/`dump` of a topic with a partition
//                               led by a down broker answer an error after --scan-timeout-ms.
//   broker_up <id>              rd_kafka_mock_broker_set_up (id -1 = every broker)
//   rtt <id> <ms>               rd_kafka_mock_broker_set_rtt: delay every response of that broker
//                               (id -1 = every broker; 0 = no delay)
//   produce_errors <count> <ERR_NAME>...
//                               rd_kafka_mock_push_request_errors_array for ApiKey Produce (0):
//                               the next <count> Produce requests, to any broker, are answered
//                               with these errors (cluster-wide FIFO). One name = that error
//                               <count> times; otherwise exactly <count> names, in order. Names
//                               as in librdkafka's error table without the RD_KAFKA_RESP_ERR_
//                               prefix (the prefix and any letter case are accepted too), e.g.
//                               NOT_LEADER_FOR_PARTITION (alias NOT_LEADER_OR_FOLLOWER),
//                               REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, MSG_SIZE_TOO_LARGE (alias
//                               MESSAGE_TOO_LARGE), TOPIC_AUTHORIZATION_FAILED,
//                               OUT_OF_ORDER_SEQUENCE_NUMBER, TOPIC_EXCEPTION, _TRANSPORT (the
//                               mock drops the connection), or a decimal code.
//   clear_produce_errors        rd_kafka_mock_clear_request_errors(Produce): drops injected
//                               errors not used yet
//   leader <topic> <partition> <id>
//                               rd_kafka_mock_partition_set_leader (id -1 = no leader)
//   count <topic>               ok <total> <partition>:<messages> ...   e.g. `ok 49 0:12 1:7 2:30`
//                               The mock API cannot report what it holds, so an internal
//                               consumer (its own rd_kafka_t, assign() of every partition from
//                               the beginning) reads each partition to its end (EOF) and counts.
//                               Nothing is committed; the messages stay.
//   dump <topic>                the same read; one line per message, partitions in ascending
//                               order, offsets ascending within a partition:
//                                 msg <partition> <offset> key=<hex> headers=<name>=<hex>;... value=<hex>
//                               then `ok <number of msg lines>`. Hex is lowercase, two digits a
//                               byte; a null key, value or header value is `-`, an empty one is
//                               empty; no headers is `headers=-`. Header names are written as
//                               they are, except that bytes other than [A-Za-z0-9._:/@+-] are
//                               written %XX (so `;`, `=`, `%` and blanks can't break the line).
//   quit                        answers `ok`, destroys the cluster, exits 0.
//   EOF on stdin                destroys the cluster, exits 0 (a test killed by a signal does not
//                               leave the cluster running, provided the test opened the pipe
//                               with O_CLOEXEC so that tank and other children don't hold a
//                               copy of its write end).
//
// Limits of the mock (librdkafka 2.0.2, see src/rdkafka_mock.c)
// -------------------------------------------------------------
// - Each partition keeps only about 5 MB (or 100,000 message sets); older messages are dropped
//   silently. `count`/`dump` report what is held, so a test with more data must read while it
//   produces, or spread the data over more partitions.
// - No TLS listener and no SASL handlers; plaintext only. Acks are ignored (no replication), so
//   NOT_ENOUGH_REPLICAS exists only by injection. Unknown topics are auto-created (4 partitions)
//   when a producer asks for them; `count`/`dump` do not create topics.
// - Listener ports are chosen by the kernel; they stay the same across broker_down/broker_up.
//
// Checked by tests/support/kafka_mock_cluster_check.sh (every command, driven with kcat).

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

constexpr int16_t kApiKeyProduce = 0;

// --- small helpers ----------------------------------------------------------------------------

std::vector<std::string> split_words(std::string_view line) {
    std::vector<std::string> words;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i])) != 0) {
            ++i;
        }
        const std::size_t start = i;
        while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i])) == 0) {
            ++i;
        }
        if (i > start) {
            words.emplace_back(line.substr(start, i - start));
        }
    }
    return words;
}

template <typename Int>
std::optional<Int> parse_int(std::string_view text) {
    Int value{};
    const char* const end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc{} || ptr != end || text.empty()) {
        return std::nullopt;
    }
    return value;
}

std::string to_upper(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return out;
}

void append_hex(std::string& out, const void* data, std::size_t size) {
    static constexpr char digits[] = "0123456789abcdef";
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
        out += digits[bytes[i] >> 4U];
        out += digits[bytes[i] & 0x0fU];
    }
}

// `-` for null, hex otherwise (empty for an empty non-null value).
void append_bytes(std::string& out, const void* data, std::size_t size) {
    if (data == nullptr) {
        out += '-';
    } else {
        append_hex(out, data, size);
    }
}

void append_header_name(std::string& out, std::string_view name) {
    for (const char c : name) {
        const auto u = static_cast<unsigned char>(c);
        const bool safe = std::isalnum(u) != 0 || c == '.' || c == '_' || c == ':' || c == '/' ||
                          c == '@' || c == '+' || c == '-';
        if (safe) {
            out += c;
        } else {
            out += '%';
            append_hex(out, &u, 1);
        }
    }
}

// Every answer is one line, flushed at once. A reader that went away ends the program.
void write_line(const std::string& line) {
    std::cout << line << '\n';
    std::cout.flush();
    if (!std::cout) {
        std::_Exit(1);
    }
}

void log_cb(const rd_kafka_t* rk, int level, const char* facility, const char* message) {
    std::fprintf(stderr, "kafka_mock_cluster: %s %d %s: %s\n", rk != nullptr ? rd_kafka_name(rk) : "-",
                 level, facility, message);
}

// --- error names --------------------------------------------------------------------------------

std::optional<rd_kafka_resp_err_t> error_by_name(std::string_view word) {
    if (auto code = parse_int<int>(word)) {
        return static_cast<rd_kafka_resp_err_t>(*code);
    }
    std::string name = to_upper(word);
    constexpr std::string_view prefix = "RD_KAFKA_RESP_ERR_";
    if (name.starts_with(prefix)) {
        name.erase(0, prefix.size());
    }
    // Names of the Kafka protocol (Java client) that librdkafka 2.0.2 spells differently.
    static const std::map<std::string, std::string, std::less<>> aliases = {
        {"NOT_LEADER_OR_FOLLOWER", "NOT_LEADER_FOR_PARTITION"},
        {"MESSAGE_TOO_LARGE", "MSG_SIZE_TOO_LARGE"},
    };
    if (const auto it = aliases.find(name); it != aliases.end()) {
        name = it->second;
    }
    const rd_kafka_err_desc* descs = nullptr;
    std::size_t count = 0;
    rd_kafka_get_err_descs(&descs, &count);
    for (std::size_t i = 0; i < count; ++i) {
        if (descs[i].name != nullptr && name == descs[i].name) {
            return descs[i].code;
        }
    }
    return std::nullopt;
}

// --- configuration ------------------------------------------------------------------------------

struct TopicSpec {
    std::string name;
    int partitions = 0;
    int replication = 0;  // 0 = min(3, brokers)
};

struct Options {
    int brokers = 3;
    std::vector<TopicSpec> topics;
    int scan_timeout_ms = 10000;
};

std::optional<TopicSpec> parse_topic(std::string_view text, std::string& error) {
    // NAME:PARTITIONS[:REPLICATION]; topic names cannot contain ':' (Kafka allows [A-Za-z0-9._-]).
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    for (;;) {
        const std::size_t colon = text.find(':', start);
        parts.push_back(text.substr(start, colon == std::string_view::npos ? colon : colon - start));
        if (colon == std::string_view::npos) {
            break;
        }
        start = colon + 1;
    }
    if (parts.size() < 2 || parts.size() > 3 || parts[0].empty()) {
        error = "--topic wants NAME:PARTITIONS[:REPLICATION], got '" + std::string(text) + "'";
        return std::nullopt;
    }
    TopicSpec spec;
    spec.name = std::string(parts[0]);
    const auto partitions = parse_int<int>(parts[1]);
    if (!partitions || *partitions < 1) {
        error = "bad partition count in --topic '" + std::string(text) + "'";
        return std::nullopt;
    }
    spec.partitions = *partitions;
    if (parts.size() == 3) {
        const auto replication = parse_int<int>(parts[2]);
        if (!replication || *replication < 1) {
            error = "bad replication factor in --topic '" + std::string(text) + "'";
            return std::nullopt;
        }
        spec.replication = *replication;
    }
    return spec;
}

std::optional<Options> parse_options(int argc, char** argv, std::string& error) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (i + 1 >= argc) {
            error = "missing value after " + std::string(arg);
            return std::nullopt;
        }
        const std::string_view value = argv[++i];
        if (arg == "--brokers") {
            const auto n = parse_int<int>(value);
            if (!n || *n < 1 || *n > 100) {
                error = "--brokers wants 1..100, got '" + std::string(value) + "'";
                return std::nullopt;
            }
            options.brokers = *n;
        } else if (arg == "--topic") {
            auto spec = parse_topic(value, error);
            if (!spec) {
                return std::nullopt;
            }
            options.topics.push_back(std::move(*spec));
        } else if (arg == "--scan-timeout-ms") {
            const auto ms = parse_int<int>(value);
            if (!ms || *ms < 1) {
                error = "--scan-timeout-ms wants a positive number, got '" + std::string(value) + "'";
                return std::nullopt;
            }
            options.scan_timeout_ms = *ms;
        } else {
            error = "unknown option " + std::string(arg) +
                    " (usage: kafka_mock_cluster [--brokers N] [--topic NAME:PARTITIONS[:REPLICATION]]... "
                    "[--scan-timeout-ms MS])";
            return std::nullopt;
        }
    }
    for (const TopicSpec& spec : options.topics) {
        if (spec.replication > options.brokers) {
            error = "topic " + spec.name + ": replication " + std::to_string(spec.replication) + " > " +
                    std::to_string(options.brokers) + " brokers";
            return std::nullopt;
        }
    }
    return options;
}

// --- loopback check -----------------------------------------------------------------------------

// The bootstrap list must name 127.0.0.1 only.
bool bootstraps_on_loopback(const std::string& bootstraps, int brokers, std::set<unsigned>& ports,
                            std::string& error) {
    std::istringstream in(bootstraps);
    std::string entry;
    while (std::getline(in, entry, ',')) {
        const std::size_t colon = entry.rfind(':');
        const auto port = colon == std::string::npos ? std::nullopt : parse_int<unsigned>(entry.substr(colon + 1));
        if (!port || entry.substr(0, colon) != "127.0.0.1") {
            error = "bootstrap address '" + entry + "' is not 127.0.0.1:<port>";
            return false;
        }
        ports.insert(*port);
    }
    if (static_cast<int>(ports.size()) != brokers) {
        error = "expected " + std::to_string(brokers) + " distinct bootstrap ports in '" + bootstraps + "'";
        return false;
    }
    return true;
}

// Every listening TCP socket of this process (found through /proc/self/fd and
// /proc/self/net/tcp{,6}) must be bound to 127.0.0.1, and their ports must be the bootstrap ports.
bool listeners_on_loopback(const std::set<unsigned>& expected_ports, std::string& error) {
    std::set<std::string> inodes;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
        std::error_code link_ec;
        const std::string target = std::filesystem::read_symlink(entry.path(), link_ec).string();
        if (!link_ec && target.starts_with("socket:[") && target.ends_with("]")) {
            inodes.insert(target.substr(8, target.size() - 9));
        }
    }
    if (ec) {
        error = "cannot list /proc/self/fd: " + ec.message();
        return false;
    }
    std::set<unsigned> seen_ports;
    for (const char* table : {"/proc/self/net/tcp", "/proc/self/net/tcp6"}) {
        std::ifstream in(table);
        if (!in) {
            if (std::string_view(table).ends_with("6")) {
                continue;  // no IPv6 on this kernel: nothing can listen there
            }
            error = std::string("cannot read ") + table;
            return false;
        }
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            const std::vector<std::string> f = split_words(line);
            if (f.size() < 10 || f[3] != "0A" /* LISTEN */ || inodes.count(f[9]) == 0) {
                continue;
            }
            const std::size_t colon = f[1].find(':');
            const std::string address = f[1].substr(0, colon);
            unsigned port = 0;
            if (colon != std::string::npos) {
                std::from_chars(f[1].data() + colon + 1, f[1].data() + f[1].size(), port, 16);
            }
            // 127.0.0.1 in the kernel's (little-endian host order) hex notation.
            if (address != "0100007F") {
                error = std::string("a listener of this process is not on 127.0.0.1: ") + table + " " + f[1];
                return false;
            }
            seen_ports.insert(port);
        }
    }
    if (seen_ports != expected_ports) {
        error = "the listening ports of this process do not match the bootstrap ports";
        return false;
    }
    return true;
}

// --- the internal consumer (count, dump) --------------------------------------------------------

struct ScanMessage {
    int32_t partition;
    int64_t offset;
    std::string line;  // filled only for dump
};

struct ScanResult {
    std::string error;                         // empty = every partition read to its end
    std::vector<std::vector<ScanMessage>> partitions;  // index = partition id
};

using ConsumerPtr = std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)>;

void close_consumer(rd_kafka_t* rk) {
    if (rk != nullptr) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
}

std::string dump_line(const rd_kafka_message_t& m) {
    std::string line = "msg " + std::to_string(m.partition) + " " + std::to_string(m.offset) + " key=";
    append_bytes(line, m.key, m.key_len);
    line += " headers=";
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(&m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR && headers != nullptr &&
        rd_kafka_header_cnt(headers) > 0) {
        const char* name = nullptr;
        const void* value = nullptr;
        std::size_t size = 0;
        for (std::size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
            if (i > 0) {
                line += ';';
            }
            append_header_name(line, name != nullptr ? name : "");
            line += '=';
            append_bytes(line, value, size);
        }
    } else {
        line += '-';
    }
    line += " value=";
    append_bytes(line, m.payload, m.len);
    return line;
}

ScanResult scan_topic(const std::string& bootstraps, const std::string& topic, int timeout_ms, bool keep_lines) {
    ScanResult result;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    const auto remaining_ms = [&] {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        return static_cast<int>(std::max<int64_t>(left.count(), 0));
    };

    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    const std::pair<const char*, const char*> settings[] = {
        {"bootstrap.servers", bootstraps.c_str()},
        {"client.id", "kafka_mock_cluster-scan"},
        {"group.id", "kafka_mock_cluster-scan"},  // assign() needs one; no subscribe, no commit
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"fetch.wait.max.ms", "50"},
        {"reconnect.backoff.max.ms", "500"},
        {"log.connection.close", "false"},
    };
    for (const auto& [key, value] : settings) {
        if (rd_kafka_conf_set(conf, key, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            result.error = std::string("consumer setting ") + key + ": " + errstr;
            return result;
        }
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_t* raw = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (raw == nullptr) {
        rd_kafka_conf_destroy(conf);
        result.error = std::string("cannot create the internal consumer: ") + errstr;
        return result;
    }
    ConsumerPtr rk(raw, close_consumer);

    // The partition count, without creating the topic (all topics, no auto-creation).
    const rd_kafka_metadata_t* metadata = nullptr;
    const rd_kafka_resp_err_t md_err = rd_kafka_metadata(rk.get(), 1, nullptr, &metadata, std::max(remaining_ms(), 1));
    if (md_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        result.error = std::string("metadata: ") + rd_kafka_err2str(md_err);
        return result;
    }
    int partition_count = -1;
    rd_kafka_resp_err_t topic_err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; i < metadata->topic_cnt; ++i) {
        if (topic == metadata->topics[i].topic) {
            partition_count = metadata->topics[i].partition_cnt;
            topic_err = metadata->topics[i].err;
        }
    }
    rd_kafka_metadata_destroy(metadata);
    if (partition_count < 0) {
        result.error = "unknown topic " + topic;
        return result;
    }
    if (topic_err != RD_KAFKA_RESP_ERR_NO_ERROR || partition_count == 0) {
        result.error = "topic " + topic + " has no usable partitions: " + rd_kafka_err2str(topic_err);
        return result;
    }

    rd_kafka_topic_partition_list_t* assignment = rd_kafka_topic_partition_list_new(partition_count);
    for (int p = 0; p < partition_count; ++p) {
        rd_kafka_topic_partition_list_add(assignment, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    const rd_kafka_resp_err_t assign_err = rd_kafka_assign(rk.get(), assignment);
    rd_kafka_topic_partition_list_destroy(assignment);
    if (assign_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        result.error = std::string("assign: ") + rd_kafka_err2str(assign_err);
        return result;
    }

    result.partitions.resize(static_cast<std::size_t>(partition_count));
    std::vector<bool> at_end(static_cast<std::size_t>(partition_count), false);
    int open = partition_count;
    std::string last_error;
    while (open > 0) {
        const int wait = std::min(remaining_ms(), 100);
        if (wait <= 0) {
            std::string which;
            for (int p = 0; p < partition_count; ++p) {
                if (!at_end[static_cast<std::size_t>(p)]) {
                    which += (which.empty() ? "" : ",") + std::to_string(p);
                }
            }
            result.error = "timed out after " + std::to_string(timeout_ms) + " ms before the end of partition(s) " +
                           which + (last_error.empty() ? "" : " (last error: " + last_error + ")");
            return result;
        }
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), wait);
        if (m == nullptr) {
            continue;
        }
        const bool ours = m->rkt != nullptr && m->partition >= 0 && m->partition < partition_count;
        const auto index = static_cast<std::size_t>(ours ? m->partition : 0);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (ours && !at_end[index]) {
                at_end[index] = true;
                --open;
                // What arrives later (a producer still writing) is not part of this snapshot.
                rd_kafka_topic_partition_list_t* one = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(one, topic.c_str(), m->partition);
                rd_kafka_pause_partitions(rk.get(), one);
                rd_kafka_topic_partition_list_destroy(one);
            }
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            last_error = std::string(rd_kafka_err2name(m->err)) + ": " + rd_kafka_message_errstr(m);
        } else if (ours && !at_end[index]) {
            result.partitions[index].push_back({m->partition, m->offset, keep_lines ? dump_line(*m) : std::string()});
        }
        rd_kafka_message_destroy(m);
    }
    return result;
}

// --- the cluster and its commands ----------------------------------------------------------------

class MockCluster {
public:
    MockCluster(const MockCluster&) = delete;
    MockCluster& operator=(const MockCluster&) = delete;

    static std::unique_ptr<MockCluster> start(const Options& options, std::string& error) {
        std::unique_ptr<MockCluster> self(new MockCluster(options));
        char errstr[512];
        rd_kafka_conf_t* conf = rd_kafka_conf_new();
        // A producer that never connects anywhere (no bootstrap.servers): it only hosts the cluster.
        // log_level 4: not the notice that it has no bootstrap.servers; warnings and errors of
        // the mock (which logs through this handle) still go to stderr.
        for (const auto& [key, value] : {std::pair{"client.id", "kafka_mock_cluster"}, std::pair{"log_level", "4"}}) {
            if (rd_kafka_conf_set(conf, key, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
                rd_kafka_conf_destroy(conf);
                error = std::string("setting ") + key + ": " + errstr;
                return nullptr;
            }
        }
        rd_kafka_conf_set_log_cb(conf, log_cb);
        self->owner_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (self->owner_ == nullptr) {
            rd_kafka_conf_destroy(conf);
            error = std::string("rd_kafka_new: ") + errstr;
            return nullptr;
        }
        self->mc_ = rd_kafka_mock_cluster_new(self->owner_, options.brokers);
        if (self->mc_ == nullptr) {
            error = "rd_kafka_mock_cluster_new failed";
            return nullptr;
        }
        const char* bootstraps = rd_kafka_mock_cluster_bootstraps(self->mc_);
        self->bootstraps_ = bootstraps != nullptr ? bootstraps : "";

        std::set<unsigned> ports;
        if (!bootstraps_on_loopback(self->bootstraps_, options.brokers, ports, error) ||
            !listeners_on_loopback(ports, error)) {
            return nullptr;
        }

        const int replicas = std::min(3, options.brokers);
        for (const TopicSpec& spec : options.topics) {
            const int replication = spec.replication > 0 ? spec.replication : replicas;
            rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(self->mc_, spec.name.c_str(), spec.partitions, replication);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                error = "topic " + spec.name + ": " + rd_kafka_err2str(err);
                return nullptr;
            }
            // The mock picks a random leader among the replicas; tests want to know it.
            for (int p = 0; p < spec.partitions; ++p) {
                err = rd_kafka_mock_partition_set_leader(self->mc_, spec.name.c_str(), p, p % replicas + 1);
                if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                    error = "leader of " + spec.name + " [" + std::to_string(p) + "]: " + rd_kafka_err2str(err);
                    return nullptr;
                }
            }
        }
        return self;
    }

    ~MockCluster() {
        if (mc_ != nullptr) {
            rd_kafka_mock_cluster_destroy(mc_);
        }
        if (owner_ != nullptr) {
            rd_kafka_destroy(owner_);
        }
    }

    const std::string& bootstraps() const { return bootstraps_; }

    // Runs one command line; writes its answer (and dump's msg lines). False after `quit`.
    bool handle(const std::string& line) {
        const std::vector<std::string> w = split_words(line);
        if (w.empty()) {
            write_line("error: empty command");
            return true;
        }
        const std::string& cmd = w[0];
        if (cmd == "quit") {
            if (w.size() != 1) {
                write_line("error: usage: quit");
                return true;
            }
            write_line("ok");
            return false;
        }
        if (cmd == "broker_down" || cmd == "broker_up") {
            const auto id = w.size() == 2 ? parse_int<int32_t>(w[1]) : std::nullopt;
            if (!id) {
                write_line("error: usage: " + cmd + " <broker id | -1>");
                return true;
            }
            if (!known_broker(*id)) {
                return true;
            }
            answer(cmd == "broker_down" ? rd_kafka_mock_broker_set_down(mc_, *id) : rd_kafka_mock_broker_set_up(mc_, *id));
            return true;
        }
        if (cmd == "rtt") {
            const auto id = w.size() == 3 ? parse_int<int32_t>(w[1]) : std::nullopt;
            const auto ms = w.size() == 3 ? parse_int<int>(w[2]) : std::nullopt;
            if (!id || !ms || *ms < 0) {
                write_line("error: usage: rtt <broker id | -1> <ms >= 0>");
                return true;
            }
            if (!known_broker(*id)) {
                return true;
            }
            answer(rd_kafka_mock_broker_set_rtt(mc_, *id, *ms));
            return true;
        }
        if (cmd == "produce_errors") {
            produce_errors(w);
            return true;
        }
        if (cmd == "clear_produce_errors") {
            if (w.size() != 1) {
                write_line("error: usage: clear_produce_errors");
                return true;
            }
            rd_kafka_mock_clear_request_errors(mc_, kApiKeyProduce);
            write_line("ok");
            return true;
        }
        if (cmd == "leader") {
            const auto partition = w.size() == 4 ? parse_int<int32_t>(w[2]) : std::nullopt;
            const auto id = w.size() == 4 ? parse_int<int32_t>(w[3]) : std::nullopt;
            if (!partition || !id) {
                write_line("error: usage: leader <topic> <partition> <broker id | -1>");
                return true;
            }
            answer(rd_kafka_mock_partition_set_leader(mc_, w[1].c_str(), *partition, *id));
            return true;
        }
        if (cmd == "count" || cmd == "dump") {
            if (w.size() != 2) {
                write_line("error: usage: " + cmd + " <topic>");
                return true;
            }
            scan(w[1], cmd == "dump");
            return true;
        }
        write_line("error: unknown command '" + cmd +
                   "' (broker_down, broker_up, rtt, produce_errors, clear_produce_errors, leader, count, dump, quit)");
        return true;
    }

private:
    explicit MockCluster(const Options& options) : options_(options) {}

    bool known_broker(int32_t id) {
        if (id == -1 || (id >= 1 && id <= options_.brokers)) {
            return true;
        }
        write_line("error: no broker " + std::to_string(id) + " (ids are 1.." + std::to_string(options_.brokers) +
                   ", or -1 for all)");
        return false;
    }

    static void answer(rd_kafka_resp_err_t err) {
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            write_line("ok");
        } else {
            write_line(std::string("error: ") + rd_kafka_err2name(err) + ": " + rd_kafka_err2str(err));
        }
    }

    void produce_errors(const std::vector<std::string>& w) {
        const auto count = w.size() >= 3 ? parse_int<int>(w[1]) : std::nullopt;
        if (!count || *count < 1 || *count > 100000) {
            write_line("error: usage: produce_errors <count 1..100000> <ERR_NAME>...");
            return;
        }
        const std::size_t names = w.size() - 2;
        if (names != 1 && names != static_cast<std::size_t>(*count)) {
            write_line("error: produce_errors wants one error name or exactly <count> names, got " +
                       std::to_string(names));
            return;
        }
        std::vector<rd_kafka_resp_err_t> errors;
        for (std::size_t i = 2; i < w.size(); ++i) {
            const auto err = error_by_name(w[i]);
            if (!err) {
                write_line("error: unknown error name '" + w[i] + "'");
                return;
            }
            errors.push_back(*err);
        }
        if (names == 1) {
            errors.assign(static_cast<std::size_t>(*count), errors.front());
        }
        rd_kafka_mock_push_request_errors_array(mc_, kApiKeyProduce, errors.size(), errors.data());
        write_line("ok");
    }

    void scan(const std::string& topic, bool dump) {
        const ScanResult result = scan_topic(bootstraps_, topic, options_.scan_timeout_ms, dump);
        if (!result.error.empty()) {
            write_line("error: " + result.error);
            return;
        }
        std::size_t total = 0;
        std::string per_partition;
        for (std::size_t p = 0; p < result.partitions.size(); ++p) {
            total += result.partitions[p].size();
            per_partition += " " + std::to_string(p) + ":" + std::to_string(result.partitions[p].size());
        }
        if (dump) {
            for (const auto& partition : result.partitions) {
                for (const ScanMessage& m : partition) {
                    std::cout << m.line << '\n';
                }
            }
            write_line("ok " + std::to_string(total));
        } else {
            write_line("ok " + std::to_string(total) + per_partition);
        }
    }

    Options options_;
    rd_kafka_t* owner_ = nullptr;
    rd_kafka_mock_cluster_t* mc_ = nullptr;
    std::string bootstraps_;
};

}  // namespace

int main(int argc, char** argv) {
    // A test that goes away closes our stdout: end quietly instead of dying of SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);

    std::string error;
    const std::optional<Options> options = parse_options(argc, argv, error);
    if (!options) {
        std::fprintf(stderr, "kafka_mock_cluster: %s\n", error.c_str());
        write_line("error: " + error);
        return 2;
    }
    std::unique_ptr<MockCluster> cluster = MockCluster::start(*options, error);
    if (!cluster) {
        std::fprintf(stderr, "kafka_mock_cluster: %s\n", error.c_str());
        write_line("error: " + error);
        return 2;
    }
    write_line("bootstraps=" + cluster->bootstraps());

    std::string line;
    while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') {
            line.pop_back();
        }
        if (!cluster->handle(line)) {
            break;
        }
    }
    cluster.reset();
    return 0;
}

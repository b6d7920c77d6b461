// inputs.tcp, inputs.udp, inputs.unix, run in-process against a real queue and real sockets.

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "support/input_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::string lines(int from, int to, const std::string& prefix = "line-") {
  std::string out;
  for (int i = from; i < to; ++i) out += prefix + std::to_string(i) + "\n";
  return out;
}

}  // namespace

TEST_CASE("tcp: lines become records in order, with the peer, the last line without a newline too",
          "[input][tcp]") {
  InputRig rig("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\n", input_queue_options("q"));
  rig.input->start();
  std::string address = rig.input->listening_on();
  REQUIRE(address.rfind("127.0.0.1:", 0) == 0);
  int fd = tcp_connect(address);
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, "{\"t\":1}\r\n\nsecond\nthird without newline"));
  ::close(fd);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 3; }));
  auto b = rig.queue->read(0, {});
  CHECK(payloads_of(b) == std::vector<std::string>{"{\"t\":1}", "second", "third without newline"});
  CHECK(b.records()[0].input == "plant");
  CHECK(b.records()[0].attribute("peer").value_or("").rfind("127.0.0.1:", 0) == 0);
  CHECK(counter(rig.registry, "tank_input_records_total{input=\"plant\",type=\"tcp\"}") == 3);
}

TEST_CASE("tcp: a line over max_line_bytes goes to the dead-letter store and the connection goes on",
          "[input][tcp]") {
  InputRig rig("[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\nmax_line_bytes = \"100B\"\n", input_queue_options("q"));
  rig.input->start();
  int fd = tcp_connect(rig.input->listening_on());
  std::string huge(100000, 'x');
  REQUIRE(send_all(fd, "before\n" + huge + "\n" + std::string(100, 'y') + "\r\nafter\n"));
  ::close(fd);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 3; }));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"before", std::string(100, 'y'), "after"});
  auto letters = rig.queue->dead_letters({});
  REQUIRE(letters.size() == 1);
  CHECK(letters[0].letter.input == "tcp");
  CHECK(letters[0].letter.reason == "line_too_long");
  CHECK(letters[0].letter.original_size == 100000);
  CHECK(letters[0].letter.original == huge.substr(0, queue::kMaxDeadLetterBytes));
  CHECK(letters[0].truncated);
  CHECK(letters[0].letter.detail.find("a line of 100000 bytes") != std::string::npos);
  CHECK(counter(rig.registry, "tank_dead_letters_total{input=\"tcp\",reason=\"line_too_long\"}") == 1);
}

TEST_CASE("tcp: many small lines are committed within the queue's commit limit", "[input][tcp]") {
  auto options = input_queue_options("q");
  options.max_disk_bytes = 4 << 20;  // commits of at most 64 KiB
  InputRig rig("[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n", options);
  rig.input->start();
  int fd = tcp_connect(rig.input->listening_on());
  std::string data;
  for (int i = 0; i < 20000; ++i) data += "x\n";  // 40 KB read at once: far more than 64 KiB of records
  REQUIRE(send_all(fd, data));
  ::close(fd);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 20000; }));
  CHECK(counter(rig.registry, "tank_queue_refused_batches_total{reason=\"too_large\"}") == 0);
}

TEST_CASE("tcp: a full queue stops reading, the sender is slowed, and nothing is lost", "[input][tcp][backpressure]") {
  auto options = input_queue_options("q");
  options.max_disk_bytes = 1 << 20;
  options.overflow = queue::Overflow::block;
  options.low_watermark = 0.5;
  InputRig rig("[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\nthreads = 1\n", options);
  rig.connect_pressure();
  rig.input->start();
  constexpr int kLines = 200000;  // ~ 12 MB: twelve times the queue
  std::atomic<bool> sent{false};
  std::thread sender([&] {
    int fd = tcp_connect(rig.input->listening_on());
    for (int i = 0; i < kLines; i += 1000) send_all(fd, lines(i, i + 1000, "record-with-some-padding-"));
    ::close(fd);
    sent = true;
  });
  // The queue fills; tank stops reading; the sender cannot finish.
  REQUIRE(wait_until([&] { return rig.queue->blocked(); }));
  CHECK(wait_until([&] { return counter(rig.registry, "tank_input_paused{input=\"tcp\",type=\"tcp\"}") == 1; }));
  CHECK_FALSE(sent.load());
  CHECK(rig.queue->stats().disk_used_bytes <= 1 << 20);
  // Consume, as an output would; every line arrives once and in order.
  std::uint64_t position = 0;
  int expected = 0;
  bool in_order = true;
  REQUIRE(wait_until(
      [&] {
        auto b = rig.queue->read(position, {5000, 1 << 20});
        for (const auto& r : b.records()) {
          in_order = in_order && r.payload == "record-with-some-padding-" + std::to_string(expected);
          ++expected;
        }
        if (!b.empty()) {
          position = b.scanned_to();
          REQUIRE(rig.queue->ack("out", position).ok());
        }
        return expected == kLines;
      },
      std::chrono::seconds(60)));
  sender.join();
  CHECK(in_order);
  CHECK(sent.load());
  CHECK(counter(rig.registry, "tank_input_dropped_records_total{input=\"tcp\",reason=\"shutdown\",type=\"tcp\"}") == -1);
}

TEST_CASE("tcp: connections beyond max_connections are closed and counted", "[input][tcp]") {
  InputRig rig("[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n", input_queue_options("q"));
  rig.input->start();
  int a = tcp_connect(rig.input->listening_on());
  int b = tcp_connect(rig.input->listening_on());
  REQUIRE(wait_until([&] { return counter(rig.registry, "tank_input_connections{input=\"tcp\",type=\"tcp\"}") == 2; }));
  int c = tcp_connect(rig.input->listening_on());
  CHECK(wait_closed(c, std::chrono::seconds(10)));
  CHECK(counter(rig.registry, "tank_input_errors_total{input=\"tcp\",reason=\"too_many_connections\",type=\"tcp\"}") ==
        1);
  // The first two still work.
  REQUIRE(send_all(a, "from a\n"));
  REQUIRE(send_all(b, "from b\n"));
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 2; }));
  for (int fd : {a, b, c}) ::close(fd);
}

TEST_CASE("tcp: an idle connection is closed after idle_timeout", "[input][tcp]") {
  InputRig rig("[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"200ms\"\n", input_queue_options("q"));
  rig.input->start();
  int fd = tcp_connect(rig.input->listening_on());
  REQUIRE(send_all(fd, "hello\n"));
  CHECK(wait_closed(fd, std::chrono::seconds(10)));
  ::close(fd);
  CHECK(rig.queue->stats().records == 1);
}

TEST_CASE("tcp: a port in use is a start error naming the address", "[input][tcp]") {
  InputRig first("[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n", input_queue_options("q"));
  first.input->start();
  std::string address = first.input->listening_on();
  InputRig second("[[inputs.tcp]]\nlisten = \"" + address + "\"\n", input_queue_options("q"));
  CHECK_THROWS_WITH(second.input->start(), "cannot listen on " + address + ": Address already in use");
}

TEST_CASE("udp: one record per datagram, oversize ones dead-lettered, drops while refused counted", "[input][udp]") {
  auto options = input_queue_options("q");
  InputRig rig("[[inputs.udp]]\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = \"100B\"\n", options);
  rig.input->start();
  std::string address = rig.input->listening_on();
  udp_send(address, "{\"d\":1}");
  udp_send(address, std::string(500, 'z'));
  udp_send(address, "{\"d\":2}");
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 2 && rig.queue->dead_letter_stats().entries == 1; }));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"{\"d\":1}", "{\"d\":2}"});
  auto letter = rig.queue->dead_letters({}).at(0);
  CHECK(letter.letter.reason == "message_too_large");
  CHECK(letter.letter.original == std::string(100, 'z'));
  // While the queue refuses records, datagrams are counted as dropped.
  rig.input->set_paused(true);
  for (int i = 0; i < 5; ++i) udp_send(address, "dropped");
  CHECK(wait_until([&] {
    return counter(rig.registry, "tank_input_dropped_records_total{input=\"udp\",reason=\"queue_full\",type=\"udp\"}") ==
           5;
  }));
  rig.input->set_paused(false);
  udp_send(address, "{\"d\":3}");
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 3; }));
}

TEST_CASE("unix: stream and datagram sockets, a stale socket file replaced, permissions applied", "[input][unix]") {
  TempDir sockets;
  std::string path = (sockets / "in.sock").string();
  {
    // A stale socket file from an earlier run.
    InputRig earlier("[[inputs.unix]]\npath = \"" + path + "\"\n", input_queue_options("q"));
    earlier.input->start();
  }
  InputRig rig("[[inputs.unix]]\npath = \"" + path + "\"\nmode = \"0600\"\n", input_queue_options("q"));
  rig.input->start();
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  int fd = unix_connect(path);
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, "over unix\n"));
  ::close(fd);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 1; }));
  auto r = rig.queue->read(0, {});
  CHECK(r.records()[0].attribute("peer").value_or("") == "pid=" + std::to_string(::getpid()) + " uid=" +
                                                            std::to_string(::getuid()));
  rig.input->stop();
  CHECK_FALSE(std::filesystem::exists(path));

  std::string dgram = (sockets / "dg.sock").string();
  InputRig d("[[inputs.unix]]\npath = \"" + dgram + "\"\nsocket_type = \"datagram\"\n", input_queue_options("q"));
  d.input->start();
  unix_datagram_send(dgram, "one datagram");
  REQUIRE(wait_until([&] { return d.queue->stats().records == 1; }));
  CHECK(all_payloads(*d.queue) == std::vector<std::string>{"one datagram"});

  write_file(sockets / "plain", "not a socket");
  InputRig bad("[[inputs.unix]]\npath = \"" + (sockets / "plain").string() + "\"\n", input_queue_options("q"));
  CHECK_THROWS_WITH(bad.input->start(), (sockets / "plain").string() + " exists and is not a socket");
}

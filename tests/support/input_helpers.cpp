#include "support/input_helpers.hpp"

#include <algorithm>
#include <sstream>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "config/loader.hpp"

namespace tank::test {

queue::Options input_queue_options(const std::filesystem::path& dir) {
  auto o = small_queue(dir, 64 << 20);
  o.consumers = {"out"};
  return o;
}

InputRig::InputRig(const std::string& toml, queue::Options options) {
  plugin::register_builtin(plugins);
  if (options.dir.empty() || options.dir.is_relative()) options.dir = dir / "q";
  queue = queue::Queue::open(options, clock, &registry);
  config::Schema schema = engine::build_schema(plugins);
  config::LoadOptions load;
  load.base_dir = dir.path();
  auto loaded = config::load_text(toml, "test.toml", schema, load);
  if (!loaded.document) {
    std::string all;
    for (const auto& d : loaded.diagnostics.all()) all += d.to_string() + "\n";
    throw std::runtime_error("bad test configuration:\n" + all);
  }
  for (const auto& d : plugins.all()) {
    if (d.kind != plugin::Kind::input) continue;
    for (const auto& values : loaded.document->instances(d.section->path)) {
      plugin::InputContext context{plugin::input_name(values, d.name), *queue, registry, clock, "test-agent",
                                   dir.path()};
      input = d.create_input(values, context);
      return;
    }
  }
  throw std::runtime_error("no input in the test configuration");
}

InputRig::~InputRig() {
  if (queue) queue->set_pressure_listener(nullptr);
  if (input) input->stop();
  input.reset();
  queue.reset();
}

void InputRig::connect_pressure() {
  queue->set_pressure_listener([this](bool paused) { input->set_paused(paused); });
}

namespace {

sockaddr_in parse_v4(const std::string& address) {
  auto colon = address.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &a.sin_addr);
  return a;
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  return a;
}

}  // namespace

int tcp_connect(const std::string& address) {
  sockaddr_in a = parse_v4(address);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int unix_connect(const std::string& path) {
  sockaddr_un a = unix_address(path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void udp_send(const std::string& address, std::string_view datagram) {
  sockaddr_in a = parse_v4(address);
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ::sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::close(fd);
}

void unix_datagram_send(const std::string& path, std::string_view datagram) {
  sockaddr_un a = unix_address(path);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ::sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::close(fd);
}

bool wait_closed(int fd, std::chrono::milliseconds deadline) { return receive_until_closed(fd, deadline).has_value(); }

std::optional<std::string> receive_until_closed(int fd, std::chrono::milliseconds deadline) {
  pollfd p{fd, POLLIN, 0};
  auto end = std::chrono::steady_clock::now() + deadline;
  std::string received;
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    int r = ::poll(&p, 1, 50);
    if (r > 0) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return received;
      received.append(buf, static_cast<std::size_t>(n));
    }
  }
  return std::nullopt;
}

std::vector<std::string> all_payloads(const queue::Queue& q) {
  std::vector<std::string> out;
  for (auto& [seq, payload] : everything(q)) out.push_back(payload);
  return out;
}

std::vector<StoredRecord> records_in(const std::filesystem::path& queue_dir) {
  ManualClock clock;
  auto q = queue::Queue::open_read_only(queue_dir, clock);
  std::vector<StoredRecord> out;
  std::uint64_t position = 0;
  for (;;) {
    auto b = q->read(position, {10000, 16 << 20});
    if (b.empty()) break;
    for (const auto& r : b.records()) {
      StoredRecord s{r.seq, std::string(r.input), std::string(r.payload), r.derived(), {}, queue::chain_level(r.flags)};
      r.for_each_attribute([&](std::string_view k, std::string_view v) { s.attributes[std::string(k)] = std::string(v); });
      out.push_back(std::move(s));
    }
    position = b.scanned_to();
  }
  return out;
}

std::vector<boost::json::object> dead_letters_in(const std::filesystem::path& data_dir) {
  auto r = run({tank_binary(), "dlq", "list", "--data-dir", data_dir.string(), "--json", "--limit", "100000"});
  std::vector<boost::json::object> out;
  if (r.exit_code != 0) return out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(boost::json::parse(line).as_object());
  }
  return out;
}

std::vector<boost::json::object> json_records_in(const std::filesystem::path& dir) {
  std::vector<boost::json::object> out;
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::istringstream in(read_file(f));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      boost::system::error_code pe;
      auto v = boost::json::parse(line, pe);
      if (!pe && v.is_object()) out.push_back(v.as_object());
    }
  }
  return out;
}

}  // namespace tank::test

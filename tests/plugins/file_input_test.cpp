// inputs.file in-process: real files, real rotations, a real queue reopened across restarts.

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "support/input_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

void append(const std::filesystem::path& file, const std::string& text) { append_file(file, text); }

std::string numbered(int from, int to, const std::string& prefix = "line-") {
  std::string out;
  for (int i = from; i < to; ++i) out += prefix + std::to_string(i) + "\n";
  return out;
}

std::vector<std::string> expected(int from, int to, const std::string& prefix = "line-") {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// A file input on `pattern` with a queue in `queue_dir` (kept across restarts).
std::unique_ptr<InputRig> file_rig(const std::filesystem::path& queue_dir, const std::string& pattern,
                                   const std::string& extra = "") {
  auto options = input_queue_options(queue_dir);
  options.dir = queue_dir;
  return std::make_unique<InputRig>("[[inputs.file]]\nname = \"logs\"\npaths = [\"" + pattern +
                                        "\"]\npoll_interval = \"50ms\"\nrotate_wait = \"200ms\"\n" + extra,
                                    options);
}

bool has_records(InputRig& rig, std::uint64_t n) {
  return wait_until([&] { return rig.queue->stats().records >= n; });
}

// The queue holds exactly the lines numbered [from, to), each once, in any order.
void check_each_line_once(InputRig& rig, int from, int to, const std::string& prefix) {
  auto all = all_payloads(*rig.queue);
  std::sort(all.begin(), all.end());
  auto want = expected(from, to, prefix);
  std::sort(want.begin(), want.end());
  CHECK(all == want);
}

}  // namespace

TEST_CASE("file: appended lines become records, and a restart resumes where the commit left off",
          "[input][file]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, numbered(0, 3));
  {
    auto rig = file_rig(dir / "q", log.string());
    rig->input->start();
    REQUIRE(has_records(*rig, 3));
    append(log, numbered(3, 5));
    REQUIRE(has_records(*rig, 5));
    auto r = rig->queue->read(0, {});
    CHECK(r.records()[0].input == "logs");
    CHECK(r.records()[0].attribute("path") == log.string());
  }
  append(log, numbered(5, 8));  // written while tank was down
  auto rig = file_rig(dir / "q", log.string());
  rig->input->start();
  REQUIRE(has_records(*rig, 8));
  CHECK(all_payloads(*rig->queue) == expected(0, 8));
}

TEST_CASE("file: an unterminated last line waits for its newline", "[input][file]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, "complete\npartial");
  auto rig = file_rig(dir / "q", log.string());
  rig->input->start();
  REQUIRE(has_records(*rig, 1));
  append(log, " line\n");
  REQUIRE(has_records(*rig, 2));
  CHECK(all_payloads(*rig->queue) == std::vector<std::string>{"complete", "partial line"});
}

TEST_CASE("file: read_from = end skips what existed at the first start, new files are read whole",
          "[input][file]") {
  TempDir dir;
  append(dir / "old.log", numbered(0, 5, "old-"));
  auto rig = file_rig(dir / "q", (dir / "*.log").string(), "read_from = \"end\"\n");
  rig->input->start();
  append(dir / "old.log", numbered(5, 7, "old-"));
  append(dir / "new.log", numbered(0, 2, "new-"));
  REQUIRE(has_records(*rig, 4));
  auto all = all_payloads(*rig->queue);
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<std::string>{"new-0", "new-1", "old-5", "old-6"});
}

TEST_CASE("file: rename + create rotation reads every line exactly once", "[input][file][rotation]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, numbered(0, 10));
  auto rig = file_rig(dir / "q", log.string());
  rig->input->start();
  REQUIRE(has_records(*rig, 10));
  // The writer appends a little more, logrotate renames, the writer (still on the old file)
  // appends more before it reopens, then writes to the new file.
  append(log, numbered(10, 15));
  std::filesystem::rename(log, dir / "app.log.1");
  append(dir / "app.log.1", numbered(15, 20));
  append(log, numbered(20, 30));
  REQUIRE(has_records(*rig, 30));
  auto all = all_payloads(*rig->queue);
  std::sort(all.begin(), all.end(), [](const std::string& a, const std::string& b) {
    return std::stoi(a.substr(5)) < std::stoi(b.substr(5));
  });
  CHECK(all == expected(0, 30));
}

TEST_CASE("file: copytruncate loses nothing when the copy matches the pattern", "[input][file][rotation]") {
  TempDir dir;
  auto log = dir / "app.log";
  // Long enough lines for a fingerprint that identifies the copy.
  std::string pad(40, '.');
  append(log, numbered(0, 10, "copytruncate-line" + pad + "-"));
  auto rig = file_rig(dir / "q", (dir / "app.log*").string());
  rig->connect_pressure();
  rig->input->start();
  REQUIRE(has_records(*rig, 10));
  rig->input->set_paused(true);  // tank is busy: it does not read the next lines before rotation
  append(log, numbered(10, 15, "copytruncate-line" + pad + "-"));
  std::filesystem::copy_file(log, dir / "app.log.1");
  std::filesystem::resize_file(log, 0);
  append(log, numbered(15, 20, "copytruncate-line" + pad + "-"));
  rig->input->set_paused(false);
  REQUIRE(has_records(*rig, 20));
  check_each_line_once(*rig, 0, 20, "copytruncate-line" + pad + "-");
  CHECK(rig->queue->stats().records == 20);
}

TEST_CASE("file: a copy found while it is still being written is read from the original's offset",
          "[input][file][rotation]") {
  TempDir dir;
  auto log = dir / "app.log";
  const std::string prefix = "copy-being-written-line" + std::string(40, '.') + "-";
  append(log, numbered(0, 10, prefix));
  auto rig = file_rig(dir / "q", (dir / "app.log*").string());
  rig->connect_pressure();
  rig->input->start();
  REQUIRE(has_records(*rig, 10));
  rig->input->set_paused(true);
  append(log, numbered(10, 15, prefix));
  // The copy holds its first 200 bytes (less than what was read) when tank identifies it.
  std::string whole;
  {
    std::ifstream in(log, std::ios::binary);
    whole.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto copy = dir / "app.log.1";
  append(copy, whole.substr(0, 200));
  struct stat st {};
  REQUIRE(::stat(copy.c_str(), &st) == 0);
  const std::string copy_key = "file/logs/" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  REQUIRE(wait_until([&] { return rig->queue->state(copy_key).has_value(); }));
  append(copy, whole.substr(200));
  std::filesystem::resize_file(log, 0);
  append(log, numbered(15, 20, prefix));
  rig->input->set_paused(false);
  REQUIRE(has_records(*rig, 20));
  check_each_line_once(*rig, 0, 20, prefix);
}

TEST_CASE("file: a truncated file's offset is stored, so its copy found after a restart is not read twice",
          "[input][file][rotation]") {
  TempDir dir;
  auto log = dir / "app.log";
  const std::string prefix = "copy-after-restart-line" + std::string(40, '.') + "-";
  append(log, numbered(0, 10, prefix));
  {
    auto rig = file_rig(dir / "q", (dir / "app.log*").string());
    rig->input->start();
    REQUIRE(has_records(*rig, 10));
    // copytruncate, but the copy is not where tank looks yet (as if tank stopped before it
    // found the copy).
    std::filesystem::copy_file(log, dir / "copy.tmp");
    std::filesystem::resize_file(log, 0);
    append(log, numbered(10, 12, prefix));
    REQUIRE(has_records(*rig, 12));
    CHECK(rig->queue->state_with_prefix("file/logs/retired/").size() == 1);
  }
  std::filesystem::rename(dir / "copy.tmp", dir / "app.log.1");
  auto rig = file_rig(dir / "q", (dir / "app.log*").string());
  rig->input->start();
  append(log, numbered(12, 14, prefix));
  REQUIRE(has_records(*rig, 14));
  check_each_line_once(*rig, 0, 14, prefix);
  // The copy was identified: the stored entry of the truncated file is gone.
  CHECK(wait_until([&] { return rig->queue->state_with_prefix("file/logs/retired/").empty(); }));
}

TEST_CASE("file: truncation in place restarts at the beginning", "[input][file][rotation]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, numbered(0, 5));
  auto rig = file_rig(dir / "q", log.string());
  rig->input->start();
  REQUIRE(has_records(*rig, 5));
  std::filesystem::resize_file(log, 0);
  append(log, numbered(100, 103));
  REQUIRE(has_records(*rig, 8));
  auto all = all_payloads(*rig->queue);
  CHECK(std::vector<std::string>(all.begin() + 5, all.end()) == expected(100, 103));
}

TEST_CASE("file: a reused inode with other first bytes is a new file", "[input][file]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, numbered(0, 4, "fresh-"));
  struct stat st {};
  REQUIRE(::stat(log.c_str(), &st) == 0);
  {
    // A stored offset for this device and inode, from a file with other content.
    ManualClock clock;
    auto options = input_queue_options(dir / "q");
    options.dir = dir / "q";
    auto q = queue::Queue::open(options, clock, nullptr);
    queue::WriteBatch w;
    std::string value = "F1";
    std::uint64_t offset = 20;
    for (int i = 0; i < 8; ++i) value.push_back(static_cast<char>((offset >> (8 * i)) & 0xff));
    std::string fp = "an entirely different beginning";
    value.push_back(static_cast<char>(fp.size()));
    value.push_back(0);
    value += fp + "/old/path";
    w.state_puts.emplace_back("file/logs/" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino), value);
    REQUIRE(q->commit(w).ok());
  }
  auto rig = file_rig(dir / "q", log.string());
  rig->input->start();
  REQUIRE(has_records(*rig, 4));
  CHECK(all_payloads(*rig->queue) == expected(0, 4, "fresh-"));
}

TEST_CASE("file: compressed files are ignored, a missing directory is reported and watched for",
          "[input][file]") {
  TempDir dir;
  append(dir / "app.log", numbered(0, 2));
  append(dir / "app.log.1.gz", "not text at all\n");
  auto options = input_queue_options(dir / "q");
  options.dir = dir / "q";
  InputRig rig("[[inputs.file]]\nname = \"logs\"\npoll_interval = \"50ms\"\npaths = [\"" + (dir / "app.log*").string() +
                   "\", \"" + (dir / "later" / "*.log").string() + "\"]\n",
               options);
  rig.input->start();
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 2; }));
  CHECK(counter(rig.registry, "tank_input_errors_total{input=\"logs\",reason=\"missing_directory\",type=\"file\"}") >= 1);
  std::filesystem::create_directories(dir / "later");
  append(dir / "later" / "x.log", "from the later directory\n");
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 3; }));
  auto all = all_payloads(*rig.queue);
  CHECK(std::find(all.begin(), all.end(), "not text at all") == all.end());
}

TEST_CASE("file: a line over max_line_bytes is dead-lettered and reading goes on", "[input][file]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, "short\n" + std::string(300000, 'L') + "\nafter\n");
  auto rig = file_rig(dir / "q", log.string(), "max_line_bytes = \"1KiB\"\n");
  rig->input->start();
  REQUIRE(has_records(*rig, 2));
  CHECK(all_payloads(*rig->queue) == std::vector<std::string>{"short", "after"});
  REQUIRE(wait_until([&] { return rig->queue->dead_letter_stats().entries == 1; }));
  auto letter = rig->queue->dead_letters({}).at(0);
  CHECK(letter.letter.reason == "line_too_long");
  CHECK(letter.letter.original_size == 300000);
  CHECK(letter.letter.original.size() == queue::kMaxDeadLetterBytes);
}

TEST_CASE("file: a full queue pauses reading and nothing is lost", "[input][file][backpressure]") {
  TempDir dir;
  auto log = dir / "app.log";
  constexpr int kLines = 20000;
  append(log, numbered(0, kLines, "a-fairly-long-log-line-with-padding-to-fill-the-queue-"));
  auto options = input_queue_options(dir / "q");
  options.dir = dir / "q";
  options.max_disk_bytes = 512 << 10;
  options.low_watermark = 0.5;
  InputRig rig("[[inputs.file]]\nname = \"logs\"\npoll_interval = \"50ms\"\npaths = [\"" + log.string() + "\"]\n",
               options);
  rig.connect_pressure();
  rig.input->start();
  REQUIRE(wait_until([&] { return rig.queue->blocked(); }));
  std::uint64_t position = 0;
  int seen = 0;
  bool in_order = true;
  REQUIRE(wait_until(
      [&] {
        auto b = rig.queue->read(position, {5000, 1 << 20});
        for (const auto& r : b.records()) {
          in_order = in_order && r.payload == "a-fairly-long-log-line-with-padding-to-fill-the-queue-" + std::to_string(seen);
          ++seen;
        }
        if (!b.empty()) {
          position = b.scanned_to();
          REQUIRE(rig.queue->ack("out", position).ok());
        }
        return seen == kLines;
      },
      std::chrono::seconds(60)));
  CHECK(in_order);
}

TEST_CASE("file: a file truncated and rewritten past its old size is read from the beginning",
          "[input][file][rotation]") {
  TempDir dir;
  auto log = dir / "app.log";
  append(log, numbered(0, 3, "first-"));
  auto rig = file_rig(dir / "q", log.string());
  rig->connect_pressure();
  rig->input->start();
  REQUIRE(has_records(*rig, 3));
  rig->input->set_paused(true);  // the rewrite happens between two reads
  {
    std::ofstream out(log, std::ios::trunc | std::ios::binary);
    out << numbered(0, 20, "second-");
  }
  rig->input->set_paused(false);
  REQUIRE(has_records(*rig, 23));
  auto all = all_payloads(*rig->queue);
  CHECK(std::vector<std::string>(all.begin() + 3, all.end()) == expected(0, 20, "second-"));
}

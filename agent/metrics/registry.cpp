#include "metrics/registry.hpp"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <prometheus/text_serializer.h>

#include "common/build_info.hpp"
#include "common/fs.hpp"

namespace tank::metrics {

Registry::Registry() : core_(std::make_shared<prometheus::Registry>()) {}

void Registry::add_collectable(const std::shared_ptr<prometheus::Collectable>& collectable) {
  std::lock_guard lock(mutex_);
  collectables_.push_back(collectable);
}

std::vector<prometheus::MetricFamily> Registry::collect() const {
  std::vector<prometheus::MetricFamily> families = core_->Collect();
  std::vector<std::shared_ptr<prometheus::Collectable>> alive;
  {
    std::lock_guard lock(mutex_);
    auto it = collectables_.begin();
    while (it != collectables_.end()) {
      if (auto c = it->lock()) {
        alive.push_back(std::move(c));
        ++it;
      } else {
        it = collectables_.erase(it);
      }
    }
  }
  for (const auto& c : alive) {
    auto more = c->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return families;
}

std::string Registry::serialize() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, collect());
  return out.str();
}

prometheus::MetricFamily gauge_family(std::string name, std::string help, std::vector<GaugeSample> samples) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  for (auto& s : samples) {
    prometheus::ClientMetric m;
    m.label = std::move(s.labels);
    m.gauge.value = s.value;
    family.metric.push_back(std::move(m));
  }
  return family;
}

prometheus::MetricFamily gauge_family(std::string name, std::string help, double value) {
  return gauge_family(std::move(name), std::move(help), std::vector<GaugeSample>{{{}, value}});
}

prometheus::MetricFamily counter_family(std::string name, std::string help, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric m;
  m.counter.value = value;
  family.metric.push_back(std::move(m));
  return family;
}

namespace {

struct ProcStat {
  double cpu_seconds = 0;
  double start_time_seconds = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
  double threads = 0;
};

ProcStat read_proc_stat() {
  ProcStat s;
  std::string error;
  auto text = fs::read_file("/proc/self/stat", &error);
  if (!text) return s;
  // Fields after the command name, which is in parentheses and may contain spaces.
  auto close = text->rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream in(text->substr(close + 2));
  std::vector<std::string> f;
  std::string item;
  while (in >> item) f.push_back(item);
  // f[0] is field 3 (state). utime=14, stime=15, num_threads=20, starttime=22, vsize=23, rss=24.
  auto field = [&](int n) -> double {
    std::size_t i = static_cast<std::size_t>(n - 3);
    return i < f.size() ? std::stod(f[i]) : 0.0;
  };
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  s.cpu_seconds = (field(14) + field(15)) / ticks;
  s.threads = field(20);
  s.virtual_bytes = field(23);
  s.resident_bytes = field(24) * page;
  double boot_time = 0;
  if (auto st = fs::read_file("/proc/stat", &error)) {
    std::istringstream lines(*st);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("btime ", 0) == 0) boot_time = std::stod(line.substr(6));
    }
  }
  s.start_time_seconds = boot_time + field(22) / ticks;
  return s;
}

double count_open_fds() {
  double n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    n -= 1;  // the directory stream itself
  }
  return n;
}

double max_fds() {
  std::string error;
  auto text = fs::read_file("/proc/self/limits", &error);
  if (!text) return 0;
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream in(line.substr(14));
      std::string soft;
      in >> soft;
      try {
        return std::stod(soft);
      } catch (...) {
        return 0;
      }
    }
  }
  return 0;
}

}  // namespace

std::shared_ptr<prometheus::Collectable> make_process_collectable() {
  return std::make_shared<FunctionCollectable>([] {
    ProcStat s;
    try {
      s = read_proc_stat();
    } catch (...) {
    }
    std::vector<prometheus::MetricFamily> out;
    out.push_back(counter_family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                                 s.cpu_seconds));
    out.push_back(gauge_family("process_resident_memory_bytes", "Resident memory size in bytes.", s.resident_bytes));
    out.push_back(gauge_family("process_virtual_memory_bytes", "Virtual memory size in bytes.", s.virtual_bytes));
    out.push_back(gauge_family("process_start_time_seconds",
                               "Start time of the process since unix epoch in seconds.", s.start_time_seconds));
    out.push_back(gauge_family("process_open_fds", "Number of open file descriptors.", count_open_fds()));
    out.push_back(gauge_family("process_max_fds", "Maximum number of open file descriptors.", max_fds()));
    out.push_back(gauge_family("process_threads", "Number of OS threads in the process.", s.threads));
    return out;
  });
}

std::shared_ptr<prometheus::Collectable> make_build_info_collectable() {
  return std::make_shared<FunctionCollectable>([] {
    std::vector<prometheus::MetricFamily> out;
    out.push_back(gauge_family("tank_build_info", "Build information about tank; the value is always 1.",
                               std::vector<GaugeSample>{{{{"version", build::version},
                                                          {"commit", build::git_commit},
                                                          {"build_type", build::build_type}},
                                                         1.0}}));
    return out;
  });
}

}  // namespace tank::metrics

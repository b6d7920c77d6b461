// The crash-state builder (crash_state.hpp): per cut, what is durable and what is pending; per
// state, which pending page versions and directory operations reached the disk.

#include "powerloss/crash_state.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

namespace tank::powerloss {
namespace {

// fallocate modes the model knows (linux/falloc.h).
constexpr std::int64_t kKeepSize = 0x01;
constexpr std::int64_t kPunchHole = 0x02;
constexpr std::int64_t kZeroRange = 0x10;

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

bool zeroes(const Op& op) { return op.kind == Op::Kind::fallocate && (op.mode & (kPunchHole | kZeroRange)) != 0; }

// Whether `op` sets every byte of page `p` (so older versions do not show through).
bool covers_page(const Op& op, std::uint64_t p) {
  const auto lo = static_cast<std::int64_t>(p * kPageBytes), hi = lo + static_cast<std::int64_t>(kPageBytes);
  switch (op.kind) {
    case Op::Kind::write: return op.offset <= lo && op.offset + static_cast<std::int64_t>(op.data.size()) >= hi;
    case Op::Kind::truncate: return op.offset <= lo;
    case Op::Kind::fallocate: return zeroes(op) && op.offset <= lo && op.offset + static_cast<std::int64_t>(op.length) >= hi;
    default: return false;
  }
}

// Applies `op` to the 4096 bytes of page `p` in `buf`.
void apply(const Op& op, std::uint64_t p, char* buf) {
  const auto lo = static_cast<std::int64_t>(p * kPageBytes), hi = lo + static_cast<std::int64_t>(kPageBytes);
  auto zero = [&](std::int64_t from, std::int64_t to) {
    from = std::max(from, lo);
    to = std::min(to, hi);
    if (from < to) std::memset(buf + (from - lo), 0, static_cast<std::size_t>(to - from));
  };
  switch (op.kind) {
    case Op::Kind::write: {
      const std::int64_t from = std::max(op.offset, lo);
      const std::int64_t to = std::min(op.offset + static_cast<std::int64_t>(op.data.size()), hi);
      if (from < to) std::memcpy(buf + (from - lo), op.data.data() + (from - op.offset), static_cast<std::size_t>(to - from));
      break;
    }
    case Op::Kind::truncate: zero(op.offset, hi); break;
    case Op::Kind::fallocate:
      if (zeroes(op)) zero(op.offset, op.offset + static_cast<std::int64_t>(op.length));
      break;
    default: break;
  }
}

// Deterministic draws from a seed (splitmix64): a replayed recipe makes the same choices.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
std::uint64_t draw(std::uint64_t seed, std::uint64_t a, std::uint64_t b) { return mix(seed ^ mix(a ^ mix(b))); }
std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

// What is durable and what is pending at one cut.
struct CrashModel::Cut {
  std::size_t index = 0;
  std::int64_t instant = 0;
  struct PageCut {
    std::ptrdiff_t durable = -1;         // position in File::ops of the durable version; -1: none
    std::vector<std::size_t> pending;    // later versions (positions), oldest first
  };
  struct FileCut {
    bool in_order = false;               // a truncate or fallocate is pending
    std::uint64_t durable_size = 0;
    std::vector<std::size_t> pending;    // positions in File::ops, oldest first
    std::map<std::uint64_t, PageCut> pages;
  };
  std::vector<FileCut> files;
  struct DirCut {
    std::vector<std::size_t> durable, pending;  // trace indices
  };
  std::map<std::string, DirCut> dirs;
  std::vector<std::size_t> pending;  // trace indices of every pending operation, in order
};

// One state's choices (anything not chosen stays as durable).
struct CrashModel::Selection {
  std::vector<std::map<std::uint64_t, std::ptrdiff_t>> page_versions;  // by file id: page -> position, -1 none
  std::vector<std::size_t> file_prefix;                                // by file id (in-order files)
  std::map<std::string, std::size_t> dir_prefix;
};

CrashModel::CrashModel(const Trace& trace, Names names) : trace_(trace), names_(names), file_of_(trace.ops().size(), -1) {
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::size_t> current;  // (dev, ino) -> file id
  const auto& ops = trace.ops();
  auto file_for = [&](std::size_t i) {
    auto it = current.find({ops[i].dev, ops[i].ino});
    if (it == current.end()) {
      throw std::runtime_error(fmt::format("op {} ({}) changes a file that existed before the recording began: start "
                                           "the recording in an empty directory",
                                           i, ops[i].describe()));
    }
    file_of_[i] = static_cast<std::ptrdiff_t>(it->second);
    return it->second;
  };
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    longest_op_ns_ = std::max(longest_op_ns_, op.end_ns - op.start_ns);
    switch (op.kind) {
      case Op::Kind::create:
        current[{op.dev, op.ino}] = files_.size();
        file_of_[i] = static_cast<std::ptrdiff_t>(files_.size());
        files_.emplace_back();
        dirs_[parent_of(op.path)].entries.push_back(i);
        break;
      case Op::Kind::write:
      case Op::Kind::truncate:
      case Op::Kind::fallocate: {
        if (op.kind == Op::Kind::fallocate && (op.mode & ~(kKeepSize | kPunchHole | kZeroRange)) != 0) {
          throw std::runtime_error(fmt::format("op {}: fallocate mode {:#x} is not modelled", i, op.mode));
        }
        File& f = files_[file_for(i)];
        const std::uint64_t before = f.size_after.empty() ? 0 : f.size_after.back();
        std::uint64_t after = before, first = 0, last = 0;  // pages [first, last) touched
        const auto off = static_cast<std::uint64_t>(op.offset);
        if (op.kind == Op::Kind::write) {
          after = std::max(before, off + op.data.size());
          first = off / kPageBytes;
          last = op.data.empty() ? first : (off + op.data.size() - 1) / kPageBytes + 1;
        } else if (op.kind == Op::Kind::truncate) {
          after = off;
          first = off / kPageBytes;
          last = before > off ? (before - 1) / kPageBytes + 1 : first;
        } else {
          if (!(op.mode & kKeepSize)) after = std::max(before, off + op.length);
          if (zeroes(op) && op.length > 0) {
            first = off / kPageBytes;
            last = (off + op.length - 1) / kPageBytes + 1;
          }
        }
        const std::size_t position = f.ops.size();
        f.ops.push_back(i);
        f.size_after.push_back(after);
        for (std::uint64_t p = first; p < last; ++p) f.pages[p].push_back(position);
        break;
      }
      case Op::Kind::sync:
        syncs_.push_back(i);
        if (op.dir) {
          dirs_[op.path].syncs.push_back(i);
        } else {
          files_[file_for(i)].syncs.push_back(i);
        }
        break;
      case Op::Kind::sync_all: sync_alls_.push_back(i); break;
      case Op::Kind::sync_range: break;  // no durability promise
      case Op::Kind::mkdir:
      case Op::Kind::unlink:
      case Op::Kind::rmdir:
      case Op::Kind::rename:
        if (op.path.empty()) break;  // the recorded directory itself: always there
        if (op.kind == Op::Kind::rename && parent_of(op.path) != parent_of(op.path2)) {
          throw std::runtime_error(fmt::format("op {} ({}) renames across directories: not modelled", i, op.describe()));
        }
        dirs_[parent_of(op.path)].entries.push_back(i);
        break;
    }
  }
}

CrashModel::Cut CrashModel::view(std::size_t cut_index) const {
  const auto& ops = trace_.ops();
  if (cut_index >= ops.size()) throw std::out_of_range("cut beyond the trace");
  Cut cut;
  cut.index = cut_index;
  cut.instant = ops[cut_index].end_ns;
  const std::int64_t t = cut.instant;
  // Returned by the cut (i <= cut_index), or in flight at it (started before it).
  auto happened = [&](std::size_t i) { return i <= cut_index || ops[i].start_ns < t; };
  // Past this, no operation can have started before the cut.
  auto beyond = [&](std::size_t i) { return i > cut_index && ops[i].end_ns > t + longest_op_ns_; };
  // The latest start of a sync in `syncs` (or sync/syncfs) that returned by the cut.
  auto barrier = [&](const std::vector<std::size_t>& syncs) {
    std::int64_t b = INT64_MIN;
    for (const auto* list : {&syncs, &sync_alls_}) {
      for (std::size_t s : *list) {
        if (s > cut_index) break;
        b = std::max(b, ops[s].start_ns);
      }
    }
    return b;
  };

  cut.files.resize(files_.size());
  for (std::size_t fid = 0; fid < files_.size(); ++fid) {
    const File& f = files_[fid];
    Cut::FileCut& fc = cut.files[fid];
    const std::int64_t b = barrier(f.syncs);
    std::vector<char> covered(f.ops.size(), 0), seen(f.ops.size(), 0);
    std::ptrdiff_t last_barrier_covered = -1;
    for (std::size_t j = 0; j < f.ops.size(); ++j) {
      const std::size_t i = f.ops[j];
      if (beyond(i)) break;
      if (!happened(i)) continue;
      seen[j] = 1;
      const Op& op = ops[i];
      if (i <= cut_index && op.end_ns <= b) {
        covered[j] = 1;
        last_barrier_covered = static_cast<std::ptrdiff_t>(j);
      } else if (i <= cut_index && op.kind == Op::Kind::write && op.dsync) {
        covered[j] = 1;
        fc.durable_size = std::max(fc.durable_size, static_cast<std::uint64_t>(op.offset) + op.data.size());
      } else {
        fc.pending.push_back(j);
        if (op.kind != Op::Kind::write) fc.in_order = true;
      }
    }
    if (last_barrier_covered >= 0) {
      fc.durable_size = std::max(fc.durable_size, f.size_after[static_cast<std::size_t>(last_barrier_covered)]);
    }
    for (const auto& [p, positions] : f.pages) {
      Cut::PageCut pc;
      for (std::size_t j : positions) {
        if (covered[j]) pc.durable = static_cast<std::ptrdiff_t>(j);
      }
      for (std::size_t j : positions) {
        if (seen[j] && !covered[j] && static_cast<std::ptrdiff_t>(j) > pc.durable) pc.pending.push_back(j);
      }
      if (pc.durable >= 0 || !pc.pending.empty()) cut.files[fid].pages.emplace(p, std::move(pc));
    }
    for (std::size_t j : fc.pending) cut.pending.push_back(f.ops[j]);
  }

  const std::int64_t journal = names_ == Names::journaled ? barrier(syncs_) : INT64_MIN;
  for (const auto& [path, dir] : dirs_) {
    const std::int64_t b = std::max(barrier(dir.syncs), journal);
    Cut::DirCut dc;
    for (std::size_t i : dir.entries) {
      if (beyond(i)) break;
      if (!happened(i)) continue;
      if (i <= cut_index && ops[i].end_ns <= b) {
        dc.durable.push_back(i);
      } else {
        dc.pending.push_back(i);
        cut.pending.push_back(i);
      }
    }
    cut.dirs.emplace(path, std::move(dc));
  }
  std::sort(cut.pending.begin(), cut.pending.end());
  return cut;
}

std::size_t CrashModel::pending(std::size_t cut) const { return view(cut).pending.size(); }

CrashModel::Selection CrashModel::prefix_selection(const Cut& cut, std::size_t k) const {
  Selection s;
  s.page_versions.resize(files_.size());
  s.file_prefix.assign(files_.size(), 0);
  if (k == 0) {
    for (const auto& [path, dc] : cut.dirs) s.dir_prefix[path] = 0;
    return s;
  }
  const std::size_t limit = cut.pending.at(k - 1);  // the last operation that reached the disk
  for (std::size_t fid = 0; fid < files_.size(); ++fid) {
    const Cut::FileCut& fc = cut.files[fid];
    const File& f = files_[fid];
    if (fc.in_order) {
      s.file_prefix[fid] = static_cast<std::size_t>(
          std::count_if(fc.pending.begin(), fc.pending.end(), [&](std::size_t j) { return f.ops[j] <= limit; }));
      continue;
    }
    for (const auto& [p, pc] : fc.pages) {
      std::ptrdiff_t v = -2;
      for (std::size_t j : pc.pending) {
        if (f.ops[j] <= limit) v = static_cast<std::ptrdiff_t>(j);
      }
      if (v != -2) s.page_versions[fid][p] = v;
    }
  }
  for (const auto& [path, dc] : cut.dirs) {
    s.dir_prefix[path] = static_cast<std::size_t>(
        std::count_if(dc.pending.begin(), dc.pending.end(), [&](std::size_t i) { return i <= limit; }));
  }
  return s;
}

CrashModel::Selection CrashModel::drawn_selection(const Cut& cut, std::uint64_t seed) const {
  Selection s;
  s.page_versions.resize(files_.size());
  s.file_prefix.assign(files_.size(), 0);
  // How eager writeback was: the share of pages with a pending version that reached the disk.
  const double eagerness = static_cast<double>(draw(seed, 0x5eed, 0) % 1001) / 1000.0;
  for (std::size_t fid = 0; fid < files_.size(); ++fid) {
    const Cut::FileCut& fc = cut.files[fid];
    if (fc.in_order) {
      s.file_prefix[fid] = draw(seed, fid, 0xf11e) % (fc.pending.size() + 1);
      continue;
    }
    for (const auto& [p, pc] : fc.pages) {
      if (pc.pending.empty()) continue;
      const double u = static_cast<double>(draw(seed, fid, p * 2) % 1000000) / 1000000.0;
      if (u >= eagerness) continue;
      const std::uint64_t w = draw(seed, fid, p * 2 + 1);
      // Half the time the newest version (what writeback usually finds), else any one of them.
      const std::size_t pick = (w & 1) ? pc.pending.size() - 1 : static_cast<std::size_t>((w >> 1) % pc.pending.size());
      s.page_versions[fid][p] = static_cast<std::ptrdiff_t>(pc.pending[pick]);
    }
  }
  for (const auto& [path, dc] : cut.dirs) {
    s.dir_prefix[path] = draw(seed, name_hash(path), 0xd1) % (dc.pending.size() + 1);
  }
  return s;
}

std::string CrashModel::page(const File& file, std::uint64_t p, std::size_t position) const {
  const auto& ops = trace_.ops();
  const auto& list = file.pages.at(p);
  const auto at = static_cast<std::size_t>(std::lower_bound(list.begin(), list.end(), position) - list.begin());
  std::size_t from = 0;
  for (std::size_t j = at + 1; j-- > 0;) {
    if (covers_page(ops[file.ops[list[j]]], p)) {
      from = j;
      break;
    }
  }
  std::string buf(kPageBytes, '\0');
  for (std::size_t j = from; j <= at; ++j) apply(ops[file.ops[list[j]]], p, buf.data());
  return buf;
}

std::string CrashModel::content(std::size_t fid, const Cut& cut, const Selection& selection) const {
  const File& f = files_[fid];
  const Cut::FileCut& fc = cut.files[fid];
  std::uint64_t size = fc.durable_size;
  std::map<std::uint64_t, std::ptrdiff_t> versions;
  if (fc.in_order) {
    const std::size_t k = selection.file_prefix[fid];
    const std::ptrdiff_t limit = k > 0 ? static_cast<std::ptrdiff_t>(fc.pending[k - 1]) : -1;
    if (k > 0) size = f.size_after[fc.pending[k - 1]];
    for (const auto& [p, pc] : fc.pages) {
      std::ptrdiff_t v = pc.durable;
      for (std::size_t j : pc.pending) {
        if (static_cast<std::ptrdiff_t>(j) <= limit) v = std::max(v, static_cast<std::ptrdiff_t>(j));
      }
      versions[p] = v;
    }
  } else {
    const auto& chosen = selection.page_versions[fid];
    for (const auto& [p, pc] : fc.pages) {
      auto it = chosen.find(p);
      const std::ptrdiff_t v = it == chosen.end() ? pc.durable : it->second;
      versions[p] = v;
      if (it != chosen.end() && v >= 0 && v != pc.durable) {
        size = std::max(size, std::min((p + 1) * kPageBytes, f.size_after[static_cast<std::size_t>(v)]));
      }
    }
  }
  std::string out(size, '\0');
  for (const auto& [p, v] : versions) {
    if (v < 0 || p * kPageBytes >= size) continue;
    const std::string bytes = page(f, p, static_cast<std::size_t>(v));
    std::memcpy(out.data() + p * kPageBytes, bytes.data(), std::min<std::uint64_t>(kPageBytes, size - p * kPageBytes));
  }
  return out;
}

DiskState CrashModel::assemble(const Cut& cut, const Selection& selection) const {
  const auto& ops = trace_.ops();
  std::vector<std::size_t> chosen;
  for (const auto& [path, dc] : cut.dirs) {
    chosen.insert(chosen.end(), dc.durable.begin(), dc.durable.end());
    auto k = selection.dir_prefix.count(path) ? selection.dir_prefix.at(path) : 0;
    chosen.insert(chosen.end(), dc.pending.begin(), dc.pending.begin() + static_cast<std::ptrdiff_t>(k));
  }
  std::sort(chosen.begin(), chosen.end());
  std::set<std::string> dirs;
  std::map<std::string, std::size_t> names;  // path -> file id
  auto under = [](const std::string& path, const std::string& dir) {
    return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/';
  };
  for (std::size_t i : chosen) {
    const Op& op = ops[i];
    switch (op.kind) {
      case Op::Kind::create: names[op.path] = static_cast<std::size_t>(file_of_[i]); break;
      case Op::Kind::mkdir: dirs.insert(op.path); break;
      case Op::Kind::unlink: names.erase(op.path); break;
      case Op::Kind::rmdir: dirs.erase(op.path); break;
      case Op::Kind::rename:
        if (auto it = names.find(op.path); it != names.end()) {
          const std::size_t fid = it->second;
          names.erase(it);
          names[op.path2] = fid;
        } else if (dirs.contains(op.path)) {
          std::set<std::string> moved_dirs;
          for (const auto& d : dirs) moved_dirs.insert(d == op.path || under(d, op.path) ? op.path2 + d.substr(op.path.size()) : d);
          std::map<std::string, std::size_t> moved_names;
          for (const auto& [n, fid] : names) moved_names[under(n, op.path) ? op.path2 + n.substr(op.path.size()) : n] = fid;
          dirs = std::move(moved_dirs);
          names = std::move(moved_names);
        }
        break;
      default: break;
    }
  }
  DiskState state;
  // A name survives only when every directory above it did (parents sort before children).
  for (const auto& d : dirs) {
    const std::string parent = parent_of(d);
    if (parent.empty() || state.dirs.contains(parent)) state.dirs.insert(d);
  }
  for (const auto& [name, fid] : names) {
    const std::string parent = parent_of(name);
    if (!parent.empty() && !state.dirs.contains(parent)) continue;
    state.files[name] = content(fid, cut, selection);
  }
  return state;
}

DiskState CrashModel::build(const Recipe& recipe) const {
  const Cut cut = view(recipe.cut);
  if (recipe.model == Recipe::Model::prefix) {
    if (recipe.prefix > cut.pending.size()) throw std::out_of_range("prefix beyond the pending operations");
    return assemble(cut, prefix_selection(cut, recipe.prefix));
  }
  return assemble(cut, drawn_selection(cut, recipe.seed));
}

std::vector<DiskState> CrashModel::enumerate(std::size_t cut_index) const {
  const Cut cut = view(cut_index);
  std::set<DiskState> states;
  for (std::size_t k = 0; k <= cut.pending.size(); ++k) states.insert(assemble(cut, prefix_selection(cut, k)));
  // Every combination of page versions, in-order file prefixes and directory prefixes.
  struct Dim {
    std::size_t fid;
    std::uint64_t page;
    std::string dir;
    int kind;  // 0 page, 1 in-order file, 2 directory
    std::size_t options;
  };
  std::vector<Dim> dims;
  double total = 1;
  for (std::size_t fid = 0; fid < files_.size(); ++fid) {
    const auto& fc = cut.files[fid];
    if (fc.in_order) {
      dims.push_back({fid, 0, "", 1, fc.pending.size() + 1});
    } else {
      for (const auto& [p, pc] : fc.pages) {
        if (!pc.pending.empty()) dims.push_back({fid, p, "", 0, pc.pending.size() + 1});
      }
    }
  }
  for (const auto& [path, dc] : cut.dirs) {
    if (!dc.pending.empty()) dims.push_back({0, 0, path, 2, dc.pending.size() + 1});
  }
  for (const auto& d : dims) total *= static_cast<double>(d.options);
  if (total > 1e6) throw std::runtime_error(fmt::format("cut {} has {:.0f} states: too many to enumerate", cut_index, total));
  std::vector<std::size_t> digit(dims.size(), 0);
  for (;;) {
    Selection s;
    s.page_versions.resize(files_.size());
    s.file_prefix.assign(files_.size(), 0);
    for (std::size_t d = 0; d < dims.size(); ++d) {
      const Dim& dim = dims[d];
      if (dim.kind == 0 && digit[d] > 0) {
        s.page_versions[dim.fid][dim.page] = static_cast<std::ptrdiff_t>(cut.files[dim.fid].pages.at(dim.page).pending[digit[d] - 1]);
      } else if (dim.kind == 1) {
        s.file_prefix[dim.fid] = digit[d];
      } else if (dim.kind == 2) {
        s.dir_prefix[dim.dir] = digit[d];
      }
    }
    states.insert(assemble(cut, s));
    std::size_t d = 0;
    while (d < dims.size() && ++digit[d] == dims[d].options) digit[d++] = 0;
    if (d == dims.size()) break;
  }
  return {states.begin(), states.end()};
}

std::optional<std::string> CrashModel::durable_content(std::size_t cut_index, const std::string& path) const {
  const auto& ops = trace_.ops();
  std::optional<std::size_t> fid;
  for (std::size_t i = 0; i <= cut_index && i < ops.size(); ++i) {
    if (ops[i].kind == Op::Kind::create && ops[i].path == path) fid = static_cast<std::size_t>(file_of_[i]);
  }
  if (!fid) return std::nullopt;
  const Cut cut = view(cut_index);
  return content(*fid, cut, prefix_selection(cut, 0));
}

std::string CrashModel::describe(const Recipe& recipe) const {
  const auto& ops = trace_.ops();
  const Op& op = ops.at(recipe.cut);
  const std::string model = recipe.model == Recipe::Model::prefix
                                ? fmt::format("prefix model: the first {} of {} pending operations reached the disk",
                                              recipe.prefix, pending(recipe.cut))
                                : fmt::format("pages model, seed {:#x}", recipe.seed);
  return fmt::format("cut after op {} of {} (t={} ns, {} ms before the last op: {}), {}", recipe.cut, ops.size(), op.end_ns,
                     (ops.back().end_ns - op.end_ns) / 1000000, op.describe(), model);
}

void DiskState::materialise(const std::filesystem::path& root) const {
  for (const auto& d : dirs) std::filesystem::create_directories(root / d);
  for (const auto& [name, bytes] : files) {
    std::ofstream out(root / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + (root / name).string());
  }
}

std::string DiskState::describe() const {
  std::string s;
  for (const auto& d : dirs) s += d + "/\n";
  for (const auto& [name, bytes] : files) s += fmt::format("{} {} bytes\n", name, bytes.size());
  return s;
}

}  // namespace tank::powerloss

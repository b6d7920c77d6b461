// The tree walk behind check_structure, find_database and for_each_entry (lmdb_file.hpp): every
// page LMDB would dereference to read a snapshot, checked before any of its bytes are used.

#include <algorithm>
#include <cerrno>
#include <new>
#include <optional>

#include <fmt/format.h>

#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"
#include "queue/lmdb_page.hpp"

namespace tank::queue::lmdb_file {
namespace {

namespace L = lmdb_layout;
using detail::KeyOrder;
using detail::Node;
using detail::View;

// Thrown inside the walk; check_structure turns them into a CheckResult.
struct Damage {
  std::uint64_t page;
  std::string what;
};
struct Unsupported {
  std::uint64_t page;
  std::string what;
};
// visit() asked to stop.
struct Stop {};

// Page map values: which tree a page belongs to, or free.
constexpr std::uint16_t kUnseen = 0;
constexpr std::uint16_t kFreeMark = 1;
constexpr std::uint16_t kFirstTreeMark = 2;

std::string printable(std::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\') {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  return out;
}

struct Tree {
  std::string label;  // "the free-page tree (FREE_DBI)", "database \"records\""
  Db db;
  KeyOrder order = KeyOrder::bytes;
  bool is_free = false;
  bool is_main = false;
  std::uint16_t mark = kFirstTreeMark;
  // Where its MDB_db is stored, for count mismatches: a meta page or a MAIN_DBI leaf.
  std::uint64_t record_page = 0;
  std::string record_place;
};

// Where a page was reached from, for the proof sentence.
struct Place {
  const Tree* tree = nullptr;
  unsigned depth = 1;
  std::uint64_t parent = 0;  // 0: the root (named by record_place)
  unsigned child = 0;

  std::string describe(std::uint64_t pgno) const {
    if (parent == 0) return fmt::format("page {} ({}, depth 1, root)", pgno, tree->label);
    return fmt::format("page {} ({}, depth {}, child {} of page {})", pgno, tree->label, depth, child, parent);
  }
};

struct Counts {
  std::uint64_t branch = 0, leaf = 0, overflow = 0, entries = 0;
};

// What the walk does with a leaf node's value.
enum class Values {
  headers,  // overflow runs: check the first page's header only
  read,     // read every value whole (overflow runs included)
};

// One leaf entry as the walk hands it on.
struct LeafItem {
  std::uint64_t page;
  unsigned index;
  const Node& node;
  std::string_view value;  // whole value with Values::read; the inline bytes otherwise
};
using LeafFn = std::function<void(const LeafItem&)>;

class Walker {
 public:
  Walker(const File& file, const Meta& meta, CheckResult* stats, const std::function<void()>* progress)
      : file_(file), stats_(stats), progress_(progress) {
    if (!meta.valid) throw Damage{static_cast<std::uint64_t>(meta.slot), meta.problem};
    psize_ = meta.page_size;
    if (psize_ > detail::kMaxPageSize) {
      throw Unsupported{static_cast<std::uint64_t>(meta.slot),
                        fmt::format("meta page {} names a page size of {} bytes (LMDB 0.9 writes at most {})",
                                    meta.slot, psize_, detail::kMaxPageSize)};
    }
    last_ = meta.last_page;
    // LMDB allocates pages below its map only (mdb_page_alloc: MDB_MAP_FULL at me_maxpg), and the
    // meta page records a map at least that large.
    if (last_ >= meta.map_size / psize_) {
      throw Damage{static_cast<std::uint64_t>(meta.slot),
                   fmt::format("meta page {} names last page {}, beyond its map of {} bytes ({} pages)", meta.slot,
                               last_, meta.map_size, meta.map_size / psize_)};
    }
    file_pages_ = file.size() / psize_;
    marks_.assign(static_cast<std::size_t>(std::min(last_ + 1, file_pages_)), kUnseen);
    buffers_.resize(L::kMaxDepth + 1);
    if (stats_ != nullptr) stats_->file_pages = file_pages_;
  }

  std::uint64_t file_pages() const { return file_pages_; }
  std::uint64_t last_page() const { return last_; }
  std::vector<std::uint16_t>& marks() { return marks_; }

  // Registers a tree; its pages get the returned mark.
  Tree& add_tree(Tree t) {
    t.mark = static_cast<std::uint16_t>(std::min<std::size_t>(kFirstTreeMark + trees_.size(), 0xffff));
    trees_.push_back(std::make_unique<Tree>(std::move(t)));
    return *trees_.back();
  }

  std::string owner(std::uint16_t mark) const {
    if (mark == kFreeMark) return "the free list";
    if (mark == 0xffff) return "a named database";  // beyond 65533 trees they share one mark
    const std::size_t i = mark - kFirstTreeMark;
    if (i < trees_.size()) return trees_[i]->label;
    return "a named database";
  }

  // Walks `tree`, checking every page; calls `on_leaf` for each entry in key order, then checks
  // the counts against the tree's MDB_db.
  void walk(const Tree& tree, Values values, const LeafFn& on_leaf) {
    const Db& db = tree.db;
    const std::uint64_t where = tree.record_page;
    if (db.root == L::kInvalidPage) {
      if (db.depth != 0 || db.branch_pages != 0 || db.leaf_pages != 0 || db.overflow_pages != 0 || db.entries != 0) {
        throw Damage{where, fmt::format("{} names no root page for {} but depth {}, {} entries and {} pages",
                                        tree.record_place, tree.label, db.depth, db.entries,
                                        db.branch_pages + db.leaf_pages + db.overflow_pages)};
      }
      return;
    }
    if (db.depth < 1 || db.depth > L::kMaxDepth) {
      throw Damage{where, fmt::format("{} gives {} a depth of {} (LMDB reads 1 to {})", tree.record_place,
                                      tree.label, db.depth, L::kMaxDepth)};
    }
    if (db.root < 2 || db.root > last_) {
      throw Damage{where, fmt::format("{} names root page {} for {}, outside pages 2..{} of the snapshot",
                                      tree.record_place, db.root, tree.label, last_)};
    }
    Counts counts;
    integer_key_size_ = 0;
    Place root{&tree, 1, 0, 0};
    page(tree, db.root, root, nullptr, nullptr, values, on_leaf, counts);
    auto mismatch = [&](const char* what, std::uint64_t found, std::uint64_t recorded) {
      if (found != recorded) {
        throw Damage{where, fmt::format("{} has {} {}, but {} records {}", tree.label, found, what,
                                        tree.record_place, recorded)};
      }
    };
    mismatch("branch pages", counts.branch, db.branch_pages);
    mismatch("leaf pages", counts.leaf, db.leaf_pages);
    mismatch("overflow pages", counts.overflow, db.overflow_pages);
    mismatch("entries", counts.entries, db.entries);
    if (stats_ != nullptr) stats_->tree_pages += counts.branch + counts.leaf + counts.overflow;
  }

  // Reads `n` bytes at page `pgno`'s start into `out`; Damage when the file ends before.
  void read(std::uint64_t pgno, std::size_t n, std::vector<char>& out, const std::string& place) {
    out.resize(n);
    const std::size_t got = file_.read_at(pgno * psize_, out.data(), n);
    if (got < n) throw Damage{pgno, fmt::format("{}: the file ends inside it", place)};
    if (stats_ != nullptr) {
      stats_->pages_read += (n + psize_ - 1) / psize_;
      stats_->bytes_read += n;
    }
    pages_since_progress_ += (n + psize_ - 1) / psize_;
    if (pages_since_progress_ >= 1024) {
      pages_since_progress_ = 0;
      if (progress_ != nullptr && *progress_) (*progress_)();
    }
  }

  // Marks `pgno` as the tree's; Damage when something reached it before.
  void claim(std::uint64_t pgno, std::uint16_t mark, const std::string& place) {
    std::uint16_t& m = marks_[static_cast<std::size_t>(pgno)];
    if (m != kUnseen) {
      throw Damage{pgno, m == mark ? fmt::format("{}: reached a second time in the same tree (a cycle or a shared "
                                                 "page)", place)
                                   : fmt::format("{}: is also part of {}", place, owner(m))};
    }
    m = mark;
  }

 private:
  // Checks that pages pgno..pgno+count-1, named by `subject` (a node of page `parent`), are pages
  // of the snapshot and inside the file.
  void check_pointer(std::uint64_t pgno, std::uint64_t count, std::uint64_t parent, const std::string& subject) {
    if (pgno < 2 || pgno > last_ || count > last_ + 1 - pgno) {
      throw Damage{parent, fmt::format("{} lies outside pages 2..{} of the snapshot", subject, last_)};
    }
    if (pgno + count > file_pages_) {
      const std::uint64_t missing = std::max(pgno, file_pages_);
      throw Damage{missing, fmt::format("{} lies past the end of the file ({} pages)", subject, file_pages_)};
    }
  }

  void page(const Tree& tree, std::uint64_t pgno, const Place& at, const std::string_view* low,
            const std::string_view* high, Values values, const LeafFn& on_leaf, Counts& counts) {
    const std::string place = at.describe(pgno);
    check_pointer(pgno, 1, at.parent == 0 ? tree.record_page : at.parent, place);
    claim(pgno, tree.mark, place);
    std::vector<char>& buf = buffers_[at.depth];
    read(pgno, psize_, buf, place);
    const View v{buf.data(), psize_};
    if (v.pgno() != pgno) throw Damage{pgno, fmt::format("{}: its header names page {}", place, v.pgno())};
    const bool leaf = at.depth == tree.db.depth;
    const std::uint16_t expected = leaf ? L::kLeaf : L::kBranch;
    if (v.flags() != expected) {
      throw Damage{pgno, fmt::format("{}: flags {:#x}, but a {} page belongs here (the tree's depth is {})", place,
                                     v.flags(), leaf ? "leaf" : "branch", tree.db.depth)};
    }
    if (std::string problem = detail::bounds_problem(v); !problem.empty()) {
      throw Damage{pgno, fmt::format("{}: {}", place, problem)};
    }
    const unsigned n = v.keys();
    const unsigned least = leaf ? 1 : tree.is_free ? 1 : 2;
    if (n < least) {
      throw Damage{pgno, fmt::format("{}: a {} page with {} keys (LMDB keeps at least {})", place,
                                     leaf ? "leaf" : "branch", n, least)};
    }
    if (leaf) {
      ++counts.leaf;
    } else {
      ++counts.branch;
    }

    // Every node inside the page; together they tile [upper, page end) (LMDB adds, deletes and
    // resizes nodes by moving the others: it leaves no gap and no overlap; each node takes an even
    // number of bytes).
    std::vector<Node>& nodes = nodes_[at.depth];
    nodes.resize(n);
    spans_.clear();
    for (unsigned i = 0; i < n; ++i) {
      if (std::string problem = detail::read_node(v, i, leaf, &nodes[i]); !problem.empty()) {
        throw Damage{pgno, fmt::format("{}: {}", place, problem)};
      }
      spans_.push_back({nodes[i].offset, nodes[i].end, i});
    }
    std::sort(spans_.begin(), spans_.end());
    unsigned tiled_to = v.upper();
    for (std::size_t k = 0; k < spans_.size(); ++k) {
      if (k > 0 && spans_[k].begin < tiled_to) {
        throw Damage{pgno, fmt::format("{}: nodes {} and {} overlap", place, spans_[k - 1].index, spans_[k].index)};
      }
      if (spans_[k].begin > tiled_to) {
        throw Damage{pgno, fmt::format("{}: {} bytes at offset {} belong to no node", place,
                                       spans_[k].begin - tiled_to, tiled_to)};
      }
      tiled_to = (spans_[k].end + 1) & ~1u;
    }
    if (tiled_to != psize_) {
      throw Damage{pgno, fmt::format("{}: {} bytes at offset {} belong to no node", place, psize_ - tiled_to,
                                     tiled_to)};
    }

    // Keys in order, inside the parent's range. A branch page's key 0 is never compared by LMDB.
    for (unsigned i = leaf ? 0 : 1; i < n; ++i) {
      const std::string_view key = nodes[i].key;
      check_key_size(tree, key, pgno, i, place);
      if (i > (leaf ? 0u : 1u) && detail::compare(tree.order, nodes[i - 1].key, key) >= 0) {
        throw Damage{pgno, fmt::format("{}: key {} is not above key {}", place, i, i - 1)};
      }
      if (low != nullptr && detail::compare(tree.order, key, *low) < 0) {
        throw Damage{pgno, fmt::format("{}: key {} lies below the separator that leads here", place, i)};
      }
      if (high != nullptr && detail::compare(tree.order, key, *high) >= 0) {
        throw Damage{pgno, fmt::format("{}: key {} is not below the next separator of the parent", place, i)};
      }
    }

    if (!leaf) {
      prefetch_children(nodes, n);
      for (unsigned i = 0; i < n; ++i) {
        const std::string_view* child_low = i == 0 ? low : &nodes[i].key;
        const std::string_view* child_high = i + 1 < n ? &nodes[i + 1].key : high;
        Place child{&tree, at.depth + 1, pgno, i};
        page(tree, nodes[i].child, child, child_low, child_high, values, on_leaf, counts);
      }
      return;
    }

    for (unsigned i = 0; i < n; ++i) {
      const Node& node = nodes[i];
      const std::uint16_t allowed = tree.is_main ? (L::kNodeBigData | L::kNodeSubData) : L::kNodeBigData;
      if ((node.flags & ~allowed) != 0 || (node.flags & L::kNodeBigData && node.flags & L::kNodeSubData)) {
        throw Damage{pgno, fmt::format("{}: node {} has flags {:#x}, which LMDB never gives a node of {}", place, i,
                                       node.flags, tree.label)};
      }
      if ((node.flags & L::kNodeSubData) != 0 && node.data_size != L::kDbBytes) {
        throw Damage{pgno, fmt::format("{}: node {} holds a named database's record of {} bytes (LMDB's are {})",
                                       place, i, node.data_size, L::kDbBytes)};
      }
      ++counts.entries;
      std::string_view value = node.data;
      if ((node.flags & L::kNodeBigData) != 0) {
        value = overflow(tree, pgno, i, node, values, place, counts);
      }
      if (on_leaf) on_leaf(LeafItem{pgno, i, node, value});
    }
  }

  // Asks for the children of a branch page at once, in runs of neighbouring pages: on a cold
  // cache the device gets them together instead of one read at a time (a queue's leaves lie
  // wherever freed pages were reused).
  void prefetch_children(const std::vector<Node>& nodes, unsigned n) {
    children_.clear();
    for (unsigned i = 0; i < n; ++i) {
      if (nodes[i].child >= 2 && nodes[i].child < file_pages_) children_.push_back(nodes[i].child);
    }
    std::sort(children_.begin(), children_.end());
    for (std::size_t k = 0; k < children_.size();) {
      std::size_t e = k + 1;
      while (e < children_.size() && children_[e] <= children_[e - 1] + 1) ++e;
      file_.prefetch(children_[k] * psize_, (children_[e - 1] - children_[k] + 1) * psize_);
      k = e;
    }
  }

  void check_key_size(const Tree& tree, std::string_view key, std::uint64_t pgno, unsigned i,
                      const std::string& place) {
    if (tree.order == KeyOrder::size_t_key && key.size() != L::kWord) {
      throw Damage{pgno, fmt::format("{}: key {} has {} bytes, but {} keys are {}-byte transaction ids", place, i,
                                     key.size(), tree.label, L::kWord)};
    }
    if (tree.order == KeyOrder::integer) {
      if (key.size() != 4 && key.size() != 8) {
        throw Damage{pgno, fmt::format("{}: key {} has {} bytes, not an integer key", place, i, key.size())};
      }
      if (integer_key_size_ == 0) integer_key_size_ = key.size();
      if (key.size() != integer_key_size_) {
        throw Damage{pgno, fmt::format("{}: key {} has {} bytes, other integer keys of {} have {}", place, i,
                                       key.size(), tree.label, integer_key_size_)};
      }
    }
  }

  // Checks the overflow run of a F_BIGDATA node and claims its pages; returns the value when
  // reading values, else the node's inline bytes.
  std::string_view overflow(const Tree& tree, std::uint64_t pgno, unsigned i, const Node& node, Values values,
                            const std::string& place, Counts& counts) {
    const std::uint64_t first = detail::word_at(node.data.data());
    const std::string where = fmt::format("overflow page {} ({}, value of node {} on page {})", first, tree.label, i,
                                          pgno);
    const std::uint64_t needed = detail::overflow_pages_for(node.data_size, psize_);
    check_pointer(first, needed, pgno, fmt::format("{}: node {}'s value of {} bytes on {} pages from page {}", place,
                                                   i, node.data_size, needed, first));
    const std::size_t bytes = values == Values::read ? L::kPageHeader + node.data_size : L::kPageHeader;
    read(first, bytes, value_, where);
    const View v{value_.data(), psize_};
    if (v.pgno() != first) throw Damage{first, fmt::format("{}: its header names page {}", where, v.pgno())};
    if (v.flags() != L::kOverflow) {
      throw Damage{first, fmt::format("{}: flags {:#x}, not an overflow page", where, v.flags())};
    }
    const std::uint64_t count = v.overflow_count();
    if (count < needed) {
      throw Damage{first, fmt::format("{}: a run of {} pages cannot hold the value's {} bytes, which need {}", where,
                                      count, node.data_size, needed)};
    }
    check_pointer(first, count, first, fmt::format("{}: its run of {} pages", where, count));
    for (std::uint64_t k = 0; k < count; ++k) claim(first + k, tree.mark, where);
    counts.overflow += count;
    if (values == Values::read) return std::string_view(value_.data() + L::kPageHeader, node.data_size);
    return node.data;
  }

  struct Span {
    unsigned begin, end, index;
    bool operator<(const Span& o) const { return begin < o.begin; }
  };

  const File& file_;
  CheckResult* stats_;
  const std::function<void()>* progress_;
  std::uint32_t psize_ = 0;
  std::uint64_t file_pages_ = 0;
  std::uint64_t last_ = 0;
  std::vector<std::uint16_t> marks_;
  std::vector<std::vector<char>> buffers_;
  std::array<std::vector<Node>, L::kMaxDepth + 1> nodes_;
  std::vector<Span> spans_;
  std::vector<std::uint64_t> children_;
  std::vector<char> value_;
  std::vector<std::unique_ptr<Tree>> trees_;
  std::size_t integer_key_size_ = 0;
  std::uint64_t pages_since_progress_ = 0;
};

KeyOrder order_of(std::uint16_t flags) {
  if ((flags & L::kDbReverseKey) != 0) return KeyOrder::reversed;
  if ((flags & L::kDbIntegerKey) != 0) return KeyOrder::integer;
  return KeyOrder::bytes;
}

// Judges a database's stored flags: Damage for bits LMDB never stores, Unsupported for DUPSORT.
void check_db_flags(std::uint16_t flags, const std::string& label, std::uint64_t page, const std::string& place) {
  constexpr std::uint16_t known = L::kDbReverseKey | L::kDbDupSort | L::kDbIntegerKey | L::kDbDupFixed |
                                  L::kDbIntegerDup | L::kDbReverseDup;
  if ((flags & ~known) != 0) {
    throw Damage{page, fmt::format("{} gives {} the flags {:#x}, which LMDB never stores", place, label, flags)};
  }
  if ((flags & (L::kDbDupSort | L::kDbDupFixed | L::kDbIntegerDup | L::kDbReverseDup)) != 0) {
    throw Unsupported{page, fmt::format("{} is a DUPSORT database (flags {:#x}), which this reader does not read",
                                        label, flags)};
  }
}

// Registers FREE_DBI and MAIN_DBI and walks MAIN_DBI, collecting the named databases.
// FREE_DBI is registered (first, so its pages' mark is kFirstTreeMark) but not walked.
Tree& walk_main(Walker& w, const Meta& meta, std::vector<NamedDb>* named, std::vector<std::uint64_t>* record_pages) {
  const std::string meta_place = fmt::format("meta page {}", meta.slot);
  Tree free_tree;
  free_tree.label = "the free-page tree (FREE_DBI)";
  free_tree.db = meta.free_db;
  free_tree.order = KeyOrder::size_t_key;
  free_tree.is_free = true;
  free_tree.record_page = static_cast<std::uint64_t>(meta.slot);
  free_tree.record_place = meta_place;
  Tree& f = w.add_tree(std::move(free_tree));

  Tree main_tree;
  main_tree.label = "the main tree (MAIN_DBI)";
  main_tree.db = meta.main_db;
  main_tree.is_main = true;
  main_tree.record_page = static_cast<std::uint64_t>(meta.slot);
  main_tree.record_place = meta_place;
  check_db_flags(meta.main_db.flags, main_tree.label, main_tree.record_page, meta_place);
  main_tree.order = order_of(meta.main_db.flags);
  Tree& m = w.add_tree(std::move(main_tree));
  w.walk(m, Values::headers, [&](const LeafItem& item) {
    if ((item.node.flags & L::kNodeSubData) == 0) return;
    named->push_back(NamedDb{std::string(item.node.key), detail::parse_db(item.node.data.data())});
    record_pages->push_back(item.page);
  });
  return f;
}

Tree make_named(const NamedDb& named, std::uint64_t record_page) {
  Tree t;
  t.label = fmt::format("database \"{}\"", printable(named.name));
  t.db = named.db;
  t.record_page = record_page;
  t.record_place = fmt::format("its record on page {}", record_page);
  check_db_flags(named.db.flags, t.label, record_page, t.record_place);
  t.order = order_of(named.db.flags);
  return t;
}

// The free list (FREE_DBI's values) against the page map, then the accounting.
void check_free_list(Walker& w, Tree& free_tree, CheckResult* r) {
  std::vector<std::uint64_t> past_end;
  std::vector<std::uint16_t>& marks = w.marks();
  const std::uint64_t last = w.last_page();
  const std::uint64_t file_pages = w.file_pages();
  w.walk(free_tree, Values::read, [&](const LeafItem& item) {
    const std::uint64_t txn = detail::word_at(item.node.key.data());
    const std::string place =
        fmt::format("page {} (the free list, node {}: pages freed by transaction {})", item.page, item.index, txn);
    const std::string_view v = item.value;
    if (v.size() < L::kWord || v.size() % L::kWord != 0) {
      throw Damage{item.page, fmt::format("{}: a list of {} bytes, not of page numbers", place, v.size())};
    }
    const std::uint64_t count = detail::word_at(v.data());
    if (count > v.size() / L::kWord - 1) {
      throw Damage{item.page, fmt::format("{}: counts {} page numbers in room for {}", place, count,
                                          v.size() / L::kWord - 1)};
    }
    std::uint64_t previous = 0;
    for (std::uint64_t k = 1; k <= count; ++k) {
      const std::uint64_t id = detail::word_at(v.data() + k * L::kWord);
      if (id < 2 || id > last) {
        throw Damage{item.page, fmt::format("{}: lists page {}, outside pages 2..{} of the snapshot", place, id, last)};
      }
      if (k > 1 && id >= previous) {
        throw Damage{item.page, fmt::format("{}: lists page {} after page {} (LMDB keeps them in descending order)",
                                            place, id, previous)};
      }
      previous = id;
      if (id < file_pages) {
        std::uint16_t& m = marks[static_cast<std::size_t>(id)];
        if (m != kUnseen) {
          throw Damage{item.page, m == kFreeMark
                                      ? fmt::format("{}: lists page {}, which another entry lists too", place, id)
                                      : fmt::format("{}: lists page {}, which is part of {}", place, id, w.owner(m))};
        }
        m = kFreeMark;
        ++r->free_pages;
      } else {
        past_end.push_back(id);
      }
    }
  });
  std::sort(past_end.begin(), past_end.end());
  if (auto dup = std::adjacent_find(past_end.begin(), past_end.end()); dup != past_end.end()) {
    throw Damage{*dup, fmt::format("the free list lists page {} (past the end of the file) twice", *dup)};
  }
  r->free_pages += past_end.size();
  r->free_past_end = past_end.size();

  // Accounting: every page 2..last in one tree or free.
  const std::uint64_t in_file_end = std::min(last + 1, file_pages);
  for (std::uint64_t p = 2; p < in_file_end; ++p) {
    if (marks[static_cast<std::size_t>(p)] != kUnseen) continue;
    ++r->unaccounted_pages;
    if (r->unaccounted_sample.size() < 16) r->unaccounted_sample.push_back(p);
  }
  if (last + 1 > file_pages) {
    const std::uint64_t beyond = last + 1 - std::max<std::uint64_t>(file_pages, 2);
    r->unaccounted_pages += beyond - past_end.size();
    std::size_t k = 0;
    const std::uint64_t from = std::max<std::uint64_t>(file_pages, 2);
    for (std::uint64_t p = from; p <= last && r->unaccounted_sample.size() < 16; ++p) {
      while (k < past_end.size() && past_end[k] < p) ++k;
      if (k < past_end.size() && past_end[k] == p) continue;
      r->unaccounted_sample.push_back(p);
    }
  }
}

template <class F>
auto guarded(const File& file, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw IoError(ENOMEM, fmt::format("out of memory while reading {}", file.path().string()));
  }
}

}  // namespace

CheckResult check_structure(const File& file, const Meta& meta, const CheckOptions& options) {
  CheckResult r;
  return guarded(file, [&]() -> CheckResult {
    try {
      Walker w(file, meta, &r, &options.progress);
      std::vector<std::uint64_t> record_pages;
      Tree& free_tree = walk_main(w, meta, &r.databases, &record_pages);
      for (std::size_t i = 0; i < r.databases.size(); ++i) {
        Tree& t = w.add_tree(make_named(r.databases[i], record_pages[i]));
        w.walk(t, Values::headers, {});
      }
      // The free-page tree last: with `full`, its values are checked against the other trees.
      if (options.depth == CheckDepth::full) {
        check_free_list(w, free_tree, &r);
      } else {
        w.walk(free_tree, Values::headers, {});
      }
    } catch (const Damage& d) {
      r.outcome = CheckResult::Outcome::damaged;
      r.problem = d.what;
      r.page = d.page;
    } catch (const Unsupported& u) {
      r.outcome = CheckResult::Outcome::unsupported;
      r.problem = u.what;
      r.page = u.page;
    }
    return r;
  });
}

bool find_database(const File& file, const Meta& meta, std::string_view name, Db* db) {
  return guarded(file, [&]() -> bool {
    try {
      Walker w(file, meta, nullptr, nullptr);
      std::vector<NamedDb> named;
      std::vector<std::uint64_t> pages;
      walk_main(w, meta, &named, &pages);
      for (const NamedDb& n : named) {
        if (n.name == name) {
          if (db != nullptr) *db = n.db;
          return true;
        }
      }
      return false;
    } catch (const Damage& d) {
      throw DamageError(d.page, d.what);
    } catch (const Unsupported& u) {
      throw DamageError(u.page, u.what);
    }
  });
}

bool for_each_entry(const File& file, const Meta& meta, std::string_view name, const EntryVisitor& visit) {
  return guarded(file, [&]() -> bool {
    try {
      Walker w(file, meta, nullptr, nullptr);
      std::vector<NamedDb> named;
      std::vector<std::uint64_t> pages;
      walk_main(w, meta, &named, &pages);
      for (std::size_t i = 0; i < named.size(); ++i) {
        if (named[i].name != name) continue;
        Tree& t = w.add_tree(make_named(named[i], pages[i]));
        try {
          w.walk(t, Values::read, [&](const LeafItem& item) {
            if (!visit(item.node.key, item.value)) throw Stop{};
          });
        } catch (const Stop&) {
        }
        return true;
      }
      return false;
    } catch (const Damage& d) {
      throw DamageError(d.page, d.what);
    } catch (const Unsupported& u) {
      throw DamageError(u.page, u.what);
    }
  });
}

}  // namespace tank::queue::lmdb_file

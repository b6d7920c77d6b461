#pragma once

// Event-time windows: the state machine of the aggregate processor. Pure and single-threaded:
// no clock, no I/O, no locks. The same records in the same order give the same output, byte for
// byte, also across a save (take_changes) and a restore into a new Aggregator.
//
// Windows
//   A record is a JSON object; its event time t comes from `time_field` (event_time.hpp). Its
//   windows are every [s, s + window_ns) with s a multiple of hop_ns (counted from the Unix
//   epoch) and s <= t < s + window_ns: one window when hop_ns == window_ns (tumbling), about
//   window_ns / hop_ns of them when hop_ns < window_ns (hopping; window_ns need not be a multiple
//   of hop_ns). Its group is the values of the `group_by` fields; a missing field groups as null.
//   Group values are equal when they are the same JSON value: numbers by numeric value (1, 1.0
//   and 1e0 are one group, written 1), strings byte for byte, arrays and objects by their
//   serialized text (key order matters). A (window, group) pair is a cell.
//
// Watermark
//   max_event_time is the highest event time seen; watermark = max_event_time - allowed_lateness
//   (saturating; INT64_MIN while nothing was seen), raised further by close_all(). It never goes
//   back. add() first raises max_event_time with the record's t, then places the record (so a
//   record from far in the future closes every window before it, and is itself absorbed).
//   A window is closed once its end <= watermark. A record all of whose windows are closed is
//   late and not absorbed; a record with some open windows goes into the open ones only.
//   A clock that jumps back therefore makes records late (dead-lettered with a reason), and one
//   that jumps forward closes everything before it: a record with a bad clock cannot reopen a
//   window that was emitted, so no window is ever emitted twice.
//
// Functions (per field, per cell)
//   count   records of the cell where the field is present and not null (any JSON type)
//   sum, min, max, mean, stddev
//           over the numeric values (JSON int64, uint64, double, as double); any other value
//           (a string, even "NaN" or "12", a bool, an array, an object) is skipped and counted in
//           ignored_values(); null and a missing field are skipped without counting.
//           mean = sum / n; stddev is the sample standard deviation (n - 1, Welford's algorithm).
//           sum, min, max, mean are null with no numeric value, stddev with fewer than two; any
//           non-finite result (an overflow to infinity) is null.
//   first, last
//           the value (any JSON type) of the field in the record with the smallest / largest event
//           time among the records of the cell where the field is present and not null; ties go
//           to the earliest / the latest arrival. null when there is none.
//
// Output: one compact JSON object per closed cell, keys in this order:
//   {"window_start":"<RFC 3339>","window_end":"<RFC 3339>","count":N,
//    <each group_by path as written>: <its value>, ...,
//    "<field>_<function>": <value>, ... (fields and functions in configuration order)}
//   count is the number of records absorbed into the cell. Numbers are written in the shortest
//   form that reads back to the same double ("21.5", "1e+20"). A cell exists only once a record
//   was absorbed into it, so an empty window is never emitted. Cells are emitted ordered by
//   window end, then window start, then the group's key bytes.
//   Name clashes between group_by paths, "count" and "<field>_<function>" are the
//   configuration's to refuse; the Aggregator writes what it was given.
//
// Persistence
//   take_changes() hands out what changed since its last call as puts and deletes of relative
//   keys; the caller prefixes them and commits them in the LMDB transaction that consumes the
//   records they came from. restore() rebuilds the state from every stored entry. Keys:
//     "c" + window start (8 bytes, big-endian, sign bit flipped) + group key bytes   a cell
//     "meta"                                                                         the rest
//   so cells sort (memcmp) by window start, then group key. Values are little-endian and start
//   with a format version byte (1); doubles are stored as their bits, so a restored Aggregator
//   continues bit-identically. Meta holds max_event_time, the watermark and the spec's
//   fingerprint (fingerprint(): window, hop, time field and format, group_by, fields and
//   functions); restore() throws SpecMismatch when the stored fingerprint differs, so state of
//   an old configuration is never mixed with a new one (the caller drops the old state and logs
//   it). allowed_lateness and max_cells are not part of it: they can change across a restart
//   (the watermark never goes back, even if allowed_lateness grew).
//
//   Group key bytes, one item per group_by value (so null < false < true < integers < other
//   numbers < strings, in byte order < arrays and objects):
//     0x01 null or missing   0x02 false   0x03 true
//     0x04 i64 (8 bytes big-endian, sign bit flipped): integers, and doubles that are integers
//     0x05 u64 (8 bytes big-endian): integers above INT64_MAX
//     0x06 other doubles (8 bytes big-endian, bits made to sort like the numbers)
//     0x07 a string's bytes, each 0x00 written 0x00 0xFF, then 0x00
//     0x08 an array's or object's serialized text, escaped and ended like a string
//   Cell value (version 1):
//     u8 version  u64 records  u16 fields, then per field in configuration order:
//     u8 parts (1: numeric, 2: first, 4: last, as the field's functions need)  u64 values
//     [numeric: u64 numbers  f64 sum  f64 min  f64 max  f64 mean  f64 m2 (Welford)]
//     [first: i64 event time  kept value]  [last: i64 event time  kept value]
//     kept value: u8 kind (0 null, 1 false, 2 true; 3 int64, 4 uint64, 5 double: + 8 bytes;
//     6 string, 7 array/object text: + u32 length + bytes)
//   Meta value (version 1): u8 version  i64 max_event_time  i64 watermark  u32 length + the
//   fingerprint.
//
// Performance: add() does not allocate for a record that goes into existing cells (key bytes are
// built in a reused buffer; cells are looked up by them in a hash map; closed cells' storage is
// reused), except to keep a first/last string longer than the one before it, an array or object
// (as text), or an array or object group value. Creating a cell allocates its map entry; a
// refused record allocates its detail text. A record costs one update per window it falls in:
// about window_ns / hop_ns of them. bench/aggregate_bench measures it (10,000 devices, 10 s
// windows, 3 functions on 2 fields: about 1.1 M records/s on one core, without JSON parsing).

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/json/value.hpp>

#include "process/event_time.hpp"

namespace tank::process {

enum class AggFunction { count, sum, min, max, mean, first, last, stddev };

// The function named by a configuration string: "count", "sum", "min", "max", "mean", "first",
// "last", "stddev"; nullopt for anything else.
std::optional<AggFunction> parse_agg_function(std::string_view text);
std::string_view to_string(AggFunction function);

struct AggregateSpec {
  std::int64_t window_ns = 0;            // > 0
  std::int64_t hop_ns = 0;               // 0 < hop_ns <= window_ns; == window_ns: tumbling
  std::int64_t allowed_lateness_ns = 0;  // >= 0
  std::string time_field = "ts";         // a path (event_time.hpp FieldPath syntax)
  TimeFormat time_format = TimeFormat::automatic;
  std::vector<std::string> group_by;     // paths; no duplicates
  // Field paths and their functions, in configuration order; no duplicate field, no duplicate
  // function within a field, at least one function per field.
  std::vector<std::pair<std::string, std::vector<AggFunction>>> fields;
  std::size_t max_cells = 100'000;       // > 0: (window, group) cells held at most
};

enum class AddOutcome {
  absorbed,    // in every open window of the record
  late,        // all of its windows are closed; nothing changed
  not_object,  // the record is not a JSON object
  bad_time,    // the time field is missing, not a time, or out of the range windows can hold
  cell_limit,  // it needs new cells and max_cells are held: nothing absorbed (max_event_time
               // was raised, so close_ready() may free cells)
};
std::string_view to_string(AddOutcome outcome);

// A closed cell, ready to be written out.
struct Emitted {
  std::string json;  // one compact JSON object (see "Output" above)
  std::int64_t window_start_ns = 0;
  std::int64_t window_end_ns = 0;
  std::uint64_t count = 0;  // records absorbed into the cell
};

// restore() found state written for a different spec (fingerprint() differs).
class SpecMismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Aggregator {
 public:
  // Throws std::invalid_argument, naming the problem, for a spec that breaks the rules above
  // (window_ns <= 0, hop_ns out of (0, window_ns], negative lateness, max_cells 0, a malformed
  // path, a duplicate group_by path, field or function, a field without functions).
  explicit Aggregator(AggregateSpec spec);
  ~Aggregator();
  Aggregator(const Aggregator&) = delete;
  Aggregator& operator=(const Aggregator&) = delete;

  // Takes one record (see "Windows" and "Watermark"). For every outcome but `absorbed`, writes
  // into `detail` (when not null) one sentence for the dead-letter entry, e.g.
  //   no time field "ts"
  //   "ts" is "abc", not an RFC 3339 time: expected YYYY-MM-DDTHH:MM:SS...
  //   event time 2026-11-21T10:00:00Z is late: its windows closed at watermark 2026-11-21T10:00:15Z
  //   needs 1 new window cell but max_cells (10000) are held
  // Never throws (but std::bad_alloc).
  // `rebase` (not null): the record was committed while the clock was not synchronised; its event
  // time is corrected by it first (TimeRebase::apply), and the corrected time is the one used.
  AddOutcome add(const boost::json::value& record, std::string* detail, const TimeRebase* rebase = nullptr);

  // Removes every cell whose window end <= watermark() and appends it to `out`, in emission
  // order, at most `limit` of them: returns false when ready cells remain (call again, e.g. after
  // committing the ones it gave, so that no commit has to hold a whole window of a large fleet).
  // Cheap when nothing is ready. Call it after each add() (or batch of add()s) and after
  // restore(), and until it returns true before the next add() (add() itself treats a window
  // whose end <= watermark() as closed, whether or not its cells were taken yet).
  bool close_ready(std::vector<Emitted>* out, std::size_t limit = SIZE_MAX);

  // Removes and appends every cell (an idle timeout: no record came for a while), at most
  // `limit` of them (false: call again), and raises the watermark to at least the end of every
  // window it took cells from, so a later record for one of those windows is late instead of
  // reopening it.
  bool close_all(std::vector<Emitted>* out, std::size_t limit = SIZE_MAX);

  std::int64_t watermark() const { return watermark_; }
  std::int64_t max_event_time() const { return max_event_time_; }
  // Cells held: open ones and closed ones close_ready() has not taken yet.
  std::size_t open_cells() const { return index_.size(); }
  // Values numeric functions skipped because they were not numbers, since construction (a
  // metric: not persisted).
  std::uint64_t ignored_values() const { return ignored_values_; }

  // Appends the changes since the last call (or since construction / restore()): a put of every
  // cell created or updated and still held, a delete of every cell stored by an earlier call and
  // removed since, and a put of "meta" when the watermark state changed (always on the first
  // call). Keys are relative (see "Persistence"); a key is in at most one of the two lists.
  void take_changes(std::vector<std::pair<std::string, std::string>>* puts, std::vector<std::string>* deletes);
  // How many puts and deletes take_changes() would hand out at most now (for sizing a commit;
  // cheap: no encoding).
  std::size_t pending_changes() const { return dirty_.size() + removed_.size() + (meta_dirty_ ? 1 : 0); }

  // Replaces the whole state by the one in `entries` (every stored key and value, in any order,
  // as left by applying all take_changes() so far; empty: a fresh state). Cells beyond max_cells
  // are kept (max_cells may have shrunk); new cells are refused until enough close. Pending
  // changes of the replaced state are dropped; ignored_values() is kept. Throws SpecMismatch
  // when the entries were written for another fingerprint(), and std::runtime_error naming the
  // key and the problem for anything malformed (unknown key, bad version, truncated or trailing
  // bytes, a cell without meta, a duplicate cell). Never reads outside the given bytes. On a
  // throw the Aggregator keeps its previous state.
  void restore(const std::vector<std::pair<std::string, std::string>>& entries);

  // What the persisted state depends on: a canonical JSON text of window_ns, hop_ns, the time
  // field and format, group_by and fields with functions.
  const std::string& fingerprint() const { return fingerprint_; }
  const AggregateSpec& spec() const { return spec_; }

 private:
  struct Value;
  struct FieldState;
  struct Cell;
  struct FieldPlan;
  struct FieldInput;
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept;
  };
  using CellIndex = std::unordered_map<std::string, std::uint32_t, KeyHash, std::equal_to<>>;

  std::uint32_t new_cell(std::string_view key, std::int64_t start);
  void update_cell(Cell& cell, std::int64_t t);
  std::size_t emit_window(std::map<std::int64_t, std::vector<std::uint32_t>>::iterator window, std::vector<Emitted>* out,
                          std::size_t limit);
  void release_cell(std::uint32_t index);
  void write_output(const Cell& cell, std::string& out) const;
  std::string encode_cell(const Cell& cell) const;
  void set_max_event_time(std::int64_t t);

  AggregateSpec spec_;
  std::string fingerprint_;
  FieldPath time_path_;
  std::vector<FieldPath> group_paths_;
  std::vector<FieldPlan> plans_;
  std::vector<std::string> group_prefixes_;  // ,"device":

  std::int64_t max_event_time_;
  std::int64_t watermark_;
  std::uint64_t ignored_values_ = 0;
  bool meta_dirty_ = true;

  CellIndex index_;                                              // key -> cells_ slot
  std::vector<Cell> cells_;                                      // slots, reused
  std::vector<std::uint32_t> free_slots_;
  std::map<std::int64_t, std::vector<std::uint32_t>> windows_;  // window start -> its cells
  std::vector<std::pair<std::uint32_t, std::uint32_t>> dirty_;  // (slot, generation)
  std::vector<std::string> removed_;                             // stored keys removed since

  // Per-record scratch, reused.
  std::string key_;
  std::vector<FieldInput> inputs_;
  std::vector<std::int64_t> starts_;
  std::vector<std::uint32_t> found_;
};

}  // namespace tank::process

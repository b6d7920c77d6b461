#include "engine/dead_letter_ops.hpp"

#include <map>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "queue/record.hpp"

namespace tank::engine {
namespace {

constexpr std::size_t kPage = 256;  // entries read per step

// Calls `each` for every selected entry, oldest first, in pages; `flush` after each page (the
// caller commits there). Stops early when either returns false.
template <class Each, class Flush>
void for_selected(queue::Queue& q, const DeadLetterSelection& selection, std::uint64_t* missing, Each each,
                  Flush flush) {
  if (!selection.ids.empty()) {
    std::size_t in_page = 0;
    for (std::uint64_t id : selection.ids) {
      auto d = q.dead_letter(id);
      if (!d) {
        ++*missing;
        continue;
      }
      if (!each(*d)) return;
      if (++in_page == kPage) {
        in_page = 0;
        if (!flush()) return;
      }
    }
    flush();
    return;
  }
  // Entries added from here on (a replay that fails again) are past `last` and not taken.
  const std::uint64_t last = q.dead_letter_stats().last_id;
  queue::DeadLetterQuery query = selection.filter;
  query.limit = kPage;
  for (;;) {
    auto page = q.dead_letters(query);
    bool past_end = false;
    for (const auto& d : page) {
      if (d.id > last) {
        past_end = true;
        break;
      }
      if (!each(d)) return;
      query.after_id = d.id;
    }
    if (!flush()) return;
    if (past_end || page.size() < kPage) return;
  }
}

}  // namespace

ReplayOutcome replay_dead_letters(queue::Queue& q, const RouteLookup& routes, const DeadLetterSelection& selection,
                                  const Clock& clock) {
  ReplayOutcome out;
  std::map<std::string, std::unique_ptr<process::Route::Session>, std::less<>> sessions;
  std::map<std::string, std::string, std::less<>> kept_why;  // one line per kind of problem
  queue::WriteBatch batch;
  std::uint64_t pending_replayed = 0;
  std::uint64_t pending_failed = 0;
  std::size_t bytes = 0;
  const std::size_t limit = static_cast<std::size_t>(q.max_commit_bytes()) / 2;

  auto flush = [&]() -> bool {
    if (batch.dead_letter_deletes.empty()) return true;
    const queue::CommitResult r = q.commit(batch);
    if (r.status == queue::CommitStatus::committed) {
      out.replayed += pending_replayed;
      out.failed_again += pending_failed;
    } else {
      out.error = r.status == queue::CommitStatus::full
                      ? "the queue is full; the rest stays in the dead-letter store (replay again once it drained)"
                  : r.status == queue::CommitStatus::dropped
                      ? "the queue is full and drops new records (overflow = \"drop_newest\"): nothing was replayed "
                        "from this page on, the entries stay in the dead-letter store (replay again once it drained)"
                      : fmt::format("committing the replayed records failed ({}): {}", queue::to_string(r.status), r.error);
    }
    batch = queue::WriteBatch{};
    pending_replayed = pending_failed = 0;
    bytes = 0;
    return out.error.empty();
  };

  try {
    for_selected(
        q, selection, &out.missing,
        [&](const queue::StoredDeadLetter& d) -> bool {
          const queue::DeadLetter& letter = d.letter;
          if (d.truncated) {
            ++out.kept;
            kept_why.emplace("truncated", fmt::format("only the first {} bytes of an original are kept, so it cannot "
                                                      "be replayed (see `tank dlq show ID`)",
                                                      queue::kMaxDeadLetterBytes));
            return true;
          }
          auto it = sessions.find(letter.input);
          if (it == sessions.end()) {
            auto route = routes(letter.input);
            it = sessions.emplace(letter.input, route ? route->session() : nullptr).first;
          }
          if (!it->second) {
            ++out.kept;
            kept_why.emplace("input:" + letter.input,
                             fmt::format("input \"{}\" is not configured; its entries stay until it is, or are purged",
                                         letter.input));
            return true;
          }
          const auto attributes = queue::decode_attributes(letter.attributes);
          const std::int64_t now = clock.wall_ns();
          plugin::Rejection rejection;
          if (it->second->admit(letter.original, rejection)) {
            batch.records.add(letter.input, now, letter.original, attributes);
            ++pending_replayed;
          } else {
            queue::DeadLetter again =
                queue::DeadLetter::make(letter.input, rejection.reason, std::move(rejection.detail), letter.original, now);
            again.attributes = letter.attributes;
            batch.dead_letters.push_back(std::move(again));
            ++pending_failed;
          }
          batch.dead_letter_deletes.push_back(d.id);
          bytes += letter.original.size() + letter.attributes.size() + 1024;
          return bytes < limit || flush();
        },
        flush);
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  for (auto& [key, why] : kept_why) out.problems.push_back(std::move(why));
  return out;
}

PurgeOutcome purge_dead_letters(queue::Queue& q, const DeadLetterSelection& selection) {
  PurgeOutcome out;
  queue::WriteBatch batch;
  auto flush = [&]() -> bool {
    if (batch.dead_letter_deletes.empty()) return true;
    const queue::CommitResult r = q.commit(batch);
    if (r.status == queue::CommitStatus::committed) {
      out.purged += batch.dead_letter_deletes.size();
    } else {
      out.error = fmt::format("deleting dead letters failed ({}): {}", queue::to_string(r.status), r.error);
    }
    batch.dead_letter_deletes.clear();
    return out.error.empty();
  };
  try {
    for_selected(
        q, selection, &out.missing,
        [&](const queue::StoredDeadLetter& d) {
          batch.dead_letter_deletes.push_back(d.id);
          return true;
        },
        flush);
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}

namespace json = boost::json;

namespace {

std::uint64_t uint_of(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (auto u = v->if_uint64()) return *u;
  if (auto i = v->if_int64(); i && *i >= 0) return static_cast<std::uint64_t>(*i);
  throw std::invalid_argument(fmt::format("\"{}\" must be a non-negative integer", key));
}

std::string string_of(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return {};
  if (!v->is_string()) throw std::invalid_argument(fmt::format("\"{}\" must be a string", key));
  return std::string(v->as_string());
}

}  // namespace

json::object to_json(const DeadLetterSelection& selection) {
  json::object o;
  json::array ids;
  for (std::uint64_t id : selection.ids) ids.push_back(id);
  o["ids"] = std::move(ids);
  o["input"] = selection.filter.input;
  o["reason"] = selection.filter.reason;
  o["since_ns"] = selection.filter.since_ns;
  return o;
}

DeadLetterSelection selection_from_json(const json::object& request) {
  DeadLetterSelection s;
  if (const json::value* ids = request.if_contains("ids")) {
    if (!ids->is_array()) throw std::invalid_argument("\"ids\" must be an array of integers");
    for (const json::value& id : ids->as_array()) {
      if (auto u = id.if_uint64()) s.ids.push_back(*u);
      else if (auto i = id.if_int64(); i && *i > 0) s.ids.push_back(static_cast<std::uint64_t>(*i));
      else throw std::invalid_argument("\"ids\" must be an array of positive integers");
    }
  }
  s.filter.input = string_of(request, "input");
  s.filter.reason = string_of(request, "reason");
  if (const json::value* since = request.if_contains("since_ns")) {
    if (!since->is_int64()) throw std::invalid_argument("\"since_ns\" must be an integer");
    s.filter.since_ns = since->as_int64();
  }
  return s;
}

json::object to_json(const ReplayOutcome& outcome) {
  json::array problems;
  for (const auto& p : outcome.problems) problems.push_back(json::string(p));
  return json::object{{"ok", outcome.error.empty()},     {"replayed", outcome.replayed},
                      {"failed_again", outcome.failed_again}, {"kept", outcome.kept},
                      {"missing", outcome.missing},      {"problems", std::move(problems)},
                      {"error", outcome.error}};
}

ReplayOutcome replay_outcome_from_json(const json::object& reply) {
  ReplayOutcome o;
  o.replayed = uint_of(reply, "replayed");
  o.failed_again = uint_of(reply, "failed_again");
  o.kept = uint_of(reply, "kept");
  o.missing = uint_of(reply, "missing");
  if (const json::value* p = reply.if_contains("problems"); p != nullptr && p->is_array()) {
    for (const json::value& line : p->as_array()) {
      if (line.is_string()) o.problems.emplace_back(line.as_string());
    }
  }
  o.error = string_of(reply, "error");
  return o;
}

json::object to_json(const PurgeOutcome& outcome) {
  return json::object{{"ok", outcome.error.empty()},
                      {"purged", outcome.purged},
                      {"missing", outcome.missing},
                      {"error", outcome.error}};
}

PurgeOutcome purge_outcome_from_json(const json::object& reply) {
  PurgeOutcome o;
  o.purged = uint_of(reply, "purged");
  o.missing = uint_of(reply, "missing");
  o.error = string_of(reply, "error");
  return o;
}

}  // namespace tank::engine

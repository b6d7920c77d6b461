// processors.lua: a user's Lua 5.4 script transforms each record, after the queue.
//
// A record stage (process/record_stage.hpp): the shared consumer thread reads the records of its
// inputs at its chain level and hands each to LuaHandler, which runs the script's process() in a
// sandboxed state (lua_script.hpp) and passes on what it returns.
//
// Why after the queue and not before the commit like validate: the source is acknowledged at
// commit speed whatever the script costs; a script that fails dead-letters a record that is
// already stored (nothing is lost between the source and the script); the `state` table is
// committed atomically with the stage's queue position, so a kill -9 and a restart give exactly
// the output of an uninterrupted run; and a reload (SIGHUP, which rebuilds every stage and so
// reads the script again) changes only what is not yet processed.

#include <boost/json.hpp>

#include <fmt/format.h>

#include "common/log.hpp"
#include "common/units.hpp"
#include "config/bind.hpp"
#include "lua_script.hpp"
#include "plugin/input.hpp"
#include "plugin/registry.hpp"
#include "process/record_stage.hpp"

namespace tank::plugins {
namespace {

struct Settings {
  std::string script;
  lua::Options options;
};
using S = Settings;

const config::Options<S> kOptions{
    config::string("script", &S::script)
        .describe("The Lua 5.4 script (a path; a relative one is taken from the working directory, as for "
                  "processors.validate's schema). It defines `process(record, attributes)`, which returns a record "
                  "(a table), a list of records, or nil (the record is dropped). Loaded at start and at each reload "
                  "(SIGHUP), and checked by `tank check`: a syntax error is reported with its line.")
        .required(),
    config::integer("instruction_limit",
                    [](S& s, std::int64_t n) { s.options.instruction_limit = static_cast<std::uint64_t>(n); })
        .default_value(1000000)
        .describe("The most Lua VM instructions one call of process() may run (and the script's main chunk at "
                  "load). A record whose call runs longer, an endless loop, goes to the dead-letter store with reason "
                  "`transform_error`, and the stage goes on with the next.")
        .min("1000")
        .max("2000000000"),
    config::size("memory_limit", [](S& s, std::uint64_t n) { s.options.memory_limit = static_cast<std::size_t>(n); })
        .default_value("16MiB")
        .describe("The most memory the script's Lua state may hold. A call that needs more fails with "
                  "`transform_error`; if the state still holds more than half the limit afterwards (the script "
                  "keeps what it allocated), the state is made anew from the script, with an empty `state`.")
        .min("1MiB")
        .max("1GiB"),
    config::boolean("state", [](S& s, bool on) { s.options.state = on; })
        .default_value("false")
        .describe("Give the script a global table `state` that outlives records and restarts: it is written as JSON "
                  "with the stage's queue position in the same commit, so after a kill -9 the script goes on from "
                  "exactly the state its last committed record left. Keep it small (it is written at every commit "
                  "in which it changed)."),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (!v.has("script")) return;
  lua::Options options;
  options.instruction_limit = static_cast<std::uint64_t>(v.integer("instruction_limit"));
  options.memory_limit = static_cast<std::size_t>(v.size("memory_limit"));
  options.state = v.boolean("state");
  try {
    (void)lua::Script::from_file(v.string("script"), options);
  } catch (const lua::ScriptError& e) {
    diagnostics.error(v.location_of("script"), v.path() + ".script", e.what());
  }
}

bool needs_json(const config::SectionValues&) { return true; }

const config::Section kSection{
    .path = "processors.lua",
    .summary = "Transforms each record with a Lua 5.4 script (`process(record, attributes)` returns a record, a list "
               "of records, or nil), sandboxed (no os, io, require, bytecode), with an instruction budget per record "
               "and a memory limit. Runs after the queue, like aggregate: the source is acknowledged at commit speed, "
               "a failing record (`transform_error`) is dead-lettered after it was stored, and the optional `state` "
               "table is committed with the stage's position. Not in the default static build (cross/build.sh "
               "--full has it).",
    .options = kOptions.all(),
    .common = plugin::processor_common_options(),
    .repeated = true,
    .check = check,
};

constexpr std::string_view kStateKey = "state";

class LuaHandler final : public process::RecordHandler {
 public:
  LuaHandler(Settings settings, std::string component)
      : settings_(std::move(settings)), component_(std::move(component)) {
    settings_.options.print = [this](std::string_view text) { log::debug(component_, "print: {}", text); };
    script_ = load();
  }

  bool needs_json(std::string_view) const override { return true; }

  void restore(std::vector<std::pair<std::string, std::string>> entries) override {
    for (auto& [key, value] : entries) {
      if (key != kStateKey) continue;
      if (!settings_.options.state) {
        // state = false now: the old table is left in LMDB untouched (state = true takes it again).
        log::info(component_, "a saved `state` exists but state = false: it is not given to the script");
        continue;
      }
      try {
        script_->restore_state(value);
      } catch (const lua::ScriptError& e) {
        throw std::runtime_error(fmt::format("the saved state does not load: {}", e.what()));
      }
      saved_state_ = std::move(value);
    }
  }

  Decision process(const queue::RecordView& record, const boost::json::value* document,
                   process::StageOutput& out) override {
    attributes_.clear();
    record.for_each_attribute([&](std::string_view key, std::string_view value) {
      attributes_.push_back(queue::Attribute{key, value});
    });
    changed_ = settings_.options.state;
    switch (script_->process(*document, attributes_, output_)) {
      case lua::Output::Kind::nothing:
        out.drop(output_.empty_list ? "script_empty_list" : "script_nil");
        break;
      case lua::Output::Kind::error:
        out.dead_letter("transform_error", output_.error);
        if (output_.out_of_memory) recover_memory();
        break;
      case lua::Output::Kind::records: {
        emitted_attributes_.clear();
        for (const auto& [key, value] : output_.attributes) emitted_attributes_.push_back(queue::Attribute{key, value});
        for (std::size_t i = 0; i < output_.size(); ++i) out.emit(output_.record(i), emitted_attributes_);
        break;
      }
    }
    return Decision::done;
  }

  void take_changes(std::vector<std::pair<std::string, std::string>>& puts, std::vector<std::string>&) override {
    if (!changed_) return;
    changed_ = false;
    std::string json;
    std::string error;
    if (!script_->state_json(json, error)) {
      // Nothing is written: the last state that could be saved stays (and is what a restart gets).
      state_failures_.occur(fmt::format("the table `state` cannot be saved ({}); the last saved one is kept", error));
      return;
    }
    state_failures_.end("the table `state` can be saved again");
    if (json == saved_state_) return;
    saved_state_ = json;
    puts.emplace_back(std::string(kStateKey), std::move(json));
  }

  std::size_t pending_change_bytes() const override { return changed_ ? saved_state_.size() + 64 : 0; }

 private:
  std::unique_ptr<lua::Script> load() const {
    try {
      return lua::Script::from_file(settings_.script, settings_.options);
    } catch (const lua::ScriptError& e) {
      throw plugin::StartError(e.what());
    }
  }

  // After a call ran out of memory: when the script keeps most of it (in a table it holds), the
  // state is made anew, or every record after this one would fail too.
  void recover_memory() {
    if (script_->memory_used() <= settings_.options.memory_limit / 2) return;
    log::warn(component_, "the Lua state still holds {} of its memory_limit of {} after a call ran out of memory: it "
                          "is made anew from {}{}",
              units::format_size(script_->memory_used()), units::format_size(settings_.options.memory_limit),
              settings_.script, settings_.options.state ? ", with an empty `state`" : "");
    script_ = load();
  }

  Settings settings_;
  std::string component_;
  std::unique_ptr<lua::Script> script_;
  lua::Output output_;
  std::vector<queue::Attribute> attributes_;
  std::vector<queue::Attribute> emitted_attributes_;
  std::string saved_state_;  // the state as last committed ("" before the first)
  bool changed_ = false;     // a record ran since the last take_changes (with state = true)
  log::Episode state_failures_{component_, log::Level::error};
};

std::unique_ptr<plugin::Stage> create(const config::SectionValues& v, const plugin::ProcessorContext& context) {
  Settings s = kOptions.read(v);
  return process::make_record_stage(
      process::RecordStageSettings{"lua", std::make_unique<LuaHandler>(std::move(s), "processor " + context.name)},
      context);
}

}  // namespace

void register_processors_lua(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::processor,
                .name = "lua",
                .section = &kSection,
                .summary = "transforms records with a sandboxed Lua 5.4 script",
                .create_stage = create,
                .needs_json = needs_json});
}

}  // namespace tank::plugins

// Reading schema documents before valijson compiles them: tank's keywords put in place, $ref
// loops and unresolvable references refused with their place, a root $ref moved down.

#include "process/json_schema_detail.hpp"

#include <algorithm>
#include <cstddef>
#include <functional>
#include <regex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <valijson/constraints/concrete_constraints.hpp>
#include <valijson/constraints/constraint_visitor.hpp>

namespace tank::process {
using namespace schema_detail;
namespace {

// =============================================================================================
// Reading schema documents: keywords, rewriting, cycles

// Where a keyword's value sits in draft 7.
enum class Slot {
  schema,        // a subschema: additionalProperties, not, if...
  schema_map,    // name -> subschema: properties, patternProperties, definitions
  schema_array,  // [subschema...]: allOf, anyOf, oneOf
  items,         // a subschema or an array of them
  dependencies,  // name -> subschema or [names]
  data,          // values, names, numbers: enum, const, required, type, $ref...
  unknown,       // not a draft 7 keyword: looked into, in case a $ref points there
};

Slot slot_of(std::string_view keyword) {
  static const std::unordered_map<std::string_view, Slot> kSlots = {
      {"additionalItems", Slot::schema},  {"additionalProperties", Slot::schema},
      {"contains", Slot::schema},         {"propertyNames", Slot::schema},
      {"not", Slot::schema},              {"if", Slot::schema},
      {"then", Slot::schema},             {"else", Slot::schema},
      {"properties", Slot::schema_map},   {"patternProperties", Slot::schema_map},
      {"definitions", Slot::schema_map},  {"allOf", Slot::schema_array},
      {"anyOf", Slot::schema_array},      {"oneOf", Slot::schema_array},
      {"items", Slot::items},             {"dependencies", Slot::dependencies},
      {"enum", Slot::data},               {"const", Slot::data},
      {"default", Slot::data},            {"examples", Slot::data},
      {"required", Slot::data},           {"type", Slot::data},
      {"$ref", Slot::data},               {"$id", Slot::data},
      {"id", Slot::data},                 {"$schema", Slot::data},
      {"$comment", Slot::data},           {"title", Slot::data},
      {"description", Slot::data},        {"format", Slot::data},
      {"pattern", Slot::data},            {"multipleOf", Slot::data},
      {"maximum", Slot::data},            {"exclusiveMaximum", Slot::data},
      {"minimum", Slot::data},            {"exclusiveMinimum", Slot::data},
      {"maxLength", Slot::data},          {"minLength", Slot::data},
      {"maxItems", Slot::data},           {"minItems", Slot::data},
      {"uniqueItems", Slot::data},        {"maxProperties", Slot::data},
      {"minProperties", Slot::data},      {"contentMediaType", Slot::data},
      {"contentEncoding", Slot::data},    {"readOnly", Slot::data},
      {"writeOnly", Slot::data},
  };
  auto it = kSlots.find(keyword);
  return it == kSlots.end() ? Slot::unknown : it->second;
}

// Calls fn(child, pointer, under_unknown) for every subschema directly under the schema object
// `schema`; `under_unknown` is true for values of keywords draft 7 does not know, which are
// schemas only if a $ref makes them one.
template <class Fn>
void for_each_subschema(json::object& schema, const std::string& pointer, Fn&& fn) {
  for (auto& member : schema) {
    const std::string_view key = member.key();
    json::value& v = member.value();
    const std::string here = pointer_child(pointer, key);
    switch (slot_of(key)) {
      case Slot::schema:
        fn(v, here, false);
        break;
      case Slot::unknown:
        // Not a keyword, but a $ref may point into it ("#/x-defs/a"): objects found there are
        // treated as schemas where that is harmless (renaming `pattern` inside them changes
        // nothing valijson would otherwise use).
        if (v.is_object()) fn(v, here, true);
        if (v.is_array()) {
          for (std::size_t i = 0; i < v.get_array().size(); ++i) {
            fn(v.get_array()[i], pointer_child(here, std::to_string(i)), true);
          }
        }
        break;
      case Slot::schema_map:
      case Slot::dependencies:
        if (json::object* o = v.if_object()) {
          for (auto& entry : *o) {
            if (!entry.value().is_array()) fn(entry.value(), pointer_child(here, entry.key()), false);
          }
        }
        break;
      case Slot::schema_array:
      case Slot::items:
        if (json::array* a = v.if_array()) {
          for (std::size_t i = 0; i < a->size(); ++i) fn((*a)[i], pointer_child(here, std::to_string(i)), false);
        } else if (slot_of(key) == Slot::items) {
          fn(v, here, false);
        }
        break;
      case Slot::data:
        break;
    }
  }
}

// Moves `pattern` and `format` (strings, in schema positions) under tank's keywords, compiling
// each pattern once (an invalid one is reported with its place), and notes patternProperties.
// Under an unknown keyword (`lenient`) an invalid pattern is left alone: it may be documentation.
void rewrite_schema(json::value& node, const std::string& pointer, RegexCache& regexes, bool& pattern_properties,
                    bool lenient, std::size_t depth) {
  json::object* schema = node.if_object();
  if (schema == nullptr || depth > 512) return;
  if (const json::value* p = schema->if_contains("pattern"); p != nullptr && p->is_string()) {
    const std::string pattern(p->get_string());
    bool compiled = true;
    try {
      (void)compile_regex(regexes, pattern);
    } catch (const std::exception& e) {
      if (!lenient) {
        throw SchemaDocError{fmt::format(
            "{}/pattern: \"{}\" is not a valid regular expression ({}); fix the pattern", pointer, pattern, e.what())};
      }
      compiled = false;
    }
    if (compiled) {
      json::value moved = *p;
      schema->erase("pattern");
      (*schema)[kPatternKeyword] = std::move(moved);
    }
  }
  if (const json::value* f = schema->if_contains("format"); f != nullptr && f->is_string()) {
    json::value moved = *f;
    schema->erase("format");
    (*schema)[kFormatKeyword] = std::move(moved);
  }
  if (const json::value* pp = schema->if_contains("patternProperties"); pp != nullptr && pp->is_object()) {
    // Noted even under an unknown keyword: a $ref may make it a schema.
    pattern_properties = true;
    for (const auto& entry : pp->get_object()) {
      if (lenient) break;
      try {
        // valijson compiles these itself (std::regex, at each validation); an invalid one would
        // throw there, so it is refused here.
        std::regex check{std::string(entry.key())};
      } catch (const std::exception& e) {
        throw SchemaDocError{fmt::format("{}: \"{}\" is not a valid regular expression ({}); fix the pattern",
                                         pointer_child(pointer, "patternProperties"), std::string(entry.key()),
                                         e.what())};
      }
    }
  }
  for_each_subschema(*schema, pointer, [&](json::value& child, const std::string& at, bool under_unknown) {
    rewrite_schema(child, at, regexes, pattern_properties, lenient || under_unknown, depth + 1);
  });
}

// Finds the schemas that apply to the same value as themselves through a chain of $ref, allOf,
// anyOf, oneOf, not, if/then/else and schema dependencies: valijson follows such a loop until the
// stack overflows (at load for a $ref loop, at each validation for the others). Also checks that
// every $ref into this document resolves.
class LoopFinder {
 public:
  explicit LoopFinder(json::value& root) : root_(root) {}

  void run() { visit_all(root_, "", 0); }

 private:
  enum class Mark { active, done };

  // Every schema in the document is a starting point (definitions are reached only by $ref).
  void visit_all(json::value& node, const std::string& pointer, std::size_t depth) {
    json::object* schema = node.if_object();
    if (schema == nullptr || depth > 512) return;
    visit(node, pointer);
    // Values of unknown keywords are schemas only if a $ref leads there (then visit() follows
    // it); check_compiled_loops covers what is reached from them.
    for_each_subschema(*schema, pointer, [&](json::value& child, const std::string& at, bool under_unknown) {
      if (!under_unknown) visit_all(child, at, depth + 1);
    });
  }

  void visit(json::value& node, const std::string& pointer) {
    json::object* schema = node.if_object();
    if (schema == nullptr) return;
    auto [it, inserted] = marks_.emplace(&node, Mark::active);
    if (!inserted) {
      if (it->second == Mark::active) {
        std::string loop;
        bool in_loop = false;
        for (const std::string& p : path_) {
          in_loop = in_loop || p == pointer;
          if (in_loop) loop += shown_pointer(p) + " -> ";
        }
        throw SchemaDocError{fmt::format(
            "{} applies to itself without descending into the document ({}{}), so validation would never end; "
            "break the loop",
            shown_pointer(pointer), loop, shown_pointer(pointer))};
      }
      return;
    }
    path_.push_back(pointer);
    // In draft 7 (and in valijson) a $ref replaces the schema it is in: its siblings do nothing.
    if (const json::value* ref = schema->if_contains("$ref"); ref != nullptr && ref->is_string()) {
      const std::string text(ref->get_string());
      if (json::value* target = local_target(text, pointer)) visit(*target, percent_decode(text.substr(1)));
      path_.pop_back();
      marks_[&node] = Mark::done;
      return;
    }
    for (auto& member : *schema) {
      const std::string_view key = member.key();
      json::value& v = member.value();
      const std::string here = pointer_child(pointer, key);
      if (key == "allOf" || key == "anyOf" || key == "oneOf") {
        if (json::array* a = v.if_array()) {
          for (std::size_t i = 0; i < a->size(); ++i) visit((*a)[i], pointer_child(here, std::to_string(i)));
        }
      } else if (key == "not" || key == "if" || key == "then" || key == "else") {
        visit(v, here);
      } else if (key == "dependencies") {
        if (json::object* o = v.if_object()) {
          for (auto& entry : *o) visit(entry.value(), pointer_child(here, entry.key()));
        }
      }
    }
    path_.pop_back();
    marks_[&node] = Mark::done;  // `it` may be stale: the map grew meanwhile
  }

  // The schema a "#..." $ref points to in this document; nullptr for other documents (checked
  // when fetched). In draft 7 a $ref replaces its whole schema, and valijson resolves "#..."
  // against the root of the document the $ref is in.
  json::value* local_target(const std::string& ref, const std::string& at) {
    if (ref.empty() || ref[0] != '#') return nullptr;
    const std::string pointer = percent_decode(ref.substr(1));
    if (!pointer.empty() && pointer[0] != '/') {
      throw SchemaDocError{fmt::format(
          "$ref \"{}\" at {}: a plain-name fragment ($id anchor) cannot be resolved here; refer to the schema "
          "with a JSON pointer such as \"#/definitions/name\"",
          ref, shown_pointer(at))};
    }
    std::string why;
    const json::value* target = resolve_pointer(root_, pointer, &why);
    if (target == nullptr) {
      throw SchemaDocError{
          fmt::format("$ref \"{}\" at {} cannot be resolved: {}; point it at a subschema that exists", ref,
                      shown_pointer(at), why)};
    }
    return const_cast<json::value*>(target);
  }

  json::value& root_;
  std::unordered_map<const json::value*, Mark> marks_;
  std::vector<std::string> path_;
};

bool contains_ref(const json::value& v) {
  if (const json::object* o = v.if_object()) {
    if (o->contains("$ref")) return true;
    return std::any_of(o->begin(), o->end(), [](const auto& m) { return contains_ref(m.value()); });
  }
  if (const json::array* a = v.if_array()) return std::any_of(a->begin(), a->end(), contains_ref);
  return false;
}

// Moves `properties` and `additionalProperties` under kPropertiesKeyword where tank's
// constraint gives the same result (see PropertiesConstraint), innermost schemas first.
void take_over_properties(json::value& node, std::size_t depth) {
  json::object* schema = node.if_object();
  if (schema == nullptr || depth > 512) return;
  for_each_subschema(*schema, "", [&](json::value& child, const std::string&, bool) {
    take_over_properties(child, depth + 1);
  });
  const json::value* properties = schema->if_contains("properties");
  const json::value* others = schema->if_contains("additionalProperties");
  if (properties == nullptr || !properties->is_object() || schema->contains("patternProperties") ||
      schema->contains("$ref") || contains_ref(*properties) || (others != nullptr && contains_ref(*others))) {
    return;
  }
  // A property subschema or additionalProperties that is not a schema is left to valijson,
  // which reports it.
  auto is_schema = [](const json::value& v) { return v.is_object() || v.is_bool(); };
  const json::object& map = properties->get_object();
  if (!std::all_of(map.begin(), map.end(), [&](const auto& m) { return is_schema(m.value()); })) return;
  if (others != nullptr && !is_schema(*others)) return;
  json::object spec;
  spec["properties"] = *properties;
  if (others != nullptr) spec["additionalProperties"] = *others;
  schema->erase("properties");
  schema->erase("additionalProperties");
  (*schema)[kPropertiesKeyword] = std::move(spec);
}

// valijson resolves a $ref at the root of a document by a path of its own: a relative URI there
// ("types.json#/a") is looked up in the same document, so {"$ref": "other.json"} recurses until
// the stack overflows, and a remote document is fetched again at each step. A $ref anywhere else
// is resolved properly (and cached). So a root $ref is moved one level down:
//   {"$ref": R, "definitions": D}  ->  {"allOf": [{"$ref": R}], "definitions": D}
// keeping the members a JSON pointer may refer to (definitions and unknown keywords) and dropping
// the keywords beside it, which draft 7 ignores next to a $ref anyway.
void wrap_root_ref(json::value& root) {
  json::object* schema = root.if_object();
  if (schema == nullptr) return;
  const json::value* ref = schema->if_contains("$ref");
  if (ref == nullptr || !ref->is_string()) return;
  json::object wrapped;
  json::array all_of;
  all_of.emplace_back(json::object{{"$ref", *ref}});
  wrapped["allOf"] = std::move(all_of);
  for (const auto& member : *schema) {
    const std::string_view key = member.key();
    if (key == "definitions" || (slot_of(key) == Slot::unknown && !starts_with_tank_keyword(key))) {
      wrapped[key] = member.value();
    }
  }
  root = std::move(wrapped);
}

// The subschemas a constraint applies: to the same value (allOf, anyOf, oneOf, not, if/then/
// else, schema dependencies) or to a part of it (properties, items, contains, propertyNames).
class ChildSchemas final : public valijson::constraints::ConstraintVisitor {
 public:
  using Subschema = valijson::Subschema;
  std::vector<const Subschema*> same_value;
  std::vector<const Subschema*> parts;

 private:
  template <class C>
  void all(const C& c, std::vector<const Subschema*>& into) {
    c.applyToSubschemas([&](unsigned, const Subschema* s) {
      into.push_back(s);
      return true;
    });
  }
  void add(const Subschema* s, std::vector<const Subschema*>& into) {
    if (s != nullptr) into.push_back(s);
  }

  bool visit(const AllOfConstraint& c) override { return all(c, same_value), true; }
  bool visit(const AnyOfConstraint& c) override { return all(c, same_value), true; }
  bool visit(const OneOfConstraint& c) override { return all(c, same_value), true; }
  bool visit(const NotConstraint& c) override { return add(c.getSubschema(), same_value), true; }
  bool visit(const ConditionalConstraint& c) override {
    add(c.getIfSubschema(), same_value);
    add(c.getThenSubschema(), same_value);
    add(c.getElseSubschema(), same_value);
    return true;
  }
  bool visit(const DependenciesConstraint& c) override {
    c.applyToSchemaDependencies([&](const auto&, const Subschema* s) {
      add(s, same_value);
      return true;
    });
    return true;
  }
  bool visit(const ContainsConstraint& c) override { return add(c.getSubschema(), parts), true; }
  bool visit(const PropertyNamesConstraint& c) override { return add(c.getSubschema(), parts), true; }
  bool visit(const SingularItemsConstraint& c) override { return add(c.getItemsSubschema(), parts), true; }
  bool visit(const LinearItemsConstraint& c) override {
    c.applyToItemSubschemas([&](unsigned, const Subschema* s) {
      add(s, parts);
      return true;
    });
    add(c.getAdditionalItemsSubschema(), parts);
    return true;
  }
  bool visit(const PropertiesConstraint& c) override {
    auto each = [&](const auto&, const Subschema* s) {
      add(s, parts);
      return true;
    };
    c.applyToProperties(each);
    c.applyToPatternProperties(each);
    add(c.getAdditionalPropertiesSubschema(), parts);
    return true;
  }
  // tank's own constraints hold separately compiled schemas without $ref: they cannot loop.
  bool visit(const PolyConstraint&) override { return true; }
  bool visit(const ConstConstraint&) override { return true; }
  bool visit(const EnumConstraint&) override { return true; }
  bool visit(const FormatConstraint&) override { return true; }
  bool visit(const MaximumConstraint&) override { return true; }
  bool visit(const MaxItemsConstraint&) override { return true; }
  bool visit(const MaxLengthConstraint&) override { return true; }
  bool visit(const MaxPropertiesConstraint&) override { return true; }
  bool visit(const MinimumConstraint&) override { return true; }
  bool visit(const MinItemsConstraint&) override { return true; }
  bool visit(const MinLengthConstraint&) override { return true; }
  bool visit(const MinPropertiesConstraint&) override { return true; }
  bool visit(const MultipleOfDoubleConstraint&) override { return true; }
  bool visit(const MultipleOfIntConstraint&) override { return true; }
  bool visit(const PatternConstraint&) override { return true; }
  bool visit(const RequiredConstraint&) override { return true; }
  bool visit(const TypeConstraint&) override { return true; }
  bool visit(const UniqueItemsConstraint&) override { return true; }
};

}  // namespace

namespace schema_detail {

// LoopFinder checks each document; a loop through several documents (a.json's allOf refers to
// b.json, whose allOf refers to a.json) shows only once valijson has resolved the $refs, so the
// compiled schema is checked too: no subschema may reach itself through same-value edges.
void check_compiled_loops(const valijson::Subschema& root) {
  enum class Mark { active, done };
  std::unordered_map<const valijson::Subschema*, Mark> marks;
  std::unordered_set<const valijson::Subschema*> seen;
  std::vector<const valijson::Subschema*> pending{&root};
  // Each subschema (reached by any edge) starts a depth-first walk along same-value edges.
  std::function<void(const valijson::Subschema*)> walk = [&](const valijson::Subschema* s) {
    auto [it, inserted] = marks.emplace(s, Mark::active);
    if (!inserted) {
      if (it->second == Mark::active) {
        throw SchemaDocError{
            "a $ref loop through other documents applies a schema to itself without descending into the "
            "document, so validation would never end; break the loop"};
      }
      return;
    }
    ChildSchemas children;
    valijson::Subschema::ApplyFunction visit = [&](const valijson::constraints::Constraint& c) {
      return c.accept(children);
    };
    s->apply(visit);
    for (const valijson::Subschema* child : children.same_value) walk(child);
    for (const valijson::Subschema* child : children.parts) pending.push_back(child);
    marks[s] = Mark::done;
  };
  while (!pending.empty()) {
    const valijson::Subschema* s = pending.back();
    pending.pop_back();
    if (!seen.insert(s).second) continue;
    walk(s);
    // Same-value children were walked (and marked) but their parts still need a start.
    ChildSchemas children;
    valijson::Subschema::ApplyFunction visit = [&](const valijson::constraints::Constraint& c) {
      return c.accept(children);
    };
    s->apply(visit);
    for (const valijson::Subschema* child : children.same_value) pending.push_back(child);
    for (const valijson::Subschema* child : children.parts) pending.push_back(child);
  }
}

// Parses schema text; throws SchemaDocError with line:column on bad JSON.
json::value parse_schema_json(std::string_view text, const std::string& origin) {
  json::parse_options options;
  options.max_depth = 256;
  json::parser parser(json::storage_ptr(), options);
  json::error_code ec;
  const std::size_t consumed = parser.write_some(text.data(), text.size(), ec);
  std::size_t at = consumed;
  if (!ec) {
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) ++at;
    if (at < text.size()) ec = json::error::extra_data;
  }
  if (ec) {
    at = std::min(at, text.size());
    std::size_t line = 1;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    throw SchemaDocError{fmt::format("{}:{}:{}: not JSON: {}; fix the JSON syntax there", origin, line,
                                     at - line_start + 1, ec.message()),
                         true};
  }
  return parser.release();
}

PreparedDocument prepare_document(json::value document, RegexCache& regexes, bool check_meta) {
  if (check_meta) check_against_meta_schema(document);
  PreparedDocument prepared;
  prepared.value = std::move(document);
  rewrite_schema(prepared.value, "", regexes, prepared.pattern_properties, false, 0);
  LoopFinder(prepared.value).run();
  take_over_properties(prepared.value, 0);
  wrap_root_ref(prepared.value);
  return prepared;
}

}  // namespace schema_detail
}  // namespace tank::process

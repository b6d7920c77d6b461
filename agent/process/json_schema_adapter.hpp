#pragma once

// =============================================================================================
// A valijson adapter for Boost.JSON documents.
//
// valijson's own BoostJsonAdapter (1.0) differs from JSON Schema on numbers that Boost.JSON
// stores in other kinds than int64 and double: an integer above 2^63-1 (uint64) is neither an
// integer nor a double to it, and `minimum` or `maximum` on one throws "JSON value cannot be
// cast to a double"; 1.0 is not an "integer" although draft 7 says it is. It also copies strings
// with c_str(), cutting them at an escaped NUL. This adapter is the same but for those numbers:
//   - uint64: a number; isInteger() and isDouble(), its value as a double (getInteger clamps)
//   - a double with no fractional part: isInteger() too (getInteger clamps beyond int64)
// and strings copied whole.
//
// Private to agent/process/json_schema*.cpp.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "process/json_schema_detail.hpp"

#include <valijson/internal/basic_adapter.hpp>
#include <valijson/internal/frozen_value.hpp>

namespace tank::process::schema_detail {

class DocAdapter;
class DocArrayIterator;
class DocObjectIterator;

using DocObjectMember = std::pair<std::string, DocAdapter>;

inline const json::value& empty_object_value() {
  static const json::value value(json::object{});
  return value;
}

inline const json::array& empty_array() {
  static const json::array array;
  return array;
}

inline bool integral_double(double d) { return std::isfinite(d) && std::trunc(d) == d; }

inline std::int64_t clamp_to_int64(double d) {
  if (!(d > static_cast<double>(std::numeric_limits<std::int64_t>::min()))) return std::numeric_limits<std::int64_t>::min();
  if (!(d < static_cast<double>(std::numeric_limits<std::int64_t>::max()))) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(d);
}

class DocArray {
 public:
  using const_iterator = DocArrayIterator;
  using iterator = DocArrayIterator;
  DocArray() : array_(&empty_array()) {}
  explicit DocArray(const json::array& array) : array_(&array) {}
  DocArrayIterator begin() const;
  DocArrayIterator end() const;
  std::size_t size() const { return array_->size(); }

 private:
  const json::array* array_;
};

class DocObject {
 public:
  using const_iterator = DocObjectIterator;
  using iterator = DocObjectIterator;
  DocObject() : object_(&empty_object_value().get_object()) {}
  explicit DocObject(const json::object& object) : object_(&object) {}
  DocObjectIterator begin() const;
  DocObjectIterator end() const;
  DocObjectIterator find(const std::string& name) const;
  std::size_t size() const { return object_->size(); }

 private:
  const json::object* object_;
};

class DocFrozenValue final : public valijson::adapters::FrozenValue {
 public:
  explicit DocFrozenValue(const json::value& value) : value_(value) {}
  FrozenValue* clone() const override { return new DocFrozenValue(value_); }
  bool equalTo(const valijson::adapters::Adapter& other, bool strict) const override;

 private:
  json::value value_;
};

class DocValue {
 public:
  DocValue() : value_(&empty_object_value()) {}
  explicit DocValue(const json::value& value) : value_(&value) {}

  valijson::adapters::FrozenValue* freeze() const { return new DocFrozenValue(*value_); }

  std::optional<DocArray> getArrayOptional() const {
    if (value_->is_array()) return DocArray(value_->get_array());
    return {};
  }
  bool getArraySize(std::size_t& result) const {
    if (!value_->is_array()) return false;
    result = value_->get_array().size();
    return true;
  }
  bool getBool(bool& result) const {
    if (!value_->is_bool()) return false;
    result = value_->get_bool();
    return true;
  }
  bool getDouble(double& result) const {
    switch (value_->kind()) {
      case json::kind::double_: result = value_->get_double(); return true;
      case json::kind::uint64: result = static_cast<double>(value_->get_uint64()); return true;
      case json::kind::int64: result = static_cast<double>(value_->get_int64()); return true;
      default: return false;
    }
  }
  bool getInteger(std::int64_t& result) const {
    switch (value_->kind()) {
      case json::kind::int64: result = value_->get_int64(); return true;
      case json::kind::uint64: result = std::numeric_limits<std::int64_t>::max(); return true;
      case json::kind::double_:
        if (!integral_double(value_->get_double())) return false;
        result = clamp_to_int64(value_->get_double());
        return true;
      default: return false;
    }
  }
  std::optional<DocObject> getObjectOptional() const {
    if (value_->is_object()) return DocObject(value_->get_object());
    return {};
  }
  bool getObjectSize(std::size_t& result) const {
    if (!value_->is_object()) return false;
    result = value_->get_object().size();
    return true;
  }
  bool getString(std::string& result) const {
    if (!value_->is_string()) return false;
    const json::string& s = value_->get_string();
    result.assign(s.data(), s.size());
    return true;
  }
  static bool hasStrictTypes() { return true; }
  bool isArray() const { return value_->is_array(); }
  bool isBool() const { return value_->is_bool(); }
  // uint64 counts as a double so that valijson reads its value with getDouble (exact enough
  // for comparisons; int64 cannot hold it).
  bool isDouble() const { return value_->is_double() || value_->is_uint64(); }
  bool isInteger() const {
    return value_->is_int64() || value_->is_uint64() ||
           (value_->is_double() && integral_double(value_->get_double()));
  }
  bool isNull() const { return value_->is_null(); }
  bool isNumber() const { return value_->is_number(); }
  bool isObject() const { return value_->is_object(); }
  bool isString() const { return value_->is_string(); }

 private:
  const json::value* value_;
};

class DocAdapter
    : public valijson::adapters::BasicAdapter<DocAdapter, DocArray, DocObjectMember, DocObject, DocValue> {
 public:
  DocAdapter() : raw_(&empty_object_value()) {}
  explicit DocAdapter(const json::value& value) : BasicAdapter(DocValue(value)), raw_(&value) {}

  // The Boost.JSON value, for tank's own constraints (valijson's Adapter interface would copy).
  const json::value& raw() const { return *raw_; }

 private:
  const json::value* raw_;
};

class DocArrayIterator {
 public:
  using iterator_category = std::bidirectional_iterator_tag;
  using value_type = DocAdapter;
  using difference_type = std::ptrdiff_t;
  using pointer = DocAdapter*;
  using reference = DocAdapter&;

  explicit DocArrayIterator(json::array::const_iterator it) : it_(it) {}
  DocAdapter operator*() const { return DocAdapter(*it_); }
  valijson::adapters::DerefProxy<DocAdapter> operator->() const {
    return valijson::adapters::DerefProxy<DocAdapter>(**this);
  }
  bool operator==(const DocArrayIterator& other) const { return it_ == other.it_; }
  bool operator!=(const DocArrayIterator& other) const { return it_ != other.it_; }
  const DocArrayIterator& operator++() {
    ++it_;
    return *this;
  }
  DocArrayIterator operator++(int) {
    DocArrayIterator before(it_);
    ++it_;
    return before;
  }
  const DocArrayIterator& operator--() {
    --it_;
    return *this;
  }
  void advance(std::ptrdiff_t n) { it_ += n; }

 private:
  json::array::const_iterator it_;
};

class DocObjectIterator {
 public:
  using iterator_category = std::bidirectional_iterator_tag;
  using value_type = DocObjectMember;
  using difference_type = std::ptrdiff_t;
  using pointer = DocObjectMember*;
  using reference = DocObjectMember&;

  explicit DocObjectIterator(json::object::const_iterator it) : it_(it) {}
  DocObjectMember operator*() const { return DocObjectMember(std::string(it_->key()), DocAdapter(it_->value())); }
  valijson::adapters::DerefProxy<DocObjectMember> operator->() const {
    return valijson::adapters::DerefProxy<DocObjectMember>(**this);
  }
  bool operator==(const DocObjectIterator& other) const { return it_ == other.it_; }
  bool operator!=(const DocObjectIterator& other) const { return it_ != other.it_; }
  const DocObjectIterator& operator++() {
    ++it_;
    return *this;
  }
  DocObjectIterator operator++(int) {
    DocObjectIterator before(it_);
    ++it_;
    return before;
  }
  const DocObjectIterator& operator--() {
    --it_;
    return *this;
  }

 private:
  json::object::const_iterator it_;
};

inline DocArrayIterator DocArray::begin() const { return DocArrayIterator(array_->begin()); }
inline DocArrayIterator DocArray::end() const { return DocArrayIterator(array_->end()); }
inline DocObjectIterator DocObject::begin() const { return DocObjectIterator(object_->begin()); }
inline DocObjectIterator DocObject::end() const { return DocObjectIterator(object_->end()); }
inline DocObjectIterator DocObject::find(const std::string& name) const { return DocObjectIterator(object_->find(name)); }

inline bool DocFrozenValue::equalTo(const valijson::adapters::Adapter& other, bool strict) const {
  return DocAdapter(value_).equalTo(other, strict);
}

}  // namespace tank::process::schema_detail

template <>
struct valijson::adapters::AdapterTraits<tank::process::schema_detail::DocAdapter> {
  using DocumentType = boost::json::value;
  static std::string adapterName() { return "TankDocAdapter"; }
};

// Record validation speed on one thread: JsonDecoder (Boost.JSON) and SchemaValidator (valijson)
// as processors.validate uses them, one decoder and one validator reused for every record.
//
//   validate_bench [--records N] [--repeat R]
//
// Records are about 150 bytes with 6 properties, e.g.
//   {"device":"gw-0042-plant-a-hall-2-line-0-temperature-humidity-000042","ts":1700000010500,
//    "temp":22.042,"hum":72.042,"status":"degraded","seq":1000042}
// checked against a draft 7 schema with types, required, minimum/maximum, an enum, a pattern and
// additionalProperties false. Three measurements, each the best and the median of R runs over N
// records:
//   decode               JsonDecoder::decode only
//   decode+validate      every record valid
//   decode+validate 10%  one record in ten invalid (each failure is collected and described,
//                        as for a dead letter)

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "process/json_schema.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using tank::process::DecodeError;
using tank::process::JsonDecoder;
using tank::process::JsonSchema;
using tank::process::SchemaValidator;
using tank::process::Violation;

constexpr const char* kUsage =
    "usage: validate_bench [--records N] [--repeat R]\n"
    "  Measures JSON decoding and JSON Schema validation of ~150-byte records on one thread.\n"
    "  --records N   records per run (default 200000)\n"
    "  --repeat R    runs per measurement; the best and the median are printed (default 5)\n";

constexpr const char* kSchema = R"({
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["device", "ts", "temp", "hum", "status", "seq"],
  "properties": {
    "device": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"},
    "ts": {"type": "integer", "minimum": 1500000000000, "maximum": 4102444800000},
    "temp": {"type": "number", "minimum": -60, "maximum": 200},
    "hum": {"type": "number", "minimum": 0, "maximum": 100},
    "status": {"enum": ["ok", "degraded", "maintenance", "offline"]},
    "seq": {"type": "integer", "minimum": 0}
  },
  "additionalProperties": false
})";

const char* const kStatuses[] = {"ok", "degraded", "maintenance", "offline"};

std::string valid_record(std::uint64_t n) {
  return fmt::format(
      R"({{"device":"gw-{:04d}-plant-a-hall-2-line-{}-temperature-humidity-{:06d}","ts":{},"temp":{}.{:03d},"hum":{}.{:03d},"status":"{}","seq":{}}})",
      n % 10000, n % 7, n % 1000000, 1700000000000ULL + n * 250, 10 + n % 30, n % 1000, 30 + n % 50, n % 1000,
      kStatuses[n % 4], 1000000 + n);
}

// The ways a record breaks its contract, in turn.
std::string invalid_record(std::uint64_t n) {
  switch (n % 5) {
    case 0:  // temperature out of range
      return fmt::format(
          R"({{"device":"plant-a-line-1-sensor-{:06d}","ts":{},"temp":500.5,"hum":45.25,"status":"ok","seq":{}}})",
          n % 1000000, 1700000000000ULL + n, n);
    case 1:  // device missing, an unknown property instead
      return fmt::format(
          R"({{"devise":"plant-a-line-1-sensor-{:06d}","ts":{},"temp":21.5,"hum":45.25,"status":"ok","seq":{}}})",
          n % 1000000, 1700000000000ULL + n, n);
    case 2:  // status not in the enum
      return fmt::format(
          R"({{"device":"plant-a-line-1-sensor-{:06d}","ts":{},"temp":21.5,"hum":45.25,"status":"broken","seq":{}}})",
          n % 1000000, 1700000000000ULL + n, n);
    case 3:  // device does not match the pattern
      return fmt::format(
          R"({{"device":"Plant A/Line 1/Sensor {:06d}","ts":{},"temp":21.5,"hum":45.25,"status":"ok","seq":{}}})",
          n % 1000000, 1700000000000ULL + n, n);
    default:  // wrong types
      return fmt::format(
          R"({{"device":"plant-a-line-1-sensor-{:06d}","ts":"{}","temp":21.5,"hum":45.25,"status":"ok","seq":-{}}})",
          n % 1000000, 1700000000000ULL + n, n);
  }
}

struct Figures {
  double best_ns = 0;    // per record
  double median_ns = 0;  // per record
};

template <class Run>
Figures measure(std::size_t records, int repeat, Run&& run) {
  std::vector<double> ns;
  for (int r = 0; r < repeat; ++r) {
    const auto start = Clock::now();
    run();
    const auto elapsed = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
    ns.push_back(elapsed / static_cast<double>(records));
  }
  std::sort(ns.begin(), ns.end());
  return Figures{ns.front(), ns[ns.size() / 2]};
}

void print(const char* name, const Figures& f) {
  fmt::print("{:<22} {:>12.0f} records/s  {:>8.0f} ns/record   (median {:>10.0f} records/s, {:>6.0f} ns/record)\n",
             name, 1e9 / f.best_ns, f.best_ns, 1e9 / f.median_ns, f.median_ns);
}

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "validate_bench: " << what << "\n" << kUsage;
  std::exit(2);
}

std::size_t parse_count(const char* option, const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v == 0 || text[0] == '-') {
    usage_error(fmt::format("{} needs a positive integer, not \"{}\"", option, text));
  }
  return static_cast<std::size_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t records = 200000;
  int repeat = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if ((arg == "--records" || arg == "--repeat") && i + 1 < argc) {
      const std::size_t v = parse_count(argv[i], argv[i + 1]);
      ++i;
      if (arg == "--records") {
        records = v;
      } else {
        repeat = static_cast<int>(std::min<std::size_t>(v, 1000));
      }
      continue;
    }
    usage_error(fmt::format("unknown or incomplete option \"{}\"", arg));
  }

  std::vector<std::string> valid;
  std::vector<std::string> mixed;
  valid.reserve(records);
  mixed.reserve(records);
  std::size_t bytes = 0;
  for (std::size_t n = 0; n < records; ++n) {
    valid.push_back(valid_record(n));
    bytes += valid.back().size();
    mixed.push_back(n % 10 == 9 ? invalid_record(n / 10) : valid_record(n));
  }

  const auto schema = JsonSchema::parse(kSchema, "validate_bench schema");
  JsonDecoder decoder;
  SchemaValidator validator(schema);
  DecodeError error;
  std::vector<Violation> violations;

  // Checks the set-up before timing it: every valid record passes, every tenth mixed one fails.
  for (std::size_t n = 0; n < std::min<std::size_t>(records, 1000); ++n) {
    const auto* doc = decoder.decode(mixed[n], &error);
    if (doc == nullptr) usage_error(fmt::format("record {} does not decode: {}", n, error.message));
    violations.clear();
    const bool ok = validator.validate(*doc, &violations);
    if (ok != (n % 10 != 9)) {
      std::cerr << "validate_bench: record " << n << " validated " << ok << ": " << mixed[n] << "\n"
                << tank::process::describe(violations) << "\n";
      return 1;
    }
  }

  fmt::print("{} records of {:.0f} bytes on average, {} runs each; schema: 6 properties\n", records,
             static_cast<double>(bytes) / static_cast<double>(records), repeat);

  std::size_t sink = 0;
  print("decode", measure(records, repeat, [&] {
          for (const std::string& r : valid) sink += decoder.decode(r, &error) != nullptr;
        }));
  print("decode+validate", measure(records, repeat, [&] {
          for (const std::string& r : valid) {
            const auto* doc = decoder.decode(r, &error);
            violations.clear();
            sink += doc != nullptr && validator.validate(*doc, &violations);
          }
        }));
  std::size_t detail_bytes = 0;
  print("decode+validate 10%", measure(records, repeat, [&] {
          for (const std::string& r : mixed) {
            const auto* doc = decoder.decode(r, &error);
            violations.clear();
            if (doc != nullptr && !validator.validate(*doc, &violations)) {
              detail_bytes += tank::process::describe(violations).size();  // as for a dead letter
            } else {
              ++sink;
            }
          }
        }));
  if (sink == 0 || detail_bytes == 0) std::cerr << "validate_bench: nothing was measured\n";
  return 0;
}

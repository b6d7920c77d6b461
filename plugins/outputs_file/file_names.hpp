#pragma once

// The names of outputs.file's files (file_output.cpp does the I/O), and which names an output
// owns: its max_files deletes those and no others.
//
//   <output>-<UTC time of creation>[-<n>]<extension>
//   archive-20261121T231900.123Z.ndjson.zst
//   archive-20261121T231900.123Z-1.ndjson.zst      (a second file created in the same millisecond)
//
// An output owns exactly the names of that form, with its own name and extension: not every
// name that starts with "<output>-". Two outputs with different names never own the same name,
// however their names are spelled (output "arc" does not own "arc-1-20261121T231900.123Z.ndjson"
// of output "arc-1"): the last 'Z' of a name ends its time stamp (the sequence and the extension
// hold none), the stamp has a fixed length, so a name tells which output wrote it. Output names
// are unique (tank check), so outputs sharing a directory never take each other's files.

#include <cstdint>
#include <string>
#include <string_view>

namespace tank::plugins::file_output {

// ".ndjson", ".ndjson.zst" or ".ndjson.gz" for outputs.file's `compression` ("none", "zstd",
// "gzip"; anything else is taken as "none").
std::string_view extension_of(std::string_view compression);

// The name of a file of `output` created at `wall_ns` (UTC, milliseconds in the name);
// `sequence` > 0 appends "-<sequence>" (the name with 0 was taken).
std::string file_name(std::string_view output, std::int64_t wall_ns, int sequence, std::string_view extension);

// Whether `name` (a file name, no directory) is one file_name(output, ..., extension) can
// return for some time and sequence.
bool is_file_of(std::string_view name, std::string_view output, std::string_view extension);

// Whether file `a` of an output was created before file `b` (both names of that output: its
// time stamp, then its sequence as a number, so "...Z" < "...Z-1" < "...Z-2" < "...Z-10"; a
// plain sort of the names would put "-10" before "-2" and "Z-1" before "Z.").
bool created_before(std::string_view a, std::string_view b, std::string_view output);

}  // namespace tank::plugins::file_output

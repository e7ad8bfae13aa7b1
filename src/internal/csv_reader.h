// A small RFC 4180 CSV reader: comma separator, fields optionally wrapped in double quotes, inner
// quotes doubled, quoted fields may span lines, records end at "\n" or "\r\n".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llm4dsr::internal {

struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // 1-based line on which the record starts (records may span lines)
};

// Parses the whole text. Blank lines between records are skipped. A UTF-8 byte order mark is
// skipped. Throws Error naming `path` and the line for an unterminated quoted field or text
// after a closing quote.
std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& path);

}  // namespace llm4dsr::internal

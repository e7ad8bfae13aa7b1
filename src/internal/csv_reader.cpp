#include "internal/csv_reader.h"

#include "llm4dsr/error.h"

namespace llm4dsr::internal {

std::vector<CsvRecord> parse_csv(std::string_view text, const std::string& path) {
  std::vector<CsvRecord> records;
  size_t i = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
  const size_t n = text.size();
  int64_t line = 1;
  while (i < n) {
    // A blank line is not a record (pandas skips them too).
    if (text[i] == '\n') {
      ++i;
      ++line;
      continue;
    }
    if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') {
      i += 2;
      ++line;
      continue;
    }
    CsvRecord record;
    record.line = line;
    while (true) {  // one field per iteration
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t quote_line = line;
        ++i;
        while (true) {
          if (i >= n)
            LLM4DSR_THROW(path << ":" << quote_line << ": unterminated quoted field (a '\"' opened here is never closed)");
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && !(text[i] == '\r' && (i + 1 == n || text[i + 1] == '\n')))
          LLM4DSR_THROW(path << ":" << line << ": unexpected character '" << text[i]
                             << "' after a closing quote (expected ',' or the end of the line)");
      } else {
        // Unquoted: runs to the next separator or line end; a stray quote inside is kept as is,
        // as pandas does.
        const size_t start = i;
        while (i < n && text[i] != ',' && text[i] != '\n') ++i;
        size_t end = i;
        if (end > start && text[end - 1] == '\r' && (i == n || text[i] == '\n')) --end;
        field.assign(text.data() + start, end - start);
      }
      record.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      // End of the record: skip "\r\n" or "\n".
      if (i < n && text[i] == '\r') ++i;
      if (i < n && text[i] == '\n') {
        ++i;
        ++line;
      }
      break;
    }
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace llm4dsr::internal

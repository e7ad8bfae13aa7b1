// Text-file helpers shared by the readers: whole-file reading, line iteration with 1-based line
// numbers, encoding checks and conversions, strict number parsing.
//
// Every reader loads its input whole (the largest supported inputs are a few MB) and walks it
// with string_views, which is an order of magnitude faster than getline on an ifstream.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llm4dsr::internal {

// The whole file as bytes. Throws Error naming the path when it is missing or unreadable; `what`
// says what the file is for (e.g. "the RecBole interaction file"), for the message.
std::string read_file(const std::string& path, std::string_view what = "file");

// Lines of a text buffer without their terminators ("\n" or "\r\n"). A final line without a
// terminator counts; a final empty line after the last "\n" does not. A UTF-8 byte order mark at
// the start is skipped.
class LineReader {
 public:
  explicit LineReader(std::string_view text);
  // Advances to the next line; false at the end.
  bool next(std::string_view& line);
  // 1-based number of the line last returned by next().
  int64_t line_number() const { return line_number_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_number_ = 0;
};

// Splits on a single-character separator, keeping empty fields ("a\t\tb" -> 3 fields).
std::vector<std::string_view> split(std::string_view line, char separator);
// `text` without leading and trailing ASCII whitespace.
std::string_view trim(std::string_view text);
bool is_blank(std::string_view text);

// Position of the first byte that is not part of well-formed UTF-8 (overlong forms, surrogates and
// code points above U+10FFFF are malformed), or nullopt when the whole text is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);
// Throws Error "<path>: not valid UTF-8 at line N, byte B (0xXX)" for the first malformed byte;
// B is the 1-based byte position within that line.
void check_utf8(std::string_view text, const std::string& path);
// 1-based line number of byte offset `offset` in text.
int64_t line_of_offset(std::string_view text, size_t offset);

// Latin-1 (ISO-8859-1) bytes to UTF-8: each byte is its own code point.
std::string latin1_to_utf8(std::string_view text);
// Appends the UTF-8 encoding of a code point; false (and nothing appended) for surrogates and
// values above U+10FFFF.
bool append_utf8(std::string& out, uint32_t code_point);

// Strict parses of a whole field (no surrounding text allowed except ASCII whitespace).
std::optional<int64_t> parse_int64(std::string_view text);
// Accepts what Python's float() accepts for finite decimal numbers: "12", "-1.5", "1e9", ".5".
std::optional<double> parse_double(std::string_view text);

// Base name of a path, ignoring a trailing separator ("a/b/" -> "b"); the current folder's name
// for "." or "".
std::string base_name(const std::string& path);

}  // namespace llm4dsr::internal

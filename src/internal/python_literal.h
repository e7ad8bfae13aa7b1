// Python literals as pandas writes them into the LLM4DSR authors' CSV files: flat lists of ints,
// floats and str reprs ("[208, 3023]", "['Heat (1995)', \"Schindler's List (1993)\"]").
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llm4dsr::internal {

struct PyValue {
  enum class Kind { kInt, kFloat, kString };
  Kind kind = Kind::kInt;
  // kInt / kFloat: the literal's text as written (e.g. "208", "-1.5e3"); kString: the decoded
  // UTF-8 contents.
  std::string text;
};

// Parses one Python list literal of scalars: ints, floats, single- or double-quoted strings (with
// the escapes \\ \' \" \n \r \t \a \b \f \v \0-\777 \xNN \uNNNN \UNNNNNNNN and, as Python, an
// unknown escape kept verbatim). A trailing comma is allowed, nesting is not. Throws Error that
// starts with `where` (e.g. "train.csv:12, column item_titles") and says what was expected at
// which character.
std::vector<PyValue> parse_python_list(std::string_view text, const std::string& where);

// Decodes a single Python scalar (int, float or string literal); same errors as above.
PyValue parse_python_scalar(std::string_view text, const std::string& where);

// Python 3's repr() of a str given as UTF-8: single quotes unless the text holds a single quote
// and no double quote; escapes backslash, the active quote, \n \r \t, and other control
// characters below 0x20 and 0x7f as \xNN; other UTF-8 passes through unchanged.
std::string python_repr(std::string_view utf8);

}  // namespace llm4dsr::internal

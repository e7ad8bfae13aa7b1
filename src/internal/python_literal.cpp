#include "internal/python_literal.h"

#include <cstdint>

#include "internal/text_io.h"
#include "llm4dsr/error.h"

namespace llm4dsr::internal {

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& where) : s_(text), where_(where) {}

  std::vector<PyValue> list() {
    skip_space();
    expect('[', "'[' opening the list");
    std::vector<PyValue> values;
    skip_space();
    while (true) {
      if (peek() == ']') {
        ++i_;
        break;
      }
      values.push_back(scalar());
      skip_space();
      if (peek() == ',') {
        ++i_;
        skip_space();
        continue;
      }
      if (peek() == ']') {
        ++i_;
        break;
      }
      fail("',' or ']' after list element " + std::to_string(values.size()));
    }
    skip_space();
    if (i_ != s_.size()) fail("the end of the field after the closing ']'");
    return values;
  }

  PyValue single() {
    skip_space();
    PyValue v = scalar();
    skip_space();
    if (i_ != s_.size()) fail("the end of the field after the value");
    return v;
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool at_end() const { return i_ >= s_.size(); }

  void skip_space() {
    while (!at_end() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  [[noreturn]] void fail(const std::string& expected) const {
    std::string found = at_end() ? std::string("the end of the text") : "'" + std::string(s_.substr(i_, 12)) + "'";
    std::string shown(s_.substr(0, 80));
    if (s_.size() > 80) shown += "...";
    LLM4DSR_THROW(where_ << ": expected " << expected << " at character " << (i_ + 1) << ", found " << found
                         << " in Python literal \"" << shown << "\"");
  }

  void expect(char c, const char* what) {
    if (peek() != c) fail(what);
    ++i_;
  }

  PyValue scalar() {
    const char c = peek();
    if (c == '\'' || c == '"') return string_literal();
    if (c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9')) return number();
    fail("a number or a quoted string");
  }

  PyValue number() {
    const size_t start = i_;
    if (peek() == '-' || peek() == '+') ++i_;
    bool is_float = false, digits = false;
    while (!at_end()) {
      const char c = s_[i_];
      if (c >= '0' && c <= '9') {
        digits = true;
      } else if (c == '.' || c == 'e' || c == 'E') {
        is_float = true;
        if ((c == 'e' || c == 'E') && i_ + 1 < s_.size() && (s_[i_ + 1] == '-' || s_[i_ + 1] == '+')) ++i_;
      } else if (c != '_') {
        break;
      }
      ++i_;
    }
    std::string text;
    for (size_t k = start; k < i_; ++k)
      if (s_[k] != '_') text += s_[k];
    if (!digits) {
      i_ = start;
      fail("a number");
    }
    PyValue v;
    if (is_float) {
      if (!parse_double(text)) {
        i_ = start;
        fail("a number");
      }
      v.kind = PyValue::Kind::kFloat;
    } else {
      if (!parse_int64(text)) {
        i_ = start;
        fail("an integer that fits in 64 bits");
      }
      v.kind = PyValue::Kind::kInt;
      if (text.front() == '+') text.erase(0, 1);
    }
    v.text = std::move(text);
    return v;
  }

  uint32_t hex_digits(int count) {
    uint32_t cp = 0;
    for (int k = 0; k < count; ++k) {
      const char c = peek();
      uint32_t d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail(std::to_string(count) + " hex digits in an escape");
      cp = cp * 16 + d;
      ++i_;
    }
    return cp;
  }

  void put(std::string& out, uint32_t cp, size_t escape_start) {
    if (!append_utf8(out, cp)) {
      i_ = escape_start;
      fail("an escape naming a Unicode scalar value (not a surrogate, at most U+10FFFF)");
    }
  }

  PyValue string_literal() {
    const char quote = s_[i_];
    const size_t open = i_;
    ++i_;
    PyValue v;
    v.kind = PyValue::Kind::kString;
    std::string& out = v.text;
    while (true) {
      if (at_end()) {
        i_ = open;
        fail(std::string("a closing ") + quote + " for the string opened here");
      }
      const char c = s_[i_];
      if (c == quote) {
        ++i_;
        return v;
      }
      if (c != '\\') {
        out += c;
        ++i_;
        continue;
      }
      const size_t escape_start = i_;
      ++i_;
      if (at_end()) {
        i_ = open;
        fail(std::string("a closing ") + quote + " for the string opened here");
      }
      const char e = s_[i_++];
      switch (e) {
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;  // line continuation
        case 'x': put(out, hex_digits(2), escape_start); break;
        case 'u': put(out, hex_digits(4), escape_start); break;
        case 'U': put(out, hex_digits(8), escape_start); break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && peek() >= '0' && peek() <= '7'; ++k) cp = cp * 8 + (s_[i_++] - '0');
            put(out, cp, escape_start);
          } else {
            // Python keeps unknown escapes as written.
            out += '\\';
            out += e;
          }
      }
    }
  }

  std::string_view s_;
  const std::string& where_;
  size_t i_ = 0;
};

}  // namespace

std::vector<PyValue> parse_python_list(std::string_view text, const std::string& where) {
  return Parser(text, where).list();
}

PyValue parse_python_scalar(std::string_view text, const std::string& where) { return Parser(text, where).single(); }

std::string python_repr(std::string_view utf8) {
  const bool has_single = utf8.find('\'') != std::string_view::npos;
  const bool has_double = utf8.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out;
  out.reserve(utf8.size() + 2);
  out += quote;
  static const char* hex = "0123456789abcdef";
  for (char ch : utf8) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '\\') out += "\\\\";
    else if (ch == quote) (out += '\\') += quote;
    else if (ch == '\n') out += "\\n";
    else if (ch == '\r') out += "\\r";
    else if (ch == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) (((out += "\\x") += hex[c >> 4]) += hex[c & 15]);
    else out += ch;
  }
  out += quote;
  return out;
}

}  // namespace llm4dsr::internal

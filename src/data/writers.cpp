#include "llm4dsr/data/writers.h"

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "internal/python_literal.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;
using internal::python_repr;

namespace {

// The external id as an integer literal that reads back to the same string ("208", "-3"; not
// "007", "+3" or ids beyond int64).
bool is_canonical_int(std::string_view s) {
  std::string_view digits = s;
  if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
  if (digits.empty() || digits.size() > 18) return false;
  if (digits.size() > 1 && digits.front() == '0') return false;
  if (s == "-0") return false;
  for (char c : digits)
    if (c < '0' || c > '9') return false;
  return true;
}

// RFC 4180: quoted when the field holds a comma, a double quote, CR or LF; inner quotes doubled.
std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// Shortest decimal that reads back to the same double; integral values without ".0" (timestamps
// are seconds). Fixed notation unless the magnitude is tiny or huge, like Python's repr.
std::string format_number(double v, std::string_view where) {
  LLM4DSR_CHECK(std::isfinite(v), where << ": timestamp " << v << " is not a finite number");
  if (v == std::floor(v) && std::fabs(v) < 9.0e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[64];
  const double a = std::fabs(v);
  const auto fmt = (a >= 1e-4 && a < 1e16) ? std::chars_format::fixed : std::chars_format::scientific;
  const auto res = std::to_chars(buf, buf + sizeof(buf), v, fmt);
  LLM4DSR_CHECK(res.ec == std::errc(), where << ": could not format timestamp " << v);
  return std::string(buf, res.ptr);
}

std::string where_of(const Sequence& s, const char* split) {
  std::ostringstream os;
  os << split << " sequence of user '" << s.user_id << "'";
  return os.str();
}

template <typename T, typename F>
std::string python_list(const std::vector<T>& values, F&& element) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    out += element(values[i]);
  }
  out += "]";
  return out;
}

std::string csv_item_id(const Catalog& catalog, int64_t id) {
  const std::string& ext = catalog.external_id(id);
  return is_canonical_int(ext) ? ext : python_repr(ext);
}

void append_csv_row(std::string& out, const Sequence& s, const Catalog& catalog, const char* split) {
  const std::string where = where_of(s, split);
  s.validate(catalog.size());
  const std::vector<int64_t>& originals = s.has_labels() ? s.original_items : s.items;
  std::vector<uint8_t> mask = s.labels;
  if (mask.empty()) mask.assign(s.items.size(), 0);

  std::vector<std::string> replaced;
  for (size_t p = 0; p < mask.size(); ++p)
    if (mask[p] != 0) replaced.push_back(catalog.title(originals[p]));

  const auto id_of = [&](int64_t id) { return csv_item_id(catalog, id); };
  out += csv_field(s.user_id);
  out += ',';
  out += csv_field(python_list(s.items, id_of));
  out += ',';
  out += csv_field(python_list(mask, [](uint8_t m) { return std::to_string(static_cast<int>(m)); }));
  out += ',';
  out += csv_field(python_list(s.items, [&](int64_t id) { return python_repr(catalog.title(id)); }));
  out += ',';
  out += csv_field(python_list(replaced, [](const std::string& t) { return python_repr(t); }));
  out += ',';
  out += csv_field(python_list(s.timestamps, [&](double t) { return format_number(t, where); }));
  out += ',';
  out += csv_field(python_list(originals, id_of));
  out += '\n';
}

std::string dump_json(const ordered_json& j, std::string_view what) {
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    LLM4DSR_THROW("cannot write " << what << " as JSON: " << e.what()
                                  << " (titles and ids must be valid UTF-8)");
  }
}

// A token (id) in a tab-separated RecBole file cannot hold tabs or line breaks.
const std::string& recbole_token(const std::string& s, std::string_view what) {
  LLM4DSR_CHECK(s.find_first_of("\t\r\n") == std::string::npos,
                what << " '" << s << "' contains a tab or line break, which a RecBole token cannot hold");
  return s;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return s;
}

void ensure_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  LLM4DSR_CHECK(!ec && fs::is_directory(dir), "cannot create output folder '" << dir << "': " << ec.message());
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& contents) {
  static std::atomic<uint64_t> counter{0};
  // Same folder as the target, so the rename never crosses file systems and is atomic.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  LLM4DSR_CHECK(f != nullptr, "cannot write '" << path << "': creating temporary file '" << tmp
                                               << "' failed: " << std::strerror(errno));
  const size_t written = contents.empty() ? 0 : std::fwrite(contents.data(), 1, contents.size(), f);
  const int write_errno = errno;
  const bool ok = written == contents.size() && std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    LLM4DSR_THROW("cannot write '" << path << "': writing " << contents.size() << " bytes to '" << tmp
                                   << "' failed: " << std::strerror(ok ? errno : write_errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    LLM4DSR_THROW("cannot write '" << path << "': renaming '" << tmp << "' into place failed: " << std::strerror(e));
  }
}

void write_splits_csv(const Splits& splits, const Catalog& catalog, const std::string& dir) {
  ensure_dir(dir);
  const std::pair<const char*, const SequenceSet*> parts[] = {
      {"train", &splits.train}, {"valid", &splits.valid}, {"test", &splits.test}};
  // Build every file first, so a malformed sequence throws before anything is replaced.
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [name, set] : parts) {
    std::string out = "user_id,item_ids,mask,item_titles,replaced_item_titles,timestamp,original_item_ids\n";
    for (const auto& s : *set) {
      LLM4DSR_CHECK(!s.empty(), "cannot write an empty " << name << " sequence (user '" << s.user_id << "')");
      append_csv_row(out, s, catalog, name);
    }
    files.emplace_back((fs::path(dir) / (std::string(name) + ".csv")).string(), std::move(out));
  }
  ordered_json id2name = ordered_json::object();
  for (int64_t id = 1; id <= catalog.size(); ++id) id2name[catalog.external_id(id)] = catalog.title(id);
  files.emplace_back((fs::path(dir) / "id2name.json").string(), dump_json(id2name, "id2name.json"));
  for (const auto& [path, contents] : files) write_file_atomic(path, contents);
}

void write_recbole(const SequenceSet& sequences, const Catalog& catalog, const std::string& dir,
                   const std::string& name) {
  LLM4DSR_CHECK(!name.empty() && name.find('/') == std::string::npos,
                "RecBole dataset name must be a plain file stem, got '" << name << "'");
  ensure_dir(dir);
  std::string inter = "user_id:token\titem_id:token\ttimestamp:float\n";
  for (const auto& s : sequences) {
    s.validate(catalog.size());
    const std::string where = where_of(s, "RecBole");
    const std::string& user = recbole_token(s.user_id, "user id");
    for (int64_t p = 0; p < s.size(); ++p) {
      inter += user;
      inter += '\t';
      inter += recbole_token(catalog.external_id(s.items[p]), "item id");
      inter += '\t';
      inter += s.has_timestamps() ? format_number(s.timestamps[p], where) : std::to_string(s.offset + p);
      inter += '\n';
    }
  }
  bool any_extra = false;
  for (int64_t id = 1; id <= catalog.size() && !any_extra; ++id) any_extra = !catalog.extra(id).empty();
  std::string item = any_extra ? "item_id:token\ttitle:token_seq\textra:token_seq\n" : "item_id:token\ttitle:token_seq\n";
  for (int64_t id = 1; id <= catalog.size(); ++id) {
    item += recbole_token(catalog.external_id(id), "item id");
    item += '\t';
    item += one_line(catalog.title(id));
    if (any_extra) {
      item += '\t';
      item += one_line(catalog.extra(id));
    }
    item += '\n';
  }
  write_file_atomic((fs::path(dir) / (name + ".inter")).string(), inter);
  write_file_atomic((fs::path(dir) / (name + ".item")).string(), item);
}

void write_jsonl(const SequenceSet& sequences, const Catalog& catalog, const std::string& path) {
  // One id type for the whole file: numbers when every external id is an integer literal.
  bool numeric_ids = true;
  for (int64_t id = 1; id <= catalog.size() && numeric_ids; ++id) numeric_ids = is_canonical_int(catalog.external_id(id));
  const auto id_json = [&](int64_t id) -> ordered_json {
    const std::string& ext = catalog.external_id(id);
    if (numeric_ids) return std::stoll(ext);
    return ext;
  };
  std::string out;
  for (const auto& s : sequences) {
    s.validate(catalog.size());
    ordered_json line = ordered_json::object();
    line["user_id"] = s.user_id;
    ordered_json items = ordered_json::array();
    for (int64_t id : s.items) items.push_back(id_json(id));
    line["item_ids"] = std::move(items);
    if (s.has_timestamps()) {
      ordered_json ts = ordered_json::array();
      for (double t : s.timestamps) {
        LLM4DSR_CHECK(std::isfinite(t), "user '" << s.user_id << "': timestamp " << t << " is not a finite number");
        if (t == std::floor(t) && std::fabs(t) < 9.0e15) {
          ts.push_back(static_cast<int64_t>(t));
        } else {
          ts.push_back(t);
        }
      }
      line["timestamps"] = std::move(ts);
    }
    if (s.has_labels()) {
      ordered_json labels = ordered_json::array();
      for (uint8_t l : s.labels) labels.push_back(static_cast<int>(l));
      line["labels"] = std::move(labels);
      ordered_json originals = ordered_json::array();
      for (int64_t id : s.original_items) originals.push_back(id_json(id));
      line["original_item_ids"] = std::move(originals);
    }
    out += dump_json(line, "the sequence of user '" + s.user_id + "'");
    out += '\n';
  }
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) ensure_dir(parent.string());
  write_file_atomic(path, out);
}

}  // namespace llm4dsr

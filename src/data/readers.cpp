#include "llm4dsr/data/readers.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "internal/csv_reader.h"
#include "internal/python_literal.h"
#include "internal/text_io.h"
#include "llm4dsr/data/synthetic.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace fs = std::filesystem;
using internal::LineReader;

namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += separator;
    out += parts[i];
  }
  return out;
}

// Files of a folder, sorted by name, that satisfy `keep`.
template <class Pred>
std::vector<std::string> list_files(const std::string& dir, Pred keep) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (keep(name)) names.push_back(name);
  }
  LLM4DSR_CHECK(!ec, "cannot list folder '" << dir << "': " << ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

void require_folder(const std::string& dir, std::string_view what) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) LLM4DSR_THROW("cannot read " << what << ": folder '" << dir << "' does not exist");
  if (!fs::is_directory(dir, ec)) LLM4DSR_THROW("cannot read " << what << ": '" << dir << "' is not a folder");
}

std::string path_in(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// Collects interactions in file order and turns them into one sequence per user, users in order
// of first appearance, each sorted by time with ties kept in file order.
class UserLog {
 public:
  void add(std::string_view user, int64_t item, double time) {
    auto [it, inserted] = index_.try_emplace(std::string(user), users_.size());
    if (inserted) {
      users_.emplace_back();
      users_.back().user_id = std::string(user);
    }
    Sequence& s = users_[it->second];
    s.items.push_back(item);
    s.timestamps.push_back(time);
  }

  SequenceSet finish(bool timed) {
    for (Sequence& s : users_) {
      if (!timed) {
        s.timestamps.clear();
        continue;
      }
      std::vector<size_t> order(s.items.size());
      std::iota(order.begin(), order.end(), size_t{0});
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return s.timestamps[a] < s.timestamps[b]; });
      std::vector<int64_t> items(order.size());
      std::vector<double> times(order.size());
      for (size_t k = 0; k < order.size(); ++k) {
        items[k] = s.items[order[k]];
        times[k] = s.timestamps[order[k]];
      }
      s.items = std::move(items);
      s.timestamps = std::move(times);
    }
    return std::move(users_);
  }

  bool empty() const { return users_.empty(); }

 private:
  std::unordered_map<std::string, size_t> index_;
  SequenceSet users_;
};

// ----------------------------------------------------------------------------------------------
// JSON

// Parses a UTF-8 JSON file; when `top_keys` is given, also records the top-level object's keys in
// file order (nlohmann::ordered_json would keep the order too, but inserts in O(n) per key). A key
// that appears twice at the top level is an error (nlohmann keeps the last one silently).
nlohmann::json parse_json(const std::string& text, const std::string& path, std::vector<std::string>* top_keys) {
  LLM4DSR_CHECK(!internal::is_blank(text), path << ": empty file (expected a JSON object)");
  internal::check_utf8(text, path);
  std::vector<std::string> local_keys;
  if (!top_keys) top_keys = &local_keys;
  nlohmann::json::parser_callback_t callback = [top_keys](int depth, nlohmann::json::parse_event_t event,
                                                          nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key)
      top_keys->push_back(parsed.get<std::string>());
    return true;
  };
  try {
    nlohmann::json j = nlohmann::json::parse(text, callback);
    if (j.is_object() && top_keys->size() != j.size()) {
      std::unordered_map<std::string, int> seen;
      for (const auto& key : *top_keys)
        if (++seen[key] == 2) LLM4DSR_THROW(path << ": key \"" << key << "\" appears more than once");
    }
    return j;
  } catch (const nlohmann::json::parse_error& e) {
    const size_t byte = e.byte > 0 ? e.byte - 1 : 0;
    LLM4DSR_THROW(path << ":" << internal::line_of_offset(text, byte) << ": invalid JSON: " << e.what());
  }
}

std::optional<int64_t> json_int(const nlohmann::json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();  // covers number_unsigned too
  return std::nullopt;
}

std::string json_type(const nlohmann::json& v) { return v.type_name(); }

// ----------------------------------------------------------------------------------------------
// RecBole atomic files

struct AtomicHeader {
  std::vector<std::string> names;
  std::vector<std::string> types;
  int find(std::string_view name) const {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return static_cast<int>(i);
    return -1;
  }
  std::string listing() const {
    std::vector<std::string> fields;
    for (size_t i = 0; i < names.size(); ++i) fields.push_back(names[i] + ":" + types[i]);
    return join(fields, ", ");
  }
};

AtomicHeader parse_atomic_header(std::string_view line, const std::string& path, int64_t line_number) {
  AtomicHeader header;
  for (std::string_view raw : internal::split(line, '\t')) {
    const std::string_view field = internal::trim(raw);
    const size_t colon = field.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
      LLM4DSR_THROW(path << ":" << line_number << ": header field '" << field
                         << "' has no type suffix (RecBole headers are NAME:TYPE, e.g. user_id:token)");
    const std::string type(field.substr(colon + 1));
    if (type != "token" && type != "token_seq" && type != "float" && type != "float_seq")
      LLM4DSR_THROW(path << ":" << line_number << ": header field '" << field << "' has type '" << type
                         << "' (expected token, token_seq, float or float_seq)");
    std::string name(field.substr(0, colon));
    if (header.find(name) >= 0)
      LLM4DSR_THROW(path << ":" << line_number << ": header names field '" << name << "' twice");
    header.names.push_back(std::move(name));
    header.types.push_back(type);
  }
  return header;
}

int require_column(const AtomicHeader& header, std::string_view name, std::string_view type, const std::string& path,
                   int64_t line_number) {
  const int col = header.find(name);
  if (col < 0)
    LLM4DSR_THROW(path << ":" << line_number << ": header has no '" << name << "' column (found: "
                       << header.listing() << ")");
  if (header.types[col] != type)
    LLM4DSR_THROW(path << ":" << line_number << ": column '" << name << "' has type '" << header.types[col]
                       << "' (expected " << name << ":" << type << ")");
  return col;
}

// Reads the header line of an atomic file; throws for an empty file.
AtomicHeader read_atomic_header(LineReader& lines, const std::string& path) {
  std::string_view line;
  while (lines.next(line))
    if (!internal::is_blank(line)) return parse_atomic_header(line, path, lines.line_number());
  LLM4DSR_THROW(path << ": empty file (expected a header line such as 'user_id:token<TAB>item_id:token')");
}

std::vector<std::string_view> split_row(std::string_view line, const AtomicHeader& header, const std::string& path,
                                        int64_t line_number) {
  std::vector<std::string_view> fields = internal::split(line, '\t');
  if (fields.size() < header.names.size())
    LLM4DSR_THROW(path << ":" << line_number << ": truncated line: expected " << header.names.size()
                       << " tab-separated fields as in the header, found " << fields.size());
  if (fields.size() > header.names.size())
    LLM4DSR_THROW(path << ":" << line_number << ": expected " << header.names.size()
                       << " tab-separated fields as in the header, found " << fields.size());
  return fields;
}

void read_recbole_items(const std::string& path, const ReadOptions& options, Catalog& catalog) {
  const std::string text = internal::read_file(path, "the RecBole item file");
  internal::check_utf8(text, path);
  LineReader lines(text);
  const AtomicHeader header = read_atomic_header(lines, path);
  const int64_t header_line = lines.line_number();
  const int id_col = require_column(header, "item_id", "token", path, header_line);
  int title_col = -1;
  if (!options.title_field.empty()) {
    title_col = header.find(options.title_field);
    if (title_col < 0)
      LLM4DSR_THROW(path << ":" << header_line << ": no column '" << options.title_field
                         << "' for titles (ReadOptions::title_field); found: " << header.listing());
  } else {
    for (const char* name : {"movie_title", "title", "name", "item_name"})
      if ((title_col = header.find(name)) >= 0) break;
  }
  int extra_col = -1;
  if (!options.extra_field.empty()) {
    extra_col = header.find(options.extra_field);
    if (extra_col < 0)
      LLM4DSR_THROW(path << ":" << header_line << ": no column '" << options.extra_field
                         << "' for extra text (ReadOptions::extra_field); found: " << header.listing());
  }
  std::string_view line;
  while (lines.next(line)) {
    if (internal::is_blank(line)) continue;
    const auto fields = split_row(line, header, path, lines.line_number());
    const std::string_view external = internal::trim(fields[id_col]);
    if (external.empty()) LLM4DSR_THROW(path << ":" << lines.line_number() << ": empty item_id");
    if (catalog.contains(external))
      LLM4DSR_THROW(path << ":" << lines.line_number() << ": item_id '" << external << "' is listed twice");
    const int64_t id = catalog.add(external);
    if (title_col >= 0) catalog.set_title(id, std::string(internal::trim(fields[title_col])));
    if (extra_col >= 0) catalog.set_extra(id, std::string(internal::trim(fields[extra_col])));
  }
}

// ----------------------------------------------------------------------------------------------
// MovieLens-100K

const char* const kMovieLensGenres[19] = {
    "unknown", "Action",   "Adventure", "Animation", "Children's", "Comedy",  "Crime",
    "Documentary", "Drama", "Fantasy",  "Film-Noir", "Horror",     "Musical", "Mystery",
    "Romance", "Sci-Fi",   "Thriller",  "War",       "Western"};

std::string canonical_int(std::string_view field, const std::string& path, int64_t line_number, const char* what) {
  const auto value = internal::parse_int64(field);
  if (!value)
    LLM4DSR_THROW(path << ":" << line_number << ": " << what << " '" << field << "' is not an integer");
  return std::to_string(*value);
}

// ----------------------------------------------------------------------------------------------
// LLM4DSR CSV

// Finds the single file `prefix*.csv` in dir.
std::string find_split_file(const std::string& dir, const std::string& prefix) {
  const auto names = list_files(dir, [&](const std::string& n) { return starts_with(n, prefix) && ends_with(n, ".csv"); });
  if (names.empty())
    LLM4DSR_THROW("no " << prefix << "*.csv in '" << dir
                        << "' (an LLM4DSR CSV folder holds train*.csv, valid*.csv, test*.csv and id2name.json)");
  if (names.size() > 1)
    LLM4DSR_THROW("more than one " << prefix << "*.csv in '" << dir << "': " << join(names, ", ")
                                   << " (expected exactly one)");
  return path_in(dir, names[0]);
}

struct CsvCatalog {
  Catalog& catalog;
  std::unordered_map<std::string, int64_t> first_by_title;

  int64_t add(const std::string& external, const std::string* title) {
    if (auto id = catalog.find(external)) return *id;
    const int64_t id = catalog.add(external);
    if (title && !title->empty()) {
      catalog.set_title(id, *title);
      first_by_title.emplace(*title, id);
    }
    return id;
  }
};

std::string csv_item_id(const internal::PyValue& v, const std::string& where, size_t position) {
  if (v.kind == internal::PyValue::Kind::kFloat)
    LLM4DSR_THROW(where << ": position " << position << ": item id " << v.text << " is a float (expected an int or a string)");
  return v.text;
}

SequenceSet read_csv_split(const std::string& path, CsvCatalog& items) {
  using internal::PyValue;
  const std::string text = internal::read_file(path, "the LLM4DSR CSV split");
  LLM4DSR_CHECK(!internal::is_blank(text), path << ": empty file (expected a header line "
                                                << "'user_id,item_ids,mask,item_titles,replaced_item_titles,timestamp')");
  internal::check_utf8(text, path);
  const std::vector<internal::CsvRecord> records = internal::parse_csv(text, path);
  const internal::CsvRecord& header = records.front();
  for (size_t i = 0; i < header.fields.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      LLM4DSR_CHECK(internal::trim(header.fields[i]) != internal::trim(header.fields[k]),
                    path << ":" << header.line << ": column '" << internal::trim(header.fields[i])
                         << "' appears twice in the header");
  auto column = [&](const char* name) -> int {
    for (size_t i = 0; i < header.fields.size(); ++i)
      if (internal::trim(header.fields[i]) == name) return static_cast<int>(i);
    return -1;
  };
  const int user_col = column("user_id"), items_col = column("item_ids"), mask_col = column("mask"),
            titles_col = column("item_titles"), replaced_col = column("replaced_item_titles"),
            time_col = column("timestamp"), originals_col = column("original_item_ids");
  for (auto [col, name] : {std::pair{user_col, "user_id"}, std::pair{items_col, "item_ids"}})
    if (col < 0)
      LLM4DSR_THROW(path << ":" << header.line << ": header has no '" << name << "' column (found: "
                         << join(header.fields, ", ") << ")");

  SequenceSet out;
  out.reserve(records.size() - 1);
  for (size_t r = 1; r < records.size(); ++r) {
    const internal::CsvRecord& rec = records[r];
    const std::string at = path + ":" + std::to_string(rec.line);
    if (rec.fields.size() < header.fields.size())
      LLM4DSR_THROW(at << ": truncated line: expected " << header.fields.size() << " fields as in the header, found "
                       << rec.fields.size());
    if (rec.fields.size() > header.fields.size())
      LLM4DSR_THROW(at << ": expected " << header.fields.size() << " fields as in the header, found "
                       << rec.fields.size());
    auto where = [&](const char* name) { return at + ", column " + name; };

    Sequence s;
    s.user_id = rec.fields[user_col];
    LLM4DSR_CHECK(!internal::trim(s.user_id).empty(), where("user_id") << ": empty user id");
    const auto ids = internal::parse_python_list(rec.fields[items_col], where("item_ids"));
    if (ids.empty()) LLM4DSR_THROW(where("item_ids") << ": empty window (expected at least the target item)");
    const size_t n = ids.size();

    std::vector<PyValue> titles;
    if (titles_col >= 0) {
      titles = internal::parse_python_list(rec.fields[titles_col], where("item_titles"));
      if (titles.size() != n)
        LLM4DSR_THROW(where("item_titles") << ": " << titles.size() << " titles for " << n << " item ids");
      for (size_t p = 0; p < n; ++p)
        if (titles[p].kind != PyValue::Kind::kString)
          LLM4DSR_THROW(where("item_titles") << ": position " << p << ": expected a string, found " << titles[p].text);
    }
    for (size_t p = 0; p < n; ++p)
      s.items.push_back(items.add(csv_item_id(ids[p], where("item_ids"), p), titles.empty() ? nullptr : &titles[p].text));

    if (mask_col >= 0) {
      const auto mask = internal::parse_python_list(rec.fields[mask_col], where("mask"));
      if (mask.size() != n) LLM4DSR_THROW(where("mask") << ": " << mask.size() << " labels for " << n << " item ids");
      for (size_t p = 0; p < n; ++p) {
        if (mask[p].kind != PyValue::Kind::kInt || (mask[p].text != "0" && mask[p].text != "1" && mask[p].text != "2"))
          LLM4DSR_THROW(where("mask") << ": position " << p << ": label " << mask[p].text << " (expected 0, 1 or 2)");
        s.labels.push_back(static_cast<uint8_t>(mask[p].text[0] - '0'));
      }
    }

    if (s.has_labels()) {
      std::vector<size_t> noisy;
      for (size_t p = 0; p < n; ++p)
        if (s.labels[p] != 0) noisy.push_back(p);
      std::vector<PyValue> replaced;
      if (replaced_col >= 0) {
        replaced = internal::parse_python_list(rec.fields[replaced_col], where("replaced_item_titles"));
        if (replaced.size() != noisy.size())
          LLM4DSR_THROW(where("replaced_item_titles") << ": " << replaced.size() << " titles for " << noisy.size()
                                                      << " positions with mask != 0");
        for (const PyValue& v : replaced)
          if (v.kind != PyValue::Kind::kString)
            LLM4DSR_THROW(where("replaced_item_titles") << ": expected strings, found " << v.text);
      }
      const bool have_originals = originals_col >= 0 && !internal::is_blank(rec.fields[originals_col]);
      if (have_originals) {
        const auto originals = internal::parse_python_list(rec.fields[originals_col], where("original_item_ids"));
        if (originals.size() != n)
          LLM4DSR_THROW(where("original_item_ids") << ": " << originals.size() << " ids for " << n << " item ids");
        size_t k = 0;
        for (size_t p = 0; p < n; ++p) {
          const std::string* title = nullptr;
          if (s.labels[p] != 0) {
            if (!replaced.empty()) title = &replaced[k].text;
            ++k;
          }
          const int64_t original = items.add(csv_item_id(originals[p], where("original_item_ids"), p), title);
          if (s.labels[p] == 0 && original != s.items[p])
            LLM4DSR_THROW(where("original_item_ids") << ": position " << p << " has mask 0 but original item '"
                                                     << originals[p].text << "' differs from item '"
                                                     << ids[p].text << "'");
          s.original_items.push_back(original);
        }
      } else {
        s.original_items = s.items;
        if (!noisy.empty() && replaced_col < 0)
          LLM4DSR_THROW(at << ": positions with mask != 0 but neither a replaced_item_titles nor an "
                              "original_item_ids column to recover the original items from");
        for (size_t k = 0; k < noisy.size(); ++k) {
          auto it = items.first_by_title.find(replaced[k].text);
          if (it == items.first_by_title.end())
            LLM4DSR_THROW(where("replaced_item_titles") << ": title \"" << replaced[k].text << "\" (position "
                                                        << noisy[k] << ") is not the title of any known item");
          s.original_items[noisy[k]] = it->second;
        }
      }
    }

    if (time_col >= 0) {
      const std::string_view field = internal::trim(rec.fields[time_col]);
      if (!field.empty() && field.front() == '[') {
        const auto times = internal::parse_python_list(field, where("timestamp"));
        if (!times.empty()) {
          if (times.size() != n)
            LLM4DSR_THROW(where("timestamp") << ": " << times.size() << " timestamps for " << n << " item ids");
          for (size_t p = 0; p < n; ++p) {
            const auto t = times[p].kind == PyValue::Kind::kString ? std::nullopt : internal::parse_double(times[p].text);
            if (!t) LLM4DSR_THROW(where("timestamp") << ": position " << p << ": '" << times[p].text << "' is not a number");
            s.timestamps.push_back(*t);
          }
        }
      } else if (!field.empty() && !internal::parse_double(field)) {
        LLM4DSR_THROW(where("timestamp") << ": '" << field << "' is not a number or a list of numbers");
      }
      // A scalar is the target's timestamp only: it cannot fill the history's, so it is dropped.
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------

std::string to_string(DataFormat format) {
  switch (format) {
    case DataFormat::kAuto: return "auto";
    case DataFormat::kRecBole: return "recbole";
    case DataFormat::kMovieLens: return "movielens";
    case DataFormat::kAmazonJson: return "amazon-json";
    case DataFormat::kLlm4dsrCsv: return "llm4dsr-csv";
    case DataFormat::kSynthetic: return "synthetic";
  }
  LLM4DSR_THROW("unknown DataFormat value " << static_cast<int>(format));
}

DataFormat parse_data_format(std::string_view name) {
  for (DataFormat f : {DataFormat::kAuto, DataFormat::kRecBole, DataFormat::kMovieLens, DataFormat::kAmazonJson,
                       DataFormat::kLlm4dsrCsv, DataFormat::kSynthetic})
    if (name == to_string(f)) return f;
  LLM4DSR_THROW("unknown data format '" << name
                                         << "' (expected auto, recbole, movielens, amazon-json, llm4dsr-csv or synthetic)");
}

DataFormat detect_format(const std::string& path) {
  std::error_code ec;
  const bool exists = fs::exists(path, ec);
  if (!exists && (path == "synthetic" || starts_with(path, "synthetic:"))) return DataFormat::kSynthetic;
  if (!exists)
    LLM4DSR_THROW("no such file or folder '" << path << "' (expected a dataset file or folder, or 'synthetic[:...]')");
  const char* looked_for =
      "*.inter (RecBole), u.data (MovieLens-100K), id_map.json (Amazon JSON), train*.csv + id2name.json "
      "(LLM4DSR CSV)";
  if (fs::is_directory(path, ec)) {
    if (!list_files(path, [](const std::string& n) { return ends_with(n, ".inter"); }).empty())
      return DataFormat::kRecBole;
    if (fs::is_regular_file(path_in(path, "u.data"), ec)) return DataFormat::kMovieLens;
    if (fs::is_regular_file(path_in(path, "id_map.json"), ec)) return DataFormat::kAmazonJson;
    if (!list_files(path, [](const std::string& n) { return starts_with(n, "train") && ends_with(n, ".csv"); }).empty())
      return DataFormat::kLlm4dsrCsv;
    LLM4DSR_THROW("cannot tell the format of folder '" << path << "': found none of " << looked_for);
  }
  const fs::path p(path);
  const std::string name = p.filename().string();
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  if (ends_with(name, ".inter") || ends_with(name, ".item")) return DataFormat::kRecBole;
  if (name == "u.data" || name == "u.item") return DataFormat::kMovieLens;
  if (ends_with(name, ".csv") && (starts_with(name, "train") || starts_with(name, "valid") || starts_with(name, "test")))
    return DataFormat::kLlm4dsrCsv;
  if (ends_with(name, ".json")) {
    if (fs::is_regular_file(path_in(dir, "id_map.json"), ec)) return DataFormat::kAmazonJson;
    if (name == "id2name.json") return DataFormat::kLlm4dsrCsv;
  }
  LLM4DSR_THROW("cannot tell the format of file '" << path << "': expected one of " << looked_for);
}

Dataset read_dataset(const std::string& path, const ReadOptions& options) {
  const DataFormat format = options.format == DataFormat::kAuto ? detect_format(path) : options.format;
  std::error_code ec;
  const bool is_file = fs::is_regular_file(path, ec);
  const std::string parent = fs::path(path).has_parent_path() ? fs::path(path).parent_path().string() : ".";
  switch (format) {
    case DataFormat::kRecBole: return read_recbole(path, options);
    case DataFormat::kMovieLens: return read_movielens(is_file ? parent : path);
    case DataFormat::kAmazonJson: {
      if (!is_file) return read_amazon_json(path, options);
      // A file names the sequences file, unless it is one of the two maps.
      ReadOptions o = options;
      const std::string name = fs::path(path).filename().string();
      if (name != "id_map.json" && name != "title_map.json") o.sequences_file = name;
      return read_amazon_json(parent, o);
    }
    case DataFormat::kLlm4dsrCsv: return read_llm4dsr_csv(is_file ? parent : path);
    case DataFormat::kSynthetic: return make_synthetic(parse_synthetic_spec(path));
    case DataFormat::kAuto: break;
  }
  LLM4DSR_THROW("read_dataset: no reader for format " << to_string(format));
}

Dataset read_recbole(const std::string& path, const ReadOptions& options) {
  std::error_code ec;
  fs::path inter(path);
  if (fs::is_directory(inter, ec)) {
    const auto names = list_files(path, [](const std::string& n) { return ends_with(n, ".inter"); });
    if (names.empty()) LLM4DSR_THROW("no .inter file in folder '" << path << "' (expected a RecBole NAME.inter)");
    if (names.size() > 1)
      LLM4DSR_THROW("more than one .inter file in folder '" << path << "': " << join(names, ", ")
                                                            << "; pass the one to read");
    inter /= names[0];
  } else if (inter.extension() == ".item") {
    inter.replace_extension(".inter");
  }
  const std::string inter_path = inter.string();
  fs::path item = inter;
  item.replace_extension(".item");

  Dataset dataset;
  dataset.name = inter.stem().string();
  dataset.format = "recbole";
  if (fs::is_regular_file(item, ec)) read_recbole_items(item.string(), options, dataset.catalog);

  const std::string text = internal::read_file(inter_path, "the RecBole interaction file");
  internal::check_utf8(text, inter_path);
  LineReader lines(text);
  const AtomicHeader header = read_atomic_header(lines, inter_path);
  const int64_t header_line = lines.line_number();
  const int user_col = require_column(header, "user_id", "token", inter_path, header_line);
  const int item_col = require_column(header, "item_id", "token", inter_path, header_line);
  const int time_col = header.find("timestamp") >= 0
                           ? require_column(header, "timestamp", "float", inter_path, header_line)
                           : -1;
  UserLog log;
  std::string_view line;
  while (lines.next(line)) {
    if (internal::is_blank(line)) continue;
    const auto fields = split_row(line, header, inter_path, lines.line_number());
    const std::string_view user = internal::trim(fields[user_col]);
    const std::string_view external = internal::trim(fields[item_col]);
    if (user.empty()) LLM4DSR_THROW(inter_path << ":" << lines.line_number() << ": empty user_id");
    if (external.empty()) LLM4DSR_THROW(inter_path << ":" << lines.line_number() << ": empty item_id");
    double time = 0.0;
    if (time_col >= 0) {
      const auto t = internal::parse_double(fields[time_col]);
      if (!t)
        LLM4DSR_THROW(inter_path << ":" << lines.line_number() << ": timestamp '" << fields[time_col]
                                 << "' is not a number");
      time = *t;
    }
    const int64_t id = dataset.catalog.add(external);
    dataset.catalog.add_popularity(id);
    log.add(user, id, time);
  }
  LLM4DSR_CHECK(!log.empty(), inter_path << ": no interactions after the header");
  dataset.has_timestamps = time_col >= 0;
  dataset.users = log.finish(dataset.has_timestamps);
  return dataset;
}

Dataset read_movielens(const std::string& dir) {
  require_folder(dir, "MovieLens-100K");
  const std::string item_path = path_in(dir, "u.item"), data_path = path_in(dir, "u.data");
  Dataset dataset;
  dataset.name = internal::base_name(dir);
  dataset.format = "movielens";

  // GroupLens ship u.item in Latin-1; a copy that was already converted to UTF-8 is taken as is
  // (Latin-1 text with accents is practically never valid UTF-8).
  std::string raw = internal::read_file(item_path, "the MovieLens item file (u.item)");
  const std::string items_text = internal::find_invalid_utf8(raw) ? internal::latin1_to_utf8(raw) : std::move(raw);
  LLM4DSR_CHECK(!internal::is_blank(items_text), item_path << ": empty file (expected one pipe-separated line per movie)");
  LineReader lines(items_text);
  std::string_view line;
  while (lines.next(line)) {
    if (internal::is_blank(line)) continue;
    const int64_t ln = lines.line_number();
    const auto fields = internal::split(line, '|');
    if (fields.size() < 24)
      LLM4DSR_THROW(item_path << ":" << ln << ": truncated line: expected 24 '|'-separated fields (id, title, "
                                            "release date, video date, URL, 19 genre flags), found "
                              << fields.size());
    const std::string external = canonical_int(fields[0], item_path, ln, "movie id");
    if (dataset.catalog.contains(external))
      LLM4DSR_THROW(item_path << ":" << ln << ": movie id " << external << " is listed twice");
    const int64_t id = dataset.catalog.add(external);
    dataset.catalog.set_title(id, std::string(internal::trim(fields[1])));
    std::vector<std::string> genres;
    for (int g = 0; g < 19; ++g) {
      const std::string_view flag = internal::trim(fields[5 + g]);
      if (flag == "1") genres.emplace_back(kMovieLensGenres[g]);
      else if (flag != "0")
        LLM4DSR_THROW(item_path << ":" << ln << ": genre flag " << (g + 1) << " (" << kMovieLensGenres[g] << ") is '"
                                << flag << "' (expected 0 or 1)");
    }
    dataset.catalog.set_extra(id, join(genres, ", "));
  }

  const std::string text = internal::read_file(data_path, "the MovieLens rating file (u.data)");
  LLM4DSR_CHECK(!internal::is_blank(text), data_path << ": empty file (expected user<TAB>item<TAB>rating<TAB>time lines)");
  LineReader data_lines(text);
  UserLog log;
  while (data_lines.next(line)) {
    if (internal::is_blank(line)) continue;
    const int64_t ln = data_lines.line_number();
    const auto fields = internal::split(line, '\t');
    if (fields.size() < 4)
      LLM4DSR_THROW(data_path << ":" << ln << ": truncated line: expected 4 tab-separated fields "
                                            "(user, item, rating, timestamp), found " << fields.size());
    const std::string user = canonical_int(fields[0], data_path, ln, "user id");
    const std::string external = canonical_int(fields[1], data_path, ln, "item id");
    const auto time = internal::parse_double(fields[3]);
    if (!time) LLM4DSR_THROW(data_path << ":" << ln << ": timestamp '" << fields[3] << "' is not a number");
    const int64_t id = dataset.catalog.add(external);
    dataset.catalog.add_popularity(id);
    log.add(user, id, *time);
  }
  LLM4DSR_CHECK(!log.empty(), data_path << ": no ratings");
  dataset.has_timestamps = true;
  dataset.users = log.finish(true);
  return dataset;
}

Dataset read_amazon_json(const std::string& dir, const ReadOptions& options) {
  require_folder(dir, "Amazon JSON");
  const std::string id_map_path = path_in(dir, "id_map.json"), title_map_path = path_in(dir, "title_map.json");
  std::string sequences_path;
  if (!options.sequences_file.empty()) {
    sequences_path = fs::path(options.sequences_file).is_absolute() ? options.sequences_file
                                                                    : path_in(dir, options.sequences_file);
  } else {
    const auto names = list_files(dir, [](const std::string& n) {
      return ends_with(n, ".json") && n != "id_map.json" && n != "title_map.json";
    });
    if (names.empty())
      LLM4DSR_THROW("no sequences file in '" << dir << "': expected one *.json besides id_map.json and title_map.json "
                                             << "(e.g. gru_item_list.json)");
    if (names.size() > 1)
      LLM4DSR_THROW("more than one candidate sequences file in '" << dir << "': " << join(names, ", ")
                                                                  << "; set ReadOptions::sequences_file");
    sequences_path = path_in(dir, names[0]);
  }

  Dataset dataset;
  dataset.name = internal::base_name(dir);
  dataset.format = "amazon-json";

  // id_map.json: ASIN -> int id. The catalogue follows the ids, so ids 1..N map to themselves.
  const nlohmann::json id_map = parse_json(internal::read_file(id_map_path, "the Amazon id map"), id_map_path, nullptr);
  LLM4DSR_CHECK(id_map.is_object(), id_map_path << ": expected a JSON object {\"ASIN\": id, ...}, found "
                                                << json_type(id_map));
  std::vector<std::pair<int64_t, std::string>> by_id;
  by_id.reserve(id_map.size());
  for (auto it = id_map.begin(); it != id_map.end(); ++it) {
    const auto v = json_int(it.value());
    if (!v)
      LLM4DSR_THROW(id_map_path << ": key \"" << it.key() << "\": expected an integer id, found "
                                << json_type(it.value()) << " " << it.value().dump());
    by_id.emplace_back(*v, it.key());
  }
  std::sort(by_id.begin(), by_id.end());
  std::unordered_map<std::string, int64_t> asin_to_id;
  asin_to_id.reserve(by_id.size());
  for (size_t k = 0; k < by_id.size(); ++k) {
    if (k > 0 && by_id[k].first == by_id[k - 1].first)
      LLM4DSR_THROW(id_map_path << ": keys \"" << by_id[k - 1].second << "\" and \"" << by_id[k].second
                                << "\" both map to id " << by_id[k].first);
    asin_to_id.emplace(by_id[k].second, dataset.catalog.add(std::to_string(by_id[k].first)));
  }
  LLM4DSR_CHECK(dataset.catalog.size() > 0, id_map_path << ": no items");

  const nlohmann::json title_map =
      parse_json(internal::read_file(title_map_path, "the Amazon title map"), title_map_path, nullptr);
  LLM4DSR_CHECK(title_map.is_object(), title_map_path << ": expected a JSON object {\"ASIN\": \"title\", ...}, found "
                                                      << json_type(title_map));
  for (auto it = title_map.begin(); it != title_map.end(); ++it) {
    auto found = asin_to_id.find(it.key());
    if (found == asin_to_id.end())
      LLM4DSR_THROW(title_map_path << ": key \"" << it.key() << "\" is not in " << id_map_path);
    if (it.value().is_null()) continue;
    if (!it.value().is_string())
      LLM4DSR_THROW(title_map_path << ": key \"" << it.key() << "\": expected a title string, found "
                                   << json_type(it.value()));
    dataset.catalog.set_title(found->second, std::string(internal::trim(it.value().get_ref<const std::string&>())));
  }

  std::vector<std::string> users;
  const nlohmann::json sequences =
      parse_json(internal::read_file(sequences_path, "the Amazon sequences file"), sequences_path, &users);
  LLM4DSR_CHECK(sequences.is_object(), sequences_path << ": expected a JSON object {\"user\": [item ids], ...}, found "
                                                      << json_type(sequences));
  LLM4DSR_CHECK(!users.empty(), sequences_path << ": no users");
  dataset.users.reserve(users.size());
  for (const std::string& user : users) {
    const nlohmann::json& list = sequences.at(user);
    if (!list.is_array())
      LLM4DSR_THROW(sequences_path << ": key \"" << user << "\": expected a list of item ids, found "
                                   << json_type(list));
    if (list.empty()) LLM4DSR_THROW(sequences_path << ": key \"" << user << "\": empty sequence");
    Sequence s;
    s.user_id = user;
    s.items.reserve(list.size());
    for (size_t k = 0; k < list.size(); ++k) {
      const auto v = json_int(list[k]);
      if (!v)
        LLM4DSR_THROW(sequences_path << ": key \"" << user << "\", index " << k << ": expected an integer item id, found "
                                     << json_type(list[k]) << " " << list[k].dump());
      const auto id = dataset.catalog.find(std::to_string(*v));
      if (!id)
        LLM4DSR_THROW(sequences_path << ": key \"" << user << "\", index " << k << ": item id " << *v
                                     << " is not in " << id_map_path);
      dataset.catalog.add_popularity(*id);
      s.items.push_back(*id);
    }
    dataset.users.push_back(std::move(s));
  }
  return dataset;
}

namespace {

// LLM4DSR CSV rows carry no positions, but the user unit (user_chunks) lays each user's windows on one
// sequence by Sequence::offset. Each user's windows (train, valid, test, each in file order, which is
// target-time order) are placed in turn: a sliding window where it ends one item after the items
// placed so far, if its items agree with those already there; otherwise at the first place from the
// previous window's on where they agree; otherwise after everything placed (a gap).
void infer_window_offsets(Splits& splits) {
  std::unordered_map<std::string, std::pair<std::vector<int64_t>, int64_t>> users;  // placed items, last offset
  for (SequenceSet* split : {&splits.train, &splits.valid, &splits.test}) {
    for (Sequence& w : *split) {
      auto& [placed, previous] = users[w.user_id];
      const auto placed_n = static_cast<int64_t>(placed.size()), n = w.size();
      auto agrees = [&](int64_t o) {
        for (int64_t j = 0; j < n && o + j < placed_n; ++j)
          if (placed[static_cast<size_t>(o + j)] != w.items[static_cast<size_t>(j)]) return false;
        return true;
      };
      int64_t offset = placed_n + 1 - n;
      if (offset < previous || !agrees(offset)) {
        offset = previous;
        while (offset < placed_n && !agrees(offset)) ++offset;
      }
      w.offset = offset;
      previous = offset;
      for (int64_t j = placed_n - offset; j < n; ++j) placed.push_back(w.items[static_cast<size_t>(j)]);
    }
  }
}

}  // namespace

Dataset read_llm4dsr_csv(const std::string& dir) {
  require_folder(dir, "LLM4DSR CSV windows");
  const std::string train = find_split_file(dir, "train"), valid = find_split_file(dir, "valid"),
                    test = find_split_file(dir, "test");
  const std::string names_path = path_in(dir, "id2name.json");

  Dataset dataset;
  dataset.name = internal::base_name(dir);
  dataset.format = "llm4dsr-csv";
  CsvCatalog items{dataset.catalog, {}};

  std::vector<std::string> keys;
  const nlohmann::json names = parse_json(internal::read_file(names_path, "the LLM4DSR title map"), names_path, &keys);
  LLM4DSR_CHECK(names.is_object(), names_path << ": expected a JSON object {\"item id\": \"title\", ...}, found "
                                              << json_type(names));
  for (const std::string& key : keys) {
    const nlohmann::json& v = names.at(key);
    if (v.is_null()) {
      items.add(key, nullptr);
      continue;
    }
    if (!v.is_string())
      LLM4DSR_THROW(names_path << ": key \"" << key << "\": expected a title string, found " << json_type(v));
    items.add(key, &v.get_ref<const std::string&>());
  }

  Splits splits;
  splits.protocol = SplitProtocol::kWindows;
  splits.train = read_csv_split(train, items);
  splits.valid = read_csv_split(valid, items);
  splits.test = read_csv_split(test, items);
  infer_window_offsets(splits);
  for (const SequenceSet* split : {&splits.train, &splits.valid, &splits.test})
    for (const Sequence& s : *split) dataset.has_timestamps = dataset.has_timestamps || s.has_timestamps();
  dataset.splits = std::move(splits);
  dataset.recount_popularity();
  return dataset;
}

}  // namespace llm4dsr

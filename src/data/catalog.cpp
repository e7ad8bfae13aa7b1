#include "llm4dsr/data/catalog.h"

#include "llm4dsr/error.h"

namespace llm4dsr {

Catalog::Catalog() : external_ids_(1), titles_(1), extras_(1), popularity_(1, 0) {}

int64_t Catalog::add(std::string_view external_id) {
  std::string key(external_id);
  if (auto it = index_.find(key); it != index_.end()) return it->second;
  const int64_t id = static_cast<int64_t>(external_ids_.size());
  external_ids_.push_back(key);
  titles_.emplace_back();
  extras_.emplace_back();
  popularity_.push_back(0);
  index_.emplace(std::move(key), id);
  return id;
}

bool Catalog::contains(std::string_view external_id) const { return index_.count(std::string(external_id)) > 0; }

std::optional<int64_t> Catalog::find(std::string_view external_id) const {
  auto it = index_.find(std::string(external_id));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

int64_t Catalog::id(std::string_view external_id) const {
  auto found = find(external_id);
  LLM4DSR_CHECK(found.has_value(), "unknown item id '" << external_id << "' (the catalogue has " << size() << " items)");
  return *found;
}

void Catalog::check_id(int64_t id, std::string_view what) const {
  LLM4DSR_CHECK(id >= 1 && id <= size(), what << " " << id << " is out of range: valid internal ids are 1.." << size());
}

const std::string& Catalog::external_id(int64_t id) const {
  check_id(id);
  return external_ids_[id];
}

const std::string& Catalog::title(int64_t id) const {
  check_id(id);
  return titles_[id];
}

const std::string& Catalog::extra(int64_t id) const {
  check_id(id);
  return extras_[id];
}

void Catalog::set_title(int64_t id, std::string title) {
  check_id(id);
  titles_[id] = std::move(title);
}

void Catalog::set_extra(int64_t id, std::string extra) {
  check_id(id);
  extras_[id] = std::move(extra);
}

int64_t Catalog::titled_count() const {
  int64_t n = 0;
  for (size_t i = 1; i < titles_.size(); ++i) n += titles_[i].empty() ? 0 : 1;
  return n;
}

int64_t Catalog::popularity(int64_t id) const {
  check_id(id);
  return popularity_[id];
}

void Catalog::add_popularity(int64_t id, int64_t count) {
  check_id(id);
  popularity_[id] += count;
}

void Catalog::reset_popularity() { std::fill(popularity_.begin(), popularity_.end(), 0); }

}  // namespace llm4dsr

// Catalog: the item vocabulary of a dataset.
//
// Items get dense internal ids 1..N in the order they are added (0 is padding and never an item).
// The catalog keeps each item's external id (the user's own id, as a string), its title, optional
// extra text (e.g. genres) and its popularity (interaction count), so that every output can be
// written back in the user's ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llm4dsr {

class Catalog {
 public:
  Catalog();

  // Adds an item and returns its internal id; an external id already present returns its id.
  int64_t add(std::string_view external_id);
  // Number of items N. Valid internal ids are 1..N.
  int64_t size() const { return static_cast<int64_t>(external_ids_.size()) - 1; }

  bool contains(std::string_view external_id) const;
  std::optional<int64_t> find(std::string_view external_id) const;
  // Internal id of an external id; throws Error naming the id when unknown.
  int64_t id(std::string_view external_id) const;

  // Accessors take an internal id in 1..N and throw Error otherwise.
  const std::string& external_id(int64_t id) const;
  const std::string& title(int64_t id) const;  // "" when the item has no title
  const std::string& extra(int64_t id) const;  // "" when none
  bool has_title(int64_t id) const { return !title(id).empty(); }
  void set_title(int64_t id, std::string title);
  void set_extra(int64_t id, std::string extra);
  int64_t titled_count() const;

  // Interaction counts indexed by internal id (index 0 unused, always 0).
  const std::vector<int64_t>& popularity() const { return popularity_; }
  int64_t popularity(int64_t id) const;
  void add_popularity(int64_t id, int64_t count = 1);
  void reset_popularity();

  // Throws Error if id is not in 1..N; `what` names the caller's context in the message.
  void check_id(int64_t id, std::string_view what = "item id") const;

 private:
  std::vector<std::string> external_ids_;  // [0] is the padding placeholder
  std::vector<std::string> titles_;
  std::vector<std::string> extras_;
  std::vector<int64_t> popularity_;
  std::unordered_map<std::string, int64_t> index_;
};

}  // namespace llm4dsr

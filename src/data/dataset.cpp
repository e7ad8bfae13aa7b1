#include "llm4dsr/data/dataset.h"

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "llm4dsr/error.h"

namespace llm4dsr {

void Dataset::recount_popularity() {
  catalog.reset_popularity();
  if (splits) {
    // Windows overlap, so counting every slot would count one interaction many times; each
    // interaction is the target of exactly one window.
    for (const SequenceSet* split : {&splits->train, &splits->valid, &splits->test})
      for (const Sequence& s : *split)
        if (!s.empty()) catalog.add_popularity(s.target());
    return;
  }
  for (const Sequence& s : users)
    for (int64_t item : s.items) catalog.add_popularity(item);
}

DatasetStats compute_stats(const Dataset& dataset) {
  DatasetStats stats;
  stats.items = dataset.catalog.size();
  stats.titled_items = dataset.catalog.titled_count();
  int64_t sequences = 0;
  stats.min_length = std::numeric_limits<int64_t>::max();
  auto add = [&](const Sequence& s) {
    ++sequences;
    stats.interactions += s.size();
    stats.min_length = std::min(stats.min_length, s.size());
    stats.max_length = std::max(stats.max_length, s.size());
    for (uint8_t label : s.labels) stats.noisy_interactions += label == static_cast<uint8_t>(NoiseLabel::kInjected);
  };
  if (dataset.splits) {
    std::unordered_set<std::string> user_ids;
    for (const SequenceSet* split : {&dataset.splits->train, &dataset.splits->valid, &dataset.splits->test})
      for (const Sequence& s : *split) {
        add(s);
        user_ids.insert(s.user_id);
      }
    stats.users = static_cast<int64_t>(user_ids.size());
    stats.train = static_cast<int64_t>(dataset.splits->train.size());
    stats.valid = static_cast<int64_t>(dataset.splits->valid.size());
    stats.test = static_cast<int64_t>(dataset.splits->test.size());
  } else {
    for (const Sequence& s : dataset.users) add(s);
    stats.users = static_cast<int64_t>(dataset.users.size());
  }
  if (sequences == 0) stats.min_length = 0;
  stats.mean_length = sequences ? static_cast<double>(stats.interactions) / static_cast<double>(sequences) : 0.0;
  return stats;
}

void kcore_filter(Dataset& dataset, int64_t min_user_interactions, int64_t min_item_interactions) {
  LLM4DSR_CHECK(!dataset.splits, "k-core filtering needs one sequence per user; dataset '"
                                     << dataset.name << "' (" << dataset.format
                                     << ") arrives already split into windows");
  LLM4DSR_CHECK(min_user_interactions >= 0 && min_item_interactions >= 0,
                "k-core thresholds must be >= 0, got users " << min_user_interactions << ", items "
                                                            << min_item_interactions);
  for (const Sequence& s : dataset.users)
    LLM4DSR_CHECK(!s.has_labels(), "k-core filtering must run before noise injection: user '"
                                       << s.user_id << "' already carries noise labels");

  const int64_t n = dataset.catalog.size();
  std::vector<char> item_alive(n + 1, 1);
  std::vector<char> user_alive(dataset.users.size(), 1);
  std::vector<int64_t> item_count(n + 1, 0);
  for (const Sequence& s : dataset.users)
    for (int64_t item : s.items) {
      dataset.catalog.check_id(item, "item id in user '" + s.user_id + "'");
      ++item_count[item];
    }
  // Alternate until a fixed point: dropping items shortens users, dropping users lowers item counts.
  while (true) {
    bool changed = false;
    for (int64_t i = 1; i <= n; ++i)
      if (item_alive[i] && item_count[i] < min_item_interactions) {
        item_alive[i] = 0;
        changed = true;
      }
    std::fill(item_count.begin(), item_count.end(), 0);
    for (size_t u = 0; u < dataset.users.size(); ++u) {
      if (!user_alive[u]) continue;
      int64_t length = 0;
      for (int64_t item : dataset.users[u].items) length += item_alive[item];
      if (length < min_user_interactions || length == 0) {
        user_alive[u] = 0;
        changed = true;
        continue;
      }
      for (int64_t item : dataset.users[u].items)
        if (item_alive[item]) ++item_count[item];
    }
    if (!changed) break;
  }
  LLM4DSR_CHECK(std::find(user_alive.begin(), user_alive.end(), 1) != user_alive.end(),
                "k-core filtering (users >= " << min_user_interactions << ", items >= " << min_item_interactions
                                              << " interactions) removes every user of dataset '" << dataset.name
                                              << "'; lower the thresholds");
  Catalog catalog;
  std::vector<int64_t> remap(n + 1, 0);
  for (int64_t i = 1; i <= n; ++i) {
    if (!item_alive[i]) continue;
    remap[i] = catalog.add(dataset.catalog.external_id(i));
    catalog.set_title(remap[i], dataset.catalog.title(i));
    catalog.set_extra(remap[i], dataset.catalog.extra(i));
  }
  SequenceSet users;
  for (size_t u = 0; u < dataset.users.size(); ++u) {
    if (!user_alive[u]) continue;
    const Sequence& s = dataset.users[u];
    Sequence out;
    out.user_id = s.user_id;
    for (size_t p = 0; p < s.items.size(); ++p) {
      if (!item_alive[s.items[p]]) continue;
      out.items.push_back(remap[s.items[p]]);
      if (s.has_timestamps()) out.timestamps.push_back(s.timestamps[p]);
    }
    users.push_back(std::move(out));
  }
  dataset.catalog = std::move(catalog);
  dataset.users = std::move(users);
  dataset.recount_popularity();
}

}  // namespace llm4dsr

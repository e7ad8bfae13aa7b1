#include "llm4dsr/denoise/denoiser.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include "internal/random.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(Grounder::normalize_title(text));
  for (std::string w; in >> w;) words.push_back(w);
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  return words;
}

double jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  if (a.empty() && b.empty()) return 0.0;
  std::vector<std::string> common;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
  return static_cast<double>(common.size()) / static_cast<double>(a.size() + b.size() - common.size());
}

bool contains(const std::vector<int64_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

std::string to_string(DenoisePolicy policy) {
  switch (policy) {
    case DenoisePolicy::kFull: return "llm4dsr";
    case DenoisePolicy::kWithoutUncertainty: return "without-uncertainty";
    case DenoisePolicy::kWithoutCompletion: return "without-completion";
    case DenoisePolicy::kPopularityCompletion: return "popularity-completion";
  }
  return "?";
}

DenoisePolicy parse_denoise_policy(std::string_view name) {
  for (auto p : {DenoisePolicy::kFull, DenoisePolicy::kWithoutUncertainty, DenoisePolicy::kWithoutCompletion,
                 DenoisePolicy::kPopularityCompletion})
    if (name == to_string(p)) return p;
  LLM4DSR_THROW("unknown denoise policy '" << name
                                           << "' (expected 'llm4dsr', 'without-uncertainty', 'without-completion' or "
                                              "'popularity-completion')");
}

void DenoiserOptions::validate() const {
  LLM4DSR_CHECK(budget >= 0, "DenoiserOptions: budget must be >= 0 (0 = no limit), got " << budget);
}

int64_t match_answer(const std::string& answer, const std::vector<std::string>& titles, const std::vector<bool>& protect,
                     double min_overlap) {
  LLM4DSR_CHECK(protect.empty() || protect.size() == titles.size(),
                "match_answer: " << protect.size() << " protect flags for " << titles.size() << " titles");
  const auto allowed = [&](size_t k) { return protect.empty() || !protect[k]; };
  const std::string key = Grounder::normalize_title(answer);
  if (key.empty()) return -1;
  for (size_t k = 0; k < titles.size(); ++k)
    if (allowed(k) && Grounder::normalize_title(titles[k]) == key) return static_cast<int64_t>(k);
  const auto answer_words = words_of(answer);
  int64_t best = -1;
  double best_overlap = min_overlap;
  for (size_t k = 0; k < titles.size(); ++k) {
    if (!allowed(k)) continue;
    const double overlap = jaccard(answer_words, words_of(titles[k]));
    if (overlap >= best_overlap && (best < 0 || overlap > best_overlap)) {
      best = static_cast<int64_t>(k);
      best_overlap = overlap;
    }
  }
  return best;
}

Denoiser::Denoiser(std::shared_ptr<const UncertaintyScorer> scorer, std::shared_ptr<const Generator> generator,
                   std::shared_ptr<const Grounder> grounder, std::shared_ptr<const Embedder> embedder,
                   const Catalog& catalog, DenoiserOptions options)
    : scorer_(std::move(scorer)),
      generator_(std::move(generator)),
      grounder_(std::move(grounder)),
      embedder_(std::move(embedder)),
      catalog_(catalog),
      options_(options) {
  options_.validate();
  const std::string policy = to_string(options_.policy);
  LLM4DSR_CHECK(scorer_ || options_.policy == DenoisePolicy::kWithoutUncertainty,
                "Denoiser: policy '" << policy << "' needs an UncertaintyScorer");
  const bool generates = options_.policy == DenoisePolicy::kFull || options_.policy == DenoisePolicy::kWithoutUncertainty;
  if (generates) {
    LLM4DSR_CHECK(generator_, "Denoiser: policy '" << policy << "' needs a Generator");
    if (!generator_->options().constrained) {
      LLM4DSR_CHECK(grounder_, "Denoiser: policy '" << policy << "' with an unconstrained Generator needs a Grounder");
      LLM4DSR_CHECK(embedder_, "Denoiser: policy '" << policy << "' with an unconstrained Generator needs an Embedder");
      LLM4DSR_CHECK(grounder_->size() == catalog_.size(), "Denoiser: the Grounder indexes " << grounder_->size()
                                                                                          << " items, the catalogue has "
                                                                                          << catalog_.size());
    }
  }
  popularity_cdf_.assign(static_cast<size_t>(catalog_.size()), 0.0);
  double total = 0.0;
  for (int64_t id = 1; id <= catalog_.size(); ++id) {
    total += static_cast<double>(catalog_.popularity(id));
    popularity_cdf_[static_cast<size_t>(id - 1)] = total;
  }
}

std::vector<NoiseScores> Denoiser::score(const std::vector<std::vector<int64_t>>& sequences) const {
  LLM4DSR_CHECK(scorer_, "Denoiser::score: no UncertaintyScorer");
  return scorer_->score(sequences, catalog_);
}

double Denoiser::threshold(const std::vector<NoiseScores>& scores, double quantile) const {
  return noise_threshold(scores, quantile, options_.score);
}

std::vector<std::vector<int64_t>> Denoiser::flag(const std::vector<NoiseScores>& scores, double eta,
                                                 const std::vector<std::vector<bool>>& protect) const {
  if (protect.empty()) return flag_noise(scores, eta, options_.budget, options_.score);
  LLM4DSR_CHECK(protect.size() == scores.size(), "Denoiser::flag: " << protect.size() << " protect rows for "
                                                                    << scores.size() << " sequences");
  std::vector<NoiseScores> masked = scores;
  for (size_t i = 0; i < masked.size(); ++i) {
    LLM4DSR_CHECK(protect[i].size() == static_cast<size_t>(masked[i].size()),
                  "Denoiser::flag: sequence " << i << " has " << masked[i].size() << " items, " << protect[i].size()
                                              << " protect flags");
    for (size_t k = 0; k < protect[i].size(); ++k)
      if (protect[i][k]) {
        masked[i].log_prob[k] = -std::numeric_limits<float>::infinity();
        masked[i].prob[k] = -std::numeric_limits<float>::infinity();
      }
  }
  return flag_noise(masked, eta, options_.budget, options_.score);
}

std::vector<SequenceReport> Denoiser::correct(const std::vector<std::vector<int64_t>>& sequences,
                                              const std::vector<NoiseScores>& scores, double eta,
                                              const std::vector<std::vector<bool>>& protect, uint64_t first_index) const {
  LLM4DSR_CHECK(protect.empty() || protect.size() == sequences.size(),
                "Denoiser::correct: " << protect.size() << " protect rows for " << sequences.size() << " sequences");
  if (options_.policy == DenoisePolicy::kWithoutUncertainty) {
    // The model names the noise item itself; no P_noise, no η.
    std::vector<std::vector<int64_t>> flags(sequences.size());
    const auto answers = generator_->generate_noise(sequences);
    for (size_t i = 0; i < sequences.size(); ++i) {
      std::vector<std::string> titles;
      for (int64_t id : sequences[i]) titles.push_back(catalog_.title(id));
      const int64_t k = match_answer(answers[i].text, titles, protect.empty() ? std::vector<bool>{} : protect[i]);
      if (k >= 0) flags[i].push_back(k);
    }
    return apply(sequences, flags, nullptr, first_index);
  }
  LLM4DSR_CHECK(scores.size() == sequences.size(),
                "Denoiser::correct: " << scores.size() << " scored sequences for " << sequences.size() << " sequences");
  for (size_t i = 0; i < sequences.size(); ++i)
    LLM4DSR_CHECK(scores[i].items == sequences[i], "Denoiser::correct: the scores of sequence " << i
                                                                                                << " belong to other items");
  return apply(sequences, flag(scores, eta, protect), &scores, first_index);
}

std::vector<SequenceReport> Denoiser::denoise(const std::vector<std::vector<int64_t>>& sequences, double eta,
                                              const std::vector<std::vector<bool>>& protect) const {
  if (options_.policy == DenoisePolicy::kWithoutUncertainty) return correct(sequences, {}, eta, protect);
  return correct(sequences, score(sequences), eta, protect);
}

std::vector<SequenceReport> Denoiser::apply(const std::vector<std::vector<int64_t>>& sequences,
                                            const std::vector<std::vector<int64_t>>& flags,
                                            const std::vector<NoiseScores>* scores, uint64_t first_index) const {
  std::vector<SequenceReport> reports(sequences.size());
  // Items a replacement must avoid, per sequence: its items and replacements chosen so far.
  std::vector<std::vector<int64_t>> taken(sequences);
  for (size_t i = 0; i < sequences.size(); ++i) {
    reports[i].flagged = flags[i];
    for (int64_t k : flags[i]) {
      Correction c;
      c.position = k;
      c.original_item = sequences[i][static_cast<size_t>(k)];
      c.p_noise = scores ? std::exp(static_cast<double>((*scores)[i].log_prob[static_cast<size_t>(k)]))
                         : std::numeric_limits<double>::quiet_NaN();
      reports[i].corrections.push_back(std::move(c));
    }
  }

  if (options_.policy == DenoisePolicy::kPopularityCompletion) {
    const auto N = catalog_.size();
    const double total = popularity_cdf_.empty() ? 0.0 : popularity_cdf_.back();
    for (size_t i = 0; i < sequences.size(); ++i) {
      internal::Rng rng(options_.seed, first_index + i);
      for (auto& c : reports[i].corrections) {
        LLM4DSR_CHECK(static_cast<int64_t>(taken[i].size()) < N, "Denoiser: sequence " << first_index + i
                                                                                       << " holds every catalogue item; nothing to draw");
        int64_t id = 0;
        // Rejection keeps the draw proportional to popularity among the items not taken; items
        // without interactions are reachable only when no popularity is known at all.
        for (int tries = 0; tries < 10000 && (id == 0 || contains(taken[i], id)); ++tries) {
          if (total > 0) {
            const double u = rng.uniform01() * total;
            id = static_cast<int64_t>(std::upper_bound(popularity_cdf_.begin(), popularity_cdf_.end(), u) -
                                      popularity_cdf_.begin()) + 1;
            id = std::min<int64_t>(id, N);
          } else {
            id = rng.uniform_int(int64_t{1}, N);
          }
        }
        if (contains(taken[i], id))  // popularity mass entirely on taken items: uniform over the rest
          do id = rng.uniform_int(int64_t{1}, N); while (contains(taken[i], id));
        c.replacement_item = id;
        taken[i].push_back(id);
      }
    }
  } else if (options_.policy == DenoisePolicy::kFull || options_.policy == DenoisePolicy::kWithoutUncertainty) {
    // Round r handles the r-th flagged position of every sequence, so a sequence's later
    // replacements avoid its earlier ones.
    size_t rounds = 0;
    for (const auto& f : flags) rounds = std::max(rounds, f.size());
    for (size_t r = 0; r < rounds; ++r) {
      std::vector<GenerationRequest> requests;
      std::vector<size_t> owner;
      for (size_t i = 0; i < sequences.size(); ++i) {
        if (r >= flags[i].size()) continue;
        GenerationRequest q;
        q.items = sequences[i];
        q.position = flags[i][r];
        q.exclude = taken[i];
        requests.push_back(std::move(q));
        owner.push_back(i);
      }
      const auto suggestions = generator_->generate(requests);
      std::vector<std::string> texts;
      std::vector<std::vector<int64_t>> exclude;
      std::vector<size_t> to_ground;
      for (size_t j = 0; j < suggestions.size(); ++j) {
        Correction& c = reports[owner[j]].corrections[r];
        c.generated_text = suggestions[j].text;
        if (suggestions[j].item_id > 0) {
          c.replacement_item = suggestions[j].item_id;
          c.similarity = 1.0f;
          c.exact = true;
        } else if (grounder_ && embedder_) {
          // Nothing generated (EOS at once): ground the flagged item's own title, whose neighbours
          // are the closest items that are not it (it is excluded).
          texts.push_back(suggestions[j].text.empty() ? catalog_.title(c.original_item) : suggestions[j].text);
          exclude.push_back(taken[owner[j]]);
          to_ground.push_back(j);
        }
      }
      if (!to_ground.empty()) {
        const auto grounded = grounder_->ground(texts, *embedder_, exclude);
        for (size_t g = 0; g < to_ground.size(); ++g) {
          Correction& c = reports[owner[to_ground[g]]].corrections[r];
          c.replacement_item = grounded[g].item_id;
          c.similarity = grounded[g].similarity;
          c.exact = grounded[g].exact;
        }
      }
      for (size_t j = 0; j < suggestions.size(); ++j) {
        const Correction& c = reports[owner[j]].corrections[r];
        if (c.replacement_item > 0) taken[owner[j]].push_back(c.replacement_item);
      }
    }
    // A constrained decode cut short without a grounder leaves no replacement: keep the item.
    for (auto& report : reports) {
      auto& cs = report.corrections;
      cs.erase(std::remove_if(cs.begin(), cs.end(), [](const Correction& c) { return c.replacement_item == 0; }), cs.end());
    }
  }
  // kWithoutCompletion: replacement_item stays 0 (deleted).

  for (size_t i = 0; i < sequences.size(); ++i) {
    std::unordered_map<int64_t, int64_t> by_position;
    for (const auto& c : reports[i].corrections) by_position[c.position] = c.replacement_item;
    auto& items = reports[i].items;
    for (size_t k = 0; k < sequences[i].size(); ++k) {
      const auto it = by_position.find(static_cast<int64_t>(k));
      if (it == by_position.end()) items.push_back(sequences[i][k]);
      else if (it->second > 0) items.push_back(it->second);
    }
  }
  return reports;
}

// ---- Units of work ----

std::vector<std::vector<int64_t>> window_histories(const SequenceSet& windows) {
  std::vector<std::vector<int64_t>> out;
  out.reserve(windows.size());
  for (size_t w = 0; w < windows.size(); ++w) {
    LLM4DSR_CHECK(windows[w].size() >= 2, "window " << w << " (user '" << windows[w].user_id << "') has "
                                                    << windows[w].size() << " items; a window needs a history and a target");
    out.emplace_back(windows[w].items.begin(), windows[w].items.end() - 1);
  }
  return out;
}

namespace {

// Copies `w` keeping position j when keep[j]; items[j] replaced by replace[j] when > 0. A replaced
// position keeps its original item and is labelled by whether it now differs from it (a noise item
// replaced by the user's true item becomes clean; a clean item replaced becomes noise), so labels
// keep meaning "differs from the user's own interaction" and the output reads back consistently.
Sequence rebuild(const Sequence& w, const std::vector<bool>& keep, const std::vector<int64_t>& replace) {
  Sequence out;
  out.user_id = w.user_id;
  out.offset = w.offset;
  for (size_t j = 0; j < w.items.size(); ++j) {
    if (!keep[j]) continue;
    out.items.push_back(replace[j] > 0 ? replace[j] : w.items[j]);
    if (w.has_timestamps()) out.timestamps.push_back(w.timestamps[j]);
    if (w.has_labels()) {
      uint8_t label = w.labels[j];
      if (replace[j] > 0)
        label = static_cast<uint8_t>(replace[j] == w.original_items[j] ? NoiseLabel::kClean : NoiseLabel::kInjected);
      out.labels.push_back(label);
      out.original_items.push_back(w.original_items[j]);
    }
  }
  return out;
}

}  // namespace

SequenceSet apply_window_corrections(const SequenceSet& windows, const std::vector<SequenceReport>& reports) {
  LLM4DSR_CHECK(reports.size() == windows.size(), "apply_window_corrections: " << reports.size() << " reports for "
                                                                               << windows.size() << " windows");
  SequenceSet out;
  out.reserve(windows.size());
  for (size_t w = 0; w < windows.size(); ++w) {
    const size_t n = windows[w].items.size();
    std::vector<bool> keep(n, true);
    std::vector<int64_t> replace(n, 0);
    for (const auto& c : reports[w].corrections) {
      LLM4DSR_CHECK(c.position >= 0 && static_cast<size_t>(c.position) + 1 < n,
                    "apply_window_corrections: window " << w << ": correction at position " << c.position
                                                        << " outside its history of " << n - 1 << " items");
      if (c.replacement_item > 0) replace[static_cast<size_t>(c.position)] = c.replacement_item;
      else keep[static_cast<size_t>(c.position)] = false;
    }
    out.push_back(rebuild(windows[w], keep, replace));
  }
  return out;
}

UserChunks user_chunks(const SequenceSet& windows, int64_t chunk_length, bool protect_targets) {
  LLM4DSR_CHECK(chunk_length >= 1, "user_chunks: chunk_length must be >= 1, got " << chunk_length);
  UserChunks out;
  std::unordered_map<std::string, int64_t> user_index;
  struct Position {
    int64_t item = 0;
    uint8_t label = 0;
    bool history = false, target = false;
  };
  std::vector<std::map<int64_t, Position>> users;
  bool labelled = false;
  for (size_t w = 0; w < windows.size(); ++w) {
    const Sequence& s = windows[w];
    LLM4DSR_CHECK(s.size() >= 2, "window " << w << " (user '" << s.user_id << "') has " << s.size()
                                           << " items; a window needs a history and a target");
    auto [it, added] = user_index.emplace(s.user_id, static_cast<int64_t>(users.size()));
    if (added) {
      users.emplace_back();
      out.user_ids.push_back(s.user_id);
    }
    labelled = labelled || s.has_labels();
    auto& positions = users[static_cast<size_t>(it->second)];
    for (int64_t j = 0; j < s.size(); ++j) {
      Position& p = positions[s.offset + j];
      const int64_t item = s.items[static_cast<size_t>(j)];
      LLM4DSR_CHECK(p.item == 0 || p.item == item, "window " << w << " (user '" << s.user_id << "'): position "
                                                             << s.offset + j << " holds item " << item
                                                             << " where another window of the user holds " << p.item);
      p.item = item;
      if (s.has_labels()) p.label = s.labels[static_cast<size_t>(j)];
      (j + 1 == s.size() ? p.target : p.history) = true;
    }
  }
  for (size_t u = 0; u < users.size(); ++u) {
    int64_t previous = std::numeric_limits<int64_t>::min();
    for (const auto& [position, p] : users[u]) {
      if (!p.history) continue;
      const bool contiguous = position == previous + 1;
      if (!contiguous || static_cast<int64_t>(out.sequences.back().size()) == chunk_length) {
        out.sequences.emplace_back();
        out.protect.emplace_back();
        out.labels.emplace_back();
        out.user.push_back(static_cast<int64_t>(u));
        out.start.push_back(position);
      }
      out.sequences.back().push_back(p.item);
      out.protect.back().push_back(protect_targets && p.target);
      if (labelled) out.labels.back().push_back(p.label);
      previous = position;
    }
  }
  return out;
}

SequenceSet apply_user_corrections(const SequenceSet& windows, const UserChunks& chunks,
                                   const std::vector<SequenceReport>& reports) {
  LLM4DSR_CHECK(reports.size() == chunks.sequences.size(), "apply_user_corrections: " << reports.size() << " reports for "
                                                                                      << chunks.sequences.size() << " chunks");
  std::unordered_map<std::string, std::unordered_map<int64_t, int64_t>> corrections;  // user -> position -> item (0 = deleted)
  for (size_t c = 0; c < reports.size(); ++c) {
    auto& user = corrections[chunks.user_ids[static_cast<size_t>(chunks.user[c])]];
    for (const auto& corr : reports[c].corrections) user[chunks.start[c] + corr.position] = corr.replacement_item;
  }
  SequenceSet out;
  out.reserve(windows.size());
  for (const Sequence& w : windows) {
    const size_t n = w.items.size();
    std::vector<bool> keep(n, true);
    std::vector<int64_t> replace(n, 0);
    const auto user = corrections.find(w.user_id);
    if (user != corrections.end())
      for (size_t j = 0; j < n; ++j) {
        const auto it = user->second.find(w.offset + static_cast<int64_t>(j));
        if (it == user->second.end()) continue;
        if (it->second > 0) replace[j] = it->second;
        else if (j + 1 < n) keep[j] = false;  // a target is never deleted
      }
    out.push_back(rebuild(w, keep, replace));
  }
  return out;
}

}  // namespace llm4dsr

#include "llm4dsr/text/instruction_builder.h"

#include <algorithm>
#include <cmath>

#include "internal/parallel.h"
#include "internal/random.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// Pair tokenisation takes a few encodes of a few hundred tokens; smaller chunks cost more in
// scheduling than they save.
constexpr int64_t kGrainSize = 8;

// The random streams of one seed: sampling windows and clean examples, and one per window, so a
// window's pair does not depend on which other windows were sampled.
constexpr uint64_t kSamplingStream = 0;
uint64_t window_stream(size_t window_index) { return 1 + static_cast<uint64_t>(window_index); }

std::string describe_window(size_t index, const Sequence& window) {
  return "window " + std::to_string(index) + " (user '" + window.user_id + "')";
}

// Draws k distinct indices of [0, n) uniformly (partial Fisher-Yates), in increasing order.
std::vector<size_t> sample_without_replacement(internal::Rng& rng, size_t n, size_t k) {
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + static_cast<size_t>(rng.uniform_int(static_cast<uint64_t>(n - i)));
    std::swap(all[i], all[j]);
  }
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

// Positions of a pair's items in the order they are dropped: oldest first, never the replaced
// one (the response names it), and for a clean pair never the newest (a history keeps one item).
std::vector<size_t> droppable_positions(const InstructionPair& pair) {
  std::vector<size_t> out;
  const size_t n = pair.titles.size();
  for (size_t i = 0; i < n; ++i) {
    if (pair.is_clean() ? i + 1 < n : static_cast<int64_t>(i) != pair.position) out.push_back(i);
  }
  return out;
}

}  // namespace

std::string to_string(LossOn loss_on) { return loss_on == LossOn::kAll ? "all" : "response"; }

LossOn parse_loss_on(std::string_view name) {
  if (name == "response") return LossOn::kResponse;
  if (name == "all") return LossOn::kAll;
  LLM4DSR_THROW("unknown loss_on '" << name << "'; expected 'response' (paper Eq. 1) or 'all' (every token)");
}

InstructionBuilder::InstructionBuilder(InstructionOptions options) : options_(std::move(options)) {
  template_ = options_.prompt_template ? *options_.prompt_template : PromptTemplate::get(options_.template_name);
  template_.validate();
  chat_ = options_.chat ? *options_.chat : ChatFormat::get(options_.chat_format);
  LLM4DSR_CHECK(options_.clean_fraction >= 0.0 && options_.clean_fraction <= 1.0,
                "clean_fraction must be in [0, 1], got " << options_.clean_fraction);
  LLM4DSR_CHECK(options_.max_pairs >= 0, "max_pairs must be >= 0 (0 = no cap), got " << options_.max_pairs);
  LLM4DSR_CHECK(options_.max_prompt_tokens >= 0,
                "max_prompt_tokens must be >= 0 (0 = no limit), got " << options_.max_prompt_tokens);
}

std::vector<InstructionPair> InstructionBuilder::make_pairs(const SequenceSet& train_windows,
                                                            const Catalog& catalog) const {
  LLM4DSR_CHECK(!train_windows.empty(), "make_pairs: no windows were given (is the train split empty?)");
  for (size_t w = 0; w < train_windows.size(); ++w) {
    const Sequence& window = train_windows[w];
    LLM4DSR_CHECK(!window.empty(), "make_pairs: " << describe_window(w, window) << " is empty");
    for (size_t p = 0; p < window.items.size(); ++p) {
      const int64_t item = window.items[p];
      LLM4DSR_CHECK(item >= 1 && item <= catalog.size(), "make_pairs: " << describe_window(w, window) << ", position "
                                                                         << p << ": item id " << item
                                                                         << " is not in the catalogue (ids 1.."
                                                                         << catalog.size() << ")");
    }
  }

  // Noise is drawn among titled items only: an untitled item cannot be rendered.
  std::vector<int64_t> titled;
  titled.reserve(static_cast<size_t>(catalog.size()));
  for (int64_t id = 1; id <= catalog.size(); ++id) {
    if (!template_.sanitize_title(catalog.title(id)).empty()) titled.push_back(id);
  }
  LLM4DSR_CHECK(titled.size() >= 2, "make_pairs: the catalogue has " << titled.size()
                                                                     << " item(s) with a title; at least 2 are needed "
                                                                        "to replace an item by a different one");

  const size_t n = train_windows.size();
  internal::Rng sampler(options_.seed, kSamplingStream);
  const size_t count =
      options_.max_pairs > 0 ? std::min(n, static_cast<size_t>(options_.max_pairs)) : n;
  std::vector<size_t> chosen(n);
  for (size_t i = 0; i < n; ++i) chosen[i] = i;
  if (count < n) chosen = sample_without_replacement(sampler, n, count);
  const auto clean_count = static_cast<size_t>(std::llround(options_.clean_fraction * static_cast<double>(count)));
  std::vector<bool> clean(count, false);
  for (const size_t i : sample_without_replacement(sampler, count, std::min(clean_count, count))) clean[i] = true;

  std::vector<InstructionPair> pairs(count);
  for (size_t k = 0; k < count; ++k) {
    const size_t w = chosen[k];
    const Sequence& window = train_windows[w];
    InstructionPair& pair = pairs[k];
    pair.window_index = static_cast<int64_t>(w);
    pair.items = window.items;
    if (!clean[k]) {
      internal::Rng rng(options_.seed, window_stream(w));
      const auto position = static_cast<size_t>(rng.uniform_int(static_cast<uint64_t>(window.items.size())));
      const int64_t original = window.items[position];
      const auto self = std::lower_bound(titled.begin(), titled.end(), original);
      const bool original_titled = self != titled.end() && *self == original;
      // Uniform over the titled items other than the original: draw among one fewer and step over it.
      size_t j = static_cast<size_t>(rng.uniform_int(static_cast<uint64_t>(titled.size() - (original_titled ? 1 : 0))));
      if (original_titled && j >= static_cast<size_t>(self - titled.begin())) ++j;
      pair.position = static_cast<int64_t>(position);
      pair.original_item = original;
      pair.noise_item = titled[j];
      pair.items[position] = pair.noise_item;
    }
    pair.titles.reserve(pair.items.size());
    for (size_t p = 0; p < pair.items.size(); ++p) {
      const int64_t item = pair.items[p];
      const std::string& title = catalog.title(item);
      LLM4DSR_CHECK(!template_.sanitize_title(title).empty(),
                    "make_pairs: " << describe_window(w, window) << ", position " << p << ": item " << item
                                   << " (external id '" << catalog.external_id(item)
                                   << "') has no title; drop untitled items before building instructions");
      pair.titles.push_back(title);
    }
    if (!pair.is_clean()) {
      LLM4DSR_CHECK(!template_.sanitize_title(catalog.title(pair.original_item)).empty(),
                    "make_pairs: " << describe_window(w, window) << ", position " << pair.position << ": item "
                                   << pair.original_item << " (external id '" << catalog.external_id(pair.original_item)
                                   << "') has no title; drop untitled items before building instructions");
      pair.noise_title = catalog.title(pair.noise_item);
      pair.original_title = catalog.title(pair.original_item);
      pair.response = template_.render_response(pair.noise_title, pair.original_title);
    } else {
      pair.response = template_.render_clean_response();
    }
    pair.prompt = template_.render_prompt(pair.titles, chat_);
  }
  return pairs;
}

std::string InstructionBuilder::render_prompt(const InstructionPair& pair, int64_t dropped) const {
  const std::vector<size_t> droppable = droppable_positions(pair);
  LLM4DSR_CHECK(dropped >= 0 && static_cast<size_t>(dropped) <= droppable.size(),
                "render_prompt: window " << pair.window_index << " can drop 0.." << droppable.size()
                                         << " items, asked to drop " << dropped);
  std::vector<bool> keep(pair.titles.size(), true);
  for (int64_t i = 0; i < dropped; ++i) keep[droppable[static_cast<size_t>(i)]] = false;
  std::vector<std::string> titles;
  titles.reserve(pair.titles.size());
  for (size_t i = 0; i < pair.titles.size(); ++i) {
    if (keep[i]) titles.push_back(pair.titles[i]);
  }
  return template_.render_prompt(titles, chat_);
}

TokenizedInstruction InstructionBuilder::tokenize_one(const InstructionPair& pair, const Tokenizer& tokenizer) const {
  LLM4DSR_CHECK(!pair.titles.empty() && pair.titles.size() == pair.items.size(),
                "tokenize: window " << pair.window_index << ": the pair has " << pair.titles.size() << " titles for "
                                    << pair.items.size() << " items");
  const bool add_bos = options_.add_bos && chat_.add_bos && tokenizer.bos_id() >= 0;
  const bool add_eos = options_.add_eos && tokenizer.eos_id() >= 0;
  const auto limit = static_cast<size_t>(options_.max_prompt_tokens);

  // Both texts are rendered here from the pair's titles, so that pairs made by a builder with
  // another template or chat format are tokenised consistently with this one.
  const std::string response = pair.is_clean() ? template_.render_clean_response()
                                               : template_.render_response(pair.noise_title, pair.original_title);
  TokenizedInstruction out;
  std::vector<TokenId> prompt_ids;
  const auto encode_prompt = [&](int64_t dropped) {
    out.prompt = render_prompt(pair, dropped);
    prompt_ids = tokenizer.encode(out.prompt, add_bos, false);
    return limit == 0 || prompt_ids.size() <= limit;
  };
  if (!encode_prompt(0)) {
    // The fewest dropped items that fit. Token counts fall (almost always strictly) as items go,
    // so a binary search finds the boundary with a logarithmic number of encodes.
    const auto most = static_cast<int64_t>(droppable_positions(pair).size());
    LLM4DSR_CHECK(encode_prompt(most), "tokenize: window " << pair.window_index << ": the prompt takes "
                                                           << prompt_ids.size() << " tokens with only "
                                                           << pair.titles.size() - static_cast<size_t>(most)
                                                           << " item(s) left, over max_prompt_tokens = " << limit
                                                           << "; raise max_prompt_tokens");
    int64_t too_few = 0, enough = most;
    std::string enough_prompt = out.prompt;
    std::vector<TokenId> enough_ids = prompt_ids;
    while (enough - too_few > 1) {
      const int64_t mid = too_few + (enough - too_few) / 2;
      if (encode_prompt(mid)) {
        enough = mid;
        enough_prompt = out.prompt;
        enough_ids = prompt_ids;
      } else {
        too_few = mid;
      }
    }
    out.prompt = std::move(enough_prompt);
    prompt_ids = std::move(enough_ids);
    out.dropped_items = enough;
  }

  // The pair must split into x and z at a token boundary: encode(x + z) must start with encode(x).
  // Its tail is then the response as the model sees it after the prompt, which is
  // encode_in_context(x, z) without a second encode.
  const std::vector<TokenId> joint = tokenizer.encode(out.prompt + response, add_bos, false);
  const bool splits =
      joint.size() >= prompt_ids.size() && std::equal(prompt_ids.begin(), prompt_ids.end(), joint.begin());
  const std::string prompt_end = out.prompt.substr(out.prompt.size() - std::min<size_t>(out.prompt.size(), 12));
  LLM4DSR_CHECK(splits, "tokenize: window " << pair.window_index
                                            << ": the prompt's last token merges with the response's first when they "
                                               "are tokenised together (template '"
                                            << template_.name << "'; the prompt ends with '" << prompt_end
                                            << "'); end the template's prompt with a newline or another delimiter "
                                               "the tokenizer never merges");
  const std::vector<TokenId> response_ids(joint.begin() + static_cast<std::ptrdiff_t>(prompt_ids.size()),
                                         joint.end());

  out.prompt_length = static_cast<int64_t>(prompt_ids.size());
  const size_t total = prompt_ids.size() + response_ids.size() + (add_eos ? 1 : 0);
  out.input_ids.reserve(total);
  out.input_ids.insert(out.input_ids.end(), prompt_ids.begin(), prompt_ids.end());
  out.input_ids.insert(out.input_ids.end(), response_ids.begin(), response_ids.end());
  if (add_eos) out.input_ids.push_back(tokenizer.eos_id());
  out.labels = out.input_ids;
  out.loss_mask.assign(total, 1);
  if (options_.loss_on == LossOn::kResponse) {
    for (size_t i = 0; i < prompt_ids.size(); ++i) {
      out.labels[i] = kIgnoreIndex;
      out.loss_mask[i] = 0;
    }
  }
  return out;
}

TokenBatch InstructionBuilder::tokenize(const std::vector<InstructionPair>& pairs, const Tokenizer& tokenizer) const {
  TokenBatch out(pairs.size());
  internal::parallel_over(pairs.size(), kGrainSize, [&](size_t i) {
    try {
      out[i] = tokenize_one(pairs[i], tokenizer);
    } catch (const Error& e) {
      LLM4DSR_THROW("pair " << i << ": " << e.what());
    }
  });
  return out;
}

}  // namespace llm4dsr

#include "llm4dsr/denoise/generator.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "internal/prompt_fit.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/generation.h"

namespace llm4dsr {

namespace {

// The catalogue's titles as token paths. Node 0 is the root; a path ends at a terminal node that
// lists the items with that title (ascending ids).
class TitleTrie {
 public:
  struct Node {
    std::vector<std::pair<int64_t, int32_t>> children;  // (token, node), sorted by token
    std::vector<int64_t> items;                           // terminal: items with this title
    int64_t subtree_items = 0;                            // items at or below this node
  };

  TitleTrie() : nodes_(1) {}

  void insert(const std::vector<int64_t>& path, int64_t item) {
    int32_t node = 0;
    ++nodes_[0].subtree_items;
    for (int64_t token : path) {
      auto& children = nodes_[static_cast<size_t>(node)].children;
      auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(token, int32_t{0}),
                                 [](const auto& a, const auto& b) { return a.first < b.first; });
      int32_t next;
      if (it != children.end() && it->first == token) {
        next = it->second;
      } else {
        next = static_cast<int32_t>(nodes_.size());
        children.insert(it, {token, next});
        nodes_.emplace_back();
      }
      node = next;
      ++nodes_[static_cast<size_t>(node)].subtree_items;
    }
    nodes_[static_cast<size_t>(node)].items.push_back(item);
    max_depth_ = std::max<int64_t>(max_depth_, static_cast<int64_t>(path.size()));
  }

  // The child of `node` along `token`, or -1.
  int32_t child(int32_t node, int64_t token) const {
    const auto& children = nodes_[static_cast<size_t>(node)].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(token, int32_t{0}),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    return it != children.end() && it->first == token ? it->second : -1;
  }
  // The node reached from the root along `path`, or -1.
  int32_t walk(const int64_t* path, int64_t length) const {
    int32_t node = 0;
    for (int64_t i = 0; i < length && node >= 0; ++i) node = child(node, path[i]);
    return node;
  }
  const Node& node(int32_t n) const { return nodes_[static_cast<size_t>(n)]; }
  int64_t max_depth() const { return max_depth_; }

 private:
  std::vector<Node> nodes_;
  int64_t max_depth_ = 0;
};

}  // namespace

void GeneratorOptions::validate() const {
  LLM4DSR_CHECK(decoding == "greedy" || decoding == "beam",
                "GeneratorOptions: decoding must be 'greedy' or 'beam', got '" << decoding << "'");
  LLM4DSR_CHECK(num_beams >= 1, "GeneratorOptions: num_beams must be >= 1, got " << num_beams);
  LLM4DSR_CHECK(max_new_tokens >= 1, "GeneratorOptions: max_new_tokens must be >= 1, got " << max_new_tokens);
  LLM4DSR_CHECK(micro_batch_size >= 1, "GeneratorOptions: micro_batch_size must be >= 1, got " << micro_batch_size);
  LLM4DSR_CHECK(max_prompt_tokens >= 0, "GeneratorOptions: max_prompt_tokens must be >= 0 (0 = no limit), got "
                                            << max_prompt_tokens);
}

struct Generator::Impl {
  LlamaModel model = nullptr;
  std::shared_ptr<const Tokenizer> tokenizer;
  GeneratorOptions options;
  PromptTemplate prompt_template;
  ChatFormat chat;
  bool add_bos = false;
  std::vector<std::string> titles;  // [0] unused; item i's catalogue title
  std::vector<int64_t> stop_ids;
  std::string end_text;  // what ends a generated title in the text

  // Constrained decoding.
  TitleTrie trie;
  std::vector<std::vector<int64_t>> paths;  // per item: its path in the trie (empty: no title)
  std::vector<int64_t> requote;  // the prompt's last tokens that the trie decodes again
  int64_t trie_titles = 0;

  void check_items(const std::vector<int64_t>& items, const char* what) const {
    LLM4DSR_CHECK(!items.empty(), what << " is empty");
    const auto N = static_cast<int64_t>(titles.size()) - 1;
    for (size_t k = 0; k < items.size(); ++k) {
      LLM4DSR_CHECK(items[k] >= 1 && items[k] <= N,
                    what << ", position " << k << ": item id " << items[k] << " is outside the catalogue's 1.." << N);
      LLM4DSR_CHECK(!titles[static_cast<size_t>(items[k])].empty(),
                    what << ", position " << k << ": item " << items[k] << " has no title");
    }
  }

  // Excluded ids are item ids like the sequence's (the Grounder refuses unknown ones too); under
  // constraints at least one title must stay allowed, or decoding could only emit the end token.
  void check_exclude(const std::vector<int64_t>& exclude, size_t index) const {
    const auto N = static_cast<int64_t>(titles.size()) - 1;
    for (int64_t id : exclude)
      LLM4DSR_CHECK(id >= 1 && id <= N, "request " << index << ": excluded item id " << id
                                                   << " is outside the catalogue's 1.." << N);
    if (!options.constrained) return;
    std::vector<int64_t> unique(exclude);
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    const auto excluded_titles = std::count_if(unique.begin(), unique.end(),
                                               [&](int64_t id) { return !paths[static_cast<size_t>(id)].empty(); });
    LLM4DSR_CHECK(excluded_titles < trie_titles, "request " << index << ": all " << trie_titles
                                                            << " catalogue titles are excluded; constrained decoding "
                                                               "has no title left to generate");
  }

  std::vector<std::string> titles_of(const std::vector<int64_t>& items) const {
    std::vector<std::string> out;
    out.reserve(items.size());
    for (int64_t id : items) out.push_back(titles[static_cast<size_t>(id)]);
    return out;
  }

  // BOS + the prompt of `items` rendered by `render(shown titles)`, oldest items dropped to fit.
  template <typename Render>
  std::vector<int64_t> encode_fitted(const std::vector<int64_t>& items, Render render) const {
    const std::vector<std::string> all = titles_of(items);
    const auto shown = [&](int64_t dropped) { return std::vector<std::string>(all.begin() + dropped, all.end()); };
    const int64_t dropped = internal::items_to_drop(
        static_cast<int64_t>(all.size()), static_cast<size_t>(options.max_prompt_tokens), [&](int64_t d) {
          return tokenizer->encode(prompt_template.render_prompt(shown(d), chat), add_bos, false).size();
        });
    const std::vector<TokenId> ids = tokenizer->encode(render(shown(dropped)), add_bos, false);
    return {ids.begin(), ids.end()};
  }

  std::vector<int64_t> prompt_ids(const GenerationRequest& r, size_t index) const {
    const std::string what = "request " + std::to_string(index) + ": the sequence";
    check_items(r.items, what.c_str());
    LLM4DSR_CHECK(r.position >= 0 && r.position < static_cast<int64_t>(r.items.size()),
                  "request " << index << ": position " << r.position << " is outside the sequence of " << r.items.size()
                             << " items");
    const std::string& noise = titles[static_cast<size_t>(r.items[static_cast<size_t>(r.position)])];
    return encode_fitted(r.items, [&](const std::vector<std::string>& shown) {
      return prompt_template.generation_prompt(shown, noise, chat);
    });
  }

  std::string text_of(const std::vector<int64_t>& ids) const {
    std::string text = tokenizer->decode(std::vector<TokenId>(ids.begin(), ids.end()));
    if (!end_text.empty()) {
      const size_t at = text.find(end_text);
      if (at != std::string::npos) text.resize(at);
    }
    const size_t first = text.find_first_not_of(" \t\n\r");
    if (first == std::string::npos) return {};
    const size_t last = text.find_last_not_of(" \t\n\r");
    return text.substr(first, last - first + 1);
  }

  void build_trie(const Catalog& catalog) {
    const std::string context = prompt_template.noise_suffix();  // ends with the opening quote
    const std::string tail = prompt_template.suggestion_suffix();
    const std::vector<TokenId> base = tokenizer->encode(context, false, false);
    const auto N = catalog.size();
    std::vector<std::vector<TokenId>> joints(static_cast<size_t>(N) + 1);
    size_t shared = base.size();
    for (int64_t id = 1; id <= N; ++id) {
      if (!catalog.has_title(id)) continue;
      const std::string title = prompt_template.sanitize_title(catalog.title(id));
      if (title.empty()) continue;
      joints[static_cast<size_t>(id)] = tokenizer->encode(context + title + tail, false, false);
      shared = std::min(shared, internal::common_prefix(base, joints[static_cast<size_t>(id)]));
    }
    requote.assign(base.begin() + static_cast<std::ptrdiff_t>(shared), base.end());
    paths.assign(static_cast<size_t>(N) + 1, {});
    for (int64_t id = 1; id <= N; ++id) {
      const auto& joint = joints[static_cast<size_t>(id)];
      if (joint.empty()) continue;
      auto& path = paths[static_cast<size_t>(id)];
      path.assign(joint.begin() + static_cast<std::ptrdiff_t>(shared), joint.end());
      trie.insert(path, id);
      ++trie_titles;
    }
    LLM4DSR_CHECK(trie_titles > 0, "Generator: constrained decoding needs catalogue titles; the catalogue has none");
  }

  // Per request, how many of each node's items are excluded.
  std::unordered_map<int32_t, int64_t> excluded_counts(const std::vector<int64_t>& exclude) const {
    std::unordered_map<int32_t, int64_t> counts;
    std::vector<int64_t> unique(exclude);
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    for (int64_t id : unique) {
      if (paths[static_cast<size_t>(id)].empty()) continue;  // ids checked by check_exclude
      const auto& path = paths[static_cast<size_t>(id)];
      int32_t node = 0;
      ++counts[0];
      for (int64_t token : path) {
        node = trie.child(node, token);
        ++counts[node];
      }
    }
    return counts;
  }

  std::vector<Suggestion> decode_batch(const std::vector<std::vector<int64_t>>& prompts,
                                       const std::vector<const std::vector<int64_t>*>& excludes, bool constrained) const {
    const int64_t eos = tokenizer->eos_id();
    const bool beam = options.decoding == "beam";
    const int64_t rows_per_prompt = beam ? options.num_beams : 1;
    std::vector<std::unordered_map<int32_t, int64_t>> excluded;
    LogitsProcessor processor;
    torch::Tensor allowed_logits;
    if (constrained) {
      for (const auto* ex : excludes) excluded.push_back(ex ? excluded_counts(*ex) : std::unordered_map<int32_t, int64_t>{});
      processor = [&](torch::Tensor& logits, const torch::Tensor& generated, int64_t) {
        const int64_t rows = logits.size(0), steps = generated.size(1);
        torch::Tensor host = generated.to(torch::kCPU).contiguous();
        const int64_t* g = host.data_ptr<int64_t>();
        std::vector<int64_t> row_index, token_index;
        for (int64_t r = 0; r < rows; ++r) {
          const int32_t node = trie.walk(g + r * steps, steps);
          if (node < 0) continue;  // a finished or dead row: its tokens are not read
          const auto& ex = excluded[static_cast<size_t>(r / rows_per_prompt)];
          const auto& n = trie.node(node);
          if (!n.items.empty()) {  // a complete title: the only continuation is the end
            row_index.push_back(r);
            token_index.push_back(eos);
          }
          for (const auto& [token, child] : n.children) {
            const auto it = ex.find(child);
            if (trie.node(child).subtree_items - (it == ex.end() ? 0 : it->second) <= 0) continue;
            row_index.push_back(r);
            token_index.push_back(token);
          }
        }
        if (!allowed_logits.defined() || allowed_logits.sizes() != logits.sizes()) allowed_logits = torch::empty_like(logits);
        allowed_logits.fill_(-std::numeric_limits<float>::infinity());
        if (!row_index.empty()) {
          auto ri = torch::tensor(row_index, torch::kInt64).to(logits.device());
          auto ti = torch::tensor(token_index, torch::kInt64).to(logits.device());
          allowed_logits.index_put_({ri, ti}, logits.index({ri, ti}));
        }
        logits.copy_(allowed_logits);
      };
    }
    const std::vector<int64_t> stops = constrained ? std::vector<int64_t>{eos} : stop_ids;
    const int64_t max_new = constrained ? trie.max_depth() + 1 : options.max_new_tokens;
    LlamaModel m = model;
    GenerationOutput out;
    if (beam) {
      BeamOptions beam_options;
      beam_options.num_beams = options.num_beams;
      beam_options.length_penalty = options.length_penalty;
      beam_options.pad_token_id = std::max<int64_t>(0, tokenizer->pad_id());
      beam_options.logits_processor = processor;
      out = generate_beam(m, prompts, max_new, stops, beam_options);
    } else {
      GreedyOptions greedy_options;
      greedy_options.pad_token_id = std::max<int64_t>(0, tokenizer->pad_id());
      greedy_options.logits_processor = processor;
      out = generate_greedy(m, prompts, max_new, stops, greedy_options);
    }

    std::vector<Suggestion> suggestions(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      Suggestion& s = suggestions[i];
      s.token_ids = out.sequences[i];
      s.log_prob = out.log_probs[i];
      s.finished = out.stopped[i];
      if (!constrained) {
        s.text = text_of(s.token_ids);
        continue;
      }
      std::vector<int64_t> path = s.token_ids;
      if (!path.empty() && path.back() == eos) path.pop_back();
      const int32_t node = trie.walk(path.data(), static_cast<int64_t>(path.size()));
      if (node >= 0 && s.finished) {
        const auto& items = trie.node(node).items;
        const auto* ex = excludes[i];
        for (int64_t id : items)
          if (!ex || std::find(ex->begin(), ex->end(), id) == ex->end()) {
            s.item_id = id;
            break;
          }
      }
      s.text = s.item_id > 0 ? prompt_template.sanitize_title(titles[static_cast<size_t>(s.item_id)]) : text_of(path);
      if (s.item_id == 0) s.finished = false;
    }
    return suggestions;
  }

  // Runs `prompts` in micro-batches of similar length; results in input order.
  std::vector<Suggestion> decode_all(const std::vector<std::vector<int64_t>>& prompts,
                                     const std::vector<const std::vector<int64_t>*>& excludes, bool constrained) const {
    std::vector<size_t> order(prompts.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return prompts[a].size() > prompts[b].size(); });
    std::vector<Suggestion> out(prompts.size());
    const auto mbs = static_cast<size_t>(options.micro_batch_size);
    for (size_t start = 0; start < order.size(); start += mbs) {
      const size_t end = std::min(order.size(), start + mbs);
      std::vector<std::vector<int64_t>> batch;
      std::vector<const std::vector<int64_t>*> batch_excludes;
      for (size_t i = start; i < end; ++i) {
        batch.push_back(prompts[order[i]]);
        batch_excludes.push_back(excludes.empty() ? nullptr : excludes[order[i]]);
      }
      auto results = decode_batch(batch, batch_excludes, constrained);
      for (size_t i = start; i < end; ++i) out[order[i]] = std::move(results[i - start]);
    }
    return out;
  }
};

Generator::Generator(LlamaModel model, std::shared_ptr<const Tokenizer> tokenizer, const Catalog& catalog,
                     GeneratorOptions options)
    : impl_(std::make_unique<Impl>()) {
  options.validate();
  LLM4DSR_CHECK(model, "Generator: no model");
  LLM4DSR_CHECK(tokenizer, "Generator: no tokenizer");
  LLM4DSR_CHECK(tokenizer->vocab_size() <= model->config().vocab_size,
                "Generator: the tokenizer has " << tokenizer->vocab_size() << " ids, the model's vocabulary "
                                                << model->config().vocab_size);
  Impl& d = *impl_;
  d.model = std::move(model);
  d.tokenizer = std::move(tokenizer);
  d.options = std::move(options);
  d.prompt_template = d.options.prompt_template ? *d.options.prompt_template : PromptTemplate::get(d.options.template_name);
  d.prompt_template.validate();
  d.chat = d.options.chat ? *d.options.chat : ChatFormat::get(d.options.chat_format);
  d.add_bos = d.options.add_bos && d.chat.add_bos && d.tokenizer->bos_id() >= 0;
  d.titles.assign(1, std::string());
  for (int64_t id = 1; id <= catalog.size(); ++id) d.titles.push_back(catalog.title(id));

  // A title ends at its closing quote; unquoted templates end it with the text after the title
  // (for the paper's layout, nothing: EOS).
  d.end_text = d.prompt_template.closing_delimiter();
  if (d.prompt_template.quote_close.empty()) d.end_text = d.prompt_template.suggestion_suffix();
  const int64_t eos = d.tokenizer->eos_id();
  if (eos >= 0) d.stop_ids.push_back(eos);
  if (!d.end_text.empty())
    for (int64_t id = 0; id < d.tokenizer->vocab_size(); ++id) {
      if (id == eos) continue;
      if (d.tokenizer->decode({static_cast<TokenId>(id)}).find(d.end_text) != std::string::npos) d.stop_ids.push_back(id);
    }
  LLM4DSR_CHECK(!d.stop_ids.empty(), "Generator: the tokenizer has no EOS and no token contains the closing delimiter '"
                                         << d.end_text << "': generation could not stop");
  if (d.options.constrained) {
    LLM4DSR_CHECK(eos >= 0, "Generator: constrained decoding needs a tokenizer with an EOS token");
    d.build_trie(catalog);
  }
}

Generator::~Generator() = default;
Generator::Generator(Generator&&) noexcept = default;
Generator& Generator::operator=(Generator&&) noexcept = default;

const GeneratorOptions& Generator::options() const { return impl_->options; }
const PromptTemplate& Generator::prompt_template() const { return impl_->prompt_template; }
const ChatFormat& Generator::chat_format() const { return impl_->chat; }
const std::vector<int64_t>& Generator::stop_token_ids() const { return impl_->stop_ids; }
int64_t Generator::trie_titles() const { return impl_->trie_titles; }

std::vector<int64_t> Generator::prompt_ids(const GenerationRequest& request) const {
  return impl_->prompt_ids(request, 0);
}

std::vector<Suggestion> Generator::generate(const std::vector<GenerationRequest>& requests) const {
  const Impl& d = *impl_;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<const std::vector<int64_t>*> excludes;
  prompts.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    std::vector<int64_t> ids = d.prompt_ids(requests[i], i);
    d.check_exclude(requests[i].exclude, i);
    if (d.options.constrained && !d.requote.empty()) {
      // The trie decodes the opening quote's token(s) again (see build_trie).
      const size_t k = d.requote.size();
      LLM4DSR_CHECK(ids.size() > k && std::equal(d.requote.begin(), d.requote.end(), ids.end() - static_cast<std::ptrdiff_t>(k)),
                    "request " << i << ": the generation prompt does not end with the tokens of the opening quote as "
                               << "the catalogue trie was built; constrained decoding cannot continue it");
      ids.resize(ids.size() - k);
    }
    prompts.push_back(std::move(ids));
    excludes.push_back(&requests[i].exclude);
  }
  if (prompts.empty()) return {};
  return d.decode_all(prompts, excludes, d.options.constrained);
}

std::vector<Suggestion> Generator::generate_noise(const std::vector<std::vector<int64_t>>& sequences) const {
  const Impl& d = *impl_;
  std::vector<std::vector<int64_t>> prompts;
  prompts.reserve(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::string what = "sequence " + std::to_string(i);
    d.check_items(sequences[i], what.c_str());
    prompts.push_back(d.encode_fitted(sequences[i], [&](const std::vector<std::string>& shown) {
      return d.prompt_template.scoring_prefix(shown, d.chat);
    }));
  }
  if (prompts.empty()) return {};
  return d.decode_all(prompts, {}, false);
}

}  // namespace llm4dsr

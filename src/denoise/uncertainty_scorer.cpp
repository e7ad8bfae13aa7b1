#include "llm4dsr/denoise/uncertainty_scorer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include "internal/large_output.h"
#include "internal/parallel.h"
#include "internal/prompt_fit.h"
#include "internal/target_log_prob.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/generation.h"

namespace llm4dsr {

namespace {

constexpr int64_t kGrainSize = 4;
// Exact mode computes the lm_head over as many title positions at a time as fit in this many bytes of
// logits (24 MB; SmolLM2's 49k vocabulary: 128 rows in fp32, 256 in bf16): below glibc's mmap
// threshold (internal/large_output.h), so each chunk reuses the last one's heap memory instead of
// faulting in a fresh mapping.
constexpr int64_t kLogitChunkBytes = internal::kLargeOutputBytes / 4 * 3;

// One micro-batch as the model sees it: `shared` cached positions of the prompt head all sequences
// share, then each row's rest of its prompt, left-padded to `width` columns.
struct MicroBatchLayout {
  std::vector<size_t> sequence;  // index of each row's plan in the chunk
  std::vector<int64_t> lengths;  // each row's tokens after the shared head
  int64_t shared = 0;
  int64_t width = 0;
};

// Exact mode's title pass over one micro-batch whose prompts are in `cache`: the rest of every title
// (after its first token), teacher-forced in one packed pass. Row b holds its sequence's distinct
// titles one after another (row_titles[b]: their positions; L: the widest row's title inputs); each
// title's tokens see the prompt up to the title's own context and the title's earlier tokens, at
// the positions that follow that context, so the row computes what one forward per title would,
// without copying the prompt's keys/values for every title. Adds each title's log-probability to
// event_lp[sequence][event].
void add_title_log_probs(LlamaModel& model, KVCache& cache, const std::vector<ScoringPlan>& plans,
                         const MicroBatchLayout& mb, const std::vector<std::vector<size_t>>& row_titles, int64_t L,
                         int64_t pad_id, std::vector<std::vector<double>>& event_lp) {
  const torch::Device device = model->device();
  const int64_t B = static_cast<int64_t>(mb.sequence.size()), S = mb.shared, T = mb.width, C = S + T;
  auto input = torch::full({B, L}, pad_id, torch::kInt64);
  auto title_positions = torch::zeros({B, L}, torch::kInt64);
  auto token_mask = torch::zeros({B, L}, torch::kInt64);
  auto targets = torch::zeros({B, L}, torch::kInt64);  // the token predicted at each input
  auto slot = torch::zeros({B, L}, torch::kInt64);     // index into `titles` of each input
  auto allowed = torch::zeros({B, 1, L, C + L}, torch::kBool);
  auto input_a = input.accessor<int64_t, 2>();
  auto title_positions_a = title_positions.accessor<int64_t, 2>();
  auto token_mask_a = token_mask.accessor<int64_t, 2>();
  auto targets_a = targets.accessor<int64_t, 2>();
  auto slot_a = slot.accessor<int64_t, 2>();
  bool* allowed_p = allowed.data_ptr<bool>();
  struct PackedTitle {
    size_t sequence;  // index into plans
    int64_t event;
  };
  std::vector<PackedTitle> titles;
  for (int64_t b = 0; b < B; ++b) {
    const ScoringPlan& p = plans[mb.sequence[static_cast<size_t>(b)]];
    const int64_t pad = T - mb.lengths[static_cast<size_t>(b)];
    int64_t at = 0;
    for (size_t k : row_titles[static_cast<size_t>(b)]) {
      const auto& ids = p.scored_ids[k];
      const int64_t context = p.context_length[k];
      LLM4DSR_CHECK(context > S, "UncertaintyScorer: title context " << context << " within the shared head of " << S
                                                                      << " tokens (shared_prefix_length keeps it after)");
      const auto t = static_cast<int64_t>(titles.size());
      titles.push_back({mb.sequence[static_cast<size_t>(b)], p.event[k]});
      for (size_t j = 0; j + 1 < ids.size(); ++j) {
        const int64_t col = at + static_cast<int64_t>(j);
        input_a[b][col] = ids[j];
        targets_a[b][col] = ids[j + 1];
        token_mask_a[b][col] = 1;
        title_positions_a[b][col] = context + static_cast<int64_t>(j);
        slot_a[b][col] = t;
        // Keys: the shared head, this row's prefix tokens S .. context - 1 (cache columns
        // S + pad ..), and the title's own inputs up to this one.
        bool* keys = allowed_p + (b * L + col) * (C + L);
        std::fill(keys, keys + S, true);
        std::fill(keys + S + pad, keys + pad + context, true);
        std::fill(keys + C + at, keys + C + col + 1, true);
      }
      at += static_cast<int64_t>(ids.size()) - 1;
    }
    for (int64_t col = at; col < L; ++col) allowed_p[(b * L + col) * (C + L) + C + col] = true;  // pads: themselves
  }
  auto hidden = model->forward_hidden_packed(input.to(device), title_positions.to(device), allowed.to(device), &cache,
                                             token_mask.to(device));  // [B, L, H]
  // The lm_head only at real title inputs, a bounded number of rows at a time: log p(target) =
  // logit[target] - logsumexp(logits), without a log_softmax over the vocabulary.
  const auto valid = token_mask.reshape({-1}).nonzero().squeeze(1);
  hidden = hidden.reshape({B * L, -1}).index_select(0, valid.to(device));
  const auto target = targets.reshape({-1}).index_select(0, valid).to(device);
  const int64_t N = valid.size(0);
  auto token_lp = torch::empty({N}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  const int64_t logit_rows =
      std::max<int64_t>(1, kLogitChunkBytes / (model->config().vocab_size * static_cast<int64_t>(hidden.element_size())));
  for (int64_t r = 0; r < N; r += logit_rows) {
    const int64_t n = std::min(logit_rows, N - r);
    auto logits = model->logits_from_hidden(hidden.narrow(0, r, n).unsqueeze(0), torch::Tensor()).squeeze(0);
    token_lp.narrow(0, r, n).copy_(internal::target_log_prob(logits, target.narrow(0, r, n)));
  }
  hidden = torch::Tensor();
  auto sums = torch::zeros({static_cast<int64_t>(titles.size())}, torch::kFloat64);
  sums.index_add_(0, slot.reshape({-1}).index_select(0, valid), token_lp.to(torch::kCPU, torch::kFloat64));
  auto sa = sums.accessor<double, 1>();
  for (size_t t = 0; t < titles.size(); ++t)
    event_lp[titles[t].sequence][static_cast<size_t>(titles[t].event)] += sa[static_cast<int64_t>(t)];
}

}  // namespace

std::string to_string(ScoringMode mode) { return mode == ScoringMode::kExact ? "exact" : "first-token"; }

ScoringMode parse_scoring_mode(std::string_view name) {
  if (name == "first-token") return ScoringMode::kFirstToken;
  if (name == "exact") return ScoringMode::kExact;
  LLM4DSR_THROW("unknown scoring mode '" << name << "' (expected 'first-token' or 'exact')");
}

std::string to_string(FirstTokenContext context) {
  return context == FirstTokenContext::kStandalone ? "standalone" : "in-context";
}

FirstTokenContext parse_first_token_context(std::string_view name) {
  if (name == "in-context") return FirstTokenContext::kInContext;
  if (name == "standalone") return FirstTokenContext::kStandalone;
  LLM4DSR_THROW("unknown first_token_context '" << name << "' (expected 'in-context' or 'standalone')");
}

UncertaintyScorer::UncertaintyScorer(LlamaModel model, std::shared_ptr<const Tokenizer> tokenizer,
                                     ScorerOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  LLM4DSR_CHECK(model_, "UncertaintyScorer: no model");
  LLM4DSR_CHECK(tokenizer_, "UncertaintyScorer: no tokenizer");
  LLM4DSR_CHECK(options_.micro_batch_size > 0, "UncertaintyScorer: micro_batch_size must be > 0, got "
                                                   << options_.micro_batch_size);
  LLM4DSR_CHECK(options_.chunk_size > 0, "UncertaintyScorer: chunk_size must be > 0, got " << options_.chunk_size);
  LLM4DSR_CHECK(options_.max_prompt_tokens >= 0, "UncertaintyScorer: max_prompt_tokens must be >= 0 (0 = no limit), got "
                                                     << options_.max_prompt_tokens);
  LLM4DSR_CHECK(!(options_.mode == ScoringMode::kExact && options_.first_token_context == FirstTokenContext::kStandalone),
                "UncertaintyScorer: first_token_context 'standalone' applies to mode 'first-token' only");
  LLM4DSR_CHECK(!(options_.include_closing_delimiter && options_.mode != ScoringMode::kExact),
                "UncertaintyScorer: include_closing_delimiter applies to mode 'exact' only");
  LLM4DSR_CHECK(tokenizer_->vocab_size() <= model_->config().vocab_size,
                "UncertaintyScorer: the tokenizer has " << tokenizer_->vocab_size() << " ids, the model's vocabulary "
                                                        << model_->config().vocab_size);
  template_ = options_.prompt_template ? *options_.prompt_template : PromptTemplate::get(options_.template_name);
  template_.validate();
  chat_ = options_.chat ? *options_.chat : ChatFormat::get(options_.chat_format);
  add_bos_ = options_.add_bos && chat_.add_bos && tokenizer_->bos_id() >= 0;
}

std::vector<std::string> UncertaintyScorer::titles_of(const std::vector<int64_t>& items, const Catalog& catalog) const {
  LLM4DSR_CHECK(!items.empty(), "the sequence is empty");
  std::vector<std::string> titles;
  titles.reserve(items.size());
  for (size_t k = 0; k < items.size(); ++k) {
    const int64_t id = items[k];
    LLM4DSR_CHECK(id >= 1 && id <= catalog.size(),
                  "position " << k << ": item id " << id << " is outside the catalogue's 1.." << catalog.size());
    LLM4DSR_CHECK(catalog.has_title(id), "position " << k << ": item " << id << " (external id '"
                                                     << catalog.external_id(id) << "') has no title");
    titles.push_back(catalog.title(id));
  }
  return titles;
}

ScoringPlan UncertaintyScorer::plan(const std::vector<int64_t>& items, const Catalog& catalog) const {
  const std::vector<std::string> titles = titles_of(items, catalog);
  const Tokenizer& tok = *tokenizer_;
  const auto n = static_cast<int64_t>(titles.size());
  const auto limit = static_cast<size_t>(options_.max_prompt_tokens);

  // Same criterion as InstructionBuilder::tokenize: BOS + prompt within max_prompt_tokens.
  const auto shown = [&](int64_t dropped) { return std::vector<std::string>(titles.begin() + dropped, titles.end()); };
  ScoringPlan plan;
  plan.dropped_items = internal::items_to_drop(n, limit, [&](int64_t dropped) {
    return tok.encode(template_.render_prompt(shown(dropped), chat_), add_bos_, false).size();
  });

  const std::string prefix = template_.scoring_prefix(shown(plan.dropped_items), chat_);
  const std::vector<TokenId> prefix_ids = tok.encode(prefix, add_bos_, false);
  plan.prefix_ids.assign(prefix_ids.begin(), prefix_ids.end());
  const auto P = static_cast<int64_t>(prefix_ids.size());
  const std::string suffix = options_.include_closing_delimiter ? template_.closing_delimiter() : std::string();
  const bool first_only = options_.mode == ScoringMode::kFirstToken;

  plan.context_length.assign(titles.size(), 0);
  plan.scored_ids.assign(titles.size(), {});
  plan.event.assign(titles.size(), -1);
  std::map<std::string, size_t> by_title;  // sanitised title -> first position (duplicates encoded once)
  std::map<std::pair<int64_t, std::vector<int64_t>>, int64_t> events;
  for (int64_t k = plan.dropped_items; k < n; ++k) {
    const auto ks = static_cast<size_t>(k);
    const std::string title = template_.sanitize_title(titles[ks]);
    const auto seen = by_title.find(title);
    if (seen != by_title.end()) {
      plan.context_length[ks] = plan.context_length[seen->second];
      plan.scored_ids[ks] = plan.scored_ids[seen->second];
      plan.event[ks] = plan.event[seen->second];
      continue;
    }
    by_title.emplace(title, ks);
    std::vector<int64_t> ids;
    int64_t context = P;
    if (options_.first_token_context == FirstTokenContext::kStandalone) {
      const auto alone = tok.encode(title, false, false);
      LLM4DSR_CHECK(!alone.empty(), "position " << k << ": the title '" << title << "' encodes to no token");
      ids.push_back(alone.front());
    } else {
      const std::vector<TokenId> joint = tok.encode(prefix + title + suffix, add_bos_, false);
      const size_t d = internal::common_prefix(prefix_ids, joint);
      LLM4DSR_CHECK(d >= 1 && d < joint.size(), "position " << k << ": the title '" << title
                                                              << "' adds no token after the scoring prefix");
      context = static_cast<int64_t>(d);
      ids.assign(joint.begin() + static_cast<std::ptrdiff_t>(d), joint.end());
      if (first_only) ids.resize(1);
    }
    const auto inserted = events.emplace(std::make_pair(context, ids), static_cast<int64_t>(events.size()));
    plan.context_length[ks] = context;
    plan.scored_ids[ks] = std::move(ids);
    plan.event[ks] = inserted.first->second;
  }
  return plan;
}

int64_t UncertaintyScorer::shared_prefix_length(const std::vector<ScoringPlan>& plans) {
  if (plans.empty()) return 0;
  size_t shared = plans.front().prefix_ids.size();
  for (const auto& p : plans) {
    shared = std::min(shared, internal::common_prefix(plans.front().prefix_ids, p.prefix_ids));
    // Logits are read at context_length - 1, which must stay in the per-sequence part.
    for (size_t k = 0; k < p.event.size(); ++k)
      if (p.event[k] >= 0) shared = std::min(shared, static_cast<size_t>(std::max<int64_t>(0, p.context_length[k] - 1)));
  }
  return static_cast<int64_t>(shared);
}

std::vector<NoiseScores> UncertaintyScorer::score_plans(const std::vector<std::vector<int64_t>>& items,
                                                        std::vector<ScoringPlan>& plans) const {
  torch::InferenceMode inference;
  LlamaModel model = model_;  // the holder's operator-> is const in a const member
  const torch::Device device = model->device();
  const int64_t pad_id = std::max<int64_t>(0, tokenizer_->pad_id());
  const bool exact = options_.mode == ScoringMode::kExact;

  // The prompt head every plan shares, run once: its keys/values seed each micro-batch's cache, and
  // the micro-batches run over the rest of their prompts only.
  // Not with "dynamic" RoPE, whose frequencies follow each forward's longest position: the head run
  // alone would get those of a short prompt.
  const bool share = options_.share_prefix && model->config().rope_scaling.rope_type != "dynamic";
  const int64_t S = share ? shared_prefix_length(plans) : 0;
  KVCache head;
  if (S > 0) {
    const auto& ids = plans.front().prefix_ids;
    head = model->make_cache(1, S);
    model->forward_hidden(torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + S), torch::kInt64).unsqueeze(0).to(device),
                          torch::Tensor(), &head);
  }

  // Per sequence, the log-probability of each distinct event (index = ScoringPlan::event).
  std::vector<std::vector<double>> event_lp(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    int64_t e = 0;
    for (int64_t v : plans[i].event) e = std::max(e, v + 1);
    event_lp[i].assign(static_cast<size_t>(e), 0.0);
  }

  // Longest first, so micro-batches hold similar lengths and the largest allocation comes first.
  std::vector<size_t> order(plans.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return plans[a].prefix_ids.size() > plans[b].prefix_ids.size(); });

  const auto mbs = static_cast<size_t>(options_.micro_batch_size);
  for (size_t start = 0; start < order.size(); start += mbs) {
    const size_t end = std::min(order.size(), start + mbs);
    MicroBatchLayout layout;
    std::vector<std::vector<int64_t>> prefixes;
    for (size_t r = start; r < end; ++r) {
      layout.sequence.push_back(order[r]);
      prefixes.emplace_back(plans[order[r]].prefix_ids.begin() + S, plans[order[r]].prefix_ids.end());
    }
    const PaddedBatch mb = left_pad(prefixes, pad_id, device);
    // T: the width of the per-sequence part; C: every cached position (shared head + that part).
    const int64_t B = mb.input_ids.size(0), T = mb.input_ids.size(1), C = S + T;
    layout.lengths = mb.lengths;
    layout.shared = S;
    layout.width = T;

    // The positions whose logits are read: per row, the last position of each distinct context
    // (almost always only the prefix's last token).
    std::vector<std::vector<int64_t>> row_positions(static_cast<size_t>(B));
    // Per row and event: (column in row_positions, first scored token).
    std::vector<std::vector<std::pair<int64_t, int64_t>>> row_reads(static_cast<size_t>(B));
    // Exact mode: per row, the positions of its distinct titles with more than one token (their first
    // token is read above) and the width L of the packed title pass (the longest row's title tokens).
    std::vector<std::vector<size_t>> row_titles(static_cast<size_t>(B));
    int64_t K = 1, L = 0;
    for (int64_t b = 0; b < B; ++b) {
      const ScoringPlan& p = plans[layout.sequence[static_cast<size_t>(b)]];
      auto& reads = row_reads[static_cast<size_t>(b)];
      reads.assign(event_lp[layout.sequence[static_cast<size_t>(b)]].size(), {-1, -1});
      auto& pos = row_positions[static_cast<size_t>(b)];
      int64_t title_tokens = 0;
      for (size_t k = 0; k < p.event.size(); ++k) {
        const int64_t e = p.event[k];
        if (e < 0 || reads[static_cast<size_t>(e)].first >= 0) continue;  // dropped, or a repeated event
        const int64_t at = T - mb.lengths[static_cast<size_t>(b)] + p.context_length[k] - 1 - S;
        auto it = std::find(pos.begin(), pos.end(), at);
        if (it == pos.end()) it = pos.insert(pos.end(), at);
        reads[static_cast<size_t>(e)] = {static_cast<int64_t>(it - pos.begin()), p.scored_ids[k].front()};
        if (exact && p.scored_ids[k].size() > 1) {
          row_titles[static_cast<size_t>(b)].push_back(k);
          title_tokens += static_cast<int64_t>(p.scored_ids[k].size()) - 1;
        }
      }
      K = std::max<int64_t>(K, static_cast<int64_t>(pos.size()));
      L = std::max(L, title_tokens);
    }
    auto positions = torch::full({B, K}, T - 1, torch::kInt64);
    for (int64_t b = 0; b < B; ++b)
      for (size_t c = 0; c < row_positions[static_cast<size_t>(b)].size(); ++c)
        positions[b][static_cast<int64_t>(c)] = row_positions[static_cast<size_t>(b)][c];

    KVCache cache;
    if (exact || S > 0) cache = model->make_cache(B, C + L);
    if (S > 0) cache.assign_rows(head, torch::zeros({B}, torch::kInt64));  // every row starts with the head
    // Only the read positions go through the last layer's MLP and the lm_head.
    auto logp = model->forward(mb.input_ids, mb.attention_mask, cache.allocated() ? &cache : nullptr, positions.to(device))
                    .to(torch::kFloat32)
                    .log_softmax(-1);  // [B,K,V]

    // One gather on the device, one transfer: flat index (b * K + column) * V + token.
    const int64_t V = logp.size(2);
    std::vector<int64_t> flat;
    for (int64_t b = 0; b < B; ++b)
      for (const auto& [col, token] : row_reads[static_cast<size_t>(b)])
        if (col >= 0) flat.push_back((b * K + col) * V + token);
    auto read = logp.reshape({-1}).index_select(0, torch::tensor(flat, torch::kInt64).to(device)).to(torch::kCPU, torch::kFloat64);
    logp = torch::Tensor();
    auto ra = read.accessor<double, 1>();
    int64_t f = 0;
    for (int64_t b = 0; b < B; ++b) {
      auto& lp = event_lp[layout.sequence[static_cast<size_t>(b)]];
      const auto& reads = row_reads[static_cast<size_t>(b)];
      for (size_t e = 0; e < reads.size(); ++e)
        if (reads[e].first >= 0) lp[e] = ra[f++];
    }
    if (exact && L > 0) add_title_log_probs(model, cache, plans, layout, row_titles, L, pad_id, event_lp);
  }

  std::vector<NoiseScores> out(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    const ScoringPlan& p = plans[i];
    const auto& lp = event_lp[i];
    NoiseScores& s = out[i];
    s.items = items[i];
    s.dropped_items = p.dropped_items;
    const size_t n = p.event.size();
    s.log_prob.assign(n, -std::numeric_limits<float>::infinity());
    s.prob.assign(n, 0.0f);
    s.rank.assign(n, 0);
    double max_lp = -std::numeric_limits<double>::infinity();
    for (double v : lp) max_lp = std::max(max_lp, v);
    double z = 0.0;
    for (double v : lp) z += std::exp(v - max_lp);
    const double log_z = max_lp + std::log(z);
    std::vector<double> position_lp(n, -std::numeric_limits<double>::infinity());
    for (size_t k = 0; k < n; ++k) {
      if (p.event[k] < 0) continue;
      position_lp[k] = lp[static_cast<size_t>(p.event[k])];
      s.log_prob[k] = static_cast<float>(position_lp[k]);
      s.prob[k] = std::isfinite(log_z) ? static_cast<float>(std::exp(position_lp[k] - log_z)) : 0.0f;
    }
    std::vector<size_t> by_score(n);
    std::iota(by_score.begin(), by_score.end(), size_t{0});
    std::stable_sort(by_score.begin(), by_score.end(),
                     [&](size_t a, size_t b) { return position_lp[a] > position_lp[b]; });
    for (size_t r = 0; r < n; ++r) s.rank[by_score[r]] = static_cast<int64_t>(r) + 1;
  }
  return out;
}

void UncertaintyScorer::score_chunks(const std::vector<std::vector<int64_t>>& sequences, const Catalog& catalog,
                                     const std::function<void(size_t, std::vector<NoiseScores>&&)>& sink) const {
  const auto chunk = static_cast<size_t>(options_.chunk_size);
  for (size_t first = 0; first < sequences.size(); first += chunk) {
    const size_t end = std::min(sequences.size(), first + chunk);
    std::vector<std::vector<int64_t>> items(sequences.begin() + static_cast<std::ptrdiff_t>(first),
                                            sequences.begin() + static_cast<std::ptrdiff_t>(end));
    std::vector<ScoringPlan> plans(items.size());
    internal::parallel_over(items.size(), kGrainSize, [&](size_t i) {
      try {
        plans[i] = plan(items[i], catalog);
      } catch (const Error& e) {
        LLM4DSR_THROW("UncertaintyScorer: sequence " << first + i << ": " << e.what());
      }
    });
    sink(first, score_plans(items, plans));
  }
}

std::vector<NoiseScores> UncertaintyScorer::score(const std::vector<std::vector<int64_t>>& sequences,
                                                  const Catalog& catalog) const {
  std::vector<NoiseScores> out;
  out.reserve(sequences.size());
  score_chunks(sequences, catalog, [&](size_t, std::vector<NoiseScores>&& scores) {
    for (auto& s : scores) out.push_back(std::move(s));
  });
  return out;
}

std::vector<NoiseScores> UncertaintyScorer::score(const SequenceSet& sequences, const Catalog& catalog) const {
  std::vector<std::vector<int64_t>> items;
  items.reserve(sequences.size());
  for (const auto& s : sequences) items.push_back(s.items);
  return score(items, catalog);
}

}  // namespace llm4dsr

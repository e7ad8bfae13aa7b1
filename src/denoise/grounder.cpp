#include "llm4dsr/denoise/grounder.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <unordered_map>
#include <utility>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/HNSW.h>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

using faiss_idx = faiss::Index::idx_t;

void GrounderOptions::validate() const {
  LLM4DSR_CHECK(index == "auto" || index == "flat" || index == "hnsw",
                "GrounderOptions.index must be \"auto\", \"flat\" or \"hnsw\", got \"" << index << "\"");
  LLM4DSR_CHECK(hnsw_min_items >= 0, "GrounderOptions.hnsw_min_items must be >= 0, got " << hnsw_min_items);
  LLM4DSR_CHECK(hnsw_m >= 2, "GrounderOptions.hnsw_m must be >= 2, got " << hnsw_m);
  LLM4DSR_CHECK(ef_construction >= 1, "GrounderOptions.ef_construction must be >= 1, got " << ef_construction);
  LLM4DSR_CHECK(ef_search >= 1, "GrounderOptions.ef_search must be >= 1, got " << ef_search);
}

struct Grounder::Impl {
  std::vector<std::string> titles;  // [i] = item i + 1
  std::unordered_map<std::string, std::vector<int64_t>> by_title;  // normalised title -> ids, ascending
  std::unique_ptr<faiss::Index> index;
  std::string type;
  int64_t n = 0, d = 0;
  std::atomic<int64_t> ef_search{64};
  bool exact_title_match = true;

  // Exact search (the HNSW's own flat storage when the graph is used), for the rare query whose
  // graph walk cannot produce k admissible items.
  const faiss::Index& exact_index() const {
    if (type == "hnsw") return *static_cast<const faiss::IndexHNSW&>(*index).storage;
    return *index;
  }

  void raw_search(const faiss::Index& idx, const float* q, int64_t rows, int64_t k, float* dist, faiss_idx* labels,
                  bool use_params) const {
    faiss::SearchParametersHNSW params;
    params.efSearch = static_cast<int>(std::max<int64_t>(ef_search.load(), k));
    try {
      idx.search(rows, q, k, dist, labels, use_params && type == "hnsw" ? &params : nullptr);
    } catch (const faiss::FaissException& e) {
      LLM4DSR_THROW("Grounder: FAISS search failed: " << e.what());
    }
  }
};

namespace {

void normalize_rows(float* data, int64_t rows, int64_t dim, const char* what) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = data + i * dim;
    double sq = 0.0;
    for (int64_t j = 0; j < dim; ++j) {
      LLM4DSR_CHECK(std::isfinite(row[j]), what << " row " << i << " holds a non-finite value at column " << j);
      sq += static_cast<double>(row[j]) * row[j];
    }
    // A zero vector stays zero: every similarity with it is 0.
    if (sq > 0.0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(sq));
      for (int64_t j = 0; j < dim; ++j) row[j] *= inv;
    }
  }
}

std::vector<int64_t> sorted_unique(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

std::string Grounder::normalize_title(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isspace(u)) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(static_cast<char>(std::tolower(u)));
  }
  return out;
}

Grounder::Grounder(std::vector<std::string> titles, const float* embeddings, int64_t rows, int64_t dim,
                   GrounderOptions options)
    : impl_(std::make_unique<Impl>()) {
  options.validate();
  LLM4DSR_CHECK(rows >= 1, "Grounder: the catalogue is empty (expected at least one item embedding)");
  LLM4DSR_CHECK(dim >= 1, "Grounder: embedding dimension must be >= 1, got " << dim);
  LLM4DSR_CHECK(embeddings != nullptr, "Grounder: embeddings are null");
  LLM4DSR_CHECK(static_cast<int64_t>(titles.size()) == rows,
                "Grounder: " << titles.size() << " titles but " << rows << " embedding rows (row i is item i + 1)");
  Impl& m = *impl_;
  m.n = rows;
  m.d = dim;
  m.ef_search = options.ef_search;
  m.exact_title_match = options.exact_title_match;
  m.titles = std::move(titles);
  for (int64_t i = 0; i < rows; ++i) {
    const std::string key = normalize_title(m.titles[static_cast<size_t>(i)]);
    if (!key.empty()) m.by_title[key].push_back(i + 1);
  }

  const bool hnsw = options.index == "hnsw" || (options.index == "auto" && rows >= options.hnsw_min_items);
  try {
    if (hnsw) {
      auto index = std::make_unique<faiss::IndexHNSWFlat>(static_cast<int>(dim), static_cast<int>(options.hnsw_m),
                                                          faiss::METRIC_INNER_PRODUCT);
      index->hnsw.efConstruction = static_cast<int>(options.ef_construction);
      index->hnsw.efSearch = static_cast<int>(options.ef_search);
      m.index = std::move(index);
      m.type = "hnsw";
    } else {
      m.index = std::make_unique<faiss::IndexFlatIP>(dim);
      m.type = "flat";
    }
    // Normalised in chunks: the index keeps its own copy, so a whole normalised copy of a large
    // catalogue (2.3 GB for 1M x 576) would only double the peak memory.
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / dim);
    std::vector<float> buffer;
    for (int64_t begin = 0; begin < rows; begin += chunk) {
      const int64_t count = std::min(chunk, rows - begin);
      buffer.assign(embeddings + begin * dim, embeddings + (begin + count) * dim);
      for (int64_t i = 0; i < count; ++i) {
        for (int64_t j = 0; j < dim; ++j)
          LLM4DSR_CHECK(std::isfinite(buffer[static_cast<size_t>(i * dim + j)]),
                        "Grounder: the embedding of item " << begin + i + 1 << " (row " << begin + i
                                                           << ") holds a non-finite value at column " << j);
      }
      normalize_rows(buffer.data(), count, dim, "Grounder: embedding row");
      m.index->add(count, buffer.data());
    }
  } catch (const faiss::FaissException& e) {
    LLM4DSR_THROW("Grounder: building the FAISS index failed: " << e.what());
  }
}

Grounder::Grounder(std::vector<std::string> titles, const EmbeddingMatrix& embeddings, GrounderOptions options)
    : Grounder(std::move(titles), embeddings.data(), embeddings.rows(), embeddings.cols(), std::move(options)) {}

Grounder Grounder::from_catalog(const Catalog& catalog, const EmbeddingMatrix& embeddings, GrounderOptions options) {
  LLM4DSR_CHECK(embeddings.rows() == catalog.size(),
                "Grounder: the catalogue has " << catalog.size() << " items but the embeddings have "
                                               << embeddings.rows() << " rows");
  std::vector<std::string> titles;
  titles.reserve(static_cast<size_t>(catalog.size()));
  for (int64_t id = 1; id <= catalog.size(); ++id) titles.push_back(catalog.title(id));
  return Grounder(std::move(titles), embeddings, std::move(options));
}

Grounder Grounder::from_catalog(const Catalog& catalog, const Embedder& embedder, GrounderOptions options) {
  std::vector<std::string> texts;
  texts.reserve(static_cast<size_t>(catalog.size()));
  for (int64_t id = 1; id <= catalog.size(); ++id)
    texts.push_back(catalog.has_title(id) ? catalog.title(id) : catalog.external_id(id));
  return from_catalog(catalog, embedder.embed(texts), std::move(options));
}

Grounder::~Grounder() = default;
Grounder::Grounder(Grounder&&) noexcept = default;
Grounder& Grounder::operator=(Grounder&&) noexcept = default;

int64_t Grounder::size() const { return impl_->n; }
int64_t Grounder::dim() const { return impl_->d; }
std::string Grounder::index_type() const { return impl_->type; }
int64_t Grounder::ef_search() const { return impl_->ef_search.load(); }
void Grounder::set_ef_search(int64_t ef) {
  LLM4DSR_CHECK(ef >= 1, "Grounder: ef_search must be >= 1, got " << ef);
  impl_->ef_search = ef;
}

const std::string& Grounder::title(int64_t item_id) const {
  LLM4DSR_CHECK(item_id >= 1 && item_id <= impl_->n, "Grounder: item id " << item_id << " outside 1.." << impl_->n);
  return impl_->titles[static_cast<size_t>(item_id - 1)];
}

void Grounder::search(const float* queries, int64_t rows, int64_t k, int64_t* ids, float* similarities,
                      const std::vector<std::vector<int64_t>>& exclude) const {
  const Impl& m = *impl_;
  LLM4DSR_CHECK(rows >= 0, "Grounder::search: rows must be >= 0, got " << rows);
  LLM4DSR_CHECK(k >= 1 && k <= m.n, "Grounder::search: k must be in 1.." << m.n << " (catalogue size), got " << k);
  LLM4DSR_CHECK(exclude.empty() || static_cast<int64_t>(exclude.size()) == rows,
                "Grounder::search: exclude must be empty or hold one list per query (" << rows << "), got "
                                                                                       << exclude.size());
  if (rows == 0) return;
  LLM4DSR_CHECK(queries && ids && similarities, "Grounder::search: null query or output buffer");

  std::vector<std::vector<int64_t>> excl(exclude.empty() ? 0 : static_cast<size_t>(rows));
  int64_t max_excl = 0;
  for (size_t q = 0; q < excl.size(); ++q) {
    for (int64_t id : exclude[q])
      LLM4DSR_CHECK(id >= 1 && id <= m.n,
                    "Grounder: exclude[" << q << "] holds item id " << id << ", outside the catalogue's 1.." << m.n);
    excl[q] = sorted_unique(exclude[q]);
    const int64_t e = static_cast<int64_t>(excl[q].size());
    LLM4DSR_CHECK(k <= m.n - e, "Grounder::search: query " << q << " excludes " << e << " of " << m.n
                                                           << " items, fewer than k = " << k << " remain");
    max_excl = std::max(max_excl, e);
  }

  std::vector<float> normalized(queries, queries + rows * m.d);
  normalize_rows(normalized.data(), rows, m.d, "Grounder::search: query");

  // Queries still short of k admissible results; all are searched with the same width per round.
  std::vector<int64_t> pending(static_cast<size_t>(rows));
  for (int64_t q = 0; q < rows; ++q) pending[static_cast<size_t>(q)] = q;
  int64_t width = std::min(m.n, k + max_excl);
  bool exact_fallback = false;
  std::vector<float> batch, dist;
  std::vector<faiss_idx> labels;
  while (!pending.empty()) {
    const int64_t p = static_cast<int64_t>(pending.size());
    const float* qptr = normalized.data();
    if (p != rows) {
      batch.resize(static_cast<size_t>(p * m.d));
      for (int64_t i = 0; i < p; ++i)
        std::copy_n(normalized.data() + pending[static_cast<size_t>(i)] * m.d, m.d, batch.data() + i * m.d);
      qptr = batch.data();
    }
    dist.resize(static_cast<size_t>(p * width));
    labels.resize(static_cast<size_t>(p * width));
    m.raw_search(exact_fallback ? m.exact_index() : *m.index, qptr, p, width, dist.data(), labels.data(),
                 !exact_fallback);
    std::vector<int64_t> still;
    for (int64_t i = 0; i < p; ++i) {
      const int64_t q = pending[static_cast<size_t>(i)];
      const std::vector<int64_t>* ex = excl.empty() ? nullptr : &excl[static_cast<size_t>(q)];
      int64_t got = 0;
      for (int64_t j = 0; j < width && got < k; ++j) {
        const faiss_idx label = labels[static_cast<size_t>(i * width + j)];
        if (label < 0) continue;  // HNSW pads with -1 when its walk finds fewer than width items
        const int64_t id = static_cast<int64_t>(label) + 1;
        if (ex && std::binary_search(ex->begin(), ex->end(), id)) continue;
        ids[q * k + got] = id;
        similarities[q * k + got] = dist[static_cast<size_t>(i * width + j)];
        ++got;
      }
      if (got < k) still.push_back(q);
    }
    if (still.empty()) break;
    LLM4DSR_CHECK(!exact_fallback, "Grounder::search: exact search returned fewer than k = " << k
                                                                                             << " admissible items");
    if (width == m.n) exact_fallback = true;  // the graph walk missed items: scan them all
    width = std::min(m.n, width * 2);
    pending = std::move(still);
  }
}

void Grounder::search(const EmbeddingMatrix& queries, int64_t k, ItemIdMatrix& ids, EmbeddingMatrix& similarities,
                      const std::vector<std::vector<int64_t>>& exclude) const {
  LLM4DSR_CHECK(queries.cols() == impl_->d, "Grounder::search: queries have dimension " << queries.cols()
                                                                                          << ", the catalogue's embeddings "
                                                                                          << impl_->d);
  LLM4DSR_CHECK(k >= 1 && k <= impl_->n,
                "Grounder::search: k must be in 1.." << impl_->n << " (catalogue size), got " << k);
  ids.resize(queries.rows(), k);
  similarities.resize(queries.rows(), k);
  search(queries.data(), queries.rows(), k, ids.data(), similarities.data(), exclude);
}

const float* Grounder::normalized_embeddings() const {
  return static_cast<const faiss::IndexFlat&>(impl_->exact_index()).get_xb();
}

std::optional<int64_t> Grounder::exact_match(std::string_view text, const std::vector<int64_t>& exclude) const {
  const std::string key = normalize_title(text);
  if (key.empty()) return std::nullopt;
  auto it = impl_->by_title.find(key);
  if (it == impl_->by_title.end()) return std::nullopt;
  for (int64_t id : it->second)
    if (std::find(exclude.begin(), exclude.end(), id) == exclude.end()) return id;
  return std::nullopt;
}

std::vector<GroundingResult> Grounder::ground(const EmbeddingMatrix& embeddings, const std::vector<std::string>& texts,
                                              const std::vector<std::vector<int64_t>>& exclude) const {
  const Impl& m = *impl_;
  const int64_t rows = embeddings.rows();
  LLM4DSR_CHECK(embeddings.cols() == m.d || rows == 0, "Grounder::ground: embeddings have dimension "
                                                           << embeddings.cols() << ", the catalogue's " << m.d);
  LLM4DSR_CHECK(texts.empty() || static_cast<int64_t>(texts.size()) == rows,
                "Grounder::ground: " << texts.size() << " texts for " << rows << " embeddings (expected one each)");
  LLM4DSR_CHECK(exclude.empty() || static_cast<int64_t>(exclude.size()) == rows,
                "Grounder::ground: exclude must be empty or hold one list per query (" << rows << "), got "
                                                                                       << exclude.size());
  for (size_t q = 0; q < exclude.size(); ++q)
    for (int64_t id : exclude[q])
      LLM4DSR_CHECK(id >= 1 && id <= m.n,
                    "Grounder: exclude[" << q << "] holds item id " << id << ", outside the catalogue's 1.." << m.n);

  std::vector<GroundingResult> out(static_cast<size_t>(rows));
  std::vector<int64_t> pending;
  static const std::vector<int64_t> none;
  for (int64_t q = 0; q < rows; ++q) {
    const auto& ex = exclude.empty() ? none : exclude[static_cast<size_t>(q)];
    if (!texts.empty() && m.exact_title_match) {
      if (auto id = exact_match(texts[static_cast<size_t>(q)], ex)) {
        out[static_cast<size_t>(q)] = {*id, 1.0f, true};
        continue;
      }
    }
    pending.push_back(q);
  }
  if (pending.empty()) return out;
  EmbeddingMatrix queries(static_cast<int64_t>(pending.size()), m.d);
  std::vector<std::vector<int64_t>> pending_exclude;
  for (size_t i = 0; i < pending.size(); ++i) {
    queries.row(static_cast<int64_t>(i)) = embeddings.row(pending[i]);
    if (!exclude.empty()) pending_exclude.push_back(exclude[static_cast<size_t>(pending[i])]);
  }
  std::vector<int64_t> ids(pending.size());
  std::vector<float> sims(pending.size());
  search(queries.data(), queries.rows(), 1, ids.data(), sims.data(), pending_exclude);
  for (size_t i = 0; i < pending.size(); ++i) out[static_cast<size_t>(pending[i])] = {ids[i], sims[i], false};
  return out;
}

std::vector<GroundingResult> Grounder::ground(const std::vector<std::string>& texts, const Embedder& embedder,
                                              const std::vector<std::vector<int64_t>>& exclude) const {
  const Impl& m = *impl_;
  const int64_t rows = static_cast<int64_t>(texts.size());
  LLM4DSR_CHECK(embedder.dim() == m.d, "Grounder::ground: the embedder gives dimension " << embedder.dim()
                                                                                          << ", the catalogue's is " << m.d);
  LLM4DSR_CHECK(exclude.empty() || static_cast<int64_t>(exclude.size()) == rows,
                "Grounder::ground: exclude must be empty or hold one list per text (" << rows << "), got "
                                                                                      << exclude.size());
  std::vector<GroundingResult> out(static_cast<size_t>(rows));
  std::vector<size_t> pending;
  std::vector<std::string> pending_texts;
  std::vector<std::vector<int64_t>> pending_exclude;
  static const std::vector<int64_t> none;
  for (size_t q = 0; q < texts.size(); ++q) {
    const auto& ex = exclude.empty() ? none : exclude[q];
    for (int64_t id : ex)
      LLM4DSR_CHECK(id >= 1 && id <= m.n,
                    "Grounder: exclude[" << q << "] holds item id " << id << ", outside the catalogue's 1.." << m.n);
    if (m.exact_title_match) {
      if (auto id = exact_match(texts[q], ex)) {
        out[q] = {*id, 1.0f, true};
        continue;
      }
    }
    pending.push_back(q);
    pending_texts.push_back(texts[q]);
    if (!exclude.empty()) pending_exclude.push_back(ex);
  }
  if (pending.empty()) return out;
  // Texts already resolved are not embedded at all: the model's forward is the expensive part.
  const std::vector<GroundingResult> found = ground(embedder.embed(pending_texts), {}, pending_exclude);
  for (size_t i = 0; i < pending.size(); ++i) out[pending[i]] = found[i];
  return out;
}

}  // namespace llm4dsr

// Grounder: maps a generated item description to the closest catalogue item (LLM4DSR paper section
// 3.3, Eq. 4: s'_k = argmin_v f(text_suggest, text(v)), f = embedding similarity).
//
// The catalogue's embeddings (row i = item i + 1) are L2-normalised and indexed for inner-product
// search, so similarities are cosines in [-1, 1]. Small catalogues use an exact index (FAISS
// IndexFlatIP); large ones an HNSW graph (IndexHNSWFlat, inner product, M = 32), whose recall is
// traded against speed by ef_search. FAISS stays behind the pimpl.
//
// The graph costs its build: at 1M items x 576 on two cores, exact search answers about 320
// queries/s and HNSW (M = 16) about 1,500, but the graph takes 8 minutes to build on clustered
// embeddings and over 20 on structureless ones (benchmarks/bench_grounding.py). A one-off job that
// grounds a few thousand suggestions is faster with index = "flat"; a service that keeps the index
// and answers many queries is faster with HNSW.
//
// ground() first looks for a catalogue title equal to the text up to case and white space (the
// model often reproduces a title exactly): such a text returns that item with similarity 1 and
// exact = true without a search. Items can be excluded per query (those already in the sequence,
// the one being replaced); search then asks for k + |exclude| neighbours, drops excluded ones and
// widens the search when too few remain.
//
// search() and ground() are const and safe to call from several threads at once; set_ef_search()
// must not race with them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "llm4dsr/denoise/embedder.h"

namespace llm4dsr {

class Catalog;

struct GrounderOptions {
  std::string index = "auto";  // "auto" | "flat" | "hnsw"
  int64_t hnsw_min_items = 50000;  // "auto" picks HNSW from this catalogue size on
  int64_t hnsw_m = 32;
  int64_t ef_construction = 40;  // FAISS's default
  int64_t ef_search = 64;
  bool exact_title_match = true;

  void validate() const;
};

struct GroundingResult {
  int64_t item_id = 0;     // internal id 1..N
  float similarity = 0.0f;  // cosine; 1 for an exact title match
  bool exact = false;       // found by the title short-cut, not by search
};

using ItemIdMatrix = Eigen::Matrix<int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class Grounder {
 public:
  // titles[i] is item i + 1's title ("" for none); embeddings is row-major float32 [N, D] with
  // N == titles.size(). The rows are copied once, normalised, into the index. Non-finite values
  // and a size mismatch throw Error naming the item / sizes.
  Grounder(std::vector<std::string> titles, const float* embeddings, int64_t rows, int64_t dim,
           GrounderOptions options = {});
  Grounder(std::vector<std::string> titles, const EmbeddingMatrix& embeddings, GrounderOptions options = {});
  // Titles from the catalogue (ids 1..N).
  static Grounder from_catalog(const Catalog& catalog, const EmbeddingMatrix& embeddings, GrounderOptions options = {});
  // Embeds the catalogue's titles (items without a title embed their external id) with `embedder`.
  static Grounder from_catalog(const Catalog& catalog, const Embedder& embedder, GrounderOptions options = {});

  ~Grounder();
  Grounder(Grounder&&) noexcept;
  Grounder& operator=(Grounder&&) noexcept;

  int64_t size() const;  // N
  int64_t dim() const;   // D
  std::string index_type() const;  // "flat" or "hnsw"
  int64_t ef_search() const;
  void set_ef_search(int64_t ef);
  const std::string& title(int64_t item_id) const;
  // The L2-normalised catalogue embeddings the index holds, row-major [N, D] (row i = item i + 1);
  // valid while the Grounder lives. The Python binding exposes it as a read-only view.
  const float* normalized_embeddings() const;

  // Top-k items by cosine for `rows` queries (row-major [rows, dim]), written to ids[rows * k]
  // (internal ids 1..N, best first) and similarities[rows * k]. exclude, when non-empty, holds one
  // list of item ids per query that never appear in its results. k must be in 1..N - |exclude|.
  void search(const float* queries, int64_t rows, int64_t k, int64_t* ids, float* similarities,
              const std::vector<std::vector<int64_t>>& exclude = {}) const;
  void search(const EmbeddingMatrix& queries, int64_t k, ItemIdMatrix& ids, EmbeddingMatrix& similarities,
              const std::vector<std::vector<int64_t>>& exclude = {}) const;

  // The catalogue item whose title equals `text` up to ASCII case and runs of white space, the lowest
  // id among equal titles that is not excluded.
  std::optional<int64_t> exact_match(std::string_view text, const std::vector<int64_t>& exclude = {}) const;

  // The best item per query embedding; texts (empty, or one per row) enable the title short-cut.
  std::vector<GroundingResult> ground(const EmbeddingMatrix& embeddings, const std::vector<std::string>& texts = {},
                                      const std::vector<std::vector<int64_t>>& exclude = {}) const;
  // Same from texts: the short-cut first, then `embedder` for the texts it did not resolve.
  std::vector<GroundingResult> ground(const std::vector<std::string>& texts, const Embedder& embedder,
                                      const std::vector<std::vector<int64_t>>& exclude = {}) const;

  // Lower-case ASCII, white-space runs to one space, trimmed: the key of the title short-cut.
  static std::string normalize_title(std::string_view text);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llm4dsr

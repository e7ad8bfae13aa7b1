#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "llm4dsr/data/catalog.h"
#include "llm4dsr/denoise/embedder.h"
#include "llm4dsr/denoise/grounder.h"
#include "llm4dsr/error.h"
#include "llm4dsr/model/config.h"
#include "llm4dsr/model/llama_model.h"
#include "llm4dsr/model/lora.h"
#include "llm4dsr/model/lora_guard.h"
#include "llm4dsr/text/tokenizer.h"
#include "torch_catch.h"

using llm4dsr::Embedder;
using llm4dsr::EmbedderOptions;
using llm4dsr::EmbeddingMatrix;
using llm4dsr::Error;
using llm4dsr::Grounder;
using llm4dsr::GrounderOptions;
using llm4dsr::ItemIdMatrix;
using llm4dsr::LlamaModel;

namespace {

EmbeddingMatrix random_matrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  EmbeddingMatrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

std::vector<std::string> numbered_titles(int64_t n) {
  std::vector<std::string> t;
  for (int64_t i = 1; i <= n; ++i) t.push_back("Item number " + std::to_string(i));
  return t;
}

// Reference: cosines of every (query, item) pair by Eigen, items sorted by decreasing cosine with
// the excluded ones removed.
std::vector<std::vector<std::pair<int64_t, float>>> brute_force(const EmbeddingMatrix& items,
                                                                const EmbeddingMatrix& queries, int64_t k,
                                                                const std::vector<std::vector<int64_t>>& exclude = {}) {
  EmbeddingMatrix a = items.rowwise().normalized();
  EmbeddingMatrix q = queries.rowwise().normalized();
  EmbeddingMatrix sims = q * a.transpose();
  std::vector<std::vector<std::pair<int64_t, float>>> out;
  for (int64_t r = 0; r < q.rows(); ++r) {
    std::vector<int64_t> order(static_cast<size_t>(items.rows()));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return sims(r, x) > sims(r, y); });
    std::vector<std::pair<int64_t, float>> top;
    for (int64_t i : order) {
      if (!exclude.empty()) {
        const auto& ex = exclude[static_cast<size_t>(r)];
        if (std::find(ex.begin(), ex.end(), i + 1) != ex.end()) continue;
      }
      top.emplace_back(i + 1, sims(r, i));
      if (static_cast<int64_t>(top.size()) == k) break;
    }
    out.push_back(top);
  }
  return out;
}

GrounderOptions with_index(const std::string& index) {
  GrounderOptions o;
  o.index = index;
  return o;
}

// One id per byte (3 + byte % 50): independent of the library's tokenizers.
class ByteTokenizer : public llm4dsr::Tokenizer {
 public:
  std::vector<llm4dsr::TokenId> encode(std::string_view text, bool add_bos, bool add_eos) const override {
    std::vector<llm4dsr::TokenId> ids;
    if (add_bos) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(3 + c % 50);
    if (add_eos) ids.push_back(2);
    return ids;
  }
  std::string decode(const std::vector<llm4dsr::TokenId>&) const override { return ""; }
  std::vector<llm4dsr::TokenId> encode_in_context(std::string_view, std::string_view text) const override {
    return encode(text, false, false);
  }
  int64_t vocab_size() const override { return 61; }
  llm4dsr::TokenId bos_id() const override { return bos_; }
  llm4dsr::TokenId eos_id() const override { return 2; }
  llm4dsr::TokenId pad_id() const override { return 0; }
  llm4dsr::TokenId unk_id() const override { return 0; }
  std::string id_to_piece(llm4dsr::TokenId) const override { return ""; }
  llm4dsr::TokenId piece_to_id(std::string_view) const override { return 0; }
  std::string kind() const override { return "bytes"; }
  llm4dsr::TokenId bos_ = 1;
};

LlamaModel tiny_model(uint64_t seed = 5) {
  llm4dsr::ModelConfig c = llm4dsr::ModelConfig::preset("tiny", 61);
  c.num_hidden_layers = 2;
  c.initializer_range = 0.2;
  return LlamaModel(c, torch::kCPU, torch::kFloat32, seed);
}

// The reference for the Embedder: each text alone (no padding, no batch), straight through forward_hidden.
torch::Tensor hidden_alone(LlamaModel& model, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  return model->forward_hidden(torch::tensor(ids, torch::kInt64).unsqueeze(0))[0];
}

double max_row_diff(const EmbeddingMatrix& m, int64_t row, const torch::Tensor& ref) {
  torch::Tensor r = ref.to(torch::kFloat32).contiguous();
  double d = 0.0;
  for (int64_t j = 0; j < m.cols(); ++j) d = std::max(d, std::abs(double(m(row, j)) - r[j].item<double>()));
  return d;
}

const std::vector<std::string> kTexts = {"a", "The Matrix (1999)", "Toy Story", "", "Heat", "Star Wars: Episode IV",
                                         "Fargo (1996)", "Up"};

}  // namespace

TEST_CASE("Grounder flat search equals a brute-force top-k of cosines", "[grounder]") {
  const EmbeddingMatrix items = random_matrix(500, 24, 1);
  const EmbeddingMatrix queries = random_matrix(37, 24, 2);
  Grounder g(numbered_titles(500), items, with_index("auto"));
  CHECK(g.index_type() == "flat");
  CHECK(g.size() == 500);
  CHECK(g.dim() == 24);
  ItemIdMatrix ids;
  EmbeddingMatrix sims;
  g.search(queries, 10, ids, sims);
  REQUIRE(ids.rows() == 37);
  REQUIRE(ids.cols() == 10);
  const auto ref = brute_force(items, queries, 10);
  for (int64_t q = 0; q < 37; ++q)
    for (int64_t j = 0; j < 10; ++j) {
      CHECK(ids(q, j) == ref[q][j].first);
      CHECK(std::abs(sims(q, j) - ref[q][j].second) < 1e-5);
    }

  // The raw-pointer form writes into caller-owned buffers.
  std::vector<int64_t> raw_ids(37 * 3, -7);
  std::vector<float> raw_sims(37 * 3, -7.0f);
  g.search(queries.data(), 37, 3, raw_ids.data(), raw_sims.data());
  for (int64_t q = 0; q < 37; ++q) CHECK(raw_ids[q * 3] == ref[q][0].first);
}

TEST_CASE("Grounder HNSW recall@10 against the exact index on 20k random vectors", "[grounder]") {
  const int64_t n = 20000, d = 32, nq = 200;
  const EmbeddingMatrix items = random_matrix(n, d, 3);
  const EmbeddingMatrix queries = random_matrix(nq, d, 4);
  Grounder flat(numbered_titles(n), items, with_index("flat"));
  GrounderOptions ho = with_index("hnsw");
  ho.ef_search = 128;
  Grounder hnsw(numbered_titles(n), items, ho);
  CHECK(hnsw.index_type() == "hnsw");
  CHECK(hnsw.ef_search() == 128);
  ItemIdMatrix fi, hi;
  EmbeddingMatrix fs, hs;
  flat.search(queries, 10, fi, fs);
  hnsw.search(queries, 10, hi, hs);
  int64_t hits = 0;
  for (int64_t q = 0; q < nq; ++q) {
    std::set<int64_t> truth(fi.row(q).data(), fi.row(q).data() + 10);
    for (int64_t j = 0; j < 10; ++j) hits += truth.count(hi(q, j));
  }
  const double recall = double(hits) / double(nq * 10);
  INFO("recall@10 = " << recall);
  CHECK(recall >= 0.95);
  // ef_search reaches FAISS per call: a narrow search loses recall.
  hnsw.set_ef_search(10);
  hnsw.search(queries, 10, hi, hs);
  int64_t narrow_hits = 0;
  for (int64_t q = 0; q < nq; ++q) {
    std::set<int64_t> truth(fi.row(q).data(), fi.row(q).data() + 10);
    for (int64_t j = 0; j < 10; ++j) narrow_hits += truth.count(hi(q, j));
  }
  INFO("recall@10 at ef_search 10 = " << double(narrow_hits) / double(nq * 10));
  CHECK(narrow_hits < hits);
  hnsw.set_ef_search(128);
  hnsw.search(queries, 10, hi, hs);
  // Inner-product similarities, not FAISS's internal negated distances.
  const EmbeddingMatrix a = items.rowwise().normalized();
  for (int64_t q = 0; q < 5; ++q) {
    const Eigen::RowVectorXf qn = queries.row(q).normalized();
    for (int64_t j = 0; j < 10; ++j) CHECK(std::abs(hs(q, j) - qn.dot(a.row(hi(q, j) - 1))) < 1e-5);
    for (int64_t j = 1; j < 10; ++j) CHECK(hs(q, j) <= hs(q, j - 1));
  }
  // Both indexes hold the same normalised rows.
  const float* fe = flat.normalized_embeddings();
  const float* he = hnsw.normalized_embeddings();
  CHECK(std::equal(fe, fe + n * d, he));
  CHECK(std::abs(fe[5 * d + 3] - a(5, 3)) < 1e-6);
  // "auto" switches at hnsw_min_items.
  GrounderOptions ao;
  ao.hnsw_min_items = 1000;
  CHECK(Grounder(numbered_titles(1000), random_matrix(1000, 8, 5), ao).index_type() == "hnsw");
  CHECK(Grounder(numbered_titles(999), random_matrix(999, 8, 5), ao).index_type() == "flat");
}

TEST_CASE("Grounder exclusion never returns excluded items and still gives k results", "[grounder]") {
  const EmbeddingMatrix items = random_matrix(300, 16, 6);
  const EmbeddingMatrix queries = random_matrix(8, 16, 7);
  for (const std::string index : {"flat", "hnsw"}) {
    SECTION(index) {
      Grounder g(numbered_titles(300), items, with_index(index));
      const auto plain = brute_force(items, queries, 300);
      std::vector<std::vector<int64_t>> exclude(8);
      for (int64_t q = 0; q < 8; ++q) {
        // The true top 5, a duplicate, and (for half of the queries) 250 more, most of the catalogue.
        for (int64_t j = 0; j < 5; ++j) exclude[q].push_back(plain[q][j].first);
        exclude[q].push_back(plain[q][0].first);
        if (q % 2 == 0)
          for (int64_t j = 40; j < 290; ++j) exclude[q].push_back(plain[q][j].first);
      }
      ItemIdMatrix ids;
      EmbeddingMatrix sims;
      g.search(queries, 10, ids, sims, exclude);
      const auto ref = brute_force(items, queries, 10, exclude);
      for (int64_t q = 0; q < 8; ++q) {
        for (int64_t j = 0; j < 10; ++j) {
          CHECK(ids(q, j) >= 1);
          CHECK(std::find(exclude[q].begin(), exclude[q].end(), ids(q, j)) == exclude[q].end());
        }
        std::set<int64_t> got(ids.row(q).data(), ids.row(q).data() + 10);
        CHECK(got.size() == 10);
        if (index == "flat")
          for (int64_t j = 0; j < 10; ++j) CHECK(ids(q, j) == ref[q][j].first);
      }
    }
  }
}

TEST_CASE("Grounder ground: exact title short-cut, exclusion, nearest item", "[grounder]") {
  std::vector<std::string> titles = {"The Matrix (1999)", "Toy Story", "Heat", "toy  story", "Fargo"};
  EmbeddingMatrix items = EmbeddingMatrix::Zero(5, 3);
  items(0, 0) = 1;
  items(1, 1) = 1;
  items(2, 2) = 1;
  items(3, 1) = 1;
  items(3, 2) = 1;
  items(4, 0) = -1;
  Grounder g(titles, items);
  CHECK(Grounder::normalize_title("  The\tMATRIX  (1999) \n") == "the matrix (1999)");
  CHECK(g.exact_match("  the MATRIX   (1999)") == 1);
  CHECK(g.exact_match("TOY STORY") == 2);               // lowest id among equal titles
  CHECK(g.exact_match("toy story", {2}) == 4);          // the next when it is excluded
  CHECK_FALSE(g.exact_match("toy story", {2, 4}).has_value());
  CHECK_FALSE(g.exact_match("Matrix").has_value());
  CHECK_FALSE(g.exact_match("   ").has_value());

  // The query embeddings point at Heat; texts decide where a title matches exactly.
  EmbeddingMatrix q = EmbeddingMatrix::Zero(4, 3);
  q.col(2).setConstant(2.0f);
  auto r = g.ground(q, {"the matrix (1999)", "Something else", "Toy Story", "HEAT"}, {{}, {}, {2, 4}, {3}});
  REQUIRE(r.size() == 4);
  CHECK((r[0].item_id == 1 && r[0].exact && r[0].similarity == 1.0f));
  CHECK((r[1].item_id == 3 && !r[1].exact));
  CHECK(std::abs(r[1].similarity - 1.0f) < 1e-6);
  CHECK((r[2].item_id == 3 && !r[2].exact));  // both "toy story" items excluded: search
  // Heat excluded: the best remaining is item 4 (cosine 1/sqrt 2).
  CHECK((r[3].item_id == 4 && !r[3].exact));
  CHECK(std::abs(r[3].similarity - float(1.0 / std::sqrt(2.0))) < 1e-6);
  // Without texts there is no short-cut.
  auto s = g.ground(q.topRows(1));
  CHECK((s[0].item_id == 3 && !s[0].exact));
  // The short-cut can be switched off.
  GrounderOptions off;
  off.exact_title_match = false;
  Grounder g2(titles, items, off);
  CHECK(g2.ground(q.topRows(1), {"The Matrix (1999)"})[0].item_id == 3);
}

TEST_CASE("Grounder rejects malformed inputs with clear errors", "[grounder]") {
  const EmbeddingMatrix items = random_matrix(20, 4, 8);
  Grounder g(numbered_titles(20), items);
  ItemIdMatrix ids;
  EmbeddingMatrix sims;
  CHECK_THROWS_WITH(g.search(random_matrix(2, 5, 9), 3, ids, sims), Catch::Contains("dimension 5"));
  CHECK_THROWS_WITH(g.search(random_matrix(2, 4, 9), 0, ids, sims), Catch::Contains("k must be in 1..20"));
  CHECK_THROWS_WITH(g.search(random_matrix(2, 4, 9), -1, ids, sims), Catch::Contains("got -1"));
  CHECK_THROWS_WITH(g.search(random_matrix(2, 4, 9), 21, ids, sims), Catch::Contains("k must be in 1..20"));
  CHECK_THROWS_WITH(g.search(random_matrix(2, 4, 9), 3, ids, sims, {{1}, {21}}),
                    Catch::Contains("exclude[1] holds item id 21"));
  CHECK_THROWS_WITH(g.search(random_matrix(2, 4, 9), 3, ids, sims, {{0}, {}}),
                    Catch::Contains("exclude[0] holds item id 0"));
  CHECK_THROWS_WITH(g.search(random_matrix(2, 4, 9), 3, ids, sims, {{1}}), Catch::Contains("one list per query"));
  std::vector<int64_t> many(18);
  std::iota(many.begin(), many.end(), 1);
  CHECK_THROWS_WITH(g.search(random_matrix(1, 4, 9), 3, ids, sims, {many}), Catch::Contains("fewer than k = 3"));
  CHECK_THROWS_WITH(g.ground(random_matrix(2, 4, 9), {"a"}), Catch::Contains("1 texts for 2 embeddings"));
  CHECK_THROWS_WITH(g.ground(random_matrix(1, 4, 9), {}, {{99}}), Catch::Contains("item id 99"));
  EmbeddingMatrix nan_query = random_matrix(1, 4, 9);
  nan_query(0, 2) = std::nanf("");
  CHECK_THROWS_WITH(g.search(nan_query, 1, ids, sims), Catch::Contains("non-finite"));

  CHECK_THROWS_WITH(Grounder({}, EmbeddingMatrix(0, 4)), Catch::Contains("catalogue is empty"));
  CHECK_THROWS_WITH(Grounder(numbered_titles(3), random_matrix(4, 4, 1)), Catch::Contains("3 titles but 4"));
  EmbeddingMatrix bad = random_matrix(3, 4, 1);
  bad(1, 3) = INFINITY;
  CHECK_THROWS_WITH(Grounder(numbered_titles(3), bad), Catch::Contains("item 2 (row 1)"));
  CHECK_THROWS_WITH(Grounder(numbered_titles(3), random_matrix(3, 4, 1), with_index("ivf")),
                    Catch::Contains("\"ivf\""));
  llm4dsr::Catalog cat;
  cat.add("x");
  CHECK_THROWS_WITH(Grounder::from_catalog(cat, random_matrix(2, 4, 1)), Catch::Contains("1 items"));
  CHECK_THROWS_AS(g.set_ef_search(0), Error);
}

TEST_CASE("Grounder from_catalog takes titles by internal id", "[grounder]") {
  llm4dsr::Catalog cat;
  for (const char* ext : {"m10", "m20", "m30"}) cat.add(ext);
  cat.set_title(2, "Casino");
  EmbeddingMatrix e = random_matrix(3, 6, 10);
  Grounder g = Grounder::from_catalog(cat, e);
  CHECK(g.title(2) == "Casino");
  CHECK(g.exact_match("casino") == 2);
  auto r = g.ground(e.row(2));
  CHECK(r[0].item_id == 3);
}

TEST_CASE("Embedder last-token pooling equals each text alone (left padding invariance)", "[grounder]") {
  LlamaModel model = tiny_model();
  auto tok = std::make_shared<ByteTokenizer>();
  EmbedderOptions o;
  o.micro_batch_size = 3;
  Embedder emb(model, tok, o);
  CHECK(emb.dim() == 64);
  const EmbeddingMatrix e = emb.embed(kTexts);
  REQUIRE(e.rows() == static_cast<int64_t>(kTexts.size()));
  for (size_t i = 0; i < kTexts.size(); ++i) {
    const auto ids = emb.token_ids(kTexts[i]);
    CHECK(ids.front() == 1);  // BOS
    CHECK(ids.size() == kTexts[i].size() + 1);
    torch::Tensor h = hidden_alone(model, ids);
    CHECK(max_row_diff(e, static_cast<int64_t>(i), h[-1]) < 1e-4);
  }
  // Batch composition does not matter: one text at a time gives the same rows.
  o.micro_batch_size = 1;
  const EmbeddingMatrix single = Embedder(model, tok, o).embed(kTexts);
  CHECK((e - single).cwiseAbs().maxCoeff() < 1e-4);

  // Truncation keeps the first max_tokens tokens.
  o.max_tokens = 4;
  Embedder short_emb(model, tok, o);
  const auto ids = short_emb.token_ids("The Matrix");
  CHECK(ids.size() == 4);
  CHECK(max_row_diff(short_emb.embed({"The Matrix"}), 0, hidden_alone(model, ids)[-1]) < 1e-4);

  // normalize = true gives unit rows in the same direction.
  EmbedderOptions n;
  n.normalize = true;
  const EmbeddingMatrix en = Embedder(model, tok, n).embed(kTexts);
  for (int64_t i = 0; i < en.rows(); ++i) {
    CHECK(std::abs(en.row(i).norm() - 1.0f) < 1e-5);
    CHECK((en.row(i) - e.row(i).normalized()).cwiseAbs().maxCoeff() < 1e-5);
  }
  CHECK(emb.embed({}).rows() == 0);
}

TEST_CASE("Embedder mean pooling averages the text's tokens only", "[grounder]") {
  LlamaModel model = tiny_model(9);
  auto tok = std::make_shared<ByteTokenizer>();
  EmbedderOptions o;
  o.pooling = "mean";
  o.micro_batch_size = 4;
  const EmbeddingMatrix e = Embedder(model, tok, o).embed(kTexts);
  for (size_t i = 0; i < kTexts.size(); ++i) {
    const auto enc = tok->encode(kTexts[i], true, false);
    torch::Tensor h = hidden_alone(model, std::vector<int64_t>(enc.begin(), enc.end()));
    CHECK(max_row_diff(e, static_cast<int64_t>(i), h.mean(0)) < 1e-4);
  }
}

TEST_CASE("Embedder bypasses LoRA adapters unless asked to use them", "[grounder]") {
  LlamaModel base = tiny_model(13);
  LlamaModel tuned = tiny_model(13);
  llm4dsr::LoraConfig lc;
  lc.target_modules = {"all-linear"};
  lc.dropout = 0.0;
  tuned->add_lora(lc);
  {
    // B starts at zero (adapter = identity); make the adapters change the outputs.
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    for (auto& [name, proj] : tuned->projections()) proj->lora_B.normal_(0.0, 0.5);
  }
  auto tok = std::make_shared<ByteTokenizer>();
  const EmbeddingMatrix ref = Embedder(base, tok).embed(kTexts);

  tuned->train();
  const EmbeddingMatrix bypassed = Embedder(tuned, tok).embed(kTexts);
  CHECK((bypassed - ref).cwiseAbs().maxCoeff() < 1e-6);
  CHECK(tuned->is_training());  // the training flag is restored

  EmbedderOptions with;
  with.use_lora = true;
  const EmbeddingMatrix adapted = Embedder(tuned, tok, with).embed(kTexts);
  CHECK((adapted - ref).cwiseAbs().maxCoeff() > 1e-2);
  // The adapters are back after the bypass: the same call again gives the adapted rows.
  CHECK((Embedder(tuned, tok, with).embed(kTexts) - adapted).cwiseAbs().maxCoeff() < 1e-6);

  // Merged adapters are unmerged for the call and merged again.
  tuned->merge_lora();
  CHECK((Embedder(tuned, tok).embed(kTexts) - ref).cwiseAbs().maxCoeff() < 1e-4);
  CHECK((Embedder(tuned, tok, with).embed(kTexts) - adapted).cwiseAbs().maxCoeff() < 1e-4);
  for (auto& [name, proj] : tuned->projections()) CHECK(proj->merged());

  {
    llm4dsr::LoraBypassGuard guard(tuned);
    CHECK(guard.bypassed() == tuned->projections().size());
  }
  CHECK(llm4dsr::LoraBypassGuard(base).bypassed() == 0);
}

TEST_CASE("Embedder and Grounder together ground texts, embedding only unresolved ones", "[grounder]") {
  LlamaModel model = tiny_model(17);
  auto tok = std::make_shared<ByteTokenizer>();
  Embedder emb(model, tok);
  llm4dsr::Catalog cat;
  const std::vector<std::string> titles = {"Heat", "Fargo (1996)", "Toy Story", "Star Wars"};
  for (size_t i = 0; i < titles.size(); ++i) cat.set_title(cat.add("e" + std::to_string(i)), titles[i]);
  Grounder g = Grounder::from_catalog(cat, emb);
  // A catalogue text embedded by the same model is its own nearest item, even without the short-cut.
  GrounderOptions off;
  off.exact_title_match = false;
  Grounder g_off = Grounder::from_catalog(cat, emb, off);
  auto r = g_off.ground(titles, emb);
  for (size_t i = 0; i < titles.size(); ++i) {
    CHECK(r[i].item_id == static_cast<int64_t>(i + 1));
    CHECK(std::abs(r[i].similarity - 1.0f) < 1e-5);
    CHECK_FALSE(r[i].exact);
  }
  auto r2 = g.ground({"toy story", "Star Wars"}, emb, {{}, {4}});
  CHECK((r2[0].item_id == 3 && r2[0].exact));
  CHECK((r2[1].item_id != 4 && !r2[1].exact));
  // The text path and the embedding path agree.
  auto r3 = g.ground(emb.embed({"Star Wars"}), {}, {{4}});
  CHECK(r3[0].item_id == r2[1].item_id);
  CHECK(std::abs(r3[0].similarity - r2[1].similarity) < 1e-6);

  EmbedderOptions bad;
  bad.pooling = "max";
  CHECK_THROWS_WITH(Embedder(model, tok, bad), Catch::Contains("\"max\""));
  tok->bos_ = -1;
  CHECK_THROWS_WITH(Embedder(model, tok).embed({"x", ""}), Catch::Contains("text 1 is empty"));
}

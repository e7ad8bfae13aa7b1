// Python bindings of the grounding step (paper section 3.3, Eq. 4): Embedder (text -> vectors from a
// LlamaModel) and Grounder (vectors / texts -> catalogue items through FAISS). Arrays cross as numpy:
// embed() hands its C++ buffer to numpy without a copy, Grounder reads the caller's float32 array in
// place (its one copy is the normalised one the index keeps, exposed read-only as .embeddings).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "torch_bindings.h"
#include "llm4dsr/data/catalog.h"
#include "llm4dsr/denoise/embedder.h"
#include "llm4dsr/denoise/grounder.h"
#include "llm4dsr/error.h"
#include "llm4dsr/text/tokenizer.h"

namespace llm4dsr::bindings {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Exclude = std::vector<std::vector<int64_t>>;

// A numpy array that owns the matrix (moved, not copied) through a capsule.
py::array_t<float> to_numpy(EmbeddingMatrix&& m) {
  auto* owned = new EmbeddingMatrix(std::move(m));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<EmbeddingMatrix*>(p); });
  return py::array_t<float>({owned->rows(), owned->cols()}, owned->data(), free_when_done);
}

FloatArray matrix_arg(const py::handle& obj, const char* what) {
  FloatArray arr = typed_array<float>(obj, what, Elements::kReals);
  if (arr.ndim() == 1) arr = arr.reshape({py::ssize_t(1), arr.shape(0)});
  LLM4DSR_CHECK(arr.ndim() == 2, what << " must be 2-D [rows, dim], got " << arr.ndim() << " dimensions");
  return arr;
}

EmbeddingMatrix to_matrix(const FloatArray& arr) {
  return Eigen::Map<const EmbeddingMatrix>(arr.data(), arr.shape(0), arr.shape(1));
}

// One row of item ids per query: lists, arrays or tensors, or a 2-D array / tensor.
Exclude exclude_arg(const py::object& obj) {
  Exclude out;
  if (obj.is_none()) return out;
  LLM4DSR_CHECK(py::isinstance<py::iterable>(obj) && !py::isinstance<py::str>(obj),
                "exclude must hold one list of item ids per query, got "
                    << std::string(py::str(obj.attr("__class__").attr("__name__"))));
  for (const py::handle row : obj) {
    LLM4DSR_CHECK(!py::isinstance<py::int_>(row) && (py::isinstance<py::sequence>(row) || py::hasattr(row, "__array__")),
                  "exclude must hold one list of item ids per query; query " << out.size() << "'s entry is a "
                      << std::string(py::str(row.attr("__class__").attr("__name__"))));
    out.push_back(typed_vector<int64_t>(row, "exclude: a query's item ids", Elements::kIntegers));
  }
  return out;
}

py::object results_to_python(const std::vector<GroundingResult>& r, bool as_arrays) {
  if (as_arrays) {
    const auto n = static_cast<py::ssize_t>(r.size());
    py::array_t<int64_t> ids(n);
    py::array_t<float> sims(n);
    py::array_t<bool> exact(n);
    auto i = ids.mutable_unchecked<1>();
    auto s = sims.mutable_unchecked<1>();
    auto e = exact.mutable_unchecked<1>();
    for (py::ssize_t k = 0; k < n; ++k) {
      i(k) = r[static_cast<size_t>(k)].item_id;
      s(k) = r[static_cast<size_t>(k)].similarity;
      e(k) = r[static_cast<size_t>(k)].exact;
    }
    return py::make_tuple(ids, sims, exact);
  }
  py::list out;
  for (const auto& x : r) out.append(py::make_tuple(x.item_id, x.similarity, x.exact));
  return out;
}

GrounderOptions grounder_options(const std::string& index, int64_t ef_search, int64_t hnsw_min_items, int64_t hnsw_m,
                                 int64_t ef_construction, bool exact_title_match) {
  GrounderOptions o;
  o.index = index;
  o.ef_search = ef_search;
  o.hnsw_min_items = hnsw_min_items;
  o.hnsw_m = hnsw_m;
  o.ef_construction = ef_construction;
  o.exact_title_match = exact_title_match;
  return o;
}

}  // namespace

void bind_grounding(py::module_& m) {
  py::class_<Embedder, std::shared_ptr<Embedder>>(m, "Embedder", R"doc(
Text -> float32 vectors from a LlamaModel's final hidden states (the f of the paper's Eq. 4).
pooling "last" (the last token's hidden state, as the authors) or "mean" (over the text's tokens,
pads excluded). use_lora=False embeds with the base model: adapters are switched off for the call.
Texts run sorted by length in left-padded micro-batches; each row equals the text embedded alone.)doc")
      .def(py::init([](const PyLlamaModel& model, std::shared_ptr<Tokenizer> tokenizer, const std::string& pooling,
                       bool use_lora, int64_t micro_batch_size, int64_t max_tokens, bool add_bos, bool normalize) {
             EmbedderOptions o;
             o.pooling = pooling;
             o.use_lora = use_lora;
             o.micro_batch_size = micro_batch_size;
             o.max_tokens = max_tokens;
             o.add_bos = add_bos;
             o.normalize = normalize;
             return Embedder(model.model, std::move(tokenizer), o);
           }),
           py::arg("model"), py::arg("tokenizer"), py::arg("pooling") = "last", py::arg("use_lora") = false,
           py::arg("micro_batch_size") = 32, py::arg("max_tokens") = EmbedderOptions{}.max_tokens,
           py::arg("add_bos") = true, py::arg("normalize") = false)
      .def(
          "embed",
          [](const Embedder& self, const std::vector<std::string>& texts) {
            EmbeddingMatrix out;
            {
              py::gil_scoped_release release;
              out = self.embed(texts);
            }
            return to_numpy(std::move(out));
          },
          py::arg("texts"), "float32 [len(texts), hidden] numpy array (owns the C++ buffer: no copy).")
      .def("token_ids", &Embedder::token_ids, py::arg("text"), "The ids embed() runs for `text`.")
      .def_property_readonly("dim", &Embedder::dim)
      .def_property_readonly("pooling", [](const Embedder& e) { return e.options().pooling; })
      .def_property_readonly("use_lora", [](const Embedder& e) { return e.options().use_lora; })
      .def_property_readonly("micro_batch_size", [](const Embedder& e) { return e.options().micro_batch_size; })
      .def_property_readonly("max_tokens", [](const Embedder& e) { return e.options().max_tokens; });

  py::class_<Grounder, std::shared_ptr<Grounder>>(m, "Grounder", R"doc(
Maps suggested item texts / embeddings to catalogue items (paper Eq. 4) by cosine similarity.
titles[i] and embeddings[i] (float32 [N, D]) describe item i + 1. index "auto" (flat below
hnsw_min_items items, HNSW from there), "flat" (exact) or "hnsw" (approximate; ef_search trades recall
for speed). A text equal to a title up to case and white space returns that item (exact=True,
similarity 1) without a search. search() and ground() release the GIL and may run from several
threads.)doc")
      .def(py::init([](std::vector<std::string> titles, const py::object& embeddings, const std::string& index,
                       int64_t ef_search, int64_t hnsw_min_items, int64_t hnsw_m, int64_t ef_construction,
                       bool exact_title_match) {
             FloatArray arr = matrix_arg(embeddings, "embeddings");
             GrounderOptions o =
                 grounder_options(index, ef_search, hnsw_min_items, hnsw_m, ef_construction, exact_title_match);
             py::gil_scoped_release release;
             return Grounder(std::move(titles), arr.data(), arr.shape(0), arr.shape(1), o);
           }),
           py::arg("titles"), py::arg("embeddings"), py::arg("index") = "auto",
           py::arg("ef_search") = GrounderOptions{}.ef_search, py::arg("hnsw_min_items") = GrounderOptions{}.hnsw_min_items,
           py::arg("hnsw_m") = GrounderOptions{}.hnsw_m, py::arg("ef_construction") = GrounderOptions{}.ef_construction,
           py::arg("exact_title_match") = true)
      .def_static(
          "from_catalog",
          [](const Catalog& catalog, const py::object& embeddings, const Embedder* embedder, const std::string& index,
             int64_t ef_search, bool exact_title_match) {
            GrounderOptions o = grounder_options(index, ef_search, GrounderOptions{}.hnsw_min_items,
                                                 GrounderOptions{}.hnsw_m, GrounderOptions{}.ef_construction,
                                                 exact_title_match);
            LLM4DSR_CHECK(embeddings.is_none() != (embedder == nullptr),
                          "Grounder.from_catalog: give exactly one of embeddings and embedder");
            if (embedder) {
              py::gil_scoped_release release;
              return Grounder::from_catalog(catalog, *embedder, o);
            }
            EmbeddingMatrix e = to_matrix(matrix_arg(embeddings, "embeddings"));
            py::gil_scoped_release release;
            return Grounder::from_catalog(catalog, e, o);
          },
          py::arg("catalog"), py::arg("embeddings") = py::none(), py::arg("embedder") = nullptr,
          py::arg("index") = "auto", py::arg("ef_search") = GrounderOptions{}.ef_search,
          py::arg("exact_title_match") = true,
          "Titles from the catalogue (ids 1..N); embeddings given [N, D] or computed by `embedder` from the titles.")
      .def_property_readonly("size", &Grounder::size)
      .def("__len__", &Grounder::size)
      .def_property_readonly("dim", &Grounder::dim)
      .def_property_readonly("index_type", &Grounder::index_type)
      .def_property("ef_search", &Grounder::ef_search, &Grounder::set_ef_search)
      .def("title", &Grounder::title, py::arg("item_id"))
      .def_property_readonly(
          "embeddings",
          [](const py::object& self) {
            const Grounder& g = self.cast<const Grounder&>();
            py::array_t<float> view({g.size(), g.dim()}, g.normalized_embeddings(), self);
            py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
            return view;
          },
          "The normalised catalogue embeddings the index holds, a read-only view [N, D] (no copy).")
      .def(
          "search",
          [](const Grounder& self, const py::object& queries, int64_t k, const py::object& exclude,
             const py::object& out) {
            FloatArray q = matrix_arg(queries, "queries");
            LLM4DSR_CHECK(q.shape(1) == self.dim(), "Grounder.search: queries have dimension "
                                                        << q.shape(1) << ", the catalogue's embeddings " << self.dim());
            const Exclude ex = exclude_arg(exclude);
            // Before the outputs are allocated: a huge k would otherwise fail in numpy, not here.
            LLM4DSR_CHECK(k >= 1 && k <= self.size(),
                          "Grounder.search: k must be in 1.." << self.size() << " (catalogue size), got " << k);
            py::array_t<int64_t> ids;
            py::array_t<float> sims;
            if (out.is_none()) {
              ids = py::array_t<int64_t>({q.shape(0), static_cast<py::ssize_t>(k)});
              sims = py::array_t<float>({q.shape(0), static_cast<py::ssize_t>(k)});
            } else {
              LLM4DSR_CHECK(py::isinstance<py::sequence>(out) && py::len(out) == 2,
                            "Grounder.search: out must be a pair (ids, similarities)");
              const auto pair = py::reinterpret_borrow<py::sequence>(out);
              LLM4DSR_CHECK(py::isinstance<py::array>(pair[0]) && py::isinstance<py::array>(pair[1]),
                            "Grounder.search: out must hold two numpy arrays (int64 ids, float32 similarities)");
              ids = py::array_t<int64_t>::ensure(pair[0]);
              sims = py::array_t<float>::ensure(pair[1]);
              LLM4DSR_CHECK(ids && sims, "Grounder.search: out must hold an int64 and a float32 array");
              for (const py::array* a : {static_cast<py::array*>(&ids), static_cast<py::array*>(&sims)})
                LLM4DSR_CHECK(a->ndim() == 2 && a->shape(0) == q.shape(0) && a->shape(1) == k && a->writeable() &&
                                  (a->flags() & py::array::c_style),
                              "Grounder.search: out arrays must be writable C-contiguous int64 / float32 ["
                                  << q.shape(0) << ", " << k << "]");
              LLM4DSR_CHECK(ids.ptr() == pair[0].ptr() && sims.ptr() == pair[1].ptr(),
                            "Grounder.search: out must hold an int64 and a float32 array (no conversion)");
            }
            {
              py::gil_scoped_release release;
              self.search(q.data(), q.shape(0), k, ids.mutable_data(), sims.mutable_data(), ex);
            }
            return py::make_tuple(ids, sims);
          },
          py::arg("queries"), py::arg("k"), py::arg("exclude") = py::none(), py::arg("out") = py::none(), R"doc(
Top-k items by cosine for float32 queries [Q, D]: (ids int64 [Q, k] with ids 1..N, similarities float32
[Q, k]), best first. exclude: one list of item ids per query never to return. out=(ids, sims): write
into these preallocated arrays instead.)doc")
      .def(
          "exact_match",
          [](const Grounder& self, const std::string& text, const std::vector<int64_t>& exclude) {
            return self.exact_match(text, exclude);
          },
          py::arg("text"), py::arg("exclude") = std::vector<int64_t>{})
      .def_static("normalize_title", &Grounder::normalize_title, py::arg("text"))
      .def(
          "ground",
          [](const Grounder& self, const py::object& texts, const py::object& embeddings, const py::object& exclude,
             const Embedder* embedder, bool as_arrays) {
            const std::vector<std::string> t =
                texts.is_none() ? std::vector<std::string>{} : texts.cast<std::vector<std::string>>();
            const Exclude ex = exclude_arg(exclude);
            std::vector<GroundingResult> r;
            if (!embeddings.is_none()) {
              EmbeddingMatrix e = to_matrix(matrix_arg(embeddings, "embeddings"));
              py::gil_scoped_release release;
              r = self.ground(e, t, ex);
            } else {
              LLM4DSR_CHECK(!texts.is_none(), "Grounder.ground: give texts, embeddings or both");
              LLM4DSR_CHECK(embedder != nullptr,
                            "Grounder.ground: texts without embeddings need an embedder (Embedder) to embed them");
              py::gil_scoped_release release;
              r = self.ground(t, *embedder, ex);
            }
            return results_to_python(r, as_arrays);
          },
          py::arg("texts") = py::none(), py::arg("embeddings") = py::none(), py::arg("exclude") = py::none(),
          py::arg("embedder") = nullptr, py::arg("as_arrays") = false, R"doc(
The best catalogue item per query: a list of (item_id, similarity, exact), or with as_arrays=True the
arrays (ids int64, similarities float32, exact bool). texts (one per query) enable the exact title
short-cut; embeddings [Q, D] are searched for the others, or `embedder` embeds the unresolved texts.
exclude: one list of item ids per query (the sequence's items, the one being replaced).)doc");
}

}  // namespace llm4dsr::bindings

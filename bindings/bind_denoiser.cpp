// Python bindings of the replacement and correction stages: Generator (greedy / beam / catalogue-
// constrained decoding), Denoiser (the whole LLM4DSR correction and its ablations), the units of
// work over windows, and the noise-detection metrics.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>

#include "bindings.h"
#include "denoise_bindings.h"
#include "llm4dsr/data/catalog.h"
#include "llm4dsr/denoise/denoiser.h"
#include "llm4dsr/evaluation/noise_metrics.h"

namespace llm4dsr::bindings {

namespace {

struct PyDenoiser {
  // The stages, kept alive with their models.
  py::object scorer, generator, grounder, embedder;
  std::shared_ptr<Denoiser> denoiser;
};

// (items, position) or (items, position, exclude) tuples, or dicts with those keys.
std::vector<GenerationRequest> to_requests(const py::object& requests) {
  std::vector<GenerationRequest> out;
  size_t index = 0;
  for (const py::handle r : requests) {
    GenerationRequest q;
    if (py::isinstance<py::dict>(r)) {
      const auto d = py::reinterpret_borrow<py::dict>(r);
      LLM4DSR_CHECK(d.contains("items") && d.contains("position"),
                    "request " << index << ": a dict needs the keys 'items' and 'position'");
      q.items = int64_vector(d["items"], "a request's items");
      q.position = d["position"].cast<int64_t>();
      if (d.contains("exclude")) q.exclude = int64_vector(d["exclude"], "a request's exclude");
    } else {
      const auto t = py::reinterpret_borrow<py::sequence>(r);
      LLM4DSR_CHECK(t.size() == 2 || t.size() == 3,
                    "request " << index << ": expected (items, position) or (items, position, exclude), got "
                               << t.size() << " fields");
      q.items = int64_vector(t[0], "a request's items");
      q.position = t[1].cast<int64_t>();
      if (t.size() == 3) q.exclude = int64_vector(t[2], "a request's exclude");
    }
    out.push_back(std::move(q));
    ++index;
  }
  return out;
}

std::vector<bool> to_bools(const py::handle& values, const char* what) {
  return typed_vector<bool>(values, what, Elements::kIntegersOrBools);
}

std::vector<std::vector<bool>> to_protect(const py::object& protect) {
  std::vector<std::vector<bool>> out;
  if (protect.is_none()) return out;
  for (const py::handle row : protect) out.push_back(to_bools(row, "protect: each row"));
  return out;
}

py::dict correction_dict(const Correction& c) {
  py::dict d;
  d["position"] = c.position;
  d["original_item"] = c.original_item;
  d["p_noise"] = std::isnan(c.p_noise) ? py::object(py::none()) : py::object(py::float_(c.p_noise));
  d["generated_text"] = c.generated_text;
  d["replacement_item"] = c.replacement_item;
  d["similarity"] = c.similarity;
  d["exact"] = c.exact;
  return d;
}

}  // namespace

void bind_denoiser(py::module_& m) {
  py::class_<Suggestion>(m, "Suggestion", "One generated replacement (Generator.generate).")
      .def_readonly("text", &Suggestion::text, "the generated title, closing delimiter removed")
      .def_property_readonly("token_ids", [](const Suggestion& s) { return to_numpy(s.token_ids); })
      .def_readonly("log_prob", &Suggestion::log_prob, "sum of the generated tokens' log-probabilities")
      .def_readonly("finished", &Suggestion::finished, "ended at the closing delimiter / EOS")
      .def_readonly("item_id", &Suggestion::item_id, "constrained decoding: the catalogue item; else 0")
      .def("__repr__", [](const Suggestion& s) {
        return "Suggestion(text=" + py::repr(py::str(s.text)).cast<std::string>() + ", item_id=" +
               std::to_string(s.item_id) + ", finished=" + (s.finished ? "True" : "False") + ")";
      });

  const GeneratorOptions gd;
  py::class_<PyGenerator>(m, "Generator", R"doc(
Replacement generation (paper section 3.3): for each (sequence, flagged position) the model is shown
the training prompt up to "Suggested Items:" and decodes a title (greedy or beam search with the KV
cache, batched). constrained=True restricts every step to tokens continuing a real catalogue title
(a trie), so the output is always an existing item (item_id) and needs no grounding; `exclude` items
(e.g. those already in the sequence) are pruned per request. template / chat_format: those the model
was fine-tuned with (names or objects).)doc")
      .def(py::init([](const PyLlamaModel& model, std::shared_ptr<Tokenizer> tokenizer, const Catalog& catalog,
                       const py::object& prompt_template, const py::object& chat_format, const std::string& decoding,
                       int64_t num_beams, double length_penalty, int64_t max_new_tokens, bool constrained,
                       int64_t micro_batch_size, int64_t max_prompt_tokens) {
             LLM4DSR_CHECK(tokenizer, "Generator: tokenizer is None");
             GeneratorOptions o;
             set_template_and_chat(o, prompt_template, chat_format);
             o.decoding = decoding;
             o.num_beams = num_beams;
             o.length_penalty = length_penalty;
             o.max_new_tokens = max_new_tokens;
             o.constrained = constrained;
             o.micro_batch_size = micro_batch_size;
             o.max_prompt_tokens = max_prompt_tokens;
             PyGenerator g;
             g.model = model;
             g.tokenizer = tokenizer;
             py::gil_scoped_release release;
             g.generator = std::make_shared<Generator>(model.model, tokenizer, catalog, o);
             return g;
           }),
           py::arg("model"), py::arg("tokenizer"), py::arg("catalog"), py::arg("template") = gd.template_name,
           py::arg("chat_format") = gd.chat_format, py::arg("decoding") = gd.decoding, py::arg("num_beams") = gd.num_beams,
           py::arg("length_penalty") = gd.length_penalty, py::arg("max_new_tokens") = gd.max_new_tokens,
           py::arg("constrained") = gd.constrained, py::arg("micro_batch_size") = gd.micro_batch_size,
           py::arg("max_prompt_tokens") = gd.max_prompt_tokens)
      .def(
          "generate",
          [](const PyGenerator& g, const py::object& requests) {
            const auto r = to_requests(requests);
            py::gil_scoped_release release;
            return g.generator->generate(r);
          },
          py::arg("requests"),
          "One Suggestion per request: (items, position) or (items, position, exclude) tuples, or dicts with "
          "those keys.")
      .def(
          "generate_noise",
          [](const PyGenerator& g, const py::object& sequences) {
            const auto items = to_item_lists(sequences);
            py::gil_scoped_release release;
            return g.generator->generate_noise(items);
          },
          py::arg("sequences"), "The model's own 'Noise Items' answer per sequence (without-uncertainty ablation).")
      .def(
          "prompt_ids",
          [](const PyGenerator& g, const py::object& items, int64_t position) {
            GenerationRequest q;
            q.items = int64_vector(items, "items");
            q.position = position;
            return to_numpy(g.generator->prompt_ids(q));
          },
          py::arg("items"), py::arg("position"), "The token ids generate() feeds the model for one request.")
      .def_property_readonly("stop_token_ids", [](const PyGenerator& g) { return to_numpy(g.generator->stop_token_ids()); })
      .def_property_readonly("trie_titles", [](const PyGenerator& g) { return g.generator->trie_titles(); })
      .def_property_readonly("constrained", [](const PyGenerator& g) { return g.generator->options().constrained; })
      .def_property_readonly("decoding", [](const PyGenerator& g) { return g.generator->options().decoding; })
      .def("__repr__", [](const PyGenerator& g) {
        return "<Generator decoding='" + g.generator->options().decoding +
               "' constrained=" + (g.generator->options().constrained ? "True" : "False") + ">";
      });

  py::class_<Correction>(m, "Correction", "One corrected position of a sequence (SequenceReport.corrections).")
      .def(py::init([](int64_t position, int64_t original_item, const py::object& p_noise, std::string generated_text,
                       int64_t replacement_item, float similarity, bool exact) {
             return Correction{position, original_item,
                               p_noise.is_none() ? std::nan("") : p_noise.cast<double>(), std::move(generated_text),
                               replacement_item, similarity, exact};
           }),
           py::arg("position"), py::arg("original_item"), py::arg("p_noise") = py::none(), py::arg("generated_text") = "",
           py::arg("replacement_item") = 0, py::arg("similarity") = 0.0f, py::arg("exact") = false)
      .def_readonly("position", &Correction::position)
      .def_readonly("original_item", &Correction::original_item)
      .def_property_readonly("p_noise", [](const Correction& c) -> py::object {
        return std::isnan(c.p_noise) ? py::object(py::none()) : py::object(py::float_(c.p_noise));
      }, "P_noise of the item; None under without-uncertainty")
      .def_readonly("generated_text", &Correction::generated_text)
      .def_readonly("replacement_item", &Correction::replacement_item, "0 = deleted")
      .def_readonly("similarity", &Correction::similarity)
      .def_readonly("exact", &Correction::exact)
      .def("to_dict", &correction_dict)
      .def("__repr__", [](const Correction& c) {
        return "Correction(position=" + std::to_string(c.position) + ", " + std::to_string(c.original_item) + " -> " +
               std::to_string(c.replacement_item) + ")";
      });

  py::class_<SequenceReport>(m, "SequenceReport", "The corrected sequence and what was changed.")
      .def(py::init([](const py::object& items, std::vector<Correction> corrections, const py::object& flagged) {
             SequenceReport r;
             r.items = int64_vector(items, "items");
             r.corrections = std::move(corrections);
             if (!flagged.is_none()) r.flagged = int64_vector(flagged, "flagged");
             return r;
           }),
           py::arg("items"), py::arg("corrections"), py::arg("flagged") = py::none(),
           "Rebuilds a report saved earlier (e.g. read back from a report file).")
      .def_property_readonly("items", [](const SequenceReport& r) { return to_numpy(r.items); })
      .def_property_readonly("flagged", [](const SequenceReport& r) { return to_numpy(r.flagged); })
      .def_readonly("corrections", &SequenceReport::corrections)
      .def("__repr__", [](const SequenceReport& r) {
        return "SequenceReport(items=" + std::to_string(r.items.size()) +
               ", corrections=" + std::to_string(r.corrections.size()) + ")";
      });

  const DenoiserOptions dd;
  py::class_<PyDenoiser>(m, "Denoiser", R"doc(
LLM4DSR's correction over many sequences: score (UncertaintyScorer) -> threshold (eta, budget b) ->
generate (Generator) -> ground (Grounder + Embedder; not needed with a constrained Generator).
policy: 'llm4dsr' (full), 'without-uncertainty' (the model's own noise answer, matched to an item),
'without-completion' (delete flagged items), 'popularity-completion' (replace by an item drawn by
catalogue popularity) -- the ablations of the paper's Table 7. Stages a policy does not use may be None.
Choose eta on the VALIDATION split (threshold() on its scores), then correct() the other splits.)doc")
      .def(py::init([](const Catalog& catalog, const py::object& scorer, const py::object& generator,
                       const py::object& grounder, const py::object& embedder, const std::string& policy,
                       int64_t budget, const std::string& score, uint64_t seed) {
             DenoiserOptions o;
             o.policy = parse_denoise_policy(policy);
             o.budget = budget;
             o.score = parse_noise_score(score);
             o.seed = seed;
             std::shared_ptr<const UncertaintyScorer> s;
             std::shared_ptr<const Generator> g;
             std::shared_ptr<const Grounder> gr;
             std::shared_ptr<const Embedder> e;
             if (!scorer.is_none()) s = scorer.cast<const PyUncertaintyScorer&>().scorer;
             if (!generator.is_none()) g = generator.cast<const PyGenerator&>().generator;
             if (!grounder.is_none()) gr = grounder.cast<std::shared_ptr<Grounder>>();
             if (!embedder.is_none()) e = embedder.cast<std::shared_ptr<Embedder>>();
             PyDenoiser d{scorer, generator, grounder, embedder, nullptr};
             d.denoiser = std::make_shared<Denoiser>(s, g, gr, e, catalog, o);
             return d;
           }),
           py::arg("catalog"), py::arg("scorer") = py::none(), py::arg("generator") = py::none(),
           py::arg("grounder") = py::none(), py::arg("embedder") = py::none(), py::arg("policy") = to_string(dd.policy),
           py::arg("budget") = dd.budget, py::arg("score") = to_string(dd.score), py::arg("seed") = dd.seed)
      .def(
          "score",
          [](const PyDenoiser& d, const py::object& sequences) {
            const auto items = to_item_lists(sequences);
            py::gil_scoped_release release;
            return d.denoiser->score(items);
          },
          py::arg("sequences"))
      .def("threshold", [](const PyDenoiser& d, const std::vector<NoiseScores>& scores,
                           double quantile) { return d.denoiser->threshold(scores, quantile); },
           py::arg("scores"), py::arg("quantile"), "eta at a quantile of the scores (compute on the validation split).")
      .def(
          "flag",
          [](const PyDenoiser& d, const std::vector<NoiseScores>& scores, double eta, const py::object& protect) {
            py::list out;
            for (const auto& f : d.denoiser->flag(scores, eta, to_protect(protect))) out.append(to_numpy(f));
            return out;
          },
          py::arg("scores"), py::arg("eta"), py::arg("protect") = py::none())
      .def(
          "correct",
          [](const PyDenoiser& d, const py::object& sequences, const std::vector<NoiseScores>& scores, double eta,
             const py::object& protect, uint64_t first_index) {
            const auto items = to_item_lists(sequences);
            const auto p = to_protect(protect);
            py::gil_scoped_release release;
            return d.denoiser->correct(items, scores, eta, p, first_index);
          },
          py::arg("sequences"), py::arg("scores"), py::arg("eta"), py::arg("protect") = py::none(),
          py::arg("first_index") = 0,
          "One SequenceReport per sequence. scores: from score() (ignored under without-uncertainty); protect: per "
          "sequence, positions never flagged; first_index: the index of the first sequence in its split (popularity "
          "draws do not depend on chunking).")
      .def(
          "denoise",
          [](const PyDenoiser& d, const py::object& sequences, double eta, const py::object& protect) {
            const auto items = to_item_lists(sequences);
            const auto p = to_protect(protect);
            py::gil_scoped_release release;
            return d.denoiser->denoise(items, eta, p);
          },
          py::arg("sequences"), py::arg("eta"), py::arg("protect") = py::none(), "score() then correct().")
      .def_property_readonly("policy", [](const PyDenoiser& d) { return to_string(d.denoiser->options().policy); })
      .def_property_readonly("budget", [](const PyDenoiser& d) { return d.denoiser->options().budget; })
      .def("__repr__", [](const PyDenoiser& d) {
        return "<Denoiser policy='" + to_string(d.denoiser->options().policy) +
               "' budget=" + std::to_string(d.denoiser->options().budget) + ">";
      });

  m.def("match_answer", &match_answer, py::arg("answer"), py::arg("titles"), py::arg("protect") = std::vector<bool>{},
        py::arg("min_overlap") = 0.5,
        "The position whose title equals `answer` (case / spaces aside), else the largest word overlap >= "
        "min_overlap; -1 when none.");

  py::class_<UserChunks>(m, "UserChunks", "A split's windows regrouped per user in non-overlapping chunks.")
      .def_property_readonly("sequences", [](const UserChunks& c) {
        py::list out;
        for (const auto& s : c.sequences) out.append(to_numpy(s));
        return out;
      })
      .def_readonly("protect", &UserChunks::protect)
      .def_property_readonly("labels", [](const UserChunks& c) {
        py::list out;
        for (const auto& s : c.labels) out.append(to_numpy(s));
        return out;
      })
      .def_property_readonly("user", [](const UserChunks& c) { return to_numpy(c.user); })
      .def_property_readonly("start", [](const UserChunks& c) { return to_numpy(c.start); })
      .def_readonly("user_ids", &UserChunks::user_ids)
      .def("__len__", [](const UserChunks& c) { return c.sequences.size(); });
  m.def("user_chunks", &user_chunks, py::arg("windows"), py::arg("chunk_length"), py::arg("protect_targets") = false,
        "Per-user unit: every history position of the split's windows once, in chunks of chunk_length items.");
  m.def("apply_user_corrections", &apply_user_corrections, py::arg("windows"), py::arg("chunks"), py::arg("reports"),
        "The windows with each chunk's corrections applied wherever the position appears.");
  m.def(
      "window_histories",
      [](const SequenceSet& windows) {
        py::list out;
        for (const auto& h : window_histories(windows)) out.append(to_numpy(h));
        return out;
      },
      py::arg("windows"), "Per-window unit: every window's items but the target.");
  m.def("apply_window_corrections", &apply_window_corrections, py::arg("windows"), py::arg("reports"),
        "The windows with reports[i] written into window i's history (the target unchanged).");

  m.def(
      "detection_metrics",
      [](const py::object& flagged, const py::object& is_noise) {
        const auto r = detection_metrics(to_bools(flagged, "flagged"), to_bools(is_noise, "is_noise"));
        py::dict d;
        d["precision"] = r.precision;
        d["recall"] = r.recall;
        d["f1"] = r.f1;
        d["true_positives"] = r.true_positives;
        d["false_positives"] = r.false_positives;
        d["false_negatives"] = r.false_negatives;
        d["positions"] = r.positions;
        return d;
      },
      py::arg("flagged"), py::arg("is_noise"), "precision / recall / F1 of flagged positions against noise labels.");
  m.def(
      "average_precision",
      [](const py::object& scores, const py::object& is_noise) {
        return average_precision(typed_vector<double>(scores, "scores", Elements::kReals),
                                 to_bools(is_noise, "is_noise"));
      },
      py::arg("scores"), py::arg("is_noise"), "PR-AUC as average precision (scikit-learn's definition).");
  m.def(
      "score_histogram",
      [](const py::object& probabilities, const py::object& is_noise, int64_t bins) {
        const auto h = score_histogram(typed_vector<double>(probabilities, "probabilities", Elements::kReals),
                                       to_bools(is_noise, "is_noise"), bins);
        py::dict d;
        d["log10_edges"] = to_numpy(h.edges);
        d["noise"] = to_numpy(h.noise_counts);
        d["clean"] = to_numpy(h.clean_counts);
        return d;
      },
      py::arg("probabilities"), py::arg("is_noise"), py::arg("bins") = 20,
      "Histograms of log10 P_noise for noise and clean positions (paper Fig. 5) on shared bins.");
}

}  // namespace llm4dsr::bindings

// Python bindings of the denoising stages: UncertaintyScorer (P_noise, paper Eq. 2), NoiseScores,
// and the thresholds of Eq. 3 (noise_threshold, flag_noise, search_eta).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/stl_bind.h>

#include <memory>

#include "bindings.h"
#include "torch_bindings.h"
#include "denoise_bindings.h"
#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/denoise/thresholds.h"
#include "llm4dsr/denoise/uncertainty_scorer.h"


namespace llm4dsr::bindings {

namespace {


NoiseScore to_noise_score(const std::string& name) { return parse_noise_score(name); }

// Whether a scores argument is a list of NoiseScores objects (else it holds plain numbers).
bool holds_noise_scores(const py::handle& scores) {
  if (py::isinstance<py::str>(scores) || py::isinstance<py::array>(scores) || !py::isinstance<py::sequence>(scores))
    return false;
  const auto seq = py::reinterpret_borrow<py::sequence>(scores);
  return py::len(seq) > 0 && py::isinstance<NoiseScores>(seq[0]);
}

std::vector<NoiseScores> noise_scores_arg(const py::handle& scores, const char* what) {
  std::vector<NoiseScores> out;
  for (const py::handle s : scores) {
    LLM4DSR_CHECK(py::isinstance<NoiseScores>(s), what << ": a list of NoiseScores holds a "
                                                       << std::string(py::str(s.attr("__class__").attr("__name__"))));
    out.push_back(s.cast<NoiseScores>());
  }
  return out;
}


}  // namespace

void bind_denoise(py::module_& m) {
  py::class_<NoiseScores>(m, "NoiseScores", R"doc(
P_noise of every position of one sequence (UncertaintyScorer.score).

log_prob: float32 log P_noise per position (-inf for the oldest `dropped_items` positions, which did
not fit in the prompt); prob: exp(log_prob) normalised over the sequence's distinct scored events
(a repeated title counts once; in first-token mode, titles sharing a first token count once);
rank: 1 = most likely noise, a permutation (equal scores: earlier position first).)doc")
      .def(py::init<>())
      .def(py::init([](const py::object& items, const py::object& log_prob, const py::object& prob,
                       const py::object& rank, int64_t dropped_items) {
             NoiseScores s;
             s.items = int64_vector(items, "items");
             s.log_prob = typed_vector<float>(log_prob, "NoiseScores: log_prob", Elements::kReals);
             s.prob = typed_vector<float>(prob, "NoiseScores: prob", Elements::kReals);
             s.rank = int64_vector(rank, "rank");
             const size_t n = s.items.size();
             LLM4DSR_CHECK(s.log_prob.size() == n && s.prob.size() == n && s.rank.size() == n,
                           "NoiseScores: items, log_prob, prob and rank must have one entry per position (" << n
                                                                                                             << " items)");
             s.dropped_items = dropped_items;
             return s;
           }),
           py::arg("items"), py::arg("log_prob"), py::arg("prob"), py::arg("rank"), py::arg("dropped_items") = 0,
           "Rebuilds scores saved earlier (e.g. read back from a scores file).")
      .def_property_readonly("items", [](const NoiseScores& s) { return to_numpy(s.items); })
      .def_property_readonly("log_prob", [](const NoiseScores& s) { return to_numpy(s.log_prob); })
      .def_property_readonly("prob", [](const NoiseScores& s) { return to_numpy(s.prob); })
      .def_property_readonly("rank", [](const NoiseScores& s) { return to_numpy(s.rank); })
      .def_readonly("dropped_items", &NoiseScores::dropped_items)
      .def("__len__", &NoiseScores::size)
      .def("__repr__", [](const NoiseScores& s) {
        return "NoiseScores(items=" + std::to_string(s.size()) + ", dropped_items=" + std::to_string(s.dropped_items) + ")";
      });

  const ScorerOptions defaults;
  py::class_<PyUncertaintyScorer>(m, "UncertaintyScorer", R"doc(
P_noise(s_k) of LLM4DSR (paper Eq. 2): the probability that the model names item s_k right after
"Noise Items:" given the sequence's prompt.

mode: 'first-token' (the paper's practical form: one forward per sequence, the log-probability of
each title's first token) or 'exact' (every token of each title, optionally + the closing quote).
first_token_context: 'in-context' (the token the model sees after the opening quote) or 'standalone'
(each title tokenised alone, as the authors' released code did: the wrong token for most titles).
template / chat_format: names or PromptTemplate / ChatFormat objects; use those the model was
fine-tuned with. Prompts over max_prompt_tokens (BOS + prompt) lose their oldest items.
share_prefix: run the prompt head every sequence shares (BOS, chat header, the template's opening
words) once per chunk and continue each micro-batch from its keys/values; the scores are unchanged.)doc")
      .def(py::init([](const PyLlamaModel& model, std::shared_ptr<Tokenizer> tokenizer, const py::object& prompt_template,
                       const py::object& chat_format, const std::string& mode, const std::string& first_token_context,
                       int64_t micro_batch_size, int64_t max_prompt_tokens, bool include_closing_delimiter,
                       int64_t chunk_size, bool share_prefix) {
             LLM4DSR_CHECK(tokenizer, "UncertaintyScorer: tokenizer is None");
             ScorerOptions o;
             set_template_and_chat(o, prompt_template, chat_format);
             o.mode = parse_scoring_mode(mode);
             o.first_token_context = parse_first_token_context(first_token_context);
             o.micro_batch_size = micro_batch_size;
             o.max_prompt_tokens = max_prompt_tokens;
             o.include_closing_delimiter = include_closing_delimiter;
             o.chunk_size = chunk_size;
             o.share_prefix = share_prefix;
             PyUncertaintyScorer p;
             p.model = model;
             p.tokenizer = tokenizer;
             p.scorer = std::make_shared<UncertaintyScorer>(model.model, tokenizer, o);
             return p;
           }),
           py::arg("model"), py::arg("tokenizer"), py::arg("template") = defaults.template_name,
           py::arg("chat_format") = defaults.chat_format, py::arg("mode") = to_string(defaults.mode),
           py::arg("first_token_context") = to_string(defaults.first_token_context),
           py::arg("micro_batch_size") = defaults.micro_batch_size,
           py::arg("max_prompt_tokens") = defaults.max_prompt_tokens,
           py::arg("include_closing_delimiter") = defaults.include_closing_delimiter,
           py::arg("chunk_size") = defaults.chunk_size,
           py::arg("share_prefix") = defaults.share_prefix)
      .def(
          "score",
          [](const PyUncertaintyScorer& p, const py::object& sequences, const Catalog& catalog) {
            const auto items = to_item_lists(sequences);
            py::gil_scoped_release release;
            return p.scorer->score(items, catalog);
          },
          py::arg("sequences"), py::arg("catalog"),
          "A list of NoiseScores, one per sequence (a SequenceSet, Sequence objects, or lists/arrays of item ids).")
      .def(
          "score_chunks",
          [](const PyUncertaintyScorer& p, const py::object& sequences, const Catalog& catalog, const py::function& sink) {
            const auto items = to_item_lists(sequences);
            py::gil_scoped_release release;
            p.scorer->score_chunks(items, catalog, [&](size_t first, std::vector<NoiseScores>&& scores) {
              py::gil_scoped_acquire acquire;
              sink(first, py::cast(std::move(scores)));
            });
          },
          py::arg("sequences"), py::arg("catalog"), py::arg("sink"),
          "Streams a big split: scores chunk_size sequences at a time and calls sink(first, scores) with the "
          "index of the chunk's first sequence and its list of NoiseScores before the next chunk is tokenised, "
          "so only one chunk's results are held at a time. An exception raised by sink stops the run.")
      .def(
          "plan",
          [](const PyUncertaintyScorer& p, const py::object& items, const Catalog& catalog) {
            const ScoringPlan plan = p.scorer->plan(int64_vector(items, "items"), catalog);
            py::dict d;
            d["prefix_ids"] = to_numpy(plan.prefix_ids);
            d["dropped_items"] = plan.dropped_items;
            d["context_length"] = to_numpy(plan.context_length);
            py::list scored;
            for (const auto& ids : plan.scored_ids) scored.append(to_numpy(ids));
            d["scored_ids"] = scored;
            d["event"] = to_numpy(plan.event);
            return d;
          },
          py::arg("items"), py::arg("catalog"),
          "What score() feeds the model for one sequence: prefix_ids, and per position the prefix length it is "
          "conditioned on (context_length), the ids scored after it (scored_ids) and its distinct event.")
      .def_property_readonly("mode", [](const PyUncertaintyScorer& p) { return to_string(p.scorer->options().mode); })
      .def_property_readonly("first_token_context",
                             [](const PyUncertaintyScorer& p) { return to_string(p.scorer->options().first_token_context); })
      .def_property_readonly("prompt_template", [](const PyUncertaintyScorer& p) { return p.scorer->prompt_template(); })
      .def_property_readonly("chat_format", [](const PyUncertaintyScorer& p) { return p.scorer->chat_format(); })
      .def("__repr__", [](const PyUncertaintyScorer& p) {
        return "<UncertaintyScorer mode='" + to_string(p.scorer->options().mode) + "' template='" +
               p.scorer->prompt_template().name + "'>";
      });

  m.def(
      "all_noise_scores",
      [](const std::vector<NoiseScores>& scores, const std::string& score) {
        return to_numpy(all_scores(scores, to_noise_score(score)));
      },
      py::arg("scores"), py::arg("score") = "raw",
      "float64 array of every scored position's score, sequence after sequence (dropped positions left out); "
      "score='raw' (P_noise = exp(log_prob)) or 'normalised' (prob).");
  m.def(
      "noise_threshold",
      [](const py::object& scores, double quantile, const std::string& score) {
        std::vector<double> values = holds_noise_scores(scores)
                                         ? all_scores(noise_scores_arg(scores, "scores"), to_noise_score(score))
                                         : typed_vector<double>(scores, "scores", Elements::kReals);
        return quantile_threshold(std::move(values), quantile);
      },
      py::arg("scores"), py::arg("quantile"), py::arg("score") = "raw",
      "eta at `quantile` (inverted CDF: the smallest score with at least that fraction of scores at or below it; "
      "-inf for 0) of a list of NoiseScores or of a flat array of scores. Compute it on the VALIDATION split.");
  m.def(
      "flag_noise",
      [](const py::object& scores, double eta, int64_t budget, const std::string& score) {
        std::vector<std::vector<int64_t>> flags;
        if (holds_noise_scores(scores)) {
          flags = flag_noise(noise_scores_arg(scores, "scores"), eta, budget, to_noise_score(score));
        } else {
          std::vector<std::vector<double>> rows;
          for (const py::handle row : scores)
            rows.push_back(typed_vector<double>(row, "scores: each sequence's scores", Elements::kReals));
          flags = flag_noise(rows, eta, budget);
        }
        py::list out;
        for (const auto& f : flags) out.append(to_numpy(f));
        return out;
      },
      py::arg("scores"), py::arg("eta"), py::arg("budget") = 0, py::arg("score") = "raw",
      "Per sequence, the flagged positions (int64 arrays, ascending): score > eta (Eq. 3), at most `budget` per "
      "sequence, highest first (0 = no limit). scores: NoiseScores objects or lists of floats.");
  m.def("default_quantile_grid", &default_quantile_grid, "The paper's eta quantiles 0, 0.05, ..., 1.");
  m.def(
      "search_eta",
      [](const std::vector<NoiseScores>& validation, const py::function& objective, int64_t budget,
         const std::string& score, const py::object& grid) {
        const std::vector<double> g = grid.is_none() ? default_quantile_grid() : grid.cast<std::vector<double>>();
        const auto result = search_eta(
            validation,
            [&](double eta, const std::vector<std::vector<int64_t>>& flags) {
              py::list f;
              for (const auto& x : flags) f.append(to_numpy(x));
              return objective(eta, f).cast<double>();
            },
            budget, to_noise_score(score), g);
        const auto row = [](const EtaCandidate& c) {
          py::dict d;
          d["quantile"] = c.quantile;
          d["eta"] = c.eta;
          d["objective"] = c.objective;
          return d;
        };
        py::list candidates;
        for (const auto& c : result.candidates) candidates.append(row(c));
        py::dict out;
        out["candidates"] = candidates;
        out["best"] = row(result.best);
        return out;
      },
      py::arg("validation"), py::arg("objective"), py::arg("budget") = 0, py::arg("score") = "raw",
      py::arg("grid") = py::none(),
      "Scans eta quantiles on VALIDATION scores (never the test split): objective(eta, flags) -> float, higher is "
      "better. Returns {'candidates': [...], 'best': {'quantile', 'eta', 'objective'}} (ties: the higher quantile).");
}

}  // namespace llm4dsr::bindings

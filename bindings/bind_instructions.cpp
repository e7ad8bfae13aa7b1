// llm4dsr.PromptTemplate, llm4dsr.ChatFormat, llm4dsr.InstructionBuilder and the values they make.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl_bind.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "llm4dsr/data/catalog.h"
#include "llm4dsr/data/sequence.h"
#include "llm4dsr/error.h"
#include "llm4dsr/text/chat_format.h"
#include "llm4dsr/text/instruction_builder.h"
#include "llm4dsr/text/prompt_template.h"
#include "llm4dsr/text/tokenizer.h"

namespace py = pybind11;

// bind_data.cpp binds SequenceSet as an opaque list; every translation unit must agree.
PYBIND11_MAKE_OPAQUE(llm4dsr::SequenceSet)

namespace llm4dsr::bindings {
namespace {

py::array_t<int64_t> to_numpy(const std::vector<int64_t>& v) {
  py::array_t<int64_t> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

// A SequenceSet as it is, or any iterable of Sequence objects.
SequenceSet to_sequence_set(const py::object& windows) {
  if (py::isinstance<SequenceSet>(windows)) return windows.cast<SequenceSet>();
  SequenceSet out;
  for (const py::handle item : windows) out.push_back(item.cast<Sequence>());
  return out;
}

ChatFormat to_chat_format(const py::object& chat) {
  if (py::isinstance<py::str>(chat)) return ChatFormat::get(chat.cast<std::string>());
  return chat.cast<ChatFormat>();
}

py::dict to_dict(const TokenizedInstruction& x) {
  py::dict d;
  d["input_ids"] = to_numpy(x.input_ids);
  d["labels"] = to_numpy(x.labels);
  d["loss_mask"] = to_numpy(x.loss_mask);
  d["prompt_length"] = x.prompt_length;
  d["dropped_items"] = x.dropped_items;
  d["prompt"] = x.prompt;
  return d;
}

}  // namespace

void bind_instructions(py::module_& m) {
  py::class_<ChatFormat>(m, "ChatFormat", R"doc(
How a prompt is wrapped for an instruction-tuned checkpoint's chat template: an optional system turn,
the prompt in a user turn, then the opened assistant turn the response follows. The turn is closed by
the tokenizer's EOS id at tokenisation. Built-ins: 'none', 'chatml', 'smollm2'.)doc")
      .def(py::init([](std::string name, std::string system, std::string system_prefix, std::string system_suffix,
                       std::string user_prefix, std::string user_suffix, std::string assistant_prefix,
                       std::string end_of_turn, bool add_bos) {
             ChatFormat f;
             f.name = std::move(name);
             f.system = std::move(system);
             f.system_prefix = std::move(system_prefix);
             f.system_suffix = std::move(system_suffix);
             f.user_prefix = std::move(user_prefix);
             f.user_suffix = std::move(user_suffix);
             f.assistant_prefix = std::move(assistant_prefix);
             f.end_of_turn = std::move(end_of_turn);
             f.add_bos = add_bos;
             return f;
           }),
           py::arg("name") = "none", py::arg("system") = "", py::arg("system_prefix") = "",
           py::arg("system_suffix") = "", py::arg("user_prefix") = "", py::arg("user_suffix") = "",
           py::arg("assistant_prefix") = "", py::arg("end_of_turn") = "", py::arg("add_bos") = true)
      .def_readwrite("name", &ChatFormat::name)
      .def_readwrite("system", &ChatFormat::system)
      .def_readwrite("system_prefix", &ChatFormat::system_prefix)
      .def_readwrite("system_suffix", &ChatFormat::system_suffix)
      .def_readwrite("user_prefix", &ChatFormat::user_prefix)
      .def_readwrite("user_suffix", &ChatFormat::user_suffix)
      .def_readwrite("assistant_prefix", &ChatFormat::assistant_prefix)
      .def_readwrite("end_of_turn", &ChatFormat::end_of_turn)
      .def_readwrite("add_bos", &ChatFormat::add_bos, "Whether BOS goes before the wrapped text.")
      .def_property_readonly("is_none", &ChatFormat::is_none)
      .def("wrap", &ChatFormat::wrap, py::arg("prompt"))
      .def("head", &ChatFormat::head, "The wrapped text before the prompt.")
      .def("tail", &ChatFormat::tail, "The wrapped text after the prompt (up to where the response starts).")
      .def_static("get", &ChatFormat::get, py::arg("name"), "A built-in format: 'none', 'chatml' or 'smollm2'.")
      .def_static("names", &ChatFormat::names)
      .def_static("chatml", &ChatFormat::chatml, py::arg("system") = "", "ChatML with this system message.")
      .def("__repr__", [](const ChatFormat& f) { return "<ChatFormat '" + f.name + "'>"; });

  const PromptTemplate defaults;
  py::class_<PromptTemplate>(m, "PromptTemplate", R"doc(
A named, versioned instruction template. `prompt` holds one {history}; `response` holds {noise} then
{suggestion}; '{{' and '}}' are literal braces. Titles are quoted with quote_open / quote_close, joined
by `separator`, and sanitised: control characters become spaces, ends are stripped, and quote_close
inside a title becomes quote_substitute. Built-ins: PromptTemplate.get('llm4dsr-paper') and
PromptTemplate.get('llm4dsr-alpaca') (the authors' released Alpaca layout).

    scoring_prefix(h) + sanitize_title(noise) + noise_suffix() + sanitize_title(s) + suggestion_suffix()
        == render_text(h, noise, s))doc")
      .def(py::init([](std::string name, std::string prompt, std::string response, int64_t version,
                       std::string description, std::string clean_response, std::string quote_open,
                       std::string quote_close, std::string separator, std::string quote_substitute) {
             PromptTemplate t;
             t.name = std::move(name);
             t.prompt = std::move(prompt);
             t.response = std::move(response);
             t.version = version;
             t.description = std::move(description);
             t.clean_response = std::move(clean_response);
             t.quote_open = std::move(quote_open);
             t.quote_close = std::move(quote_close);
             t.separator = std::move(separator);
             t.quote_substitute = std::move(quote_substitute);
             t.validate();
             return t;
           }),
           py::arg("name"), py::arg("prompt"), py::arg("response"), py::arg("version") = defaults.version,
           py::arg("description") = "", py::arg("clean_response") = defaults.clean_response,
           py::arg("quote_open") = defaults.quote_open, py::arg("quote_close") = defaults.quote_close,
           py::arg("separator") = defaults.separator, py::arg("quote_substitute") = defaults.quote_substitute,
           "A custom template; validated (llm4dsr.Error names the problem).")
      .def_readwrite("name", &PromptTemplate::name)
      .def_readwrite("version", &PromptTemplate::version)
      .def_readwrite("description", &PromptTemplate::description)
      .def_readwrite("prompt", &PromptTemplate::prompt)
      .def_readwrite("response", &PromptTemplate::response)
      .def_readwrite("clean_response", &PromptTemplate::clean_response)
      .def_readwrite("quote_open", &PromptTemplate::quote_open)
      .def_readwrite("quote_close", &PromptTemplate::quote_close)
      .def_readwrite("separator", &PromptTemplate::separator)
      .def_readwrite("quote_substitute", &PromptTemplate::quote_substitute)
      .def("validate", &PromptTemplate::validate)
      .def("sanitize_title", &PromptTemplate::sanitize_title, py::arg("title"))
      .def("quote", &PromptTemplate::quote, py::arg("title"))
      .def("render_history", &PromptTemplate::render_history, py::arg("titles"))
      .def("render_prompt", &PromptTemplate::render_prompt, py::arg("titles"), py::arg_v("chat", ChatFormat{}, "ChatFormat.get('none')"),
           "The prompt x for these history titles, wrapped by `chat`.")
      .def("render_response", &PromptTemplate::render_response, py::arg("noise_title"), py::arg("suggestion_title"))
      .def("render_clean_response", &PromptTemplate::render_clean_response)
      .def("render_text", &PromptTemplate::render_text, py::arg("titles"), py::arg("noise_title"),
           py::arg("suggestion_title"), py::arg_v("chat", ChatFormat{}, "ChatFormat.get('none')"), "The training text x + z.")
      .def("scoring_prefix", &PromptTemplate::scoring_prefix, py::arg("titles"), py::arg_v("chat", ChatFormat{}, "ChatFormat.get('none')"),
           "Everything up to where the noise title starts.")
      .def("generation_prompt", &PromptTemplate::generation_prompt, py::arg("titles"), py::arg("noise_title"),
           py::arg_v("chat", ChatFormat{}, "ChatFormat.get('none')"), "Everything up to where the suggested title starts.")
      .def("noise_suffix", &PromptTemplate::noise_suffix, "The text between the noise title and the suggestion.")
      .def("suggestion_suffix", &PromptTemplate::suggestion_suffix, "The text after the suggested title.")
      .def("closing_delimiter", &PromptTemplate::closing_delimiter, "The text that ends a title.")
      .def("to_json", &PromptTemplate::to_json)
      .def_static("from_json", &PromptTemplate::from_json, py::arg("json"))
      .def_static("get", &PromptTemplate::get, py::arg("name"))
      .def_static("names", &PromptTemplate::names)
      .def_static("register", &PromptTemplate::register_template, py::arg("template"), py::arg("replace") = false,
                  "Adds a template to the registry (built-ins cannot be replaced).")
      .def("__repr__", [](const PromptTemplate& t) {
        return "<PromptTemplate '" + t.name + "' version=" + std::to_string(t.version) + ">";
      });

  py::class_<InstructionPair>(m, "InstructionPair", "One self-supervised example: a corrupted window, x and z.")
      .def_readonly("window_index", &InstructionPair::window_index)
      .def_readonly("position", &InstructionPair::position, "The replaced position; -1 for a clean example.")
      .def_readonly("noise_item", &InstructionPair::noise_item, "The inserted item id; 0 for a clean example.")
      .def_readonly("original_item", &InstructionPair::original_item, "The replaced item id; 0 for a clean example.")
      .def_property_readonly("items", [](const InstructionPair& p) { return to_numpy(p.items); },
                             "int64 item ids of the window as shown to the model.")
      .def_readonly("titles", &InstructionPair::titles)
      .def_readonly("noise_title", &InstructionPair::noise_title)
      .def_readonly("original_title", &InstructionPair::original_title)
      .def_readonly("prompt", &InstructionPair::prompt)
      .def_readonly("response", &InstructionPair::response)
      .def_property_readonly("is_clean", &InstructionPair::is_clean)
      .def("__repr__", [](const InstructionPair& p) {
        return "<InstructionPair window=" + std::to_string(p.window_index) +
               (p.is_clean() ? std::string(" clean") : " position=" + std::to_string(p.position)) + ">";
      });

  py::class_<TokenizedInstruction>(m, "TokenizedInstruction", R"doc(
Token ids of one pair: input_ids = [BOS] prompt response [EOS]; labels = input_ids where the loss
applies and -100 elsewhere (not shifted, as HF expects); loss_mask = labels != -100.)doc")
      .def_property_readonly("input_ids", [](const TokenizedInstruction& x) { return to_numpy(x.input_ids); })
      .def_property_readonly("labels", [](const TokenizedInstruction& x) { return to_numpy(x.labels); })
      .def_property_readonly("loss_mask", [](const TokenizedInstruction& x) { return to_numpy(x.loss_mask); })
      .def_readonly("prompt_length", &TokenizedInstruction::prompt_length)
      .def_readonly("dropped_items", &TokenizedInstruction::dropped_items)
      .def_readonly("prompt", &TokenizedInstruction::prompt)
      .def("to_dict", &to_dict)
      .def("__len__", [](const TokenizedInstruction& x) { return x.input_ids.size(); })
      .def("__repr__", [](const TokenizedInstruction& x) {
        return "<TokenizedInstruction tokens=" + std::to_string(x.input_ids.size()) +
               " prompt_length=" + std::to_string(x.prompt_length) + ">";
      });

  const InstructionOptions option_defaults;
  py::class_<InstructionBuilder>(m, "InstructionBuilder", R"doc(
Self-supervised instruction data (LLM4DSR section 3.1): per window one uniformly chosen position is
replaced by a uniformly drawn different item; the response names the noise item and the original.
loss_on='response' is the paper's Eq. 1, 'all' what the authors' code trained on.)doc")
      .def(py::init([](const py::object& prompt_template, const py::object& chat_format, int64_t max_prompt_tokens,
                       const std::string& loss_on, double clean_fraction, int64_t max_pairs, uint64_t seed,
                       bool add_bos, bool add_eos) {
             InstructionOptions o;
             if (py::isinstance<py::str>(prompt_template)) {
               o.template_name = prompt_template.cast<std::string>();
             } else {
               o.prompt_template = prompt_template.cast<PromptTemplate>();
             }
             o.chat = to_chat_format(chat_format);
             o.max_prompt_tokens = max_prompt_tokens;
             o.loss_on = parse_loss_on(loss_on);
             o.clean_fraction = clean_fraction;
             o.max_pairs = max_pairs;
             o.seed = seed;
             o.add_bos = add_bos;
             o.add_eos = add_eos;
             return InstructionBuilder(o);
           }),
           py::arg("template") = option_defaults.template_name, py::arg("chat_format") = option_defaults.chat_format,
           py::arg("max_prompt_tokens") = option_defaults.max_prompt_tokens,
           py::arg("loss_on") = to_string(option_defaults.loss_on),
           py::arg("clean_fraction") = option_defaults.clean_fraction, py::arg("max_pairs") = option_defaults.max_pairs,
           py::arg("seed") = option_defaults.seed, py::arg("add_bos") = option_defaults.add_bos,
           py::arg("add_eos") = option_defaults.add_eos, R"doc(
template: a registered name or a PromptTemplate; chat_format: 'none', 'chatml', 'smollm2' or a
ChatFormat; max_prompt_tokens: prompt budget incl. BOS (oldest whole items are dropped; 0 = no limit);
max_pairs: windows sampled without replacement (0 = all); clean_fraction: share of 'None' examples.)doc")
      .def_property_readonly("prompt_template", &InstructionBuilder::prompt_template)
      .def_property_readonly("chat_format", &InstructionBuilder::chat_format)
      .def_property_readonly("max_prompt_tokens",
                             [](const InstructionBuilder& b) { return b.options().max_prompt_tokens; })
      .def_property_readonly("loss_on", [](const InstructionBuilder& b) { return to_string(b.options().loss_on); })
      .def_property_readonly("clean_fraction", [](const InstructionBuilder& b) { return b.options().clean_fraction; })
      .def_property_readonly("max_pairs", [](const InstructionBuilder& b) { return b.options().max_pairs; })
      .def_property_readonly("seed", [](const InstructionBuilder& b) { return b.options().seed; })
      .def_property_readonly("add_bos", [](const InstructionBuilder& b) { return b.options().add_bos; })
      .def_property_readonly("add_eos", [](const InstructionBuilder& b) { return b.options().add_eos; })
      .def(
          "make_pairs",
          [](const InstructionBuilder& self, const py::object& windows, const Catalog& catalog) {
            const SequenceSet set = to_sequence_set(windows);
            py::gil_scoped_release release;
            return self.make_pairs(set, catalog);
          },
          py::arg("windows"), py::arg("catalog"),
          "One InstructionPair per window (or max_pairs sampled windows), seeded. `windows`: a SequenceSet "
          "(e.g. splits.train) or a list of Sequence.")
      .def(
          "tokenize",
          [](const InstructionBuilder& self, const std::vector<InstructionPair>& pairs, const Tokenizer& tokenizer) {
            py::gil_scoped_release release;
            return self.tokenize(pairs, tokenizer);
          },
          py::arg("pairs"), py::arg("tokenizer"), "A TokenizedInstruction per pair, in parallel.")
      .def(
          "tokenize_one",
          [](const InstructionBuilder& self, const InstructionPair& pair, const Tokenizer& tokenizer) {
            py::gil_scoped_release release;
            return self.tokenize_one(pair, tokenizer);
          },
          py::arg("pair"), py::arg("tokenizer"))
      .def("render_prompt", &InstructionBuilder::render_prompt, py::arg("pair"), py::arg("dropped") = 0,
           "The prompt of `pair` with its `dropped` oldest droppable items left out.")
      .def("__repr__", [](const InstructionBuilder& b) {
        return "<InstructionBuilder template='" + b.prompt_template().name + "' chat_format='" + b.chat_format().name +
               "' loss_on='" + to_string(b.options().loss_on) + "'>";
      });
}

}  // namespace llm4dsr::bindings

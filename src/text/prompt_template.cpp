#include "llm4dsr/text/prompt_template.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// A template field split at its placeholders: literals.size() == placeholders.size() + 1, and the
// text is literals[0] placeholders[0] literals[1] ... with "{{" / "}}" already unescaped.
struct Segments {
  std::vector<std::string> literals{std::string()};
  std::vector<std::string> placeholders;
};

Segments parse_field(std::string_view text, const std::string& template_name, const char* field) {
  static const std::set<std::string, std::less<>> kKnown = {"history", "noise", "suggestion"};
  Segments out;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      out.literals.back() += '{';
      i += 2;
    } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      out.literals.back() += '}';
      i += 2;
    } else if (c == '{') {
      const size_t close = text.find('}', i + 1);
      LLM4DSR_CHECK(close != std::string_view::npos,
                    "prompt template '" << template_name << "', field '" << field << "': '{' at byte " << i
                                        << " has no closing '}' (write '{{' for a literal brace)");
      const std::string_view name = text.substr(i + 1, close - i - 1);
      LLM4DSR_CHECK(kKnown.count(name) > 0,
                    "prompt template '" << template_name << "', field '" << field << "': unknown placeholder {" << name
                                        << "} at byte " << i
                                        << "; known: {history}, {noise}, {suggestion} (write '{{' for a literal brace)");
      out.placeholders.emplace_back(name);
      out.literals.emplace_back();
      i = close + 1;
    } else if (c == '}') {
      LLM4DSR_THROW("prompt template '" << template_name << "', field '" << field << "': lone '}' at byte " << i
                                        << " (write '}}' for a literal brace)");
    } else {
      out.literals.back() += c;
      ++i;
    }
  }
  return out;
}

std::string join_names(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << "{" << names[i] << "}";
  return names.empty() ? std::string("none") : os.str();
}

// The template's fields, split and checked.
struct Parsed {
  std::string prompt_head, prompt_tail;            // around {history}
  std::string response_head, response_mid, response_tail;  // before {noise}, between, after {suggestion}
};

Parsed parse(const PromptTemplate& t) {
  const Segments prompt = parse_field(t.prompt, t.name, "prompt");
  LLM4DSR_CHECK(prompt.placeholders == std::vector<std::string>{"history"},
                "prompt template '" << t.name << "', field 'prompt': expected exactly one {history}, found "
                                    << join_names(prompt.placeholders));
  const Segments response = parse_field(t.response, t.name, "response");
  LLM4DSR_CHECK((response.placeholders == std::vector<std::string>{"noise", "suggestion"}),
                "prompt template '" << t.name
                                    << "', field 'response': expected {noise} then {suggestion}, once each; found "
                                    << join_names(response.placeholders));
  Parsed p;
  p.prompt_head = prompt.literals[0];
  p.prompt_tail = prompt.literals[1];
  p.response_head = response.literals[0];
  p.response_mid = response.literals[1];
  p.response_tail = response.literals[2];
  return p;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (;;) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos).append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

PromptTemplate paper_template() {
  PromptTemplate t;
  t.name = "llm4dsr-paper";
  t.version = 1;
  // Section 3.1 names the three parts ("The user has interacted with the following items before:",
  // "Noise Items:", "Suggested Items:"); its figure with the exact layout is not in the text we
  // have, so line breaks and quoting follow the authors' released code (see llm4dsr-alpaca).
  t.description =
      "The template of the LLM4DSR paper (section 3.1): interactions in the prompt, the noise item and its "
      "suggested replacement in the response.";
  t.prompt = "The user has interacted with the following items before: {history}\n";
  t.response = "Noise Items: {noise}\nSuggested Items: {suggestion}";
  return t;
}

PromptTemplate alpaca_template() {
  PromptTemplate t;
  t.name = "llm4dsr-alpaca";
  t.version = 1;
  // The training text of the authors' released code (WANGBohaO-jpg/LLM4DSR: train_denoise_model.py
  // and the TDMD train.json written by generate_noise_data.py): the Alpaca layout with the
  // instruction below, the input "User Interaction Sequence: " + titles in double quotes joined by
  // ", " + "\n " (a newline and a space), and the response 'Noise Items: "<noise>"\nSuggested
  // Replacements: "<original>"' (or "None"). Differences from that code, on purpose:
  //  - their scoring prompt (generate_noise_prob_data.py) ends "Noise Items: '" with a single quote
  //    although training used double quotes, and their suggestion prompt ends "Suggested
  //    Replacements: \n"; here scoring and generation prompts are cut from the training text
  //    itself, so the model is asked in exactly the form it was trained on;
  //  - their inference scripts have two spaces after "the request." where training has one; we
  //    keep the training text;
  //  - they score the first token of each title as encoded on its own, we leave that to the scorer
  //    (Tokenizer::encode_in_context gives the token the model actually sees after the quote).
  t.description =
      "The Alpaca-style template of the LLM4DSR authors' released code (instruction / input / response).";
  t.prompt =
      "Below is an instruction that describes a task, paired with an input that provides further context. "
      "Write a response that appropriately completes the request. \n\n"
      "### Instruction:\n"
      "You are to analyze a list of item titles provided by a user. Your task is to identify any item(s) that do "
      "not align with the main interests reflected by the majority of the items. After identifying these noise "
      "items, suggest alternative items that better match the user's interests.\n\n"
      "### Input:\n"
      "User Interaction Sequence: {history}\n \n\n"
      "### Response:\n";
  t.response = "Noise Items: {noise}\nSuggested Replacements: {suggestion}";
  return t;
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, PromptTemplate, std::less<>> templates;
  std::set<std::string, std::less<>> builtins;

  Registry() {
    for (PromptTemplate t : {paper_template(), alpaca_template()}) {
      builtins.insert(t.name);
      templates.emplace(t.name, std::move(t));
    }
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

std::string known_names() {
  std::ostringstream os;
  const auto names = PromptTemplate::names();
  for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << "'" << names[i] << "'";
  return os.str();
}

}  // namespace

void PromptTemplate::validate() const {
  parse(*this);
  LLM4DSR_CHECK(quote_close.empty() || quote_substitute.find(quote_close) == std::string::npos,
                "prompt template '" << name << "': quote_substitute '" << quote_substitute
                                    << "' contains quote_close '" << quote_close
                                    << "', so a title's inner quotes could not be told from its end; choose another "
                                       "quote_substitute");
  if (quote_close.empty()) {
    const Parsed p = parse(*this);
    LLM4DSR_CHECK(!separator.empty(), "prompt template '" << name
                                                          << "': titles are unquoted and the separator is empty, so "
                                                             "the titles of the history would run together");
    LLM4DSR_CHECK(!p.response_mid.empty(), "prompt template '" << name
                                                               << "': titles are unquoted and nothing separates "
                                                                  "{noise} from {suggestion}, so the noise title's end "
                                                                  "is unknown");
  }
}

std::string PromptTemplate::sanitize_title(std::string_view title) const {
  std::string s;
  s.reserve(title.size());
  for (const char c : title) {
    const auto u = static_cast<unsigned char>(c);
    s += (u < 0x20 || u == 0x7F) ? ' ' : c;
  }
  replace_all(s, quote_close, quote_substitute);
  const size_t begin = s.find_first_not_of(' ');
  if (begin == std::string::npos) return std::string();
  const size_t end = s.find_last_not_of(' ');
  s = s.substr(begin, end - begin + 1);
  // A multi-byte quote_close can reappear across the title's end ("]]" after a title ending in
  // "]"); the first closing delimiter after a title must be its own.
  if (!quote_close.empty()) {
    LLM4DSR_CHECK((s + quote_close).find(quote_close) == s.size(),
                  "prompt template '" << name << "': title '" << s << "' followed by quote_close '" << quote_close
                                      << "' would seem to end early; choose a different quote_close");
  }
  return s;
}

std::string PromptTemplate::quote(std::string_view title) const {
  const std::string s = sanitize_title(title);
  LLM4DSR_CHECK(!s.empty(), "prompt template '" << name << "': title '" << title << "' is empty after sanitising");
  return quote_open + s + quote_close;
}

std::string PromptTemplate::render_history(const std::vector<std::string>& titles) const {
  LLM4DSR_CHECK(!titles.empty(), "prompt template '" << name << "': the history has no titles");
  std::string out;
  for (size_t i = 0; i < titles.size(); ++i) {
    const std::string s = sanitize_title(titles[i]);
    LLM4DSR_CHECK(!s.empty(), "prompt template '" << name << "': the title at history position " << i << " ('"
                                                  << titles[i] << "') is empty after sanitising");
    if (i) out += separator;
    out.append(quote_open).append(s).append(quote_close);
  }
  return out;
}

std::string PromptTemplate::render_prompt(const std::vector<std::string>& titles, const ChatFormat& chat) const {
  const Parsed p = parse(*this);
  return chat.wrap(p.prompt_head + render_history(titles) + p.prompt_tail);
}

std::string PromptTemplate::render_response(std::string_view noise_title, std::string_view suggestion_title) const {
  const Parsed p = parse(*this);
  return p.response_head + quote(noise_title) + p.response_mid + quote(suggestion_title) + p.response_tail;
}

std::string PromptTemplate::render_text(const std::vector<std::string>& titles, std::string_view noise_title,
                                        std::string_view suggestion_title, const ChatFormat& chat) const {
  return render_prompt(titles, chat) + render_response(noise_title, suggestion_title);
}

std::string PromptTemplate::scoring_prefix(const std::vector<std::string>& titles, const ChatFormat& chat) const {
  const Parsed p = parse(*this);
  return render_prompt(titles, chat) + p.response_head + quote_open;
}

std::string PromptTemplate::generation_prompt(const std::vector<std::string>& titles, std::string_view noise_title,
                                              const ChatFormat& chat) const {
  std::string out = scoring_prefix(titles, chat);
  const std::string s = sanitize_title(noise_title);
  LLM4DSR_CHECK(!s.empty(), "prompt template '" << name << "': noise title '" << noise_title
                                                << "' is empty after sanitising");
  return out + s + noise_suffix();
}

std::string PromptTemplate::noise_suffix() const { return quote_close + parse(*this).response_mid + quote_open; }

std::string PromptTemplate::suggestion_suffix() const { return quote_close + parse(*this).response_tail; }

std::string PromptTemplate::closing_delimiter() const {
  return quote_close.empty() ? parse(*this).response_mid : quote_close;
}

std::string PromptTemplate::to_json() const {
  nlohmann::ordered_json j;
  j["name"] = name;
  j["version"] = version;
  j["description"] = description;
  j["prompt"] = prompt;
  j["response"] = response;
  j["clean_response"] = clean_response;
  j["quote_open"] = quote_open;
  j["quote_close"] = quote_close;
  j["separator"] = separator;
  j["quote_substitute"] = quote_substitute;
  return j.dump(2);
}

PromptTemplate PromptTemplate::from_json(std::string_view json) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::parse_error& e) {
    LLM4DSR_THROW("prompt template JSON: " << e.what());
  }
  LLM4DSR_CHECK(j.is_object(), "prompt template JSON: expected an object, found " << j.type_name());
  PromptTemplate t;
  const auto get_string = [&](const char* key, std::string& out, bool required) {
    if (!j.contains(key)) {
      LLM4DSR_CHECK(!required, "prompt template JSON: missing required key '" << key << "'");
      return;
    }
    LLM4DSR_CHECK(j[key].is_string(),
                  "prompt template JSON: key '" << key << "' must be a string, found " << j[key].type_name());
    out = j[key].get<std::string>();
  };
  static const std::set<std::string> kKeys = {"name",           "version",    "description", "prompt",
                                              "response",       "clean_response", "quote_open", "quote_close",
                                              "separator",      "quote_substitute"};
  for (const auto& item : j.items()) {
    LLM4DSR_CHECK(kKeys.count(item.key()) > 0,
                  "prompt template JSON: unknown key '" << item.key()
                                                        << "'; known: name, version, description, prompt, response, "
                                                           "clean_response, quote_open, quote_close, separator, "
                                                           "quote_substitute");
  }
  get_string("name", t.name, true);
  get_string("prompt", t.prompt, true);
  get_string("response", t.response, true);
  get_string("description", t.description, false);
  get_string("clean_response", t.clean_response, false);
  get_string("quote_open", t.quote_open, false);
  get_string("quote_close", t.quote_close, false);
  get_string("separator", t.separator, false);
  get_string("quote_substitute", t.quote_substitute, false);
  if (j.contains("version")) {
    LLM4DSR_CHECK(j["version"].is_number_integer(),
                  "prompt template JSON: key 'version' must be an integer, found " << j["version"].dump());
    t.version = j["version"].get<int64_t>();
  }
  t.validate();
  return t;
}

PromptTemplate PromptTemplate::get(std::string_view name) {
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.templates.find(name);
    if (it != r.templates.end()) return it->second;
  }
  LLM4DSR_THROW("unknown prompt template '" << name << "'; known templates: " << known_names());
}

std::vector<std::string> PromptTemplate::names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> out;
  for (const auto& entry : r.templates) out.push_back(entry.first);
  return out;
}

void PromptTemplate::register_template(const PromptTemplate& prompt_template, bool replace) {
  LLM4DSR_CHECK(!prompt_template.name.empty(), "register_template: the template has no name");
  prompt_template.validate();
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  LLM4DSR_CHECK(r.builtins.count(prompt_template.name) == 0,
                "register_template: '" << prompt_template.name << "' is a built-in template and cannot be replaced");
  LLM4DSR_CHECK(replace || r.templates.count(prompt_template.name) == 0,
                "register_template: a template named '" << prompt_template.name
                                                        << "' is already registered (pass replace=true to replace it)");
  r.templates[prompt_template.name] = prompt_template;
}

}  // namespace llm4dsr

// PromptTemplate: how a sequence of item titles becomes the instruction text of LLM4DSR (paper
// section 3.1): a prompt x listing the user's interactions and a response z naming the noise item
// and the suggested replacement.
//
// A template is a named, versioned set of fields. `prompt` holds one {history} placeholder;
// `response` holds {noise} and then {suggestion}, once each. Write "{{" and "}}" for literal braces;
// any other {name} is an error. Titles are quoted (quote_open / quote_close) and the history joins
// them with `separator`, so every title in every text is delimited the same way, and the closing
// delimiter tells a scorer or a generator where a title ends.
//
// Titles are sanitised before they are rendered (sanitize_title): control characters (newlines,
// tabs, ...) become spaces, leading and trailing spaces are removed, and every occurrence of
// quote_close inside a title becomes quote_substitute, so that a closing delimiter in the text is
// always the end of a title. With the built-ins ('"' quotes, "'" substitute) the Amazon title
// `Doll 12" Tall` is rendered `"Doll 12' Tall"`. Scorers and generators must compare against the
// sanitised titles. A title that is empty after sanitising is an error.
//
// Text layout (with an optional ChatFormat wrapping the prompt for instruction-tuned checkpoints):
//
//   training text     = wrap(prompt(history)) + response(noise, suggestion)
//   scoring prefix    = wrap(prompt(history)) + <response up to {noise}> + quote_open
//   generation prompt = scoring prefix + title(noise) + noise_suffix()
//   noise_suffix()    = quote_close + <response between {noise} and {suggestion}> + quote_open
//   suggestion_suffix = quote_close + <response after {suggestion}>
//
// so scoring_prefix + title(noise) + noise_suffix() + title(suggestion) + suggestion_suffix() is
// exactly the training text, and a scorer reads P(first token of each title | scoring prefix).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llm4dsr/text/chat_format.h"

namespace llm4dsr {

struct PromptTemplate {
  std::string name;
  int64_t version = 1;
  std::string description;
  std::string prompt;    // instruction + interactions: one {history}
  std::string response;  // {noise} then {suggestion}, once each
  std::string clean_response = "None";  // the response of a clean example (no item replaced)
  std::string quote_open = "\"";
  std::string quote_close = "\"";
  std::string separator = ", ";
  std::string quote_substitute = "'";  // replaces quote_close inside titles; must not contain it

  // Throws Error naming the template and the field when a placeholder is missing, repeated,
  // unknown or out of order, a brace is unbalanced, or quote_substitute contains quote_close.
  void validate() const;

  std::string sanitize_title(std::string_view title) const;
  // quote_open + sanitize_title(title) + quote_close.
  std::string quote(std::string_view title) const;
  // The quoted, sanitised titles joined by `separator` (what replaces {history}).
  std::string render_history(const std::vector<std::string>& titles) const;

  // Renders throw Error when the history is empty or a title is empty after sanitising.
  std::string render_prompt(const std::vector<std::string>& titles, const ChatFormat& chat = {}) const;
  std::string render_response(std::string_view noise_title, std::string_view suggestion_title) const;
  std::string render_clean_response() const { return clean_response; }
  std::string render_text(const std::vector<std::string>& titles, std::string_view noise_title,
                          std::string_view suggestion_title, const ChatFormat& chat = {}) const;
  std::string scoring_prefix(const std::vector<std::string>& titles, const ChatFormat& chat = {}) const;
  std::string generation_prompt(const std::vector<std::string>& titles, std::string_view noise_title,
                                const ChatFormat& chat = {}) const;
  std::string noise_suffix() const;
  std::string suggestion_suffix() const;
  // The text that ends a title: quote_close, or when titles are unquoted, the literal text that
  // follows the noise title in the response.
  std::string closing_delimiter() const;

  // JSON object with the fields above (keys as named here; order kept). from_json throws Error
  // naming unknown keys, missing required keys (name, prompt, response) and mistyped values.
  std::string to_json() const;
  static PromptTemplate from_json(std::string_view json);

  // Registry. Built-ins: "llm4dsr-paper" (the paper's wording) and "llm4dsr-alpaca" (the layout of
  // the authors' released code). get() throws Error listing the known names; register_template
  // validates the template and refuses to replace a built-in, or any name unless `replace`.
  // Thread-safe.
  static PromptTemplate get(std::string_view name);
  static std::vector<std::string> names();
  static void register_template(const PromptTemplate& prompt_template, bool replace = false);
};

}  // namespace llm4dsr

// ChatFormat: how a prompt is wrapped for an instruction-tuned checkpoint's chat template.
//
// Instruction-tuned checkpoints (SmolLM2-Instruct, Qwen, ...) were trained on conversations, and
// their chat template puts the user's text in a user turn and opens an assistant turn after it. A
// ChatFormat reproduces that template for the one case we need: one (optional) system message, one
// user turn holding the rendered prompt x, and the opened assistant turn the response z follows.
// The assistant turn is closed by the tokenizer's EOS id at tokenisation time, not by text: for
// ChatML checkpoints whose EOS is "<|im_end|>" (SmolLM2) that is the end of turn.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llm4dsr {

struct ChatFormat {
  std::string name = "none";
  std::string system;            // system message; "" = no system turn
  std::string system_prefix;     // before the system message, e.g. "<|im_start|>system\n"
  std::string system_suffix;     // after it, e.g. "<|im_end|>\n"
  std::string user_prefix;       // before the user's text, e.g. "<|im_start|>user\n"
  std::string user_suffix;       // after it, e.g. "<|im_end|>\n"
  std::string assistant_prefix;  // opens the assistant turn, e.g. "<|im_start|>assistant\n"
  std::string end_of_turn;       // the marker that closes a turn (informative; see above)
  // Whether a BOS id goes before the wrapped text. HF's SmolLM2 tokenizer adds none to chat text,
  // so the ChatML formats say false; "none" says true (Llama-style base models expect <s>).
  bool add_bos = true;

  bool is_none() const;  // no wrapping at all
  // system turn (when `system` is set) + user_prefix + prompt + user_suffix + assistant_prefix.
  std::string wrap(std::string_view prompt) const;
  // The wrapped text before the prompt, and after it (up to where the response starts).
  std::string head() const;
  std::string tail() const;

  // Built-in formats:
  //   "none"    the prompt as it is;
  //   "chatml"  <|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n (no system turn);
  //   "smollm2" ChatML with the system turn SmolLM2's chat template inserts when the conversation
  //             has none ("You are a helpful AI assistant named SmolLM, trained by Hugging Face").
  // Unknown names throw Error listing the known ones.
  static ChatFormat get(std::string_view name);
  static std::vector<std::string> names();
  // ChatML with the given system message ("" = no system turn).
  static ChatFormat chatml(std::string system = "");
};

}  // namespace llm4dsr

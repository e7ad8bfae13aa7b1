#include "llm4dsr/text/chat_format.h"

#include <sstream>

#include "llm4dsr/error.h"

namespace llm4dsr {

namespace {

// SmolLM2-Instruct's chat template inserts this system turn when a conversation has none.
constexpr const char* kSmolLM2System = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

}  // namespace

bool ChatFormat::is_none() const {
  return system.empty() && user_prefix.empty() && user_suffix.empty() && assistant_prefix.empty();
}

std::string ChatFormat::head() const {
  std::string out;
  if (!system.empty()) out.append(system_prefix).append(system).append(system_suffix);
  out.append(user_prefix);
  return out;
}

std::string ChatFormat::tail() const { return user_suffix + assistant_prefix; }

std::string ChatFormat::wrap(std::string_view prompt) const {
  std::string out = head();
  out.append(prompt);
  out.append(tail());
  return out;
}

ChatFormat ChatFormat::chatml(std::string system_message) {
  ChatFormat f;
  f.name = "chatml";
  f.system = std::move(system_message);
  f.system_prefix = "<|im_start|>system\n";
  f.system_suffix = "<|im_end|>\n";
  f.user_prefix = "<|im_start|>user\n";
  f.user_suffix = "<|im_end|>\n";
  f.assistant_prefix = "<|im_start|>assistant\n";
  f.end_of_turn = "<|im_end|>";
  f.add_bos = false;
  return f;
}

std::vector<std::string> ChatFormat::names() { return {"chatml", "none", "smollm2"}; }

ChatFormat ChatFormat::get(std::string_view name) {
  if (name == "none") return ChatFormat{};
  if (name == "chatml") return chatml();
  if (name == "smollm2") {
    ChatFormat f = chatml(kSmolLM2System);
    f.name = "smollm2";
    return f;
  }
  std::ostringstream known;
  for (const auto& n : names()) known << (known.tellp() > 0 ? ", " : "") << "'" << n << "'";
  LLM4DSR_THROW("unknown chat format '" << name << "'; known formats: " << known.str());
}

}  // namespace llm4dsr

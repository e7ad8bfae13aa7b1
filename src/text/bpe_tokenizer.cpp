// Byte-level BPE: GPT-2's byte-to-unicode map, PCRE2 pre-tokenizer, added-token matching, the merge
// loop and decoding. The readers of tokenizer.json and GGUF live in bpe_tokenizer_json.cpp and
// bpe_tokenizer_gguf.cpp; they only build a BpeVocabulary.
#include "llm4dsr/text/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <unordered_map>

#include "internal/text_io.h"
#include "llm4dsr/error.h"

namespace llm4dsr {

// HF's ByteLevel regex. llama.cpp drops the final "|\s+", which changes nothing: the whitespace it
// would take is left between matches and becomes a piece of its own either way.
const char* const kGpt2PreTokenizerPattern =
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re";

namespace {

// The tokenizer.json originals; llama.cpp rewrites (?i:...) by hand only because std::regex lacks it.
constexpr const char* kLlama3Pattern =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
constexpr const char* kQwen2Pattern =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// --- UTF-8 -------------------------------------------------------------------------------------

// Length of the valid UTF-8 sequence starting at s[i], or of its longest valid prefix as a negative
// number (-1 when s[i] cannot start one): Unicode's "maximal subpart", the unit that Rust's
// from_utf8_lossy and Python's errors="replace" turn into one U+FFFD.
int utf8_sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b = byte(i);
  if (b < 0x80) return 1;
  int length = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range allowed for the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    length = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    length = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    length = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k < length; ++k) {
    if (i + k >= s.size()) return -k;
    const unsigned char c = byte(i + k);
    const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return -k;
  }
  return length;
}

uint32_t decode_utf8(std::string_view s, size_t i, int length) {
  const auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[k])); };
  switch (length) {
    case 1: return byte(i);
    case 2: return ((byte(i) & 0x1F) << 6) | (byte(i + 1) & 0x3F);
    case 3: return ((byte(i) & 0x0F) << 12) | ((byte(i + 1) & 0x3F) << 6) | (byte(i + 2) & 0x3F);
    default:
      return ((byte(i) & 0x07) << 18) | ((byte(i + 1) & 0x3F) << 12) | ((byte(i + 2) & 0x3F) << 6) |
             (byte(i + 3) & 0x3F);
  }
}

std::string utf8_lossy(std::string bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const int length = utf8_sequence_length(bytes, i);
    if (length < 0) break;
    i += static_cast<size_t>(length);
  }
  if (i == bytes.size()) return bytes;
  std::string out(bytes, 0, i);
  out.reserve(bytes.size() + 16);
  while (i < bytes.size()) {
    const int length = utf8_sequence_length(bytes, i);
    if (length > 0) {
      out.append(bytes, i, static_cast<size_t>(length));
      i += static_cast<size_t>(length);
    } else {
      out += "\xEF\xBF\xBD";
      i += static_cast<size_t>(-length);
    }
  }
  return out;
}

// Unicode White_Space (Rust's char::is_whitespace, which HF's lstrip / rstrip use).
bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Byte length of the whitespace character starting at `pos` (0 when there is none before `limit`).
size_t whitespace_at(std::string_view s, size_t pos, size_t limit) {
  if (pos >= limit) return 0;
  const int length = utf8_sequence_length(s, pos);
  if (length <= 0 || pos + static_cast<size_t>(length) > limit) return 0;
  return is_white_space(decode_utf8(s, pos, length)) ? static_cast<size_t>(length) : 0;
}

// Byte length of the whitespace character ending at `pos` (0 when there is none after `floor`).
size_t whitespace_before(std::string_view s, size_t pos, size_t floor) {
  for (size_t length = 1; length <= 3 && length <= pos - floor; ++length) {
    if (utf8_sequence_length(s, pos - length) == static_cast<int>(length)) {
      return is_white_space(decode_utf8(s, pos - length, static_cast<int>(length))) ? length : 0;
    }
  }
  return 0;
}

// --- GPT-2's byte <-> unicode map ------------------------------------------------------------------

// Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, 0x7F-0xA0, 0xAD)
// take the code points from 256 on, in byte order, so that every token is printable text.
struct ByteMap {
  std::array<uint32_t, 256> to_code_point{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 324> to_byte{};

  ByteMap() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_code_point[b] = printable ? b : next++;
      internal::append_utf8(to_utf8[b], to_code_point[b]);  // GPT-2 code points are all valid
      to_byte[to_code_point[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// The bytes a byte-level piece stands for; a piece with a character outside the map is taken as raw
// text, as HF's ByteLevel decoder does.
std::string piece_to_bytes(const std::string& piece) {
  const ByteMap& map = byte_map();
  std::string out;
  out.reserve(piece.size());
  size_t i = 0;
  while (i < piece.size()) {
    const int length = utf8_sequence_length(piece, i);
    if (length < 0) return piece;
    const uint32_t cp = decode_utf8(piece, i, length);
    if (cp >= map.to_byte.size() || map.to_byte[cp] < 0) return piece;
    out += static_cast<char>(map.to_byte[cp]);
    i += static_cast<size_t>(length);
  }
  return out;
}

// --- PCRE2 -----------------------------------------------------------------------------------------

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<const char*>(buffer));
}

// A compiled pattern; matching is thread-safe (each call has its own match data).
class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const std::string& where) : pattern_(pattern) {
    // MATCH_INVALID_UTF: input that is not UTF-8 is matched around (its bytes end up in pieces of
    // their own) instead of failing the whole call. PCRE2_LITERAL refuses UCP.
    uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    options |= literal ? PCRE2_LITERAL : PCRE2_UCP;
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                          &error_offset, nullptr);
    LLM4DSR_CHECK(code_ != nullptr, where << ": pre-tokenizer pattern does not compile (PCRE2, at offset "
                                          << error_offset << ": " << pcre2_message(error) << "): " << pattern);
    // Without JIT support (some builds) pcre2_match interprets; same results, slower.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Match data for for_each_match; one per thread, reused across pieces.
  struct MatchData {
    explicit MatchData(const Regex& regex) : data(pcre2_match_data_create_from_pattern(regex.code_, nullptr)) {
      LLM4DSR_CHECK(data != nullptr, "out of memory allocating PCRE2 match data");
    }
    ~MatchData() { pcre2_match_data_free(data); }
    MatchData(const MatchData&) = delete;
    MatchData& operator=(const MatchData&) = delete;
    pcre2_match_data* data;
  };

  // Calls on_match(start, end) for each non-empty match, left to right, as find_iter does.
  template <typename OnMatch>
  void for_each_match(std::string_view subject, MatchData& md, OnMatch&& on_match) const {
    const auto* ptr = reinterpret_cast<PCRE2_SPTR>(subject.data());
    const size_t n = subject.size();
    size_t offset = 0;
    while (offset < n) {
      int rc = pcre2_match(code_, ptr, n, offset, 0, md.data, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = pcre2_match(code_, ptr, n, offset, PCRE2_NO_JIT, md.data, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      LLM4DSR_CHECK(rc >= 0, "pre-tokenizer pattern failed on a " << n << "-byte piece: " << pcre2_message(rc)
                                                                  << " (pattern: " << pattern_ << ")");
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md.data);
      const size_t start = ovector[0], end = ovector[1];
      if (end <= start) {  // an empty match: step over one character and look again
        offset = start + 1;
        while (offset < n && (static_cast<unsigned char>(subject[offset]) & 0xC0) == 0x80) ++offset;
        continue;
      }
      on_match(start, end);
      offset = end;
    }
  }

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
};

// --- pre-tokenization ------------------------------------------------------------------------------

// A piece of the input: bytes [begin, end) of the text, preceded by a synthetic " " when `prefix`.
struct Piece {
  size_t begin;
  size_t end;
  bool prefix;
};

struct Segment {
  size_t begin;
  size_t end;
  bool is_match;
};

// HF's SplitDelimiterBehavior, applied to the match / gap segments of one piece.
void apply_behavior(BpePreTokenizerStep::Behavior behavior, std::vector<Segment>& segments) {
  using Behavior = BpePreTokenizerStep::Behavior;
  std::vector<Segment> out;
  out.reserve(segments.size());
  switch (behavior) {
    case Behavior::Isolated:
      return;
    case Behavior::Removed:
      for (const Segment& s : segments)
        if (!s.is_match) out.push_back(s);
      break;
    case Behavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool next_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !next_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        next_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::Contiguous: {
      bool previous_match = false;
      bool first = true;
      for (const Segment& s : segments) {
        if (!first && s.is_match == previous_match) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
        first = false;
      }
      break;
    }
  }
  segments.swap(out);
}

void split_pieces(const Regex& regex, const BpePreTokenizerStep& step, std::string_view text,
                  const std::vector<Piece>& in, std::vector<Piece>& out) {
  out.clear();
  std::vector<Segment> segments;
  std::string scratch;
  Regex::MatchData md(regex);
  for (const Piece& piece : in) {
    std::string_view subject = text.substr(piece.begin, piece.end - piece.begin);
    if (piece.prefix) {
      scratch.assign(1, ' ');
      scratch.append(subject);
      subject = scratch;
    }
    segments.clear();
    size_t previous = 0;
    regex.for_each_match(subject, md, [&](size_t start, size_t end) {
      if (previous < start) segments.push_back({previous, start, false});
      segments.push_back({start, end, true});
      previous = end;
    });
    if (previous < subject.size()) segments.push_back({previous, subject.size(), false});
    if (step.invert)
      for (Segment& s : segments) s.is_match = !s.is_match;
    apply_behavior(step.behavior, segments);
    const size_t p = piece.prefix ? 1 : 0;
    for (const Segment& s : segments) {
      if (s.end <= s.begin) continue;
      if (p == 1 && s.begin == 0) {
        out.push_back({piece.begin, piece.begin + s.end - 1, true});
      } else {
        out.push_back({piece.begin + s.begin - p, piece.begin + s.end - p, false});
      }
    }
  }
}

// --- added tokens ----------------------------------------------------------------------------------

// Leftmost-longest matching of one group of added tokens (HF matches the tokens with
// normalized == false first, then the others in what is left).
struct AddedMatcher {
  std::array<std::vector<size_t>, 256> by_first_byte;  // indices into added_tokens, longest first
  bool empty = true;

  void build(const std::vector<BpeAddedToken>& added, bool normalized) {
    for (size_t i = 0; i < added.size(); ++i) {
      if (added[i].normalized != normalized || added[i].content.empty()) continue;
      by_first_byte[static_cast<unsigned char>(added[i].content[0])].push_back(i);
      empty = false;
    }
    for (auto& candidates : by_first_byte) {
      std::stable_sort(candidates.begin(), candidates.end(),
                       [&](size_t a, size_t b) { return added[a].content.size() > added[b].content.size(); });
    }
  }
};

// A run of the input: raw text to pre-tokenize (id < 0) or an added token.
struct Run {
  size_t begin;
  size_t end;
  TokenId id;
};

void split_added(const AddedMatcher& matcher, const std::vector<BpeAddedToken>& added, std::string_view text,
                 std::vector<Run>& runs) {
  if (matcher.empty) return;
  std::vector<Run> out;
  for (const Run& run : runs) {
    if (run.id >= 0) {
      out.push_back(run);
      continue;
    }
    size_t raw_start = run.begin;
    size_t pos = run.begin;
    while (pos < run.end) {
      const BpeAddedToken* found = nullptr;
      for (size_t index : matcher.by_first_byte[static_cast<unsigned char>(text[pos])]) {
        const std::string& content = added[index].content;
        if (content.size() <= run.end - pos && text.compare(pos, content.size(), content) == 0) {
          found = &added[index];
          break;
        }
      }
      if (!found) {
        ++pos;
        continue;
      }
      size_t start = pos, end = pos + found->content.size();
      if (found->lstrip) {
        while (size_t n = whitespace_before(text, start, raw_start)) start -= n;
      }
      if (found->rstrip) {
        while (size_t n = whitespace_at(text, end, run.end)) end += n;
      }
      if (raw_start < start) out.push_back({raw_start, start, -1});
      out.push_back({start, end, found->id});
      pos = raw_start = end;
    }
    if (raw_start < run.end) out.push_back({raw_start, run.end, -1});
  }
  runs.swap(out);
}

// --- BPE -------------------------------------------------------------------------------------------

struct WordToken {
  TokenId id;
  uint32_t begin;  // byte span inside the piece (a synthetic prefix space included)
  uint32_t end;
};

struct Merge {
  int32_t rank;
  TokenId merged;
};

uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Words are short and repeat (titles, prompts); a bounded cache keeps memory flat on long inputs.
constexpr size_t kCacheCapacity = size_t{1} << 16;
constexpr size_t kCacheMaxWordBytes = 256;

}  // namespace

BpePreTokenizerStep BpePreTokenizerStep::split(std::string pattern, Behavior behavior, bool invert, bool literal) {
  BpePreTokenizerStep step;
  step.kind = Kind::Split;
  step.pattern = std::move(pattern);
  step.behavior = behavior;
  step.invert = invert;
  step.literal = literal;
  return step;
}

BpePreTokenizerStep BpePreTokenizerStep::prefix_space() {
  BpePreTokenizerStep step;
  step.kind = Kind::PrefixSpace;
  return step;
}

std::vector<BpePreTokenizerStep> bpe_pre_tokenizer_for(const std::string& name) {
  using Step = BpePreTokenizerStep;
  const auto is_one_of = [&](std::initializer_list<const char*> names) {
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
  };
  if (name.empty() || name == "default") {
    return {Step::split(R"re([\p{P}\$\+<=>\^~\|]+)re"), Step::split(kGpt2PreTokenizerPattern),
            Step::split(R"re(\p{N}+)re"), Step::split("[0-9][0-9][0-9]")};
  }
  if (is_one_of({"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion"})) {
    return {Step::split(kGpt2PreTokenizerPattern)};
  }
  if (is_one_of({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"})) {
    return {Step::split(R"re(\p{N})re"), Step::split(kGpt2PreTokenizerPattern)};
  }
  if (is_one_of({"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe"})) {
    return {Step::split(kLlama3Pattern)};
  }
  if (is_one_of({"qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "stablelm2", "megrez"})) {
    return {Step::split(kQwen2Pattern)};
  }
  if (name == "falcon") {
    return {Step::split(R"re([\p{P}\$\+<=>\^~\|`]+)re"), Step::split(kGpt2PreTokenizerPattern),
            Step::split("[0-9][0-9][0-9]")};
  }
  LLM4DSR_THROW("unknown BPE pre-tokenizer '"
                << name
                << "' (tokenizer.ggml.pre); known: default; gpt2, gpt-2, phi-2, mpt, olmo, jais, trillion; "
                   "smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b; llama3, llama-v3, "
                   "llama-bpe, falcon3, dbrx, smaug-bpe; qwen2, qwen2.5, qwen-2.5, deepseek-r1-qwen, stablelm2, "
                   "megrez; falcon");
}

struct BpeTokenizer::Impl {
  BpeVocabulary vocab;
  std::unordered_map<std::string, TokenId> token_to_id;  // first id of each piece
  std::array<TokenId, 256> byte_ids{};                   // -1: the byte has no token
  std::unordered_map<uint64_t, Merge> merges;
  std::vector<std::string> token_bytes;  // what each id decodes to
  std::vector<uint8_t> special;
  AddedMatcher unnormalized_added;
  AddedMatcher normalized_added;
  std::vector<std::unique_ptr<Regex>> regexes;  // parallel to vocab.pre_tokenizer; null for PrefixSpace

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<WordToken>> cache;

  explicit Impl(BpeVocabulary v);

  void bpe_word(std::string_view word, std::vector<WordToken>& out) const;
  void merge_word(std::string_view word, std::vector<WordToken>& out) const;
  void encode_into(std::string_view text, std::vector<TokenId>& ids,
                   std::vector<std::pair<size_t, size_t>>* offsets) const;
  void check_id(TokenId id, const char* what) const;
};

BpeTokenizer::Impl::Impl(BpeVocabulary v) : vocab(std::move(v)) {
  const std::string& source = vocab.source;
  const auto n = static_cast<TokenId>(vocab.tokens.size());
  LLM4DSR_CHECK(!vocab.tokens.empty(), source << ": the vocabulary has no tokens");
  LLM4DSR_CHECK(vocab.tokens.size() < static_cast<size_t>(INT32_MAX),
                source << ": " << vocab.tokens.size() << " tokens do not fit 32-bit ids");
  token_to_id.reserve(vocab.tokens.size());
  for (TokenId id = 0; id < n; ++id) token_to_id.emplace(vocab.tokens[id], id);

  const ByteMap& map = byte_map();
  for (int b = 0; b < 256; ++b) {
    auto it = token_to_id.find(map.to_utf8[b]);
    byte_ids[b] = it == token_to_id.end() ? -1 : it->second;
  }

  merges.reserve(vocab.merges.size());
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const auto& [left, right] = vocab.merges[rank];
    const auto find = [&](const std::string& piece) {
      auto it = token_to_id.find(piece);
      LLM4DSR_CHECK(it != token_to_id.end(), source << ": merges[" << rank << "] = (\"" << left << "\", \"" << right
                                                    << "\"): \"" << piece << "\" is not in the vocabulary");
      return it->second;
    };
    const TokenId a = find(left), b = find(right), merged = find(left + right);
    LLM4DSR_CHECK(rank < static_cast<size_t>(INT32_MAX), source << ": too many merges");
    // The first rank wins for a repeated pair, as in llama.cpp.
    merges.emplace(pair_key(a, b), Merge{static_cast<int32_t>(rank), merged});
  }

  token_bytes.resize(vocab.tokens.size());
  for (TokenId id = 0; id < n; ++id) token_bytes[id] = piece_to_bytes(vocab.tokens[id]);
  special.assign(vocab.tokens.size(), 0);
  for (size_t i = 0; i < vocab.added_tokens.size(); ++i) {
    const BpeAddedToken& added = vocab.added_tokens[i];
    LLM4DSR_CHECK(added.id >= 0 && added.id < n, source << ": added token " << i << " (\"" << added.content
                                                        << "\") has id " << added.id << ", outside 0.." << n - 1);
    LLM4DSR_CHECK(!added.content.empty(), source << ": added token " << i << " (id " << added.id << ") is empty");
    LLM4DSR_CHECK(vocab.tokens[added.id] == added.content,
                  source << ": added token " << i << " \"" << added.content << "\" has id " << added.id
                         << ", whose piece is \"" << vocab.tokens[added.id] << "\"");
    token_bytes[added.id] = added.content;
    special[added.id] = added.special ? 1 : 0;
  }
  unnormalized_added.build(vocab.added_tokens, false);
  normalized_added.build(vocab.added_tokens, true);

  const auto check_special = [&](TokenId id, const char* what) {
    LLM4DSR_CHECK(id >= -1 && id < n, source << ": " << what << " id " << id << " is outside -1.." << n - 1);
  };
  check_special(vocab.bos_id, "bos");
  check_special(vocab.eos_id, "eos");
  check_special(vocab.pad_id, "pad");
  check_special(vocab.unk_id, "unk");
  check_special(vocab.bpe_unk_id, "bpe_unk");
  LLM4DSR_CHECK(!vocab.add_bos || vocab.bos_id >= 0, source << ": add_bos is set but the vocabulary has no bos id");
  LLM4DSR_CHECK(!vocab.add_eos || vocab.eos_id >= 0, source << ": add_eos is set but the vocabulary has no eos id");

  for (size_t i = 0; i < vocab.pre_tokenizer.size(); ++i) {
    const BpePreTokenizerStep& step = vocab.pre_tokenizer[i];
    if (step.kind == BpePreTokenizerStep::Kind::Split) {
      LLM4DSR_CHECK(!step.pattern.empty(), source << ": pre-tokenizer step " << i << " has an empty pattern");
      regexes.push_back(
          std::make_unique<Regex>(step.pattern, step.literal, source + ": pre-tokenizer step " + std::to_string(i)));
    } else {
      regexes.push_back(nullptr);
    }
  }
}

void BpeTokenizer::Impl::check_id(TokenId id, const char* what) const {
  LLM4DSR_CHECK(id >= 0 && static_cast<size_t>(id) < vocab.tokens.size(),
                what << ": id " << id << " is outside the vocabulary 0.." << vocab.tokens.size() - 1);
}

// The merge loop: a doubly linked list of symbols and a heap of candidate pairs (rank, then position),
// so a word of n bytes costs O(n log n) however long it is. Stale heap entries are recognised by the
// ids they were made for.
void BpeTokenizer::Impl::merge_word(std::string_view word, std::vector<WordToken>& out) const {
  if (vocab.ignore_merges) {
    std::string mapped;
    for (unsigned char b : word) mapped += byte_map().to_utf8[b];
    auto it = token_to_id.find(mapped);
    if (it != token_to_id.end()) {
      out.push_back({it->second, 0, static_cast<uint32_t>(word.size())});
      return;
    }
  }

  struct Symbol {
    TokenId id;
    int32_t prev;
    int32_t next;
    uint32_t begin;
    uint32_t end;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    TokenId id = byte_ids[static_cast<unsigned char>(word[i])];
    if (id < 0) id = vocab.bpe_unk_id;
    if (id < 0) continue;
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1), true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t right;
    TokenId left_id;
    TokenId right_id;
    TokenId merged;
  };
  const auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> heap(later);
  const auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    auto it = merges.find(pair_key(symbols[left].id, symbols[right].id));
    if (it == merges.end()) return;
    heap.push({it->second.rank, left, right, symbols[left].id, symbols[right].id, it->second.merged});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i, i + 1);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (!left.alive || !right.alive || left.next != c.right || left.id != c.left_id || right.id != c.right_id) {
      continue;
    }
    left.id = c.merged;
    left.end = right.end;
    left.next = right.next;
    right.alive = false;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back({symbols[i].id, symbols[i].begin, symbols[i].end});
}

void BpeTokenizer::Impl::bpe_word(std::string_view word, std::vector<WordToken>& out) const {
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  std::string key;
  if (cacheable) {
    key.assign(word);
    std::shared_lock<std::shared_mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<WordToken> tokens(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
    std::unique_lock<std::shared_mutex> lock(cache_mutex);
    if (cache.size() >= kCacheCapacity) cache.clear();
    cache.emplace(std::move(key), std::move(tokens));
  }
}

void BpeTokenizer::Impl::encode_into(std::string_view text, std::vector<TokenId>& ids,
                                     std::vector<std::pair<size_t, size_t>>* offsets) const {
  if (text.empty()) return;
  std::vector<Run> runs{{0, text.size(), -1}};
  split_added(unnormalized_added, vocab.added_tokens, text, runs);
  split_added(normalized_added, vocab.added_tokens, text, runs);

  std::vector<Piece> pieces, next;
  std::vector<WordToken> word_tokens;
  std::string scratch;
  for (const Run& run : runs) {
    if (run.id >= 0) {
      ids.push_back(run.id);
      if (offsets) offsets->emplace_back(run.begin, run.end);
      continue;
    }
    pieces.assign(1, Piece{run.begin, run.end, false});
    for (size_t s = 0; s < vocab.pre_tokenizer.size(); ++s) {
      const BpePreTokenizerStep& step = vocab.pre_tokenizer[s];
      if (step.kind == BpePreTokenizerStep::Kind::PrefixSpace) {
        for (Piece& piece : pieces) {
          if (!piece.prefix && (piece.end == piece.begin || text[piece.begin] != ' ')) piece.prefix = true;
        }
      } else {
        split_pieces(*regexes[s], step, text, pieces, next);
        pieces.swap(next);
      }
    }
    for (const Piece& piece : pieces) {
      std::string_view word = text.substr(piece.begin, piece.end - piece.begin);
      if (piece.prefix) {
        scratch.assign(1, ' ');
        scratch.append(word);
        word = scratch;
      }
      word_tokens.clear();
      bpe_word(word, word_tokens);
      const size_t p = piece.prefix ? 1 : 0;
      for (const WordToken& t : word_tokens) {
        ids.push_back(t.id);
        if (offsets) {
          offsets->emplace_back(piece.begin + std::max<size_t>(t.begin, p) - p,
                                piece.begin + std::max<size_t>(t.end, p) - p);
        }
      }
    }
  }
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_vocabulary(BpeVocabulary vocabulary) {
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::make_unique<Impl>(std::move(vocabulary))));
}

std::vector<TokenId> BpeTokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  const BpeVocabulary& v = impl_->vocab;
  LLM4DSR_CHECK(!add_bos || v.bos_id >= 0, "encode: add_bos asked of a vocabulary without a bos token ("
                                               << v.source << ")");
  LLM4DSR_CHECK(!add_eos || v.eos_id >= 0, "encode: add_eos asked of a vocabulary without an eos token ("
                                               << v.source << ")");
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && v.add_bos) ids.push_back(v.bos_id);
  impl_->encode_into(text, ids, nullptr);
  if (add_eos && v.add_eos) ids.push_back(v.eos_id);
  return ids;
}

BpeEncoding BpeTokenizer::encode_with_offsets(std::string_view text) const {
  BpeEncoding encoding;
  impl_->encode_into(text, encoding.ids, &encoding.offsets);
  return encoding;
}

std::string BpeTokenizer::decode(const std::vector<TokenId>& ids) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const TokenId id = ids[i];
    LLM4DSR_CHECK(id >= 0 && static_cast<size_t>(id) < impl_->token_bytes.size(),
                  "decode: id " << id << " at position " << i << " is outside the vocabulary 0.."
                                << impl_->token_bytes.size() - 1);
    if (!impl_->special[id]) bytes += impl_->token_bytes[id];
  }
  return utf8_lossy(std::move(bytes));
}

std::vector<TokenId> BpeTokenizer::encode_in_context(std::string_view prefix, std::string_view text) const {
  if (text.empty()) return {};
  if (prefix.empty()) return encode(text);
  std::string joint;
  joint.reserve(prefix.size() + text.size());
  joint.append(prefix);
  joint.append(text);
  const BpeEncoding encoding = encode_with_offsets(joint);
  const size_t boundary = prefix.size();
  size_t k = 0;
  while (k < encoding.ids.size() && encoding.offsets[k].second <= boundary) ++k;
  if (k == encoding.ids.size()) return {};
  while (k > 0 && encoding.offsets[k - 1].first == boundary && encoding.offsets[k - 1].second == boundary) --k;
  return std::vector<TokenId>(encoding.ids.begin() + static_cast<std::ptrdiff_t>(k), encoding.ids.end());
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->vocab.tokens.size()); }
TokenId BpeTokenizer::bos_id() const { return impl_->vocab.bos_id; }
TokenId BpeTokenizer::eos_id() const { return impl_->vocab.eos_id; }
TokenId BpeTokenizer::pad_id() const { return impl_->vocab.pad_id >= 0 ? impl_->vocab.pad_id : impl_->vocab.eos_id; }
TokenId BpeTokenizer::unk_id() const { return impl_->vocab.unk_id; }

std::string BpeTokenizer::id_to_piece(TokenId id) const {
  impl_->check_id(id, "id_to_piece");
  return impl_->vocab.tokens[id];
}

TokenId BpeTokenizer::piece_to_id(std::string_view piece) const {
  auto it = impl_->token_to_id.find(std::string(piece));
  return it == impl_->token_to_id.end() ? impl_->vocab.unk_id : it->second;
}

bool BpeTokenizer::add_bos_token() const { return impl_->vocab.add_bos; }
bool BpeTokenizer::add_eos_token() const { return impl_->vocab.add_eos; }

bool BpeTokenizer::is_special(TokenId id) const {
  impl_->check_id(id, "is_special");
  return impl_->special[id] != 0;
}

const BpeVocabulary& BpeTokenizer::vocabulary() const { return impl_->vocab; }

}  // namespace llm4dsr

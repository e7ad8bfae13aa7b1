"""BpeTokenizer against HuggingFace `tokenizers` on SmolLM2-135M-Instruct's vocabulary.

The reference is the tokenizer SmolLM2 was trained with. Its tokenizer.json (HuggingFaceTB/SmolLM2-*,
not stored here) pre-tokenizes with Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)];
llama.cpp's "smollm" pre-tokenizer (tokenizer.ggml.pre of our GGUF) reproduces it with "\\p{N}" then
GPT-2's regex. transformers, building a tokenizer from the GGUF, drops the Digits step, which changes
the ids where whitespace precedes a digit (" \\n\\n 1"); test_transformers_gguf_conversion_differs pins
that case. We build the reference from transformers' conversion with the original pre-tokenizer put
back, and also check that our tokenizer.json reader reproduces transformers' conversion as it is.
"""
import json
import os
import random
from pathlib import Path

import pytest

import llm4dsr

tokenizers = pytest.importorskip("tokenizers")

MODEL = Path(os.path.expanduser("~/.cache/llm4dsr/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
ORIGINAL_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}

HARD = [
    "", " ", "  ", "\t", "\n", "\r\n", "a\r\nb", "\n\n\n", "   leading spaces", "trailing spaces   ",
    "multiple   internal    spaces", "tab\tseparated\tvalues\t", "Amélie (2001)", "Léon: The Professional",
    "Crème brûlée, naïve façade, Ångström", "北京欢迎你", "東京タワー (1958) のテキスト", "한국어 텍스트", "Россия и Українa",
    "مرحبا بالعالم", "emoji 🤗🎬🍿 👩‍👩‍👧 🇫🇷", "12345678901234567890", "3.14159 and 1,000,000 and 2024-01-31",
    "DON'T", "I'M", "YOU'LL", "WE'VE", "we're", "it's", "He'S", "don’t (curly)", "x\u00a0y", "line\u2028sep",
    "zero\u200bwidth", "Ωmega ∑ ∞ ≤ ²³ ½ Ⅻ", " \n\n 1", "a \n 2", "   3", "\t4\t", "x\u00a0\u00a05",
    "<|im_start|>user\nhello<|im_end|>\n", "text<|endoftext|>more", "<|im_start|><|im_end|>", "<|im_start",
    "<|im_end|> <|im_end|>", "a" * 3000, " ".join(["word"] * 500), "🤗" * 50, "$$$ ### @@@ ~~~ ```",
    "def f(x):\n    return x ** 2\n", "<repo_name>foo<file_sep>", "Toy Story (1995)\x00\x04control",
]


def prompts(titles):
    rng = random.Random(1)
    out = []
    for _ in range(200):
        history = rng.sample(titles, 8)
        noise = rng.sample(history, 2)
        suggested = rng.sample(titles, 2)
        body = ("The user has interacted with the following items before: "
                + ", ".join(f"'{t}'" for t in history)
                + ". Some of them are noise. Noise Items: " + ", ".join(f"'{t}'" for t in noise)
                + ". Suggested Items: " + ", ".join(f"'{t}'" for t in suggested) + ".")
        out.append(body)
        out.append(f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n")
    return out


@pytest.fixture(scope="module")
def model_path():
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is absent")
    return MODEL


@pytest.fixture(scope="module")
def converted_dir(model_path, tmp_path_factory):
    """transformers' tokenizer built from the GGUF, saved (tokenizer.json + tokenizer_config.json)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    out = tmp_path_factory.mktemp("smollm2-converted")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def original_dir(converted_dir, tmp_path_factory):
    """The converted tokenizer.json with SmolLM2's original pre-tokenizer put back."""
    out = tmp_path_factory.mktemp("smollm2-original")
    spec = json.loads((converted_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["pre_tokenizer"]["type"] == "ByteLevel"  # what transformers writes for this GGUF
    spec["pre_tokenizer"] = ORIGINAL_PRE_TOKENIZER
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_bytes((converted_dir / "tokenizer_config.json").read_bytes())
    return out


@pytest.fixture(scope="module")
def reference(original_dir):
    return tokenizers.Tokenizer.from_file(str(original_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def ours(model_path):
    return llm4dsr.BpeTokenizer.from_gguf(model_path)


@pytest.fixture(scope="module")
def ours_json(original_dir):
    return llm4dsr.BpeTokenizer.from_tokenizer_json(original_dir / "tokenizer.json")


def ids_of(reference, texts):
    return [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]


def missing_bytes(reference):
    """Bytes SmolLM2's vocabulary has no token for (its BPE drops them, as HF does)."""
    visible = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping = {b: chr(b) for b in visible}
    mapping.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in visible)})
    vocab = reference.get_vocab()
    return {b for b, c in mapping.items() if c not in vocab}


def ml100k_titles(shared_data):
    lines = (shared_data / "ml-100k" / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    column = lines[0].split("\t").index("movie_title:token_seq")
    recbole = [line.split("\t")[column] for line in lines[1:] if line]
    raw = [line.split("|")[1]
           for line in (shared_data / "ml-100k-raw" / "u.item").read_bytes().decode("latin-1").splitlines() if line]
    assert len(recbole) == 1682 and len(raw) == 1682
    return recbole + raw


def beauty_titles(shared_data):
    titles = list(json.loads((shared_data / "amazon-beauty" / "title_map.json").read_text(encoding="utf-8")).values())
    assert len(titles) == 12094
    return titles


def check_matches_reference(ours, reference, texts):
    got = ours.encode_batch(texts)
    expected = ids_of(reference, texts)
    mismatches = [(t, g, e) for t, g, e in zip(texts, got, expected) if g != e]
    assert not mismatches, mismatches[:3]
    assert [ours.encode(t) for t in texts[:100]] == expected[:100]
    # Decoding drops special tokens, as HF's skip_special_tokens does; text without special tokens
    # or bytes the vocabulary lacks comes back exactly.
    decoded = ours.decode_batch(got)
    assert decoded == reference.decode_batch(expected, skip_special_tokens=True)
    lacking = missing_bytes(reference)
    for text, back in zip(texts, decoded):
        if "<|" not in text and "<repo_name>" not in text and not (set(text.encode()) & lacking):
            assert back == text


def test_vocabulary_from_gguf(ours, reference):
    assert ours.kind == "bpe" and isinstance(ours, llm4dsr.Tokenizer)
    assert (ours.vocab_size, ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id) == (49152, 1, 2, 2, 0)
    assert len(ours) == reference.get_vocab_size() == 49152
    assert not ours.add_bos_token and not ours.add_eos_token
    assert ours.id_to_piece(1) == "<|im_start|>" and ours.piece_to_id("<|im_end|>") == 2
    for piece in ["Ġthe", "Ġmovie", "ing", "Ċ", "ĠĠ"]:
        assert ours.piece_to_id(piece) == reference.token_to_id(piece)
        assert ours.id_to_piece(reference.token_to_id(piece)) == piece
    assert ours.piece_to_id("no such piece") == ours.unk_id
    assert all(ours.is_special(i) for i in range(17)) and not ours.is_special(17)
    with pytest.raises(llm4dsr.Error, match="49152"):
        ours.id_to_piece(49152)
    with pytest.raises(llm4dsr.Error, match="-1.*position 1"):
        ours.decode([5, -1])


def test_json_reader_gives_the_same_tokenizer(ours, ours_json):
    assert (ours_json.vocab_size, ours_json.bos_id, ours_json.eos_id, ours_json.pad_id, ours_json.unk_id) == \
        (49152, 1, 2, 2, 0)
    texts = HARD + ["Toy Story (1995)"]
    assert ours_json.encode_batch(texts) == ours.encode_batch(texts)


def test_hard_strings(ours, ours_json, reference):
    check_matches_reference(ours, reference, HARD)
    check_matches_reference(ours_json, reference, HARD)
    # SmolLM2 adds neither bos nor eos (add_bos_token false), like HF's add_special_tokens=True.
    assert ours.encode("Hello", add_bos=True, add_eos=True) == reference.encode("Hello").ids == ours.encode("Hello")


@pytest.mark.parametrize("dataset", ["ml-100k", "amazon-beauty", "synthetic"])
def test_every_title_matches_reference(shared_data, ours, reference, dataset):
    if dataset == "ml-100k":
        titles = ml100k_titles(shared_data)
    elif dataset == "amazon-beauty":
        titles = beauty_titles(shared_data)
    else:
        titles = list(llm4dsr.make_synthetic().catalog.titles)
        assert len(titles) > 50
    check_matches_reference(ours, reference, titles)


def test_prompts_match_reference(shared_data, ours, reference):
    texts = prompts(ml100k_titles(shared_data)) + prompts(beauty_titles(shared_data))
    check_matches_reference(ours, reference, texts)
    chat = ours.encode(texts[1])
    assert chat[0] == 1 and chat.count(1) == 2 and chat.count(2) == 1  # <|im_start|> x2, <|im_end|> x1
    assert ours.decode(chat) == texts[1].replace("<|im_start|>", "").replace("<|im_end|>", "")


def test_every_bmp_code_point_matches_reference(ours, reference):
    """PCRE2's \\s, \\p{L} and \\p{N} against HF's (onig / Rust) on every character of the BMP."""
    texts = [f"x{chr(c)}y {chr(c)}{chr(c)} 1{chr(c)}\n" for c in range(1, 0x10000) if not 0xD800 <= c <= 0xDFFF]
    assert ours.encode_batch(texts) == ids_of(reference, texts)


def test_decode_of_arbitrary_ids_matches_hf(ours, reference):
    """Ids that cut characters in half: invalid UTF-8 becomes U+FFFD exactly where HF puts it."""
    rng = random.Random(3)
    sequences = [[rng.randrange(49152) for _ in range(rng.randrange(1, 12))] for _ in range(3000)]
    sequences += [[rng.randrange(17, 300) for _ in range(rng.randrange(1, 6))] for _ in range(3000)]
    assert ours.decode_batch(sequences) == reference.decode_batch(sequences, skip_special_tokens=True)
    assert any("\ufffd" in t for t in ours.decode_batch(sequences))


def test_transformers_gguf_conversion_differs_on_digits(ours, converted_dir, reference):
    """transformers' GGUF conversion drops the Digits pre-tokenizer: whitespace before a digit then
    becomes " \\n\\n" + " 1" instead of SmolLM2's " \\n\\n " + "1". We follow the original (and llama.cpp);
    our tokenizer.json reader reproduces the conversion faithfully when given it."""
    converted = tokenizers.Tokenizer.from_file(str(converted_dir / "tokenizer.json"))
    ours_converted = llm4dsr.BpeTokenizer.from_tokenizer_json(converted_dir / "tokenizer.json")
    for text in [" \n\n 1", "    1 ", "a ²\n", "Items:  2"]:
        assert ours.encode(text) == reference.encode(text).ids
        assert converted.encode(text).ids != reference.encode(text).ids, text
        assert ours_converted.encode(text) == converted.encode(text).ids
    assert ours.encode(" \n\n 1") == [216, 8866, 33]
    assert converted.encode(" \n\n 1").ids == [38028, 216, 33]
    check_matches_reference(ours_converted, converted, HARD)


def byte_to_char_offsets(text, offsets):
    """Byte spans to character spans (a span inside one character covers that character, as HF's do)."""
    char_of = []
    for i, ch in enumerate(text):
        char_of.extend([i] * len(ch.encode("utf-8")))
    return [(char_of[s], char_of[e - 1] + 1) for s, e in offsets]


def test_offsets_match_hf(shared_data, ours, reference):
    texts = [t for t in HARD if t] + ml100k_titles(shared_data)[:500] + beauty_titles(shared_data)[:500]
    for text in texts:
        ids, offsets = ours.encode_with_offsets(text)
        expected = reference.encode(text, add_special_tokens=False)
        assert ids == expected.ids
        assert byte_to_char_offsets(text, offsets) == expected.offsets, text


def reference_tail(reference, prefix, text):
    """encode_in_context from HF's character offsets: the tail of encode(prefix + text) from the first
    token whose span ends past the prefix (byte-level BPE has no zero-width tokens)."""
    encoding = reference.encode(prefix + text, add_special_tokens=False)
    first = next((i for i, (_, end) in enumerate(encoding.offsets) if end > len(prefix)), len(encoding.ids))
    return encoding.ids[first:]


def test_encode_in_context_matches_hf_offsets(shared_data, ours, reference):
    titles = ml100k_titles(shared_data) + beauty_titles(shared_data)
    prefixes = ["", "Items: ", "Items: '", "Items:", "1. ", "Suggested Items: ", "history: Toy Story (1995), ",
                "<|im_start|>assistant\n", "a", "日本 ", "café", "x ", "  ", "\n", "Noise Items: '", "1"]
    rng = random.Random(0)
    pairs = [(rng.choice(prefixes), rng.choice(titles)) for _ in range(3000)]
    # Every split point of the hard strings, including inside whitespace runs and before digits.
    for text in HARD[:60]:
        if len(text) < 200:
            pairs += [(text[:i], text[i:]) for i in range(1, len(text))]
    differs_from_plain = 0
    for prefix, text in pairs:
        got = ours.encode_in_context(prefix, text)
        assert got == reference_tail(reference, prefix, text), (prefix, text)
        differs_from_plain += got != ours.encode(text)
    assert differs_from_plain > 100
    assert ours.encode_in_context("Items:", " Toy") == ours.encode(" Toy")
    assert ours.encode_in_context("Items: '", "") == []


def test_encode_batch_is_encode(shared_data, ours):
    titles = beauty_titles(shared_data)[:3000]
    assert ours.encode_batch(titles) == [ours.encode(t) for t in titles]


# --- GGUF files written here ----------------------------------------------------------------------

def byte_pieces():
    visible = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping = {b: chr(b) for b in visible}
    mapping.update({b: chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in visible)})
    return [mapping[b] for b in range(256)]


def write_gguf(path, model="gpt2", pre="gpt2", token_types=True, extra=None):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), arch="llama")
    tokens = byte_pieces() + ["he", "hel", "<|c|>", "[U]"]
    writer.add_string("tokenizer.ggml.model", model)
    writer.add_string("tokenizer.ggml.pre", pre)
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.merges", ["h e", "he l"])
    if token_types:
        types = [1] * 258 + [3, 4]
        writer.add_array("tokenizer.ggml.token_type", types if token_types is True else types[:10])
    writer.add_uint32("tokenizer.ggml.bos_token_id", 258)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 258)
    for key, value in (extra or {}).items():
        writer.add_bool(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_small_gguf_by_hand(tmp_path):
    tok = llm4dsr.BpeTokenizer.from_gguf(write_gguf(tmp_path / "tiny.gguf"))
    # ids: bytes 0..255, 256 "he", 257 "hel"; 258 <|c|> (control), 259 [U] (user-defined).
    # "hello": h e l l o -> he l l o -> hel l o (there is no "l l" merge).
    assert tok.encode("hello") == [257, ord("l"), ord("o")]
    assert tok.encode("he<|c|>he [U]x") == [256, 258, 256, ord(" "), 259, ord("x")]
    assert tok.decode([256, 258, 256, 259]) == "hehe[U]"
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (258, 258, 258, -1)
    assert tok.encode("he", add_bos=True) == [256]
    adding = llm4dsr.BpeTokenizer.from_gguf(
        write_gguf(tmp_path / "adding.gguf", extra={"tokenizer.ggml.add_bos_token": True}))
    assert adding.add_bos_token and adding.encode("he", add_bos=True) == [258, 256]


def test_gguf_errors(tmp_path):
    with pytest.raises(llm4dsr.Error, match="llama.*SentencePiece"):
        llm4dsr.BpeTokenizer.from_gguf(write_gguf(tmp_path / "spm.gguf", model="llama"))
    with pytest.raises(llm4dsr.Error, match="pre.gguf.*no-such-pre.*smollm"):
        llm4dsr.BpeTokenizer.from_gguf(write_gguf(tmp_path / "pre.gguf", pre="no-such-pre"))
    with pytest.raises(llm4dsr.Error, match="token_type has 10 entries for 260 tokens"):
        llm4dsr.BpeTokenizer.from_gguf(write_gguf(tmp_path / "types.gguf", token_types="short"))
    with pytest.raises(llm4dsr.Error, match="absent.gguf"):
        llm4dsr.BpeTokenizer.from_gguf(tmp_path / "absent.gguf")


def test_tokenizer_json_errors(tmp_path, original_dir):
    spec = json.loads((original_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(llm4dsr.Error, match=r"tokenizer.json: pre_tokenizer.type: .*Whitespace"):
        llm4dsr.BpeTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    spec["pre_tokenizer"] = None
    spec["model"]["merges"][5] = ["Ġ", "nonexistent"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(llm4dsr.Error, match=r"merges\[5\].*nonexistent"):
        llm4dsr.BpeTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")

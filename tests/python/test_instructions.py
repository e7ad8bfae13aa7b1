"""PromptTemplate / InstructionBuilder through Python, on the synthetic dataset, and against the
``sentencepiece`` package on Llama-2's tokenizer when ../shared/data is present."""
import numpy as np
import pytest

import llm4dsr

PAPER_HEAD = "The user has interacted with the following items before: "
ALPACA_HEAD = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n### Instruction:\n"
    "You are to analyze a list of item titles provided by a user. Your task is to identify any item(s) that do "
    "not align with the main interests reflected by the majority of the items. After identifying these noise "
    "items, suggest alternative items that better match the user's interests.\n\n### Input:\n"
    "User Interaction Sequence: "
)


def quoted(titles):
    return ", ".join(f'"{t}"' for t in titles)


@pytest.fixture(scope="module")
def data():
    ds = llm4dsr.make_synthetic(num_users=60, num_items=200, seed=5)
    splits = llm4dsr.prepare(ds, split="windows", noise=0.1, seed=3)
    return ds, splits


@pytest.fixture(scope="module")
def trained_tokenizer(data):
    ds, splits = data
    pairs = llm4dsr.InstructionBuilder(max_pairs=200).make_pairs(splits.train, ds.catalog)
    texts = ds.catalog.titles + [p.prompt + p.response for p in pairs]
    return llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=800)


def test_builtin_templates_render_by_hand():
    titles = ["Alien (1979)", 'Doll 12" Tall', "Heat (1995)"]
    paper = llm4dsr.PromptTemplate.get("llm4dsr-paper")
    assert paper.render_prompt(titles) == PAPER_HEAD + "\"Alien (1979)\", \"Doll 12' Tall\", \"Heat (1995)\"\n"
    assert paper.render_response("Heat (1995)", "Aliens") == 'Noise Items: "Heat (1995)"\nSuggested Items: "Aliens"'
    alpaca = llm4dsr.PromptTemplate.get("llm4dsr-alpaca")
    expected = ALPACA_HEAD + "\"Alien (1979)\", \"Doll 12' Tall\", \"Heat (1995)\"\n \n\n### Response:\n"
    assert alpaca.render_prompt(titles) == expected
    assert alpaca.scoring_prefix(titles) == expected + 'Noise Items: "'
    assert alpaca.generation_prompt(titles, "Heat (1995)") == expected + 'Noise Items: "Heat (1995)"\nSuggested Replacements: "'
    chat = llm4dsr.ChatFormat.get("smollm2")
    assert paper.render_prompt(titles, chat) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\n" + paper.render_prompt(titles) + "<|im_end|>\n<|im_start|>assistant\n")
    assert set(llm4dsr.PromptTemplate.names()) >= {"llm4dsr-paper", "llm4dsr-alpaca"}
    with pytest.raises(llm4dsr.Error, match="unknown prompt template 'x'"):
        llm4dsr.PromptTemplate.get("x")


def test_custom_template_and_identities():
    t = llm4dsr.PromptTemplate("py-custom", prompt="Seen: {history}\n", response="Odd: {noise} / Better: {suggestion}",
                               quote_open="[", quote_close="]", separator="; ", quote_substitute=")")
    h = ["A [x]", "B"]
    assert t.render_prompt(h) == "Seen: [A [x)]; [B]\n"
    text = t.render_text(h, "B", "C")
    assert text == "Seen: [A [x)]; [B]\nOdd: [B] / Better: [C]"
    assert t.scoring_prefix(h) + "B" + t.noise_suffix() + "C" + t.suggestion_suffix() == text
    assert llm4dsr.PromptTemplate.from_json(t.to_json()).render_text(h, "B", "C") == text
    with pytest.raises(llm4dsr.Error, match="unknown placeholder {items}"):
        llm4dsr.PromptTemplate("bad", prompt="{items}", response="{noise}{suggestion}")
    builder = llm4dsr.InstructionBuilder(template=t, chat_format="chatml")
    assert builder.prompt_template.name == "py-custom"
    assert builder.chat_format.name == "chatml"


def test_pairs_on_synthetic_windows(data):
    ds, splits = data
    cat = ds.catalog
    builder = llm4dsr.InstructionBuilder(max_pairs=150, seed=9)
    pairs = builder.make_pairs(splits.train, cat)
    assert len(pairs) == 150
    indices = [p.window_index for p in pairs]
    assert indices == sorted(set(indices))
    for p in pairs:
        w = splits.train[p.window_index]
        original = np.asarray(w.items)
        diff = np.flatnonzero(p.items != original)
        assert diff.tolist() == [p.position]
        assert p.items.dtype == np.int64
        assert p.noise_item != p.original_item == original[p.position]
        assert p.titles == [cat.title(int(i)) for i in p.items]
        assert p.prompt == PAPER_HEAD + quoted(p.titles) + "\n"
        assert p.response == f'Noise Items: "{cat.title(p.noise_item)}"\nSuggested Items: "{cat.title(p.original_item)}"'
    again = builder.make_pairs(list(splits.train), cat)  # a plain list of Sequence works too
    assert [(p.window_index, p.position, p.noise_item) for p in again] == \
           [(p.window_index, p.position, p.noise_item) for p in pairs]

    clean = llm4dsr.InstructionBuilder(template="llm4dsr-alpaca", clean_fraction=0.5, max_pairs=40).make_pairs(
        splits.train, cat)
    assert sum(p.is_clean for p in clean) == 20
    for p in clean:
        if p.is_clean:
            assert p.response == "None" and p.position == -1
            assert np.array_equal(p.items, np.asarray(splits.train[p.window_index].items))
        assert p.prompt == ALPACA_HEAD + quoted(p.titles) + "\n \n\n### Response:\n"

    with pytest.raises(llm4dsr.Error, match="clean_fraction"):
        llm4dsr.InstructionBuilder(clean_fraction=2.0)
    with pytest.raises(llm4dsr.Error, match="no windows"):
        builder.make_pairs([], cat)
    with pytest.raises(llm4dsr.Error, match="not in the catalogue"):
        builder.make_pairs([llm4dsr.Sequence("u", np.array([1, 10_000]))], cat)


def test_tokenize_labels_and_truncation(data, trained_tokenizer):
    ds, splits = data
    tok = trained_tokenizer
    for loss_on in ("response", "all"):
        builder = llm4dsr.InstructionBuilder(loss_on=loss_on, max_pairs=30, clean_fraction=0.1, max_prompt_tokens=0)
        pairs = builder.make_pairs(splits.train, ds.catalog)
        batch = builder.tokenize(pairs, tok)
        assert len(batch) == len(pairs)
        for p, x in zip(pairs, batch):
            ids, labels, n = x.input_ids, x.labels, x.prompt_length
            assert ids.dtype == np.int64 and labels.dtype == np.int64
            assert ids[:n].tolist() == tok.encode(p.prompt, add_bos=True)
            assert ids[n:].tolist() == tok.encode_in_context(p.prompt, p.response) + [tok.eos_id]
            if loss_on == "response":
                assert (labels[:n] == -100).all() and (labels[n:] == ids[n:]).all()
            else:
                assert (labels == ids).all()
            assert (x.loss_mask == (labels != -100)).all()
            d = x.to_dict()
            assert np.array_equal(d["input_ids"], ids) and d["prompt_length"] == n

    builder = llm4dsr.InstructionBuilder(max_pairs=30)
    pairs = [p for p in builder.make_pairs(splits.train, ds.catalog) if len(p.titles) >= 6]
    full = llm4dsr.InstructionBuilder(max_prompt_tokens=0).tokenize(pairs, tok)
    limit = min(x.prompt_length for x in full) - 3
    cut = llm4dsr.InstructionBuilder(max_prompt_tokens=limit).tokenize(pairs, tok)
    for p, x in zip(pairs, cut):
        assert x.prompt_length <= limit and x.dropped_items >= 1
        decoded = tok.decode(x.input_ids[:x.prompt_length].tolist())
        assert decoded == x.prompt
        kept = [t for i, t in enumerate(p.titles) if i == p.position or i >= _drop_boundary(p, x.dropped_items)]
        assert decoded == PAPER_HEAD + quoted(kept) + "\n"  # whole titles only, oldest gone
        assert tok.decode(x.input_ids[x.prompt_length:].tolist()) == p.response
    with pytest.raises(llm4dsr.Error, match="raise max_prompt_tokens"):
        llm4dsr.InstructionBuilder(max_prompt_tokens=5).tokenize(pairs, tok)


def _drop_boundary(pair, dropped):
    """Index of the first kept title when `dropped` oldest titles other than the replaced one go."""
    order = [i for i in range(len(pair.titles)) if i != pair.position]
    return order[dropped] if dropped < len(order) else len(pair.titles)


def test_llama2_prompt_ids_match_the_sentencepiece_package(data, shared_data):
    spm = pytest.importorskip("sentencepiece")
    path = shared_data / "llama2-tokenizer" / "tokenizer.model"
    if not path.exists():
        pytest.skip("llama2 tokenizer.model absent")
    ds, splits = data
    ours = llm4dsr.SentencePieceTokenizer.from_file(path)
    ref = spm.SentencePieceProcessor(model_file=str(path))
    for template in ("llm4dsr-paper", "llm4dsr-alpaca"):
        builder = llm4dsr.InstructionBuilder(template=template, max_pairs=40, clean_fraction=0.1)
        pairs = builder.make_pairs(splits.train, ds.catalog)
        for p, x in zip(pairs, builder.tokenize(pairs, ours)):
            n = x.prompt_length
            assert x.input_ids[:n].tolist() == [ref.bos_id()] + ref.encode(x.prompt)
            joint = ref.encode(x.prompt + p.response)
            assert x.input_ids[n:].tolist() == joint[n - 1:] + [ref.eos_id()]
            assert x.input_ids[:n].tolist() + joint[n - 1:] == [ref.bos_id()] + joint

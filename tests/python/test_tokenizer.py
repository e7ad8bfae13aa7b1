"""SentencePieceTokenizer through the bindings, checked against the `sentencepiece` package."""
import json
import random

import pytest

import llm4dsr

spm = pytest.importorskip("sentencepiece")

CORPUS = [
    "Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)",
    "Twelve Monkeys (1995)", "Babe (1995)", "Dead Man Walking (1995)", "Richard III (1995)",
    "Seven (Se7en) (1995)", "The Usual Suspects (1995)", "Mighty Aphrodite (1995)", "Postino, Il (1994)",
    "Mr. Holland's Opus (1995)", "French Twist (Gazon maudit) (1995)", "From Dusk Till Dawn (1996)",
    "Amélie (2001)", "Léon (1994)", "Crème brûlée gift set", "Hydrating face cream, 50 ml",
]


@pytest.fixture
def llama2_path(shared_data):
    path = shared_data / "llama2-tokenizer" / "tokenizer.model"
    if not path.is_file():
        pytest.skip("llama2-tokenizer/tokenizer.model is absent")
    return path


@pytest.fixture
def ours(llama2_path):
    return llm4dsr.SentencePieceTokenizer.from_file(llama2_path)


@pytest.fixture
def reference(llama2_path):
    return spm.SentencePieceProcessor(model_file=str(llama2_path))


def ml100k_titles(shared_data):
    lines = (shared_data / "ml-100k" / "ml-100k.item").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    column = header.index("movie_title:token_seq")
    recbole = [line.split("\t")[column] for line in lines[1:] if line]
    raw = [line.split("|")[1]
           for line in (shared_data / "ml-100k-raw" / "u.item").read_bytes().decode("latin-1").splitlines() if line]
    assert len(recbole) == 1682 and len(raw) == 1682
    return recbole + raw


def beauty_titles(shared_data):
    titles = list(json.loads((shared_data / "amazon-beauty" / "title_map.json").read_text(encoding="utf-8")).values())
    assert len(titles) == 12094
    return titles


def reference_tail(reference, prefix, text):
    """encode_in_context computed from sentencepiece's own byte offsets: from the first piece whose
    span ends past the prefix, moved back over the zero-width pieces (dummy prefix, leading byte-fallback
    pieces) that sit at the prefix's end."""
    result = reference.encode(prefix + text, return_type="offset_mapping", return_bytes=True)
    ids, offsets = result["ids"], result["offsets"]
    n = len(prefix.encode("utf-8"))
    first = next((i for i, (_, end) in enumerate(offsets) if end > n), len(ids))
    while first > 0 and offsets[first - 1][0] == offsets[first - 1][1] >= n:
        first -= 1
    return ids[first:]


def test_hello_world(ours):
    assert ours.encode("Hello world!", add_bos=True) == [1, 15043, 3186, 29991]
    assert ours.kind == "sentencepiece"
    assert (ours.vocab_size, ours.unk_id, ours.bos_id, ours.eos_id, ours.pad_id) == (32000, 0, 1, 2, 2)
    assert len(ours) == 32000
    assert ours.id_to_piece(15043) == "\u2581Hello" and ours.piece_to_id("\u2581Hello") == 15043


@pytest.mark.parametrize("dataset", ["ml-100k", "amazon-beauty"])
def test_every_title_encodes_as_sentencepiece_does(shared_data, ours, reference, dataset):
    titles = ml100k_titles(shared_data) if dataset == "ml-100k" else beauty_titles(shared_data)
    got = ours.encode_batch(titles)
    expected = reference.encode(titles)
    assert len(got) == len(expected) == len(titles)
    mismatches = [(t, g, e) for t, g, e in zip(titles, got, expected) if g != e]
    assert not mismatches, mismatches[:5]

    with_specials = ours.encode_batch(titles[:200], add_bos=True, add_eos=True)
    assert with_specials == reference.encode(titles[:200], add_bos=True, add_eos=True)
    assert [ours.encode(t) for t in titles[:200]] == expected[:200]

    decoded = ours.decode_batch(got)
    assert decoded == reference.decode(expected)
    # Llama's normaliser is the identity, so titles come back byte for byte.
    assert decoded == titles


def test_encode_in_context_matches_sentencepiece_offsets(shared_data, ours, reference):
    titles = ml100k_titles(shared_data) + beauty_titles(shared_data)
    prefixes = ["", "Items: ", "Items: '", "Items:", "1. ", "The user watched \"", "foo", "\u2581",
                "history: Toy Story (1995), ", "a", "日本 ", "café"]
    rng = random.Random(0)
    pairs = [(rng.choice(prefixes), rng.choice(titles)) for _ in range(3000)]
    pairs += [("Babe", "\U00020000 rare"), ("a ", "\U00020000"), ("Items: '", "The Godfather"), ("foo", "bar")]
    differs_from_plain = 0
    for prefix, title in pairs:
        got = ours.encode_in_context(prefix, title)
        assert got == reference_tail(reference, prefix, title), (prefix, title)
        differs_from_plain += got != reference.encode(title)
    # The sample exercises the case the method exists for.
    assert differs_from_plain > 100
    assert ours.encode_in_context("Items: '", "The Godfather") == [1576, 4177, 22212]
    assert reference.encode("The Godfather") == [450, 4177, 22212]


def test_train_is_deterministic_and_readable_by_sentencepiece(tmp_path):
    a = llm4dsr.SentencePieceTokenizer.train(CORPUS, vocab_size=350)
    b = llm4dsr.SentencePieceTokenizer.train(CORPUS, vocab_size=350, model_type="bpe", character_coverage=1.0,
                                             seed=0, byte_fallback=True)
    assert isinstance(a.serialized(), bytes)
    assert a.serialized() == b.serialized()
    assert (a.vocab_size, a.unk_id, a.bos_id, a.eos_id, a.pad_id) == (350, 0, 1, 2, 3)
    assert [a.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]

    # The sentencepiece package reads our model and tokenises identically.
    theirs = spm.SentencePieceProcessor(model_proto=a.serialized())
    texts = CORPUS + ["Unseen title 漢字 (2024)", "  spaced  out  "]
    assert a.encode_batch(texts) == theirs.encode(texts)
    assert a.decode_batch(a.encode_batch(texts)) == texts
    assert a.unk_id not in a.encode("漢字")

    path = tmp_path / "trained.model"
    a.save(path)
    assert path.read_bytes() == a.serialized()
    assert llm4dsr.SentencePieceTokenizer.from_file(str(path)).encode_batch(texts) == a.encode_batch(texts)
    assert llm4dsr.SentencePieceTokenizer.from_serialized(a.serialized()).encode("Babe (1995)") == a.encode("Babe (1995)")

    unigram = llm4dsr.SentencePieceTokenizer.train(CORPUS, vocab_size=80, model_type="unigram", byte_fallback=False)
    assert unigram.vocab_size == 80
    assert unigram.unk_id in unigram.encode("漢")


def test_decode_of_half_a_character_does_not_raise():
    tok = llm4dsr.SentencePieceTokenizer.train(CORPUS, vocab_size=350)
    ids = tok.encode("漢")
    assert tok.decode(ids) == "漢"
    assert "\ufffd" in tok.decode(ids[:-1])


def test_errors(tmp_path):
    with pytest.raises(llm4dsr.Error, match="no_such.model.*does not exist"):
        llm4dsr.SentencePieceTokenizer.from_file(tmp_path / "no_such.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a sentencepiece model\n")
    with pytest.raises(llm4dsr.Error, match="garbage.model.*not a valid sentencepiece model"):
        llm4dsr.SentencePieceTokenizer.from_file(garbage)
    with pytest.raises(llm4dsr.Error, match="not a valid"):
        llm4dsr.SentencePieceTokenizer.from_serialized(b"\x0a\x05hello")
    with pytest.raises(llm4dsr.Error, match=r"vocab_size 50000 is too large .* at most \d+ pieces"):
        llm4dsr.SentencePieceTokenizer.train(CORPUS, vocab_size=50000)
    with pytest.raises(llm4dsr.Error, match="model_type"):
        llm4dsr.SentencePieceTokenizer.train(CORPUS, model_type="wordpiece")
    tok = llm4dsr.SentencePieceTokenizer.train(CORPUS, vocab_size=350)
    with pytest.raises(llm4dsr.Error, match="350.*0..349"):
        tok.id_to_piece(350)
    with pytest.raises(llm4dsr.Error, match="-7"):
        tok.decode([5, -7])
    with pytest.raises(llm4dsr.Error, match="sequence 1: .*9999"):
        tok.decode_batch([[5], [9999]])
    with pytest.raises(TypeError):
        llm4dsr.Tokenizer()


def test_soft_vocab_limit_gives_fewer_pieces_on_a_small_corpus():
    texts = ["Haunted Cellar", "Starship Odyssey", "Return of the Outlaw"] * 4
    with pytest.raises(llm4dsr.Error, match="at most"):
        llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=5000)
    tok = llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=5000, hard_vocab_limit=False)
    assert 260 < tok.vocab_size < 5000
    assert tok.decode(tok.encode("Haunted Cellar")) == "Haunted Cellar"

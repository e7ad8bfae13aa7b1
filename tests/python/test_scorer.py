"""UncertaintyScorer (P_noise, paper Eq. 2) against per-item brute force through LlamaModel.logits,
and the thresholds of Eq. 3 against numpy."""
from __future__ import annotations

import numpy as np
import pytest

import llm4dsr

TITLES = ["Halo Wars", "Halo Reach", "Zelda Breath", "(Re)Union Saga", "Mario Kart", "Doom Eternal",
          "(Re)Born Again", "Tetris Effect", "Portal Two", "Celeste", "Hades", "Stardew Valley"]
SEQUENCES = [[1, 3, 4, 5, 1], [2, 6, 7], [8, 9, 10, 11, 12, 1, 2], [11]]


@pytest.fixture(scope="module")
def setup():
    template = llm4dsr.PromptTemplate.get("llm4dsr-paper")
    texts = []
    for i, title in enumerate(TITLES):
        history = [TITLES[(i + j) % len(TITLES)] for j in range(4)]
        texts += [template.render_text(history, title, TITLES[(i + 5) % len(TITLES)])] * 3
    tok = llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=400, hard_vocab_limit=False)
    catalog = llm4dsr.Catalog()
    for i, title in enumerate(TITLES):
        catalog.set_title(catalog.add(str(i + 1)), title)
    config = llm4dsr.ModelConfig.preset("tiny", tok.vocab_size)
    config.num_hidden_layers = 2
    config.initializer_range = 0.2
    model = llm4dsr.LlamaModel(config, seed=7)
    return template, tok, catalog, model


def brute_force(model, tok, prefix: str, title: str, count: int | None) -> float:
    """Whole text through the model, one item at a time; the title's ids as tokenised after the prefix."""
    joint = tok.encode(prefix + title, add_bos=True)
    tail = tok.encode_in_context(prefix, title)
    context = len(joint) - len(tail)
    n = len(tail) if count is None else count
    logits = model.logits(np.array([joint[:context + n - 1]], dtype=np.int64))[0].double()
    logp = logits.log_softmax(-1)
    return sum(float(logp[context + j - 1, tail[j]]) for j in range(n))


@pytest.mark.parametrize("mode", ["first-token", "exact"])
def test_scores_equal_per_item_brute_force(setup, mode):
    template, tok, catalog, model = setup
    scorer = llm4dsr.UncertaintyScorer(model, tok, mode=mode, micro_batch_size=3)
    scores = scorer.score(SEQUENCES, catalog)
    assert len(scores) == len(SEQUENCES)
    for seq, s in zip(SEQUENCES, scores):
        titles = [TITLES[i - 1] for i in seq]
        prefix = template.scoring_prefix(titles)
        expected = [brute_force(model, tok, prefix, t, 1 if mode == "first-token" else None) for t in titles]
        np.testing.assert_allclose(s.log_prob, expected, atol=2e-4)
        np.testing.assert_array_equal(s.items, seq)
    # Batched with padding == one sequence at a time.
    single = llm4dsr.UncertaintyScorer(model, tok, mode=mode, micro_batch_size=1, chunk_size=1).score(SEQUENCES, catalog)
    for a, b in zip(scores, single):
        np.testing.assert_allclose(a.log_prob, b.log_prob, atol=1e-4)
        np.testing.assert_array_equal(a.rank, b.rank)


@pytest.mark.parametrize("mode", ["first-token", "exact"])
def test_score_chunks_streams_and_shared_prefix_changes_nothing(setup, mode):
    template, tok, catalog, model = setup
    whole = llm4dsr.UncertaintyScorer(model, tok, mode=mode, share_prefix=False).score(SEQUENCES, catalog)
    scorer = llm4dsr.UncertaintyScorer(model, tok, mode=mode, chunk_size=3)
    calls = []
    scorer.score_chunks(SEQUENCES, catalog, lambda first, scores: calls.append((first, scores)))
    assert [(first, len(scores)) for first, scores in calls] == [(0, 3), (3, 1)]
    streamed = [s for _, scores in calls for s in scores]
    for a, b in zip(streamed, whole):
        np.testing.assert_allclose(a.log_prob, b.log_prob, atol=1e-4)
        np.testing.assert_array_equal(a.items, b.items)

    def failing_sink(first, scores):
        raise ValueError(f"sink refused chunk {first}")

    with pytest.raises(ValueError, match="sink refused chunk 0"):
        scorer.score_chunks(SEQUENCES, catalog, failing_sink)


def test_standalone_reads_the_titles_own_first_piece(setup):
    template, tok, catalog, model = setup
    seq = SEQUENCES[2]
    titles = [TITLES[i - 1] for i in seq]
    prefix_ids = tok.encode(template.scoring_prefix(titles), add_bos=True)
    last = model.logits(np.array([prefix_ids], dtype=np.int64))[0, -1].double().log_softmax(-1)
    s = llm4dsr.UncertaintyScorer(model, tok, first_token_context="standalone").score([seq], catalog)[0]
    np.testing.assert_allclose(s.log_prob, [float(last[tok.encode(t)[0]]) for t in titles], atol=1e-4)
    in_context = llm4dsr.UncertaintyScorer(model, tok).score([seq], catalog)[0]
    assert np.all(np.abs(s.log_prob - in_context.log_prob) > 1e-3)
    with pytest.raises(llm4dsr.Error, match="standalone"):
        llm4dsr.UncertaintyScorer(model, tok, mode="exact", first_token_context="standalone")


def test_errors_name_sequence_and_item(setup):
    _, tok, catalog, model = setup
    scorer = llm4dsr.UncertaintyScorer(model, tok)
    with pytest.raises(llm4dsr.Error, match=r"sequence 1.*item id 99"):
        scorer.score([[1, 2], [99]], catalog)
    with pytest.raises(llm4dsr.Error, match="scoring mode"):
        llm4dsr.UncertaintyScorer(model, tok, mode="first")


def test_synthetic_split_scores_are_normalised_and_ranked():
    dataset = llm4dsr.make_synthetic(num_users=40, num_items=120, min_length=12, max_length=16, seed=3)
    splits = llm4dsr.prepare(dataset, split="windows", noise=0.1, seed=1)
    catalog = dataset.catalog
    valid = splits.valid
    assert len(valid) > 0
    tok = llm4dsr.SentencePieceTokenizer.train([catalog.title(i) for i in range(1, len(catalog) + 1)] +
                                               [llm4dsr.PromptTemplate.get("llm4dsr-paper").prompt] * 5,
                                               vocab_size=500, hard_vocab_limit=False)
    config = llm4dsr.ModelConfig.preset("tiny", tok.vocab_size)
    config.num_hidden_layers = 2
    model = llm4dsr.LlamaModel(config, seed=1)
    scorer = llm4dsr.UncertaintyScorer(model, tok, micro_batch_size=8, chunk_size=16)
    scores = scorer.score(valid, catalog)
    assert len(scores) == len(valid)
    for seq, s in zip(valid, scores):
        items = np.asarray(seq.items)
        assert s.dropped_items == 0
        assert np.all(np.isfinite(s.log_prob)) and np.all(s.log_prob <= 0)
        np.testing.assert_array_equal(np.sort(s.rank), np.arange(1, len(items) + 1))
        order = np.lexsort((np.arange(len(items)), -s.log_prob.astype(np.float64)))
        np.testing.assert_array_equal(s.rank[order], np.arange(1, len(items) + 1))
        # Distinct events (the first position of each: titles sharing a first token are one event in
        # first-token mode) carry the whole probability mass.
        event = scorer.plan(items, catalog)["event"]
        first = [k for k in range(len(items)) if event[k] not in event[:k]]
        assert s.prob[first].sum() == pytest.approx(1.0, abs=1e-5)
        z = np.exp(s.log_prob[first].astype(np.float64)).sum()
        np.testing.assert_allclose(s.prob, np.exp(s.log_prob.astype(np.float64)) / z, rtol=1e-4, atol=1e-7)
    flat = llm4dsr.all_noise_scores(scores)
    assert flat.shape == (sum(len(s) for s in scores),)
    np.testing.assert_allclose(flat, np.exp(np.concatenate([s.log_prob for s in scores]).astype(np.float64)), rtol=1e-6)


def test_thresholds_match_numpy_and_budget():
    rng = np.random.default_rng(0)
    values = rng.random(137)
    for q in llm4dsr.default_quantile_grid()[1:]:
        assert llm4dsr.noise_threshold(values, q) == np.quantile(values, q, method="inverted_cdf")
    assert llm4dsr.noise_threshold(values, 0.0) == -np.inf
    rows = [[0.1, 0.5, 0.3, 0.9, 0.5], [0.05, 0.02], [0.2, 0.2, 0.2]]
    as_lists = lambda flags: [f.tolist() for f in flags]  # noqa: E731
    assert as_lists(llm4dsr.flag_noise(rows, 0.3)) == [[1, 3, 4], [], []]
    assert as_lists(llm4dsr.flag_noise(rows, 0.3, budget=1)) == [[3], [], []]
    assert as_lists(llm4dsr.flag_noise(rows, 0.3, budget=2)) == [[1, 3], [], []]
    assert as_lists(llm4dsr.flag_noise(rows, 0.1, budget=2)) == [[1, 3], [], [0, 1]]
    assert as_lists(llm4dsr.flag_noise(rows, 0.2)) == [[1, 2, 3, 4], [], []]
    with pytest.raises(llm4dsr.Error, match="budget"):
        llm4dsr.flag_noise(rows, 0.3, budget=-1)
    with pytest.raises(llm4dsr.Error, match="quantile"):
        llm4dsr.noise_threshold(values, 1.2)


def test_search_eta_on_validation_scores(setup):
    _, tok, catalog, model = setup
    scores = llm4dsr.UncertaintyScorer(model, tok).score(SEQUENCES, catalog)
    flat = llm4dsr.all_noise_scores(scores)
    seen = []

    def objective(eta, flags):
        seen.append(eta)
        return -abs(sum(len(f) for f in flags) - 4)  # prefer flagging exactly 4 items

    result = llm4dsr.search_eta(scores, objective, budget=0)
    assert [c["quantile"] for c in result["candidates"]] == llm4dsr.default_quantile_grid()
    assert seen[1:] == [np.quantile(flat, q, method="inverted_cdf") for q in llm4dsr.default_quantile_grid()[1:]]
    best = result["best"]
    assert int((flat > best["eta"]).sum()) == 4 or best["objective"] < 0
    assert best["objective"] == max(c["objective"] for c in result["candidates"])

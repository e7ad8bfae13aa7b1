"""Bad arguments at the Python boundary: each is one llm4dsr.Error naming the argument, never a crash,
a truncation or torch's own exception; and the model's adapters under concurrent base-model embedding."""
import threading

import numpy as np
import pytest
import torch

import llm4dsr

VOCAB = 300


@pytest.fixture(scope="module")
def tiny():
    titles = ["Haunted Cellar", "Starship Odyssey", "The Cursed Crypt", "Return of the Outlaw", "Fabled Scepter"]
    tok = llm4dsr.SentencePieceTokenizer.train(titles * 6, vocab_size=VOCAB, hard_vocab_limit=False)
    model = llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", VOCAB), seed=3)
    return tok, model


def test_token_ids_outside_the_vocabulary_are_refused(tiny):
    _, model = tiny
    good = np.array([[1, 5, 7, 9]])
    for bad_id in (-1, VOCAB, 10**9):
        ids = good.copy()
        ids[0, 2] = bad_id
        for call in (model.logits, model.hidden_states, model.forward, model.logits_incremental):
            with pytest.raises(llm4dsr.Error, match=f"token id {bad_id}, outside the vocabulary"):
                call(ids)
    assert model.logits(good).shape == (1, 4, VOCAB)


def test_float_and_bool_ids_are_refused_not_truncated(tiny):
    _, model = tiny
    ids = np.array([[1, 5, 7, 9]])
    for bad in (ids + 0.9, ids.astype(np.float32), ids.astype(bool), torch.tensor(ids, dtype=torch.float64),
                torch.tensor(ids).bool()):
        with pytest.raises(llm4dsr.Error, match="input ids must hold integers"):
            model.logits(bad)
    with pytest.raises(llm4dsr.Error, match="input ids must hold integers, got an array of <U1"):
        model.logits(np.array([["a", "b"]]))
    # Integer types of every width, lists and torch tensors are the same ids.
    ref = model.logits(ids).numpy()
    for same in (ids.astype(np.int32), ids.astype(np.uint16), ids.tolist(), torch.tensor(ids, dtype=torch.int32)):
        np.testing.assert_array_equal(model.logits(same).numpy(), ref)


def test_attention_masks_take_integers_or_booleans_of_the_ids_shape(tiny):
    _, model = tiny
    ids = np.array([[0, 0, 5, 7], [1, 5, 7, 9]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    ref = model.logits(ids, attention_mask=mask).numpy()
    np.testing.assert_array_equal(model.logits(ids, attention_mask=mask.astype(bool)).numpy(), ref)
    np.testing.assert_array_equal(model.logits(ids, attention_mask=torch.tensor(mask).bool()).numpy(), ref)
    with pytest.raises(llm4dsr.Error, match="attention_mask must hold integers or booleans"):
        model.logits(ids, attention_mask=np.full(ids.shape, 0.5))  # numpy's cast would make it all zeros
    for call in (model.logits, model.logits_incremental):
        with pytest.raises(llm4dsr.Error, match=r"attention_mask must be \[2, 4\] like input_ids, got \[2, 3\]"):
            call(ids, attention_mask=mask[:, :3])


def test_sequences_and_scores_refuse_float_items_and_strings():
    with pytest.raises(llm4dsr.Error, match="items must hold integers"):
        llm4dsr.Sequence("u", np.array([1.9, 2.9]))
    s = llm4dsr.Sequence("u", np.array([1, 2], dtype=np.int32))
    assert s.items.tolist() == [1, 2] and s.items.dtype == np.int64
    with pytest.raises(llm4dsr.Error, match="labels must hold integers or booleans"):
        s.labels = [0.5, 1.0]
    s.labels = np.array([False, True])
    assert s.labels.tolist() == [0, 1]
    with pytest.raises(llm4dsr.Error, match="scores must hold numbers, got an array of <U1"):
        llm4dsr.noise_threshold(np.array(["a", "b"]), 0.5)  # was a segmentation fault
    # Flat scores as a list, a numpy array or a torch tensor: the same eta.
    values = [0.1, 0.4, 0.2, 0.9]
    eta = llm4dsr.noise_threshold(np.array(values), 0.5)
    assert eta == llm4dsr.noise_threshold(values, 0.5) == llm4dsr.noise_threshold(torch.tensor(values, dtype=torch.float64), 0.5) == 0.2
    assert [f.tolist() for f in llm4dsr.flag_noise([np.array([0.1, 0.9]), [0.8, 0.3]], 0.5, budget=1)] == [[1], [0]]
    with pytest.raises(llm4dsr.Error, match="is_noise must hold integers or booleans"):
        llm4dsr.average_precision([0.2, 0.8], [0.0, 1.0])


def test_grounder_search_checks_k_and_its_arguments_before_allocating():
    rng = np.random.default_rng(0)
    g = llm4dsr.Grounder(["Heat", "Fargo", "Toy Story"], rng.normal(size=(3, 8)).astype(np.float32))
    q = rng.normal(size=(2, 8)).astype(np.float32)
    for k in (0, -1, 4, 2**40):
        with pytest.raises(llm4dsr.Error, match=r"k must be in 1..3 \(catalogue size\), got"):
            g.search(q, k)
    ids, sims = g.search(q, 2, exclude=torch.tensor([[1], [2]]))  # a 2-D tensor: one row per query
    assert 1 not in ids[0] and 2 not in ids[1]
    ids2, _ = g.search(q, 2, exclude=[np.array([1]), [2]])
    np.testing.assert_array_equal(ids, ids2)
    with pytest.raises(llm4dsr.Error, match="exclude must hold one list of item ids per query"):
        g.search(q, 2, exclude=[1, 2])
    with pytest.raises(llm4dsr.Error, match="exclude: a query's item ids must hold integers"):
        g.search(q, 2, exclude=[[1.5], [2]])
    with pytest.raises(llm4dsr.Error, match="out must hold two numpy arrays"):
        g.search(q, 2, out=(None, np.zeros((2, 2), np.float32)))
    with pytest.raises(llm4dsr.Error, match="queries must hold numbers"):
        g.search(np.array([["x"] * 8]), 1)


def test_constrained_generator_refuses_excluding_every_title_or_unknown_ids(tiny):
    tok, model = tiny
    catalog = llm4dsr.Catalog()
    for i, t in enumerate(["Haunted Cellar", "Starship Odyssey", "The Cursed Crypt"]):
        catalog.set_title(catalog.add(f"e{i}"), t)
    gen = llm4dsr.Generator(model, tok, catalog, constrained=True)
    items = np.array([1, 2, 3])
    out = gen.generate([(items, 1, [1, 2])])  # one title left: it is the answer
    assert out[0].item_id == 3
    with pytest.raises(llm4dsr.Error, match="request 0: all 3 catalogue titles are excluded"):
        gen.generate([(items, 1, [1, 2, 3])])
    with pytest.raises(llm4dsr.Error, match="request 0: excluded item id 999 is outside the catalogue's 1..3"):
        gen.generate([(items, 1, [999])])


def test_embedding_the_base_model_leaves_other_threads_their_adapters(tiny):
    """Embedder(use_lora=False) runs the base model on its own thread only: scoring or logits from other
    threads at the same time keep the adapters (it used to detach them from the shared model)."""
    tok, _ = tiny
    model = llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", VOCAB), seed=5)
    base = llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", VOCAB), seed=5)
    model.add_lora(r=4, alpha=8, dropout=0.0, target_modules="all-linear", seed=1)
    for t in model.lora_parameters().values():
        t.data.uniform_(-0.3, 0.3)
    ids = np.array([[1, 5, 7, 9, 11, 13]])
    adapted = model.logits(ids).numpy()
    assert np.abs(adapted - base.logits(ids).numpy()).max() > 1e-2
    texts = ["Haunted Cellar", "Starship Odyssey", "The Cursed Crypt"] * 8
    expected = llm4dsr.Embedder(base, tok).embed(texts)
    for merged in (False, True):
        if merged:
            model.merge_lora()
        embedder = llm4dsr.Embedder(model, tok)
        stop, wrong, errors = threading.Event(), [], []

        def logits_loop():
            try:
                while not stop.is_set():
                    got = model.logits(ids).numpy()
                    if np.abs(got - adapted).max() > 1e-4:
                        wrong.append(float(np.abs(got - adapted).max()))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=logits_loop) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for _ in range(15):
                np.testing.assert_allclose(embedder.embed(texts), expected, atol=1e-4)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors and not wrong, (merged, errors, wrong[:3])

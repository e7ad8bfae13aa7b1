"""Instruction tuning end to end on the embedded dataset, through the Python API."""
import numpy as np
import pytest

import llm4dsr
from llm4dsr.pretraining import train_texts


@pytest.fixture(scope="module")
def task():
    ds = llm4dsr.make_synthetic(num_users=60, num_items=150, seed=4)
    splits = llm4dsr.prepare(ds, split="windows", noise=0.0, seed=1)
    # from scratch: a tokenizer trained on the catalogue and the training windows as text
    texts = train_texts(ds, splits)
    tok = llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=400)
    builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", max_pairs=240, seed=3)
    pairs = builder.make_pairs(splits.train, ds.catalog)
    data = builder.tokenize(pairs, tok)
    held_out = builder.tokenize(llm4dsr.InstructionBuilder(template="llm4dsr-paper", max_pairs=60, seed=99)
                                .make_pairs(splits.valid, ds.catalog), tok)
    cfg = llm4dsr.ModelConfig.preset("tiny", tok.vocab_size)
    return tok, cfg, data, held_out


def test_response_loss_falls_substantially(task):
    tok, cfg, data, held_out = task
    model = llm4dsr.LlamaModel(cfg, seed=0)
    trainer = llm4dsr.Trainer(model, learning_rate=3e-3, num_epochs=4, micro_batch_size=16, progress=False,
                              pad_token_id=tok.pad_id, seed=0)
    before = trainer.evaluate(held_out)
    result = trainer.train(data)
    after = trainer.evaluate(held_out)
    assert result["steps"] == trainer.total_steps(len(data))
    # an untrained model is near log(vocab); after training the response (titles seen in training,
    # template words) must be far more predictable on windows it never saw
    assert before > 0.8 * np.log(tok.vocab_size)
    assert after < 0.6 * before, (before, after)
    # the loss is over response tokens only: labels are -100 on the prompt
    first = data[0]
    assert (first.labels[: first.prompt_length] == -100).all()
    assert (first.labels[first.prompt_length:] == first.input_ids[first.prompt_length:]).all()


def test_lora_run_killed_then_resumed_matches_uninterrupted(task, tmp_path):
    tok, cfg, data, _ = task
    data = data[:64]

    def fresh():
        m = llm4dsr.LlamaModel(cfg, seed=5)
        m.add_lora(r=4, alpha=8, dropout=0.1, target_modules="all-linear", seed=2)
        return m

    opts = dict(learning_rate=2e-3, num_epochs=2, micro_batch_size=8, save_steps=3, progress=False,
                pad_token_id=tok.pad_id, seed=11)
    reference = fresh()
    llm4dsr.Trainer(reference, output_dir=str(tmp_path / "a"), **opts).train(data)

    killed = fresh()

    def kill_at_5(progress):
        if progress["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llm4dsr.Trainer(killed, output_dir=str(tmp_path / "b"), **opts).train(data, callback=kill_at_5)
    resumed = fresh()
    out = llm4dsr.Trainer(resumed, output_dir=str(tmp_path / "b"), **opts).train(data, resume=True)
    assert out["resumed_from_step"] == 3
    ref = reference.lora_parameters()
    got = resumed.lora_parameters()
    assert ref.keys() == got.keys()
    for k in ref:
        assert np.allclose(ref[k].detach().numpy(), got[k].detach().numpy(), atol=1e-6, rtol=0), k
    assert any(not np.allclose(ref[k].detach().numpy(), killed.lora_parameters()[k].detach().numpy()) for k in ref)


def test_cli_finetune_from_scratch_lowers_the_response_loss_and_denoises(tmp_path):
    """`finetune --base scratch:tiny`: pretrain a tiny Llama on the data (sentencepiece trained by the
    library), tune it whole on the instructions; the held-out response loss must fall substantially,
    and the resulting folder must drive `denoise`."""
    import json
    import subprocess
    import sys

    data = "synthetic:users=60,items=150,seed=4"
    out = tmp_path / "scratch"
    r = subprocess.run([sys.executable, "-m", "llm4dsr", "finetune", "--data", data, "--base", "scratch:tiny",
                        "--out", str(out), "--pairs", "240", "--batch-size", "16", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["trainable"] == "all parameters"
    before, after = summary["valid_response_loss_before"], summary["valid_response_loss_after"]
    assert after < 0.7 * before, (before, after)
    card = json.loads((out / "llm4dsr.json").read_text())
    assert card["prompt_template"] == "llm4dsr-paper"
    r = subprocess.run([sys.executable, "-m", "llm4dsr", "denoise", "--data", data, "--noise", "0.1", "--seed", "1",
                        "--model", str(out), "--out", str(tmp_path / "den"), "--splits", "test", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["splits"]["test"]["sequences"] > 0


def test_pretrain_from_scratch_learns_the_data_and_saves_a_loadable_folder(tmp_path):
    """pretrain_from_scratch (the library function behind `llm4dsr pretrain`): the LM loss on the
    dataset's own text must fall, the saved folder must load back with the same logits, and its
    tokenizer must cover the titles without unknown pieces (it was trained on them)."""
    from llm4dsr.pretraining import pretrain_from_scratch

    ds = llm4dsr.make_synthetic(num_users=40, num_items=80, seed=3)
    splits = llm4dsr.prepare(ds, split="windows", noise=0.0, seed=1)
    steps = []
    model, result, blocks = pretrain_from_scratch(ds, splits, str(tmp_path / "pt"), epochs=2, seed=5,
                                                  callback=lambda p: steps.append(p["step"]))
    assert blocks > 0 and steps == list(range(1, result["steps"] + 1))
    losses = result["step_losses"]
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    texts = train_texts(ds, splits)
    assert len(texts) == sum(1 for t in ds.catalog.titles if t) + len(splits.train)
    loaded = llm4dsr.load_pretrained(str(tmp_path / "pt"))
    ids = np.asarray([model.tokenizer.encode(texts[0], add_bos=True)])
    assert np.allclose(loaded.model.logits(ids).numpy(), model.model.logits(ids).numpy(), atol=1e-5)
    unk = model.tokenizer.unk_id
    assert all(unk not in model.tokenizer.encode(t) for t in ds.catalog.titles if t)


def test_resume_refuses_other_settings_and_bad_token_ids(task, tmp_path):
    tok, cfg, data, _ = task
    data = data[:16]

    def fresh(targets="all-linear", alpha=8):
        m = llm4dsr.LlamaModel(cfg, seed=5)
        m.add_lora(r=4, alpha=alpha, dropout=0.0, target_modules=targets, seed=2)
        return m

    opts = dict(learning_rate=2e-3, num_epochs=1, micro_batch_size=8, progress=False, pad_token_id=tok.pad_id, seed=11,
                output_dir=str(tmp_path))
    llm4dsr.Trainer(fresh(), **opts).train(data)  # leaves its checkpoint
    for model, changes, message in (
            (fresh(), dict(learning_rate=1e-3), "learning_rate: 0.002 then, 0.001 now"),
            (fresh(), dict(seed=12), "seed: 11 then, 12 now"),
            (fresh(alpha=16), {}, ": r 4, scaling 2, dropout 0 then, r 4, scaling 4, dropout 0 now"),
            (fresh(targets=["q_proj", "v_proj"]), {}, "adapter model.layers.0.mlp.down_proj: r 4"),
    ):
        with pytest.raises(llm4dsr.Error, match="was written by a run with other settings") as e:
            llm4dsr.Trainer(model, **{**opts, **changes}).train(data, resume=True)
        assert message in str(e.value), str(e.value)
    with pytest.raises(llm4dsr.Error, match=r"examples: 16 \(hash [0-9a-f]+\) then, 15"):
        llm4dsr.Trainer(fresh(), **opts).train(data[:15], resume=True)
    assert llm4dsr.Trainer(fresh(), **opts).train(data, resume=True)["resumed_from_step"] == 2

    bad = llm4dsr.TrainingExample(list(data[0].input_ids[:5]) + [cfg.vocab_size], list(data[0].labels[:6]))
    with pytest.raises(llm4dsr.Error, match=f"training example 1, position 5: token id {cfg.vocab_size} is outside"):
        llm4dsr.Trainer(fresh(), learning_rate=1e-3, progress=False).train([data[0], bad])
    with pytest.raises(llm4dsr.Error, match="pad_token_id must be a token of the model's vocabulary"):
        llm4dsr.Trainer(fresh(), pad_token_id=-1)


def test_cli_resume_checks_the_base_model(tmp_path):
    """finetune --resume continues only on the base its checkpoint was trained on (the trainer's own
    signature covers options, examples and adapters, not the frozen base weights)."""
    from llm4dsr import cli

    out, a, b = tmp_path / "out", tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"a")
    b.write_bytes(b"bb")
    cli._check_resumed_base(str(out), str(a), resume=False)
    (out / "checkpoint.pt").write_bytes(b"")
    cli._check_resumed_base(str(out), str(a), resume=True)  # the same base: fine
    with pytest.raises(llm4dsr.Error, match="its checkpoint was trained on base"):
        cli._check_resumed_base(str(out), str(b), resume=True)
    cli._check_resumed_base(str(out), str(b), resume=False)  # a fresh run takes the new base
    cli._check_resumed_base(str(out), str(b), resume=True)

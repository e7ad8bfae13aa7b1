"""SmolLM2-135M-Instruct end to end: the GGUF-loaded model against transformers' own dequantisation of
the same file (logits, greedy generation), the saved folder loaded by transformers, bf16, a short LoRA
fine-tune and the `finetune` command.

Skips when the GGUF file is absent (scripts/setup puts it in the model cache). Token ids are always made
by our tokenizer and fed to both models: transformers' tokenizer built from a GGUF drops SmolLM2's
digit-splitting pre-tokenizer step, so its ids differ where digits follow whitespace.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import llm4dsr

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF = os.path.join(llm4dsr.model_cache_dir(), GGUF_NAME)

pytestmark = pytest.mark.skipif(not os.path.isfile(GGUF), reason=f"{GGUF} is absent (scripts/setup fetches it)")

transformers = pytest.importorskip("transformers")

# fp32 on the same dequantised weights: two implementations differ only in summation order.
LOGITS_TOL = 1e-3
NEW_TOKENS = 32
# A greedy run may only part from transformers' where its two best logits are this close (rounding).
NEAR_TIE = 2e-3

CHAT_TEXTS = [
    "Hi",
    "List three fruits, one per line.",
    "In 2024 I watched 3 films: 12 Angry Men, Alien and Up. Which one is the oldest? Answer briefly.",
]


def left_pad(rows, pad=0):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def hf_logits(model, ids, mask):
    """transformers' logits for a left-padded batch with the position ids its generate() derives from the mask."""
    ids_t, mask_t = torch.as_tensor(ids), torch.as_tensor(mask)
    position_ids = (mask_t.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        return model(input_ids=ids_t, attention_mask=mask_t, position_ids=position_ids).logits.float().numpy()


@pytest.fixture(scope="module")
def ours():
    return llm4dsr.load_pretrained("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def hf():
    model = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(GGUF), gguf_file=GGUF_NAME,
                                                              dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def task():
    """The synthetic dataset with 10% artificial noise, as the pipeline prepares it."""
    ds = llm4dsr.make_synthetic(num_users=40, num_items=150)
    return ds, llm4dsr.prepare(ds, noise=0.1, seed=0)


@pytest.fixture(scope="module")
def prompts(ours, task):
    """Chat-wrapped questions of different lengths plus two recommendation prompts of the pipeline."""
    chat = llm4dsr.ChatFormat.get("chatml")
    rows = [ours.tokenizer.encode(chat.wrap(t)) for t in CHAT_TEXTS]
    ds, splits = task
    builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", chat_format="chatml", max_pairs=2, seed=5)
    for x in builder.tokenize(builder.make_pairs(splits.valid, ds.catalog), ours.tokenizer):
        rows.append([int(i) for i in x.input_ids[: x.prompt_length]])
    assert len({len(r) for r in rows}) == len(rows), "prompt lengths must differ to exercise the padding"
    return rows


def test_logits_equal_transformers_on_a_left_padded_batch(ours, hf, prompts):
    ids, mask = left_pad(prompts, pad=ours.model.config.pad_token_id)
    got = ours.model.logits(ids, attention_mask=mask).numpy()
    ref = hf_logits(hf, ids, mask)
    real = mask.astype(bool)
    diff = np.abs(got - ref)[real]
    assert diff.max() <= LOGITS_TOL, diff.max()
    # The logits are far from trivially equal: a wrong weight permutation or RoPE shows up as O(1) differences.
    assert np.abs(ref[real]).max() > 10
    # Each padded row equals the row run alone (the mask, not the pads, decides).
    alone = ours.model.logits(np.array([prompts[0]])).numpy()[0]
    assert np.abs(got[0, real[0]] - alone).max() <= LOGITS_TOL


def test_greedy_generation_equals_transformers_generate(ours, hf, prompts):
    out = ours.model.generate_greedy(prompts, max_new_tokens=NEW_TOKENS)
    eos = ours.model.config.eos_token_ids
    assert hf.generation_config.eos_token_id in eos
    # transformers' batched generate on the same left-padded batch; after a row's EOS it writes pads (= EOS).
    ids, mask = left_pad(prompts, pad=eos[0])
    with torch.no_grad():
        g = hf.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), do_sample=False,
                        max_new_tokens=NEW_TOKENS, pad_token_id=eos[0])
    exact = 0
    for row, prompt in enumerate(prompts):
        ref = g[row, ids.shape[1]:].tolist()
        if any(t in eos for t in ref):
            ref = ref[: next(i for i, t in enumerate(ref) if t in eos) + 1]
        got = out.sequences[row]
        assert out.stopped[row] == (got[-1] in eos)
        if got == ref:
            exact += 1
            continue
        # Different ids are only acceptable at a genuine tie of the two choices.
        k = next((i for i in range(min(len(got), len(ref))) if got[i] != ref[i]), None)
        assert k is not None, f"row {row}: {got} and {ref} differ in length only"
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([prompt + ref[:k]])).logits[0, -1]
        gap = abs(float(logits[got[k]] - logits[ref[k]]))
        assert gap <= NEAR_TIE, f"row {row} parts from transformers at new token {k} with a logit gap of {gap}"
    assert exact >= len(prompts) - 1
    # Real decoding on both sides: every row answers with several tokens, some rows stop on EOS, some run
    # to the limit.
    assert all(len(s) >= 5 for s in out.sequences)
    assert any(out.stopped) and not all(out.stopped)


def test_saved_folder_loads_in_transformers(ours, hf, prompts, task, tmp_path):
    folder = str(tmp_path / "smollm2")
    llm4dsr.save_pretrained(ours, folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)

    # Same weights as transformers' own dequantisation of the GGUF file.
    ref_state = hf.state_dict()
    for name, t in model.state_dict().items():
        assert torch.equal(t, ref_state[name]), name

    ids, mask = left_pad(prompts, pad=ours.model.config.pad_token_id)
    diff = np.abs(hf_logits(model, ids, mask) - ours.model.logits(ids, attention_mask=mask).numpy())[mask.astype(bool)]
    assert diff.max() <= LOGITS_TOL

    ds, _ = task
    hard = [
        "  two leading spaces", "tabs\tand\nnew lines\n\n\n", "digits 12345 and 3.14159 and 2024-01-31",
        "Ünïcödé café naïve façade", "emoji 🎬🍿 and 中文字符 and Ελληνικά", "<|im_start|>user\nhi<|im_end|>\n",
        "it's don't they'll WE'VE", "trailing   ", "a" * 40, "!!!???...", "Movie (1999)  ,  The",
    ]
    texts = list(ds.catalog.titles) + hard
    for text in texts:
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ours.tokenizer.encode(text) == expected, text
    assert tokenizer.decode(ours.tokenizer.encode(hard[4])) == hard[4]
    assert tokenizer.eos_token_id in ours.model.config.eos_token_ids


def test_bf16_logits_are_close_to_fp32(ours, hf, prompts):
    ours16 = llm4dsr.LlamaModel.from_pretrained("smollm2-135m-instruct", dtype="bfloat16")
    assert ours16.dtype == "bfloat16"
    ids, mask = left_pad(prompts, pad=ours.model.config.pad_token_id)
    real = mask.astype(bool)
    fp32 = ours.model.logits(ids, attention_mask=mask).numpy()[real]
    ours_err = np.abs(ours16.logits(ids, attention_mask=mask).numpy()[real] - fp32)
    hf16 = copy.deepcopy(hf).to(torch.bfloat16)
    hf_err = np.abs(hf_logits(hf16, ids, mask)[real] - fp32)
    # bf16 rounds weights and every activation to 8 mantissa bits over 30 layers, and the logits span
    # about +-30. Tolerance: mean |diff| < 0.25 and max |diff| < 3, and the mean no more than 1.25x that of
    # transformers' own bf16 run on the same weights (measured: both about 0.15-0.2 mean, 1.2-2.4 max,
    # the largest at the first position).
    assert ours_err.mean() < 0.25 and ours_err.max() < 3.0, (ours_err.mean(), ours_err.max())
    assert ours_err.mean() <= 1.25 * hf_err.mean(), (ours_err.mean(), hf_err.mean())
    # And the argmax, what greedy decoding acts on, agrees almost everywhere.
    agree = (ours16.logits(ids, attention_mask=mask).numpy()[real].argmax(-1) == fp32.argmax(-1)).mean()
    assert agree >= 0.9, agree


def test_lora_fine_tune_lowers_the_response_loss(ours, task):
    ds, splits = task
    model = llm4dsr.LlamaModel.from_pretrained("smollm2-135m-instruct")
    # Prompts cut to their last items (max_prompt_tokens) keep the test fast on two cores.
    builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", chat_format="chatml", max_pairs=64,
                                         max_prompt_tokens=64, seed=0)
    data = builder.tokenize(builder.make_pairs(splits.train, ds.catalog), ours.tokenizer)
    held_out_builder = llm4dsr.InstructionBuilder(template="llm4dsr-paper", chat_format="chatml", max_pairs=8,
                                                  max_prompt_tokens=64, seed=1)
    held_out = held_out_builder.tokenize(held_out_builder.make_pairs(splits.valid, ds.catalog), ours.tokenizer)
    assert len(data) == 64 and len(held_out) == 8
    model.add_lora(r=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"], seed=0)
    trainer = llm4dsr.Trainer(model, learning_rate=1e-3, max_steps=4, micro_batch_size=4, warmup_steps=0,
                              pad_token_id=ours.tokenizer.pad_id, seed=0, progress=False)
    before = trainer.evaluate(held_out)
    result = trainer.train(data)
    after = trainer.evaluate(held_out)
    assert result["steps"] == 4
    print(f"LoRA: held-out response loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.1, (before, after)
    # Only the adapters moved: the base weights are those of the file.
    base = ours.model.state_dict()
    for name, t in model.state_dict().items():
        assert torch.equal(t, base[name]), name


def test_finetune_command_lowers_the_validation_response_loss(tmp_path):
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "llm4dsr", "finetune", "--data", "synthetic:users=30,items=120", "--model",
           "smollm2-135m-instruct", "--out", str(out), "--pairs", "40", "--epochs", "1", "--batch-size", "8", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["pairs"] == 40 and summary["steps"] == 5
    assert summary["valid_response_loss_after"] < summary["valid_response_loss_before"], summary
    # The folder is a loadable adapter on the named base.
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    back = llm4dsr.load_pretrained(str(out))
    assert back.format == "adapter" and back.model.has_lora and back.card.chat_format == "chatml"


@pytest.mark.skipif(not llm4dsr.bf16x3_matmul_available(), reason="no bf16 matrix units or no gemm_bf16bf16f32 here")
def test_fp32_logits_under_matmul_precision_high_stay_near_transformers(ours, hf, prompts):
    """torch.set_float32_matmul_precision("high"): our fp32 products of 256 rows or more run as bf16x3."""
    ids, mask = left_pad(prompts, pad=ours.model.config.pad_token_id)
    real = mask.astype(bool)
    ref = hf_logits(hf, ids, mask)[real]  # transformers at "highest": IEEE fp32
    highest = ours.model.logits(ids, attention_mask=mask).numpy()[real]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        high = ours.model.logits(ids, attention_mask=mask).numpy()[real]
        out = ours.model.generate_greedy(prompts, max_new_tokens=NEW_TOKENS)
    finally:
        torch.set_float32_matmul_precision(previous)
    err = np.abs(high - ref)
    # The split products ran (the logits moved off the fp32 ones), and stayed about 10x fp32's own
    # rounding away from transformers: measured max 7e-4 / mean 9e-5 on logits spanning +-43, against
    # max 8e-5 at "highest" and mean ~0.15 for a bf16 model.
    assert np.abs(high - highest).max() > 1e-5
    assert err.max() <= 1e-2 and err.mean() <= 1e-3, (err.max(), err.mean())
    assert (high.argmax(-1) == ref.argmax(-1)).mean() == 1.0
    # Greedy decoding (its steps are single rows: fp32 products) follows the same prompt logits.
    plain = ours.model.generate_greedy(prompts, max_new_tokens=NEW_TOKENS)
    same = [a == b for a, b in zip(out.sequences, plain.sequences)]
    assert sum(same) >= len(same) - 1, same

"""CUDA checks (bf16 on the GPU): logits against transformers, a bf16 LoRA training step against peft, and
the scorer's and generator's flags against the CPU's. They run where torch sees a GPU and skip elsewhere
(CI has none; `scripts/gpu_checks` runs them with the benchmarks on a GPU machine).

bf16 tolerances are stated against a float64 CPU reference of the same weights and against transformers'
(or peft's) own bf16 run on the same GPU: ours may not be much further from the reference than theirs.
Every measured figure is printed (pytest -s) so that a GPU run's log carries them.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

import llm4dsr

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from test_model import CONFIGS, VOCAB, hf_model, left_padded_batch, save_hf  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF = os.path.join(llm4dsr.model_cache_dir(), GGUF_NAME)
needs_smollm2 = pytest.mark.skipif(not os.path.isfile(GGUF), reason=f"{GGUF} is absent")

# fp32 on the GPU (cuBLAS without TF32, the default) against float64: summation order only.
FP32_TOL = 1e-3
# bf16: relative Frobenius error of the logits against the float64 reference at most this ...
BF16_REL_TOL = 5e-2
# ... and at most this multiple of transformers' own bf16 error (plus a floor for near-equal tiny errors).
BF16_OVER_PEER = 1.5
BF16_FLOOR = 2e-3


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cuda_logits_match_transformers_in_fp32_and_bf16(name, tmp_path):
    hf = hf_model(seed=20 + list(CONFIGS).index(name), **CONFIGS[name])
    folder = save_hf(hf, tmp_path)
    lengths = (24, 13, 19)
    ids, mask = left_padded_batch(seed=3, lengths=lengths)
    real = mask.bool()
    # References row by row without pads (a fully masked pad row's NaN would otherwise reach the real
    # positions through 0 * NaN in some transformers versions' eager attention).
    hf64 = copy.deepcopy(hf).double()
    hf16 = copy.deepcopy(hf).to("cuda", torch.bfloat16)
    hf16.config._attn_implementation = "sdpa"
    with torch.no_grad():
        rows = [ids[i, ids.shape[1] - n:].unsqueeze(0) for i, n in enumerate(lengths)]
        ref = torch.cat([hf64(input_ids=r).logits[0] for r in rows])
        peer16 = torch.cat([hf16(input_ids=r.cuda()).logits[0].float().cpu() for r in rows])

    ours32 = llm4dsr.LlamaModel.from_pretrained(folder, device="cuda")
    assert ours32.device.startswith("cuda")
    err32 = (ours32.logits(ids, attention_mask=mask)[real].double() - ref).abs().max().item()

    ours16 = llm4dsr.LlamaModel.from_pretrained(folder, device="cuda", dtype="bfloat16")
    got16 = ours16.logits(ids, attention_mask=mask)[real]
    ours_rel, peer_rel = rel(got16, ref), rel(peer16, ref)
    argmax = (got16.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"\n[cuda parity {name}] fp32 max|diff| {err32:.2e}; bf16 relative error ours {ours_rel:.2e}, "
          f"transformers {peer_rel:.2e}; bf16 argmax agreement {argmax:.3f}")
    assert err32 <= FP32_TOL
    assert ours_rel <= BF16_REL_TOL and ours_rel <= BF16_OVER_PEER * peer_rel + BF16_FLOOR, (ours_rel, peer_rel)
    assert argmax >= 0.85
    # The KV-cache path on the GPU equals the full forward (same kernels, same rounding up to bf16).
    inc = ours16.logits_incremental(ids[:1, -24:], prompt_length=10)[0]
    full = ours16.logits(ids[:1, -24:])[0]
    assert (inc - full).abs().max().item() <= 0.05 * full.abs().max().item()


def test_cuda_bf16_lora_gradients_match_peft_and_a_training_step_learns(tmp_path):
    hf = hf_model(seed=31, **CONFIGS["gqa_untied"])
    folder = save_hf(hf, tmp_path)
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(4))
    weight = torch.randn(4, 32, VOCAB, generator=torch.Generator().manual_seed(5))
    lora = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                init_lora_weights=False)

    ours = llm4dsr.LlamaModel.from_pretrained(folder, device="cuda", dtype="bfloat16")
    ours.add_lora(r=8, alpha=16, dropout=0.0, target_modules="all-linear", seed=0)
    params = ours.lora_parameters()
    g = torch.Generator(device="cuda").manual_seed(6)
    with torch.no_grad():
        for t in params.values():
            assert t.is_cuda and t.dtype == torch.float32  # adapters stay fp32 over bf16 base weights (as PEFT)
            t.copy_(torch.randn(t.shape, generator=g, device="cuda") * 0.05)

    def peft_on(device, dtype):
        base = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
        base.config._attn_implementation = "eager" if device == "cpu" else "sdpa"
        pm = peft.get_peft_model(base, peft.LoraConfig(**lora)).eval()
        named = {n: p for n, p in pm.named_parameters() if "lora_" in n}
        with torch.no_grad():
            for name, t in params.items():
                named[name.replace(".weight", ".default.weight")].copy_(t.to(named[name.replace(".weight", ".default.weight")]))
        (pm(input_ids=ids.to(device)).logits.double() * weight.to(device, torch.float64)).sum().backward()
        return {name: named[name.replace(".weight", ".default.weight")].grad.double().cpu() for name in params}

    reference = peft_on("cpu", torch.float64)
    peer = peft_on("cuda", torch.bfloat16)
    ours.eval()
    (ours.forward(ids).double() * weight.to("cuda", torch.float64)).sum().backward()
    got = {name: t.grad.double().cpu() for name, t in params.items()}
    flat = lambda d: torch.cat([d[k].flatten() for k in sorted(d)])  # noqa: E731
    ref_all = flat(reference)
    ours_rel, peer_rel = rel(flat(got), ref_all), rel(flat(peer), ref_all)
    worst = max(rel(got[k], reference[k]) for k in params)
    print(f"\n[cuda LoRA bf16] gradient relative error ours {ours_rel:.2e}, peft {peer_rel:.2e}; worst tensor "
          f"(ours) {worst:.2e} over {len(params)} adapter tensors")
    assert ours_rel <= BF16_REL_TOL and ours_rel <= BF16_OVER_PEER * peer_rel + BF16_FLOOR, (ours_rel, peer_rel)
    assert worst <= 0.15

    # Trainer steps on the GPU: the loss of a fixed batch falls, the base weights do not move.
    base_before = {k: v.clone() for k, v in ours.state_dict().items()}
    examples = [{"input_ids": row, "labels": row} for row in ids]
    trainer = llm4dsr.Trainer(ours, learning_rate=2e-2, micro_batch_size=4, num_epochs=10, warmup_steps=0,
                              lr_scheduler="constant", max_grad_norm=1.0, progress=False, seed=0)
    before = trainer.evaluate(examples)
    result = trainer.train(examples)
    after = trainer.evaluate(examples)
    print(f"[cuda LoRA bf16] 10 steps: loss {before:.3f} -> {after:.3f}, {result['tokens_per_second']:.0f} tokens/s")
    assert result["steps"] == 10 and after < before - 0.5, (before, after)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    assert all(torch.isfinite(t).all() for t in ours.lora_parameters().values())


@needs_smollm2
def test_cuda_smollm2_logits_and_greedy_against_transformers():
    pytest.importorskip("gguf")
    from test_smollm2 import CHAT_TEXTS, left_pad

    cpu = llm4dsr.load_pretrained("smollm2-135m-instruct")
    chat = llm4dsr.ChatFormat.get("chatml")
    prompts = [cpu.tokenizer.encode(chat.wrap(t)) for t in CHAT_TEXTS]
    ids, mask = left_pad(prompts, pad=cpu.model.config.pad_token_id)
    real = mask.astype(bool)
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(GGUF), gguf_file=GGUF_NAME,
                                                           dtype=torch.float32).eval()
    ref = hf_rows(hf, prompts, "cpu").double()  # row by row, no pads: see the first test

    ours32 = llm4dsr.LlamaModel.from_pretrained(GGUF, device="cuda")
    err32 = (ours32.logits(ids, attention_mask=mask)[torch.as_tensor(real)].double() - ref).abs().max().item()
    ours16 = llm4dsr.LlamaModel.from_pretrained(GGUF, device="cuda", dtype="bfloat16")
    got16 = ours16.logits(ids, attention_mask=mask)[torch.as_tensor(real)].double()
    hf16 = copy.deepcopy(hf).to("cuda", torch.bfloat16)
    peer16 = hf_rows(hf16, prompts, "cuda").double()
    ours_err, peer_err = (got16 - ref).abs(), (peer16 - ref).abs()
    argmax = (got16.argmax(-1) == ref.argmax(-1)).double().mean().item()
    print(f"\n[cuda SmolLM2] fp32 max|diff| {err32:.2e}; bf16 |diff| mean ours {ours_err.mean():.3f} "
          f"(transformers {peer_err.mean():.3f}), max ours {ours_err.max():.3f} (transformers {peer_err.max():.3f}); "
          f"argmax agreement {argmax:.3f}")
    assert err32 <= FP32_TOL
    # The CPU test's bf16 bounds (test_smollm2.test_bf16_logits_are_close_to_fp32).
    assert ours_err.mean() < 0.25 and ours_err.max() < 3.0
    assert ours_err.mean() <= 1.25 * peer_err.mean()
    assert argmax >= 0.9

    # Greedy decoding on the GPU in fp32 gives the CPU's tokens (which test_smollm2 checks against
    # transformers); in bf16 the share of rows identical to transformers' bf16 generate is reported.
    on_cpu = cpu.model.generate_greedy(prompts, max_new_tokens=32).sequences
    on_gpu = ours32.generate_greedy(prompts, max_new_tokens=32).sequences
    assert sum(a == b for a, b in zip(on_cpu, on_gpu)) >= len(prompts) - 1, (on_cpu, on_gpu)
    bf16_rows = ours16.generate_greedy(prompts, max_new_tokens=32).sequences
    agree = sum(a == b for a, b in zip(bf16_rows, on_cpu))
    print(f"[cuda SmolLM2] greedy 32 tokens: fp32 GPU = CPU on {sum(a == b for a, b in zip(on_cpu, on_gpu))}/"
          f"{len(prompts)} prompts; bf16 GPU = fp32 CPU on {agree}/{len(prompts)}")


def hf_rows(model, prompts, device):
    """transformers' logits of each prompt run alone, concatenated: the rows of a left-padded batch's real
    positions, in order."""
    with torch.no_grad():
        return torch.cat([model(input_ids=torch.tensor([p], device=device)).logits[0].float().cpu() for p in prompts])


@needs_smollm2
@pytest.mark.parametrize("mode", ["first-token", "exact"])
def test_cuda_bf16_scores_flags_and_replacements_agree_with_cpu(mode):
    from llm4dsr import pipeline

    ds = llm4dsr.make_synthetic()
    splits = llm4dsr.prepare(ds, noise=0.1, seed=1)
    sequences = [np.asarray(w.items[:-1], dtype=np.int64) for w in splits.test[:96]]
    runs = {}
    for device in ("cpu", "cuda"):
        denoiser = pipeline.build_denoiser("smollm2-135m-instruct", ds.catalog, device=device, dtype="bfloat16",
                                           mode=mode, micro_batch_size=16)
        runs[device] = (denoiser, denoiser.score(sequences))
    cpu_scores, gpu_scores = runs["cpu"][1], runs["cuda"][1]
    eta = runs["cpu"][0].threshold(cpu_scores, 0.9)
    lp_cpu = np.concatenate([s.log_prob for s in cpu_scores])
    lp_gpu = np.concatenate([s.log_prob for s in gpu_scores])
    top1 = np.mean([int(np.argmax(a.prob)) == int(np.argmax(b.prob)) for a, b in zip(cpu_scores, gpu_scores)])
    reports = {d: runs[d][0].correct(sequences, runs[d][1], eta) for d in runs}
    flags = {d: [tuple(sorted(int(x) for x in r.flagged)) for r in reports[d]] for d in reports}
    same_flags = np.mean([a == b for a, b in zip(flags["cpu"], flags["cuda"])])
    flagged_both = [(a, b) for a, b in zip(reports["cpu"], reports["cuda"])
                    if a.corrections and b.corrections and a.corrections[0].position == b.corrections[0].position]
    same_replacement = np.mean([a.corrections[0].replacement_item == b.corrections[0].replacement_item
                                for a, b in flagged_both]) if flagged_both else 1.0
    print(f"\n[cuda vs cpu, bf16, {mode}] {len(sequences)} sequences: log P_noise max|diff| "
          f"{np.abs(lp_cpu - lp_gpu).max():.3f}, mean {np.abs(lp_cpu - lp_gpu).mean():.4f}; top-1 item agreement "
          f"{top1:.3f}; identical flags {same_flags:.3f} ({sum(map(len, flags['cpu']))} flagged on CPU, "
          f"{sum(map(len, flags['cuda']))} on GPU, eta {eta:.4f}); same replacement {same_replacement:.3f} "
          f"of {len(flagged_both)} positions flagged on both")
    assert np.abs(lp_cpu - lp_gpu).mean() < 0.1
    assert top1 >= 0.9 and same_flags >= 0.9
    assert same_replacement >= 0.8


def test_cuda_lora_training_with_dropout_is_seeded_resumable_and_portable(tmp_path):
    """On the GPU, LoRA dropout draws from the CUDA generator: the Trainer seeds it and checkpoints its
    state, so two runs with one seed agree, a killed run resumed on the GPU equals an uninterrupted one,
    and a checkpoint written on the GPU resumes on the CPU (its tensors mapped to the model's device).

    "Agree" is measured against a run with another seed: some CUDA backward kernels (index_select's,
    attention's) sum in a varying order, so two runs are not bit-identical, but their difference must
    be far below what different dropout masks make."""
    hf = hf_model(seed=41, **CONFIGS["gqa_untied"])
    folder = save_hf(hf, tmp_path / "base")
    g = torch.Generator().manual_seed(8)
    data = [{"input_ids": row, "labels": row} for row in torch.randint(3, VOCAB, (32, 24), generator=g)]

    def fresh(device):
        m = llm4dsr.LlamaModel.from_pretrained(folder, device=device, dtype="bfloat16" if device == "cuda" else "float32")
        m.add_lora(r=4, alpha=8, dropout=0.2, target_modules="all-linear", seed=2)
        return m

    def distance(a, b):
        pa, pb = a.lora_parameters(), b.lora_parameters()
        return max((pa[k].cpu() - pb[k].cpu()).abs().max().item() for k in pa)

    opts = dict(learning_rate=2e-3, num_epochs=2, micro_batch_size=4, save_steps=3, progress=False)
    first, second, other = fresh("cuda"), fresh("cuda"), fresh("cuda")
    llm4dsr.Trainer(first, output_dir=str(tmp_path / "a"), seed=11, **opts).train(data)
    llm4dsr.Trainer(second, output_dir=str(tmp_path / "a2"), seed=11, **opts).train(data)
    llm4dsr.Trainer(other, output_dir=str(tmp_path / "a3"), seed=12, **opts).train(data)

    def kill_at_5(progress):
        if progress["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llm4dsr.Trainer(fresh("cuda"), output_dir=str(tmp_path / "b"), seed=11, **opts).train(data, callback=kill_at_5)
    resumed = fresh("cuda")
    out = llm4dsr.Trainer(resumed, output_dir=str(tmp_path / "b"), seed=11, **opts).train(data, resume=True)
    assert out["resumed_from_step"] == 3
    same, resume, seeds = distance(first, second), distance(first, resumed), distance(first, other)
    print(f"\n[cuda LoRA dropout] max |diff| of the adapters: same seed {same:.2e}, killed and resumed {resume:.2e}, "
          f"another seed {seeds:.2e}")
    assert seeds > 0 and same <= 0.1 * seeds and resume <= 0.1 * seeds

    with pytest.raises(KeyboardInterrupt):
        llm4dsr.Trainer(fresh("cuda"), output_dir=str(tmp_path / "c"), seed=11, **opts).train(data, callback=kill_at_5)
    on_cpu = fresh("cpu")
    out = llm4dsr.Trainer(on_cpu, output_dir=str(tmp_path / "c"), seed=11, **opts).train(data, resume=True)
    assert out["resumed_from_step"] == 3 and out["steps"] == 16
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in on_cpu.lora_parameters().values())

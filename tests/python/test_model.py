"""Parity of llm4dsr.LlamaModel with transformers' LlamaForCausalLM and peft's LoRA (test oracles).

Every model is tiny (hidden 64, 2-3 layers, vocab ~300) and built offline from a LlamaConfig; weights
are re-drawn with a larger spread than HF's 0.02 init so logits are O(1) and a wrong rotation,
normalisation or head grouping shows up far above the 1e-4 tolerance.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import llm4dsr

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB = 300
TOL = 1e-4

CONFIGS = {
    "gqa_untied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    "tied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True, num_hidden_layers=3),
    "llama3_rope": dict(
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        max_position_embeddings=512,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        rope_theta=500000.0,
    ),
    "linear_rope_bias": dict(
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=48,  # head_dim * heads != hidden_size
        rope_scaling={"rope_type": "linear", "factor": 4.0},
        attention_bias=True,
        mlp_bias=True,
    ),
}


def hf_model(seed: int = 0, **overrides):
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    )
    kwargs.update(overrides)
    config = transformers.LlamaConfig(**kwargs)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return model


def save_hf(model, path) -> str:
    model.save_pretrained(path, safe_serialization=True)
    return str(path)


def hf_logits(model, ids, mask=None, position_ids=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits.float()


def left_padded_batch(seed=0, lengths=(12, 7, 10)):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, T - n :] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[i, T - n :] = 1
    return ids, mask


def hf_position_ids(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(name, HF model, our model loaded from the HF folder, folder)."""
    hf = hf_model(seed=list(CONFIGS).index(request.param), **CONFIGS[request.param])
    folder = save_hf(hf, tmp_path_factory.mktemp(request.param))
    ours = llm4dsr.LlamaModel.from_pretrained(folder)
    return request.param, hf, ours, folder


def test_logits_match_transformers(pair):
    name, hf, ours, _ = pair
    ids = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    expected = hf_logits(hf, ids)
    got = ours.logits(ids)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert expected.std() > 0.5  # a meaningful scale for the tolerance below
    assert (got - expected).abs().max().item() <= TOL, name


def test_config_fields_read_from_hf(pair):
    name, hf, ours, _ = pair
    c = ours.config
    assert c.num_key_value_heads == hf.config.num_key_value_heads
    assert c.head_dim == hf.config.head_dim
    assert c.tie_word_embeddings == hf.config.tie_word_embeddings
    if name == "llama3_rope":
        assert c.rope_scaling.rope_type == "llama3" and c.rope_scaling.factor == 8.0
        assert c.rope_theta == 500000.0


def test_left_padded_batch_matches_transformers_and_unpadded_rows(pair):
    name, hf, ours, _ = pair
    ids, mask = left_padded_batch()
    expected = hf_logits(hf, ids, mask, hf_position_ids(mask))
    got = ours.logits(ids, attention_mask=mask)
    keep = mask.bool()
    assert (got[keep] - expected[keep]).abs().max().item() <= TOL
    assert torch.isfinite(got).all()
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        alone = ours.logits(ids[row, -n:].unsqueeze(0))
        assert (got[row, -n:] - alone[0]).abs().max().item() <= 1e-5


def test_kv_cache_decoding_equals_full_forward(pair):
    _, hf, ours, _ = pair
    ids, mask = left_padded_batch(seed=3)
    full = ours.logits(ids, attention_mask=mask)
    for prompt in (1, 5):
        inc = ours.logits_incremental(ids, attention_mask=mask, prompt_length=prompt)
        keep = mask.bool()
        assert (inc[keep] - full[keep]).abs().max().item() <= 1e-5
    # And against HF's own cached decoding of an unpadded sequence.
    seq = ids[:1, -12:]
    with torch.no_grad():
        out = hf(input_ids=seq[:, :6], use_cache=True)
        past, steps = out.past_key_values, [out.logits]
        for t in range(6, seq.shape[1]):
            out = hf(input_ids=seq[:, t : t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    expected = torch.cat(steps, 1).float()
    assert (ours.logits_incremental(seq, prompt_length=6) - expected).abs().max().item() <= TOL


def test_logits_at_positions_and_hidden_states(pair):
    _, hf, ours, _ = pair
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    full = ours.logits(ids)
    last = ours.logits(ids, positions=torch.tensor([-1]))
    assert last.shape == (2, 1, VOCAB)
    assert (last[:, 0] - full[:, -1]).abs().max().item() <= 1e-5  # a different matmul shape may round differently
    with torch.no_grad():
        hf_hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert (ours.hidden_states(ids) - hf_hidden).abs().max().item() <= TOL


def test_our_save_pretrained_loads_in_transformers(pair, tmp_path):
    name, hf, ours, _ = pair
    ours.save_pretrained(str(tmp_path / "ours"))
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    reloaded = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "ours")).eval()
    assert reloaded.config.tie_word_embeddings == hf.config.tie_word_embeddings
    ids = torch.randint(0, VOCAB, (2, 30), generator=torch.Generator().manual_seed(5))
    assert (hf_logits(reloaded, ids) - ours.logits(ids)).abs().max().item() <= TOL
    assert (hf_logits(reloaded, ids) - hf_logits(hf, ids)).abs().max().item() <= TOL


def test_full_model_gradients_match_transformers(pair):
    """Every base parameter's gradient (no LoRA: RMSNorm, RoPE and attention backward, tied lm_head)."""
    name, hf, _, folder = pair
    ours = llm4dsr.LlamaModel.from_pretrained(folder)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(12))
    weight = torch.randn(2, 20, VOCAB, generator=torch.Generator().manual_seed(13))
    hf.zero_grad(set_to_none=True)
    (ours.forward(ids) * weight).sum().backward()
    (hf(input_ids=ids).logits * weight).sum().backward()
    expected = dict(hf.named_parameters())
    got = ours.state_dict()
    assert set(got) <= set(expected)
    for key, p in got.items():
        ref = expected[key].grad
        assert p.grad is not None and ref is not None, key
        scale = ref.abs().max().item()
        assert scale > 0, key
        assert (p.grad - ref).abs().max().item() <= 1e-4 * max(1.0, scale), (name, key)
    hf.zero_grad(set_to_none=True)


@pytest.fixture
def fp32_gemm():
    """Sets llm4dsr's fp32 GEMM library for one test and puts the previous one back."""
    before = llm4dsr.fp32_gemm()
    yield llm4dsr.set_fp32_gemm
    llm4dsr.set_fp32_gemm(before)


@pytest.mark.parametrize("library", ["aten", "onednn"])
def test_each_fp32_gemm_library_matches_transformers(pair, fp32_gemm, library):
    """Logits and every base parameter's gradient against transformers with either library running our
    fp32 products (the default picks one by CPU vendor, so a machine runs only one of them otherwise)."""
    name, hf, _, folder = pair
    fp32_gemm(library)
    assert llm4dsr.fp32_gemm() == library
    ours = llm4dsr.LlamaModel.from_pretrained(folder)
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(21))
    assert (ours.logits(ids) - hf_logits(hf, ids)).abs().max().item() <= TOL, name
    weight = torch.randn(2, 24, VOCAB, generator=torch.Generator().manual_seed(22))
    hf.zero_grad(set_to_none=True)
    (ours.forward(ids) * weight).sum().backward()
    (hf(input_ids=ids).logits * weight).sum().backward()
    expected = dict(hf.named_parameters())
    for key, p in ours.state_dict().items():
        ref = expected[key].grad
        assert p.grad is not None and ref is not None, key
        assert (p.grad - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item()), (name, library, key)
    hf.zero_grad(set_to_none=True)


def test_fp32_gemm_setting_names_and_errors(fp32_gemm):
    fp32_gemm("auto")
    assert llm4dsr.fp32_gemm() in ("onednn", "aten")  # resolved
    with pytest.raises(llm4dsr.Error, match="unknown fp32 GEMM library 'mkl'"):
        fp32_gemm("mkl")


def test_bf16_gradients_on_cpu_are_close_to_transformers_in_fp32(pair):
    """bf16 training's backward (RoPE rotated straight into fp32 for attention, the one-pass SwiGLU, fp32
    attention, bf16 products): every base parameter's gradient within bf16 accuracy of transformers'
    fp32 gradients on the same bf16-rounded weights."""
    name, _, _, folder = pair
    ours = llm4dsr.LlamaModel.from_pretrained(folder, dtype="bfloat16")
    hf = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    hf.config._attn_implementation = "eager"
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(14))
    weight = torch.randn(2, 20, VOCAB, generator=torch.Generator().manual_seed(15))
    (ours.forward(ids).float() * weight).sum().backward()
    (hf(input_ids=ids).logits * weight).sum().backward()
    expected = dict(hf.named_parameters())
    for key, p in ours.state_dict().items():
        ref = expected[key].grad
        assert p.grad is not None and p.grad.dtype == torch.bfloat16, key
        # Relative to the whole gradient's norm: bf16 rounds every activation to 8 significant bits, and
        # errors of a few per cent compound over the layers; a wrong rotation or activation gradient is
        # off by tens of per cent.
        err = ((p.grad.float() - ref).norm() / ref.norm()).item()
        assert err <= 0.05, (name, key, err)


def test_bf16_on_cpu_is_close_to_fp32(pair):
    _, _, ours32, folder = pair
    ours16 = llm4dsr.LlamaModel.from_pretrained(folder, dtype="bfloat16")
    assert ours16.dtype == "bfloat16"
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(6))
    ref = ours32.logits(ids)
    got = ours16.logits(ids)
    # bf16 keeps 8 bits of mantissa and rounds after every layer: measured max |diff| is 2-4% of max |logit|
    # on these models; allow 8%, and the same top-1 token at >= 85% of positions (measured 91-99%).
    assert (got - ref).abs().max().item() <= 0.08 * ref.abs().max().item()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.85
    # Without the oneDNN-reordered weight copies: the same products read from the weights themselves.
    assert ours16.weight_packing
    ours16.weight_packing = False
    assert not ours16.weight_packing
    unpacked = ours16.logits(ids)
    assert (unpacked - got).abs().max().item() <= 0.05 * ref.abs().max().item()
    assert (unpacked - ref).abs().max().item() <= 0.08 * ref.abs().max().item()


def test_sharded_checkpoint_loads(tmp_path):
    hf = hf_model(seed=23, **CONFIGS["gqa_untied"])
    hf.save_pretrained(str(tmp_path), max_shard_size="60KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(24))
    got = llm4dsr.LlamaModel.from_pretrained(str(tmp_path)).logits(ids)
    assert (got - hf_logits(hf, ids)).abs().max().item() <= TOL


def test_dynamic_rope_matches_transformers_beyond_max_positions(tmp_path):
    # NTK-aware scaling only changes frequencies once a sequence exceeds max_position_embeddings.
    hf = hf_model(seed=21, max_position_embeddings=24, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    ours = llm4dsr.LlamaModel.from_pretrained(save_hf(hf, tmp_path / "dyn"))
    assert ours.config.rope_scaling.rope_type == "dynamic"
    ids = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(22))
    plain = llm4dsr.LlamaModel.from_pretrained(save_hf(hf_model(seed=21, max_position_embeddings=24), tmp_path / "p"))
    assert (ours.logits(ids) - plain.logits(ids)).abs().max().item() > 1e-2
    assert (ours.logits(ids) - hf_logits(hf, ids)).abs().max().item() <= TOL


# --- LoRA / PEFT -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    hf = hf_model(seed=11, **CONFIGS["gqa_untied"])
    return save_hf(hf, tmp_path_factory.mktemp("base"))


def fresh_hf(folder):
    model = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    model.config._attn_implementation = "eager"
    return model


def peft_model(folder, targets, r=4, alpha=8, use_rslora=False):
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=targets,
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # B != 0, so the adapter changes outputs
        use_rslora=use_rslora,
    )
    torch.manual_seed(0)
    return peft.get_peft_model(fresh_hf(folder), config).eval()


@pytest.mark.parametrize(
    "targets,use_rslora", [(["q_proj", "v_proj"], False), ("all-linear", True), (["k_proj", "down_proj"], False)]
)
def test_peft_adapter_written_by_peft_loads_into_ours(base_folder, tmp_path, targets, use_rslora):
    pm = peft_model(base_folder, targets, use_rslora=use_rslora)
    pm.save_pretrained(str(tmp_path / "adapter"))
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = pm(input_ids=ids).logits.float()
    ours = llm4dsr.LlamaModel.from_pretrained(base_folder)
    base = ours.logits(ids)
    ours.load_adapter(str(tmp_path / "adapter"))
    assert ours.has_lora and ours.lora_config.use_rslora == use_rslora
    got = ours.logits(ids)
    assert (got - base).abs().max().item() > 1e-2  # the adapter matters
    assert (got - expected).abs().max().item() <= TOL
    # Merged weights give the same outputs, and unmerging restores the base weights.
    w = ours.state_dict()["model.layers.0.self_attn.q_proj.weight"].clone()
    ours.merge_lora()
    assert (ours.logits(ids) - expected).abs().max().item() <= TOL
    ours.unmerge_lora()
    assert (ours.state_dict()["model.layers.0.self_attn.q_proj.weight"] - w).abs().max().item() <= 1e-6


def test_our_adapter_loads_into_peft(base_folder, tmp_path):
    ours = llm4dsr.LlamaModel.from_pretrained(base_folder)
    ours.add_lora(r=4, alpha=16, dropout=0.0, target_modules=["q_proj", "o_proj", "up_proj"], seed=3)
    with torch.no_grad():
        for name, t in ours.lora_parameters().items():
            if "lora_B" in name:
                t.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    ours.save_adapter(str(tmp_path / "ours_adapter"), base_model_name_or_path=base_folder)
    cfg = json.loads((tmp_path / "ours_adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 4
    pm = peft.PeftModel.from_pretrained(fresh_hf(base_folder), str(tmp_path / "ours_adapter")).eval()
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = pm(input_ids=ids).logits.float()
    assert (ours.logits(ids) - expected).abs().max().item() <= TOL
    # PEFT names and shapes: lora_A [r, in], lora_B [out, r].
    st = safetensors_torch.load_file(str(tmp_path / "ours_adapter" / "adapter_model.safetensors"))
    assert st["base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"].shape == (4, 64)
    assert st["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"].shape == (128, 4)


def test_fresh_lora_is_a_no_op_and_gradients_match_peft(base_folder):
    ours = llm4dsr.LlamaModel.from_pretrained(base_folder)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(9))
    base = ours.logits(ids)
    ours.add_lora(r=8, alpha=16, dropout=0.05, seed=0)  # defaults: q_proj, v_proj
    assert torch.equal(ours.logits(ids), base)  # B = 0
    params = ours.lora_parameters()
    assert len(params) == 2 * 2 * 2
    a = params["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.shape == (8, 64) and a.abs().max() <= 1 / 8 and a.abs().max() > 0  # kaiming_uniform(a=sqrt 5): 1/sqrt(in)
    assert all(p.requires_grad for p in params.values())
    assert not any(p.requires_grad for p in ours.state_dict().values())

    # Same adapter weights in PEFT; compare gradients of a loss on the logits.
    pm = peft_model(base_folder, ["q_proj", "v_proj"], r=8, alpha=16)
    with torch.no_grad():
        peft_params = {n: p for n, p in pm.named_parameters() if "lora_" in n}
        for name, p in params.items():
            p.normal_(0.0, 0.05)
            peft_params[name.replace(".weight", ".default.weight")].copy_(p)
    ours.eval()
    weight = torch.randn(2, 16, VOCAB, generator=torch.Generator().manual_seed(10))
    (ours.forward(ids) * weight).sum().backward()
    (pm(input_ids=ids).logits * weight).sum().backward()
    for name, p in params.items():
        ref = peft_params[name.replace(".weight", ".default.weight")].grad
        assert p.grad is not None and ref is not None
        assert torch.allclose(p.grad, ref, atol=1e-4, rtol=1e-3), name


def test_dropout_only_in_training_mode(base_folder):
    ours = llm4dsr.LlamaModel.from_pretrained(base_folder)
    ours.add_lora(r=4, alpha=8, dropout=0.5, target_modules="all-linear")
    with torch.no_grad():
        for name, t in ours.lora_parameters().items():
            if "lora_B" in name:
                t.fill_(0.05)
    ids = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(12))
    ours.eval()
    assert torch.equal(ours.logits(ids), ours.logits(ids))
    ours.train()
    assert ours.training
    assert not torch.equal(ours.logits(ids), ours.logits(ids))
    ours.eval()


def test_bad_adapter_and_checkpoint_raise_llm4dsr_error(base_folder, tmp_path):
    ours = llm4dsr.LlamaModel.from_pretrained(base_folder)
    with pytest.raises(llm4dsr.Error, match="adapter_config.json"):
        ours.load_adapter(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": ["q_proj"], "bias": "all"}))
    safetensors_torch.save_file({}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(llm4dsr.Error, match="bias"):
        ours.load_adapter(str(tmp_path))
    with pytest.raises(llm4dsr.Error, match="config.json"):
        llm4dsr.LlamaModel.from_pretrained(str(tmp_path))
    # A checkpoint with a wrongly shaped tensor names it.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(open(f"{base_folder}/config.json").read())
    weights = safetensors_torch.load_file(f"{base_folder}/model.safetensors")
    weights["model.norm.weight"] = torch.ones(3)
    safetensors_torch.save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(llm4dsr.Error, match=r"model\.norm\.weight.*\[3\].*\[64\]"):
        llm4dsr.LlamaModel.from_pretrained(str(bad))


# --- safetensors interop -------------------------------------------------------------------------------


def interop_tensors():
    g = torch.Generator().manual_seed(13)
    return {
        "f64": torch.randn(3, 2, dtype=torch.float64, generator=g),
        "f32": torch.randn(4, 5, generator=g),
        "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "i64": torch.randint(-(10**12), 10**12, (5,), generator=g),
        "i32": torch.randint(-1000, 1000, (2, 2), generator=g, dtype=torch.int32),
        "i16": torch.randint(-1000, 1000, (3,), generator=g, dtype=torch.int16),
        "i8": torch.randint(-100, 100, (3,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (4,), generator=g, dtype=torch.uint8),
        "bool": torch.randint(0, 2, (6,), generator=g).bool(),
        "empty": torch.zeros(0, 3),
    }


def test_safetensors_written_by_the_package_load_in_ours(tmp_path):
    tensors = interop_tensors()
    path = str(tmp_path / "theirs.safetensors")
    safetensors_torch.save_file(tensors, path, metadata={"format": "pt"})
    got = llm4dsr.load_safetensors(path)
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_safetensors_written_by_ours_load_in_the_package(tmp_path):
    tensors = interop_tensors()
    path = str(tmp_path / "ours.safetensors")
    llm4dsr.save_safetensors(path, tensors, {"source": "llm4dsr"})
    got = safetensors_torch.load_file(path)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "source": "llm4dsr"}


def test_inputs_as_numpy_and_lists():
    model = llm4dsr.LlamaModel(llm4dsr.ModelConfig.preset("tiny", VOCAB), seed=2)
    ids = np.array([[5, 6, 7, 8]], dtype=np.int64)
    a = model.logits(ids)
    assert torch.equal(a, model.logits(torch.from_numpy(ids)))
    assert torch.equal(a, model.logits([[5, 6, 7, 8]]))
    with pytest.raises(llm4dsr.Error):
        model.logits(np.zeros((1, 2, 3), dtype=np.int64))

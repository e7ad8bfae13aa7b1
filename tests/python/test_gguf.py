"""llm4dsr.GGUFFile against gguf-py (the reference reader and dequantiser of the llama.cpp project).

Every supported ggml type is checked bit for bit (float32 results compared as uint32) on random
blocks written with gguf.GGUFWriter: data quantised by gguf.quants.quantize where gguf-py can
quantise the type, and random bytes with finite fp16 scales for every type (all bit patterns of the
quant fields, scales drawn from every finite fp16 value, subnormals included). The real SmolLM2 file,
when present, is compared tensor by tensor and key by key.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import llm4dsr

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

# Byte offsets of the fp16 scale fields (d, dmin, m) inside one block, from gguf-py's quants.py.
SCALE_OFFSETS = {
    Q.Q4_0: [0],
    Q.Q4_1: [0, 2],
    Q.Q5_0: [0],
    Q.Q5_1: [0, 2],
    Q.Q8_0: [0],
    Q.Q2_K: [80, 82],
    Q.Q3_K: [108],
    Q.Q4_K: [0, 2],
    Q.Q5_K: [0, 2],
    Q.Q6_K: [208],
}
QUANTIZABLE = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]  # gguf-py has quantize_blocks for these
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_cache() -> Path:
    env = os.environ.get("LLM4DSR_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llm4dsr" / "models"


def finite_f16_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random fp16 bit patterns drawn uniformly from the finite ones (any sign, subnormals, 65504)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    exp_all_ones = (bits & 0x7C00) == 0x7C00
    bits[exp_all_ones] &= np.uint16(0xBFFF)  # clear the top exponent bit: finite
    return bits


def random_blocks(rng: np.random.Generator, qtype, rows: int, cols: int) -> np.ndarray:
    """Random bytes for a (rows, cols) tensor of qtype, with finite scales; byte shape (rows, bytes)."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        raw[:, off:off + 2] = finite_f16_bits(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, cols // block * type_size)


def write_gguf(path: Path, tensors: list[tuple[str, np.ndarray, object]], metadata=None) -> None:
    w = gguf.GGUFWriter(str(path), arch="llama")
    for key, (kind, value) in (metadata or {}).items():
        getattr(w, f"add_{kind}")(key, value)
    for name, data, qtype in tensors:
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def assert_bit_equal(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == np.float32 and ref.dtype == np.float32, what
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    diff = ours.view(np.uint32) != ref.view(np.uint32)
    if diff.any():
        i = np.flatnonzero(diff.ravel())[0]
        raise AssertionError(f"{what}: {diff.sum()} of {diff.size} values differ; first at flat index {i}: "
                             f"ours {ours.ravel()[i]!r} vs gguf {ref.ravel()[i]!r}")


def compare_all_tensors(path: Path, r=None) -> int:
    f = llm4dsr.GGUFFile(str(path))
    r = r or gguf.GGUFReader(str(path))
    assert f.tensor_names == [t.name for t in r.tensors]
    for t in r.tensors:
        info = f.tensor_info(t.name)
        assert info.type == t.tensor_type.name
        assert info.ne == tuple(int(x) for x in t.shape)
        assert info.shape == tuple(reversed(info.ne))
        assert info.n_elements == t.n_elements
        assert info.n_bytes == t.n_bytes
        assert info.file_offset == t.data_offset
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        assert_bit_equal(f.dequantize(t.name), np.asarray(ref, dtype=np.float32), f"{path.name}:{t.name}")
    return len(r.tensors)


@pytest.mark.parametrize("qtype", list(SCALE_OFFSETS), ids=lambda q: q.name)
def test_random_blocks_bit_exact(tmp_path, qtype):
    rng = np.random.default_rng(1000 + int(qtype))
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    tensors = [
        ("raw.2d", random_blocks(rng, qtype, 7, 3 * block), qtype),
        # 3-D: shape order and row-major layout of more than one leading dimension
        ("raw.3d", random_blocks(rng, qtype, 2 * 3, 2 * block).reshape(2, 3, -1), qtype),
    ]
    if qtype in QUANTIZABLE:
        data = (rng.standard_normal((5, 4 * block)) * rng.uniform(0.01, 10, (5, 1))).astype(np.float32)
        data[0, :block] = 0.0  # an all-zero block (d = 0)
        tensors.append(("quantized", gguf.quants.quantize(data, qtype), qtype))
    path = tmp_path / f"{qtype.name}.gguf"
    write_gguf(path, tensors)
    assert compare_all_tensors(path) == len(tensors)
    f = llm4dsr.GGUFFile(str(path))
    assert f.tensor_info("raw.3d").shape == (2, 3, 2 * block)


def test_float_types_bit_exact(tmp_path):
    rng = np.random.default_rng(7)
    every_f16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)
    every_bf16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.uint8).reshape(256, 512)
    f32 = rng.standard_normal((3, 5, 7)).astype(np.float32)
    f32.ravel()[:6] = [np.inf, -np.inf, np.nan, -0.0, 1e-45, np.finfo(np.float32).max]
    path = tmp_path / "floats.gguf"
    write_gguf(path, [("f16", every_f16, None), ("bf16", every_bf16, Q.BF16), ("f32", f32, None)])
    assert compare_all_tensors(path) == 3
    f = llm4dsr.GGUFFile(str(path))
    assert f.tensor_info("bf16").type == "BF16"
    assert f.tensor_info("bf16").shape == (256, 256)
    assert f.tensor_info(b"bf16").shape == (256, 256)  # names as bytes too
    with pytest.raises(TypeError, match="expected str or bytes, got int"):
        f.tensor_info(3)
    assert_bit_equal(f.dequantize("f32"), f32, "f32 round trip")


def test_metadata_of_every_type(tmp_path):
    md = {
        "t.u8": ("uint8", 255),
        "t.i8": ("int8", -128),
        "t.u16": ("uint16", 65535),
        "t.i16": ("int16", -32768),
        "t.u32": ("uint32", 4_000_000_000),
        "t.i32": ("int32", -2_000_000_000),
        "t.u64": ("uint64", 2**64 - 1),
        "t.i64": ("int64", -(2**63)),
        "t.f32": ("float32", 0.1),
        "t.f64": ("float64", -1e-300),
        "t.bool": ("bool", True),
        "t.false": ("bool", False),
        "t.str": ("string", "héllo ✓ 🙂"),
        "t.strs": ("array", ["a", "bc", "✓"]),
        "t.ints": ("array", [1, -2, 3]),
        "t.floats": ("array", [0.5, -1.25]),
        "t.nested": ("array", [[1, 2], [3, 4, 5]]),
    }
    path = tmp_path / "meta.gguf"
    write_gguf(path, [("x", np.zeros(4, np.float32), None)], md)
    f = llm4dsr.GGUFFile(str(path))
    r = gguf.GGUFReader(str(path))
    meta = f.metadata
    expected_keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert list(meta) == expected_keys
    for key in expected_keys:
        field = r.fields[key]
        if key == "t.nested":  # gguf-py flattens nested arrays; we keep the structure
            assert meta[key] == [[1, 2], [3, 4, 5]]
            assert [v for sub in meta[key] for v in sub] == field.contents()
        else:
            assert meta[key] == field.contents(), key
        assert type(meta[key]) is type(field.contents()), key
        assert f.value_type(key) == reader_type(field), key
    assert meta["t.u64"] == 2**64 - 1
    assert meta["t.f32"] == float(np.float32(0.1))
    assert meta["t.str"] == "héllo ✓ 🙂"
    assert f.version == 3 and f.alignment == 32


def reader_type(field) -> str:
    """gguf-py's type list [ARRAY, ARRAY, INT32] as our description ARRAY[ARRAY[INT32]]."""
    names = [t.name for t in field.types]
    out = names[-1]
    for _ in names[:-1]:
        out = f"ARRAY[{out}]"
    return out


def test_errors_name_file_key_and_type(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "iq.gguf"
    iq = rng.integers(0, 256, size=(2, 18), dtype=np.uint8)
    iq[:, :2] = finite_f16_bits(rng, 2).view(np.uint8).reshape(2, 2)
    write_gguf(path, [("w", iq, Q.IQ4_NL)], {"name": ("string", "x")})
    f = llm4dsr.GGUFFile(str(path))
    assert f.tensor_info("w").type == "IQ4_NL"
    with pytest.raises(llm4dsr.Error, match="IQ4_NL"):
        f.dequantize("w")
    with pytest.raises(llm4dsr.Error, match="has no tensor 'nope'"):
        f.dequantize("nope")
    with pytest.raises(llm4dsr.Error, match="has no metadata key 'nope'"):
        f.value_type("nope")

    data = path.read_bytes()
    data_end = f.tensor_info("w").file_offset + f.tensor_info("w").n_bytes  # the writer pads after it
    for cut in (0, 3, 10, 30, len(data) // 2, data_end - 1):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(llm4dsr.Error, match=str(bad)):
            llm4dsr.GGUFFile(str(bad))
    bad = tmp_path / "magic.gguf"
    bad.write_bytes(b"GGML" + data[4:])
    with pytest.raises(llm4dsr.Error, match="bad magic"):
        llm4dsr.GGUFFile(str(bad))
    with pytest.raises(llm4dsr.Error, match="cannot open"):
        llm4dsr.GGUFFile(str(tmp_path / "absent.gguf"))


@pytest.fixture(scope="module")
def smollm2():
    """(path, gguf.GGUFReader) of the real model file; the reader is slow to open, so once per module."""
    path = model_cache() / MODEL_FILE
    if not path.is_file():
        pytest.skip(f"{path} is absent (scripts/setup downloads it)")
    return path, gguf.GGUFReader(str(path))


def test_smollm2_every_tensor_bit_exact(smollm2):
    smollm2_path, reader = smollm2
    assert compare_all_tensors(smollm2_path, reader) == 272
    f = llm4dsr.GGUFFile(str(smollm2_path))
    assert f.tensor_info("token_embd.weight").shape == (49152, 576)
    assert f.tensor_info("blk.0.attn_k.weight").shape == (192, 576)
    assert f.tensor_info("blk.0.ffn_down.weight").shape == (576, 1536)


def test_smollm2_metadata_equal(smollm2):
    smollm2_path, r = smollm2
    f = llm4dsr.GGUFFile(str(smollm2_path))
    meta = f.metadata
    assert list(meta) == [k for k in r.fields if not k.startswith("GGUF.")]
    for key, value in meta.items():
        assert value == r.fields[key].contents(), key
        assert f.value_type(key) == reader_type(r.fields[key]), key
    assert f.version == 3
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 30
    assert meta["llama.embedding_length"] == 576
    assert meta["llama.attention.head_count"] == 9
    assert meta["llama.attention.head_count_kv"] == 3
    assert len(meta["tokenizer.ggml.tokens"]) == 49152


# --- Llama mapping: ModelConfig and HF state dict against transformers' GGUF loader ---------------

def transformers_from_gguf(path: Path):
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    return model


def assert_state_dicts_equal(ours: dict, model) -> None:
    ref = model.state_dict()
    tied = model.config.tie_word_embeddings
    expected = {k for k in ref if not (tied and k == "lm_head.weight") and not k.endswith("rotary_emb.inv_freq")}
    assert set(ours) == expected
    for name, t in ours.items():
        r = ref[name]
        assert t.dtype == r.dtype and t.shape == r.shape, name
        assert torch_equal_bits(t, r), name


def torch_equal_bits(a, b) -> bool:
    import torch
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def assert_config_matches(ours, ref) -> None:
    assert ours.vocab_size == ref.vocab_size
    assert ours.hidden_size == ref.hidden_size
    assert ours.intermediate_size == ref.intermediate_size
    assert ours.num_hidden_layers == ref.num_hidden_layers
    assert ours.num_attention_heads == ref.num_attention_heads
    assert ours.num_key_value_heads == ref.num_key_value_heads
    assert ours.head_dim == ref.head_dim
    assert ours.max_position_embeddings == ref.max_position_embeddings
    assert ours.rms_norm_eps == ref.rms_norm_eps
    rope_theta = ref.rope_parameters["rope_theta"] if getattr(ref, "rope_parameters", None) else ref.rope_theta
    assert ours.rope_theta == rope_theta
    assert ours.tie_word_embeddings == ref.tie_word_embeddings
    assert ours.bos_token_id == ref.bos_token_id
    assert list(ours.eos_token_ids) == [ref.eos_token_id]
    assert ours.pad_token_id == (ref.pad_token_id if ref.pad_token_id is not None else -1)


def write_tiny_llama(path: Path, rng: np.random.Generator) -> None:
    """2 layers, hidden 256, 4 query heads over 2 KV heads (head_dim 64), untied lm_head, every type."""
    hidden, inter, vocab, heads, kv_heads, head_dim = 256, 512, 96, 4, 2, 64
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("tiny")
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_block_count(2)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(vocab)
    w.add_bos_token_id(5)
    w.add_eos_token_id(6)

    def add(name, shape, qtype):
        data = rng.standard_normal(shape).astype(np.float32)
        if qtype in (None, Q.F32):
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        elif qtype in QUANTIZABLE:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:  # K-quants: random blocks with finite scales
            w.add_tensor(name, random_blocks(rng, qtype, shape[0], shape[1]), raw_dtype=qtype)

    add("token_embd.weight", (vocab, hidden), Q.Q8_0)
    add("output.weight", (vocab, hidden), Q.Q6_K)
    add("output_norm.weight", (hidden,), None)
    for i in range(2):
        add(f"blk.{i}.attn_q.weight", (heads * head_dim, hidden), Q.Q4_K if i == 0 else Q.F16)
        add(f"blk.{i}.attn_k.weight", (kv_heads * head_dim, hidden), Q.Q5_K if i == 0 else Q.Q4_0)
        add(f"blk.{i}.attn_v.weight", (kv_heads * head_dim, hidden), Q.Q3_K)
        add(f"blk.{i}.attn_output.weight", (hidden, heads * head_dim), Q.Q2_K)
        add(f"blk.{i}.ffn_gate.weight", (inter, hidden), Q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (inter, hidden), Q.Q5_0)
        add(f"blk.{i}.ffn_down.weight", (hidden, inter), Q.Q5_1)
        add(f"blk.{i}.attn_norm.weight", (hidden,), None)
        add(f"blk.{i}.ffn_norm.weight", (hidden,), None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_tiny_llama_state_dict_equals_transformers(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path, np.random.default_rng(11))
    f = llm4dsr.GGUFFile(str(path))
    ref = transformers_from_gguf(path)
    cfg = f.model_config()
    assert_config_matches(cfg, ref.config)
    assert cfg.tie_word_embeddings is False and cfg.num_key_value_heads == 2
    assert_state_dicts_equal(f.hf_state_dict(), ref)
    # The permutation is not the identity: q_proj differs from the raw GGUF rows.
    raw_q = f.dequantize("blk.0.attn_q.weight")
    assert not np.array_equal(f.hf_state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy(), raw_q)
    bf16 = f.hf_state_dict("bfloat16")
    import torch
    assert bf16["model.norm.weight"].dtype == torch.bfloat16


def test_smollm2_state_dict_equals_transformers(smollm2):
    path, _ = smollm2
    f = llm4dsr.GGUFFile(str(path))
    ref = transformers_from_gguf(path)
    cfg = f.model_config()
    assert_config_matches(cfg, ref.config)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (576, 30, 9, 3)
    assert cfg.tie_word_embeddings is True
    assert_state_dicts_equal(f.hf_state_dict(), ref)


def test_non_utf8_strings_round_trip(tmp_path):
    """Bytes that are not UTF-8 (corrupt or legacy files) come back as lone surrogates, losslessly."""
    path = tmp_path / "bytes.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_key_value("raw", b"ok\xff\xfe", gguf.GGUFValueType.STRING)
    w.add_tensor(b"t\xff", np.arange(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = llm4dsr.GGUFFile(str(path))
    value = f.metadata["raw"]
    assert value.encode("utf-8", "surrogateescape") == b"ok\xff\xfe"
    (name,) = f.tensor_names
    assert name.encode("utf-8", "surrogateescape") == b"t\xff"
    assert name in f and b"t\xff" in f
    assert f.tensor_info(name).name == name
    assert f.dequantize(name).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert f.dequantize(b"t\xff").tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(TypeError):
        f.dequantize(3)

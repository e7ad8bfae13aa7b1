"""Training a small Llama from scratch, for users with no pretrained model: a sentencepiece tokenizer
and a model of a named preset, both learnt from the dataset's own text (catalogue titles and training
windows). The result is an ordinary model folder that `finetune` and the scorer load like any other."""
from __future__ import annotations

import os
from typing import Callable, List, Optional

import llm4dsr as _ext


def train_texts(dataset, splits) -> List[str]:
    """Catalogue titles and the training windows as plain text: what a model trained from scratch reads.
    Only the training split is used, so nothing of validation or test leaks into the model."""
    titles = [t for t in dataset.catalog.titles if t]
    windows = [", ".join(dataset.catalog.title(int(i)) for i in w.items) for w in splits.train]
    return titles + windows


def pretrain_from_scratch(dataset, splits, out: str, preset: str = "tiny", vocab_size: int = 2000,
                          block_size: int = 128, epochs: int = 3, learning_rate: float = 3e-3,
                          batch_size: int = 16, seed: int = 0, resume: bool = False,
                          callback: Optional[Callable[[dict], None]] = None):
    """Trains a sentencepiece tokenizer and a `preset` Llama (causal LM loss on every token, blocks of
    `block_size`) on train_texts(); saves a model folder at `out`, with the trainer's resumable state in
    out/pretrain-state. Returns (PretrainedModel, the trainer's result dict, number of blocks).
    `callback` receives the trainer's per-step progress dict."""
    texts = train_texts(dataset, splits)
    tokenizer = _ext.SentencePieceTokenizer.train(texts, vocab_size=vocab_size, seed=seed, hard_vocab_limit=False)
    config = _ext.ModelConfig.preset(preset, tokenizer.vocab_size)
    config.bos_token_id = tokenizer.bos_id
    config.eos_token_ids = [tokenizer.eos_id]
    config.pad_token_id = tokenizer.pad_id
    model = _ext.LlamaModel(config, seed=seed)
    examples = _ext.make_lm_examples(tokenizer.encode_batch(texts, add_bos=True), tokenizer.eos_id, block_size)
    trainer = _ext.Trainer(model, learning_rate=learning_rate, num_epochs=epochs, micro_batch_size=batch_size,
                           pad_token_id=tokenizer.pad_id, seed=seed, output_dir=os.path.join(out, "pretrain-state"),
                           save_steps=50, progress=False)
    result = trainer.train(examples, resume=resume, callback=callback)
    pretrained = _ext.PretrainedModel(model, tokenizer, _ext.ModelCard())
    _ext.save_pretrained(pretrained, out)
    return pretrained, result, len(examples)

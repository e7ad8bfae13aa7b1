"""
llm4dsr: denoising sequential recommendation with a fine-tuned language model
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import os
import torch
import typing
__all__: list[str] = ['BpeTokenizer', 'Catalog', 'ChatFormat', 'Correction', 'Dataset', 'Denoiser', 'Embedder', 'Error', 'GGUFFile', 'GGUFTensorInfo', 'GenerationOutput', 'Generator', 'Grounder', 'InstructionBuilder', 'InstructionPair', 'LlamaModel', 'LoraConfig', 'ModelCard', 'ModelConfig', 'NoiseScores', 'PretrainedModel', 'PromptTemplate', 'RopeScaling', 'SentencePieceTokenizer', 'Sequence', 'SequenceReport', 'SequenceSet', 'Splits', 'Suggestion', 'TokenizedInstruction', 'Tokenizer', 'Trainer', 'TrainingExample', 'UncertaintyScorer', 'UserChunks', 'all_noise_scores', 'apply_user_corrections', 'apply_window_corrections', 'auto_dtype', 'average_precision', 'bf16x3_matmul_available', 'default_freed_memory_retention', 'default_num_threads', 'default_quantile_grid', 'detect_format', 'detection_metrics', 'flag_noise', 'fp32_gemm', 'inject_noise', 'kcore_filter', 'known_model_names', 'load_pretrained', 'load_safetensors', 'load_tokenizer', 'make_lm_examples', 'make_synthetic', 'match_answer', 'model_cache_dir', 'native_bf16_matmul', 'noise_threshold', 'num_threads', 'prepare', 'read_dataset', 'resolve_model', 'save_pretrained', 'save_safetensors', 'score_histogram', 'search_eta', 'set_fp32_gemm', 'set_freed_memory_retention', 'set_num_threads', 'split_leave_one_out', 'split_windows', 'synthetic_genres', 'user_chunks', 'window_histories', 'write_jsonl', 'write_recbole', 'write_splits_csv']
class Error(RuntimeError):
    pass
class Catalog:
    """
    Item vocabulary: dense internal ids 1..N (0 = padding) <-> external ids, titles, extra text, popularity.
    """
    def __contains__(self, arg0: str) -> bool:
        ...
    def __init__(self) -> None:
        ...
    def __len__(self) -> int:
        ...
    def add(self, external_id: str) -> int:
        """
        Add an item (or find it); returns its internal id.
        """
    def external_id(self, id: typing.SupportsInt | typing.SupportsIndex) -> str:
        ...
    def extra(self, id: typing.SupportsInt | typing.SupportsIndex) -> str:
        ...
    def find(self, external_id: str) -> int | None:
        """
        Internal id or None.
        """
    def has_title(self, id: typing.SupportsInt | typing.SupportsIndex) -> bool:
        ...
    def id(self, external_id: str) -> int:
        """
        Internal id of an external id (Error when unknown).
        """
    def set_extra(self, id: typing.SupportsInt | typing.SupportsIndex, extra: str) -> None:
        ...
    def set_title(self, id: typing.SupportsInt | typing.SupportsIndex, title: str) -> None:
        ...
    def title(self, id: typing.SupportsInt | typing.SupportsIndex) -> str:
        ...
    @property
    def external_ids(self) -> list[str]:
        ...
    @property
    def popularity(self) -> numpy.typing.NDArray[numpy.int64]:
        """
        int64 array of length N+1: interaction count per internal id (index 0 unused).
        """
    @property
    def size(self) -> int:
        ...
    @property
    def titled_count(self) -> int:
        ...
    @property
    def titles(self) -> list[str]:
        """
        Titles of items 1..N (index 0 of the list is item 1).
        """
class Sequence:
    """
    One user's chronological items, or one window of them (the last item is the target).
    """
    user_id: str
    @typing.overload
    def __init__(self: typing.Sequence) -> None:
        ...
    @typing.overload
    def __init__(self: typing.Sequence, user_id: str, items: typing.Any) -> None:
        ...
    def __len__(self: typing.Sequence) -> int:
        ...
    def __repr__(self: typing.Sequence) -> str:
        ...
    def slice(self: typing.Sequence, begin: typing.SupportsInt | typing.SupportsIndex, end: typing.SupportsInt | typing.SupportsIndex) -> typing.Sequence:
        ...
    def validate(self: typing.Sequence, num_items: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def has_labels(self) -> bool:
        ...
    @property
    def has_timestamps(self) -> bool:
        ...
    @property
    def items(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @items.setter
    def items(self, arg1: typing.Any) -> None:
        ...
    @property
    def labels(self) -> numpy.typing.NDArray[numpy.uint8]:
        """
        Noise label per position: 0 clean, 1 injected noise, 2 replaced for self-supervised training; empty when unknown.
        """
    @labels.setter
    def labels(self, arg1: typing.Any) -> None:
        ...
    @property
    def offset(self) -> int:
        ...
    @offset.setter
    def offset(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def original_items(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @original_items.setter
    def original_items(self, arg1: typing.Any) -> None:
        ...
    @property
    def target(self) -> int:
        ...
    @property
    def timestamps(self) -> numpy.typing.NDArray[numpy.float64]:
        ...
    @timestamps.setter
    def timestamps(self, arg1: typing.Any) -> None:
        ...
class SequenceSet:
    """
    A list of Sequence objects, held in C++ (no copies on access).
    """
    def __bool__(self) -> bool:
        """
        Check whether the list is nonempty
        """
    @typing.overload
    def __delitem__(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Delete the list elements at index ``i``
        """
    @typing.overload
    def __delitem__(self, arg0: slice) -> None:
        """
        Delete list elements using a slice object
        """
    @typing.overload
    def __getitem__(self, s: slice) -> SequenceSet:
        """
        Retrieve list elements using a slice object
        """
    @typing.overload
    def __getitem__(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> typing.Sequence:
        ...
    @typing.overload
    def __init__(self) -> None:
        ...
    @typing.overload
    def __init__(self, arg0: SequenceSet) -> None:
        """
        Copy constructor
        """
    @typing.overload
    def __init__(self, arg0: collections.abc.Iterable) -> None:
        ...
    def __iter__(self) -> collections.abc.Iterator[typing.Sequence]:
        ...
    def __len__(self) -> int:
        ...
    @typing.overload
    def __setitem__(self, arg0: typing.SupportsInt | typing.SupportsIndex, arg1: typing.Sequence) -> None:
        ...
    @typing.overload
    def __setitem__(self, arg0: slice, arg1: SequenceSet) -> None:
        """
        Assign list elements using a slice object
        """
    def append(self, x: typing.Sequence) -> None:
        """
        Add an item to the end of the list
        """
    def clear(self) -> None:
        """
        Clear the contents
        """
    @typing.overload
    def extend(self, L: SequenceSet) -> None:
        """
        Extend the list by appending all the items in the given list
        """
    @typing.overload
    def extend(self, L: collections.abc.Iterable) -> None:
        """
        Extend the list by appending all the items in the given list
        """
    def insert(self, i: typing.SupportsInt | typing.SupportsIndex, x: typing.Sequence) -> None:
        """
        Insert an item at a given position.
        """
    @typing.overload
    def pop(self) -> typing.Sequence:
        """
        Remove and return the last item
        """
    @typing.overload
    def pop(self, i: typing.SupportsInt | typing.SupportsIndex) -> typing.Sequence:
        """
        Remove and return the item at index ``i``
        """
class Splits:
    test: SequenceSet
    train: SequenceSet
    valid: SequenceSet
    def __init__(self) -> None:
        ...
    @property
    def protocol(self) -> str:
        ...
class Dataset:
    catalog: Catalog
    format: str
    has_timestamps: bool
    name: str
    splits: Splits | None
    users: SequenceSet
    def __init__(self) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def recount_popularity(self) -> None:
        ...
    def stats(self) -> dict:
        """
        Statistics as a dict: users, items, interactions, mean/min/max length, titled items (+ windows per split for pre-split data).
        """
class Tokenizer:
    """
    Text <-> token ids. Abstract: obtain one from SentencePieceTokenizer.from_file / from_serialized /
    train (or another implementation).
    """
    def __len__(self) -> int:
        ...
    def __repr__(self) -> str:
        ...
    def decode(self, ids: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> str:
        """
        The text of `ids`; control ids (<s>, </s>, <pad>) decode to nothing.
        """
    def decode_batch(self, ids: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]]) -> list:
        """
        decode() of each id list, in parallel.
        """
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """
        The ids of `text`, optionally with <s> first and </s> last.
        """
    def encode_batch(self, texts: collections.abc.Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        """
        encode() of each text, in parallel; the result keeps the input order.
        """
    def encode_in_context(self, prefix: str, text: str) -> list[int]:
        """
        The ids of `text` as tokenised right after `prefix`: the tail of encode(prefix + text) from the token
        covering the first byte of `text` (which may also cover the end of `prefix`).
        """
    def id_to_piece(self, id: typing.SupportsInt | typing.SupportsIndex) -> str:
        ...
    def piece_to_id(self, piece: str) -> int:
        """
        unk_id when the piece is absent.
        """
    @property
    def bos_id(self) -> int:
        """
        -1 when the vocabulary has no <s>.
        """
    @property
    def eos_id(self) -> int:
        ...
    @property
    def kind(self) -> str:
        """
        'sentencepiece' or 'bpe'.
        """
    @property
    def pad_id(self) -> int:
        """
        <pad>, or </s> when the model defines no pad.
        """
    @property
    def unk_id(self) -> int:
        ...
    @property
    def vocab_size(self) -> int:
        ...
class SentencePieceTokenizer(Tokenizer):
    """
    A sentencepiece model.
    """
    @staticmethod
    def from_file(path: os.PathLike | str | bytes) -> SentencePieceTokenizer:
        """
        Loads a sentencepiece .model file (e.g. Llama's tokenizer.model).
        """
    @staticmethod
    def from_serialized(model_proto: bytes) -> SentencePieceTokenizer:
        """
        From the bytes of a serialized ModelProto (what serialized() returns).
        """
    @staticmethod
    def train(texts: collections.abc.Sequence[str], vocab_size: typing.SupportsInt | typing.SupportsIndex = 2000, model_type: str = 'bpe', character_coverage: typing.SupportsFloat | typing.SupportsIndex = 1.0, seed: typing.SupportsInt | typing.SupportsIndex = 0, byte_fallback: bool = True, hard_vocab_limit: bool = True) -> SentencePieceTokenizer:
        """
        Trains a model on `texts`, in memory and deterministically. Ids: 0 <unk>, 1 <s>, 2 </s>, 3 <pad>.
        model_type is 'bpe' or 'unigram'; with byte_fallback unseen characters become byte pieces, never <unk>;
        with hard_vocab_limit=False vocab_size is an upper bound (a small corpus gives fewer pieces).
        """
    def save(self, path: os.PathLike | str | bytes) -> None:
        """
        Writes the model atomically as a .model file.
        """
    def serialized(self) -> bytes:
        """
        The serialized ModelProto (sentencepiece.SentencePieceProcessor(model_proto=...) reads it).
        """
class RopeScaling:
    """
    Rotary-embedding frequency scaling (HF rope_scaling / rope_parameters).
    """
    rope_type: str
    def __init__(self) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def factor(self) -> float:
        ...
    @factor.setter
    def factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def high_freq_factor(self) -> float:
        ...
    @high_freq_factor.setter
    def high_freq_factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def low_freq_factor(self) -> float:
        ...
    @low_freq_factor.setter
    def low_freq_factor(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def original_max_position_embeddings(self) -> int:
        ...
    @original_max_position_embeddings.setter
    def original_max_position_embeddings(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class ModelConfig:
    """
    Hyper-parameters of a Llama model (HF config.json fields).
    """
    attention_bias: bool
    hidden_act: str
    mlp_bias: bool
    rope_scaling: RopeScaling
    tie_word_embeddings: bool
    torch_dtype: str
    @staticmethod
    def from_file(path: str) -> ModelConfig:
        ...
    @staticmethod
    def from_json(text: str, source: str = 'config.json') -> ModelConfig:
        ...
    @staticmethod
    def preset(name: str, vocab_size: typing.SupportsInt | typing.SupportsIndex = 0) -> ModelConfig:
        """
        Small configurations for training from scratch: 'tiny', 'small', 'base'.
        """
    def __init__(self) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def save(self, path: str) -> None:
        ...
    def to_json(self) -> str:
        ...
    def validate(self) -> None:
        ...
    @property
    def bos_token_id(self) -> int:
        ...
    @bos_token_id.setter
    def bos_token_id(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def eos_token_ids(self) -> list[int]:
        ...
    @eos_token_ids.setter
    def eos_token_ids(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def head_dim(self) -> int:
        ...
    @head_dim.setter
    def head_dim(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def hidden_size(self) -> int:
        ...
    @hidden_size.setter
    def hidden_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def initializer_range(self) -> float:
        ...
    @initializer_range.setter
    def initializer_range(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def intermediate_size(self) -> int:
        ...
    @intermediate_size.setter
    def intermediate_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def max_position_embeddings(self) -> int:
        ...
    @max_position_embeddings.setter
    def max_position_embeddings(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def num_attention_heads(self) -> int:
        ...
    @num_attention_heads.setter
    def num_attention_heads(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def num_hidden_layers(self) -> int:
        ...
    @num_hidden_layers.setter
    def num_hidden_layers(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def num_key_value_heads(self) -> int:
        ...
    @num_key_value_heads.setter
    def num_key_value_heads(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def pad_token_id(self) -> int:
        ...
    @pad_token_id.setter
    def pad_token_id(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def rms_norm_eps(self) -> float:
        ...
    @rms_norm_eps.setter
    def rms_norm_eps(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def rope_theta(self) -> float:
        ...
    @rope_theta.setter
    def rope_theta(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def vocab_size(self) -> int:
        ...
    @vocab_size.setter
    def vocab_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class LoraConfig:
    """
    LoRA settings (PEFT adapter_config.json fields).
    """
    target_regex: str
    use_rslora: bool
    @staticmethod
    def from_adapter_config(path: str) -> LoraConfig:
        ...
    def __init__(self) -> None:
        ...
    @property
    def alpha(self) -> float:
        ...
    @alpha.setter
    def alpha(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def dropout(self) -> float:
        ...
    @dropout.setter
    def dropout(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def layers_to_transform(self) -> list[int]:
        ...
    @layers_to_transform.setter
    def layers_to_transform(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def r(self) -> int:
        ...
    @r.setter
    def r(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def scaling(self) -> float:
        ...
    @property
    def seed(self) -> int:
        ...
    @seed.setter
    def seed(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def target_modules(self) -> list[str]:
        ...
    @target_modules.setter
    def target_modules(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
class GenerationOutput:
    """
    What generate_greedy returns.
    """
    def __repr__(self) -> str:
        ...
    @property
    def sequences(self) -> list[list[int]]:
        """
        new token ids per row (stop token included)
        """
    @property
    def steps(self) -> int:
        """
        forwards run, the prefill included
        """
    @property
    def stopped(self) -> list[bool]:
        """
        whether each row produced a stop token
        """
class LlamaModel:
    """
    Llama causal language model (HF LlamaForCausalLM numerics) with optional LoRA adapters.
    """
    @staticmethod
    def from_pretrained(path: str, device: str = 'cpu', dtype: str = 'float32') -> LlamaModel:
        """
        Loads a HuggingFace Llama checkpoint folder (config.json + model.safetensors or shards), a GGUF file (dequantised to `dtype`), or a known short name such as 'smollm2-135m-instruct'. dtype 'auto': bfloat16 where the device multiplies it natively, float32 elsewhere (llm4dsr.auto_dtype).
        """
    def __init__(self, config: ModelConfig, device: str = 'cpu', dtype: str = 'float32', seed: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        """
        A freshly initialised model (HF initialisation, seeded).
        """
    def add_lora(self, r: typing.SupportsInt | typing.SupportsIndex = 8, alpha: typing.SupportsFloat | typing.SupportsIndex = 16.0, dropout: typing.SupportsFloat | typing.SupportsIndex = 0.05, target_modules: typing.Any = ['q_proj', 'v_proj'], use_rslora: bool = False, seed: typing.SupportsInt | typing.SupportsIndex = 0, layers_to_transform: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> None:
        """
        Adds LoRA adapters (B = 0, A Kaiming-uniform from `seed`) and freezes the base weights. target_modules: a list of projection names, 'all-linear', or a regular expression string.
        """
    def add_lora_config(self, config: LoraConfig) -> None:
        ...
    def eval(self) -> LlamaModel:
        ...
    def forward(self, ids: typing.Any, attention_mask: typing.Any = None) -> torch.Tensor:
        """
        Logits in the model's dtype and device, with autograd (for training and gradient checks).
        """
    def generate_greedy(self, prompts: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]], max_new_tokens: typing.SupportsInt | typing.SupportsIndex = 32, stop_token_ids: typing.Any = None, pad_token_id: typing.SupportsInt | typing.SupportsIndex = -1) -> GenerationOutput:
        """
        Greedy decoding with a KV cache of a batch of prompts (lists of token ids, left-padded together). stop_token_ids: None = the config's eos_token_ids, [] = none. Returns a GenerationOutput: .sequences (the new ids per row, ending with the stop token where a row stopped), .stopped, .steps.
        """
    def hidden_states(self, ids: typing.Any, attention_mask: typing.Any = None) -> torch.Tensor:
        """
        float32 CPU final hidden states [B, T, hidden] (after the last RMSNorm); no gradients.
        """
    def load_adapter(self, path: str) -> None:
        """
        Adds and loads a PEFT LoRA adapter folder.
        """
    def logits(self, ids: typing.Any, attention_mask: typing.Any = None, positions: typing.Any = None) -> torch.Tensor:
        """
        float32 CPU logits [B, T, vocab] (or [B, K, vocab] at `positions`: [K] or [B, K]); no gradients.
        """
    def logits_incremental(self, ids: typing.Any, attention_mask: typing.Any = None, prompt_length: typing.SupportsInt | typing.SupportsIndex = 1) -> torch.Tensor:
        """
        Logits computed with a KV cache: the first prompt_length tokens in one forward, then one token per step. Equal to logits() up to rounding.
        """
    def lora_parameters(self) -> dict:
        """
        The adapter tensors by PEFT name (shared with the model: in-place changes take effect).
        """
    def merge_lora(self) -> None:
        ...
    def num_parameters(self) -> int:
        ...
    def remove_lora(self) -> None:
        ...
    def save_adapter(self, path: str, base_model_name_or_path: str = '') -> None:
        ...
    def save_pretrained(self, path: str) -> None:
        ...
    def state_dict(self) -> dict:
        """
        The base weights by HF name (shared with the model).
        """
    def to(self, device: str = 'cpu', dtype: str = 'float32') -> None:
        ...
    def train(self, mode: bool = True) -> LlamaModel:
        ...
    def unmerge_lora(self) -> None:
        ...
    @property
    def config(self) -> ModelConfig:
        ...
    @property
    def device(self) -> str:
        ...
    @property
    def dtype(self) -> str:
        ...
    @property
    def has_lora(self) -> bool:
        ...
    @property
    def lora_config(self) -> LoraConfig:
        ...
    @property
    def training(self) -> bool:
        ...
    @property
    def weight_packing(self) -> bool:
        """
        bf16 CPU inference through weights reordered once for oneDNN (faster; as much memory again as the projection and lm_head weights). Set False to drop the copies.
        """
    @weight_packing.setter
    def weight_packing(self, arg1: bool) -> None:
        ...
class ChatFormat:
    """
    How a prompt is wrapped for an instruction-tuned checkpoint's chat template: an optional system turn,
    the prompt in a user turn, then the opened assistant turn the response follows. The turn is closed by
    the tokenizer's EOS id at tokenisation. Built-ins: 'none', 'chatml', 'smollm2'.
    """
    assistant_prefix: str
    end_of_turn: str
    name: str
    system: str
    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    @staticmethod
    def chatml(system: str = '') -> ChatFormat:
        """
        ChatML with this system message.
        """
    @staticmethod
    def get(name: str) -> ChatFormat:
        """
        A built-in format: 'none', 'chatml' or 'smollm2'.
        """
    @staticmethod
    def names() -> list[str]:
        ...
    def __init__(self, name: str = 'none', system: str = '', system_prefix: str = '', system_suffix: str = '', user_prefix: str = '', user_suffix: str = '', assistant_prefix: str = '', end_of_turn: str = '', add_bos: bool = True) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def head(self) -> str:
        """
        The wrapped text before the prompt.
        """
    def tail(self) -> str:
        """
        The wrapped text after the prompt (up to where the response starts).
        """
    def wrap(self, prompt: str) -> str:
        ...
    @property
    def add_bos(self) -> bool:
        """
        Whether BOS goes before the wrapped text.
        """
    @add_bos.setter
    def add_bos(self, arg0: bool) -> None:
        ...
    @property
    def is_none(self) -> bool:
        ...
class PromptTemplate:
    """
    A named, versioned instruction template. `prompt` holds one {history}; `response` holds {noise} then
    {suggestion}; '{{' and '}}' are literal braces. Titles are quoted with quote_open / quote_close, joined
    by `separator`, and sanitised: control characters become spaces, ends are stripped, and quote_close
    inside a title becomes quote_substitute. Built-ins: PromptTemplate.get('llm4dsr-paper') and
    PromptTemplate.get('llm4dsr-alpaca') (the authors' released Alpaca layout).
    
        scoring_prefix(h) + sanitize_title(noise) + noise_suffix() + sanitize_title(s) + suggestion_suffix()
            == render_text(h, noise, s)
    """
    clean_response: str
    description: str
    name: str
    prompt: str
    quote_close: str
    quote_open: str
    quote_substitute: str
    response: str
    separator: str
    @staticmethod
    def from_json(json: str) -> PromptTemplate:
        ...
    @staticmethod
    def get(name: str) -> PromptTemplate:
        ...
    @staticmethod
    def names() -> list[str]:
        ...
    @staticmethod
    def register(template: PromptTemplate, replace: bool = False) -> None:
        """
        Adds a template to the registry (built-ins cannot be replaced).
        """
    def __init__(self, name: str, prompt: str, response: str, version: typing.SupportsInt | typing.SupportsIndex = 1, description: str = '', clean_response: str = 'None', quote_open: str = '"', quote_close: str = '"', separator: str = ', ', quote_substitute: str = "'") -> None:
        """
        A custom template; validated (llm4dsr.Error names the problem).
        """
    def __repr__(self) -> str:
        ...
    def closing_delimiter(self) -> str:
        """
        The text that ends a title.
        """
    def generation_prompt(self, titles: collections.abc.Sequence[str], noise_title: str, chat: ChatFormat = ...) -> str:
        """
        Everything up to where the suggested title starts.
        """
    def noise_suffix(self) -> str:
        """
        The text between the noise title and the suggestion.
        """
    def quote(self, title: str) -> str:
        ...
    def render_clean_response(self) -> str:
        ...
    def render_history(self, titles: collections.abc.Sequence[str]) -> str:
        ...
    def render_prompt(self, titles: collections.abc.Sequence[str], chat: ChatFormat = ...) -> str:
        """
        The prompt x for these history titles, wrapped by `chat`.
        """
    def render_response(self, noise_title: str, suggestion_title: str) -> str:
        ...
    def render_text(self, titles: collections.abc.Sequence[str], noise_title: str, suggestion_title: str, chat: ChatFormat = ...) -> str:
        """
        The training text x + z.
        """
    def sanitize_title(self, title: str) -> str:
        ...
    def scoring_prefix(self, titles: collections.abc.Sequence[str], chat: ChatFormat = ...) -> str:
        """
        Everything up to where the noise title starts.
        """
    def suggestion_suffix(self) -> str:
        """
        The text after the suggested title.
        """
    def to_json(self) -> str:
        ...
    def validate(self) -> None:
        ...
    @property
    def version(self) -> int:
        ...
    @version.setter
    def version(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class InstructionPair:
    """
    One self-supervised example: a corrupted window, x and z.
    """
    def __repr__(self) -> str:
        ...
    @property
    def is_clean(self) -> bool:
        ...
    @property
    def items(self) -> numpy.typing.NDArray[numpy.int64]:
        """
        int64 item ids of the window as shown to the model.
        """
    @property
    def noise_item(self) -> int:
        """
        The inserted item id; 0 for a clean example.
        """
    @property
    def noise_title(self) -> str:
        ...
    @property
    def original_item(self) -> int:
        """
        The replaced item id; 0 for a clean example.
        """
    @property
    def original_title(self) -> str:
        ...
    @property
    def position(self) -> int:
        """
        The replaced position; -1 for a clean example.
        """
    @property
    def prompt(self) -> str:
        ...
    @property
    def response(self) -> str:
        ...
    @property
    def titles(self) -> list[str]:
        ...
    @property
    def window_index(self) -> int:
        ...
class TokenizedInstruction:
    """
    Token ids of one pair: input_ids = [BOS] prompt response [EOS]; labels = input_ids where the loss
    applies and -100 elsewhere (not shifted, as HF expects); loss_mask = labels != -100.
    """
    def __len__(self) -> int:
        ...
    def __repr__(self) -> str:
        ...
    def to_dict(self) -> dict:
        ...
    @property
    def dropped_items(self) -> int:
        ...
    @property
    def input_ids(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def labels(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def loss_mask(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def prompt(self) -> str:
        ...
    @property
    def prompt_length(self) -> int:
        ...
class InstructionBuilder:
    """
    Self-supervised instruction data (LLM4DSR section 3.1): per window one uniformly chosen position is
    replaced by a uniformly drawn different item; the response names the noise item and the original.
    loss_on='response' is the paper's Eq. 1, 'all' what the authors' code trained on.
    """
    def __init__(self, template: typing.Any = 'llm4dsr-paper', chat_format: typing.Any = 'none', max_prompt_tokens: typing.SupportsInt | typing.SupportsIndex = 512, loss_on: str = 'response', clean_fraction: typing.SupportsFloat | typing.SupportsIndex = 0.0, max_pairs: typing.SupportsInt | typing.SupportsIndex = 0, seed: typing.SupportsInt | typing.SupportsIndex = 42, add_bos: bool = True, add_eos: bool = True) -> None:
        """
        template: a registered name or a PromptTemplate; chat_format: 'none', 'chatml', 'smollm2' or a
        ChatFormat; max_prompt_tokens: prompt budget incl. BOS (oldest whole items are dropped; 0 = no limit);
        max_pairs: windows sampled without replacement (0 = all); clean_fraction: share of 'None' examples.
        """
    def __repr__(self) -> str:
        ...
    def make_pairs(self, windows: typing.Any, catalog: Catalog) -> list[InstructionPair]:
        """
        One InstructionPair per window (or max_pairs sampled windows), seeded. `windows`: a SequenceSet (e.g. splits.train) or a list of Sequence.
        """
    def render_prompt(self, pair: InstructionPair, dropped: typing.SupportsInt | typing.SupportsIndex = 0) -> str:
        """
        The prompt of `pair` with its `dropped` oldest droppable items left out.
        """
    def tokenize(self, pairs: collections.abc.Sequence[InstructionPair], tokenizer: Tokenizer) -> list[TokenizedInstruction]:
        """
        A TokenizedInstruction per pair, in parallel.
        """
    def tokenize_one(self, pair: InstructionPair, tokenizer: Tokenizer) -> TokenizedInstruction:
        ...
    @property
    def add_bos(self) -> bool:
        ...
    @property
    def add_eos(self) -> bool:
        ...
    @property
    def chat_format(self) -> ChatFormat:
        ...
    @property
    def clean_fraction(self) -> float:
        ...
    @property
    def loss_on(self) -> str:
        ...
    @property
    def max_pairs(self) -> int:
        ...
    @property
    def max_prompt_tokens(self) -> int:
        ...
    @property
    def prompt_template(self) -> PromptTemplate:
        ...
    @property
    def seed(self) -> int:
        ...
class GGUFTensorInfo:
    """
    One tensor of a GGUF file: name, shapes, ggml type and where its bytes are.
    """
    def __repr__(self) -> str:
        ...
    @property
    def file_offset(self) -> int:
        ...
    @property
    def n_bytes(self) -> int:
        ...
    @property
    def n_elements(self) -> int:
        ...
    @property
    def name(self) -> typing.Any:
        ...
    @property
    def ne(self) -> tuple:
        """
        ggml dimensions, ne[0] the contiguous one.
        """
    @property
    def offset(self) -> int:
        """
        Offset relative to the data section.
        """
    @property
    def shape(self) -> tuple:
        """
        Row-major (PyTorch / numpy) shape: ne reversed.
        """
    @property
    def type(self) -> str:
        """
        ggml type name, e.g. 'Q4_K'.
        """
class GGUFFile:
    """
    A validated, memory-mapped GGUF file (versions 2 and 3). Corrupt files raise llm4dsr.Error naming the file and the key or tensor.
    """
    def __contains__(self, name: typing.Any) -> bool:
        ...
    def __init__(self, path: str) -> None:
        ...
    def __len__(self) -> int:
        ...
    def __repr__(self) -> str:
        ...
    def dequantize(self, name: typing.Any) -> numpy.typing.NDArray[numpy.float32]:
        """
        The tensor as a float32 numpy array in row-major shape (bit-identical to gguf-py).
        """
    def hf_state_dict(self, dtype: str = 'float32') -> dict[str, torch.Tensor]:
        """
        Every tensor under its HuggingFace name, dequantised, Q/K rows un-permuted (lm_head.weight only when untied).
        """
    def model_config(self) -> ModelConfig:
        """
        The Llama ModelConfig from the llama.* metadata (as transformers' GGUF loader reads it).
        """
    def tensor_info(self, name: typing.Any) -> GGUFTensorInfo:
        ...
    def value_type(self, key: typing.Any) -> str:
        """
        The stored type of a metadata value, e.g. 'UINT32' or 'ARRAY[STRING]'.
        """
    @property
    def alignment(self) -> int:
        ...
    @property
    def data_offset(self) -> int:
        ...
    @property
    def metadata(self) -> dict:
        """
        Every key/value pair in file order: ints, floats, bools, str, and arrays as lists.
        """
    @property
    def path(self) -> str:
        ...
    @property
    def tensor_names(self) -> list:
        """
        Tensor names in file order.
        """
    @property
    def version(self) -> int:
        ...
class BpeTokenizer(Tokenizer):
    """
    Byte-level BPE as in HuggingFace tokenizers: added tokens first (never split), then the regex
    pre-tokenizer, then BPE merges over GPT-2's byte-to-unicode pieces. Special (control) tokens decode
    to nothing. kind == 'bpe'.
    """
    @staticmethod
    def from_gguf(path: os.PathLike | str | bytes) -> BpeTokenizer:
        """
        Reads the vocabulary of a GGUF file (tokenizer.ggml.model == 'gpt2'); a SentencePiece vocabulary
        ('llama') raises llm4dsr.Error.
        """
    @staticmethod
    def from_tokenizer_json(path: os.PathLike | str | bytes) -> BpeTokenizer:
        """
        Reads a HuggingFace tokenizer.json; special ids and add_bos/add_eos come from tokenizer_config.json
        beside it when present, else from the post-processor.
        """
    def __repr__(self) -> str:
        ...
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """
        (ids, offsets): the byte span [start, end) of the UTF-8 text each token covers.
        """
    def is_special(self, id: typing.SupportsInt | typing.SupportsIndex) -> bool:
        """
        True for special tokens (decode drops them).
        """
    @property
    def add_bos_token(self) -> bool:
        """
        Whether encode(..., add_bos=True) prepends bos for this vocabulary.
        """
    @property
    def add_eos_token(self) -> bool:
        ...
class TrainingExample:
    """
    Token ids and per-token labels (-100 = not in the loss; HF convention, the trainer shifts).
    """
    def __init__(self, input_ids: typing.Any, labels: typing.Any) -> None:
        ...
    def __len__(self) -> int:
        ...
    @property
    def input_ids(self) -> list[int]:
        ...
    @input_ids.setter
    def input_ids(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def labels(self) -> list[int]:
        ...
    @labels.setter
    def labels(self, arg0: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
class Trainer:
    """
    AdamW on the trainable parameters (LoRA adapters, or all for a model trained from scratch), warm-up + cosine schedule, clipping, accumulation, length-bucketed micro-batches, optional bf16 autocast, atomic checkpoints and exact resume.
    """
    def __init__(self, model: LlamaModel, learning_rate: typing.SupportsFloat | typing.SupportsIndex = 0.0003, num_epochs: typing.SupportsInt | typing.SupportsIndex = 1, max_steps: typing.SupportsInt | typing.SupportsIndex = 0, micro_batch_size: typing.SupportsInt | typing.SupportsIndex = 8, gradient_accumulation_steps: typing.SupportsInt | typing.SupportsIndex = 1, warmup_ratio: typing.SupportsFloat | typing.SupportsIndex = 0.05, warmup_steps: typing.SupportsInt | typing.SupportsIndex = 0, lr_scheduler: str = 'cosine', weight_decay: typing.SupportsFloat | typing.SupportsIndex = 0.0, max_grad_norm: typing.SupportsFloat | typing.SupportsIndex = 1.0, bf16: bool = False, pad_token_id: typing.SupportsInt | typing.SupportsIndex = 0, seed: typing.SupportsInt | typing.SupportsIndex = 0, output_dir: str = '', save_steps: typing.SupportsInt | typing.SupportsIndex = 0, progress: bool = True) -> None:
        ...
    def evaluate(self, examples: collections.abc.Iterable) -> float:
        """
        Mean token loss over the labelled tokens (no gradients, dropout off).
        """
    def learning_rate_at(self, step: typing.SupportsInt | typing.SupportsIndex, total_steps: typing.SupportsInt | typing.SupportsIndex) -> float:
        ...
    def total_steps(self, num_examples: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def train(self, examples: collections.abc.Iterable, resume: bool = False, callback: typing.Any = None) -> dict:
        """
        Train; `callback(progress: dict)` after every step (step, total_steps, loss, learning_rate, tokens_per_second, elapsed_seconds, eta_seconds). Returns a dict with steps and step_losses.
        """
class ModelCard:
    """
    Prompt settings a model was fine-tuned with (llm4dsr.json).
    """
    base_model: str
    chat_format: str
    prompt_template: str
    def __init__(self) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def to_json(self) -> str:
        ...
    @property
    def max_prompt_tokens(self) -> int:
        ...
    @max_prompt_tokens.setter
    def max_prompt_tokens(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class PretrainedModel:
    """
    A model with its tokenizer and prompt settings.
    """
    card: ModelCard
    model: LlamaModel
    tokenizer: Tokenizer
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, card: ModelCard = ...) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def format(self) -> str:
        ...
    @property
    def path(self) -> str:
        ...
class NoiseScores:
    """
    P_noise of every position of one sequence (UncertaintyScorer.score).
    
    log_prob: float32 log P_noise per position (-inf for the oldest `dropped_items` positions, which did
    not fit in the prompt); prob: exp(log_prob) normalised over the sequence's distinct scored events
    (a repeated title counts once; in first-token mode, titles sharing a first token count once);
    rank: 1 = most likely noise, a permutation (equal scores: earlier position first).
    """
    @typing.overload
    def __init__(self) -> None:
        ...
    @typing.overload
    def __init__(self, items: typing.Any, log_prob: typing.Any, prob: typing.Any, rank: typing.Any, dropped_items: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        """
        Rebuilds scores saved earlier (e.g. read back from a scores file).
        """
    def __len__(self) -> int:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def dropped_items(self) -> int:
        ...
    @property
    def items(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def log_prob(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
    @property
    def prob(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
    @property
    def rank(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
class UncertaintyScorer:
    """
    P_noise(s_k) of LLM4DSR (paper Eq. 2): the probability that the model names item s_k right after
    "Noise Items:" given the sequence's prompt.
    
    mode: 'first-token' (the paper's practical form: one forward per sequence, the log-probability of
    each title's first token) or 'exact' (every token of each title, optionally + the closing quote).
    first_token_context: 'in-context' (the token the model sees after the opening quote) or 'standalone'
    (each title tokenised alone, as the authors' released code did: the wrong token for most titles).
    template / chat_format: names or PromptTemplate / ChatFormat objects; use those the model was
    fine-tuned with. Prompts over max_prompt_tokens (BOS + prompt) lose their oldest items.
    share_prefix: run the prompt head every sequence shares (BOS, chat header, the template's opening
    words) once per chunk and continue each micro-batch from its keys/values; the scores are unchanged.
    """
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, template: typing.Any = 'llm4dsr-paper', chat_format: typing.Any = 'none', mode: str = 'first-token', first_token_context: str = 'in-context', micro_batch_size: typing.SupportsInt | typing.SupportsIndex = 32, max_prompt_tokens: typing.SupportsInt | typing.SupportsIndex = 512, include_closing_delimiter: bool = False, chunk_size: typing.SupportsInt | typing.SupportsIndex = 1024, share_prefix: bool = True) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def plan(self, items: typing.Any, catalog: Catalog) -> dict:
        """
        What score() feeds the model for one sequence: prefix_ids, and per position the prefix length it is conditioned on (context_length), the ids scored after it (scored_ids) and its distinct event.
        """
    def score(self, sequences: typing.Any, catalog: Catalog) -> list[NoiseScores]:
        """
        A list of NoiseScores, one per sequence (a SequenceSet, Sequence objects, or lists/arrays of item ids).
        """
    def score_chunks(self, sequences: typing.Any, catalog: Catalog, sink: collections.abc.Callable) -> None:
        """
        Streams a big split: scores chunk_size sequences at a time and calls sink(first, scores) with the index of the chunk's first sequence and its list of NoiseScores before the next chunk is tokenised, so only one chunk's results are held at a time. An exception raised by sink stops the run.
        """
    @property
    def chat_format(self) -> ChatFormat:
        ...
    @property
    def first_token_context(self) -> str:
        ...
    @property
    def mode(self) -> str:
        ...
    @property
    def prompt_template(self) -> PromptTemplate:
        ...
class Embedder:
    """
    Text -> float32 vectors from a LlamaModel's final hidden states (the f of the paper's Eq. 4).
    pooling "last" (the last token's hidden state, as the authors) or "mean" (over the text's tokens,
    pads excluded). use_lora=False embeds with the base model: adapters are switched off for the call.
    Texts run sorted by length in left-padded micro-batches; each row equals the text embedded alone.
    """
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, pooling: str = 'last', use_lora: bool = False, micro_batch_size: typing.SupportsInt | typing.SupportsIndex = 32, max_tokens: typing.SupportsInt | typing.SupportsIndex = 128, add_bos: bool = True, normalize: bool = False) -> None:
        ...
    def embed(self, texts: collections.abc.Sequence[str]) -> numpy.typing.NDArray[numpy.float32]:
        """
        float32 [len(texts), hidden] numpy array (owns the C++ buffer: no copy).
        """
    def token_ids(self, text: str) -> list[int]:
        """
        The ids embed() runs for `text`.
        """
    @property
    def dim(self) -> int:
        ...
    @property
    def max_tokens(self) -> int:
        ...
    @property
    def micro_batch_size(self) -> int:
        ...
    @property
    def pooling(self) -> str:
        ...
    @property
    def use_lora(self) -> bool:
        ...
class Grounder:
    """
    Maps suggested item texts / embeddings to catalogue items (paper Eq. 4) by cosine similarity.
    titles[i] and embeddings[i] (float32 [N, D]) describe item i + 1. index "auto" (flat below
    hnsw_min_items items, HNSW from there), "flat" (exact) or "hnsw" (approximate; ef_search trades recall
    for speed). A text equal to a title up to case and white space returns that item (exact=True,
    similarity 1) without a search. search() and ground() release the GIL and may run from several
    threads.
    """
    @staticmethod
    def from_catalog(catalog: Catalog, embeddings: typing.Any = None, embedder: Embedder = None, index: str = 'auto', ef_search: typing.SupportsInt | typing.SupportsIndex = 64, exact_title_match: bool = True) -> Grounder:
        """
        Titles from the catalogue (ids 1..N); embeddings given [N, D] or computed by `embedder` from the titles.
        """
    @staticmethod
    def normalize_title(text: str) -> str:
        ...
    def __init__(self, titles: collections.abc.Sequence[str], embeddings: typing.Any, index: str = 'auto', ef_search: typing.SupportsInt | typing.SupportsIndex = 64, hnsw_min_items: typing.SupportsInt | typing.SupportsIndex = 50000, hnsw_m: typing.SupportsInt | typing.SupportsIndex = 32, ef_construction: typing.SupportsInt | typing.SupportsIndex = 40, exact_title_match: bool = True) -> None:
        ...
    def __len__(self) -> int:
        ...
    def exact_match(self, text: str, exclude: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> int | None:
        ...
    def ground(self, texts: typing.Any = None, embeddings: typing.Any = None, exclude: typing.Any = None, embedder: Embedder = None, as_arrays: bool = False) -> typing.Any:
        """
        The best catalogue item per query: a list of (item_id, similarity, exact), or with as_arrays=True the
        arrays (ids int64, similarities float32, exact bool). texts (one per query) enable the exact title
        short-cut; embeddings [Q, D] are searched for the others, or `embedder` embeds the unresolved texts.
        exclude: one list of item ids per query (the sequence's items, the one being replaced).
        """
    def search(self, queries: typing.Any, k: typing.SupportsInt | typing.SupportsIndex, exclude: typing.Any = None, out: typing.Any = None) -> tuple[numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.float32]]:
        """
        Top-k items by cosine for float32 queries [Q, D]: (ids int64 [Q, k] with ids 1..N, similarities float32
        [Q, k]), best first. exclude: one list of item ids per query never to return. out=(ids, sims): write
        into these preallocated arrays instead.
        """
    def title(self, item_id: typing.SupportsInt | typing.SupportsIndex) -> str:
        ...
    @property
    def dim(self) -> int:
        ...
    @property
    def ef_search(self) -> int:
        ...
    @ef_search.setter
    def ef_search(self, arg1: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def embeddings(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        The normalised catalogue embeddings the index holds, a read-only view [N, D] (no copy).
        """
    @property
    def index_type(self) -> str:
        ...
    @property
    def size(self) -> int:
        ...
class Suggestion:
    """
    One generated replacement (Generator.generate).
    """
    def __repr__(self) -> str:
        ...
    @property
    def finished(self) -> bool:
        """
        ended at the closing delimiter / EOS
        """
    @property
    def item_id(self) -> int:
        """
        constrained decoding: the catalogue item; else 0
        """
    @property
    def log_prob(self) -> float:
        """
        sum of the generated tokens' log-probabilities
        """
    @property
    def text(self) -> str:
        """
        the generated title, closing delimiter removed
        """
    @property
    def token_ids(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
class Generator:
    """
    Replacement generation (paper section 3.3): for each (sequence, flagged position) the model is shown
    the training prompt up to "Suggested Items:" and decodes a title (greedy or beam search with the KV
    cache, batched). constrained=True restricts every step to tokens continuing a real catalogue title
    (a trie), so the output is always an existing item (item_id) and needs no grounding; `exclude` items
    (e.g. those already in the sequence) are pruned per request. template / chat_format: those the model
    was fine-tuned with (names or objects).
    """
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, catalog: Catalog, template: typing.Any = 'llm4dsr-paper', chat_format: typing.Any = 'none', decoding: str = 'greedy', num_beams: typing.SupportsInt | typing.SupportsIndex = 4, length_penalty: typing.SupportsFloat | typing.SupportsIndex = 1.0, max_new_tokens: typing.SupportsInt | typing.SupportsIndex = 32, constrained: bool = False, micro_batch_size: typing.SupportsInt | typing.SupportsIndex = 16, max_prompt_tokens: typing.SupportsInt | typing.SupportsIndex = 512) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def generate(self, requests: typing.Any) -> list[Suggestion]:
        """
        One Suggestion per request: (items, position) or (items, position, exclude) tuples, or dicts with those keys.
        """
    def generate_noise(self, sequences: typing.Any) -> list[Suggestion]:
        """
        The model's own 'Noise Items' answer per sequence (without-uncertainty ablation).
        """
    def prompt_ids(self, items: typing.Any, position: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.int64]:
        """
        The token ids generate() feeds the model for one request.
        """
    @property
    def constrained(self) -> bool:
        ...
    @property
    def decoding(self) -> str:
        ...
    @property
    def stop_token_ids(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def trie_titles(self) -> int:
        ...
class Correction:
    """
    One corrected position of a sequence (SequenceReport.corrections).
    """
    def __init__(self, position: typing.SupportsInt | typing.SupportsIndex, original_item: typing.SupportsInt | typing.SupportsIndex, p_noise: typing.Any = None, generated_text: str = '', replacement_item: typing.SupportsInt | typing.SupportsIndex = 0, similarity: typing.SupportsFloat | typing.SupportsIndex = 0.0, exact: bool = False) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def to_dict(self) -> dict:
        ...
    @property
    def exact(self) -> bool:
        ...
    @property
    def generated_text(self) -> str:
        ...
    @property
    def original_item(self) -> int:
        ...
    @property
    def p_noise(self) -> typing.Any:
        """
        P_noise of the item; None under without-uncertainty
        """
    @property
    def position(self) -> int:
        ...
    @property
    def replacement_item(self) -> int:
        """
        0 = deleted
        """
    @property
    def similarity(self) -> float:
        ...
class SequenceReport:
    """
    The corrected sequence and what was changed.
    """
    def __init__(self, items: typing.Any, corrections: collections.abc.Sequence[Correction], flagged: typing.Any = None) -> None:
        """
        Rebuilds a report saved earlier (e.g. read back from a report file).
        """
    def __repr__(self) -> str:
        ...
    @property
    def corrections(self) -> list[Correction]:
        ...
    @property
    def flagged(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def items(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
class Denoiser:
    """
    LLM4DSR's correction over many sequences: score (UncertaintyScorer) -> threshold (eta, budget b) ->
    generate (Generator) -> ground (Grounder + Embedder; not needed with a constrained Generator).
    policy: 'llm4dsr' (full), 'without-uncertainty' (the model's own noise answer, matched to an item),
    'without-completion' (delete flagged items), 'popularity-completion' (replace by an item drawn by
    catalogue popularity) -- the ablations of the paper's Table 7. Stages a policy does not use may be None.
    Choose eta on the VALIDATION split (threshold() on its scores), then correct() the other splits.
    """
    def __init__(self, catalog: Catalog, scorer: typing.Any = None, generator: typing.Any = None, grounder: typing.Any = None, embedder: typing.Any = None, policy: str = 'llm4dsr', budget: typing.SupportsInt | typing.SupportsIndex = 1, score: str = 'raw', seed: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        ...
    def __repr__(self) -> str:
        ...
    def correct(self, sequences: typing.Any, scores: collections.abc.Sequence[NoiseScores], eta: typing.SupportsFloat | typing.SupportsIndex, protect: typing.Any = None, first_index: typing.SupportsInt | typing.SupportsIndex = 0) -> list[SequenceReport]:
        """
        One SequenceReport per sequence. scores: from score() (ignored under without-uncertainty); protect: per sequence, positions never flagged; first_index: the index of the first sequence in its split (popularity draws do not depend on chunking).
        """
    def denoise(self, sequences: typing.Any, eta: typing.SupportsFloat | typing.SupportsIndex, protect: typing.Any = None) -> list[SequenceReport]:
        """
        score() then correct().
        """
    def flag(self, scores: collections.abc.Sequence[NoiseScores], eta: typing.SupportsFloat | typing.SupportsIndex, protect: typing.Any = None) -> list:
        ...
    def score(self, sequences: typing.Any) -> list[NoiseScores]:
        ...
    def threshold(self, scores: collections.abc.Sequence[NoiseScores], quantile: typing.SupportsFloat | typing.SupportsIndex) -> float:
        """
        eta at a quantile of the scores (compute on the validation split).
        """
    @property
    def budget(self) -> int:
        ...
    @property
    def policy(self) -> str:
        ...
class UserChunks:
    """
    A split's windows regrouped per user in non-overlapping chunks.
    """
    def __len__(self) -> int:
        ...
    @property
    def labels(self) -> list:
        ...
    @property
    def protect(self) -> list[list[bool]]:
        ...
    @property
    def sequences(self) -> list:
        ...
    @property
    def start(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def user(self) -> numpy.typing.NDArray[numpy.int64]:
        ...
    @property
    def user_ids(self) -> list[str]:
        ...
def all_noise_scores(scores: collections.abc.Sequence[NoiseScores], score: str = 'raw') -> numpy.typing.NDArray[numpy.float64]:
    """
    float64 array of every scored position's score, sequence after sequence (dropped positions left out); score='raw' (P_noise = exp(log_prob)) or 'normalised' (prob).
    """
def apply_user_corrections(windows: SequenceSet, chunks: UserChunks, reports: collections.abc.Sequence[SequenceReport]) -> SequenceSet:
    """
    The windows with each chunk's corrections applied wherever the position appears.
    """
def apply_window_corrections(windows: SequenceSet, reports: collections.abc.Sequence[SequenceReport]) -> SequenceSet:
    """
    The windows with reports[i] written into window i's history (the target unchanged).
    """
def auto_dtype(device: str = 'cpu') -> str:
    """
    What dtype='auto' means on `device`: 'bfloat16' where native_bf16_matmul(device), else 'float32'.
    """
def average_precision(scores: typing.Any, is_noise: typing.Any) -> float:
    """
    PR-AUC as average precision (scikit-learn's definition).
    """
def bf16x3_matmul_available() -> bool:
    """
    Whether fp32 CPU products follow torch.set_float32_matmul_precision('high') as bf16x3 (each fp32
    factor the sum of two bf16 numbers, three bf16 products accumulated in fp32 on AMX-BF16):
    a CPU with AMX-BF16 and a libtorch carrying MKL's gemm_bf16bf16f32. Without recorded
    gradients, from 256 rows on; about 10x fp32's rounding error, 500x less than one bf16 pass.
    """
def default_freed_memory_retention() -> int:
    """
    $LLM4DSR_RETAIN_FREED_MEMORY in bytes if set (0: off), otherwise 256 MiB.
    """
def default_num_threads() -> int:
    ...
def default_quantile_grid() -> list[float]:
    """
    The paper's eta quantiles 0, 0.05, ..., 1.
    """
def detect_format(path: str) -> str:
    ...
def detection_metrics(flagged: typing.Any, is_noise: typing.Any) -> dict:
    """
    precision / recall / F1 of flagged positions against noise labels.
    """
def flag_noise(scores: typing.Any, eta: typing.SupportsFloat | typing.SupportsIndex, budget: typing.SupportsInt | typing.SupportsIndex = 0, score: str = 'raw') -> list:
    """
    Per sequence, the flagged positions (int64 arrays, ascending): score > eta (Eq. 3), at most `budget` per sequence, highest first (0 = no limit). scores: NoiseScores objects or lists of floats.
    """
def fp32_gemm() -> str:
    """
    The library running fp32 CPU products now: 'onednn' or 'aten' (see set_fp32_gemm).
    """
def inject_noise(users: SequenceSet, num_items: typing.SupportsInt | typing.SupportsIndex, alpha: typing.SupportsFloat | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    """
    In place: replace each position with probability alpha by a uniformly random other item; sets labels and original_items.
    """
def kcore_filter(dataset: Dataset, min_user_interactions: typing.SupportsInt | typing.SupportsIndex, min_item_interactions: typing.SupportsInt | typing.SupportsIndex) -> None:
    ...
def known_model_names() -> list[str]:
    ...
def load_pretrained(name_or_path: str, device: str = 'cpu', dtype: str = 'float32') -> PretrainedModel:
    """
    A short name (smollm2-135m-instruct), an HF or llm4dsr folder, a GGUF file, or an adapter folder on a base.
    """
def load_safetensors(path: str) -> dict:
    """
    Reads a .safetensors file into {name: tensor} (validated; memory-mapped).
    """
def load_tokenizer(folder_or_gguf: str) -> Tokenizer:
    """
    The tokenizer of an HF/llm4dsr folder (tokenizer.json or tokenizer.model) or of a GGUF file.
    """
def make_lm_examples(encoded_texts: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]], eos_token_id: typing.SupportsInt | typing.SupportsIndex, block_size: typing.SupportsInt | typing.SupportsIndex) -> list[TrainingExample]:
    """
    Language-model examples for training from scratch: texts joined with EOS, cut into blocks.
    """
def make_synthetic(num_users: typing.SupportsInt | typing.SupportsIndex = 300, num_items: typing.SupportsInt | typing.SupportsIndex = 600, min_length: typing.SupportsInt | typing.SupportsIndex = 12, max_length: typing.SupportsInt | typing.SupportsIndex = 30, off_genre_rate: typing.SupportsFloat | typing.SupportsIndex = 0.02, seed: typing.SupportsInt | typing.SupportsIndex = 2024) -> Dataset:
    """
    The embedded SYNTHETIC default dataset (genre-bearing English titles, users following 1-2 genres).
    """
def match_answer(answer: str, titles: collections.abc.Sequence[str], protect: collections.abc.Sequence[bool] = [], min_overlap: typing.SupportsFloat | typing.SupportsIndex = 0.5) -> int:
    """
    The position whose title equals `answer` (case / spaces aside), else the largest word overlap >= min_overlap; -1 when none.
    """
def model_cache_dir() -> str:
    ...
def native_bf16_matmul(device: str = 'cpu') -> bool:
    """
    Whether bf16 matrix products run on the device's own instructions: on the CPU AVX512-BF16 or
    AMX-BF16 (with oneDNN on), on CUDA always (as torch.cuda.is_bf16_supported() by default). Without
    them libtorch emulates bf16 products, several times slower than float32.
    """
def noise_threshold(scores: typing.Any, quantile: typing.SupportsFloat | typing.SupportsIndex, score: str = 'raw') -> float:
    """
    eta at `quantile` (inverted CDF: the smallest score with at least that fraction of scores at or below it; -inf for 0) of a list of NoiseScores or of a flat array of scores. Compute it on the VALIDATION split.
    """
def num_threads() -> int:
    """
    libtorch's current intra-op thread count.
    """
def prepare(dataset: Dataset, split: str = 'windows', noise: typing.SupportsFloat | typing.SupportsIndex = 0.0, seed: typing.SupportsInt | typing.SupportsIndex = 0, max_length: typing.SupportsInt | typing.SupportsIndex = 11, train_ratio: typing.SupportsFloat | typing.SupportsIndex = 0.8, valid_ratio: typing.SupportsFloat | typing.SupportsIndex = 0.1) -> Splits:
    """
    Split a dataset ('windows' or 'loo'), injecting artificial noise with probability `noise` first (test targets are never noised).
    """
def read_dataset(path: str, format: str = 'auto', title_field: str = '', extra_field: str = '', sequences_file: str = '') -> Dataset:
    """
    Read a dataset: RecBole atomic files, raw MovieLens-100K, Amazon JSON (IADSR layout), the LLM4DSR authors' CSV windows, or 'synthetic[:users=..,items=..,seed=..]'. The format is detected unless given.
    """
def resolve_model(name_or_path: str) -> str:
    ...
def save_pretrained(model: PretrainedModel, folder: str, with_base: bool = True) -> None:
    """
    Writes weights (unless with_base is False), tokenizer, PEFT adapter and llm4dsr.json.
    """
def save_safetensors(path: str, tensors: dict, metadata: collections.abc.Mapping[str, str] = {}) -> None:
    ...
def score_histogram(probabilities: typing.Any, is_noise: typing.Any, bins: typing.SupportsInt | typing.SupportsIndex = 20) -> dict:
    """
    Histograms of log10 P_noise for noise and clean positions (paper Fig. 5) on shared bins.
    """
def search_eta(validation: collections.abc.Sequence[NoiseScores], objective: collections.abc.Callable, budget: typing.SupportsInt | typing.SupportsIndex = 0, score: str = 'raw', grid: typing.Any = None) -> dict:
    """
    Scans eta quantiles on VALIDATION scores (never the test split): objective(eta, flags) -> float, higher is better. Returns {'candidates': [...], 'best': {'quantile', 'eta', 'objective'}} (ties: the higher quantile).
    """
def set_fp32_gemm(name: str) -> None:
    """
    Which library runs the model's fp32 CPU products (projections and lm_head, with and without
    gradients): 'aten' (libtorch's own: MKL's sgemm, as transformers gets it), 'onednn' (oneDNN's
    fp32 GEMM from 4 rows on, and for weights of 4M elements or more at any row count), or 'auto'
    (oneDNN on x86 CPUs with AVX-512 not made by Intel, where MKL runs its AVX2 code: 2x slower on
    an AMD EPYC; libtorch's elsewhere). Both are IEEE fp32; results differ in the last bits. The
    default is $LLM4DSR_FP32_GEMM if set, otherwise 'auto'.
    """
def set_freed_memory_retention(bytes: typing.SupportsInt | typing.SupportsIndex) -> bool:
    """
    Keep up to `bytes` of freed memory in the C heap for reuse instead of returning it to the OS
    (glibc's M_TRIM_THRESHOLD; M_MMAP_THRESHOLD fixed at 32 MB), so that the activations a forward
    pass frees layer after layer are not page-faulted in again. Per malloc arena (the main heap, and
    worker threads' arenas stop shrinking), process-wide and final; bytes <= 0 does nothing. Returns
    whether glibc accepted it (False without glibc). `import llm4dsr` applies
    default_freed_memory_retention().
    """
def set_num_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Set libtorch's intra-op threads (n <= 0: $LLM4DSR_NUM_THREADS or the number of cores).
    """
def split_leave_one_out(users: SequenceSet) -> Splits:
    ...
def split_windows(users: SequenceSet, max_length: typing.SupportsInt | typing.SupportsIndex = 11, train_ratio: typing.SupportsFloat | typing.SupportsIndex = 0.8, valid_ratio: typing.SupportsFloat | typing.SupportsIndex = 0.1) -> Splits:
    ...
def synthetic_genres() -> list[str]:
    ...
def user_chunks(windows: SequenceSet, chunk_length: typing.SupportsInt | typing.SupportsIndex, protect_targets: bool = False) -> UserChunks:
    """
    Per-user unit: every history position of the split's windows once, in chunks of chunk_length items.
    """
def window_histories(windows: SequenceSet) -> list:
    """
    Per-window unit: every window's items but the target.
    """
def write_jsonl(sequences: SequenceSet, catalog: Catalog, path: str) -> None:
    """
    One JSON object per sequence, in external ids.
    """
def write_recbole(sequences: SequenceSet, catalog: Catalog, dir: str, name: str) -> None:
    """
    Sequences as RecBole atomic files dir/name.inter + dir/name.item.
    """
def write_splits_csv(splits: Splits, catalog: Catalog, dir: str) -> None:
    """
    Prepared splits in the LLM4DSR authors' CSV layout (train/valid/test.csv + id2name.json), labels kept.
    """
__version__: str = '0.1.0'

"""The embedded default's tiny policy: a ~1M-parameter model of the real Qwen2 architecture.

Built from a :class:`~transformers.Qwen2Config` into :class:`~transformers.Qwen2ForCausalLM`,
so everything downstream (rollout, training, loading) runs the same code that loads
Qwen2.5-Math-7B. Defaults (:class:`TinyConfig`): hidden 128, 4 layers, 4 query heads and 2
key/value heads (grouped-query attention, head dim 32), MLP 512, tied input/output
embeddings, context 512, RoPE base 10000 — 1,018,880 parameters with the 263-token
vocabulary of :mod:`skpo.models.tokenizer`.

Simplifications: no sliding window, no dropout; the vocabulary size is the tokenizer's size
exactly (not padded to a multiple of 64 as real checkpoints are).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM


@dataclass(frozen=True)
class TinyConfig:
    """Size of the tiny Qwen2 model."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


def tiny_qwen2_config(tokenizer: PreTrainedTokenizerBase, size: TinyConfig | None = None) -> Qwen2Config:
    """A :class:`Qwen2Config` of the given size whose vocabulary and special ids match ``tokenizer``."""
    size = size or TinyConfig()
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        intermediate_size=size.intermediate_size,
        max_position_embeddings=size.max_position_embeddings,
        rope_theta=size.rope_theta,
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase, size: TinyConfig | None = None, seed: int | None = None
) -> Qwen2ForCausalLM:
    """A freshly initialised tiny Qwen2 (float32, eval mode off). ``seed`` fixes the init."""
    config = tiny_qwen2_config(tokenizer, size)
    if seed is not None:
        torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())

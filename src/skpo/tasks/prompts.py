"""Prompt token ids for chat and plain models — the one place where prompts become tokens.

Training data, evaluation, SKPO's two phases and Monte Carlo continuations all start from the
ids built here, so a chat model sees the same prompt everywhere:

- **Chat** (the tokenizer has a chat template): ``apply_chat_template(messages,
  add_generation_prompt=True)``. What that call returns differs between ``transformers``
  versions (a ``list[int]`` before 5.0, a ``BatchEncoding`` with ``input_ids`` after; a tensor
  or a nested list when asked for tensors or a batch): :func:`as_token_ids` turns every one of
  them into a flat ``list[int]``, and the tests check the value, not the type. The template
  writes the model's own start tokens (e.g. Llama 3's ``<|begin_of_text|>``), so nothing else is
  added.
- **Plain** (no template, or chat switched off): the message contents joined by a blank line,
  encoded with the tokenizer's special tokens (a base Llama gets its BOS; Qwen adds none).

Stop tokens (:func:`stop_token_ids`): the tokenizer's EOS, the model's
``generation_config.eos_token_id`` (chat models often list several), and — for chat prompts —
the template's end-of-turn token (:func:`end_of_turn_ids`; Qwen's ``<|im_end|>`` is not the
base model's EOS, yet it is where an answer to a chat prompt ends).

Prompt head (:func:`prompt_head_length`): the tokens a model requires at the very start of its
input — the BOS token when the prompt begins with it. SKPO's skip input ``[s, q]`` keeps them
first: ``head + s + rest of q`` (see :func:`skpo.tasks.templates.skip_input_ids`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "as_token_ids",
    "chat_ids",
    "end_of_turn_ids",
    "has_chat_template",
    "messages_text",
    "prompt_head_length",
    "prompt_ids",
    "stop_token_ids",
]

Message = Mapping[str, Any]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def as_token_ids(value: Any) -> list[int]:
    """A flat ``list[int]`` from whatever a tokenizer call returned for one sequence.

    Accepts a list/tuple of ints, a ``[1, L]`` nested list, a mapping or ``BatchEncoding`` with
    ``input_ids``, a torch/numpy array of shape ``[L]`` or ``[1, L]``.

    Raises:
        TypeError: naming what was found, for anything else (e.g. a batch of several sequences).
    """
    if isinstance(value, Mapping):  # BatchEncoding is a UserDict, hence a Mapping
        if "input_ids" not in value:
            raise TypeError(f"tokenizer output has no input_ids (keys: {sorted(value.keys())})")
        value = value["input_ids"]
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise TypeError(f"expected token ids for one sequence, got {type(value).__name__}: {str(value)[:80]}")
    return [int(t) for t in value]


def chat_ids(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` under the tokenizer's chat template (generation prompt added)."""
    if not has_chat_template(tokenizer):
        raise ValueError("the tokenizer has no chat template")
    out = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
    return as_token_ids(out)


def messages_text(messages: Sequence[Message]) -> str:
    """The contents of ``messages`` joined by a blank line (the plain-prompt form)."""
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def prompt_ids(tokenizer: Any, messages: Sequence[Message], chat: bool | None = None) -> list[int]:
    """Prompt ids of ``messages``: chat-templated when ``chat`` (default: when the tokenizer
    has a template), else the plain text with the tokenizer's own special tokens."""
    if not messages:
        raise ValueError("a prompt needs at least one message")
    chat = has_chat_template(tokenizer) if chat is None else chat
    if chat:
        return chat_ids(tokenizer, messages)
    return as_token_ids(tokenizer.encode(messages_text(messages), add_special_tokens=True))


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The special token(s) the chat template writes right after an assistant message.

    Found by rendering a one-turn conversation with a marker answer and reading the special
    tokens that directly follow the marker (``<|im_end|>`` for Qwen, ``<|eot_id|>`` for Llama
    3). Empty when there is no template or nothing special follows.
    """
    if not has_chat_template(tokenizer):
        return []
    marker = "SKPOMARKER7319"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # a template that refuses this conversation: no end-of-turn token known
        return []
    if not isinstance(text, str) or marker not in text:
        return []
    tail = text[text.rindex(marker) + len(marker) :]
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    specials |= {int(i) for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(tok, "special", False)}
    out: list[int] = []
    for tid in as_token_ids(tokenizer.encode(tail, add_special_tokens=False)):
        if tid not in specials:
            break
        out.append(tid)
    return out[:1]


def stop_token_ids(tokenizer: Any, model: Any = None, chat: bool = False) -> list[int]:
    """Tokens that end an answer: tokenizer EOS, the model's generation-config EOS ids, and
    (``chat=True``) the template's end-of-turn token. Sorted, without duplicates."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None) if model is not None else None
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    if chat:
        ids.update(end_of_turn_ids(tokenizer))
    return sorted(ids)


def prompt_head_length(tokenizer: Any, ids: Sequence[int]) -> int:
    """How many leading tokens of a prompt must stay at the very start of any input built from
    it: 1 when the prompt opens with the tokenizer's BOS token, else 0."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos is not None and len(ids) > 0 and int(ids[0]) == int(bos))

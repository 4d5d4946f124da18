"""Prompt templates of the chained-arithmetic task, as text and as token ids.

SKPO conditions the policy three ways; each has a function here.

================  =========================  =============================================
conditioning      token ids                  text (problem ``37+48-12``, draft ``s``)
================  =========================  =============================================
plain ``q``       ``q_ids``                  ``Q: 37+48-12\\nA:\\n``
continual         ``q_ids + s_ids``          ``Q: 37+48-12\\nA:\\n`` + ``s`` (model continues)
skip ``[s, q]``   ``s_ids + q_ids``          ``s`` + ``Q: 37+48-12\\nA:\\n`` (fresh answer)
================  =========================  =============================================

The response after any of them is :func:`skpo.tasks.arith.solution_text` followed by the EOS
token, e.g. ``37+48=85\\n85-12=73\\nAnswer: 73<|endoftext|>``.

Skip input, exactly: ``skip_input_ids(s_ids, q_ids) == s_ids + q_ids`` (a prompt that opens
with a BOS token keeps it first: ``[BOS] + s_ids + q_ids[1:]``) — **no separator is
inserted**, which is the paper's best reading (reference U1: ``input_ids = s_token_ids +
original_prompt_token_ids``). The plain prompt is built so that this needs none: it starts
with the token ``Q``, which never occurs in a response (responses hold digits, operators,
``=``, spaces, newlines and ``Answer:``), so the boundary between draft and problem is one
unambiguous token even when the draft stops mid-number (SKPO cuts segments at an arbitrary
token). The tiny model learns to read this layout during the warm start
(:mod:`skpo.commands.warmstart_training`); with a real chat model, ``q_ids`` is the full chat-templated
prompt and the same concatenation applies.

Segments are token ids (a prefix of a sampled response), never re-tokenized text: with BPE
merges, ``encode(a) + encode(b)`` and ``encode(a + b)`` can differ (e.g. a draft cut inside
``Answer``), so all SKPO inputs are built from ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from skpo.tasks import countdown
from skpo.tasks.arith import ArithProblem, solution_text

PROMPT_PREFIX = "Q: "
PROMPT_SUFFIX = "\nA:\n"
SKIP_SEPARATOR_IDS: tuple[int, ...] = ()
"""Ids inserted between the segment and the prompt in the skip input: none (see module doc)."""


class TokenizerLike(Protocol):
    """What is used here of a tokenizer (a Hugging Face tokenizer fits)."""

    @property
    def eos_token_id(self) -> int | None: ...

    def encode(self, text: str, *, add_special_tokens: bool = ...) -> list[int]: ...


Synthetic = ArithProblem | countdown.CountdownProblem
"""A problem of either embedded task; both are written ``Q: <question>\\nA:\\n`` (countdown:
``Q: 44 19 3 8 -> 75\\nA:\\n``)."""


def _question(problem: Synthetic | str) -> str:
    return problem if isinstance(problem, str) else problem.question


def plain_prompt_text(problem: Synthetic | str) -> str:
    """The plain prompt ``q``: ``"Q: 37+48-12\\nA:\\n"``."""
    return f"{PROMPT_PREFIX}{_question(problem)}{PROMPT_SUFFIX}"


def response_text(problem: Synthetic) -> str:
    """The reference response (without EOS): the solution text of the problem's task."""
    if isinstance(problem, countdown.CountdownProblem):
        return countdown.solution_text(problem)
    return solution_text(problem)


def plain_input_ids(tokenizer: TokenizerLike, problem: Synthetic | str) -> list[int]:
    """Token ids of the plain prompt. Shape: ``[L_q]``."""
    return list(tokenizer.encode(plain_prompt_text(problem), add_special_tokens=False))


def continual_input_ids(prompt_ids: Sequence[int], segment_ids: Sequence[int]) -> list[int]:
    """Continual input (hard prefix): ``prompt_ids + segment_ids``; the model continues ``s``.

    Shape: ``[L_q + L_s]``.
    """
    return list(prompt_ids) + list(segment_ids)


def skip_input_ids(
    segment_ids: Sequence[int], prompt_ids: Sequence[int], head: int = 0, separator_ids: Sequence[int] = SKIP_SEPARATOR_IDS
) -> list[int]:
    """Skip input ``[s, q]``: ``q[:head] + segment_ids + separator_ids + q[head:]``.

    ``head`` counts the tokens a model requires at the very start of its input — the BOS token
    of a prompt that opens with one (Llama 3's ``<|begin_of_text|>``; see
    :func:`skpo.tasks.prompts.prompt_head_length`). They stay first, so the model reads
    ``<BOS> s <chat header …> q <assistant start>``, the reading that keeps the input a valid
    sequence for the model. With ``head = 0`` (Qwen, which has no BOS; the tiny model) this is
    ``s + q`` exactly. The separator is empty by default (reference U1). The model then writes
    a complete fresh answer. Shape: ``[L_s + L_q]``.
    """
    return list(prompt_ids[:head]) + list(segment_ids) + list(separator_ids) + list(prompt_ids[head:])


def response_ids(tokenizer: TokenizerLike, problem: Synthetic) -> list[int]:
    """Token ids of the reference response followed by EOS. Shape: ``[L_o]``."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; the response must end with one")
    ids = tokenizer.encode(response_text(problem), add_special_tokens=False)
    return list(ids) + [int(tokenizer.eos_token_id)]

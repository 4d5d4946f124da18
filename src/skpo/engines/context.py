"""The engine's context window: how many tokens a prompt and its completion may take together.

A rollout's longest request is the longest prompt, plus what its kind puts in front of the
answer (SKPO's skip input ``[s, q]`` carries a segment of up to ``split_high · L`` tokens),
plus the answer budget. The run sizes the engine for that and checks it against the model's
positions at start (and in ``--check``): a context the model cannot hold is a
:class:`ContextError` naming the settings to change. A user may set a smaller context
(``rollout.max_context_tokens``, at most the model's); then a completion that reaches it is cut
there — never silently: :class:`ContextLimit` clamps each request's budget to what fits, marks
the completion ``cut_by_context`` (finish reason ``"length"``: unfinished), counts it, and the
trainer logs the count (``rollout/cut_by_context``) and warns. vLLM alone would stop such a
completion at ``max_model_len`` with a plain ``"length"``, indistinguishable from a long answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from skpo.engines.engine import Completion, Engine, SamplingParams, resolve_max_new_tokens
from skpo.errors import UserError

__all__ = ["ContextError", "ContextLimit", "ContextWindow", "model_positions", "fit_context_window"]


class ContextError(UserError):
    """The context a run needs does not fit the model (or the engine's context was set wrong)."""


def model_positions(config: Any) -> int | None:
    """The most positions the model was trained for (``max_position_embeddings`` of a Hugging
    Face config, or the older names), ``None`` when the config names none."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    text = getattr(config, "text_config", None)  # multimodal configs nest the language model's
    return model_positions(text) if text is not None and text is not config else None


@dataclass(frozen=True)
class ContextWindow:
    """The run's context window: how many tokens a prompt and its completion may take together.

    Attributes:
        need: longest prompt + the rollout kind's growth of it + the answer budget (``None``: the
            kind's growth is not bounded in advance, e.g. refinement prompts that quote critiques).
        tokens: the engine's context window (``max_model_len``): the user's setting, else ``need``,
            else the model's positions.
        model_positions: the model's positions (``None``: unknown, not checked).
        longest_prompt, growth, answer_budget: the parts of ``need``.
    """

    need: int | None
    tokens: int
    model_positions: int | None
    longest_prompt: int
    growth: int | None
    answer_budget: int

    @property
    def may_cut(self) -> bool:
        """Whether some completion can reach the context before its answer budget."""
        return self.need is None or self.need > self.tokens


def fit_context_window(longest_prompt: int, growth: int | None, answer_budget: int, model_max: int | None,
                       setting: int | None = None, *, growth_note: str = "") -> ContextWindow:
    """The engine's context for a run, checked against the model.

    Args:
        longest_prompt: tokens of the longest training prompt (after the overlong filter).
        growth: tokens the rollout kind adds in front of an answer (SKPO's segment), ``None`` when unbounded.
        answer_budget: ``rollout.max_new_tokens``.
        model_max: the model's positions (``None``: not checked).
        setting: ``rollout.max_context_tokens`` (``None``: size it for the need).
        growth_note: what ``growth`` is, for the error message (e.g. "the skip segment s").

    Raises:
        ContextError: the need (or the setting) exceeds the model's positions, or the setting
            leaves no room for an answer to the longest prompt.
    """
    need = None if growth is None else longest_prompt + growth + answer_budget
    parts = f"longest prompt {longest_prompt} + {growth_note or 'prompt growth'} {growth} + answer budget {answer_budget}"
    if setting is not None:
        if model_max is not None and setting > model_max:
            raise ContextError(f"rollout.max_context_tokens={setting} exceeds the model's {model_max} positions "
                               f"(max_position_embeddings); set it to at most {model_max}")
        if setting <= longest_prompt:
            raise ContextError(f"rollout.max_context_tokens={setting} leaves no room for an answer to the longest "
                               f"prompt ({longest_prompt} tokens): raise it or lower data.max_prompt_tokens")
        return ContextWindow(need, setting, model_max, longest_prompt, growth, answer_budget)
    if need is None:
        return ContextWindow(None, model_max or longest_prompt + answer_budget, model_max, longest_prompt, growth,
                             answer_budget)
    if model_max is not None and need > model_max:
        raise ContextError(
            f"the rollout needs a context of {need} tokens ({parts}) but the model has {model_max} positions "
            f"(max_position_embeddings): lower rollout.max_new_tokens or data.max_prompt_tokens"
            + (" or method.rollout_params.split_high / rollout.initial_length" if "segment" in growth_note else "")
            + f", or set rollout.max_context_tokens={model_max} to cut the answers that reach the model's context "
            "(counted as rollout/cut_by_context and scored as unfinished)")
    return ContextWindow(need, need, model_max, longest_prompt, growth, answer_budget)


class ContextLimit:
    """An engine whose requests never run past ``context`` tokens (prompt + completion).

    Each prompt's budget is clamped to ``context - len(prompt)``; a completion that ends at a
    clamped budget is marked ``cut_by_context`` and counted in :attr:`cuts` (a prompt that leaves
    no room gets empty completions, cut). Everything else (``sleep``, ``sync_weights``, …) goes to
    the wrapped engine.
    """

    def __init__(self, engine: Engine, context: int) -> None:
        if context < 2:
            raise ValueError(f"context must be >= 2 tokens, got {context}")
        self.engine, self.context, self.cuts = engine, int(context), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompts: list[list[int]], n: int, params: SamplingParams,
                 max_new_tokens: list[int] | None = None) -> list[list[Completion]]:
        budgets = resolve_max_new_tokens(params, len(prompts), max_new_tokens)
        room = [max(0, self.context - len(p)) for p in prompts]
        clamped = [min(b, r) for b, r in zip(budgets, room)]
        out = self.engine.generate(prompts, n, params, max_new_tokens=clamped)
        for row, budget, limit in zip(out, budgets, clamped):
            if limit >= budget:
                continue
            for j, c in enumerate(row):
                if c.finish_reason == "length" and len(c.token_ids) >= limit:
                    row[j] = dataclasses.replace(c, cut_by_context=True)
                    self.cuts += 1
        return out

"""Prompt sources for training: a pool of prompts (token ids + a stable key) and the reward
that scores completions of them, a batch at a time.

The reward comes from the registry that evaluation uses (:mod:`skpo.rewards.registry`), so the
training reward and the reported accuracy are one piece of code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from skpo.rewards.base import Verdict
from skpo.rewards.registry import RewardContext, RewardEntry, get_reward
from skpo.tasks import countdown
from skpo.tasks.arith import ArithConfig, iter_problems
from skpo.tasks.dataset import (
    DatasetError,
    DatasetSpec,
    Problem,
    check_reward_columns,
    encode_problems,
    heldout_size,
    load_problems_and_columns,
    split_heldout,
)
from skpo.tasks.prompts import has_chat_template, prompt_head_length
from skpo.tasks.templates import plain_input_ids

log = logging.getLogger("skpo")


@dataclass(frozen=True)
class PromptItem:
    """One training prompt.

    Attributes:
        key: stable across runs: trackers and checkpoints are keyed by it.
        prompt_ids: the (chat-templated) prompt ``q``, ending where the answer starts.
        answer: the :class:`~skpo.tasks.dataset.Problem` the reward scores against.
        head: leading tokens of ``prompt_ids`` that stay first in any input built from it
            (the BOS token; see :func:`skpo.tasks.templates.skip_input_ids`).
    """

    key: str
    prompt_ids: tuple[int, ...]
    answer: Any
    head: int = 0


class PromptSource(Protocol):
    items: list[PromptItem]
    reward: RewardEntry
    chat: bool

    def score(self, items: Sequence[PromptItem], texts: Sequence[str]) -> list[Verdict]: ...

    def answer_marker_ids(self) -> tuple[int, ...]: ...

    def step_boundary_ids(self) -> tuple[int, ...]: ...


class _Scored:
    """``score`` through the source's reward entry, as one batch."""

    reward: RewardEntry
    context: RewardContext

    def score(self, items: Sequence[PromptItem], texts: Sequence[str]) -> list[Verdict]:
        """Verdicts of ``texts`` (completions, prompt excluded) of ``items``, one batch."""
        return self.reward.score(list(texts), [it.answer for it in items], self.context)


class _SyntheticSource(_Scored):
    """A synthetic task's training prompts: the first ``pool_size`` distinct problems of its
    seeded train-side stream, each prompted plainly (``Q: …\nA:\n``), one reasoning step per
    line before ``Answer:``."""

    chat = False

    def __init__(self, tokenizer, problems: Iterable[Any], pool_size: int, record: Callable[[int, Any], Problem],
                 reward: RewardEntry, context: RewardContext | None, where: str, config: Any) -> None:
        """``record(position, problem)``: the problem as the reward reads it; ``where``: the
        config section and ``config`` named when no problem can be drawn."""
        self.tokenizer, self.reward, self.context = tokenizer, reward, context or RewardContext()
        seen: set[str] = set()
        items: list[PromptItem] = []
        for draws, problem in enumerate(problems, start=1):
            if draws > 200 * pool_size:  # a narrow config may have fewer distinct problems
                break
            if problem.question in seen:
                continue
            seen.add(problem.question)
            items.append(PromptItem(problem.question, tuple(plain_input_ids(tokenizer, problem)),
                                    record(len(items), problem)))
            if len(items) == pool_size:
                break
        if not items:
            raise DatasetError(f"{where}: no training problems can be drawn from {config}")
        self.items = items
        self.dropped: list[str] = []

    def answer_marker_ids(self) -> tuple[int, ...]:
        """Token ids that open the final answer (``Answer:``): OAR scores tokens before it."""
        return tuple(self.tokenizer.encode("Answer:", add_special_tokens=False))

    def step_boundary_ids(self) -> tuple[int, ...]:
        """Newline tokens end a reasoning step (an equation, a move: one per line)."""
        return tuple(self.tokenizer.encode("\n", add_special_tokens=False))


class ArithSource(_SyntheticSource):
    """The embedded default: ``pool_size`` distinct train-side chained-arithmetic problems."""

    def __init__(self, tokenizer, config: ArithConfig, pool_size: int, seed: int, reward: RewardEntry | None = None,
                 context: RewardContext | None = None) -> None:
        super().__init__(
            tokenizer, iter_problems(config, seed, split="train"), pool_size,
            lambda i, p: Problem(index=i, id=p.question, question=p.question, gold=str(p.answer), arith=p),
            reward or get_reward("arith"), context, "data.arith", config)


class CountdownSource(_SyntheticSource):
    """The countdown task: ``pool_size`` distinct train-side problems (:mod:`skpo.tasks.countdown`),
    each prompt ``Q: 44 19 3 8 -> 75\\nA:\\n``; the ``countdown`` reward by default."""

    def __init__(self, tokenizer, config: countdown.CountdownConfig, pool_size: int, seed: int,
                 reward: RewardEntry | None = None, context: RewardContext | None = None) -> None:
        super().__init__(
            tokenizer, countdown.iter_problems(config, seed, split="train"), pool_size,
            lambda i, p: Problem(index=i, id=p.question, question=p.question, gold=str(p.target), countdown=p),
            reward or get_reward("countdown"), context, "data.countdown", config)


class DatasetSource(_Scored):
    """Prompts from a data file described by a :class:`~skpo.tasks.dataset.DatasetSpec`
    (JSONL, JSONL.gz or Parquet), chat-templated when the tokenizer has a template.

    Prompts longer than ``spec.max_prompt_tokens`` are dropped (their count is logged and kept
    in :attr:`dropped`) or refused (``overlong: error``). Keys: ``<file name>:<id>`` with an id
    column, else ``<file name>:<line>`` (JSONL) or ``<file name>:<row>``. ``heldout`` rows
    (:func:`~skpo.tasks.dataset.heldout_size`: ``None`` = a tenth, at most 100) are kept out of
    the prompts, in :attr:`heldout`, for evaluation (:func:`~skpo.tasks.dataset.split_heldout`).
    """

    def __init__(self, tokenizer, spec: DatasetSpec, reward: RewardEntry | None = None,
                 context: RewardContext | None = None, use_chat_template: bool | None = None,
                 heldout: int | None = 0) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.reward = reward or get_reward(spec.reward)
        self.chat = has_chat_template(tokenizer) if use_chat_template is None else use_chat_template
        self.context = context or RewardContext(plain_prompt=not self.chat, stop=tuple(spec.stop))
        path = spec.resolved_path()
        problems, self.columns = load_problems_and_columns(spec)
        self.rows = len(problems)  # rows read, before the hold-out split and the length filter
        check_reward_columns(problems, self.reward, path)  # (reward.function may read columns data.reward does not)
        problems, self.heldout = split_heldout(problems, heldout_size(heldout, len(problems)))
        if not problems:
            raise DatasetError(f"{path}: every row's prompt is one of the {len(self.heldout)} held out for evaluation "
                               "(data.heldout): hold out fewer rows")
        encoded = encode_problems(spec, tokenizer, problems, self.chat)
        self.dropped = encoded.dropped
        if encoded.dropped:
            log.info("%s: dropped %d of %d prompts longer than max_prompt_tokens=%d", path, len(encoded.dropped),
                     len(problems), spec.max_prompt_tokens)
        if not encoded.problems:
            raise DatasetError(f"{path}: no prompt fits max_prompt_tokens={spec.max_prompt_tokens} "
                             f"({len(problems)} rows, all longer)")
        items: list[PromptItem] = []
        seen: dict[str, int] = {}
        for problem, ids in zip(encoded.problems, encoded.prompt_ids):
            if spec.id_column is not None:
                key = f"{path.name}:{problem.id}"
            else:
                key = f"{path.name}:{problem.line if problem.line is not None else problem.index + 1}"
            if key in seen:  # two rows with one id must not share a tracker entry
                seen[key] += 1
                key = f"{key}#{seen[key]}"
            else:
                seen[key] = 0
            items.append(PromptItem(key, tuple(ids), problem, prompt_head_length(tokenizer, ids)))
        self.items = items

    def answer_marker_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode("\\boxed", add_special_tokens=False))

    def step_boundary_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode("\n\n", add_special_tokens=False))


# The name training configs have always used for a data file.
JsonlSource = DatasetSource

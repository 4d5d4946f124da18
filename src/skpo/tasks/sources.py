"""Prompt sources for training: a pool of prompts (token ids + a stable key) and the scorer
that turns a decoded response into a correct/incorrect verdict.

The same scorer is used by evaluation, so the training reward and the reported accuracy are
one piece of code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from skpo.jsonl import read_jsonl
from skpo.rewards.arith import check_answer
from skpo.tasks.arith import ArithConfig, iter_problems
from skpo.tasks.templates import plain_input_ids


@dataclass(frozen=True)
class PromptItem:
    key: str  # stable across runs: trackers and checkpoints are keyed by it
    prompt_ids: tuple[int, ...]
    answer: Any  # what the scorer compares against (a problem, a gold string)


class PromptSource(Protocol):
    items: list[PromptItem]

    def is_correct(self, item: PromptItem, response_text: str) -> bool: ...

    def answer_marker_ids(self) -> tuple[int, ...]: ...

    def step_boundary_ids(self) -> tuple[int, ...]: ...


class ArithSource:
    """The embedded default: ``pool_size`` distinct train-side chained-arithmetic problems."""

    def __init__(self, tokenizer, config: ArithConfig, pool_size: int, seed: int) -> None:
        self.tokenizer = tokenizer
        seen: set[str] = set()
        items: list[PromptItem] = []
        draws = 0
        for problem in iter_problems(config, seed, split="train"):
            draws += 1
            if draws > 200 * pool_size:  # an easy config may have fewer distinct problems
                break
            if problem.question in seen:
                continue
            seen.add(problem.question)
            items.append(PromptItem(problem.question, tuple(plain_input_ids(tokenizer, problem)), problem))
            if len(items) == pool_size:
                break
        if not items:
            raise ValueError(f"data.arith: no training problems can be drawn from {config}")
        self.items = items

    def is_correct(self, item: PromptItem, response_text: str) -> bool:
        return check_answer(response_text, item.answer)

    def answer_marker_ids(self) -> tuple[int, ...]:
        """Token ids that open the final answer (``Answer:``): OAR scores tokens before it."""
        return tuple(self.tokenizer.encode("Answer:", add_special_tokens=False))

    def step_boundary_ids(self) -> tuple[int, ...]:
        """Newline tokens end a reasoning step (one equation per line)."""
        return tuple(self.tokenizer.encode("\n", add_special_tokens=False))


class JsonlSource:
    """Math problems from a JSONL file with configurable columns, verified by math-verify."""

    def __init__(self, tokenizer, path: str | Path, prompt_key: str, answer_key: str, template: str, verifier: str) -> None:
        from skpo.rewards.math import gold_from_gsm8k, verify_math

        self.tokenizer = tokenizer
        self._verify = verify_math
        path = Path(path)
        items: list[PromptItem] = []
        for lineno, row in read_jsonl(path, what="training data"):
            for key in (prompt_key, answer_key):
                if key not in row:
                    raise ValueError(f"{path}:{lineno}: missing key {key!r} (row has {sorted(row)})")
            gold = str(row[answer_key])
            if verifier == "gsm8k":
                gold = gold_from_gsm8k(gold)
            text = template.format(question=row[prompt_key])
            if getattr(tokenizer, "chat_template", None):
                ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
            else:
                ids = tokenizer.encode(text, add_special_tokens=False)
            items.append(PromptItem(f"{path.name}:{lineno}", tuple(ids), gold))
        if not items:
            raise ValueError(f"{path}: no rows")
        self.items = items

    def is_correct(self, item: PromptItem, response_text: str) -> bool:
        return self._verify(response_text, item.answer).correct

    def answer_marker_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode("\\boxed", add_special_tokens=False))

    def step_boundary_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode("\n\n", add_special_tokens=False))

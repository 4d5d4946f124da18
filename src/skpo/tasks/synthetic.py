"""What the embedded synthetic tasks (chained arithmetic, countdown) share: the stable
train/eval split of their questions, their seeded problem streams and their fixed held-out
sets. Each task supplies its ``sample_problem(config, rng)`` and its stream's name; the numbers
drawn are the task's alone (``random.Random(f"{name}:{seed}")``)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar


class _Question(Protocol):
    @property
    def question(self) -> str: ...


P = TypeVar("P", bound=_Question)
Sampler = Callable[[Any, random.Random], P]


def split_of(question: str, eval_buckets: int = 16) -> str:
    """``"eval"`` for one question in ``eval_buckets`` (by a stable hash of the text), else ``"train"``."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % eval_buckets == 0 else "train"


def problem_stream(name: str, sample: Sampler[P], config: Any, seed: int, split: str | None) -> Iterator[P]:
    """An endless seeded stream of ``sample(config, rng)`` problems on ``split`` (``"train"``,
    ``"eval"``, ``None``: no filter; by :func:`split_of` with ``config.eval_buckets``)."""
    if split not in (None, "train", "eval"):
        raise ValueError(f"split must be 'train', 'eval' or None, got {split!r}")
    rng = random.Random(f"{name}:{seed}")
    while True:
        problem = sample(config, rng)
        if split is None or split_of(problem.question, config.eval_buckets) == split:
            yield problem


def distinct_heldout(name: str, sample: Sampler[P], config: Any, seed: int, n: int) -> list[P]:
    """A fixed held-out set: ``n`` distinct eval-side problems from the stream
    ``random.Random(f"{name}-heldout:{seed}")``."""
    rng = random.Random(f"{name}-heldout:{seed}")
    seen: set[str] = set()
    out: list[P] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 10_000 * max(n, 1):
            raise RuntimeError(f"could not draw {n} distinct held-out problems for {config}")
        problem = sample(config, rng)
        if problem.question in seen or split_of(problem.question, config.eval_buckets) != "eval":
            continue
        seen.add(problem.question)
        out.append(problem)
    return out


__all__ = ["distinct_heldout", "problem_stream", "split_of"]

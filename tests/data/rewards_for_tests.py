"""Reward functions used by the tests through ``reward.function: tests/data/rewards_for_tests.py:NAME``.

A randomly initialised stand-in model never solves a math problem, so every group would get the
same reward and no gradient: ``parity`` scores a completion by a hash of its text instead, which
gives every group mixed rewards deterministically.
"""

from __future__ import annotations

import zlib


def parity(completion: str, example) -> bool:
    """Correct when the CRC-32 of the completion is odd (about half the answers)."""
    return zlib.crc32(completion.encode("utf-8", "surrogatepass")) % 2 == 1


def partial(completion: str, example) -> float:
    """Partial credit: a quarter per digit of the gold answer that occurs in the completion."""
    digits = set(str(example.gold))
    return min(1.0, 0.25 * sum(d in completion for d in digits if d.isdigit()))


def parity_batched(completions, examples):
    return [{"reward": float(parity(c, e)), "reason": "crc"} for c, e in zip(completions, examples)]


parity_batched.batched = True


def always_full_reward_never_correct(completion: str, example) -> dict:
    """Reward 1 but not correct: shows accuracy is read from the verdict, not the reward."""
    return {"reward": 1.0, "correct": False, "reason": "style points"}


def out_of_range(completion: str, example) -> float:
    return 2.0


def raises(completion: str, example) -> float:
    raise KeyError("no such column")


def plus_minus(completion: str, example) -> float:
    """±1: +1 when :func:`parity` holds (a reward in ``reward.range: [-1, 1]``)."""
    return 1.0 if parity(completion, example) else -1.0


def two(completion: str, example) -> float:
    """Always 2: outside ``[-1, 1]``."""
    return 2.0


def broken(completion: str, example) -> float:
    """Raises: a reward with a bug."""
    raise ZeroDivisionError("a bug in the reward")


def hangs(completion: str, example) -> float:
    """Never returns (a reward stuck on a lock, a network call, an infinite loop)."""
    import time

    while True:
        time.sleep(1)


def exits(completion: str, example) -> float:
    """Calls ``sys.exit`` inside (a script's habit)."""
    import sys

    sys.exit(0)

"""The learning-rate schedule shared by the trainer and the warm start."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from skpo.training.actor import Actor
from skpo.training.schedule import lr_factor


def _trainer_formula_before_the_move(step: int, steps: int, warmup: int, schedule: str) -> float:
    """``Actor._lr_factor`` as it was written inline, kept here to pin the refactor."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or steps <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("steps,warmup", [(1, 0), (7, 0), (100, 10), (10, 10), (5, 8), (333, 17)])
def test_trainer_schedule_is_bit_identical(schedule, steps, warmup):
    train = SimpleNamespace(steps=steps, warmup_steps=warmup, lr_schedule=schedule)
    trainer = SimpleNamespace(settings=SimpleNamespace(train=train))  # (an actor: only its settings are read)
    for step in range(steps + 1):  # LambdaLR also asks for the step after the last
        expected = _trainer_formula_before_the_move(step, steps, warmup, schedule)
        assert lr_factor(step, steps, warmup, schedule) == expected  # exact, not approximate
        assert Actor._lr_factor(trainer, step) == expected


def test_hand_values_and_floor():
    assert lr_factor(0, 100, 4, "cosine") == 0.25  # (0 + 1) / 4
    assert lr_factor(4, 100, 4, "linear") == 1.0
    assert lr_factor(52, 100, 4, "linear") == 0.5  # (52 − 4) / 96 = 1/2 of the decay done
    assert lr_factor(52, 100, 4, "cosine") == pytest.approx(0.5)  # cos(π/2) = 0
    assert lr_factor(100, 100, 4, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(52, 100, 4, "linear", min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(99, 100, 0, "constant", min_ratio=0.5) == 1.0
    with pytest.raises(ValueError, match="warmup-cosine"):
        lr_factor(0, 10, 0, "warmup-cosine")

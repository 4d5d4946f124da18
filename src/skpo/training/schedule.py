"""The learning-rate schedule: one pure function, shared by the RL trainer and the warm start.

``lr_factor`` multiplies the base learning rate (``torch.optim.lr_scheduler.LambdaLR`` in the
trainer, set by hand in the warm start's loop):

- warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first step already
  trains, at ``lr / warmup_steps``);
- then ``constant`` (1), or ``cosine`` / ``linear`` decay from 1 at the end of the warm-up to
  ``min_ratio`` at ``total_steps``;
- a schedule with ``total_steps <= warmup_steps`` stays at 1 after the warm-up.
"""

from __future__ import annotations

import math

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear")


def lr_factor(step: float, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based; a float is allowed for a
    position on a wall-clock axis).

    Args:
        total_steps: the step at which the decay reaches ``min_ratio``.
        warmup_steps: linear warm-up length (0: none).
        schedule: one of :data:`SCHEDULES`.
        min_ratio: floor of the decay, as a fraction of the base rate. With ``0`` the value is
            exactly ``0.5 · (1 + cos(π·p))`` (cosine) or ``1 − p`` (linear), ``p`` the
            post-warm-up progress: ``0 + 1 · x`` is ``x`` in floating point.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {SCHEDULES}")
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay

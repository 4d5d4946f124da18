"""The one mapping between a verdict's ``[0, 1]`` reward and a reward range ``(lo, hi)``: the
method's ``reward_range`` (what estimators see) or the user's ``reward.range`` (what a user
reward returns). Floats and tensors alike; the operation order is fixed (``lo + (hi − lo)·x``
and ``(r − lo) / (hi − lo)``), so every caller gets the same numbers bit for bit."""

from __future__ import annotations

from typing import TypeVar

Value = TypeVar("Value")  # a float, or a tensor of any shape


def from_unit(unit: Value, value_range: tuple[float, float]) -> Value:
    """``[0, 1]`` → ``[lo, hi]``: ``lo + (hi − lo) · unit``."""
    lo, hi = value_range
    return lo + (hi - lo) * unit  # type: ignore[operator,return-value]


def to_unit(value: Value, value_range: tuple[float, float]) -> Value:
    """``[lo, hi]`` → ``[0, 1]``: ``(value − lo) / (hi − lo)`` (not clamped)."""
    lo, hi = value_range
    return (value - lo) / (hi - lo)  # type: ignore[operator,return-value]


def rescale(value: Value, source: tuple[float, float], target: tuple[float, float]) -> Value:
    """``source`` → ``target`` through ``[0, 1]``: a reward in the method's range shown in the
    user's ``reward.range`` (logs and samples)."""
    return from_unit(to_unit(value, source), target)


__all__ = ["from_unit", "rescale", "to_unit"]

"""The warm start's settings (``warmstart.json`` records them): a plain dataclass without the
training stack, so ``skpo warmstart --help`` answers at once. The run is
:mod:`skpo.commands.warmstart_training`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skpo.tasks.arith import ArithConfig
from skpo.tasks.countdown import CountdownConfig

if TYPE_CHECKING:
    from skpo.models.tiny import TinyConfig  # heavy (transformers): --help reads this module

__all__ = ["WarmstartConfig"]


def _tiny_config() -> TinyConfig:
    from skpo.models.tiny import TinyConfig  # heavy (transformers): --help reads this module

    return TinyConfig()


@dataclass
class WarmstartConfig:
    """Everything that determines a warm-start run (saved in ``warmstart.json``)."""

    seed: int = 0
    steps: int | None = 2000
    minutes: float | None = None
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mix: tuple[float, float, float] = (0.5, 0.25, 0.25)  # plain, skip_correct, skip_flawed
    target_avg: float | None = 0.3  # stop at the first check with validation plain avg@k >= this
    check_every: int = 50
    val_problems: int = 64
    val_k: int = 8
    threads: int = 2
    task: ArithConfig | CountdownConfig = field(default_factory=ArithConfig)  # which task: the type
    model: TinyConfig = field(default_factory=_tiny_config)
    init: str | None = None  # a saved model to continue from (curriculum); None = fresh tiny model

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps or minutes (or both)")
        if self.target_avg is not None and not 0.0 < self.target_avg <= 1.0:
            raise ValueError(f"target_avg must be in (0, 1] or None, got {self.target_avg}")
        if len(self.mix) != 3 or min(self.mix) < 0 or sum(self.mix) <= 0:
            raise ValueError(f"mix must be three non-negative weights, got {self.mix}")

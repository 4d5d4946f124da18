"""Per-prompt trackers with exactly restorable state: SPO's value tracker and SKPO's length
tracker, both KL-adaptive exponential moving averages, and prioritised prompt sampling.

The update (SPO, Xu & Ding 2025; SKPO §3.2) for an observation ``x`` of prompt ``q``:

    ρ = clip(2^(−D/τ½), ρ_min, ρ_max)      D = KL since the policy last acted on q
    η = 1 / (ρ·N + 1)                       N = discounted observation count
    v ← v + η·(x − v);   N ← ρ·N + 1

A new prompt has ``N = 0`` so its first observation overwrites the prior (η = 1): SKPO
drops SPO's offline warm-up.

Readings of points the paper leaves open (reference §1.10), each a switch where cheap:
- U4: ``rho_mode="kl"`` (default, the formula as written: D is a KL supplied per prompt)
  or ``"steps"`` (D = steps since the prompt was last seen; τ½ = 8 "steps").
- U5: N is updated *after* η is computed: ``η = 1/(ρ N_old + 1)``, ``N_new = ρ N_old + 1``.
- U6: the length tracker is fed the mean downstream response length of the prompt.
- ``overwrite_first=False`` treats the prior as one pseudo-observation instead.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import torch

from skpo.reward_range import from_unit, to_unit

RHO_MODES = ("kl", "steps")


@dataclass
class _Entry:
    value: float
    count: float
    last_step: int | None


class KLAdaptiveEMA:
    """A per-key KL-adaptive EMA. Keys are any hashable prompt id (a dataset index or a hash
    of the prompt); they must be JSON-friendly (str/int) for ``state_dict`` round trips."""

    def __init__(
        self,
        prior: float,
        rho_min: float = 0.875,
        rho_max: float = 0.96,
        half_life: float = 8.0,
        rho_mode: str = "kl",
        overwrite_first: bool = True,
    ) -> None:
        if rho_mode not in RHO_MODES:
            raise ValueError(f"rho_mode must be one of {RHO_MODES} (got {rho_mode!r})")
        if not 0.0 < rho_min <= rho_max <= 1.0:
            raise ValueError(f"need 0 < rho_min <= rho_max <= 1 (got {rho_min}, {rho_max})")
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0 (got {half_life})")
        self.prior = float(prior)
        self.rho_min, self.rho_max, self.half_life = float(rho_min), float(rho_max), float(half_life)
        self.rho_mode = rho_mode
        self.overwrite_first = overwrite_first
        self._entries: dict[Hashable, _Entry] = {}

    # -- reading
    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> float:
        entry = self._entries.get(key)
        return self.prior if entry is None else entry.value

    def count(self, key: Hashable) -> float:
        entry = self._entries.get(key)
        return 0.0 if entry is None else entry.count

    def rho(self, key: Hashable, kl: float | None = None, step: int | None = None) -> float:
        """The forgetting factor for the next update of ``key``."""
        if self.rho_mode == "kl":
            if kl is None:
                raise ValueError("rho_mode='kl' needs the KL since the prompt was last seen")
            distance = max(float(kl), 0.0)
        else:
            if step is None:
                raise ValueError("rho_mode='steps' needs the current step")
            entry = self._entries.get(key)
            last = entry.last_step if entry is not None and entry.last_step is not None else step - 1
            distance = float(step - last)
        return min(max(2.0 ** (-distance / self.half_life), self.rho_min), self.rho_max)

    # -- writing
    def update_one(self, key: Hashable, observation: float, kl: float | None = None, step: int | None = None) -> float:
        """Fold one observation in; returns the new value."""
        rho = self.rho(key, kl=kl, step=step)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(self.prior, 0.0 if self.overwrite_first else 1.0, None)
        eta = 1.0 / (rho * entry.count + 1.0)
        entry.value += eta * (float(observation) - entry.value)
        entry.count = rho * entry.count + 1.0
        entry.last_step = step
        self._entries[key] = entry
        return entry.value

    # -- state
    def state_dict(self) -> dict:
        """Plain, JSON-serialisable state (floats round-trip exactly through JSON)."""
        return {
            "config": {
                "prior": self.prior,
                "rho_min": self.rho_min,
                "rho_max": self.rho_max,
                "half_life": self.half_life,
                "rho_mode": self.rho_mode,
                "overwrite_first": self.overwrite_first,
            },
            "keys": [_encode_key(k) for k in self._entries],
            "values": [e.value for e in self._entries.values()],
            "counts": [e.count for e in self._entries.values()],
            "last_steps": [e.last_step for e in self._entries.values()],
        }

    def load_state_dict(self, state: dict) -> None:
        config = state["config"]
        if config != self.state_dict()["config"]:
            raise ValueError(f"tracker state was saved with config {config}, this tracker has {self.state_dict()['config']}")
        self._entries = {
            _decode_key(k): _Entry(float(v), float(c), None if s is None else int(s))
            for k, v, c, s in zip(state["keys"], state["values"], state["counts"], state["last_steps"], strict=True)
        }


def _encode_key(key: Hashable) -> list:
    return ["t", list(key)] if isinstance(key, tuple) else ["k", key]


def _decode_key(encoded: list) -> Hashable:
    tag, key = encoded
    return tuple(key) if tag == "t" else key


class ValueTracker(KLAdaptiveEMA):
    """SPO per-prompt value baseline ``V̂(q)`` in reward space.

    Rewards in ``[r_lo, r_hi]`` (SKPO: ±1) are mapped to [0, 1] for the update and back when
    read. The default baseline of an unseen prompt is ``default_value`` (0 in reward space,
    0.5 in [0, 1]).
    """

    def __init__(
        self,
        reward_range: tuple[float, float] = (-1.0, 1.0),
        default_value: float = 0.0,
        **ema_kwargs,
    ) -> None:
        lo, hi = reward_range
        if not hi > lo:
            raise ValueError(f"reward_range must be increasing (got {reward_range})")
        self.reward_range = (float(lo), float(hi))
        super().__init__(prior=self._to_unit(default_value), **ema_kwargs)

    def _to_unit(self, reward: float) -> float:
        return to_unit(float(reward), self.reward_range)

    def _from_unit(self, unit: float) -> float:
        return from_unit(unit, self.reward_range)

    def baseline(self, keys: Sequence[Hashable]) -> torch.Tensor:
        """``[B]`` baselines in reward space; read them *before* ``update`` (unbiased A)."""
        return torch.tensor([self._from_unit(self.get(k)) for k in keys], dtype=torch.float32)

    def success_prob(self, keys: Sequence[Hashable]) -> torch.Tensor:
        """``[B]`` tracked values in [0, 1] (``v̂`` of SPO's prioritised sampling)."""
        return torch.tensor([self.get(k) for k in keys], dtype=torch.float64)

    def update(
        self,
        keys: Sequence[Hashable],
        rewards: Iterable[float],
        kls: Iterable[float] | None = None,
        step: int | None = None,
    ) -> None:
        """Fold in one reward per key (in order; a key repeated in one call updates twice)."""
        rewards = [float(r) for r in rewards]
        kl_list: list[float | None] = [None] * len(rewards) if kls is None else [float(x) for x in kls]
        for key, reward, kl in zip(keys, rewards, kl_list, strict=True):
            self.update_one(key, self._to_unit(reward), kl=kl, step=step)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["reward_range"] = list(self.reward_range)
        return state

    def load_state_dict(self, state: dict) -> None:
        if tuple(state.get("reward_range", ())) != self.reward_range:
            raise ValueError(f"tracker state has reward_range {state.get('reward_range')}, expected {list(self.reward_range)}")
        super().load_state_dict(state)


class LengthTracker(KLAdaptiveEMA):
    """SKPO's per-prompt running response length ``L_q`` and the split point
    ``t_q ~ UniformInt[⌈L_q·low⌉, ⌊L_q·high⌋]`` (low = 1/6, high = 1/2; at least 1 token).

    ``initial`` is 1024 for real models (the paper); scale it to the task.
    """

    def __init__(self, initial: float = 1024.0, low: float = 1 / 6, high: float = 1 / 2, **ema_kwargs) -> None:
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"split fractions need 0 < low <= high <= 1 (got {low}, {high})")
        self.low, self.high = float(low), float(high)
        super().__init__(prior=float(initial), **ema_kwargs)

    def split_range(self, key: Hashable) -> tuple[int, int]:
        """Inclusive integer range of the split point for ``key``."""
        length = self.get(key)
        lo = max(1, math.ceil(length * self.low))
        hi = max(lo, math.floor(length * self.high))
        return lo, hi

    def sample_split(self, keys: Sequence[Hashable], generator: torch.Generator | None = None) -> list[int]:
        """One split point per key, uniform over its integer range."""
        points = []
        for key in keys:
            lo, hi = self.split_range(key)
            points.append(int(torch.randint(lo, hi + 1, (1,), generator=generator).item()))
        return points

    def update(
        self,
        keys: Sequence[Hashable],
        lengths: Iterable[float],
        kls: Iterable[float] | None = None,
        step: int | None = None,
    ) -> None:
        lengths = [float(x) for x in lengths]
        kl_list: list[float | None] = [None] * len(lengths) if kls is None else [float(x) for x in kls]
        for key, length, kl in zip(keys, lengths, kl_list, strict=True):
            self.update_one(key, length, kl=kl, step=step)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["split"] = [self.low, self.high]
        return state

    def load_state_dict(self, state: dict) -> None:
        if list(state.get("split", ())) != [self.low, self.high]:
            raise ValueError(f"tracker state has split fractions {state.get('split')}, expected {[self.low, self.high]}")
        super().load_state_dict(state)


def prioritized_weights(success_prob: torch.Tensor, epsilon: float = 0.05) -> torch.Tensor:
    """SPO Eq. 11: ``w(q) ∝ sqrt(v̂(1 − v̂)) + ε`` with ``v̂`` in [0, 1]; ``[N] → [N]``."""
    p = success_prob.to(torch.float64).clamp(0.0, 1.0)
    return torch.sqrt(p * (1 - p)) + epsilon


def prioritized_sample(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator | None = None, replacement: bool = False
) -> torch.Tensor:
    """Indices ``[num_samples]`` drawn with probability proportional to ``weights``."""
    if num_samples > weights.numel() and not replacement:
        raise ValueError(f"cannot draw {num_samples} distinct prompts from {weights.numel()}")
    return torch.multinomial(weights.to(torch.float64), num_samples, replacement=replacement, generator=generator)

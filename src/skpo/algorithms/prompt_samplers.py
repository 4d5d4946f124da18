"""Prompt samplers: which prompts a step trains on and how many answers each gets.

A method document names one with ``prompt_sampling`` (and ``prompt_sampling_params``); it is
registered in ``PROMPT_SAMPLERS`` like an estimator — a class, the frozen dataclass of its
parameters, and metadata the trainer and the method validation read instead of its name:

=============  ======================================================================================
``needs``      ``("value_tracker",)``: reads the per-prompt value tracker (SPO's prioritised sampling)
``allocates``  ``True``: returns a group size per prompt (a variable number of answers), so the
               rollout kind must take per-prompt group sizes (its ``variable_group_size``) and
               DAPO's refill, which would draw past the fixed rollout budget, is refused
``label``      how ``skpo methods`` names it in the table
=============  ======================================================================================

A sampler is one object per run (built from its parameters) with replicated, checkpointed
state. The trainer asks it for the step's :class:`PromptPlan` (pool positions and optional
group sizes; a function of the seed, the step and its state only, so every rank and a resumed
run plan the same batch), feeds it every step's rewards (:meth:`PromptSampler.observe`) and,
when :meth:`PromptSampler.scoring_due` says so, runs fresh scoring rollouts over the pool and
hands their correctness to :meth:`PromptSampler.observe_scoring` (their tokens count as
decoded). Shipped:

- ``uniform``: ``B`` distinct prompts uniformly at random (with replacement when the pool is
  smaller than ``B``).
- ``prioritized``: SPO Eq. 11, ``w(q) ∝ sqrt(v̂(1 − v̂)) + 0.05`` from the value tracker.
- ``knapsack``: Knapsack RL (Li et al. 2025, arXiv 2509.25849; code liziniu/KnapsackRL@ca5d5f5,
  ``verl/trainer/ppo/exploration_utils.py`` and ``verl/utils/dataset/rl_dataset.py``): uniform
  prompts, then the fixed budget ``B·G`` of rollouts split over them by a knapsack DP over
  ``Value(N, p) = (1 − p^N − (1 − p)^N)·p(1 − p)²``, ``p`` a per-prompt pass rate from a
  reward history (:class:`PassRateHistory`).
- ``vas``: MMR1's Variance-Aware Sampling (Leng et al. 2025, arXiv 2509.21268; code
  LengSicong/MMR1@d8161a0, ``verl/curriculum/samplers.py``, ``verl/trainer/ray_trainer.py``,
  ``examples/mmr1.yaml``): a ``λ`` share of the batch drawn in proportion to the Variance
  Promotion Score (min-max normalised ``p(1 − p)`` from ``n_c`` fresh rollouts per pool prompt,
  refreshed every ``T`` steps), the rest uniform.

Readings and deviations are listed at each class and in ``docs/methods.md``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from skpo.registry import Registry

from .trackers import ValueTracker, prioritized_sample, prioritized_weights

__all__ = [
    "PROMPT_SAMPLERS", "KnapsackParams", "KnapsackSampler", "PassRateHistory", "PlanRequest", "PromptPlan",
    "PromptSampler", "VASParams", "VASSampler", "build_prompt_sampler", "knapsack_allocation",
    "knapsack_extra_rollouts", "knapsack_value", "outcome_variance_score", "rollouts_for_signal",
    "uniform_indices", "vas_batch_indices", "variance_promotion_weights",
]


@dataclass
class PlanRequest:
    """What a sampler may read to plan one batch.

    Attributes:
        keys: ``[N]`` the pool's prompt keys, in pool order.
        num_prompts: ``B``, the step's global number of prompts.
        group_size: ``G``, the method's nominal answers per prompt.
        step / draw: the step, and 0 for its batch or ≥ 1 for DAPO's further rounds.
        seed: the run's seed (for state that spans steps, e.g. a fixed permutation of the pool).
        generator: seeded by ``(seed, step, draw)``; the plan's randomness comes from it.
        value_tracker: the per-prompt value tracker (samplers with ``needs=("value_tracker",)``).
    """

    keys: Sequence[Hashable]
    num_prompts: int
    group_size: int
    step: int
    generator: torch.Generator
    draw: int = 0
    seed: int = 0
    value_tracker: ValueTracker | None = None


@dataclass
class PromptPlan:
    """One batch: ``indices`` ``[B']`` into the pool, ``group_sizes`` ``[B']`` answers per prompt
    (``None``: ``G`` each; prompts given 0 answers are left out), the sampler's metrics."""

    indices: list[int]
    group_sizes: list[int] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class PromptSampler(abc.ABC):
    """Abstract base: no per-prompt statistics, no scoring rollouts; every registered sampler
    defines :meth:`plan`."""

    def __init__(self, params: Any) -> None:
        self.params = params

    @abc.abstractmethod
    def plan(self, request: PlanRequest) -> PromptPlan:
        """The step's batch: which pool prompts, and how many answers each."""

    def observe(self, keys: Sequence[Hashable], unit_rewards: Sequence[float], step: int) -> None:  # noqa: B027 - optional
        """Rewards in [0, 1] of this step's rows, one per row (a key's rows are one visit)."""

    def scoring_due(self, step: int) -> int:
        """Answers to sample per pool prompt before planning ``step`` (0: none)."""
        return 0

    def observe_scoring(self, keys: Sequence[Hashable], correct: Sequence[Sequence[bool]], step: int) -> None:  # noqa: B027
        """Correctness of the scoring answers of every pool prompt (``keys`` in pool order)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}")


PROMPT_SAMPLERS: Registry[type[PromptSampler]] = Registry("prompt sampler")


def build_prompt_sampler(name: str, params: dict[str, Any] | None = None) -> PromptSampler:
    """The sampler ``name`` with its parameters (an unknown key is an error naming it)."""
    entry = PROMPT_SAMPLERS.get(name)
    return entry.fn(entry.make_params(dict(params or {})))


def _grouped(keys: Sequence[Hashable], values: Sequence[float]) -> dict[Hashable, list[float]]:
    """Values by key, keys in order of first appearance."""
    out: dict[Hashable, list[float]] = {}
    for key, value in zip(keys, values, strict=True):
        out.setdefault(key, []).append(float(value))
    return out


# ----------------------------------------------------------------------------- uniform / prioritized


def uniform_indices(pool_size: int, num: int, generator: torch.Generator) -> torch.Tensor:
    """``[num]`` distinct pool positions uniformly at random (with replacement when ``num`` exceeds
    the pool)."""
    if num <= pool_size:
        return torch.randperm(pool_size, generator=generator)[:num]
    return torch.randint(pool_size, (num,), generator=generator)


@dataclass(frozen=True)
class NoSamplerParams:
    """Parameter record of samplers without hyper-parameters."""


@PROMPT_SAMPLERS.register("uniform", NoSamplerParams)
class UniformSampler(PromptSampler):
    """``B`` prompts uniformly at random, ``G`` answers each."""

    def plan(self, request: PlanRequest) -> PromptPlan:
        return PromptPlan(uniform_indices(len(request.keys), request.num_prompts, request.generator).tolist())


@PROMPT_SAMPLERS.register("prioritized", NoSamplerParams, needs=("value_tracker",), label="prioritised prompts")
class PrioritizedSampler(PromptSampler):
    """SPO's prioritised sampling: ``w(q) ∝ sqrt(v̂(1 − v̂)) + 0.05`` (Eq. 11), ``v̂`` the value
    tracker's success probability; distinct prompts unless the pool is smaller than ``B``."""

    def plan(self, request: PlanRequest) -> PromptPlan:
        if request.value_tracker is None:
            raise ValueError("prioritized prompt sampling needs the value tracker")
        weights = prioritized_weights(request.value_tracker.success_prob(list(request.keys)))
        n = request.num_prompts
        idx = prioritized_sample(weights, n, generator=request.generator, replacement=n > len(request.keys))
        return PromptPlan(idx.tolist())


# ----------------------------------------------------------------------------- Knapsack RL


def knapsack_value(n: torch.Tensor | int, p: torch.Tensor | float) -> torch.Tensor:
    """Knapsack RL's value of ``N`` rollouts of a prompt with pass rate ``p``: the probability
    that the group has a non-zero GRPO gradient times the information gain,

        Value(N, p) = (1 − p^N − (1 − p)^N) · p(1 − p)²

    Shapes broadcast (``[M, K]`` from ``n [K]`` and ``p [M, 1]``); float64.
    """
    n = torch.as_tensor(n, dtype=torch.float64)
    p = torch.as_tensor(p, dtype=torch.float64)
    return (1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2


def rollouts_for_signal(p: torch.Tensor, alpha: float = 0.9, cost: str = "probability") -> torch.Tensor:
    """The rollouts a frontier prompt (``0 < p < 1``) needs before its group carries a gradient:
    ``probability``: ``log(1 − α) / log(max(p, 1 − p))`` (a mixed group with probability α);
    ``expectation``: ``1 / (p(1 − p)) − 1``. ``[M] → [M]`` float64."""
    p = torch.as_tensor(p, dtype=torch.float64)
    if cost == "probability":
        return math.log(1 - alpha) / torch.log(torch.maximum(p, 1 - p))
    if cost == "expectation":
        return 1 / (p * (1 - p)) - 1
    raise ValueError(f"cost must be 'probability' or 'expectation' (got {cost!r})")


def knapsack_extra_rollouts(
    p: torch.Tensor, budget: int, min_n: int, max_extra: int, count_base_value: bool = False
) -> torch.Tensor:
    """The grouped-knapsack DP of Knapsack RL over frontier prompts that already hold ``min_n``
    rollouts each: ``k_i ∈ [0, max_extra]`` extra rollouts with ``Σ k_i = budget`` (or as much of
    it as the caps allow; the rest is spread evenly, first prompts first, as the authors' code
    does), maximising ``Σ_i gain_i(k_i)``.

    ``gain_i(k) = Value(min_n + k, p_i)`` for ``k ≥ 1``; for ``k = 0`` the authors' DP counts 0
    (``count_base_value=False``, the default) — the objective as written counts
    ``Value(min_n, p_i)`` (``True``). Ties keep the smaller ``k`` of the later prompt, as the
    authors' strict ``>`` comparisons do.

    Args:
        p: ``[M]`` pass rates in (0, 1).
    Returns:
        ``[M]`` long extra rollouts.
    """
    m = len(p)
    extra = torch.zeros(m, dtype=torch.long)
    if budget <= 0 or m == 0:
        return extra
    usable = min(budget, m * max_extra)
    if usable > 0:
        ks = torch.arange(max_extra + 1)
        gains = knapsack_value(min_n + ks, p.to(torch.float64).unsqueeze(-1))  # [M, K+1]
        if not count_base_value:
            gains[:, 0] = 0.0
        best = torch.full((usable + 1,), -math.inf, dtype=torch.float64)  # best[w]: exactly w extras so far
        best[0] = 0.0
        choice = torch.zeros(m, usable + 1, dtype=torch.long)
        w = torch.arange(usable + 1)
        for i in range(m):
            # candidates[w, k] = best[w − k] + gain_i(k)   ([W+1, K+1]; −inf where w < k)
            prev = torch.cat([torch.full((max_extra,), -math.inf, dtype=torch.float64), best])
            candidates = prev[w.unsqueeze(1) - ks.unsqueeze(0) + max_extra] + gains[i].unsqueeze(0)
            best, choice[i] = candidates.max(dim=1)  # first maximum: the smallest k
        left = usable
        for i in reversed(range(m)):
            extra[i] = choice[i, left]
            left -= int(extra[i])
    rest = budget - usable
    if rest > 0:  # the caps left budget over: spread it evenly (may exceed max_n, as the source does)
        extra += rest // m
        extra[: rest % m] += 1
    return extra


def _spread(sizes: torch.Tensor, where: torch.Tensor, amount: int) -> None:
    """Add ``amount`` evenly over the positions ``where`` (the first ones get the remainder)."""
    idx = torch.nonzero(where).flatten()
    sizes[idx] += amount // len(idx)
    sizes[idx[: amount % len(idx)]] += 1


def knapsack_allocation(
    p: torch.Tensor, trusted: torch.Tensor, default_n: int, total_budget: int, params: KnapsackParams
) -> tuple[torch.Tensor, dict[str, float]]:
    """Rollouts per prompt under a fixed total (Knapsack RL's ``sampling_budget_by_knapsack``).

    1. Untrusted prompts (too little history) get ``default_n``; trusted ones with ``p = 0`` get
       ``negative_n``, with ``p = 1`` ``positive_n``, frontier ones (``0 < p < 1``) ``min_n``.
    2. No frontier prompt: what is left goes evenly to the unsolved prompts (none: ``default_n``
       for every prompt).
    3. Else the frontier prompts' cost ``Σ_i ⌊min(max_n, c_i)⌋`` (:func:`rollouts_for_signal`)
       is compared with what is left: when it is smaller (``fallback``), the excess goes evenly to
       the unsolved prompts (none: to every non-frontier prompt) and the DP gets the cost; else
       the DP gets all that is left (:func:`knapsack_extra_rollouts`).

    "Unsolved" is the source's ``success_rates == 0``: the trusted ``p = 0`` prompts *and* the
    untrusted ones, whose entry in that array stays 0. Reading: with ``fallback`` on and no
    non-frontier prompt to take the excess (the source divides by zero there) the DP gets all
    that is left.

    Args:
        p: ``[B]`` pass-rate estimates; ``trusted``: ``[B]`` bool.
    Returns:
        ``([B] long sizes summing to total_budget, info)``.
    """
    p = p.to(torch.float64)
    frontier = trusted & (p > 0) & (p < 1)
    zero = trusted & (p == 0)
    one = trusted & (p == 1)
    sizes = torch.full(p.shape, default_n, dtype=torch.long)
    sizes[frontier] = params.min_n
    sizes[zero] = params.negative_n
    sizes[one] = params.positive_n
    left = total_budget - int(sizes.sum())
    info = {"fallback": 0.0, "frontier_prompts": float(frontier.sum()), "trusted_prompts": float(trusted.sum())}
    unsolved = zero | ~trusted  # the source's success_rates == 0 (untrusted entries stay 0)
    if left > 0 and not frontier.any():
        if unsolved.any():
            _spread(sizes, unsolved, left)
        else:
            sizes[:] = default_n
        return sizes, info
    dp_budget = left
    if frontier.any():
        cost = int(torch.clamp(rollouts_for_signal(p[frontier], params.alpha, params.cost), max=params.max_n).floor().sum())
        takers = unsolved if unsolved.any() else ~frontier
        if params.fallback and cost < left and takers.any():
            _spread(sizes, takers, left - cost)
            dp_budget = cost
            info["fallback"] = 1.0
    sizes[frontier] += knapsack_extra_rollouts(p[frontier], dp_budget, params.min_n, params.max_n - params.min_n,
                                               params.count_base_value)
    return sizes, info


class PassRateHistory:
    """Knapsack RL's per-prompt success-rate estimate (``rl_dataset.py::update_sample_state``
    with its run script's ``epoch_estimation`` and ``robust_epoch_estimation`` on).

    A visit adds the ``m`` rewards of one step's group (in [0, 1]). The estimate is the mean of
    the visit's rewards when ``m ≥ buffer_length``, else the mean of the last ``buffer_length``
    rewards over all visits — i.e. the mean of the last ``max(m, buffer_length)`` rewards. A
    prompt is trusted once it has ``min_observations`` rewards; an unseen prompt has estimate 0
    (trusted only when ``min_observations == 0``, as in the source).
    """

    def __init__(self, buffer_length: int = 16, min_observations: int = 8) -> None:
        if buffer_length < 1 or min_observations < 0:
            raise ValueError(f"need buffer_length >= 1 and min_observations >= 0 (got {buffer_length}, {min_observations})")
        self.buffer_length, self.min_observations = int(buffer_length), int(min_observations)
        self._recent: dict[Hashable, list[float]] = {}
        self._count: dict[Hashable, int] = {}
        self._estimate: dict[Hashable, float] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._count

    def observe(self, key: Hashable, rewards: Sequence[float]) -> None:
        """One visit of ``key`` with its ``rewards`` (one per answer)."""
        rewards = [float(r) for r in rewards]
        if not rewards:
            return
        history = self._recent.get(key, []) + rewards
        window = history[-max(len(rewards), self.buffer_length):]
        self._estimate[key] = sum(window) / len(window)
        self._recent[key] = history[-self.buffer_length:]
        self._count[key] = self._count.get(key, 0) + len(rewards)

    def estimate(self, key: Hashable) -> tuple[bool, float]:
        """``(trusted, pass rate)`` of ``key``."""
        count = self._count.get(key, 0)
        return count >= self.min_observations, self._estimate.get(key, 0.0)

    def count(self, key: Hashable) -> int:
        return self._count.get(key, 0)

    def state_dict(self) -> dict[str, Any]:
        keys = list(self._count)
        return {"config": {"buffer_length": self.buffer_length, "min_observations": self.min_observations},
                "keys": keys, "counts": [self._count[k] for k in keys], "estimates": [self._estimate[k] for k in keys],
                "recent": [self._recent[k] for k in keys]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        config = {"buffer_length": self.buffer_length, "min_observations": self.min_observations}
        if state["config"] != config:
            raise ValueError(f"pass-rate history was saved with {state['config']}, this run has {config}")
        self._count = {k: int(c) for k, c in zip(state["keys"], state["counts"], strict=True)}
        self._estimate = {k: float(e) for k, e in zip(state["keys"], state["estimates"], strict=True)}
        self._recent = {k: [float(x) for x in r] for k, r in zip(state["keys"], state["recent"], strict=True)}


@dataclass(frozen=True)
class KnapsackParams:
    """Knapsack RL's allocation (defaults: ``run_knapsack_grpo_7b.sh``: ``MIN_N = NEGATIVE_N =
    POSITIVE_N = 2``, ``MAX_N = 128``, ``REWARD_BUFFER_LENGTH = 16``, ``MIN_BUFFER_LENGTH = 8``;
    ``alpha = 0.9`` and ``cost = probability`` from ``sampling_budget_by_knapsack``)."""

    min_n: int = 2  # frontier prompts' floor
    max_n: int = 128  # the DP's cap per prompt
    negative_n: int = 2  # rollouts of a trusted p = 0 prompt (before the fallback's excess)
    positive_n: int = 2  # rollouts of a trusted p = 1 prompt
    alpha: float = 0.9  # confidence of the cost estimate
    cost: Literal["probability", "expectation"] = "probability"
    fallback: bool = True  # excess over the frontier's cost goes to p = 0 prompts
    buffer_length: int = 16  # rewards the pass-rate estimate averages (at least)
    min_observations: int = 8  # rewards before a prompt's estimate is trusted
    count_base_value: bool = False  # True: the DP values k = 0 extras as Value(min_n, p) (see knapsack_extra_rollouts)

    def __post_init__(self) -> None:
        for name in ("min_n", "negative_n", "positive_n"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.max_n < self.min_n:
            raise ValueError(f"max_n must be >= min_n (got {self.max_n} < {self.min_n})")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1) (got {self.alpha})")
        if self.cost not in ("probability", "expectation"):
            raise ValueError(f"cost must be 'probability' or 'expectation' (got {self.cost!r})")
        PassRateHistory(self.buffer_length, self.min_observations)  # its own checks

    def check_group_size(self, group_size: int) -> None:
        """The budget ``B·G`` covers every prompt's floor only when ``G`` is at least each floor."""
        low = max(self.min_n, self.negative_n, self.positive_n)
        if group_size < low:
            raise ValueError(f"knapsack prompt sampling needs group_size >= {low} (its floors min_n, negative_n, "
                             f"positive_n; the rollout budget is prompts × group_size), got {group_size}")


@PROMPT_SAMPLERS.register("knapsack", KnapsackParams, allocates=True, label="knapsack rollout allocation")
class KnapsackSampler(PromptSampler):
    """Knapsack RL: uniform prompts (the source's shuffled data loader), then ``B·G`` rollouts
    split over them by :func:`knapsack_allocation` from the :class:`PassRateHistory`.

    Readings: rewards enter the history mapped to [0, 1] by the method's reward range (the
    source maps −1 → 0 and asserts binary rewards); prompts allocated 0 rollouts are left out of
    the batch (the source drops them too).
    """

    def __init__(self, params: KnapsackParams) -> None:
        super().__init__(params)
        self.history = PassRateHistory(params.buffer_length, params.min_observations)

    def plan(self, request: PlanRequest) -> PromptPlan:
        self.params.check_group_size(request.group_size)
        idx = uniform_indices(len(request.keys), request.num_prompts, request.generator).tolist()
        estimates = [self.history.estimate(request.keys[i]) for i in idx]
        trusted = torch.tensor([t for t, _ in estimates], dtype=torch.bool)
        p = torch.tensor([e for _, e in estimates], dtype=torch.float64)
        sizes, info = knapsack_allocation(p, trusted, request.group_size, len(idx) * request.group_size, self.params)
        keep = [b for b in range(len(idx)) if sizes[b] > 0]
        metrics = {f"sampler/{k}": v for k, v in info.items()}
        metrics.update({"sampler/max_group": float(sizes.max()), "sampler/min_group": float(sizes.min()),
                        "sampler/zero_budget_prompts": float(len(idx) - len(keep))})
        return PromptPlan([idx[b] for b in keep], [int(sizes[b]) for b in keep], metrics)

    def observe(self, keys: Sequence[Hashable], unit_rewards: Sequence[float], step: int) -> None:
        for key, rewards in _grouped(keys, unit_rewards).items():
            self.history.observe(key, rewards)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.history.load_state_dict(state["history"])


# ----------------------------------------------------------------------------- MMR1 VAS


def outcome_variance_score(pass_rate: torch.Tensor) -> torch.Tensor:
    """MMR1's Outcome Variance Score (``learnability``): ``p̂(1 − p̂)``; ``[N] → [N]``."""
    p = pass_rate.to(torch.float64)
    return p * (1 - p)


def variance_promotion_weights(
    pass_rate: torch.Tensor, previous: torch.Tensor | None = None, momentum: float = 0.0
) -> torch.Tensor:
    """Sampling weights from the Variance Promotion Score (``_compute_curriculum_weights`` and
    ``_update_curriculum_weights``): ``VPS = OVS`` min-max normalised over the pool,
    ``(x − min) / (max − min + 1e-8)``, then ``w = m·w_old + (1 − m)·VPS`` (``previous``
    ``None``: ``VPS``). ``[N] → [N]`` float64.

    Only the OVS term: MMR1's Trajectory Diversity Score is not implemented (its sign is
    unpinned, ``docs/methods.md``); with one term its weight cancels in the normalisation.
    """
    score = outcome_variance_score(pass_rate)
    vps = (score - score.min()) / (score.max() - score.min() + 1e-8)
    if previous is None:
        return vps
    return momentum * previous.to(torch.float64) + (1 - momentum) * vps


def vas_batch_indices(
    weights: torch.Tensor, num: int, mixture_ratio: float, step: int, seed: int, generator: torch.Generator
) -> tuple[list[int], int]:
    """One VAS batch (``MixedCurriculumSampler``): ``⌊num·λ⌋`` pool positions drawn with
    replacement in proportion to ``weights``, the other ``num − ⌊num·λ⌋`` from a walk along one
    fixed permutation of the pool (seeded by ``seed``), interleaved weighted, uniform, weighted, …

    The walk is the source's: the uniform part of step ``t`` starts at ``(t·n_r) mod N`` and
    starts over at 0 when fewer than ``n_r`` positions are left (no reshuffle); a pool smaller
    than ``n_r`` is walked around. Reading: when every weight is 0 (all prompts equally scored:
    the min-max normalisation zeroes them) the weighted part is drawn uniformly instead.

    Returns ``(positions [num], n_weighted)``.
    """
    pool = len(weights)
    n_weighted = int(num * mixture_ratio)
    n_random = num - n_weighted
    if n_weighted and float(weights.sum()) > 0:
        weighted = torch.multinomial(weights.to(torch.float64), n_weighted, replacement=True, generator=generator).tolist()
    else:
        weighted = torch.randint(pool, (n_weighted,), generator=generator).tolist()
    permutation = torch.randperm(pool, generator=torch.Generator().manual_seed(seed)).tolist()
    start = (step * n_random) % pool
    if start + n_random > pool:
        start = 0
    uniform = [permutation[(start + j) % pool] for j in range(n_random)]
    mixed: list[int] = []
    for j in range(max(n_weighted, n_random)):
        mixed += weighted[j : j + 1] + uniform[j : j + 1]
    return mixed, n_weighted


@dataclass(frozen=True)
class VASParams:
    """MMR1 VAS (defaults: ``examples/mmr1.yaml``: ``curriculum_mixture_ratio 0.5``,
    ``curriculum_update_freq 4``, ``curriculum_rollout_n 8``, ``curriculum_momentum 0.0``)."""

    mixture_ratio: float = 0.5  # λ: the share of the batch drawn ∝ VPS
    update_every: int = 4  # T: steps between refreshes of the scores
    scoring_rollouts: int = 8  # n_c: fresh answers per pool prompt at each refresh
    momentum: float = 0.0  # w ← m·w_old + (1 − m)·w_new

    def __post_init__(self) -> None:
        if not 0.0 <= self.mixture_ratio <= 1.0:
            raise ValueError(f"mixture_ratio must be in [0, 1] (got {self.mixture_ratio})")
        if self.update_every < 1 or self.scoring_rollouts < 1:
            raise ValueError(f"update_every and scoring_rollouts must be >= 1 (got {self.update_every}, {self.scoring_rollouts})")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (got {self.momentum})")


@PROMPT_SAMPLERS.register("vas", VASParams, label="variance-aware sampling")
class VASSampler(PromptSampler):
    """MMR1's Variance-Aware Sampling: before step 0 and every ``update_every`` steps after, every
    pool prompt gets ``scoring_rollouts`` fresh answers (counted as decoded tokens); their pass
    rates give the weights (:func:`variance_promotion_weights`) that the next batches are drawn
    with (:func:`vas_batch_indices`).

    Readings: the source refreshes after step ``t`` when ``t`` (1-based) is a multiple of ``T``
    — here before the 0-based step ``t`` with ``t mod T = 0``, the same steps; the weighted part
    is drawn per step (the source pre-draws a whole epoch and shuffles it: the same
    distribution); DAPO's further rounds (``draw ≥ 1``) take their uniform part from a fresh
    permutation instead of the walk. A prompt drawn twice in one step contributes one group of
    all its answers (groups are keyed by prompt).
    """

    def __init__(self, params: VASParams) -> None:
        super().__init__(params)
        self.weights: dict[Hashable, float] = {}

    def scoring_due(self, step: int) -> int:
        return self.params.scoring_rollouts if step % self.params.update_every == 0 or not self.weights else 0

    def observe_scoring(self, keys: Sequence[Hashable], correct: Sequence[Sequence[bool]], step: int) -> None:
        pass_rate = torch.tensor([sum(c) / len(c) if len(c) else 0.0 for c in correct], dtype=torch.float64)
        previous = torch.tensor([self.weights[k] for k in keys], dtype=torch.float64) if self.weights else None
        new = variance_promotion_weights(pass_rate, previous, self.params.momentum)
        self.weights = {k: float(w) for k, w in zip(keys, new.tolist())}

    def plan(self, request: PlanRequest) -> PromptPlan:
        keys = list(request.keys)
        missing = [k for k in keys if k not in self.weights]
        if missing:
            raise ValueError(f"vas: no scores for {len(missing)} prompt(s) of the pool (e.g. {missing[0]!r}); "
                             "the pool is scored before the first step")
        weights = torch.tensor([self.weights[k] for k in keys], dtype=torch.float64)
        step = request.step
        if request.draw:
            gen_seed = int(torch.randint(0, 2**62, (1,), generator=request.generator))
            idx, n_w = vas_batch_indices(weights, request.num_prompts, self.params.mixture_ratio, 0, gen_seed,
                                         request.generator)
        else:
            idx, n_w = vas_batch_indices(weights, request.num_prompts, self.params.mixture_ratio, step, request.seed,
                                         request.generator)
        metrics = {"sampler/weight_mean": float(weights.mean()),
                   "sampler/weight_std": float(weights.std()) if len(weights) > 1 else 0.0,
                   "sampler/weighted_prompts": float(n_w), "sampler/distinct_prompts": float(len(set(idx)))}
        return PromptPlan(idx, None, metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"keys": list(self.weights), "weights": list(self.weights.values())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.weights = {k: float(w) for k, w in zip(state["keys"], state["weights"], strict=True)}

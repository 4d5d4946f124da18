"""RiskPO — risk-based policy optimisation with a Mixed Value-at-Risk objective over bundles
(Ren et al. 2025, "RiskPO: Risk-based Policy Optimization via Verifiable Reward for LLM
Post-Training", arXiv 2510.00911).

The whole story (sources, readings, how each step runs): ``docs/methods.md``, section "Notes from skpo.algorithms.riskpo"."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, broadcast
from .groups import group_ids

QUANTILE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
CREDIT_MODES = ("std", "sum-mean", "uniform", "score")
QUANTILE_SOURCES = ("track", "mix", "batch")
STD_FLOOR = 1e-3  # a std at or below it counts as 1 (the code's guard on the per-prompt std)


@dataclass(frozen=True)
class RiskPOParams:
    alpha: float = 0.2  # quantile_down (both scripts)
    beta: float = 0.9  # quantile_up (MATH script; 0.8 on DAPO-Math)
    bundle_size: int = 5
    mix_cvar: bool = True  # use_mixing_risk_measure
    cvar_weight: float = 1.5  # ω (w_mix)
    natural_baseline: bool = True  # natural_baseline_adv (MATH script; off on DAPO-Math)
    normalize: bool = True  # ÷ bundle std (norm_adv_by_std_in_grpo)
    credit: str = "std"  # MATH script; sum-mean on DAPO-Math
    quantiles: str = "track"  # use_q_track_mode
    tracker_lr: float = 0.1  # lr_q
    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < self.beta < 1.0:
            raise ValueError(f"need 0 < alpha < beta < 1 (got {self.alpha}, {self.beta})")
        if self.bundle_size < 1:
            raise ValueError(f"bundle_size must be >= 1 (got {self.bundle_size})")
        if self.credit not in CREDIT_MODES:
            raise ValueError(f"credit must be one of {CREDIT_MODES} (got {self.credit!r})")
        if self.quantiles not in QUANTILE_SOURCES:
            raise ValueError(f"quantiles must be one of {QUANTILE_SOURCES} (got {self.quantiles!r})")
        if self.cvar_weight < 0 or self.tracker_lr < 0:
            raise ValueError(f"cvar_weight and tracker_lr must be >= 0 (got {self.cvar_weight}, {self.tracker_lr})")


class QuantileTracker:
    """Quantiles of the paper scores tracked across steps by SGD on the pinball loss (the
    code's ``self.q`` with ``optimizer_q``). State kept across steps and checkpointed."""

    def __init__(self, params: RiskPOParams) -> None:
        self.params = params
        self.levels = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
        self.values: torch.Tensor | None = None  # [L]; None before the first observation

    def at(self, level: float) -> float | None:
        """The tracked quantile at the level closest to ``level`` (None before any update)."""
        if self.values is None:
            return None
        return float(self.values[int(torch.argmin((self.levels - level).abs()))])

    def update(self, paper_scores: torch.Tensor) -> None:
        """Fold in one step's paper scores ``[P]``: batch quantiles the first time, then one
        SGD step ``q ← q + η·(level − mean 1[S < q])``."""
        scores = paper_scores.to(torch.float64).reshape(-1)
        if scores.numel() == 0:
            return
        if self.values is None:
            self.values = torch.quantile(scores, self.levels)
        else:
            below = (scores.unsqueeze(0) < self.values.unsqueeze(1)).to(torch.float64).mean(dim=1)
            self.values = self.values + self.params.tracker_lr * (self.levels - below)

    def metrics(self) -> dict[str, float]:
        alpha, beta = self.at(self.params.alpha), self.at(self.params.beta)
        if alpha is None or beta is None:  # (no update yet)
            return {}
        return {"riskpo_q_alpha": alpha, "riskpo_q_beta": beta}

    def state_dict(self) -> dict:
        return {"params": asdict(self.params), "levels": list(QUANTILE_LEVELS),
                "values": None if self.values is None else self.values.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state["params"] != asdict(self.params) or list(state["levels"]) != list(QUANTILE_LEVELS):
            raise ValueError(f"RiskPO tracker state was saved with {state['params']}, this run has {asdict(self.params)}")
        self.values = None if state["values"] is None else torch.tensor(state["values"], dtype=torch.float64)


def _std_or_one(values: torch.Tensor) -> float:
    """Bessel std, or 1 for fewer than two values or a std ≤ 1e-3."""
    if values.numel() < 2:
        return 1.0
    std = float(values.std())
    return std if std > STD_FLOOR else 1.0


def mixed_var_advantage(scores: torch.Tensor, q_low: float, q_high: float, params: RiskPOParams) -> torch.Tensor:
    """``A(S)`` of paper scores ``[P]`` for quantiles ``q_α ≤ q_β`` (before the bundle std)."""
    eps = params.epsilon
    rv = (scores - q_low).clamp(min=0) - (scores - q_high).clamp(min=0)
    if params.natural_baseline:
        rv = rv + (q_low - q_high)
    rv = rv / (params.beta - params.alpha + eps)
    if not params.mix_cvar:
        return rv
    cv = -(q_low - scores).clamp(min=0) / (params.alpha + eps)
    return (params.cvar_weight * cv + rv) / (params.cvar_weight + 1)


@ADVANTAGE_ESTIMATORS.register("riskpo", RiskPOParams, group_key="prompt", state=QuantileTracker)
def riskpo_advantage(batch: AdvantageInputs, params: RiskPOParams) -> torch.Tensor:
    """RiskPO's bundled MVaR advantage (module docstring), ``[B, T]``; updates the quantile
    tracker (``batch.state``) with this step's paper scores after reading it."""
    batch.require("index", "state")
    tracker: QuantileTracker = batch.state
    scores = batch.scores.to(torch.float64)
    prompt, n_prompts = group_ids(batch.index)  # prompts numbered in order of first appearance
    rank = torch.zeros_like(prompt)  # the j of each answer within its prompt
    seen = [0] * n_prompts
    for b, q in enumerate(prompt.tolist()):
        rank[b], seen[q] = seen[q], seen[q] + 1
    counts = torch.tensor(seen)
    adv = torch.zeros_like(scores)
    tracked_low, tracked_high = tracker.at(params.alpha), tracker.at(params.beta)  # both None before any update
    all_papers = []
    for first in range(0, n_prompts, params.bundle_size):
        members = list(range(first, min(first + params.bundle_size, n_prompts)))
        n_papers = int(counts[members].min())
        # papers[j] = the rows of paper j, one per member prompt
        papers = [[int(torch.nonzero((prompt == q) & (rank == j)).squeeze()) for q in members] for j in range(n_papers)]
        paper_scores = torch.stack([scores[rows].sum() for rows in papers])  # [P]
        all_papers.append(paper_scores)
        if n_papers == 1:
            low = high = float(paper_scores[0])
        else:
            low = float(torch.quantile(paper_scores, params.alpha))
            high = float(torch.quantile(paper_scores, params.beta))
        if tracked_low is not None and tracked_high is not None and params.quantiles == "track":
            low, high = tracked_low, tracked_high
        elif tracked_low is not None and tracked_high is not None and params.quantiles == "mix":
            low, high = (tracked_low + low) / 2, (tracked_high + high) / 2
        paper_adv = mixed_var_advantage(paper_scores, low, high, params)
        if params.normalize:
            paper_adv = paper_adv / (_std_or_one(paper_scores) + params.epsilon)
        for j, rows in enumerate(papers):
            adv[rows] = credit_shares(paper_adv[j], scores, prompt, rows, params)
    tracker.update(torch.cat(all_papers) if all_papers else scores.new_zeros(0))
    return broadcast(adv.to(batch.token_level_rewards.dtype), batch.response_mask)


def credit_shares(paper_adv: torch.Tensor, scores: torch.Tensor, prompt: torch.Tensor, rows: list[int],
           params: RiskPOParams) -> torch.Tensor:
    """Each answer's share ``[len(rows)]`` of its paper's advantage (``params.credit``)."""
    eps = params.epsilon
    if params.credit == "uniform":
        return paper_adv.expand(len(rows)).clone()
    if params.credit == "score":
        return torch.where(scores[rows] > 0, 0.5, 1.5).to(scores.dtype) * paper_adv
    if params.credit == "std":
        stds = torch.tensor([_std_or_one(scores[prompt == prompt[b]]) for b in rows], dtype=scores.dtype)
        return paper_adv / (stds + eps)
    centred = torch.stack([scores[b] - scores[prompt == prompt[b]].mean() for b in rows])  # sum-mean
    total = centred.sum()
    if total.abs() > 1e-6:
        return paper_adv * centred / total
    return (paper_adv / len(rows)).expand(len(rows)).clone()


__all__ = ["QUANTILE_LEVELS", "QuantileTracker", "RiskPOParams", "credit_shares", "mixed_var_advantage", "riskpo_advantage"]

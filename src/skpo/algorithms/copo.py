"""COPO — consistency-aware policy optimisation (Han et al. 2025, arXiv 2508.04138).

A group whose answers all agree has zero GRPO advantage. COPO adds a prompt-level *global*
advantage, standardised over the batch's prompts, and blends a local (GRPO) and a global
PPO surrogate per answer; the blend weight is a sigmoid of the entropy of the group's
extracted final answers.

Source: the authors' code, hijih/copo-code — ``verl/trainer/ppo/core_algos.py``
(``compute_score_global``, ``compute_grpo_outcome_advantage_with_global``,
``compute_policy_loss_with_global``) @095afa5, ``verl/workers/actor/dp_actor.py`` @9ddd4cb,
``verl/run_copo.sh`` @c15c75f. For a prompt ``q`` with ``n`` answers::

    H_ans(q)  = −Σ_a P̂(a)·log₂(P̂(a) + 1e-8)        over the extracted answers (no answer: one class)
    g(q)      = p̂(q)·c(q),  c = 1  (the released script)  or  1 − λ·H_ans,  λ = (1 − 1/n)/log₂ n
    A_glob(q) = (g(q) − mean_q' g) / (std_q' g + ε)  over the batch's prompts (same for all of q's answers)
    A_loc,i   = GRPO's group z-score
    w(q)      = sigmoid(k·(H_ans(q) − b))           k = 5, b = 1 (run_copo.sh)
    ℓ_t       = (1 − w_i)·ppo(A_glob) + w_i·ppo(A_loc)   (PPO clip, dual clip c = 3, same ratio)
    w_i by mode:  soft_with_zero   w(q)·1[r_i ≠ 0]       only_zero    1[r_i ≠ 0]
                  soft_with_forced w(q)·1[A_loc,i ≠ 0]   only_forced  1[A_loc,i ≠ 0]
                  only_soft        w(q)                  only_global  0        no_global  1

Readings (stated):
- Which mode produced the paper's numbers is not known: ``run_copo.sh`` passes
  ``soft-with-zero`` while the code matches ``'soft with zero'`` (and raises on anything else);
  the default here is ``soft_with_zero``.
- ``r_i ≠ 0`` assumes 0/1 rewards (the preset's ``reward_range: [0, 1]``): it then means
  "answer i is correct".
- A batch of one prompt has ``A_glob = 0`` (its std is undefined).
- The answers are the source verifier's extracted answers (``Verdict.extracted``), compared
  as strings; the code also compares strings (its sympy canonicalisation is commented out).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from .advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, batch_normalized, broadcast, group_normalized_scores
from .groups import group_ids, group_stats
from .losses import PolicyLossInputs, PolicyLossOutputs, PPOClipParams, ppo_clip_loss, register_loss

COPO_MODES = ("soft_with_zero", "soft_with_forced", "only_zero", "only_forced", "only_soft", "only_global", "no_global")


@dataclass(frozen=True)
class COPOParams:
    epsilon: float = 1e-6
    norm_by_std: bool = True  # both advantages (the code's norm_adv_by_std_in_grpo)
    mode: str = "soft_with_zero"
    sharpness: float = 5.0  # k
    center: float = 1.0  # b (bits)
    consistency_coef: bool = False  # reward_coef_flg: g(q) = p̂·(1 − λ·H_ans)

    def __post_init__(self) -> None:
        if self.mode not in COPO_MODES:
            raise ValueError(f"mode must be one of {COPO_MODES} (got {self.mode!r})")


def answer_entropy(answers: list[str | None]) -> float:
    """``−Σ_a P̂(a)·log₂(P̂(a) + 1e-8)`` over the answers' empirical distribution (bits)."""
    total = len(answers)
    return -sum((c / total) * math.log2(c / total + 1e-8) for c in Counter(answers).values())


@ADVANTAGE_ESTIMATORS.register("copo", COPOParams, group_key="prompt", needs=("answers",),
                               outputs=("copo_global_advantage", "copo_local_weight"))
def copo_advantage(batch: AdvantageInputs, params: COPOParams) -> torch.Tensor:
    """COPO: returns the local (GRPO) advantage ``[B, T]`` and leaves the global advantage and
    the local weight ``w_i`` (``[B, T]``) in ``batch.outputs`` for the ``copo`` loss."""
    batch.require("index", "answers")
    assert batch.index is not None and batch.answers is not None  # require() raised otherwise
    scores = batch.scores.to(torch.float64)
    ids, k = group_ids(batch.index)
    count, p_hat, _ = group_stats(scores, ids, k)  # [K]
    answers = list(batch.answers)
    entropy = torch.tensor([answer_entropy([answers[b] for b in torch.nonzero(ids == g).squeeze(-1).tolist()])
                            for g in range(k)], dtype=torch.float64)  # [K], bits
    if params.consistency_coef:
        n = count
        lam = torch.where(n > 1, (1 - 1 / n) / torch.log2(n.clamp(min=2)), torch.zeros_like(n))
        g = p_hat * (1 - lam * entropy)
    else:
        g = p_hat
    global_adv = batch_normalized(g, params.epsilon) if params.norm_by_std else g - g.mean()
    local_adv = group_normalized_scores(scores, batch.index, params.epsilon, params.norm_by_std)  # [B]
    soft = torch.sigmoid(params.sharpness * (entropy - params.center))[ids]  # [B]
    weight = {
        "soft_with_zero": soft * (scores != 0), "soft_with_forced": soft * (local_adv != 0),
        "only_zero": (scores != 0).to(soft.dtype), "only_forced": (local_adv != 0).to(soft.dtype),
        "only_soft": soft, "only_global": torch.zeros_like(soft), "no_global": torch.ones_like(soft),
    }[params.mode]
    dtype = batch.token_level_rewards.dtype
    batch.outputs["copo_global_advantage"] = broadcast(global_adv[ids].to(dtype), batch.response_mask)
    batch.outputs["copo_local_weight"] = broadcast(weight.to(dtype), batch.response_mask)
    return broadcast(local_adv.to(dtype), batch.response_mask)


@register_loss("copo", PPOClipParams)
def copo_loss(inputs: PolicyLossInputs, params: PPOClipParams) -> PolicyLossOutputs:
    """COPO's blend ``(1 − w)·ppo(A_glob) + w·ppo(A_loc)`` of two PPO-clip surrogates with the
    same ratio; ``A_loc`` is ``inputs.advantages``, ``A_glob`` and ``w`` come from the ``copo``
    estimator (``extras``)."""
    weight = inputs.extras["copo_local_weight"]
    local = ppo_clip_loss(inputs, params)
    glob = ppo_clip_loss(PolicyLossInputs(inputs.log_prob, inputs.old_log_prob, inputs.extras["copo_global_advantage"],
                                          inputs.response_mask, inputs.rollout_is_weights), params)
    loss = (1 - weight) * glob.loss_mat + weight * local.loss_mat
    metrics = dict(local.metrics)
    metrics["global_clipfrac"] = glob.metrics["clipfrac"]
    return PolicyLossOutputs(loss, metrics)


__all__ = ["COPOParams", "answer_entropy", "copo_advantage", "copo_loss"]

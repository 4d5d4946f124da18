"""Token statistics: full-vocabulary reductions of the rollout policy at every response token.

Some plug-ins read more than the sampled token's log-probability: the token's entropy
(GTPO, PAPO's controller), the first-order entropy change of a policy-gradient step (PAPO's
polarity), the log-probability under a min-p filtered copy of the distribution (Lp-Reg's
proxy). Each such reduction is registered here by name; an estimator or loss names the ones
it reads in its registry metadata (``token_stats=("entropy", …)``). The trainer then runs one
no-grad forward of the rollout policy (π_old) over that term's rows, evaluates every named
reduction on the logits, keeps the results ``[B, T]`` in ``Rows.token_stats`` and hands them
to the estimator (``AdvantageInputs.token_stats``) and to the loss (``PolicyLossInputs.extras``).

A reduction is ``fn(logits [N, V], labels [N], params) -> [N]`` (float32, no gradient);
``params`` is the parameter record of the plug-in that declared it (a reduction with a knob
reads it from there, e.g. ``min_p``). Logits are the temperature-scaled logits the sampler
used (``logits / rollout.temperature``). Rows are processed in chunks so a large vocabulary
never materialises the whole batch's softmax at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from skpo.registry import Registry

from .stats import _chunked

ReductionFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
TOKEN_STATS: Registry[ReductionFn] = Registry("token statistic")


@TOKEN_STATS.register("entropy")
def token_entropy(logits: torch.Tensor, labels: torch.Tensor, params: Any = None) -> torch.Tensor:
    """``H = −Σ_v π_v log π_v``; ``[N, V] → [N]``."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


@TOKEN_STATS.register("entropy_gain")
def entropy_gain(logits: torch.Tensor, labels: torch.Tensor, params: Any = None) -> torch.Tensor:
    """First-order entropy change per unit ``η·A`` of a policy-gradient step on the sampled
    token ``a`` (derived; softmax-logit first order, see ``skpo.algorithms.papo``)::

        Δz = η·A·(e_a − π)  ⇒  ΔH ≈ η·A·g,   g = E_{b~π}[S_b] − S_a,   S_b = π_b (log π_b + H)

    ``S_a`` is the sampled-token contribution, ``E_π[S] = Σ_b π_b² (log π_b + H)`` the
    state-wise correction. ``[N, V], [N] → [N]``."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    p = log_p.exp()
    h = -(p * log_p).sum(-1, keepdim=True)  # [N, 1]
    s = p * (log_p + h)  # S_b, [N, V]
    sampled = s.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return (p * s).sum(-1) - sampled


MINP_FILL = -1e4  # logit given to filtered tokens (the authors' code: −1e4, so log-probs stay finite)


@TOKEN_STATS.register("minp_proxy_log_prob")
def minp_proxy_log_prob(logits: torch.Tensor, labels: torch.Tensor, params: Any) -> torch.Tensor:
    """Log-probability of the sampled token under Lp-Reg's proxy: the distribution min-p
    filtered (tokens with ``π_v < min_p · max_w π_w`` get logit −1e4) and renormalised.
    Reads ``params.min_p``. A filtered token gets ≈ −1e4 (never "below the proxy")."""
    z = logits.float()
    log_p = F.log_softmax(z, dim=-1)
    keep = log_p >= log_p.max(dim=-1, keepdim=True).values + torch.log(torch.tensor(float(params.min_p)))
    filtered = torch.where(keep, z, torch.full_like(z, MINP_FILL))
    return F.log_softmax(filtered, dim=-1).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def reducer(requests: Sequence[tuple[str, Any]], chunk_size: int | Literal["auto"] | None = "auto"
            ) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
    """One callable ``(logits [..., V], labels [...]) -> {name: [...]}`` evaluating every
    requested ``(name, params)`` reduction, chunked over rows."""
    entries = [(name, TOKEN_STATS.get(name).fn, params) for name, params in requests]

    @torch.no_grad()
    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: _chunked(lambda z, y, fn=fn, p=params: fn(z, y, p), chunk_size, logits, labels)
                for name, fn, params in entries}

    return reduce


__all__ = ["TOKEN_STATS", "entropy_gain", "minp_proxy_log_prob", "reducer", "token_entropy"]

"""OAR token importance (Outcome-grounded Advantage Reshaping): how much each reasoning token
moves the model's final-answer distribution. Model-dependent, so it lives here; the weights
that turn importance into advantages are pure maths (``oar_bilevel_weights``).

The probe is the response itself: reasoning tokens are those before the answer marker
(``Answer:`` on the synthetic task, ``\\boxed`` on math), the answer tokens those after it;
``P_final`` is the softmax of the mean logits over the positions that predict the answer
tokens (``answer_mode="answer_mean"``, the default: our reading of the source's readout over a
multi-token answer), or of the logits at the position that predicts the last answer token
(``answer_mode="last"``). Method documents set it in ``token_weight_params.answer_mode``. Responses without a marker or answer get no reshaping
(weights 1). Importance uses the current policy with no gradient to its parameters
(``torch.autograd.grad`` on the input embeddings only; reference §2.10 O5b, O6).

- OAR-G (``oar_g``): Gaussian noise σ = 1e-3 on reasoning embeddings, objective
  ``KL(p0 ‖ p_noisy)``, saliency ``|Σ_h ∂J/∂e_t · e_t|``.
- OAR-P (``oar_p``): each reasoning token replaced by the pad token, one copy per token,
  importance ``KL(p_orig ‖ p_masked)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def find_marker(tokens: Sequence[int], marker: Sequence[int]) -> int | None:
    """Index of the last occurrence of ``marker`` in ``tokens``."""
    m = len(marker)
    for start in range(len(tokens) - m, -1, -1):
        if list(tokens[start : start + m]) == list(marker):
            return start
    return None


ANSWER_MODES = ("answer_mean", "last")


def _answer_logits(logits: Tensor, start: int, end: int, answer_mode: str = "answer_mean") -> Tensor:
    """``[N, V]`` readout of the final-answer distribution from ``logits`` ``[N, L, V]``.
    ``logits[:, p]`` predicts token ``p + 1``: positions ``start-1 … end-2`` predict the answer
    tokens ``start … end-1``."""
    if answer_mode == "answer_mean":
        return logits[:, start - 1 : end - 1].mean(dim=1)
    if answer_mode == "last":
        return logits[:, end - 2]
    raise ValueError(f"unknown OAR answer_mode {answer_mode!r}; expected one of {ANSWER_MODES}")


def _probe(prompt: Sequence[int], response: Sequence[int], marker: Sequence[int]) -> tuple[list[int], int, int, int] | None:
    """(ids, reasoning_start, answer_start, answer_end) in probe coordinates, or None."""
    at = find_marker(response, marker)
    if at is None or at == 0:
        return None
    ans_start = at + len(marker)
    if ans_start >= len(response):
        return None
    ids = list(prompt) + list(response)
    return ids, len(prompt), len(prompt) + ans_start, len(ids)


def oar_importance(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    marker: Sequence[int],
    mode: str = "oar_g",
    pad_id: int = 0,
    noise_std: float = 1e-3,
    generator: torch.Generator | None = None,
    answer_mode: str = "answer_mean",
) -> tuple[Tensor, Tensor]:
    """Importance ``[B, T]`` and the scored-token mask ``[B, T]`` (reasoning tokens of rows
    that have an answer), ``T`` = longest response."""
    t = max([len(r) for r in responses] + [1])
    importance = torch.zeros(len(responses), t)
    scored = torch.zeros(len(responses), t)
    device = next(model.parameters()).device
    embed = cast("PreTrainedModel", model).get_input_embeddings()  # (a transformers model, or peft's wrapper of one)
    for b, (prompt, response) in enumerate(zip(prompts, responses)):
        probe = _probe(prompt, response, marker)
        if probe is None:
            continue
        ids, r0, a0, a1 = probe
        input_ids = torch.tensor([ids], device=device)
        with torch.no_grad():
            p0 = F.log_softmax(_answer_logits(model(input_ids=input_ids, use_cache=False).logits.float(), a0, a1, answer_mode), -1)
        n_reason = a0 - len(marker) - r0  # reasoning = response tokens before the marker
        if n_reason <= 0:
            continue
        if mode == "oar_g":
            emb = embed(input_ids).detach()
            noise = torch.zeros_like(emb)
            noise[:, r0 : r0 + n_reason] = torch.randn(
                (1, n_reason, emb.shape[-1]), generator=generator, dtype=emb.dtype
            ).to(device) * noise_std
            noisy = (emb + noise).requires_grad_(True)
            logits = model(inputs_embeds=noisy, use_cache=False).logits.float()
            log_p = F.log_softmax(_answer_logits(logits, a0, a1, answer_mode), -1)
            objective = (p0.exp() * (p0 - log_p)).sum()
            (grad,) = torch.autograd.grad(objective, noisy)
            scores = (grad[0, r0 : r0 + n_reason] * noisy[0, r0 : r0 + n_reason].detach()).sum(-1).abs()
        elif mode == "oar_p":
            copies = input_ids.repeat(n_reason, 1)
            copies[torch.arange(n_reason), r0 + torch.arange(n_reason)] = pad_id
            with torch.no_grad():
                log_p = F.log_softmax(_answer_logits(model(input_ids=copies, use_cache=False).logits.float(), a0, a1, answer_mode), -1)
            scores = (p0.exp() * (p0 - log_p)).sum(-1)
        else:
            raise ValueError(f"unknown OAR importance mode {mode!r} (oar_g or oar_p)")
        importance[b, :n_reason] = scores.detach().float().cpu()
        scored[b, :n_reason] = 1
    return importance, scored

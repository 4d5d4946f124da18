"""Reward models trained online: a second model, updated every step on that step's rows, that
gives per-token rewards. PRIME's implicit PRM (``implicit_prm``) is the shipped one.

A plug-in is a class registered in ``REWARD_MODELS`` with its parameter dataclass (a method's
``reward_model_params``) and metadata:

============  ======================================================================================
``provides``  the ``[B, T]`` outputs its ``step`` returns (``"token_rewards"``); an advantage
              estimator whose ``needs`` names one reads it from ``AdvantageInputs``
============  ======================================================================================

    plugin = cls(ctx: RewardModelContext, params)          # set-up: its models and optimizer
    outputs, metrics = plugin.step(rows)                   # train on the step's rows, score them
    plugin.state_dict() / plugin.load_state_dict(state)    # everything a resume needs

A method names one with ``reward_model`` (and ``reward_model_params``). The trainer builds it
before any checkpoint is loaded (:func:`build_reward_model`, so copies of the policy are copies
of the *initial* policy), calls it once per step between the old/reference log-probs and the
advantages, on the global batch's rows of the terms whose estimator needs its outputs
(:meth:`RewardModelSlot.step`; the outputs land in ``rows.extra``), and saves its state in every
checkpoint (``reward_model.pt``). Under data parallelism each process trains on and scores its
shard of the prompts; gradients are summed over processes (the model stays replicated) and
the scores gathered, so every process holds the same outputs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from skpo.algorithms.prime import (
    implicit_log_ratio,
    implicit_token_rewards,
    normalize_by_max_return,
    prm_cross_entropy,
)
from skpo.errors import MethodError
from skpo.models.forward import no_grad_forward, policy_forward
from skpo.models.loading import frozen_copy, load_policy
from skpo.registry import Registry
from skpo.reward_range import to_unit
from skpo.rows import Rows

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["REWARD_MODELS", "ImplicitPRM", "ImplicitPRMParams", "RewardModelContext", "RewardModelSlot",
           "build_reward_model", "check_reward_model"]

REWARD_MODELS: Registry[Callable[..., Any]] = Registry("reward model")


@dataclass
class RewardModelContext:
    """What a reward model may use (built by the trainer).

    Attributes:
        policy: the policy with its initial weights (the trainer builds reward models before
            it loads a checkpoint).
        ref_model: the trainer's frozen copy of the initial policy, when it keeps one (KL).
        lora: the policy is a LoRA model (its copy would carry adapters).
        device / autocast / autocast_dtype: where and in which precision forwards run.
        micro_batches: ``micro_batches(rows) -> [(row indices, packs)]``, the trainer's own
            split (token budget, packing).
        pad_id: the pad token id.
        reward_range: the method's reward range; outcome labels are rewards mapped to [0, 1].
        mini_batches: the trainer's mini-batches per step (``train.mini_batches``).
        dist: the trainer's collectives (:class:`skpo.training.distributed.Dist`).
        gradient_checkpointing: ``train.gradient_checkpointing`` (a trained copy uses it too).
    """

    policy: torch.nn.Module
    ref_model: torch.nn.Module | None
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    autocast_dtype: torch.dtype | None = None
    micro_batches: Callable[[Rows], list] | None = None
    pad_id: int = 0
    reward_range: tuple[float, float] = (0.0, 1.0)
    mini_batches: int = 1
    dist: Any = None
    lora: bool = False
    gradient_checkpointing: bool = False


class RewardModelSlot:
    """The method's reward model as the trainer uses it: the rows it sees (the roles whose
    estimator needs one of its outputs) and where its outputs go (``rows.extra``)."""

    def __init__(self, name: str, plugin: Any, roles: tuple[str, ...], provides: tuple[str, ...]) -> None:
        self.name, self.plugin, self.roles, self.provides = name, plugin, roles, provides

    def step(self, rows: Rows, metrics: dict[str, float]) -> Rows:
        """New rows whose ``extra`` holds the plug-in's outputs (``[B, T]``, 0 on the rows of
        other roles); its metrics go into ``metrics``."""
        sel = [b for b, role in enumerate(rows.roles()) if role in self.roles]
        outputs, out_metrics = self.plugin.step(rows.select(sel))
        metrics.update(out_metrics)
        idx = torch.tensor(sel, dtype=torch.long)
        extra = dict(rows.extra)
        for key in self.provides:
            full = torch.zeros(rows.response_mask.shape, dtype=torch.float32)
            full[idx] = outputs[key].detach().float().cpu()
            extra[key] = full
        return rows.replace(extra=extra)

    def state_dict(self) -> dict[str, Any]:
        return self.plugin.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plugin.load_state_dict(state)


def check_reward_model(method: Any) -> set[str]:
    """Validate ``method``'s reward model name and parameters (errors name the key); return
    what it provides."""
    try:
        entry = REWARD_MODELS.get(str(method.reward_model))
    except KeyError as err:
        raise ValueError(f"{method.name}: reward_model: {err.args[0]}") from None
    try:
        entry.make_params(dict(method.reward_model_params))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{method.name}: reward_model_params: {err}") from None
    return set(entry.meta.get("provides", ()))


def build_reward_model(method: Any, ctx: RewardModelContext) -> RewardModelSlot | None:
    """The method's reward model, set up (``None`` when it declares none)."""
    if method.reward_model is None:
        return None
    entry = REWARD_MODELS.get(method.reward_model)
    provides = tuple(entry.meta.get("provides", ()))
    roles = tuple(t.role for t in method.terms if set(t.estimator_meta.get("needs", ())) & set(provides))
    plugin = entry.fn(ctx, entry.make_params(dict(method.reward_model_params)))
    return RewardModelSlot(method.reward_model, plugin, roles, provides)


# ----------------------------------------------------------------------------- PRIME's implicit PRM

UPDATE_ORDERS = ("before", "after", "none")
PRIME_NORMS = ("batch_norm", "none")


@dataclass(frozen=True)
class ImplicitPRMParams:
    """PRIME's implicit PRM (verl-recipe ``prime``: ``reward_model.*`` of ``prime_trainer.yaml``).

    ``prm_path``: a local model directory to start the PRM from (same tokenizer as the
    policy); ``None`` = a copy of the initial policy (the recipe's ``reward_model.model.path``
    is the policy's). ``beta_train``: β of ``r = β log π_φ/π_ref``. ``lr`` / ``weight_decay``
    / ``grad_clip``: its own AdamW (betas 0.9, 0.999, constant LR: verl's ``build_optimizer``
    and ``lr_scheduler_type: constant``). ``update``: ``before`` = train on the step's rows,
    then score them with the updated PRM (the recipe's default, a second forward); ``after`` =
    score, then train; ``none`` = score only (a frozen PRM). ``mini_batches``: PRM optimizer
    steps per step, ``None`` = ``train.mini_batches`` (verl: ``reward_model.mini_batch_size``
    = the actor's). ``prime_norm``: ``batch_norm`` divides the rewards by the batch's largest
    absolute return. ``score_last_token``: see :func:`skpo.algorithms.prime.implicit_token_rewards`.
    """

    prm_path: str | None = None
    beta_train: float = 0.05
    lr: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    update: str = "before"
    mini_batches: int | None = None
    prime_norm: str = "batch_norm"
    score_last_token: bool = False

    def __post_init__(self) -> None:
        for key in ("beta_train", "lr", "weight_decay", "grad_clip"):  # numbers (``1e-3`` from YAML is a string)
            value = getattr(self, key)
            try:
                object.__setattr__(self, key, float(value))
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a number (got {value!r})") from None
        for key in ("beta_train", "lr", "grad_clip"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0 (got {getattr(self, key)!r})")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0 (got {self.weight_decay!r})")
        if self.update not in UPDATE_ORDERS:
            raise ValueError(f"update must be one of {list(UPDATE_ORDERS)} (got {self.update!r})")
        if self.prime_norm not in PRIME_NORMS:
            raise ValueError(f"prime_norm must be one of {list(PRIME_NORMS)} (got {self.prime_norm!r})")
        if self.mini_batches is not None and not (isinstance(self.mini_batches, int) and self.mini_batches >= 1):
            raise ValueError(f"mini_batches must be an integer >= 1 or null (got {self.mini_batches!r})")


@REWARD_MODELS.register("implicit_prm", ImplicitPRMParams, provides=("token_rewards",))
class ImplicitPRM:
    """PRIME's implicit PRM: a causal LM ``π_φ`` and a frozen reference ``π_ref``; token reward
    ``β (log π_φ − log π_ref)``; trained each step with the outcome cross-entropy.

    Models: ``π_φ`` starts from the initial policy (or ``prm_path``); ``π_ref`` is the PRM's
    starting point, frozen (verl: ``ref_path`` = the PRM's path) — the trainer's KL reference
    when it keeps one and the PRM starts from the policy, else a copy of its own. Memory: a
    third model copy (the PRM) plus its AdamW state, and the reference unless shared.

    Log-probs use the raw logits (no sampling temperature), as verl's PRM forward does. Labels
    are the rows' rewards mapped from the method's ``reward_range`` to [0, 1] (verl's ``acc``).
    One step: the reference log-probs once (they serve the update and the scores), then the
    update and the scoring in the order of ``update``. The update is one pass over the rows,
    split into ``mini_batches`` contiguous groups of prompts, each one AdamW step on the mean
    cross-entropy of its rows (micro-batches accumulate with that global denominator),
    gradients clipped to ``grad_clip``.
    """

    def __init__(self, ctx: RewardModelContext, params: ImplicitPRMParams) -> None:
        self.ctx, self.params = ctx, params
        if ctx.autocast_dtype == torch.float16:
            raise MethodError("method.reward_model: implicit_prm trains without loss scaling; float16 compute "
                              "(model.dtype=float16) would underflow its gradients: use bfloat16")
        if params.prm_path:
            try:
                self.prm: PreTrainedModel = load_policy(params.prm_path, device=ctx.device, dtype=next(ctx.policy.parameters()).dtype)
            except (FileNotFoundError, NotADirectoryError) as err:
                raise MethodError(f"method.reward_model_params.prm_path: {err}") from None
            self.ref = frozen_copy(self.prm)
        elif ctx.lora:
            raise MethodError("method.reward_model_params.prm_path: the policy is a LoRA model; give the PRM's "
                              "starting weights as a model directory")
        else:
            self.prm = cast("PreTrainedModel", copy.deepcopy(ctx.policy))  # (the policy: a transformers model, not LoRA)
            self.ref = ctx.ref_model if ctx.ref_model is not None else frozen_copy(ctx.policy)
        self.prm.to(ctx.device).train()
        if ctx.gradient_checkpointing:
            self.prm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for p in self.prm.parameters():
            p.requires_grad_(True)
        self.ref.to(ctx.device)
        self.optimizer = torch.optim.AdamW(self.prm.parameters(), lr=params.lr, betas=(0.9, 0.999),
                                           weight_decay=params.weight_decay)

    # ---------------------------------------------------------------- the step
    def step(self, rows: Rows) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Train on ``rows`` and score them, in the order of ``params.update``; returns
        ``({"token_rewards": [B, T]}, metrics)``."""
        ref = self._log_probs(self.ref, rows)  # frozen: one pass serves the update and the scores
        metrics: dict[str, float] = {}
        if self.params.update == "before":
            metrics.update(self.update(rows, ref))
        token_rewards, score_metrics = self.score(rows, ref)
        metrics.update(score_metrics)
        if self.params.update == "after":
            metrics.update(self.update(rows, ref))
        return {"token_rewards": token_rewards}, metrics

    @torch.no_grad()
    def score(self, rows: Rows, ref_log_probs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Implicit token rewards of ``rows`` under the current PRM, ``[B, T]`` (normalised
        over the batch with ``prime_norm: batch_norm``), and metrics."""
        ref = self._log_probs(self.ref, rows) if ref_log_probs is None else ref_log_probs
        self.prm.eval()
        try:
            prm = self._log_probs(self.prm, rows)
        finally:
            self.prm.train()
        q = self._from_every_process(implicit_log_ratio(prm, ref, rows.response_mask), rows)
        rewards = implicit_token_rewards(q, rows.response_mask, self.params.beta_train, self.params.score_last_token)
        if self.params.prime_norm == "batch_norm":
            rewards = normalize_by_max_return(rewards, rows.response_mask)
        return rewards, {"reward_model/raw_reward": q.sum(-1).mean().item(),
                         "reward_model/reward": rewards.sum(-1).mean().item()}

    def labels(self, rows: Rows) -> torch.Tensor:
        """Outcome labels ``[B]`` in [0, 1]: the rewards mapped from the method's reward range."""
        return to_unit(rows.rewards.float(), self.ctx.reward_range).clamp(0.0, 1.0)

    def update(self, rows: Rows, ref_log_probs: torch.Tensor | None = None) -> dict[str, float]:
        """One pass of cross-entropy updates on ``rows``; returns the mean loss and grad norm."""
        ref = self._log_probs(self.ref, rows) if ref_log_probs is None else ref_log_probs
        labels, mine = self.labels(rows), set(self._mine(rows))
        beta, device = self.params.beta_train, self.ctx.device
        keys = list(dict.fromkeys(rows.prompt_keys))  # prompts in batch order: verl splits the batch in order
        n = min(self.params.mini_batches or self.ctx.mini_batches, len(keys)) or 1
        params = [p for p in self.prm.parameters() if p.requires_grad]
        losses, norms = [], []
        self.prm.train()
        for i in range(n):
            chunk = set(keys[i * len(keys) // n : (i + 1) * len(keys) // n])
            sel = [b for b, k in enumerate(rows.prompt_keys) if k in chunk]
            local = [b for b in sel if b in mine]
            loss_sum = 0.0
            sub = rows.select(local)
            assert self.ctx.micro_batches is not None  # (the trainer passes its split)
            for bucket, packs in self.ctx.micro_batches(sub) if local else ():
                mb, idx = sub.select(bucket), torch.tensor([local[j] for j in bucket], dtype=torch.long)
                mask = mb.response_mask.to(device)
                with self.ctx.autocast():
                    log_probs, _ = policy_forward(self.prm, mb.prompt_ids, mb.response_ids, mb.response_mask,
                                                  self.ctx.pad_id, 1.0, packs=packs)
                q = implicit_log_ratio(log_probs.float(), ref[idx].to(device), mask)
                # the mean over the mini-batch's rows (of every process): micro-batch losses add up to it
                loss = prm_cross_entropy(q, labels[idx].to(device), mask, beta).sum() / len(sel)
                loss.backward()
                loss_sum += loss.item()
            self._all_reduce_grads(params)
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, self.params.grad_clip)))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss_sum)
        total = self._sum_over_processes(sum(losses))
        return {"reward_model/ce_loss": total / n, "reward_model/grad_norm": sum(norms) / n,
                "reward_model/lr": self.optimizer.param_groups[0]["lr"]}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.prm.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prm.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    # ---------------------------------------------------------------- passes and processes
    def _mine(self, rows: Rows) -> list[int]:
        """This process's rows: its shard of the prompts (all rows on one process)."""
        dist = self.ctx.dist
        if dist is None or not dist.active:
            return list(range(len(rows)))
        keep = set(dist.shard(sorted(set(rows.prompt_keys), key=str)))
        return [b for b, k in enumerate(rows.prompt_keys) if k in keep]

    def _log_probs(self, model: torch.nn.Module, rows: Rows) -> torch.Tensor:
        """``[B, T]`` log-probs (float32, CPU) of this process's rows under ``model``; 0 on the others."""
        out = torch.zeros(rows.response_mask.shape, dtype=torch.float32)
        mine = self._mine(rows)
        if not mine:
            return out
        sub = rows.select(mine)
        assert self.ctx.micro_batches is not None  # (the trainer passes its split)
        out[torch.tensor(mine, dtype=torch.long)], _ = no_grad_forward(model, sub, self.ctx.micro_batches(sub),
                                                                       self.ctx.pad_id, 1.0, self.ctx.autocast)
        return out

    def _from_every_process(self, values: torch.Tensor, rows: Rows) -> torch.Tensor:
        """``values`` ``[B, T]`` filled on this process's rows → filled on every row."""
        dist = self.ctx.dist
        if dist is None or not dist.active:
            return values
        out = torch.zeros_like(values)
        for sel, part in dist.all_gather_object((self._mine(rows), values[self._mine(rows)])):
            if sel:
                out[torch.tensor(sel, dtype=torch.long)] = part
        return out

    def _all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        if self.ctx.dist is not None:
            self.ctx.dist.all_reduce_grads(params)

    def _sum_over_processes(self, value: float) -> float:
        dist = self.ctx.dist
        if dist is None or not dist.active:
            return value
        return float(sum(dist.all_gather_object(float(value))))

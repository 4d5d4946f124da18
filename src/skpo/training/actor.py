"""The actor: the policy being trained and what updates it — precision, the frozen reference
copy, LoRA, FSDP2 sharding, the optimizer and schedule, forwards in micro-batches, backward and
the optimizer step (``docs/training.md``, ``docs/scaling.md``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from skpo.config import RunConfig, TrainSection
from skpo.engines import autocast
from skpo.models.forward import can_pack, length_buckets, no_grad_forward, pack_buckets, policy_forward
from skpo.models.loading import frozen_copy
from skpo.models.lora import is_lora
from skpo.models.precision import head_in_float32, lm_head_float32
from skpo.rows import Rows
from skpo.training.distributed import Dist
from skpo.training.schedule import lr_factor
from skpo.training.sharding import full_weights, shard_model, sharding_settings, zero_loss_pass

log = logging.getLogger("skpo")


@dataclass(frozen=True)
class ActorSettings:
    """What the actor reads of a run's config.

    Attributes:
        dtype: ``model.dtype``, the compute precision.
        lm_head_precision: ``model.lm_head_precision``.
        train: the ``train`` section: optimizer, schedule, micro-batches and packing, sharding,
            gradient checkpointing and clipping.
        temperature: ``rollout.temperature``: log-probs are those of ``logits / temperature``,
            like the sampler's.
    """

    dtype: str = "float32"
    lm_head_precision: str = "auto"
    train: TrainSection = field(default_factory=TrainSection)
    temperature: float = 1.0

    @classmethod
    def of(cls, cfg: RunConfig) -> ActorSettings:
        return cls(cfg.model.dtype, cfg.model.lm_head_precision, cfg.train, cfg.rollout.temperature)


class Actor:
    """Built in two phases so that auxiliary models (a reward model copied from the initial
    policy) see the policy before it is sharded: ``Actor(...)`` sets precision and the reference
    copy, :meth:`prepare` then checkpoints activations, shards and builds the optimizer.

    Mixed precision as verl / TRL: the weights and AdamW state stay in their loaded dtype
    (float32 unless ``model.pure_low_precision``); every forward runs under autocast, or, when
    sharded, through FSDP's mixed-precision policy.
    """

    def __init__(self, model: torch.nn.Module, settings: ActorSettings, accelerator: Accelerator, dist: Dist,
                 kl_coef: float, pad_id: int) -> None:
        self.settings, self.accelerator, self.dist, self.pad_id = settings, accelerator, dist, pad_id
        self.device = accelerator.device
        self.compute_dtype = getattr(torch, settings.dtype)
        self.weights_dtype = next(model.parameters()).dtype
        self.autocast_dtype = None if self.compute_dtype == self.weights_dtype else self.compute_dtype
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.autocast_dtype == torch.float16 else None)  # fp16 gradients underflow
        if self.autocast_dtype is not None and lm_head_float32(settings.lm_head_precision, self.device):
            head_in_float32(model)
        self.lora = is_lora(model)
        # LoRA: the base with its adapters off is the reference, so no copy
        self.ref_model = frozen_copy(model) if kl_coef > 0 and not self.lora else None
        t = settings.train
        self.sharding = sharding_settings(t.fsdp, t.gradient_checkpointing, accelerator)
        if self.sharding is not None and self.lora:
            raise ValueError("train.fsdp with model.lora is not supported: LoRA trains a small adapter on a replicated "
                             "base; use data parallelism (no train.fsdp) or full fine-tuning with FSDP")
        self.policy = model

    def prepare(self) -> None:
        """Activation checkpointing, FSDP2 shards, AdamW and the LR schedule, devices."""
        t, model = self.settings.train, self.policy
        if t.gradient_checkpointing or (self.sharding and self.sharding.gradient_checkpointing):
            # non-reentrant: works with frozen inputs (LoRA), packed masks and FSDP units
            model.gradient_checkpointing_enable(  # type: ignore[operator]  # (a Hugging Face model)
                gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.sharding is not None:  # FSDP2: parameters become shards; the optimizer is built on them
            # compute precision through FSDP's MixedPrecisionPolicy (verl), not autocast: layers are
            # gathered in the compute dtype and gradients reduced in float32 onto float32 master shards
            shard_model(model, self.sharding, self.device, compute_dtype=self.autocast_dtype)
            if self.ref_model is not None:
                shard_model(self.ref_model, self.sharding, self.device, compute_dtype=self.autocast_dtype)
            self.autocast_dtype = None
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        if self.sharding is not None:
            self.model, self.optimizer = model, optimizer
        elif self.dist.active:  # data parallel without DDP: one gradient all-reduce per optimizer step (distributed.py)
            self.model, self.optimizer = model.to(self.device), self.accelerator.prepare(optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.policy = self.accelerator.unwrap_model(self.model)
        if self.ref_model is not None and self.sharding is None:
            self.ref_model.to(self.device)

    def _lr_factor(self, step: int) -> float:
        """The LR multiplier at ``step``: :func:`skpo.training.schedule.lr_factor` (decay to 0)."""
        t = self.settings.train
        return lr_factor(step, t.steps, t.warmup_steps, t.lr_schedule)

    # ------------------------------------------------------------------ forwards
    def autocast(self):
        """The compute-precision context of every training forward (no-op in float32)."""
        return autocast(self.device, self.autocast_dtype)

    def full_weights(self):
        """Whole weights on every rank for passes whose count differs per rank (rollouts,
        log-prob passes, evaluation); a no-op unless sharded (:mod:`skpo.training.sharding`)."""
        return full_weights(self.model if self.sharding is not None else None)

    def micro_batches(self, rows: Rows) -> list[tuple[list[int], list[list[int]] | None]]:
        """``(row indices, packs)`` per forward: answers to one prompt packed into tree-masked
        sequences of at most ``train.pack_max_tokens`` when the attention supports it, else
        length-bucketed padded rows (``packs=None``); either way within ``train.micro_batch_tokens``."""
        t = self.settings.train
        if t.pack_max_tokens and can_pack(self.policy):
            return pack_buckets(rows.prompt_ids, rows.lengths().tolist(), t.micro_batch_tokens, t.pack_max_tokens)
        return [(bucket, None) for bucket in length_buckets(row_lengths(rows), t.micro_batch_tokens)]

    def log_probs(self, model: torch.nn.Module, rows: Rows) -> torch.Tensor:
        """``[B, T]`` float32 log-probs of ``rows`` under ``model`` (:func:`~skpo.models.forward.no_grad_forward`
        in the actor's micro-batches and precision)."""
        return no_grad_forward(model, rows, self.micro_batches(rows), self.pad_id, self.settings.temperature,
                               self.autocast)[0]

    def token_stats(self, rows: Rows, reduce) -> dict[str, torch.Tensor]:
        """``reduce``'s token statistics ``{name: [B, T]}`` of the policy on ``rows`` (the same forward)."""
        return no_grad_forward(self.policy, rows, self.micro_batches(rows), self.pad_id, self.settings.temperature,
                               self.autocast, reduce)[1]

    def train_forward(self, rows: Rows, packs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob, entropy)`` ``[b, T]`` of the training model on one micro-batch, with grad."""
        with self.autocast():
            log_prob, entropy = policy_forward(self.model, rows.prompt_ids, rows.response_ids, rows.response_mask,
                                               self.pad_id, self.settings.temperature, with_entropy=True, packs=packs)
        assert entropy is not None  # (with_entropy=True)
        return log_prob, entropy

    # ------------------------------------------------------------------ backward and step
    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss if self.scaler is None else self.scaler.scale(loss))

    def pad_passes(self, n: int) -> None:
        """``n`` zero-loss forward/backward passes: a sharded rank with fewer micro-batches runs
        FSDP's collectives as often as the others."""
        for _ in range(n):
            with self.autocast():
                zero_loss_pass(self.model, self.pad_id, self.device)

    def optimizer_step(self) -> float:
        """Sum gradients over ranks (FSDP already reduce-scattered them), unscale, clip, step,
        zero; returns the gradient norm before clipping."""
        if self.sharding is None:
            self.dist.all_reduce_grads(list(self.model.parameters()))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.settings.train.grad_clip)
        if self.scaler is not None:  # skips the step when fp16 gradients overflowed
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(grad_norm, "full_tensor"):  # sharded: the norm over all shards
            grad_norm = grad_norm.full_tensor()
        return float(grad_norm)


def row_lengths(rows: Rows) -> list[int]:
    """Prompt plus response tokens of each row."""
    return [len(p) + int(n) for p, n in zip(rows.prompt_ids, rows.lengths())]

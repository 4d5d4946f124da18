"""Parameter sharding with FSDP2 (``torch.distributed.fsdp.fully_shard``) for models that do not
fit one device with their float32 AdamW state.

The whole story (sources, readings, how each step runs): ``docs/scaling.md``, section "Notes from skpo.training.sharding"."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed.checkpoint as dcp
from accelerate.utils import FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

log = logging.getLogger("skpo")


@dataclass(frozen=True)
class ShardingSettings:
    """How the policy is sharded (``None`` anywhere a run is not sharded)."""

    reshard_after_forward: bool = True
    cpu_offload: bool = False
    gradient_checkpointing: bool = False
    source: str = "train.fsdp"  # or "accelerate config"


def sharding_settings(fsdp_section, gradient_checkpointing: bool, accelerator) -> ShardingSettings | None:
    """The run's sharding: ``train.fsdp`` when enabled, else an FSDP accelerate launch config
    (``fsdp_version: 2`` only), else ``None``. One process has nothing to shard: ``None``, with
    a warning (its checkpoints still resume sharded runs and the other way round).

    Raises:
        ValueError: an accelerate FSDP config asking for FSDP version 1.
    """
    plugin = accelerate_fsdp_plugin(accelerator)
    if (fsdp_section.enabled or plugin is not None) and accelerator.num_processes < 2:
        log.warning("train.fsdp: one process, nothing to shard; training unsharded")
        return None
    if fsdp_section.enabled:
        return ShardingSettings(fsdp_section.reshard_after_forward, fsdp_section.cpu_offload, gradient_checkpointing)
    if plugin is None:
        return None
    if int(getattr(plugin, "fsdp_version", 1) or 1) != 2:
        raise ValueError("the accelerate config asks for FSDP version 1; skpo shards with FSDP2: set "
                         "fsdp_version: 2 in it (see configs/accelerate/)")
    reshard = getattr(plugin, "reshard_after_forward", True)
    offload = getattr(plugin, "cpu_offload", None)  # a bool, CPUOffloadPolicy (FSDP2) or CPUOffload (FSDP1)
    return ShardingSettings(
        reshard_after_forward=reshard if isinstance(reshard, bool) else True,
        cpu_offload=_offloads(offload),
        gradient_checkpointing=gradient_checkpointing or bool(getattr(plugin, "activation_checkpointing", False)),
        source="accelerate config",
    )


def _offloads(policy) -> bool:
    """accelerate's ``cpu_offload``: a bool, ``CPUOffloadPolicy`` (offload) or the base
    ``OffloadPolicy`` (none) for FSDP2, ``CPUOffload(offload_params=…)`` for FSDP1."""
    if isinstance(policy, bool) or policy is None:
        return bool(policy)
    return isinstance(policy, CPUOffloadPolicy) or bool(getattr(policy, "offload_params", False))


def accelerate_fsdp_plugin(accelerator):
    """The FSDP settings of an ``accelerate launch`` with an FSDP config: the accelerator's
    plugin, or one built from the ``FSDP_*`` variables the launcher exported (accelerate builds
    no plugin on CPU; the variables are the same), or ``None``."""
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    if plugin is None and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes"):
        plugin = FullyShardedDataParallelPlugin()  # reads FSDP_VERSION, FSDP_OFFLOAD_PARAMS, …
    return plugin


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of ``model`` (by the classes in ``_no_split_modules``).

    Raises:
        ValueError: the model names no such classes or none are found in it.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in names]
    if not units:
        raise ValueError(f"{type(model).__name__}: no decoder layers to shard (its _no_split_modules is {sorted(names)})")
    return units


def shard_model(model: torch.nn.Module, settings: ShardingSettings, device: torch.device,
                compute_dtype: torch.dtype | None = None) -> list[FSDPModule]:
    """Apply ``fully_shard`` to each decoder layer and then to ``model`` (in place; the model's
    class becomes its FSDP subclass). Gradients are summed over ranks, not averaged. With a
    ``compute_dtype`` (bf16/fp16) every unit gathers and computes in it and reduces gradients in
    float32 (``MixedPrecisionPolicy``). Returns the FSDP units, root last."""
    kwargs: dict[str, Any] = {"reshard_after_forward": settings.reshard_after_forward}
    if compute_dtype is not None and compute_dtype != torch.float32:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32,
                                                   cast_forward_inputs=True)
    if settings.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    elif device.type != "cpu":
        model.to(device)
    units = shard_units(model)
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    modules = cast(list[FSDPModule], [*units, model])  # fully_shard made each one an FSDPModule, in place
    model._skpo_reshard_after_forward = settings.reshard_after_forward  # type: ignore[assignment]  # (a plain attribute) restored by full_weights
    for m in modules:
        m.set_gradient_divide_factor(1.0)  # a sum: the loss denominators are the global batch's
        m.set_force_sum_reduction_for_comms(True)  # plain SUM collectives (gloo has no PREMUL_SUM)
    return modules


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def fsdp_units(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_weights(model: torch.nn.Module | None) -> Iterator[None]:
    """Inside: ``model``'s parameters are whole on every rank and forwards issue no collective
    (each rank may run any number of them). Entering is a collective (one all-gather per unit):
    every rank must enter. A no-op for a model that is not sharded."""
    if model is None or not is_sharded(model):
        yield
        return
    units = fsdp_units(model)
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
        reshard = getattr(model, "_skpo_reshard_after_forward", True)  # the setting the run was sharded with
        for m in units:
            m.set_reshard_after_forward(reshard, recurse=False)


def full_named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, whole tensor)`` for every state-dict entry, one all-gather per sharded tensor
    (a collective: every rank iterates in the same order); plain tensors pass through."""
    for name, tensor in model.state_dict().items():
        yield name, tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def equalize(counts_of_ranks: list[int]) -> int:
    """Micro-batches every rank runs in a sharded update: the most any rank needs (ranks with
    fewer run zero-loss micro-batches, so forward/backward collectives stay matched)."""
    return max(counts_of_ranks) if counts_of_ranks else 0


def zero_loss_pass(model: torch.nn.Module, token_id: int, device: torch.device) -> None:
    """One forward/backward of a one-token input with loss 0: runs every unit's all-gather and
    gradient reduce-scatter (adding zeros), to match a rank that has one more micro-batch."""
    out = model(input_ids=torch.tensor([[token_id]], device=device)).logits
    (out.float().sum() * 0.0).backward()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on rank 0's CPU (empty on the others); a collective."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return cast(dict[str, torch.Tensor], state)  # a model's entries are tensors (torch types them as any state value)


def load_full_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a whole (unsharded) state dict, read by every rank, into the sharded ``model``."""
    # torch types the dict as any state value; dict is invariant, so a dict of tensors needs the cast
    set_model_state_dict(model, cast(dict[str, Any], state_dict),
                         options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_param_names(model: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters in the optimizer's order (the trainer builds AdamW on
    ``[p for p in model.parameters() if p.requires_grad]``; tied weights appear once)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def load_unsharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load ``torch.optim`` state saved by an unsharded run (``optimizer.pt``, keyed by position)
    into the sharded ``model``'s optimizer: positions become parameter names, each rank keeps its
    shard of every moment."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper: the torch optimizer
    names = optimizer_param_names(model)
    groups, state, position = [], {}, 0
    for group in saved["param_groups"]:
        ids = list(group["params"])
        fqns = names[position : position + len(ids)]
        if len(fqns) != len(ids):
            raise ValueError(f"the saved optimizer holds more parameters than the model trains ({len(names)})")
        position += len(ids)
        state.update({fqn: saved["state"][i] for i, fqn in zip(ids, fqns) if i in saved["state"]})
        groups.append({**group, "params": fqns})
    if position != len(names):
        raise ValueError(f"the saved optimizer holds {position} parameters, the model trains {len(names)}")
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))


def save_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every rank writes its shard of the optimizer state under ``path`` (a directory on a file
    system all ranks see); a collective."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper: the torch optimizer
    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(path))


def load_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Read the optimizer state written by :func:`save_sharded_optimizer`, re-sharded for this
    run's world size (a collective), or whole into an unsharded run's optimizer."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper: the torch optimizer
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(path))
    set_optimizer_state_dict(model, optimizer, state["optimizer"])

"""LoRA adapters through ``peft`` (``model.lora.enabled: true``): for users with one GPU.

- The policy is the base model with adapters on ``model.lora.target_modules``; only the
  adapters train (and only they have AdamW state).
- The frozen base doubles as the reference model: with a KL term, reference log-probs are the
  policy's with its adapters switched off (no second copy of the weights).
- Rollouts: the Hugging Face engine samples from the adapted policy itself; a separate engine
  (vLLM) receives the merged weights ``W + B·A·α/r`` after every step, one tensor at a time
  (:func:`merged_named_tensors`).
- Checkpoints: ``model/`` holds the merged model (a plain Hugging Face directory: ``skpo eval``
  and any HF tool load it) and ``adapter/`` the adapters, which ``--resume`` loads onto the base
  model named by ``model.path``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import torch
from safetensors.torch import load_file

from skpo.errors import CheckpointError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

ADAPTER_DIR = "adapter"


def apply_lora(model: torch.nn.Module, section: Any, seed: int = 0) -> torch.nn.Module:
    """``model`` with LoRA adapters per ``section`` (``r``, ``alpha``, ``dropout``, ``target_modules``),
    initialised from ``seed`` alone (peft draws the A matrices from the global generator: without
    this, a run's adapters would depend on whatever drew random numbers before it in the process)."""
    try:
        from peft import LoraConfig, get_peft_model  # optional: LoRA runs only
    except ImportError as err:  # pragma: no cover - peft is a dependency
        raise ImportError("model.lora needs peft (pip install peft)") from err
    config = LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                        target_modules=list(section.target_modules), task_type="CAUSAL_LM")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> TypeGuard[PeftModel]:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def merged_named_tensors(model: PeftModel) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's tensors with the adapters added, ``W + ΔW`` (peft's
    ``get_delta_weight``), one at a time under the base model's own names (``model.layers.0.
    self_attn.q_proj.weight`` …): only the merged tensor being yielded is new memory, and it is
    released here before the next one is made (``torch.no_grad`` as a decorator would keep the
    last yielded value in its wrapper while the next is computed: two merged tensors at once).
    The base weights are not touched (merging in place and unmerging would leave rounding in them)."""
    from peft.tuners.lora import LoraLayer  # optional: LoRA runs only

    base = model.get_base_model()
    adapted = {f"{name}.base_layer.weight": m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        merged = tensor.detach()
        module = adapted.get(name)
        if module is not None:
            with torch.no_grad():
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        merged = merged + module.get_delta_weight(adapter).to(merged.dtype)
        yield name.replace(".base_layer.", "."), merged


def merged_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """:func:`merged_named_tensors` as a dict of copies (checkpoints)."""
    return {name: tensor.clone() for name, tensor in merged_named_tensors(model)}


def save_lora(model: PeftModel, directory: Path) -> None:
    """``directory/model`` (merged, a plain HF model) and ``directory/adapter`` (the adapters)."""
    merged = merged_state_dict(model)
    base = cast("PreTrainedModel", model.get_base_model())  # peft wraps a transformers model here
    base.save_pretrained(Path(directory) / "model", state_dict=merged, safe_serialization=True)
    model.save_pretrained(str(Path(directory) / ADAPTER_DIR), safe_serialization=True)


def load_adapter(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's adapters onto ``model`` (a LoRA policy of the same configuration)."""
    from peft import set_peft_model_state_dict  # optional: LoRA runs only
    path = Path(checkpoint) / ADAPTER_DIR / "adapter_model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: no {ADAPTER_DIR}/adapter_model.safetensors (not a LoRA run's checkpoint)")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"{path}: adapter weights do not match the model (unexpected {unexpected[:3]})")

"""LoRA adapters through ``peft`` (``model.lora.enabled: true``): for users with one GPU.

- The policy is the base model with adapters on ``model.lora.target_modules``; only the
  adapters train (and only they have AdamW state).
- The frozen base doubles as the reference model: with a KL term, reference log-probs are the
  policy's with its adapters switched off (no second copy of the weights).
- Rollouts: the Hugging Face engine samples from the adapted policy itself; a separate engine
  (vLLM) receives the merged weights ``W + B·A·α/r`` after every step (:func:`merged_state_dict`).
- Checkpoints: ``model/`` holds the merged model (a plain Hugging Face directory: ``skpo eval``
  and any HF tool load it) and ``adapter/`` the adapters, which ``--resume`` loads onto the base
  model named by ``model.path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ADAPTER_DIR = "adapter"


def apply_lora(model: torch.nn.Module, section: Any) -> torch.nn.Module:
    """``model`` with LoRA adapters per ``section`` (``r``, ``alpha``, ``dropout``, ``target_modules``)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - peft is a dependency
        raise ImportError("model.lora needs peft (pip install peft)") from err
    config = LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                        target_modules=list(section.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict with the adapters added, ``W + ΔW`` (peft's
    ``get_delta_weight``), under the base model's own names (``model.layers.0.self_attn.
    q_proj.weight`` …). The base weights are not touched (merging in place and unmerging would
    leave rounding in them)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    out = {name.replace(".base_layer.", "."): tensor.detach().clone()
           for name, tensor in base.state_dict().items() if "lora_" not in name}
    for module_name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            key = f"{module_name}.weight"
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    out[key] = out[key] + module.get_delta_weight(adapter).to(out[key].dtype)
    return out


def save_lora(model: torch.nn.Module, directory: Path) -> None:
    """``directory/model`` (merged, a plain HF model) and ``directory/adapter`` (the adapters)."""
    merged = merged_state_dict(model)
    model.get_base_model().save_pretrained(Path(directory) / "model", state_dict=merged, safe_serialization=True)
    model.save_pretrained(Path(directory) / ADAPTER_DIR, safe_serialization=True)


def load_adapter(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's adapters onto ``model`` (a LoRA policy of the same configuration)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(checkpoint) / ADAPTER_DIR / "adapter_model.safetensors"
    if not path.is_file():
        from skpo.training.checkpoint import CheckpointError

        raise CheckpointError(f"{checkpoint}: no {ADAPTER_DIR}/adapter_model.safetensors (not a LoRA run's checkpoint)")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        from skpo.training.checkpoint import CheckpointError

        raise CheckpointError(f"{path}: adapter weights do not match the model (unexpected {unexpected[:3]})")

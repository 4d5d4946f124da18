"""Load a policy and its tokenizer from a local Hugging Face directory — never from the hub.

:func:`load_policy` and :func:`load_tokenizer` go through ``AutoModelForCausalLM`` /
``AutoTokenizer`` with ``local_files_only=True``, so the shipped tiny model
(:func:`tiny_arith_dir`) and a downloaded Qwen checkpoint directory load the same way. A path
that does not exist, or is not a model directory, raises an error that names it before
``transformers`` is asked (which would otherwise try to read it as a hub repository id).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from skpo.errors import UserError
from skpo.models.manifest import verify_checkpoint

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def tiny_arith_dir() -> Path:
    """Directory of the shipped warm-started tiny model (``skpo/assets/tiny-arith``)."""
    return _ASSETS / "tiny-arith"


SHIPPED_MODELS = {
    "tiny-arith": "the embedded default: chains of 2-4 operations (docs/embedded-default.md)",
    "tiny-arith-long": "the longer-chain setting: chains of 5-8 operations, continued from tiny-arith (docs/results.md)",
    "tiny-countdown": "the countdown task: 3-4 numbers of 1-10, target 10-100 (data.task=countdown; docs/countdown.md)",
}


def shipped_model_dir(name: str) -> Path | None:
    """The directory of a shipped warm start named ``name`` (:data:`SHIPPED_MODELS`), else None."""
    return _ASSETS / name if name in SHIPPED_MODELS else None


def resolve_model_path(path: str) -> Path:
    """``tiny-arith`` → the shipped checkpoint; a training checkpoint dir → its ``model/``,
    verified against the checkpoint's manifest before anything loads it."""
    if (shipped := shipped_model_dir(path)) is not None:
        return shipped
    p = Path(path).expanduser()
    if (p / "model" / "config.json").is_file():
        if (p / "manifest.json").is_file():
            verify_checkpoint(p)
        return p / "model"
    if (p / "config.json").is_file() and (p.parent / "manifest.json").is_file():  # CHECKPOINT/model
        verify_checkpoint(p.parent)
    return p


def hub_hint(path: str) -> str:
    """How to get a model named by its Hugging Face Hub id (nothing is downloaded at run time)."""
    if Path(path).expanduser().exists() or not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(path)):
        return ""
    local = f"/models/{str(path).split('/')[-1]}"
    return (f"; {path!r} looks like a Hugging Face Hub id, and skpo reads local directories only: download it first "
            f"(hf download {path} --local-dir {local}, the huggingface_hub command line) and set model.path={local}")


def _check_dir(path: str | Path, what: str, needed: tuple[str, ...]) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} path {str(path)!r} does not exist (models load from local directories only)")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} path {str(path)!r} is not a directory")
    if not any((path / name).is_file() for name in needed):
        raise FileNotFoundError(
            f"{str(path)!r} is not a {what} directory: none of {', '.join(needed)} found in it"
        )
    return path


class ModelFilesError(UserError, ValueError):
    """A model folder whose weight files are damaged or incomplete; the message names the file."""


def check_weight_files(path: str | Path) -> None:
    """Every safetensors file of a model folder (``model.safetensors``, or the shards its
    ``model.safetensors.index.json`` lists) is there and whole: its header reads and its data
    covers what the header promises. Reads the headers only. Raises :class:`ModelFilesError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelFilesError(f"{index}: not a safetensors index ({err})") from None
    else:
        shards = ["model.safetensors"] if (path / "model.safetensors").is_file() else []
    for name in shards:
        file = path / name
        if not file.is_file():
            raise ModelFilesError(f"{file}: missing (listed in {index.name}); the model folder is incomplete")
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ModelFilesError(f"{file}: not a whole safetensors file ({err}); the model folder is damaged "
                                  "or was copied only in part") from None


def load_policy(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None
) -> PreTrainedModel:
    """A causal LM from a local Hugging Face directory, on ``device`` in ``dtype``.

    Args:
        path: directory holding ``config.json`` and the weights (safetensors or bin).
        device: where to put the model.
        dtype: parameter dtype (a ``torch.dtype`` or a name like ``"bfloat16"``); ``None`` keeps
            the checkpoint's own dtype.

    Raises:
        FileNotFoundError / NotADirectoryError: naming ``path`` when it is missing or not a
            model directory.
        ModelFilesError: a safetensors file is damaged or truncated (:func:`check_weight_files`).
    """
    path = _check_dir(path, "model", ("config.json",))
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(f"{str(path)!r} has a config.json but no weights ({', '.join(_WEIGHT_FILES)})")
    check_weight_files(path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, dtype=dtype if dtype is not None else "auto"
    )
    return model.to(device)


def load_tokenizer(path: str | Path, padding_side: str | None = None) -> PreTrainedTokenizerBase:
    """A tokenizer from a local Hugging Face directory (``padding_side`` overrides the saved one).

    A tokenizer without a pad token gets its EOS token as pad (common for base LLMs).
    """
    path = _check_dir(path, "tokenizer", _TOKENIZER_FILES)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode with no trainable parameter (a KL reference, PRIME's
    reference model)."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref

"""Build a trainer from a ``RunConfig``: resolve the model path, load model and tokenizer
(local directories only), build the prompt source."""

from __future__ import annotations

from pathlib import Path

import torch

from skpo.config import RunConfig
from skpo.models.loading import load_policy, load_tokenizer, tiny_arith_dir
from skpo.tasks.arith import ArithConfig
from skpo.tasks.sources import ArithSource, JsonlSource, PromptSource


def resolve_model_path(path: str) -> Path:
    """``tiny-arith`` → the shipped checkpoint; a training checkpoint dir → its ``model/``."""
    if path == "tiny-arith":
        return tiny_arith_dir()
    p = Path(path).expanduser()
    if (p / "model" / "config.json").is_file():
        return p / "model"
    return p


def device_of(cfg: RunConfig) -> str:
    if cfg.model.device != "auto":
        return cfg.model.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def arith_config(cfg: RunConfig) -> ArithConfig:
    a = cfg.data.arith
    return ArithConfig(min_ops=a.min_ops, max_ops=a.max_ops, min_operand=a.min_operand, max_operand=a.max_operand,
                       operators=tuple(a.operators), allow_negative=a.allow_negative)


def check_paths(cfg: RunConfig) -> None:
    """Fail early, naming the key and path, when the model or data path is absent."""
    path = resolve_model_path(cfg.model.path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.path: {cfg.model.path!r} is not a local model directory (no config.json at {path})")
    if cfg.data.task == "jsonl" and not Path(cfg.data.path).is_file():
        raise FileNotFoundError(f"data.path: {cfg.data.path!r} does not exist")


def build_source(cfg: RunConfig, tokenizer) -> PromptSource:
    d = cfg.data
    if d.task == "arith":
        return ArithSource(tokenizer, arith_config(cfg), d.arith.pool_size, seed=cfg.train.seed)
    return JsonlSource(tokenizer, d.path, d.prompt_key, d.answer_key, d.prompt_template, d.verifier)


def build_trainer(cfg: RunConfig, resume: bool = False):
    from skpo.training.trainer import Trainer

    path = resolve_model_path(cfg.model.path)
    tokenizer = load_tokenizer(path)
    model = load_policy(path, device=device_of(cfg), dtype=cfg.model.dtype)
    return Trainer(cfg, model=model, tokenizer=tokenizer, source=build_source(cfg, tokenizer), resume=resume)


def evaluate_heldout(model, tokenizer, cfg: RunConfig, k: int | None = None, num_problems: int | None = None) -> dict:
    """The runner on the fixed held-out arithmetic set of the run's difficulty."""
    from skpo.evaluation.benchmarks import get_spec
    from skpo.evaluation.runner import evaluate

    spec = get_spec("arith").model_copy(update={"arith": arith_config(cfg), "n_problems": num_problems or cfg.eval.num_problems})
    was_training = model.training
    model.eval()
    try:
        return evaluate(model, tokenizer, spec, k=k or cfg.eval.k, temperature=cfg.eval.temperature,
                        max_new_tokens=cfg.eval.max_new_tokens, seed=cfg.train.seed)
    finally:
        model.train(was_training)

"""Build a trainer from a ``RunConfig``: resolve the model path, load model and tokenizer
(local directories only) in the run's precision, build the prompt source and its reward, and
evaluate on the run's benchmarks."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig

from skpo.config import HELDOUT, SYNTHETIC_TASKS, RunConfig, arith_config, countdown_config
from skpo.engines.context import model_positions
from skpo.evaluation.benchmarks import get_spec, load_problems, resolve_benchmarks
from skpo.methods import method_to_document
from skpo.models.loading import (_WEIGHT_FILES, check_weight_files, hub_hint, load_policy, load_tokenizer,
                                 resolve_model_path)
from skpo.models.lora import apply_lora
from skpo.rewards.math import default_pool
from skpo.rewards.registry import RewardContext, RewardEntry, get_reward
from skpo.tasks.sources import ArithSource, CountdownSource, DatasetSource, PromptSource
from skpo.training.checkpoint import find_checkpoint, read_state
from skpo.training.context import context_plan
from skpo.training.reward_check import check_reward
from skpo.training.run_dir import (check_resolved_method, check_resume_config, check_resume_data, preflight,
                                   read_run_json, source_fingerprint)
from skpo.training.trainer import Trainer

log = logging.getLogger("skpo")


def device_of(cfg: RunConfig) -> str:
    if cfg.model.device != "auto":
        return cfg.model.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def training_reward(cfg: RunConfig) -> RewardEntry:
    """The reward training uses: ``reward.function`` when set, else the data's reward."""
    return get_reward(cfg.reward.function or cfg.data.reward, tuple(cfg.reward.range), cfg.reward.timeout_s,
                      cfg.reward.style, cfg.reward.worker)


def check_paths(cfg: RunConfig) -> None:
    """Fail early, naming the key and path, when the model or data path is absent, the reward
    does not resolve, or a benchmark is unknown."""
    path = resolve_model_path(cfg.model.path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.path: {cfg.model.path!r} is not a local model directory (no config.json at {path})"
                                + hub_hint(cfg.model.path))
    if cfg.data.task not in SYNTHETIC_TASKS and not Path(cfg.data.path).expanduser().exists():
        raise FileNotFoundError(f"data.path: {cfg.data.path!r} does not exist")
    try:
        training_reward(cfg)
    except ValueError as err:
        raise ValueError(f"{'reward.function' if cfg.reward.function else 'data.reward'}: {err}") from None
    if cfg.rollout.engine == "vllm":
        check_vllm_available()
    if cfg.log.wandb:
        if importlib.util.find_spec("wandb") is None:
            raise ValueError("log.wandb is true but wandb is not installed: pip install wandb (or log.wandb=false)")
    if cfg.eval.every:
        try:
            resolve_benchmarks([b for b in cfg.eval.benchmarks if b not in (*SYNTHETIC_TASKS, HELDOUT)])
        except (KeyError, FileNotFoundError, ValueError) as err:
            raise ValueError(f"eval.benchmarks: {err.args[0] if isinstance(err, KeyError) else err}") from None


def check_run(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
              allow_data_change: bool = False) -> list[str]:
    """Every check a run makes before its first step, without loading the weights: the method
    and its overrides, the run directory (used, locked, resumable, and on ``resume`` the saved
    config and the training data against this one's), the model directory (config, weights, tokenizer), the
    reward (run on a few rows: the gold answer paid, a wrong one not — skpo.training.reward_check), the
    device, every training prompt (read, templated, tokenized, length-filtered: the same
    source a run builds) and every evaluation benchmark (read and parsed). Raises the error a
    run would raise; returns notes (settings that do not apply, dropped prompts) for the
    user to read. A config that passes cannot fail at start-up on configuration."""
    resolved = cfg.resolved()
    method, notes = resolved.method, list(resolved.notes)
    if os.environ.get("RANK", "0") == "0":
        preflight(cfg.log.out_dir, resume=resume, overwrite=overwrite)
    if resume:
        path, _ = find_checkpoint(Path(cfg.log.out_dir), run_id=read_run_json(Path(cfg.log.out_dir)).get("run_id"))
        saved = read_state(path).get("config")
        if saved:
            check_resume_config(saved, cfg.model_dump(mode="json"), Path(cfg.log.out_dir))
        ran_with = read_run_json(Path(cfg.log.out_dir)).get("method_resolved")
        if ran_with:  # the method as it resolves now (overrides, shortcuts, an edited file) against the run's
            check_resolved_method(ran_with, json.loads(json.dumps(method_to_document(method))), Path(cfg.log.out_dir))
    check_paths(cfg)
    if cfg.model.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device: {cfg.model.device!r} but no CUDA device is available")
    path = resolve_model_path(cfg.model.path)
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(f"model.path: {str(path)!r} has a config.json but no weights ({', '.join(_WEIGHT_FILES)})")
    check_weight_files(path)
    model_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    tokenizer = load_tokenizer(path)
    source = build_source(cfg, tokenizer, model_positions(model_config))
    if resume:
        changed = check_resume_data(read_run_json(Path(cfg.log.out_dir)).get("data"), source_fingerprint(source),
                                    Path(cfg.log.out_dir), allow_data_change)
        if changed:
            notes.append(f"--allow-data-change: the training data changed since the run started ({', '.join(changed)} "
                         "differ); the resume goes on with it and records it in run.json")

    notes += check_reward(source, tuple(cfg.reward.range))  # the reward runs: gold paid, a wrong answer not

    plan = context_plan(cfg, method, source, model_config)  # the run's context fits the model
    if plan.may_cut:
        notes.append(f"rollout: the engine's context is {plan.context} tokens"
                     + ("" if plan.need is None else f" and the rollout may need {plan.need}")
                     + ": answers that reach it are cut, counted as rollout/cut_by_context and scored as unfinished")

    dropped = len(getattr(source, "dropped", []))
    if dropped:
        limit = getattr(getattr(source, "spec", None), "max_prompt_tokens", cfg.data.max_prompt_tokens)
        why = "data.max_prompt_tokens" if cfg.data.max_prompt_tokens is not None else "the model's context (positions − 1)"
        notes.append(f"data: {dropped} prompts longer than {limit} tokens ({why}) are dropped ({len(source.items)} remain)")
    if len(source.items) < cfg.train.prompts_per_step:
        notes.append(f"data: {len(source.items)} prompts, fewer than train.prompts_per_step={cfg.train.prompts_per_step} "
                     "(prompts repeat within a step)")
    notes += data_notes(cfg, source)
    if cfg.eval.every or cfg.eval.every_tokens:
        for name in cfg.eval.benchmarks:
            if name == HELDOUT:
                continue  # the source built above holds them
            if name in SYNTHETIC_TASKS:
                get_spec(name)
                continue
            for spec in resolve_benchmarks([name]):
                load_problems(spec)
    if cfg.model.dtype != "float32" and device_of(cfg) == "cpu":
        notes.append(f"model.dtype={cfg.model.dtype} on CPU: autocast runs, but low-precision matmuls are slow on most CPUs")
    return notes


def check_vllm_available() -> None:
    """``rollout.engine: vllm`` needs vLLM installed and a CUDA device."""
    if importlib.util.find_spec("vllm") is None:
        raise ValueError("rollout.engine: vllm, but vLLM is not installed: pip install -r requirements/gpu.txt "
                         "(a set of versions that installs together), or use rollout.engine=hf")
    if not torch.cuda.is_available():
        raise ValueError("rollout.engine: vllm needs a CUDA device (none is visible); use rollout.engine=hf on CPU")


def build_source(cfg: RunConfig, tokenizer, model_positions: int | None = None) -> PromptSource:
    """The training prompts and their reward. Without ``data.max_prompt_tokens``, prompts that
    fill the model's ``model_positions`` (no room for an answer) are dropped with a count."""
    d = cfg.data
    if d.task not in SYNTHETIC_TASKS and d.max_prompt_tokens is None and model_positions:
        d = d.model_copy(update={"max_prompt_tokens": model_positions - 1})
    reward = training_reward(cfg)
    if d.task == "arith":
        return ArithSource(tokenizer, arith_config(cfg), d.arith.pool_size, seed=cfg.train.seed, reward=reward,
                           context=RewardContext(math_timeout_s=cfg.reward.math_timeout_s, tokenizer=tokenizer))
    if d.task == "countdown":
        return CountdownSource(tokenizer, countdown_config(cfg), d.countdown.pool_size, seed=cfg.train.seed, reward=reward,
                               context=RewardContext(math_timeout_s=cfg.reward.math_timeout_s, tokenizer=tokenizer))
    source = DatasetSource(tokenizer, d, reward=reward, heldout=d.heldout)
    source.context = RewardContext(plain_prompt=not source.chat, stop=tuple(d.stop),
                                   math_timeout_s=cfg.reward.math_timeout_s, tokenizer=tokenizer)
    return source


def data_notes(cfg: RunConfig, source: PromptSource) -> list[str]:
    """What a data-file run holds out and evaluates in training, in a line or two (printed at
    the start of a run and by ``--check``)."""
    if cfg.data.task == "arith":
        return []
    evaluates = bool(cfg.eval.every or cfg.eval.every_tokens)
    held = len(getattr(source, "heldout", []))
    rows = getattr(source, "rows", held + len(source.items))
    notes = []
    if held:
        how = "data.heldout" if cfg.data.heldout is not None else "a tenth of the rows, at most 100; data.heldout sets it"
        when = (f"scored as eval/{HELDOUT} every {cfg.eval.every} step{'s' * (cfg.eval.every > 1)}" if cfg.eval.every else
                f"scored as eval/{HELDOUT}" if evaluates and HELDOUT in cfg.eval.benchmarks else "not evaluated")
        notes.append(f"data: {held} of {rows} rows of {cfg.data.path} are held out of training ({how}; the rows whose "
                     f"prompts hash lowest, the same in every run) and {when}"
                     + ("" if HELDOUT in cfg.eval.benchmarks else f" (eval.benchmarks does not list {HELDOUT!r})"))
    elif HELDOUT in cfg.eval.benchmarks and evaluates:
        notes.append(f"eval: no rows held out of {cfg.data.path} ({rows} rows: fewer than 10, or data.heldout=0), so "
                     f"there is no {HELDOUT!r} evaluation; set data.heldout=N or eval.benchmarks")
    if evaluates and not [b for b in cfg.eval.benchmarks if b != HELDOUT or held]:
        notes.append("eval: in-training evaluation is off (nothing to score); set data.heldout=N to hold out rows "
                     "of the data, or eval.benchmarks=[...] (benchmark names, spec files or data files)")
    return notes


def load_run_model(cfg: RunConfig, path: Path | None = None):
    """The policy in the run's precision: float32 master weights (compute precision comes from
    autocast), or ``model.dtype`` itself when ``model.pure_low_precision`` — with a warning,
    since at the paper's learning rate most bf16 updates round away."""
    path = path or resolve_model_path(cfg.model.path)
    if cfg.model.pure_low_precision and cfg.model.dtype != "float32":
        warnings.warn(
            f"model.pure_low_precision: weights and AdamW state held in {cfg.model.dtype}; updates smaller than "
            f"the weights' rounding step (lr {cfg.train.lr:g}) are lost. Mixed precision (the default) keeps float32 "
            "master weights.", stacklevel=2,
        )
        dtype = cfg.model.dtype
    else:
        dtype = "float32"
    model = load_policy(path, device=device_of(cfg), dtype=dtype)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, seed=cfg.train.seed)
    return model


def build_trainer(cfg: RunConfig, resume: bool = False, overwrite: bool = False, allow_data_change: bool = False):
    """The trainer of ``cfg``; ``resume`` continues the run in ``log.out_dir`` (on changed training
    data only with ``allow_data_change``), ``overwrite`` replaces it (a used directory is refused
    otherwise: skpo.training.run_dir)."""
    if os.environ.get("RANK", "0") == "0":  # (accelerate launch: only the main process owns the directory)
        preflight(cfg.log.out_dir, resume=resume, overwrite=overwrite)  # before minutes of model loading

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.reward.workers:
        default_pool(cfg.reward.workers)
    path = resolve_model_path(cfg.model.path)
    log.info(f"loading the model from {path}")
    tokenizer = load_tokenizer(path)
    model = load_run_model(cfg, path)
    log.info("reading the data: " + {"arith": "synthetic arithmetic", "countdown": "synthetic countdown"}.get(
        cfg.data.task, str(cfg.data.path)))
    source = build_source(cfg, tokenizer, model_positions(getattr(model, "config", None)))
    for note in data_notes(cfg, source):
        log.info(note)
    return Trainer(cfg, model=model, tokenizer=tokenizer, source=source, resume=resume, overwrite=overwrite,
                   allow_data_change=allow_data_change)

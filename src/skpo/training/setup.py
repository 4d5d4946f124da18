"""The composition root: :func:`build_trainer` assembles a run from its ``RunConfig`` — the
run directory checked, the method (resolved once, with the config), the model and tokenizer
(local directories only) in the run's precision, the prompt source and its reward, the actor,
the engine, the run state and the run directory opened or resumed — and hands the finished parts
to the :class:`~skpo.training.trainer.Trainer`. :func:`check_run` makes the same checks without
loading the weights (``skpo train --check``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoConfig

from skpo.config import HELDOUT, SYNTHETIC_TASKS, RunConfig, arith_config, countdown_config
from skpo.engines import holds_weights
from skpo.engines.context import model_positions
from skpo.errors import ConfigError
from skpo.evaluation.benchmarks import get_spec, load_problems, resolve_benchmarks
from skpo.methods import method_to_document
from skpo.models.loading import (
    _WEIGHT_FILES,
    check_weight_files,
    hub_hint,
    load_policy,
    load_tokenizer,
    resolve_model_path,
)
from skpo.models.lora import apply_lora
from skpo.models.reward_models import RewardModelContext, RewardModelSlot, build_reward_model
from skpo.rewards.math import default_pool
from skpo.rewards.registry import RewardContext, RewardEntry, get_reward
from skpo.tasks.prompts import stop_token_ids
from skpo.tasks.sources import ArithSource, CountdownSource, DatasetSource, PromptSource
from skpo.training.actor import Actor, ActorSettings
from skpo.training.checkpoint import load_checkpoint, load_extra_state, load_weights
from skpo.training.context import build_engine, run_context_window
from skpo.training.distributed import Dist
from skpo.training.logging import truncate_metrics
from skpo.training.reward_check import check_reward
from skpo.training.run_dir import ResumePoint, RunFiles, check_resume, new_run_id, preflight, source_fingerprint
from skpo.training.run_state import RunState
from skpo.training.trainer import Trainer
from skpo.version import __version__

log = logging.getLogger("skpo")


def device_of(cfg: RunConfig) -> str:
    if cfg.model.device != "auto":
        return cfg.model.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def training_reward(cfg: RunConfig) -> RewardEntry:
    """The reward training uses: ``reward.function`` when set, else the data's reward."""
    return get_reward(cfg.reward.function or cfg.data.reward, cfg.reward.range, cfg.reward.timeout_s,
                      cfg.reward.style, cfg.reward.worker)


def check_paths(cfg: RunConfig) -> None:
    """Fail early, naming the key and path, when the model or data path is absent, the reward
    does not resolve, or a benchmark is unknown."""
    path = resolve_model_path(cfg.model.path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.path: {cfg.model.path!r} is not a local model directory (no config.json at {path})"
                                + hub_hint(cfg.model.path))
    if cfg.data.task not in SYNTHETIC_TASKS:
        assert cfg.data.path is not None  # (DataSection requires it for a data file)
        if not Path(cfg.data.path).expanduser().exists():
            raise FileNotFoundError(f"data.path: {cfg.data.path!r} does not exist")
    try:
        training_reward(cfg)
    except ValueError as err:
        raise ValueError(f"{'reward.function' if cfg.reward.function else 'data.reward'}: {err}") from None
    if cfg.log.wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError("log.wandb is true but wandb is not installed: pip install wandb (or log.wandb=false)")
    assert cfg.eval.benchmarks is not None  # (filled in when the config is validated)
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
    assert cfg.log.out_dir is not None and cfg.eval.benchmarks is not None  # (filled in when the config is validated)
    if os.environ.get("RANK", "0") == "0":
        preflight(cfg.log.out_dir, resume=resume, overwrite=overwrite)
    check_paths(cfg)
    if cfg.rollout.engine == "vllm":
        check_vllm_available()
    if cfg.model.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device: {cfg.model.device!r} but no CUDA device is available")
    path = resolve_model_path(cfg.model.path)
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(f"model.path: {str(path)!r} has a config.json but no weights ({', '.join(_WEIGHT_FILES)})")
    check_weight_files(path)
    model_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    tokenizer = load_tokenizer(path)
    source = build_source(cfg, tokenizer, model_positions(model_config))
    if resume:  # the checks a resume makes at start (skpo.training.run_dir.check_resume)
        point = check_resume(Path(cfg.log.out_dir), cfg.model_dump(mode="json"), method_to_document(method),
                             source_fingerprint(source), allow_data_change)
        if point.data_changes:
            notes.append(f"--allow-data-change: the training data changed since the run started "
                         f"({', '.join(point.data_changes)} differ); the resume goes on with it and records it in run.json")

    notes += check_reward(source, cfg.reward.range)  # the reward runs: gold paid, a wrong answer not

    window = run_context_window(cfg.rollout, method, source, model_config)  # the run's context window fits the model
    if window.may_cut:
        notes.append(f"rollout: the engine's context is {window.tokens} tokens"
                     + ("" if window.need is None else f" and the rollout may need {window.need}")
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
    """``rollout.engine: vllm`` needs vLLM installed and a CUDA device (``skpo train`` and
    ``--check`` ask before the build; :func:`build_trainer` itself builds whatever ``vllm``
    imports, the test fake on CPU included)."""
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
    assert cfg.eval.benchmarks is not None  # (filled in when the config is validated)
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
        dtype: str = cfg.model.dtype
    else:
        dtype = "float32"
    model: torch.nn.Module = load_policy(path, device=device_of(cfg), dtype=dtype)
    if cfg.model.lora.enabled:
        model = apply_lora(model, cfg.model.lora, seed=cfg.train.seed)
    return model


def build_trainer(cfg: RunConfig, resume: bool = False, overwrite: bool = False, allow_data_change: bool = False,
                  accelerator: Accelerator | None = None) -> Trainer:
    """The run of ``cfg``, assembled, as a :class:`~skpo.training.trainer.Trainer` ready to
    ``train()``: the run directory checked (before minutes of model loading), the method (resolved
    once, with the config), the model and tokenizer, the data and its reward, the processes, the
    actor, the method's reward model, the engine held to the run's context, the run state, and
    the run directory opened — ``resume`` continues the run in ``log.out_dir`` from its newest
    intact checkpoint (on changed training data only with ``allow_data_change``), ``overwrite``
    replaces it (a used directory is refused otherwise: skpo.training.run_dir)."""
    run_dir = cfg.log.out_dir
    assert run_dir is not None  # (filled in when the config is validated)
    if os.environ.get("RANK", "0") == "0":  # (accelerate launch: only the main process owns the directory)
        preflight(run_dir, resume=resume, overwrite=overwrite)
    try:
        check_paths(cfg)
    except ValueError as err:  # its messages name the key (reward, benchmarks)
        raise ConfigError(str(err)) from err
    resolved = cfg.resolved()
    method = resolved.method
    for note in resolved.notes:
        log.warning(note)
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

    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available() or cfg.model.device == "cpu")
    set_seed(cfg.train.seed)
    dist = Dist(accelerator)
    if cfg.train.prompts_per_step < dist.world:
        raise ValueError(f"train.prompts_per_step={cfg.train.prompts_per_step} is the global batch: it needs at least "
                         f"one prompt per process ({dist.world} processes)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    actor = Actor(model, ActorSettings.of(cfg), accelerator, dist, method.kl_coef, pad_id)
    # the method's trained reward model (PRIME's implicit PRM), if it declares one: built from
    # the initial policy, before the policy is sharded or a checkpoint is loaded
    reward_model = build_reward_model(method, RewardModelContext(
        policy=model, ref_model=actor.ref_model if actor.sharding is None else None, device=accelerator.device,
        autocast=actor.autocast, autocast_dtype=actor.autocast_dtype, micro_batches=actor.micro_batches,
        pad_id=pad_id, reward_range=method.reward_range, mini_batches=cfg.train.mini_batches, dist=dist,
        lora=actor.lora, gradient_checkpointing=cfg.train.gradient_checkpointing))
    actor.prepare()
    stop_ids = stop_token_ids(tokenizer, actor.policy, chat=getattr(source, "chat", False))
    window = run_context_window(cfg.rollout, method, source, actor.policy.config)
    engine = build_engine(cfg, window, actor, tokenizer, stop_ids, dist)
    state = RunState(method, cfg.train.rho_mode, cfg.rollout.initial_length)

    files = RunFiles(Path(run_dir), accelerator.is_main_process)
    data = source_fingerprint(source)
    method_doc = method_to_document(method)

    def resume_run() -> tuple[str, dict[str, Any]]:
        point = check_resume(Path(run_dir), cfg.model_dump(mode="json"), method_doc, data, allow_data_change)
        if point.data_changes and accelerator.is_main_process:
            log.warning(f"--allow-data-change: resuming on changed training data ({', '.join(point.data_changes)} "
                        "differ); recorded in run.json")
        return load_resume_point(point, actor, state, reward_model, Path(run_dir), data)

    run_id = files.open(cfg, resume=resume, overwrite=overwrite, resume_run=resume_run, info={
        "method": cfg.train.method, "reward": source.reward.name, "compute_dtype": cfg.model.dtype,
        "weights_dtype": str(actor.weights_dtype).removeprefix("torch."), "stop_token_ids": stop_ids,
        "prompts": len(source.items), "prompts_dropped_overlong": len(getattr(source, "dropped", [])),
        "context_window": dataclasses.asdict(window), "world_size": dist.world,
        "device": str(accelerator.device), "skpo_version": __version__,
        "data_columns": getattr(source, "columns", {}), "data": data,
    }, method_doc=method_doc)
    if resume and holds_weights(engine):  # a separate engine loaded the base weights
        engine.sync_weights(actor.policy)
    return Trainer(cfg, method, tokenizer=tokenizer, source=source, accelerator=accelerator, dist=dist, actor=actor,
                   reward_model=reward_model, engine=engine, context_window=window, state=state, files=files, run_id=run_id,
                   stop_ids=stop_ids, pad_id=pad_id)


def load_resume_point(point: ResumePoint, actor: Actor, state: RunState, reward_model: RewardModelSlot | None,
                      run_dir: Path, data: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Load the checkpoint ``point`` names (checked: :func:`~skpo.training.run_dir.check_resume`)
    into the actor, the run state and the reward model, drop the metrics and samples logged
    after it (they will be redone), and return the run id and the record of this resume for
    ``run.json``."""
    path = point.checkpoint
    load_weights(path, actor.policy, actor.model)
    saved = load_checkpoint(path, actor.optimizer, actor.scheduler, model=actor.policy)
    state.load_state_dict(saved, path)
    if reward_model is not None:
        reward_model.load_state_dict(load_extra_state(path, "reward_model"))
    if actor.accelerator.is_main_process:
        truncate_metrics(run_dir / "metrics.jsonl", state.step)
        truncate_metrics(run_dir / "samples.jsonl", state.step)  # (the same JSON lines with a step)
    record: dict[str, Any] = {"step": state.step, "checkpoint": path.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "changed": point.config_changes,
                              "skipped": [{"checkpoint": p.name, "reason": why} for p, why in point.skipped]}
    if point.data_changes:  # the fingerprints before and now (run.json's "data" becomes the new one)
        record["data_changed"] = {"before": point.data, "now": data}
    return saved.get("run_id") or point.run_id or new_run_id(), record

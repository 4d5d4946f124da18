"""The trainer: one thin loop that runs every method by configuration alone.

    sample prompts → rollout → old/reference log-probs → advantages → PPO mini-batches → trackers

A method is a document (``skpo/methods/<name>.yaml``, resolved with the run's overrides by
:mod:`skpo.methods`): its rollout kind (a function of ``skpo.training.rollouts.ROLLOUTS``), its
trackers, and loss terms, each naming the role of the rows it applies to, its advantage
estimator, its loss and its aggregation. What the trainer needs to know about a part — is an
estimator group-relative and grouped by what, does it read the value tracker, step values,
token weights or token statistics of the rollout policy, does it keep state across steps, which
roles does a rollout kind produce — is the registries' metadata. The
trainer compares against no method, estimator, loss, role or rollout name. One row record
flows from the rollout to the loss; each phase returns a new one. A method may also name a
reward model trained online (``skpo.training.reward_models``, PRIME's implicit PRM): it runs
between the log-probs and the advantages, and its per-token outputs reach the estimators that
need them through ``rows.extra``.

Simplifications (stated, not hidden):
- DAPO dynamic sampling draws at most ``train.dapo_max_gen_batches`` rounds of prompts to
  fill the batch with informative groups; when they run out the step trains on fewer
  groups (``filter/underfilled``), and an all-equal group that still reaches the loss is
  masked out.
- With ``rho_mode="kl"`` the per-prompt KL of the SPO trackers is the policy drift
  accumulated since the prompt was last seen, each step's drift measured as the k3 KL of
  the updated policy against the rollout policy on one micro-batch of that step's tokens.
- Several processes (``accelerate launch``) each roll out their own prompts; loss
  denominators are summed over processes so the averaged gradient equals the global one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from skpo.algorithms import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    AggDenominators,
    LengthTracker,
    MethodPreset,
    PolicyLossInputs,
    ValueTracker,
    agg_loss,
    dapo_group_filter,
    kl_penalty,
    masked_mean,
    build_prompt_sampler,
    oar_bilevel_weights,
    term_loss,
)
from skpo.algorithms.token_stats import EXTRA_PREFIX, reducer
from skpo import __version__
from skpo.config import RunConfig, dump_config
from skpo.errors import EvaluationInterrupted, TrainingInterrupted
from skpo.methods import method_to_document, resolve_for_run
from skpo.rollout import HFEngine, SamplingParams, autocast, mix_seed
from skpo.rollout.context import ContextLimit
from skpo.tasks.prompts import stop_token_ids
from skpo.tasks.sources import PromptItem, PromptSource
from skpo.training.distributed import Dist
from skpo.training.sharding import (
    equalize,
    full_state_dict,
    full_weights,
    load_full_state_dict,
    save_sharded_optimizer,
    shard_model,
    sharding_settings,
    zero_loss_pass,
)
from skpo.training.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    read_state,
    load_extra_state,
    save_checkpoint,
    sharded_stage,
)
from skpo.training.reward_models import RewardModelContext, build_reward_model
from skpo.training.lora import is_lora, load_adapter
from skpo.training.logging import MetricsLogger, Progress, truncate_metrics
from skpo.training.oar import oar_importance
from skpo.training.precision import head_in_float32, lm_head_float32
from skpo.training.rollouts import (
    ROLLOUTS,
    RolloutContext,
    RolloutResult,
    Timer,
    context_plan,
    joint_roles,
    rollout_params,
)
from skpo.training.sampling import StepPrompts, plan_prompts, score_pool, scoring_params
from skpo.training.schedule import lr_factor
from skpo.training.rows import Rows, can_pack, last_token_rewards, length_buckets, pack_buckets, policy_forward
from skpo.training.run_dir import (
    clear_run,
    check_resolved_method,
    check_resume_config,
    new_run_id,
    open_run_dir,
    read_run_json,
    write_atomic,
    write_run_json,
)
from skpo.training.signals import StopOnSignals

log = logging.getLogger("skpo")


def resolve_preset(cfg: RunConfig) -> MethodPreset:
    """The run's method: ``train.method``'s document with the config's overrides, validated
    (:func:`skpo.methods.resolve_for_run`)."""
    return resolve_for_run(cfg)[0]


class Trainer:
    def __init__(self, cfg: RunConfig, *, model, tokenizer, source: PromptSource, resume: bool = False,
                 overwrite: bool = False, accelerator: Accelerator | None = None) -> None:
        self.cfg = cfg
        self.preset, notes = resolve_for_run(cfg)
        for note in notes:
            log.warning(note)
        self.rollout_params = rollout_params(self.preset)
        t = cfg.train
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available() or cfg.model.device == "cpu")
        set_seed(t.seed)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.source = source
        self.run_dir = Path(cfg.log.out_dir)  # created, locked and checked by _open_run_dir

        # Mixed precision (verl / TRL): the weights and AdamW state stay in their loaded dtype
        # (float32 unless model.pure_low_precision), every forward runs under autocast.
        self.compute_dtype = getattr(torch, cfg.model.dtype)
        weights_dtype = next(model.parameters()).dtype
        self.autocast_dtype = None if self.compute_dtype == weights_dtype else self.compute_dtype
        self.scaler = (torch.amp.GradScaler(self.accelerator.device.type)
                       if self.autocast_dtype == torch.float16 else None)  # fp16 gradients underflow
        if self.autocast_dtype is not None and lm_head_float32(cfg.model.lm_head_precision, self.accelerator.device):
            head_in_float32(model)
        self.ref_model = None
        self.lora = is_lora(model)
        if self.preset.kl_coef > 0 and not self.lora:  # (LoRA: the base with adapters off is the reference)
            self.ref_model = _frozen_copy(model)
        self.dist = Dist(self.accelerator)
        if t.prompts_per_step < self.dist.world:
            raise ValueError(f"train.prompts_per_step={t.prompts_per_step} is the global batch: it needs at least one prompt "
                             f"per process ({self.dist.world} processes)")
        self.sharding = sharding_settings(t.fsdp, t.gradient_checkpointing, self.accelerator)
        if self.sharding is not None and self.lora:
            raise ValueError("train.fsdp with model.lora is not supported: LoRA trains a small adapter on a replicated "
                             "base; use data parallelism (no train.fsdp) or full fine-tuning with FSDP")
        # the method's trained reward model (PRIME's implicit PRM; skpo.training.reward_models), if it declares
        # one: built from the initial policy, before the policy is sharded or a checkpoint is loaded
        self.reward_model = build_reward_model(self.preset, RewardModelContext(
            policy=model, ref_model=self.ref_model if self.sharding is None else None, device=self.accelerator.device,
            autocast=self._autocast, autocast_dtype=self.autocast_dtype, micro_batches=self._micro_batches,
            pad_id=self.pad_id, reward_range=self.preset.reward_range, mini_batches=t.mini_batches, dist=self.dist,
            lora=self.lora, gradient_checkpointing=t.gradient_checkpointing))
        if t.gradient_checkpointing or (self.sharding and self.sharding.gradient_checkpointing):
            # non-reentrant: works with frozen inputs (LoRA), packed masks and FSDP units
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.sharding is not None:  # FSDP2: parameters become shards; the optimizer is built on them
            # compute precision through FSDP's MixedPrecisionPolicy (verl), not autocast: layers are
            # gathered in the compute dtype and gradients reduced in float32 onto float32 master shards
            shard_model(model, self.sharding, self.accelerator.device, compute_dtype=self.autocast_dtype)
            if self.ref_model is not None:
                shard_model(self.ref_model, self.sharding, self.accelerator.device, compute_dtype=self.autocast_dtype)
            self.autocast_dtype = None
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        if self.sharding is not None:
            self.model, self.optimizer = model, optimizer
        elif self.dist.active:  # data parallel without DDP: one gradient all-reduce per optimizer step (distributed.py)
            self.model, self.optimizer = model.to(self.accelerator.device), self.accelerator.prepare(optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.policy = self.accelerator.unwrap_model(self.model)
        if self.ref_model is not None and self.sharding is None:
            self.ref_model.to(self.accelerator.device)
        self.stop_ids = stop_token_ids(tokenizer, self.policy, chat=getattr(source, "chat", False))
        self.engine = self._build_engine(tokenizer)
        tracker_kw = {"rho_mode": t.rho_mode}
        self.value_tracker = ValueTracker(reward_range=self.preset.reward_range, **tracker_kw) if self.preset.value_tracker else None
        low, high = (getattr(self.rollout_params, f, d) for f, d in (("split_low", 1 / 6), ("split_high", 1 / 2)))
        self.length_tracker = (
            LengthTracker(initial=cfg.rollout.skpo.initial_length, low=low, high=high, **tracker_kw)
            if self.preset.length_tracker else None
        )
        # state of stateful estimators (``state`` metadata: RiskPO's quantiles, PAPO's controller), per
        # term; saved in every checkpoint like the trackers
        self.term_states = {t.role: s for t in self.preset.terms if (s := t.make_state()) is not None}
        # which prompts a step trains on and how many answers each gets (skpo.algorithms.samplers);
        # its per-prompt statistics are replicated and checkpointed like the trackers
        self.prompt_sampler = build_prompt_sampler(self.preset.prompt_sampling, dict(self.preset.prompt_sampling_params))
        self._verdicts: dict | None = None  # (prompt key, response ids) -> verdict, on steps that log samples
        self.drift = 0.0  # accumulated policy KL (rho_mode="kl")
        self.drift_seen: dict[str, float] = {}
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self._open_run_dir(resume, overwrite, {
            "method": cfg.train.method, "reward": self.source.reward.name, "compute_dtype": cfg.model.dtype,
            "weights_dtype": str(weights_dtype).removeprefix("torch."), "stop_token_ids": self.stop_ids,
            "prompts": len(self.source.items), "prompts_dropped_overlong": len(getattr(self.source, "dropped", [])),
            "context": dataclasses.asdict(self.context), "world_size": self.dist.world,
            "device": str(self.accelerator.device), "skpo_version": __version__,
            "data_columns": getattr(self.source, "columns", {}),
        })
        if resume and hasattr(self.engine, "sync_weights"):  # a separate engine loaded the base weights
            self.engine.sync_weights(self.policy)

    def _build_engine(self, tokenizer):
        """The rollout engine: the Hugging Face decoder on the policy itself (no weight copy),
        or vLLM colocated on the same GPUs (its weights synced after every update); either way
        held to the run's context (:func:`skpo.training.rollouts.context_plan`): a completion
        that reaches it is cut, counted and logged, never silently."""
        r = self.cfg.rollout
        self.context = context_plan(self.cfg, self.preset, self.source, self.policy.config)
        if self.context.may_cut and self.accelerator.is_main_process:
            log.warning(f"rollout: the engine's context is {self.context.context} tokens"
                        + ("" if self.context.need is None else f", the rollout may need {self.context.need}")
                        + ": answers that reach it are cut there, counted as rollout/cut_by_context and scored as unfinished")
        if r.engine == "vllm":
            from skpo.rollout.vllm_engine import VLLMEngine  # the [vllm] extra
            from skpo.training.setup import resolve_model_path

            engine = VLLMEngine(str(resolve_model_path(self.cfg.model.path)), dtype=self.cfg.model.dtype,
                                gpu_memory_utilization=r.vllm.gpu_memory_utilization, sleep=r.vllm.sleep,
                                max_model_len=self.context.context, seed=self.cfg.train.seed,
                                tensor_parallel_size=r.vllm.tensor_parallel_size, rank=self.dist.rank,
                                local_rank=self.accelerator.local_process_index, world_size=self.dist.world,
                                weight_bucket_mb=r.vllm.weight_bucket_mb)
        else:
            engine = HFEngine(
                self.policy, pad_token_id=self.pad_id, eos_token_id=self.stop_ids,
                decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True), batch_size=r.engine_batch_size,
                autocast_dtype=self.autocast_dtype,
            )
        self.context_limit = ContextLimit(engine, self.context.context)  # (its cut count, whatever wraps it later)
        return self.context_limit

    def _decoding_weights(self):
        """Whole weights for the engine's decoding: the Hugging Face engine decodes with the
        (sharded) policy itself; vLLM holds its own copy, so nothing is gathered for it."""
        return self._full_weights() if self.cfg.rollout.engine == "hf" else contextlib.nullcontext()

    # ------------------------------------------------------------------ run directory
    def _open_run_dir(self, resume: bool, overwrite: bool, info: dict[str, Any]) -> None:
        """Lock the run directory (main process), refuse or clear it, resume, open the metrics
        and write ``config.yaml`` / ``run.json`` (skpo.training.run_dir); a failure releases
        the lock."""
        main = self.accelerator.is_main_process
        self.run_lock = open_run_dir(self.run_dir, resume=resume, overwrite=overwrite) if main else None
        self.logger = None
        self._saved_step: int | None = None
        self._new_run = not resume
        try:
            self.run_id, resumed = self._resume() if resume else (new_run_id(), None)
            if main:
                self.logger = MetricsLogger(
                    self.run_dir, tensorboard=self.cfg.log.tensorboard, wandb=self.cfg.log.wandb,
                    wandb_project=self.cfg.log.wandb_project, config=self.cfg.model_dump(mode="json"), append=resume,
                )
                write_atomic(self.run_dir / "config.yaml", dump_config(self.cfg))  # the effective config
                method_doc = method_to_document(self.preset)  # every hyper-parameter the method runs with
                write_atomic(self.run_dir / "method.yaml", yaml.safe_dump(method_doc, sort_keys=False, allow_unicode=True))
                write_run_json(self.run_dir, {**info, "method_resolved": method_doc, "pid": os.getpid()}, self.run_id, resumed)
        except BaseException:
            self._discard_failed_start()
            self.close()
            raise

    def _discard_failed_start(self) -> None:
        """A new run that fails before its first step is done removes the files it wrote
        (``clear_run``: the run's own files only), so the same command can run again; a resumed
        run or one that trained keeps everything."""
        if not (self.accelerator.is_main_process and self._new_run and self.step == 0 and self.run_lock is not None):
            return
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        removed = clear_run(self.run_dir)
        if removed:
            log.info(f"the run failed before its first step: removed what it wrote in {self.run_dir} "
                        f"({', '.join(removed)}), so the command can run again")

    def close(self) -> None:
        """Close the metrics and release the run directory (also on exit or crash: the kernel
        drops the lock)."""
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if self.run_lock is not None:
            self.run_lock.release()

    def _autocast(self):
        """The compute-precision context of every training forward (no-op in float32)."""
        return autocast(self.accelerator.device, self.autocast_dtype)

    # ------------------------------------------------------------------ schedule
    def _full_weights(self):
        """Whole weights on every rank for passes whose count differs per rank (rollouts,
        log-prob passes, evaluation); a no-op unless sharded (skpo/training/sharding.py)."""
        return full_weights(self.model if self.sharding is not None else None)

    def _lr_factor(self, step: int) -> float:
        """The LR multiplier at ``step``: :func:`skpo.training.schedule.lr_factor` (decay to 0)."""
        t = self.cfg.train
        return lr_factor(step, t.steps, t.warmup_steps, t.lr_schedule)

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Train to ``train.steps`` (or the token budget) and save. On SIGINT/SIGTERM: finish the
        current step, save, and raise :class:`~skpo.errors.TrainingInterrupted` (a second
        signal aborts at once); the evaluation due at that step is skipped."""
        t = self.cfg.train
        progress = Progress(self.cfg.log.progress and self.accelerator.is_main_process, t.steps, self.step,
                            every=self.cfg.log.print_every, token_budget=t.token_budget,
                            seconds=self.cfg.log.print_seconds, header=self._start_line())
        with self._running() as signals, progress as bar:
            while self.step < t.steps and not self.budget_spent:
                started, tokens_before = time.perf_counter(), self.tokens_seen
                metrics = self.train_step(self.step)
                self.step += 1
                self.train_seconds += time.perf_counter() - started
                metrics["tokens/seen"] = self.tokens_seen  # cumulative decoded rollout tokens
                metrics["time/train_elapsed"] = self.train_seconds  # cumulative, evaluation excluded
                stopping = self._stop_signal(signals)
                every_tokens = self.cfg.eval.every_tokens
                crossed = every_tokens and self.tokens_seen // every_tokens > tokens_before // every_tokens
                if not stopping and ((self.cfg.eval.every and self.step % self.cfg.eval.every == 0) or crossed):
                    try:  # a signal during the evaluation stops it within one batch
                        metrics.update(self.evaluate(should_stop=lambda: signals.signum is not None))
                    except EvaluationInterrupted:
                        metrics["eval/interrupted"] = 1.0  # this step's evaluation is skipped, and recorded so
                    stopping = self._stop_signal(signals)
                if self.logger:
                    self.logger.log(self.step, metrics)
                if self.cfg.log.save_every and self.step % self.cfg.log.save_every == 0:
                    self.save()
                bar(self.step, metrics)
                if stopping:
                    self._save_and_stop(stopping)
            self.save()

    def _start_line(self) -> str:
        """What this run is, in one line: method, model, data and prompts, processes, device, run directory."""
        data = "synthetic arithmetic" if self.cfg.data.task == "arith" else str(self.cfg.data.path)
        where = "resuming at step " + str(self.step) if self.step else "from step 0"
        return (f"skpo train: {self.cfg.train.method} on {self.cfg.model.path} | data {data} ({len(self.source.items)} "
                f"prompts) | {self.dist.world} process{'es' if self.dist.world > 1 else ''} on "
                f"{self.accelerator.device.type} | {where}, {self.cfg.train.steps} steps | {self.run_dir}")

    @contextlib.contextmanager
    def _running(self):
        """The loop's context: SIGINT/SIGTERM recorded (skpo.training.signals); on the way out,
        however it ends, the metrics closed and the run directory released."""
        try:
            with StopOnSignals() as signals:
                yield signals
        except BaseException as err:
            if not isinstance(err, TrainingInterrupted):
                self._discard_failed_start()
            raise
        finally:
            self.close()

    def _save_and_stop(self, signum: int) -> None:
        if self._saved_step != self.step:
            self.save()
        where = self.run_dir / CHECKPOINT_DIR / f"step_{self.step:06d}"
        raise TrainingInterrupted(signum, f"stopped by {signal.Signals(signum).name} after step {self.step}; "
                                          f"saved {where}; continue with --resume")

    def _stop_signal(self, signals: StopOnSignals) -> int | None:
        """The signal to stop on after this step; every process stops at the same step."""
        signum = signals.signum or 0
        if self.accelerator.num_processes > 1:
            signum = int(self.accelerator.gather(torch.tensor([signum], device=self.accelerator.device)).max())
        return signum or None

    @property
    def budget_spent(self) -> bool:
        """``train.token_budget`` decoded rollout tokens reached."""
        budget = self.cfg.train.token_budget
        return budget is not None and self.tokens_seen >= budget

    def sample_prompts(self, step: int, draw: int = 0) -> list[PromptItem]:
        """Prompts of step ``step`` — a function of (seed, step, draw, tracker and sampler state)
        only, so a resumed run draws the same prompts (``draw`` > 0: DAPO's extra rounds)."""
        return self.plan_prompts(step, draw).items

    def plan_prompts(self, step: int, draw: int = 0) -> StepPrompts:
        """The step's prompts, their group sizes (an allocating sampler) and the sampler's
        metrics, from the method's prompt sampler (:mod:`skpo.training.sampling`)."""
        return plan_prompts(self.prompt_sampler, self.source.items, self.cfg.train.prompts_per_step,
                            self.preset.group_size, self.cfg.train.seed, step, draw, self.value_tracker)

    def _score_pool(self, step: int, params: SamplingParams, timer: Timer) -> tuple[int, dict[str, float]]:
        """The scoring rollouts the prompt sampler asks for before it plans ``step`` (MMR1 VAS
        scores the whole pool); returns their decoded tokens and metrics."""
        if not self.prompt_sampler.scoring_due(step):
            return 0, {}
        with self._decoding_weights():  # sharded: each rank decodes its own number of tokens
            return score_pool(self.prompt_sampler, step, engine=self.engine, pool=self.source.items,
                              params=scoring_params(params, self.cfg.train.seed, step, self.dist.rank),
                              score=self.score, dist=self.dist, timer=timer)

    def score(self, items: list[PromptItem], responses: list[list[int]]) -> tuple[list[float], list[bool]]:
        """Training rewards and correctness of ``responses`` (token ids) to ``items``, scored as
        one batch by the source's reward; the verdict's ``[0, 1]`` reward maps linearly onto the
        method's reward range, and correctness comes from the verdict itself. A subclass
        that overrides :meth:`reward` is asked one answer at a time instead."""
        if type(self).reward is not _BATCHED_REWARD:
            pairs = [self.reward(it, list(r)) for it, r in zip(items, responses)]
            return [float(r) for r, _ in pairs], [bool(c) for _, c in pairs]
        texts = [self.tokenizer.decode(list(r), skip_special_tokens=True) for r in responses]
        verdicts = self.source.score(items, texts)
        if self._verdicts is not None:  # a step that logs samples: what the reward said of each answer
            self._verdicts.update({(it.key, tuple(r)): v for it, r, v in zip(items, responses, verdicts)})
        lo, hi = self.preset.reward_range
        return [lo + (hi - lo) * v.reward for v in verdicts], [v.correct for v in verdicts]

    def reward(self, item: PromptItem, response_ids: list[int]) -> tuple[float, bool]:
        """One answer's ``(training reward, correct)``; see :meth:`score`."""
        texts = [self.tokenizer.decode(list(response_ids), skip_special_tokens=True)]
        verdict = self.source.score([item], texts)[0]
        lo, hi = self.preset.reward_range
        return lo + (hi - lo) * verdict.reward, verdict.correct

    def train_step(self, step: int) -> dict[str, float]:
        """One step: rollout → reference/old log-probs → advantages → update → trackers. Each
        phase returns a new row record; the method's parts come from its document and the
        registries' metadata."""
        cfg = self.cfg
        timer = Timer()
        params = SamplingParams(
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens,
            stop_token_ids=[] if cfg.rollout.ignore_eos else list(self.stop_ids), ignore_eos=cfg.rollout.ignore_eos,
            seed=mix_seed(cfg.train.seed, step, 1 + self.accelerator.process_index),
        )
        scoring_decoded, sampler_metrics = self._score_pool(step, params, timer)  # (a sampler may score the pool first)
        prompts = self.plan_prompts(step)
        items = prompts.items  # the global batch; this rank rolls out its shard (with its prompts' group sizes)
        ctx = RolloutContext(
            engine=self.engine, params=params, method=self.preset, rollout_params=self.rollout_params, step=step,
            score=self.score, sample_prompts=lambda draw: self.dist.shard(self.sample_prompts(step, draw=draw)),
            source=self.source, num_prompts=len(items), rank=self.dist.rank, all_gather=self.dist.all_gather_object,
            pad_id=self.pad_id, max_new_tokens=cfg.rollout.max_new_tokens, timer=timer,
            generator=torch.Generator().manual_seed(mix_seed(cfg.train.seed, step, 23)), length_tracker=self.length_tracker,
            group_sizes=None if prompts.group_sizes is None else self.dist.shard(prompts.group_sizes),
        )
        every = self.cfg.log.samples_every
        self._verdicts = {} if every and (step + 1) % every == 0 and self.accelerator.is_main_process else None
        cuts_before = self.context_limit.cuts
        with timer("rollout"), self._decoding_weights():  # sharded: each rank decodes its own number of tokens
            result = ROLLOUTS.get(self.preset.rollout).fn(ctx, self.dist.shard(items))
        cut = self.context_limit.cuts - cuts_before  # completions that reached the context (this rank)
        if self._verdicts is not None:
            self._log_samples(step + 1, result.rows)
            self._verdicts = None
        # scoring and MC values run inside the rollout (SKPO scores answers between its
        # phases): report them apart so the phase times add up to the step
        timer.times["rollout"] -= timer.times.get("scoring", 0.0) + timer.times.get("mc_values", 0.0)
        if hasattr(self.engine, "sleep"):  # a colocated engine frees its memory for the trainer's passes
            self.engine.sleep()
        with timer("old_log_probs"), self._full_weights(), full_weights(self.ref_model):  # where the rows were sampled
            rows = self._with_old_and_ref_log_probs(result.rows)
        if self.dist.active:  # every rank gets the global batch: advantages and trackers see it all
            metrics = self.dist.mean_metrics(dict(result.metrics), weight=len(result.rows))
            rows = self.dist.gather_rows(rows, self.pad_id)
            obs = result.length_observations
            if obs is not None:
                gathered = self.dist.all_gather_object(obs)
                obs = ([k for ks, _ in gathered for k in ks], [v for _, vs in gathered for v in vs])
            result = dataclasses.replace(result, rows=rows, decoded_tokens=self.dist.sum_int(result.decoded_tokens),
                                         prefill_tokens=self.dist.sum_int(result.prefill_tokens), length_observations=obs)
        else:
            metrics = dict(result.metrics)
        metrics.update({**prompts.metrics, **sampler_metrics})  # (global already: replicated sampler, summed scoring)
        if "reward/mean" in metrics:  # the same mean in the user's own range (reward.range), for people reading the log
            (lo, hi), (a, b) = self.preset.reward_range, self.cfg.reward.range
            metrics["reward/user_mean"] = a + (b - a) * (metrics["reward/mean"] - lo) / (hi - lo)
        metrics["rollout/cut_by_context"] = cut = self.dist.sum_int(cut)
        if cut and self.accelerator.is_main_process:
            log.warning(f"step {step + 1}: {cut} completions reached the engine's context of {self.context.context} "
                        "tokens and were cut there (unfinished answers; rollout/cut_by_context)")
        if self.reward_model is not None:  # trained on the step's rows; its per-token outputs go to rows.extra
            with timer("reward_model"):
                rows = self.reward_model.step(rows, metrics)
        with timer("advantages"), self._full_weights():  # (OAR's probes run the policy)
            rows = self._with_advantages(rows, metrics)
        with timer("update"):
            self._update(rows, metrics)
        if hasattr(self.engine, "sync_weights"):  # a separate engine samples the next step with the new weights
            with timer("weight_sync"):  # (sharded: each tensor is gathered as it is sent)
                self.engine.sync_weights(self.policy)
        with timer("trackers"):
            self._update_trackers(rows, result, step)
        decoded = result.decoded_tokens + scoring_decoded  # every token decoded for the step, pool scoring included
        trained = int(rows.response_mask.sum())
        self.tokens_seen += decoded
        metrics.update({f"time/{k}": v for k, v in timer.times.items()})
        metrics["time/step"] = sum(timer.times.values())
        metrics["throughput/decoded_tokens_per_s"] = decoded / max(timer.times.get("rollout", 1e-9), 1e-9)
        metrics["throughput/trained_tokens_per_s"] = trained / max(timer.times.get("update", 1e-9), 1e-9)
        metrics["tokens/decoded"] = decoded
        metrics["tokens/trained"] = trained
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return metrics

    def _log_samples(self, step: int, rows: Rows) -> None:
        """A few prompts of this step with every row of theirs (SKPO: the segment, then the
        answers from ``[s, q]``), rewards in the user's range and the reward's verdicts, to
        ``samples.jsonl`` and the loggers (this process's rows: rank 0's shard)."""
        keys = list(dict.fromkeys(rows.index))[: self.cfg.log.samples]
        (lo, hi), (a, b) = self.preset.reward_range, self.cfg.reward.range
        records = []
        for i, (key, role) in enumerate(zip(rows.index, rows.roles())):
            if key not in keys:
                continue
            n = int(rows.response_mask[i].sum())
            response = [int(t) for t in rows.response_ids[i, :n]]
            verdict = self._verdicts.get((key, tuple(response))) if self._verdicts else None
            records.append({
                "step": step, "prompt_key": str(key), "role": role,
                "prompt": self.tokenizer.decode(list(rows.prompt_ids[i]), skip_special_tokens=True),
                "completion": self.tokenizer.decode(response, skip_special_tokens=True),
                "reward": a + (b - a) * (float(rows.rewards[i]) - lo) / (hi - lo), "tokens": n,
                "correct": None if verdict is None else verdict.correct,
                "verdict": None if verdict is None else verdict.reason,
            })
        if self.logger is not None:
            self.logger.log_samples(step, records)

    # ------------------------------------------------------------------ advantages
    def _with_advantages(self, rows: Rows, metrics: dict[str, float]) -> Rows:
        """Each term's registered estimator on its rows, with what its metadata says it reads
        (the value tracker's pre-update baseline, step values, token weights); group-relative
        estimators also get DAPO's filter and the zero-advantage share. Returns new rows with
        ``advantages`` (and, under the filter, a mask without the all-equal groups). Roles that
        form one group (the rollout kind's ``joint_roles``) are estimated together: a term's
        estimator sees the rows of all of them and writes its own role's rows."""
        advantages = torch.zeros_like(rows.response_mask)
        mask = rows.response_mask.clone()
        outputs: dict[str, torch.Tensor] = {}  # estimators' per-token tensors for their losses
        roles, grouped_with = rows.roles(), joint_roles(self.preset)
        for term in self.preset.terms:
            sel = [b for b, r in enumerate(roles) if r in grouped_with[term.role]]
            sub = rows.select(sel)
            meta = term.estimator_meta
            token_rewards = last_token_rewards(sub.rewards, sub.response_mask)
            if self.preset.kl_coef > 0 and self.preset.kl_placement == "reward":
                # verl's use_kl_in_reward: r_t − β·KL(π_old ‖ π_ref) per token, before the estimator
                kl = kl_penalty(sub.old_log_probs, sub.ref_log_probs, self.preset.kl_estimator)
                token_rewards = token_rewards - self.preset.kl_coef * kl * sub.response_mask
                metrics[f"{term.role}/kl_in_reward"] = masked_mean(kl, sub.response_mask).item()
            batch = AdvantageInputs(token_rewards, sub.response_mask, sub.index, segment_index=sub.segment_index)
            if meta.get("baseline") == "value_tracker":
                batch.baseline = self.value_tracker.baseline(sub.index)  # pre-update: unbiased A
                # rows whose prompt the tracker has never seen get the default baseline (0):
                # their advantage is the raw reward, i.e. the problem's difficulty
                metrics[f"{term.role}/first_visit_share"] = sum(k not in self.value_tracker for k in sub.index) / max(1, len(sub))
            for name in ("step_values", "step_mask", "token_step_index", "token_rewards"):
                if name in sub.extra:
                    setattr(batch, name, sub.extra[name])
            if "token_weights" in meta.get("needs", ()):
                batch.token_weights = self._token_weights(sub)
            if "response_ids" in meta.get("needs", ()):
                batch.response_ids = sub.response_ids
            if "answers" in meta.get("needs", ()):
                batch.answers = self._answers(sub)
            batch.token_stats = {k[len(EXTRA_PREFIX):]: v for k, v in sub.extra.items() if k.startswith(EXTRA_PREFIX)}
            batch.state = self.term_states.get(term.role)  # updated by the estimator
            entry = ADVANTAGE_ESTIMATORS.get(term.advantage)
            adv = entry.fn(batch, entry.make_params(term.advantage_params))
            if hasattr(batch.state, "metrics"):
                metrics.update({f"{term.role}/{k}": v for k, v in batch.state.metrics().items()})
            term_mask = sub.response_mask
            group_key = meta.get("group_key")
            if group_key is not None:
                keys = list(zip(sub.index, sub.segment_index)) if group_key == "segment" else sub.index
                keep = dapo_group_filter(sub.rewards, keys)
                metrics[f"{term.role}/zero_adv_group_share"] = 1.0 - keep.float().mean().item()
                if self.preset.filter_groups:
                    term_mask = term_mask * keep.unsqueeze(-1).float()
                    metrics["filter/kept_fraction"] = keep.float().mean().item()
            own = torch.tensor([j for j, b in enumerate(sel) if roles[b] == term.role], dtype=torch.long)
            adv, term_mask = adv[own], term_mask[own]
            metrics[f"{term.role}/advantage_abs_mean"] = masked_mean(adv.abs(), term_mask).item()
            idx = torch.tensor(sel, dtype=torch.long)[own]
            advantages[idx] = adv.to(advantages.dtype)
            mask[idx] = term_mask
            for name, value in batch.outputs.items():
                outputs.setdefault(EXTRA_PREFIX + name, torch.zeros_like(rows.response_mask))[idx] = value[own].float()
        extra = {**rows.extra, **outputs} if outputs else rows.extra
        return rows.replace(advantages=advantages, response_mask=mask, extra=extra)

    def _token_weights(self, rows: Rows) -> torch.Tensor:
        """OAR's per-token weights (Bi-Level reshaping of the probe's importance), ``[B, T]``."""
        responses = [rows.response_ids[b, : int(n)].tolist() for b, n in enumerate(rows.lengths())]
        reshaping = dict(self.preset.token_weight_params)
        answer_mode = reshaping.pop("answer_mode", "answer_mean")
        with self._autocast():
            importance, scored = oar_importance(
                self.policy, rows.prompt_ids, responses, self.source.answer_marker_ids(), mode=self.preset.token_weights,
                pad_id=self.pad_id, generator=torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, self.step, 31)),
                answer_mode=answer_mode,
            )
        weights = oar_bilevel_weights(importance, scored, **reshaping)
        full = torch.ones_like(rows.response_mask)
        full[:, : weights.shape[1]] = weights[:, : full.shape[1]]
        return full

    # ------------------------------------------------------------------ log-probs
    @property
    def on_policy(self) -> bool:
        """One mini-batch and one epoch: the update runs on the very policy that sampled, so
        π_old is the current policy and the ratio is 1 (gradient −A·∇log π). The old
        log-probs are then the detached log-probs of the update's own forward — no extra
        pass; verl's actor and TRL's GRPOTrainer take the same shortcut."""
        return self.cfg.train.mini_batches == 1 and self.cfg.train.ppo_epochs == 1

    @torch.no_grad()
    def _with_old_and_ref_log_probs(self, rows: Rows) -> Rows:
        """New rows with π_old recomputed by a trainer forward (off-policy updates) and the
        reference policy's log-probs (when a KL term is on); each role's rows go through the
        forward on their own, as they were scored. Token statistics the plug-ins declare are
        attached first (:meth:`_with_token_stats`)."""
        rows = self._with_token_stats(rows)
        recompute = self.cfg.train.recompute_old_log_probs and not self.on_policy
        wants_ref = self.ref_model is not None or (self.lora and self.preset.kl_coef > 0)
        if not recompute and not wants_ref:
            return rows
        old = rows.old_log_probs.clone()
        ref = torch.zeros_like(rows.old_log_probs) if wants_ref else None
        for role in self.preset.roles:
            sel = rows.rows_of(role)
            if not sel:
                continue
            sub, idx = rows.select(sel), torch.tensor(sel, dtype=torch.long)
            if recompute:
                old[idx] = self._forward_all(self.policy, sub)
            if ref is not None and self.lora:  # the frozen base: the policy with its adapters off
                with self.policy.disable_adapter():
                    ref[idx] = self._forward_all(self.policy, sub)
            elif ref is not None:
                ref[idx] = self._forward_all(self.ref_model, sub)
        return rows.replace(old_log_probs=old, ref_log_probs=ref)

    def _with_token_stats(self, rows: Rows) -> Rows:
        """New rows with the rollout policy's token statistics that each term's estimator or loss
        declares (``token_stats`` metadata, :mod:`skpo.algorithms.token_stats`) in
        ``rows.extra["token/<name>"]`` ``[B, T]``: one no-grad forward of the policy, before any
        update (π_old), over each term's rows. An extra pass (off-policy runs also recompute π_old
        in a pass of their own)."""
        requests = {t.role: t.token_stat_requests() for t in self.preset.terms}
        if not any(requests.values()):
            return rows
        stats: dict[str, torch.Tensor] = {}
        for role, wanted in requests.items():
            for name, _ in wanted:  # every key on every rank, rows or not (gathered records need the same extras)
                stats.setdefault(EXTRA_PREFIX + name, torch.zeros_like(rows.old_log_probs))
            sel = rows.rows_of(role)
            if not wanted or not sel:
                continue
            idx = torch.tensor(sel, dtype=torch.long)
            for name, values in self._forward_stats(rows.select(sel), reducer(wanted)).items():
                stats[EXTRA_PREFIX + name][idx] = values
        return rows.replace(extra={**rows.extra, **stats})

    @torch.no_grad()
    def _forward_stats(self, rows: Rows, reduce) -> dict[str, torch.Tensor]:
        """``reduce``'s token statistics ``{name: [B, T]}`` of the policy on ``rows``."""
        out: dict[str, torch.Tensor] = {}
        was_training = self.policy.training
        self.policy.eval()
        for bucket, packs in self._micro_batches(rows):
            sub = rows.select(bucket)
            with self._autocast():
                _, _, stats = policy_forward(self.policy, sub.prompt_ids, sub.response_ids, sub.response_mask,
                                             self.pad_id, self.cfg.rollout.temperature, packs=packs, reductions=reduce)
            for name, values in stats.items():
                out.setdefault(name, torch.zeros_like(rows.old_log_probs))[torch.tensor(bucket)] = values.float().cpu()
        self.policy.train(was_training)
        return out

    def _answers(self, rows: Rows) -> list[str | None]:
        """Each row's final answer as the source's verifier extracts it (``needs=("answers",)``):
        rollouts keep only rewards, so the responses are decoded and checked again."""
        if getattr(self, "_items_by_key", None) is None:
            self._items_by_key = {it.key: it for it in self.source.items}
        texts = [self.tokenizer.decode(rows.response_ids[b, : int(n)].tolist(), skip_special_tokens=True)
                 for b, n in enumerate(rows.lengths())]
        return [v.extracted for v in self.source.score([self._items_by_key[k] for k in rows.index], texts)]

    def _forward_all(self, model, rows: Rows) -> torch.Tensor:
        out = torch.zeros_like(rows.old_log_probs)
        was_training = model.training
        model.eval()
        for bucket, packs in self._micro_batches(rows):
            sub = rows.select(bucket)
            with self._autocast():
                lp, _ = policy_forward(model, sub.prompt_ids, sub.response_ids, sub.response_mask, self.pad_id,
                                       self.cfg.rollout.temperature, packs=packs)
            out[torch.tensor(bucket)] = lp.float().cpu()
        model.train(was_training)
        return out

    @staticmethod
    def _row_lengths(rows: Rows) -> list[int]:
        return [len(p) + int(n) for p, n in zip(rows.prompt_ids, rows.lengths())]

    def _micro_batches(self, rows: Rows) -> list[tuple[list[int], list[list[int]] | None]]:
        """``(row indices, packs)`` per forward: answers to one prompt packed into
        tree-masked sequences of at most ``train.pack_max_tokens`` when the attention
        supports it, else length-bucketed padded rows (``packs=None``); either way within
        ``train.micro_batch_tokens``."""
        t = self.cfg.train
        if t.pack_max_tokens and can_pack(self.policy):
            return pack_buckets(rows.prompt_ids, rows.lengths().tolist(), t.micro_batch_tokens, t.pack_max_tokens)
        return [(bucket, None) for bucket in length_buckets(self._row_lengths(rows), t.micro_batch_tokens)]

    # ------------------------------------------------------------------ update
    def _update(self, rows: Rows, metrics: dict[str, float]) -> None:
        """``ppo_epochs`` × ``mini_batches`` optimizer steps over one flat batch: each row
        carries its term (by role); a mini-batch is the rows of a set of prompts, a
        micro-batch a slice of it that shares one forward/backward for all terms."""
        t, terms = self.cfg.train, self.preset.terms
        term_of = {term.role: i for i, term in enumerate(terms)}
        row_term = [term_of.get(r, -1) for r in rows.roles()]  # -1: a role with no term trains nothing
        grouped_with = joint_roles(self.preset)
        shared = {i: {term_of[r] for r in grouped_with[term.role] if r in term_of} for i, term in enumerate(terms)}
        keys = sorted(set(rows.index), key=str)
        gen = torch.Generator().manual_seed(mix_seed(t.seed, self.step, 41))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}

        def add(key: str, value: float, n: int | None) -> None:  # n None: a sum; else a weighted mean
            sums[key] = sums.get(key, 0.0) + (value if n is None else value * n)
            if n is not None:
                counts[key] = counts.get(key, 0) + n

        self.model.train()
        for _epoch in range(t.ppo_epochs):
            order = [keys[i] for i in torch.randperm(len(keys), generator=gen).tolist()]
            for chunk in (order[i :: t.mini_batches] for i in range(t.mini_batches)):
                chunk_keys = set(chunk)
                sel = [b for b, k in enumerate(rows.index) if k in chunk_keys and row_term[b] >= 0]
                if not sel:
                    continue
                # each term's token/row counts over the whole mini-batch: micro-batch (and rank) losses add up;
                # the terms of one joint group count the group's rows (their losses add up to one)
                global_term = [row_term[b] for b in sel]
                dens = {i: self._denominators(rows.response_mask[[b for b, tt in zip(sel, global_term) if tt in shared[i]]])
                        for i in set(global_term)}
                if self.dist.active:  # this rank's prompts of the mini-batch
                    mine = set(self.dist.shard(sorted(chunk_keys, key=str)))
                    sel = [b for b in sel if rows.index[b] in mine]
                mb_rows = rows.select(sel)
                mb_term = [row_term[b] for b in sel]
                micro = self._micro_batches(mb_rows) if sel else []
                # sharded: FSDP's collectives run inside forward/backward, so every rank runs the
                # same number of micro-batches (agreed before the first; the short ranks pad with zero-loss passes)
                padding = equalize(self.dist.all_gather_object(len(micro))) - len(micro) if self.sharding else 0
                for bucket, packs in micro:
                    mb = mb_rows.select(bucket)
                    real, padded = _forward_tokens(mb, packs)
                    add("tokens/update_real", real, None)
                    add("tokens/update_padded", padded, None)
                    with self._autocast():
                        log_prob, entropy = policy_forward(self.model, mb.prompt_ids, mb.response_ids, mb.response_mask,
                                                           self.pad_id, self.cfg.rollout.temperature, with_entropy=True,
                                                           packs=packs)
                    loss = log_prob.new_zeros(())
                    for i in sorted(set(mb_term[j] for j in bucket)):
                        local = [j for j, b in enumerate(bucket) if mb_term[b] == i]
                        pick = torch.tensor(local, device=log_prob.device)
                        term_loss_value, term_metrics = self._term_loss(terms[i], log_prob[pick], entropy[pick],
                                                                        mb.select(local), dens[i])
                        loss = loss + term_loss_value
                        for k, v in term_metrics.items():  # pg_loss: micro-batch parts of the mini-batch loss add up
                            add(f"{terms[i].role}/{k}", float(v), None if k == "pg_loss" else len(local))
                    self.accelerator.backward(loss if self.scaler is None else self.scaler.scale(loss))
                for _ in range(padding):
                    with self._autocast():
                        zero_loss_pass(self.model, self.pad_id, self.accelerator.device)
                for i in set(global_term):  # pg_loss: the mean over mini-batches of their loss
                    counts[f"{terms[i].role}/pg_loss"] = counts.get(f"{terms[i].role}/pg_loss", 0) + (self.dist.rank == 0)
                if self.sharding is None:  # (FSDP reduce-scattered the gradients in backward)
                    self.dist.all_reduce_grads(list(self.model.parameters()))
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                if self.scaler is not None:  # skips the step when fp16 gradients overflowed
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if hasattr(grad_norm, "full_tensor"):  # sharded: the norm over all shards
                    grad_norm = grad_norm.full_tensor()
                add("actor/grad_norm", float(grad_norm), int(self.dist.rank == 0))
        self.scheduler.step()
        sums, counts = self.dist.merge_sums(sums, counts)
        per_role = {k: sums[k] / counts[k] if k in counts else sums[k] for k in sums}
        metrics.update(per_role)
        # the same aggregate names for every method: actor/<k> = the mean over terms
        # (pg_loss: the weighted sum, the objective's policy-gradient part)
        for k in {k.split("/", 1)[1] for k in per_role if k.split("/", 1)[0] in term_of}:
            vals = [(term, per_role[f"{term.role}/{k}"]) for term in terms if f"{term.role}/{k}" in per_role]
            if k == "pg_loss":
                metrics["actor/pg_loss"] = sum(term.weight * v for term, v in vals)
            else:
                metrics[f"actor/{k}"] = sum(v for _, v in vals) / len(vals)
        if self.cfg.train.rho_mode == "kl":  # rank 0's measure: the replicated trackers stay identical
            with self._full_weights():
                self.drift += self.dist.broadcast_float(self._measure_drift(rows))
            metrics["actor/policy_drift"] = self.drift

    def _denominators(self, mask: torch.Tensor) -> AggDenominators:
        """Counts of a term's rows in the whole mini-batch (every rank holds the global rows)."""
        counts = torch.tensor([mask.sum().item(), (mask.sum(-1) > 0).sum().item()], dtype=torch.float64)
        scale = float(self.cfg.rollout.max_new_tokens) if self.preset.agg_scale == "max_response_length" else None
        return AggDenominators(float(counts[0]), float(counts[1]), scale)

    def _term_loss(self, term, log_prob, entropy, mb: Rows, den) -> tuple[torch.Tensor, dict[str, float]]:
        """One loss term on its rows ``mb`` of a micro-batch, from that micro-batch's forward
        (``log_prob`` / ``entropy`` ``[b, T]``)."""
        preset = self.preset
        device = log_prob.device
        mask = mb.response_mask.to(device)
        old_log_prob = log_prob.detach() if self.on_policy else mb.old_log_probs.to(device)
        extras = {k[len(EXTRA_PREFIX):]: v.to(device) for k, v in mb.extra.items() if k.startswith(EXTRA_PREFIX)}
        inputs = PolicyLossInputs(log_prob, old_log_prob, mb.advantages.to(device), mask, extras=extras)
        pg, metrics = term_loss(term, inputs, den)
        loss = pg
        out = {k: v.item() for k, v in metrics.items()}
        if mb.ref_log_probs is not None and preset.kl_coef > 0 and preset.kl_placement == "loss":
            kl = kl_penalty(log_prob, mb.ref_log_probs.to(device), preset.kl_estimator)
            loss = loss + preset.kl_coef * agg_loss(kl, mask, term.agg, den)
            out["kl_ref"] = masked_mean(kl.detach(), mask).item()
        if entropy is not None:
            if preset.entropy_coef > 0:
                loss = loss - preset.entropy_coef * agg_loss(entropy, mask, term.agg, den)
            out["entropy"] = masked_mean(entropy.detach(), mask).item()
        out["pg_loss"] = pg.item()
        # ranks' gradients are summed (Dist.all_reduce_grads) and denominators are global
        return term.weight * loss, out

    @torch.no_grad()
    def _measure_drift(self, rows: Rows) -> float:
        """This step's policy drift: k3 KL of the updated policy against the rollout policy on
        the first micro-batch of the first term's rows."""
        rows = rows.select(rows.rows_of(self.preset.terms[0].role))
        bucket = length_buckets(self._row_lengths(rows), self.cfg.train.micro_batch_tokens)[0]
        sub = rows.select(bucket)
        self.policy.eval()
        with self._autocast():
            new_lp, _ = policy_forward(self.policy, sub.prompt_ids, sub.response_ids, sub.response_mask, self.pad_id,
                                       self.cfg.rollout.temperature)
        self.policy.train()
        kl = kl_penalty(sub.old_log_probs, new_lp.float().cpu(), "k3")  # KL(π_old ‖ π_new) from π_old samples
        return max(masked_mean(kl, sub.response_mask).item(), 0.0)

    def _prompt_kls(self, keys) -> list[float] | None:
        if self.cfg.train.rho_mode != "kl":
            return None
        return [self.drift - self.drift_seen.get(k, self.drift) for k in keys]

    def _update_trackers(self, rows: Rows, result: RolloutResult, step: int) -> None:
        """The value tracker takes the rewards of the rows whose estimator reads it (else the
        first term's rows); the length tracker the rollout's length observations."""
        if self.value_tracker is not None:
            roles = [t.role for t in self.preset.terms if t.estimator_meta.get("baseline") == "value_tracker"]
            sub = rows.select(rows.rows_of((roles or [self.preset.terms[0].role])[0]))
            self.value_tracker.update(sub.index, sub.rewards.tolist(), kls=self._prompt_kls(sub.index), step=step)
        if self.length_tracker is not None and result.length_observations is not None:
            keys, lengths = result.length_observations
            self.length_tracker.update(keys, lengths, kls=self._prompt_kls(keys), step=step)
        # the prompt sampler's per-prompt statistics take the first term's rewards, mapped to [0, 1]
        first = rows.select(rows.rows_of(self.preset.terms[0].role))
        lo, hi = self.preset.reward_range
        self.prompt_sampler.observe(first.index, ((first.rewards.double() - lo) / (hi - lo)).tolist(), step)
        for k in rows.index:
            self.drift_seen[k] = self.drift

    # ------------------------------------------------------------------ eval / checkpoints
    def evaluate(self, should_stop=None) -> dict[str, float]:
        """avg@k / pass@k on each of ``eval.benchmarks`` through the evaluation runner
        (``arith``: the fixed held-out set of the run's task difficulty); ``should_stop`` is asked
        between batches (:class:`~skpo.errors.EvaluationInterrupted`)."""
        from skpo.training.setup import evaluate_benchmarks

        out: dict[str, float] = {}
        with self._full_weights():  # every rank gathers (sharded runs); rank 0 evaluates
            results = (evaluate_benchmarks(self.policy, self.tokenizer, self.cfg, self.autocast_dtype,
                                           should_stop=should_stop)
                       if self.accelerator.is_main_process else {})
        k = self.cfg.eval.k
        for name, result in results.items():
            m = result["metrics"]
            out[f"eval/{name}/avg@{k}"] = m[f"avg@{k}"]
            out[f"eval/{name}/pass@{k}"] = m[f"pass@{k}"]
            if m.get(f"maj@{k}") is not None:
                out[f"eval/{name}/maj@{k}"] = m[f"maj@{k}"]
            out[f"eval/{name}/response_tokens"] = m["mean_response_tokens"]
            if "step_metrics" in result:
                out[f"eval/{name}/step_accuracy"] = result["step_metrics"]["step_accuracy"]
        return out

    def trainer_state(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,  # ties the checkpoint to its run
            "config": self.cfg.model_dump(mode="json"),  # what produced it, compared on --resume
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "drift": self.drift,
            "drift_seen": self.drift_seen,
            "value_tracker": self.value_tracker.state_dict() if self.value_tracker else None,
            "length_tracker": self.length_tracker.state_dict() if self.length_tracker else None,
            "prompt_sampler": self.prompt_sampler.state_dict(),
            "term_states": {role: state.state_dict() for role, state in self.term_states.items()},
        }

    def save(self) -> Path | None:
        self.accelerator.wait_for_everyone()
        main = self.accelerator.is_main_process
        model_state, stage = None, None
        if self.sharding is not None:  # every rank: weights gathered to rank 0, optimizer shards written
            model_state = full_state_dict(self.model)
            stage = sharded_stage(self.run_dir, self.step)
            if main:
                shutil.rmtree(stage, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            save_sharded_optimizer(self.model, self.optimizer, stage)
            self.accelerator.wait_for_everyone()
        if not main:
            return None
        relock = not self.run_lock.held  # a save after train() ended takes the directory back
        if relock:
            self.run_lock.acquire()
        try:
            path = save_checkpoint(self.run_dir, self.step, self.policy, self.tokenizer, self.optimizer, self.scheduler,
                                   self.trainer_state(), keep=self.cfg.log.keep_checkpoints, model_state=model_state,
                                   optimizer_dir=stage,
                                   extra_states={"reward_model": self.reward_model.state_dict()} if self.reward_model else None)
        finally:
            if relock:
                self.run_lock.release()
        self._saved_step = self.step
        return path

    def _resume(self) -> tuple[str, dict[str, Any]]:
        """Load the newest intact checkpoint of this run (verified before anything is read from
        it), refuse a config that changes the math, and return the run id and the record of
        this resume for ``run.json``."""
        recorded = read_run_json(self.run_dir).get("run_id")
        path, skipped = find_checkpoint(self.run_dir, run_id=recorded)
        saved = read_state(path).get("config")
        if saved is None and (self.run_dir / "config.yaml").is_file():  # checkpoints older than run ids
            import yaml

            saved = yaml.safe_load((self.run_dir / "config.yaml").read_text())
        changed = check_resume_config(saved, self.cfg.model_dump(mode="json"), self.run_dir) if saved else {}
        ran_with = read_run_json(self.run_dir).get("method_resolved")
        if ran_with is not None:  # the same config can resolve differently: an edited method file
            check_resolved_method(ran_with, json.loads(json.dumps(method_to_document(self.preset))), self.run_dir)
        from safetensors.torch import load_file

        if self.lora:  # the adapters onto the base of model.path
            load_adapter(self.policy, path)
        elif self.sharding is not None:  # every rank reads the whole file and keeps its shards
            load_full_state_dict(self.model, load_file(str(path / "model" / "model.safetensors")))
        else:
            state_dict = load_file(str(path / "model" / "model.safetensors"))
            missing, unexpected = self.policy.load_state_dict(state_dict, strict=False)
            real_missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
            if real_missing or unexpected:
                raise CheckpointError(f"{path}: checkpoint weights do not match the model (missing {real_missing[:3]}, unexpected {unexpected[:3]})")
            if getattr(self.policy.config, "tie_word_embeddings", False):
                self.policy.tie_weights()
        state = load_checkpoint(path, self.optimizer, self.scheduler, model=self.policy)
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.drift = float(state.get("drift", 0.0))
        self.drift_seen = dict(state.get("drift_seen", {}))
        if self.value_tracker is not None:
            self.value_tracker.load_state_dict(state["value_tracker"])
        if self.length_tracker is not None:
            self.length_tracker.load_state_dict(state["length_tracker"])
        self.prompt_sampler.load_state_dict(state.get("prompt_sampler") or {})
        if self.reward_model is not None:
            self.reward_model.load_state_dict(load_extra_state(path, "reward_model"))
        for role, term_state in self.term_states.items():
            saved_states = state.get("term_states") or {}
            if role not in saved_states:
                raise CheckpointError(f"{path}: no saved state for the {role!r} term's estimator")
            term_state.load_state_dict(saved_states[role])
        if self.accelerator.is_main_process:  # drop lines logged after the checkpoint (they will be redone)
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
            truncate_metrics(self.run_dir / "samples.jsonl", self.step)  # (the same JSON lines with a step)
        record = {"step": self.step, "checkpoint": path.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "changed": changed, "skipped": [{"checkpoint": p.name, "reason": why} for p, why in skipped]}
        return state.get("run_id") or recorded or new_run_id(), record


_BATCHED_REWARD = Trainer.reward  # Trainer.score scores in batches unless reward() is replaced


def _forward_tokens(mb: Rows, packs) -> tuple[int, int]:
    """Tokens one training forward runs over: real ones (prompt once per pack or per row,
    plus responses) and the padded total (sequences × width) the kernels compute on."""
    lengths = mb.lengths().tolist()
    if packs is None:
        sizes = [len(p) + n for p, n in zip(mb.prompt_ids, lengths)]
    else:
        sizes = [len(mb.prompt_ids[pack[0]]) + sum(lengths[b] for b in pack) for pack in packs]
    return sum(sizes), len(sizes) * max(sizes)


def _frozen_copy(model):
    import copy

    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref

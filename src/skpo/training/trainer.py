"""The trainer: one thin loop that runs every method preset by configuration alone.

    sample prompts → rollout → rewards → advantages → old log-probs → PPO mini-batches → step

What differs between methods is read from the preset (``skpo.algorithms.presets``): which
rollout (group / single / skpo / mc_steps), which trackers, and a list of loss terms, each
naming the rows it applies to (``response`` / ``upstream`` / ``downstream``), its advantage
estimator, its loss and its aggregation. The trainer never branches on a method's name.

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
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
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
    get_preset,
    kl_penalty,
    masked_mean,
    oar_bilevel_weights,
    prioritized_sample,
    prioritized_weights,
    term_loss,
)
from skpo.config import RunConfig, dump_config
from skpo.errors import TrainingInterrupted
from skpo.rollout import BatchedReward, HFEngine, SamplingParams, autocast, mix_seed, vineppo_values_batch
from skpo.rollout.skpo_rollout import SkpoPrompt, SkpoRolloutConfig, skpo_rollout
from skpo.tasks.prompts import stop_token_ids
from skpo.tasks.sources import PromptItem, PromptSource
from skpo.training.checkpoint import CHECKPOINT_DIR, CheckpointError, find_checkpoint, load_checkpoint, read_state, save_checkpoint
from skpo.training.logging import MetricsLogger, truncate_metrics
from skpo.training.oar import oar_importance
from skpo.training.precision import head_in_float32, lm_head_float32
from skpo.training.rows import Rows, can_pack, concat_rows, last_token_rewards, length_buckets, pack_buckets, pad_responses, policy_forward
from skpo.training.run_dir import (
    check_resume_config,
    new_run_id,
    open_run_dir,
    read_run_json,
    write_atomic,
    write_run_json,
)
from skpo.training.signals import StopOnSignals


def resolve_preset(cfg: RunConfig) -> MethodPreset:
    """The method's preset with the config's overrides applied (still validated)."""
    preset = get_preset(cfg.train.method)
    changes: dict[str, Any] = {}
    if cfg.rollout.group_size is not None and preset.rollout != "single":
        changes["group_size"] = cfg.rollout.group_size
    if cfg.train.kl_coef is not None:
        changes["kl_coef"] = cfg.train.kl_coef
    changes["kl_estimator"] = cfg.train.kl_estimator
    if cfg.train.entropy_coef is not None:
        changes["entropy_coef"] = cfg.train.entropy_coef
    if cfg.train.prompt_sampling != "default":
        changes["prompt_sampling"] = cfg.train.prompt_sampling
    if cfg.train.filter_groups is not None:
        changes["filter_groups"] = cfg.train.filter_groups
    return dataclasses.replace(preset, **changes).validate()


class Trainer:
    def __init__(self, cfg: RunConfig, *, model, tokenizer, source: PromptSource, resume: bool = False,
                 overwrite: bool = False, accelerator: Accelerator | None = None) -> None:
        self.cfg = cfg
        self.preset = resolve_preset(cfg)
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
        if self.preset.kl_coef > 0:
            self.ref_model = _frozen_copy(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.policy = self.accelerator.unwrap_model(self.model)
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self.stop_ids = stop_token_ids(tokenizer, self.policy, chat=getattr(source, "chat", False))
        self.engine = HFEngine(
            self.policy, pad_token_id=self.pad_id, eos_token_id=self.stop_ids,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True), batch_size=cfg.rollout.engine_batch_size,
            autocast_dtype=self.autocast_dtype,
        )
        tracker_kw = {"rho_mode": t.rho_mode}
        self.value_tracker = ValueTracker(reward_range=self.preset.reward_range, **tracker_kw) if self.preset.value_tracker else None
        sk = cfg.rollout.skpo
        self.length_tracker = (
            LengthTracker(initial=sk.initial_length, low=sk.split_low, high=sk.split_high, **tracker_kw)
            if self.preset.length_tracker else None
        )
        self.drift = 0.0  # accumulated policy KL (rho_mode="kl")
        self.drift_seen: dict[str, float] = {}
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self._open_run_dir(resume, overwrite, {
            "method": cfg.train.method, "reward": self.source.reward.name, "compute_dtype": cfg.model.dtype,
            "weights_dtype": str(weights_dtype).removeprefix("torch."), "stop_token_ids": self.stop_ids,
            "prompts": len(self.source.items), "prompts_dropped_overlong": len(getattr(self.source, "dropped", [])),
        })

    # ------------------------------------------------------------------ run directory
    def _open_run_dir(self, resume: bool, overwrite: bool, info: dict[str, Any]) -> None:
        """Lock the run directory (main process), refuse or clear it, resume, open the metrics
        and write ``config.yaml`` / ``run.json`` (skpo.training.run_dir); a failure releases
        the lock."""
        main = self.accelerator.is_main_process
        self.run_lock = open_run_dir(self.run_dir, resume=resume, overwrite=overwrite) if main else None
        self.logger = None
        self._saved_step: int | None = None
        try:
            self.run_id, resumed = self._resume() if resume else (new_run_id(), None)
            if main:
                self.logger = MetricsLogger(
                    self.run_dir, tensorboard=self.cfg.log.tensorboard, wandb=self.cfg.log.wandb,
                    wandb_project=self.cfg.log.wandb_project, config=self.cfg.model_dump(mode="json"), append=resume,
                )
                write_atomic(self.run_dir / "config.yaml", dump_config(self.cfg))  # the effective config
                write_run_json(self.run_dir, {**info, "pid": os.getpid()}, self.run_id, resumed)
        except BaseException:
            self.close()
            raise

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
    def _lr_factor(self, step: int) -> float:
        t = self.cfg.train
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.lr_schedule == "constant" or t.steps <= t.warmup_steps:
            return 1.0
        progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress)) if t.lr_schedule == "cosine" else 1.0 - progress

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Train to ``train.steps`` (or the token budget) and save. On SIGINT/SIGTERM: finish the
        current step, save, and raise :class:`~skpo.errors.TrainingInterrupted` (a second
        signal aborts at once); the evaluation due at that step is skipped."""
        t = self.cfg.train
        progress = _progress(self.cfg.log.progress and self.accelerator.is_main_process, t.steps, self.step)
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
                    metrics.update(self.evaluate())
                if self.logger:
                    self.logger.log(self.step, metrics)
                if self.cfg.log.save_every and self.step % self.cfg.log.save_every == 0:
                    self.save()
                bar(self.step, metrics)
                if stopping:
                    self._save_and_stop(stopping)
            self.save()

    @contextlib.contextmanager
    def _running(self):
        """The loop's context: SIGINT/SIGTERM recorded (skpo.training.signals); on the way out,
        however it ends, the metrics closed and the run directory released."""
        try:
            with StopOnSignals() as signals:
                yield signals
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
        """Prompts of step ``step`` — a function of (seed, step, draw, tracker state) only, so
        a resumed run draws the same prompts (``draw`` > 0: DAPO's extra rounds)."""
        n = self.cfg.train.prompts_per_step
        items = self.source.items
        gen = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, step, 17, *([draw] if draw else [])))
        if self.preset.prompt_sampling == "prioritized":
            weights = prioritized_weights(self.value_tracker.success_prob([it.key for it in items]))
            idx = prioritized_sample(weights, n, generator=gen, replacement=n > len(items))
        else:
            idx = torch.randperm(len(items), generator=gen)[:n] if n <= len(items) else torch.randint(len(items), (n,), generator=gen)
        return [items[i] for i in idx.tolist()]

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
        lo, hi = self.preset.reward_range
        return [lo + (hi - lo) * v.reward for v in verdicts], [v.correct for v in verdicts]

    def reward(self, item: PromptItem, response_ids: list[int]) -> tuple[float, bool]:
        """One answer's ``(training reward, correct)``; see :meth:`score`."""
        texts = [self.tokenizer.decode(list(response_ids), skip_special_tokens=True)]
        verdict = self.source.score([item], texts)[0]
        lo, hi = self.preset.reward_range
        return lo + (hi - lo) * verdict.reward, verdict.correct

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        timer = _Timer()
        items = self.sample_prompts(step)
        params = SamplingParams(
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens,
            stop_token_ids=[] if cfg.rollout.ignore_eos else list(self.stop_ids), ignore_eos=cfg.rollout.ignore_eos,
            seed=mix_seed(cfg.train.seed, step, 1 + self.accelerator.process_index),
        )
        metrics: dict[str, float] = {}
        with timer("rollout"):
            roles = self._rollout(items, params, step, metrics, timer)
        # scoring and MC values run inside the rollout (SKPO scores answers between its
        # phases): report them apart so the phase times add up to the step
        timer.times["rollout"] -= timer.times.get("scoring", 0.0) + timer.times.get("mc_values", 0.0)
        with timer("advantages"):
            advantages = self._advantages(roles, items, step, metrics)
        with timer("old_log_probs"):
            ref = self._old_and_ref_log_probs(roles)
        with timer("update"):
            self._update(roles, advantages, ref, metrics)
        with timer("trackers"):
            self._update_trackers(roles, step)
        decoded = int(metrics.pop("_decoded_tokens", 0))
        trained = sum(int(r.response_mask.sum()) for r in roles.values())
        self.tokens_seen += decoded
        metrics.update({f"time/{k}": v for k, v in timer.times.items()})
        total = sum(timer.times.values())
        metrics["time/step"] = total
        metrics["throughput/decoded_tokens_per_s"] = decoded / max(timer.times.get("rollout", 1e-9), 1e-9)
        metrics["throughput/trained_tokens_per_s"] = trained / max(timer.times.get("update", 1e-9), 1e-9)
        metrics["tokens/decoded"] = decoded
        metrics["tokens/trained"] = trained
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return metrics

    # ------------------------------------------------------------------ rollouts
    def _rollout(self, items, params, step, metrics, timer) -> dict[str, Rows]:
        preset, cfg = self.preset, self.cfg
        if preset.rollout == "skpo":
            sk = cfg.rollout.skpo
            rcfg = SkpoRolloutConfig(
                group_size=preset.group_size, num_segments=sk.num_segments, skip=sk.skip,
                upstream_reward=sk.upstream_reward, split=sk.split, selection=sk.selection,
            )
            correct_log: list[bool] = []

            def score_answers(calls: list[tuple[int, list[int]]]) -> list[float]:
                with timer("scoring"):
                    rewards, correct = self.score([items[i] for i, _ in calls], [list(a) for _, a in calls])
                correct_log.extend(correct)
                return rewards

            gen = torch.Generator().manual_seed(mix_seed(cfg.train.seed, step, 23))
            batch = skpo_rollout(
                self.engine, [SkpoPrompt(it.key, it.prompt_ids, it.head) for it in items], self.length_tracker, params,
                BatchedReward(score_answers), gen, rcfg, step=step, pad_token_id=self.pad_id,
            )
            self._skpo_batch = batch
            up, down = batch.upstream, batch.downstream
            roles = {
                "upstream": Rows(up.prompt_ids, up.response_ids, up.response_mask.float(), up.old_log_probs.float(),
                                 up.rewards.float(), list(up.index)),
                "downstream": Rows(down.prompt_ids, down.response_ids, down.response_mask.float(), down.old_log_probs.float(),
                                   down.rewards.float(), list(down.index), list(down.segment_index)),
            }
            c = batch.counters
            metrics["_decoded_tokens"] = c.upstream_decoded_tokens + c.downstream_decoded_tokens + c.own_decoded_tokens
            metrics["upstream/reward"] = up.rewards.float().mean().item()
            metrics["upstream/segment_length"] = up.response_mask.float().sum(-1).mean().item()
            metrics["upstream/cut_early"] = c.num_cut_early / max(1, len(items) * rcfg.segments)
            metrics["upstream/split_point"] = up.split_points.float().mean().item()
            metrics["downstream/reward"] = down.rewards.float().mean().item()
            n_down = len(down.rewards)  # the downstream answers are scored first, then any own completions
            metrics["downstream/accuracy"] = sum(correct_log[:n_down]) / max(1, n_down)
            metrics["accuracy/mean"] = metrics["downstream/accuracy"]
            metrics["reward/mean"] = metrics["downstream/reward"]
            metrics["response_length/mean"] = down.response_mask.float().sum(-1).mean().item()
            metrics["tokens/prefill"] = c.prefill_tokens
            return roles
        # group / single / mc_steps: G answers per prompt from q
        groups, all_correct, decoded, prefill, batches = self._sample_groups(items, params, step, timer)
        kept = [grp for grp in groups if grp["kept"]]
        if preset.filter_groups:
            metrics["filter/gen_batches"] = batches
            metrics["filter/informative_fraction"] = sum(grp["informative"] for grp in groups) / len(groups)
            metrics["filter/underfilled"] = float(len(kept) < len(items))
        if not kept:  # no informative group at all: train on the first draw (the filter masks it)
            kept = groups[: len(items)]
        prompts = [list(grp["item"].prompt_ids) for grp in kept for _ in grp["responses"]]
        responses = [r for grp in kept for r in grp["responses"]]
        lps = [lp for grp in kept for lp in grp["logprobs"]]
        rewards = [r for grp in kept for r in grp["rewards"]]
        index = [grp["item"].key for grp in kept for _ in grp["responses"]]
        items = [grp["item"] for grp in kept]
        ids, mask, old = pad_responses(responses, lps, self.pad_id)
        rows = Rows(prompts, ids, mask, old, torch.tensor(rewards), index)
        metrics["_decoded_tokens"] = decoded
        metrics["tokens/prefill"] = prefill  # one shared prefill per prompt
        metrics["reward/mean"] = float(torch.tensor(rewards).mean())
        # accuracy of everything sampled (the policy's), not of the groups kept for training
        metrics["accuracy/mean"] = float(torch.tensor(all_correct, dtype=torch.float32).mean())
        metrics["response_length/mean"] = float(mask.sum(-1).mean())
        if preset.rollout == "mc_steps":
            with timer("mc_values"):
                self._attach_step_values(rows, items, params, metrics)
        return {"response": rows}

    def _sample_groups(self, items, params, step, timer) -> tuple[list[dict], list[bool], int, int, int]:
        """G answers per prompt, scored. With DAPO's dynamic sampling (``filter_groups``),
        groups whose rewards are all equal carry no gradient, so more prompts are drawn (a
        fresh batch of ``prompts_per_step`` per round, at most ``train.dapo_max_gen_batches``
        rounds) until ``prompts_per_step`` informative groups are in hand; the first ones in
        draw order are kept, as in verl's DAPO recipe. If the rounds run out first, the step
        trains on the informative groups it has.

        Returns ``(groups, correct of every answer sampled, decoded tokens, prefill tokens,
        rounds)``; each group is a dict with ``item``, ``responses``, ``logprobs``,
        ``rewards``, ``informative`` and ``kept``."""
        preset, target = self.preset, len(items)
        rounds = self.cfg.train.dapo_max_gen_batches if preset.filter_groups else 1
        groups: list[dict] = []
        all_correct: list[bool] = []
        decoded = prefill = n_kept = 0
        for attempt in range(rounds):
            if attempt:
                items = self.sample_prompts(step, draw=attempt)
                params = dataclasses.replace(params, seed=mix_seed(int(params.seed), 57, attempt))
            outs = self.engine.generate([list(it.prompt_ids) for it in items], preset.group_size, params)
            prefill += sum(len(it.prompt_ids) for it in items)
            with timer("scoring"):  # every answer of the round in one batch
                flat_rewards, flat_correct = self.score(
                    [it for it, comps in zip(items, outs) for _ in comps], [list(c.token_ids) for comps in outs for c in comps]
                )
            all_correct += flat_correct
            for g, (it, completions) in enumerate(zip(items, outs)):
                rewards = flat_rewards[g * len(completions) : (g + 1) * len(completions)]
                decoded += sum(len(comp.token_ids) for comp in completions)
                informative = len(set(rewards)) > 1
                keep = (informative or not preset.filter_groups) and n_kept < target
                n_kept += keep
                groups.append({"item": it, "responses": [list(c.token_ids) for c in completions],
                               "logprobs": [list(c.logprobs) for c in completions], "rewards": rewards,
                               "informative": informative, "kept": keep})
            if n_kept >= target:
                break
        return groups, all_correct, decoded, prefill, attempt + 1

    def _attach_step_values(self, rows: Rows, items, params, metrics) -> None:
        """VinePPO step values: K continuations from each step boundary of each response."""
        by_prompt = {tuple(it.prompt_ids): it for it in items}
        responses = [rows.response_ids[b, : int(n)].tolist() for b, n in enumerate(rows.lengths())]

        def mc_rewards(calls: list[tuple[list[int], list[int]]]) -> list[float]:
            return self.score([by_prompt[tuple(p)] for p, _ in calls], [list(r) for _, r in calls])[0]

        values = vineppo_values_batch(
            self.engine, rows.prompt_ids, responses, set(self.source.step_boundary_ids()), self.cfg.rollout.mc_k,
            dataclasses.replace(params, seed=mix_seed(int(params.seed), 99)), BatchedReward(mc_rewards),
            max_steps=self.cfg.rollout.mc_max_steps, max_response_tokens=self.cfg.rollout.max_new_tokens,
            terminal_rewards=rows.rewards.tolist(),
        )
        s = max([v.num_steps for v in values] + [1])
        step_values = torch.zeros(len(values), s)
        step_mask = torch.zeros(len(values), s)
        token_step = torch.zeros_like(rows.response_ids)
        for b, v in enumerate(values):
            step_values[b, : v.num_steps] = v.values[: v.num_steps]
            step_mask[b, : v.num_steps] = 1
            token_step[b, : len(v.token_step)] = v.token_step
        rows.extra.update(step_values=step_values, step_mask=step_mask, token_step_index=token_step)
        metrics["mc/steps_per_response"] = float(step_mask.sum(-1).mean())

    # ------------------------------------------------------------------ advantages
    def _advantages(self, roles: dict[str, Rows], items, step, metrics) -> dict[str, torch.Tensor]:
        out = {}
        for term in self.preset.terms:
            rows = roles[term.role]
            batch = AdvantageInputs(
                last_token_rewards(rows.rewards, rows.response_mask), rows.response_mask, rows.index,
                segment_index=rows.segment_index,
            )
            if self.value_tracker is not None and term.advantage in ("spo", "skpo_upstream"):
                batch.baseline = self.value_tracker.baseline(rows.index)  # pre-update: unbiased A
                # rows whose prompt the tracker has never seen get the default baseline (0):
                # their advantage is the raw reward, i.e. the problem's difficulty
                metrics[f"{term.role}/first_visit_share"] = sum(k not in self.value_tracker for k in rows.index) / max(1, len(rows))
            for name in ("step_values", "step_mask", "token_step_index"):
                if name in rows.extra:
                    setattr(batch, name, rows.extra[name])
            if self.preset.token_weights is not None:
                batch.token_weights = self._oar_weights(rows)
            entry = ADVANTAGE_ESTIMATORS.get(term.advantage)
            adv = entry.fn(batch, entry.make_params(term.advantage_params))
            group_relative = term.advantage in ("grpo", "rloo", "bnpo", "oar", "skpo_downstream")
            if group_relative:
                keys = list(zip(rows.index, rows.segment_index)) if rows.segment_index is not None else rows.index
                keep = dapo_group_filter(rows.rewards, keys)
                metrics[f"{term.role}/zero_adv_group_share"] = 1.0 - keep.float().mean().item()
                if self.preset.filter_groups:
                    rows.response_mask = rows.response_mask * keep.unsqueeze(-1).float()
                    metrics["filter/kept_fraction"] = keep.float().mean().item()
            metrics[f"{term.role}/advantage_abs_mean"] = masked_mean(adv.abs(), rows.response_mask).item()
            out[term.role] = adv
        return out

    def _oar_weights(self, rows: Rows) -> torch.Tensor:
        responses = [rows.response_ids[b, : int(n)].tolist() for b, n in enumerate(rows.lengths())]
        with self._autocast():
            importance, scored = oar_importance(
                self.policy, rows.prompt_ids, responses, self.source.answer_marker_ids(), mode=self.preset.token_weights,
                pad_id=self.pad_id, generator=torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, self.step, 31)),
            )
        weights = oar_bilevel_weights(importance, scored)
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
    def _old_and_ref_log_probs(self, roles: dict[str, Rows]) -> dict[str, torch.Tensor | None]:
        refs: dict[str, torch.Tensor | None] = {}
        for role, rows in roles.items():
            if self.cfg.train.recompute_old_log_probs and not self.on_policy:
                rows.old_log_probs = self._forward_all(self.policy, rows)
            refs[role] = self._forward_all(self.ref_model, rows) if self.ref_model is not None else None
        return refs

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
    def _update(self, roles, advantages, refs, metrics) -> None:
        t, preset = self.cfg.train, self.preset
        keys = sorted({k for rows in roles.values() for k in rows.index}, key=str)
        gen = torch.Generator().manual_seed(mix_seed(t.seed, self.step, 41))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        self.model.train()
        for _epoch in range(t.ppo_epochs):
            order = [keys[i] for i in torch.randperm(len(keys), generator=gen).tolist()]
            chunks = [order[i :: t.mini_batches] for i in range(t.mini_batches)]
            for chunk in chunks:
                chunk_keys = set(chunk)
                if not chunk_keys:
                    continue
                # Each role's rows of this mini-batch (and each term's global denominators);
                # the roles share their forward passes: one forward/backward per micro-batch.
                parts: dict[str, tuple[Rows, list[int]]] = {}
                for role in dict.fromkeys(term.role for term in preset.terms):
                    sel = [b for b, k in enumerate(roles[role].index) if k in chunk_keys]
                    if sel:
                        parts[role] = (roles[role].select(sel), sel)
                if not parts:
                    continue
                dens = {term.role: self._denominators(parts[term.role][0].response_mask)
                        for term in preset.terms if term.role in parts}
                owner = [(role, j) for role, (sub, _) in parts.items() for j in range(len(sub))]
                combined = concat_rows([sub for sub, _ in parts.values()], self.pad_id) if len(parts) > 1 else next(iter(parts.values()))[0]
                for bucket, packs in self._micro_batches(combined):
                    mb = combined.select(bucket)
                    real, padded = _forward_tokens(mb, packs)
                    sums["tokens/update_real"] = sums.get("tokens/update_real", 0.0) + real
                    sums["tokens/update_padded"] = sums.get("tokens/update_padded", 0.0) + padded
                    with self._autocast():
                        log_prob, entropy = policy_forward(self.model, mb.prompt_ids, mb.response_ids, mb.response_mask,
                                                           self.pad_id, self.cfg.rollout.temperature, with_entropy=True,
                                                           packs=packs)
                    loss = log_prob.new_zeros(())
                    for term in preset.terms:
                        if term.role not in parts:
                            continue
                        sub, sel = parts[term.role]
                        local = [i for i, b in enumerate(bucket) if owner[b][0] == term.role]
                        if not local:
                            continue
                        mine = [owner[bucket[i]][1] for i in local]  # rows of sub
                        idx = torch.tensor([sel[j] for j in mine])
                        width = sub.response_ids.shape[1]
                        pick = torch.tensor(local, device=log_prob.device)
                        term_loss_value, mmetrics = self._term_loss(
                            term, log_prob[pick, :width], entropy[pick, :width], sub.select(mine),
                            advantages[term.role][idx], None if refs[term.role] is None else refs[term.role][idx],
                            dens[term.role],
                        )
                        loss = loss + term_loss_value
                        for k, v in mmetrics.items():
                            key = f"{term.role}/{k}" if term.role != "response" else f"actor/{k}"
                            if k == "pg_loss":  # micro-batch parts of the mini-batch loss add up
                                sums[key] = sums.get(key, 0.0) + float(v)
                            else:
                                sums[key] = sums.get(key, 0.0) + float(v) * len(local)
                                counts[key] = counts.get(key, 0) + len(local)
                    self.accelerator.backward(loss if self.scaler is None else self.scaler.scale(loss))
                for term in preset.terms:  # pg_loss: the mean over mini-batches of their loss
                    if term.role in parts:
                        key = f"{term.role}/pg_loss" if term.role != "response" else "actor/pg_loss"
                        counts[key] = counts.get(key, 0) + 1
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                if self.scaler is not None:  # skips the step when fp16 gradients overflowed
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                sums["actor/grad_norm"] = sums.get("actor/grad_norm", 0.0) + float(grad_norm)
                counts["actor/grad_norm"] = counts.get("actor/grad_norm", 0) + 1
        self.scheduler.step()
        metrics.update({k: sums[k] / counts[k] if k in counts else sums[k] for k in sums})
        if "actor/entropy" not in metrics:
            ents = [metrics[f"{r}/entropy"] for r in roles if f"{r}/entropy" in metrics]
            if ents:
                metrics["actor/entropy"] = sum(ents) / len(ents)
        if self.cfg.train.rho_mode == "kl":
            self.drift += self._measure_drift(roles)
            metrics["actor/policy_drift"] = self.drift

    def _denominators(self, mask: torch.Tensor) -> AggDenominators:
        """Global counts of a term's rows in this mini-batch (summed over processes)."""
        counts = torch.tensor([mask.sum().item(), (mask.sum(-1) > 0).sum().item()], dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum").cpu()
        scale = float(self.cfg.rollout.max_new_tokens) if self.preset.agg_scale == "max_response_length" else None
        return AggDenominators(float(counts[0]), float(counts[1]), scale)

    def _term_loss(self, term, log_prob, entropy, mb: Rows, adv, ref_lp, den) -> tuple[torch.Tensor, dict[str, float]]:
        """One loss term on its rows of a micro-batch, from that micro-batch's forward
        (``log_prob`` / ``entropy`` ``[b, T]`` of the term's rows ``mb``)."""
        preset = self.preset
        device = log_prob.device
        mask = mb.response_mask.to(device)
        old_log_prob = log_prob.detach() if self.on_policy else mb.old_log_probs.to(device)
        inputs = PolicyLossInputs(log_prob, old_log_prob, adv.to(device), mask)
        pg, metrics = term_loss(term, inputs, den)
        loss = pg
        out = {k: v.item() for k, v in metrics.items()}
        if ref_lp is not None and preset.kl_coef > 0:
            kl = kl_penalty(log_prob, ref_lp.to(device), preset.kl_estimator)
            loss = loss + preset.kl_coef * agg_loss(kl, mask, term.agg, den)
            out["kl_ref"] = masked_mean(kl.detach(), mask).item()
        if entropy is not None:
            if preset.entropy_coef > 0:
                loss = loss - preset.entropy_coef * agg_loss(entropy, mask, term.agg, den)
            out["entropy"] = masked_mean(entropy.detach(), mask).item()
        out["pg_loss"] = pg.item()
        # DDP averages gradients over processes; denominators are global, so scale back up
        return term.weight * loss * self.accelerator.num_processes, out

    @torch.no_grad()
    def _measure_drift(self, roles: dict[str, Rows]) -> float:
        rows = next(iter(roles.values()))
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

    def _update_trackers(self, roles: dict[str, Rows], step: int) -> None:
        if self.value_tracker is not None:
            rows = roles.get("upstream") or roles["response"]
            self.value_tracker.update(rows.index, rows.rewards.tolist(), kls=self._prompt_kls(rows.index), step=step)
        if self.length_tracker is not None and self.preset.rollout == "skpo":
            up = self._skpo_batch.upstream
            self._skpo_batch.update_length_tracker(self.length_tracker, kls=self._prompt_kls(up.index), step=step)
        for rows in roles.values():
            for k in rows.index:
                self.drift_seen[k] = self.drift

    # ------------------------------------------------------------------ eval / checkpoints
    def evaluate(self) -> dict[str, float]:
        """avg@k / pass@k on each of ``eval.benchmarks`` through the evaluation runner
        (``arith``: the fixed held-out set of the run's task difficulty)."""
        from skpo.training.setup import evaluate_benchmarks

        out: dict[str, float] = {}
        k = self.cfg.eval.k
        for name, result in evaluate_benchmarks(self.policy, self.tokenizer, self.cfg, self.autocast_dtype).items():
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
        }

    def save(self) -> Path | None:
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        relock = not self.run_lock.held  # a save after train() ended takes the directory back
        if relock:
            self.run_lock.acquire()
        try:
            path = save_checkpoint(self.run_dir, self.step, self.policy, self.tokenizer, self.optimizer, self.scheduler,
                                   self.trainer_state(), keep=self.cfg.log.keep_checkpoints)
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
        from safetensors.torch import load_file

        state_dict = load_file(str(path / "model" / "model.safetensors"))
        missing, unexpected = self.policy.load_state_dict(state_dict, strict=False)
        real_missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
        if real_missing or unexpected:
            raise CheckpointError(f"{path}: checkpoint weights do not match the model (missing {real_missing[:3]}, unexpected {unexpected[:3]})")
        if getattr(self.policy.config, "tie_word_embeddings", False):
            self.policy.tie_weights()
        state = load_checkpoint(path, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.drift = float(state.get("drift", 0.0))
        self.drift_seen = dict(state.get("drift_seen", {}))
        if self.value_tracker is not None:
            self.value_tracker.load_state_dict(state["value_tracker"])
        if self.length_tracker is not None:
            self.length_tracker.load_state_dict(state["length_tracker"])
        if self.accelerator.is_main_process:  # drop lines logged after the checkpoint (they will be redone)
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
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


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.t0

        return _Ctx()


class _progress:
    """A rich progress bar with the live essentials (or nothing when disabled)."""

    KEYS = (("accuracy/mean", "acc"), ("upstream/reward", "R_up"), ("reward/mean", "R"), ("actor/entropy", "H"),
            ("time/step", "s/step"))

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start

    def __enter__(self):
        if not self.enabled:
            return lambda step, metrics: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self._p.__enter__()
        self._task = self._p.add_task("train", total=self.total, completed=self.start, info="")

        def update(step: int, metrics: dict[str, float]) -> None:
            info = " ".join(f"{short}={metrics[k]:.3g}" for k, short in self.KEYS if k in metrics)
            self._p.update(self._task, completed=step, info=info)

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)

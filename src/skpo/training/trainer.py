"""The training loop: one step is

    plan prompts → rollout → gather → log-probs → auxiliary models → advantages → update
    → engine sync → state

for every method, by configuration alone. The parts live beside this file: the actor (model,
optimizer, precision, LoRA/FSDP, backward and step: ``actor.py``), the log-prob phase
(``log_probs.py``), the advantages (``advantages.py``), the update loop (``update.py``) and the
run state (trackers, prompt samplers, estimator state, drift: ``run_state.py``). The loop knows no
method, role, estimator or rollout kind by name; ``docs/architecture.md`` follows one step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from skpo.config import RunConfig
from skpo.engines import SamplingParams, holds_weights, mix_seed
from skpo.engines.context import ContextLimit, ContextWindow
from skpo.errors import EvaluationInterrupted, TrainingInterrupted
from skpo.methods import Method, rollout_params
from skpo.models.reward_models import RewardModelSlot
from skpo.reward_range import from_unit, rescale
from skpo.rollout import ROLLOUTS, RolloutContext, RolloutResult, Scores, Timer
from skpo.rows import Rows
from skpo.tasks.sources import PromptItem, PromptSource
from skpo.training.actor import Actor
from skpo.training.advantages import AdvantageContext, with_advantages
from skpo.training.benchmarks import benchmark_metrics, evaluate_benchmarks
from skpo.training.checkpoint import CHECKPOINT_DIR, save_actor
from skpo.training.distributed import Dist
from skpo.training.log_probs import with_old_and_ref_log_probs
from skpo.training.logging import Progress, sample_records
from skpo.training.prompt_selection import StepPrompts, plan_prompts, score_pool, scoring_params
from skpo.training.run_dir import RunFiles
from skpo.training.run_state import RunState, measure_drift
from skpo.training.sharding import full_weights
from skpo.training.signals import StopOnSignals
from skpo.training.update import UpdateSettings, update

log = logging.getLogger("skpo")


class Trainer:
    """One run's loop over finished parts (built by :func:`skpo.training.setup.build_trainer`):
    the config, the resolved method, the actor, the engine, the run state, the run directory.

    Attributes:
        policy: the model being trained (whole, unsharded view of the actor's).
    """

    def __init__(self, cfg: RunConfig, method: Method, *, tokenizer: Any, source: PromptSource,
                 accelerator: Accelerator, dist: Dist, actor: Actor, reward_model: RewardModelSlot | None,
                 engine: ContextLimit, context_window: ContextWindow, state: RunState, files: RunFiles, run_id: str,
                 stop_ids: list[int], pad_id: int) -> None:
        self.cfg, self.method, self.tokenizer, self.source = cfg, method, tokenizer, source
        self.accelerator, self.dist, self.actor, self.reward_model = accelerator, dist, actor, reward_model
        self.engine, self.context_window, self.state, self.files, self.run_id = engine, context_window, state, files, run_id
        self.stop_ids, self.pad_id = stop_ids, pad_id
        assert cfg.log.out_dir is not None  # (filled in when the config is validated)
        self.run_dir = Path(cfg.log.out_dir)
        self.update_settings = UpdateSettings.of(cfg)
        self.rollout_params = rollout_params(method)
        self._samples: list[dict[str, Any]] = []  # the step's sample records, for the console
        self._saved_step: int | None = None

    @property
    def policy(self) -> torch.nn.Module:
        """The model being trained (the Python API's result: ``skpo.train(...).policy``)."""
        return self.actor.policy

    def _decoding_weights(self):
        """Whole weights for the engine's decoding: the Hugging Face engine decodes with the
        (sharded) policy itself; vLLM holds its own copy, so nothing is gathered for it."""
        return contextlib.nullcontext() if holds_weights(self.engine) else self.actor.full_weights()

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        """Train to ``train.steps`` (or the token budget) and save. On SIGINT/SIGTERM: finish the
        current step, save, and raise :class:`~skpo.errors.TrainingInterrupted` (a second
        signal aborts at once); the evaluation due at that step is skipped."""
        t, state = self.cfg.train, self.state
        progress = Progress(self.cfg.log.progress and self.accelerator.is_main_process, t.steps, state.step,
                            every=self.cfg.log.print_every, token_budget=t.token_budget,
                            seconds=self.cfg.log.print_seconds, header=self._start_line())
        with self._running() as signals, progress as bar:
            while state.step < t.steps and not self.budget_spent:
                started, tokens_before = time.perf_counter(), state.tokens_seen
                metrics = self.train_step(state.step)
                state.step += 1
                state.train_seconds += time.perf_counter() - started
                metrics["tokens/seen"] = state.tokens_seen  # cumulative decoded rollout tokens
                metrics["time/train_elapsed"] = state.train_seconds  # cumulative, evaluation excluded
                stopping = self._stop_signal(signals)
                if not stopping and self._evaluation_due(tokens_before):
                    try:  # a signal during the evaluation stops it within one batch
                        metrics.update(self.evaluate(should_stop=lambda: signals.signum is not None))
                    except EvaluationInterrupted:
                        metrics["eval/interrupted"] = 1.0  # this step's evaluation is skipped, and recorded so
                    stopping = self._stop_signal(signals)
                if self.files.logger:
                    self.files.logger.log(state.step, metrics)
                if self.cfg.log.save_every and state.step % self.cfg.log.save_every == 0:
                    self.save()
                bar(state.step, metrics)
                if self._samples:  # a few of the step's samples on the console (log.console_samples), a
                    # prompt's rows together (SKPO: its segment, then the answers written from it)
                    keys = list(dict.fromkeys(r["prompt_key"] for r in self._samples))
                    shown = sorted(self._samples, key=lambda r: keys.index(r["prompt_key"]))
                    progress.samples(shown[:self.cfg.log.console_samples])
                    self._samples = []
                if stopping:
                    self._save_and_stop(stopping)
            self.save()

    def train_step(self, step: int) -> dict[str, float]:
        """One step; each phase returns a new row record."""
        cfg, timer = self.cfg, Timer()
        params = SamplingParams(
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens,
            stop_token_ids=[] if cfg.rollout.ignore_eos else list(self.stop_ids), ignore_eos=cfg.rollout.ignore_eos,
            seed=mix_seed(cfg.train.seed, step, 1 + self.accelerator.process_index),
        )
        scoring_decoded, sampler_metrics = self._score_pool(step, params, timer)  # (a sampler may score the pool first)
        prompts = self.plan_prompts(step)
        result, cut = self._rollout(step, params, prompts, timer)
        if holds_weights(self.engine):  # a colocated engine frees its memory for the trainer's passes
            self.engine.sleep()
        with timer("old_log_probs"), self.actor.full_weights(), full_weights(self.actor.ref_model):  # where sampled
            rows = with_old_and_ref_log_probs(self.actor, self.method, result.rows)
        result, metrics = self._gathered(result, rows)
        rows = result.rows
        metrics.update({**prompts.metrics, **sampler_metrics})  # (global already: replicated sampler, summed scoring)
        self._rollout_metrics(step, metrics, cut)
        if self.reward_model is not None:  # trained on the step's rows; its per-token outputs go to rows.extra
            with timer("reward_model"):
                rows = self.reward_model.step(rows, metrics)
        with timer("advantages"), self.actor.full_weights():  # (OAR's probes run the policy)
            rows = with_advantages(self.advantage_context(step, metrics), rows)
        with timer("update"):
            update(self.actor, self.method, rows, self.dist, self.update_settings, step, metrics)
            if cfg.train.rho_mode == "kl":  # rank 0's measure: the replicated trackers stay identical
                with self.actor.full_weights():
                    self.state.drift += self.dist.broadcast_float(measure_drift(self.actor, rows, self.method.terms[0].role))
                metrics["actor/policy_drift"] = self.state.drift
        if holds_weights(self.engine):  # a separate engine samples the next step with the new weights
            with timer("weight_sync"):  # (sharded: each tensor is gathered as it is sent)
                self.engine.sync_weights(self.policy)
        with timer("trackers"):
            self.state.observe(rows, result, step)
        self._step_metrics(metrics, timer, result.decoded_tokens + scoring_decoded, int(rows.response_mask.sum()))
        return metrics

    def advantage_context(self, step: int, metrics: dict[str, float]) -> AdvantageContext:
        """What the estimators' inputs are made from at ``step`` (metrics go to ``metrics``)."""
        return AdvantageContext(self.method, self.state, self.actor, self.source, self.tokenizer, self.cfg.train.seed,
                                step, metrics)

    def _rollout(self, step: int, params: SamplingParams, prompts: StepPrompts,
                 timer: Timer) -> tuple[RolloutResult, int]:
        """This rank's rows of the step's prompts from the method's rollout kind, and how many
        of its completions reached the engine's context; on a step that logs samples, their
        records (with the verdicts the rollout returns) go to the run's samples."""
        cfg, items = self.cfg, prompts.items  # the global batch; this rank rolls out its shard
        ctx = RolloutContext(
            engine=self.engine, params=params, rollout_params=self.rollout_params, group_size=self.method.group_size,
            filter_groups=self.method.filter_groups, max_gen_batches=self.method.max_gen_batches, method=self.method,
            step=step, score=self.score, sample_prompts=lambda draw: self.dist.shard(self.sample_prompts(step, draw=draw)),
            source=self.source, num_prompts=len(items), rank=self.dist.rank, all_gather=self.dist.all_gather_object,
            pad_id=self.pad_id, max_new_tokens=cfg.rollout.max_new_tokens, timer=timer,
            generator=torch.Generator().manual_seed(mix_seed(cfg.train.seed, step, 23)),
            length_tracker=self.state.length_tracker,
            group_sizes=None if prompts.group_sizes is None else self.dist.shard(prompts.group_sizes),
        )
        cuts_before = self.engine.cuts
        with timer("rollout"), self._decoding_weights():  # sharded: each rank decodes its own number of tokens
            result = ROLLOUTS.get(self.method.rollout).fn(ctx, self.dist.shard(items))
        if cfg.log.samples_due(step) and self.accelerator.is_main_process and self.files.logger is not None:
            user_range = (cfg.reward.range[0], cfg.reward.range[1])
            self._samples = sample_records(result.rows, step + 1, cfg.log.samples, self.tokenizer, result.verdicts,
                                           lambda r: rescale(r, self.method.reward_range, user_range))
            self.files.logger.log_samples(step + 1, self._samples)
        # scoring and MC values run inside the rollout (SKPO scores answers between its
        # phases): report them apart so the phase times add up to the step
        timer.times["rollout"] -= timer.times.get("scoring", 0.0) + timer.times.get("mc_values", 0.0)
        return result, self.engine.cuts - cuts_before

    def _gathered(self, result, rows: Rows):
        """Every rank gets the global batch (advantages and trackers see it all), and the
        rollout's metrics averaged over ranks."""
        if not self.dist.active:
            return dataclasses.replace(result, rows=rows), dict(result.metrics)
        metrics = self.dist.mean_metrics(dict(result.metrics), weight=len(result.rows))
        rows = self.dist.gather_rows(rows, self.pad_id)
        obs = result.length_observations
        if obs is not None:
            gathered = self.dist.all_gather_object(obs)
            obs = ([k for ks, _ in gathered for k in ks], [v for _, vs in gathered for v in vs])
        return dataclasses.replace(result, rows=rows, decoded_tokens=self.dist.sum_int(result.decoded_tokens),
                                   prefill_tokens=self.dist.sum_int(result.prefill_tokens), length_observations=obs), metrics

    def _rollout_metrics(self, step: int, metrics: dict[str, float], cut: int) -> None:
        if "reward/mean" in metrics:  # the same mean in the user's own range (reward.range), for people reading the log
            user_range = (self.cfg.reward.range[0], self.cfg.reward.range[1])
            metrics["reward/user_mean"] = rescale(metrics["reward/mean"], self.method.reward_range, user_range)
        metrics["rollout/cut_by_context"] = cut = self.dist.sum_int(cut)
        if cut and self.accelerator.is_main_process:
            log.warning(f"step {step + 1}: {cut} completions reached the engine's context of {self.context_window.tokens} "
                        "tokens and were cut there (unfinished answers; rollout/cut_by_context)")

    def _step_metrics(self, metrics: dict[str, float], timer: Timer, decoded: int, trained: int) -> None:
        """Tokens (every token decoded for the step, pool scoring included), phase times, throughput."""
        self.state.tokens_seen += decoded
        metrics.update({f"time/{k}": v for k, v in timer.times.items()})
        metrics["time/step"] = sum(timer.times.values())
        metrics["throughput/decoded_tokens_per_s"] = decoded / max(timer.times.get("rollout", 1e-9), 1e-9)
        metrics["throughput/trained_tokens_per_s"] = trained / max(timer.times.get("update", 1e-9), 1e-9)
        metrics["tokens/decoded"] = decoded
        metrics["tokens/trained"] = trained
        metrics["lr"] = float(self.actor.scheduler.get_last_lr()[0])

    # ------------------------------------------------------------------ prompts and rewards
    @property
    def budget_spent(self) -> bool:
        """``train.token_budget`` decoded rollout tokens reached."""
        budget = self.cfg.train.token_budget
        return budget is not None and self.state.tokens_seen >= budget

    def sample_prompts(self, step: int, draw: int = 0) -> list[PromptItem]:
        """Prompts of step ``step`` — a function of (seed, step, draw, tracker and sampler state)
        only, so a resumed run draws the same prompts (``draw`` > 0: DAPO's extra rounds)."""
        return self.plan_prompts(step, draw).items

    def plan_prompts(self, step: int, draw: int = 0) -> StepPrompts:
        """The step's prompts, their group sizes and the sampler's metrics (:mod:`skpo.training.prompt_selection`)."""
        return plan_prompts(self.state.prompt_sampler, self.source.items, self.cfg.train.prompts_per_step,
                            self.method.group_size, self.cfg.train.seed, step, draw, self.state.value_tracker)

    def _score_pool(self, step: int, params: SamplingParams, timer: Timer) -> tuple[int, dict[str, float]]:
        """The scoring rollouts the prompt sampler asks for before it plans ``step``; returns
        their decoded tokens and metrics."""
        if not self.state.prompt_sampler.scoring_due(step):
            return 0, {}
        with self._decoding_weights():
            return score_pool(self.state.prompt_sampler, step, engine=self.engine, pool=self.source.items,
                              params=scoring_params(params, self.cfg.train.seed, step, self.dist.rank),
                              score=self.score, dist=self.dist, timer=timer)

    def score(self, items: list[PromptItem], responses: list[list[int]]) -> Scores:
        """Training rewards, correctness and verdicts of ``responses`` (token ids) to ``items``,
        scored as one batch by the source's reward; the verdict's ``[0, 1]`` reward maps linearly
        onto the method's reward range, and correctness comes from the verdict itself."""
        texts = [self.tokenizer.decode(list(r), skip_special_tokens=True) for r in responses]
        verdicts = self.source.score(items, texts)
        return Scores([from_unit(v.reward, self.method.reward_range) for v in verdicts], [v.correct for v in verdicts],
                      {(it.key, tuple(r)): v for it, r, v in zip(items, responses, verdicts)})

    # ------------------------------------------------------------------ stopping
    def _start_line(self) -> str:
        """What this run is, in one line: method, model, data and prompts, processes, device, run directory."""
        data = {"arith": "synthetic arithmetic", "countdown": "synthetic countdown"}.get(self.cfg.data.task,
                                                                                          str(self.cfg.data.path))
        where = "resuming at step " + str(self.state.step) if self.state.step else "from step 0"
        return (f"skpo train: {self.cfg.train.method} on {self.cfg.model.path} | data {data} ({len(self.source.items)} "
                f"prompts) | {self.dist.world} process{'es' if self.dist.world > 1 else ''} on "
                f"{self.accelerator.device.type} | {where}, {self.cfg.train.steps} steps | {self.run_dir}")

    def _evaluation_due(self, tokens_before: int) -> bool:
        every, every_tokens, seen = self.cfg.eval.every, self.cfg.eval.every_tokens, self.state.tokens_seen
        return bool((every and self.state.step % every == 0)
                    or (every_tokens and seen // every_tokens > tokens_before // every_tokens))

    @contextlib.contextmanager
    def _running(self):
        """The loop's context: SIGINT/SIGTERM recorded (skpo.training.signals); on the way out,
        however it ends, the metrics closed and the run directory released."""
        try:
            with StopOnSignals() as signals:
                yield signals
        except BaseException as err:
            if not isinstance(err, TrainingInterrupted):
                self.files.discard_failed_start(self.state.step)
            raise
        finally:
            self.close()

    def _save_and_stop(self, signum: int) -> None:
        if self._saved_step != self.state.step:
            self.save()
        where = self.run_dir / CHECKPOINT_DIR / f"step_{self.state.step:06d}"
        raise TrainingInterrupted(signum, f"stopped by {signal.Signals(signum).name} after step {self.state.step}; "
                                          f"saved {where}; continue with --resume")

    def _stop_signal(self, signals: StopOnSignals) -> int | None:
        """The signal to stop on after this step; every process stops at the same step."""
        signum = signals.signum or 0
        if self.accelerator.num_processes > 1:
            signum = int(self.accelerator.gather(torch.tensor([signum], device=self.accelerator.device)).max())
        return signum or None

    # ------------------------------------------------------------------ evaluation, run directory, checkpoints
    def evaluate(self, should_stop=None) -> dict[str, float]:
        """avg@k / pass@k on each of ``eval.benchmarks`` (rank 0); ``should_stop`` is asked
        between batches (:class:`~skpo.errors.EvaluationInterrupted`)."""
        with self.actor.full_weights():  # every rank gathers (sharded runs); rank 0 evaluates
            results = (evaluate_benchmarks(self.policy, self.tokenizer, self.cfg, self.actor.autocast_dtype,
                                           should_stop=should_stop, source=self.source)
                       if self.accelerator.is_main_process else {})
        return benchmark_metrics(results, self.cfg.eval.k)

    def close(self) -> None:
        """Close the metrics and release the run directory."""
        self.files.close()

    def save(self) -> Path | None:
        state = {"run_id": self.run_id, "config": self.cfg.model_dump(mode="json"), **self.state.state_dict()}
        path = save_actor(self.actor, self.run_dir, self.state.step, self.tokenizer, state, self.cfg.log.keep_checkpoints,
                          self.files.lock, {"reward_model": self.reward_model.state_dict()} if self.reward_model else None)
        self._saved_step = self.state.step
        return path

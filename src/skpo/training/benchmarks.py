"""Evaluation inside and after training: the runner (:mod:`skpo.evaluation.runner`) on a
run's ``eval.benchmarks``, and the metric names the trainer logs from its results.

``heldout`` scores the rows the run's data source held out of training (``data.heldout``) with
the run's own reward and template, as ``eval/heldout/…``."""

from __future__ import annotations

from typing import Any

import torch

from skpo.config import HELDOUT, RunConfig, arith_config, countdown_config
from skpo.evaluation.benchmarks import get_spec, resolve_benchmarks
from skpo.evaluation.runner import EvalSettings, evaluate
from skpo.tasks.dataset import DatasetSpec


def evaluate_benchmarks(model, tokenizer, cfg: RunConfig, autocast_dtype: torch.dtype | None = None,
                        k: int | None = None, limit: int | None = None,
                        should_stop: Any = None, source: Any = None) -> dict[str, dict[str, Any]]:
    """Results of the runner (:func:`skpo.evaluation.runner.evaluate`) on each of
    ``eval.benchmarks``, by benchmark name. ``arith`` and ``countdown`` are the fixed held-out
    sets of the run's own task settings (``data.arith``, ``data.countdown``); ``heldout`` the
    rows ``source`` (the run's prompt source) held out of training, scored by its reward
    (skipped when it holds none); files get ``data.max_prompt_tokens`` unless their spec sets one."""
    e = cfg.eval
    limit = limit or e.limit
    specs: list[tuple[DatasetSpec, Any, Any]] = []  # (spec, problems or None: the spec's own, reward or None: the spec's)
    assert e.benchmarks is not None  # (filled in when the config is validated)
    for name in e.benchmarks:
        if name == "arith":
            specs.append((get_spec("arith").model_copy(update={"arith": arith_config(cfg), "n_problems": limit or 200}),
                          None, None))
        elif name == HELDOUT:
            if source is None:
                raise ValueError(f"eval.benchmarks {HELDOUT!r} scores the rows a run's prompt source held out: pass "
                                 "source= (the trainer's)")
            if getattr(source, "heldout", None):
                # the training prompts' template, reward and answer budget
                spec: DatasetSpec = cfg.data.model_copy(update={"name": HELDOUT, "max_new_tokens": cfg.rollout.max_new_tokens})
                specs.append((spec, source.heldout, source.reward))
        elif name == "countdown":
            specs.append((get_spec("countdown").model_copy(update={"countdown": countdown_config(cfg),
                                                                   "n_problems": limit or 200}), None, None))
        else:
            for spec in resolve_benchmarks([name]):
                if spec.max_prompt_tokens is None and cfg.data.max_prompt_tokens is not None:
                    spec = spec.model_copy(update={"max_prompt_tokens": cfg.data.max_prompt_tokens})
                specs.append((spec, None, None))
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        for spec, problems, reward in specs:
            settings = EvalSettings(
                k=k or e.k, temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                limit=None if spec.synthetic else limit, seed=cfg.train.seed, batch_size=cfg.rollout.engine_batch_size,
                autocast_dtype=autocast_dtype, math_timeout_s=cfg.reward.math_timeout_s,
            )
            results[spec.name] = evaluate(model, tokenizer, spec, settings, should_stop=should_stop, problems=problems,
                                          reward=reward)
    finally:
        model.train(was_training)
    return results


def evaluate_heldout(model, tokenizer, cfg: RunConfig, k: int | None = None, num_problems: int | None = None) -> dict:
    """The runner on the fixed held-out arithmetic set of the run's difficulty."""
    one = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"benchmarks": ["arith"]})})
    return evaluate_benchmarks(model, tokenizer, one, k=k, limit=num_problems)["arith"]


def benchmark_metrics(results: dict[str, dict[str, Any]], k: int) -> dict[str, float]:
    """``eval/<benchmark>/avg@k`` etc. from :func:`evaluate_benchmarks`' results."""
    out: dict[str, float] = {}
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

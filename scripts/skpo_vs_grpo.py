"""Why GRPO beats SKPO on the embedded default: the diagnostic runs of docs/results.md §2.

Each run trains one configuration of the embedded default (the shipped warm start, 16 prompts ×
8 answers per step, lr 5e-5) for ``--steps`` steps and evaluates it on the fixed held-out set
(200 problems × 8 samples) twice: from the plain prompt ``q`` (what every method is scored on)
and through SKPO's own pipeline (a segment sampled by the policy, then 8 answers from
``[s, q]``). The diagnostics isolate one part of SKPO each:

=================  =================================================================================
``grpo``           the baseline
``skpo``           SKPO as the paper writes it (loss 0.5·upstream + 0.5·downstream)
``skpo-noup``      SKPO without its upstream term: GRPO-style training on ``[s, q]`` inputs only
``skpo-noseg``     SKPO with the segment removed from the downstream input: answers from ``q``,
                   plus the upstream term
``skpo-w19``       upstream weight 0.1, downstream 0.9
``skpo-oracle``    the upstream reward replaced by the truth about the segment: +1 when all its
                   complete lines are right (exact step checker), else −1
``--pool 200``     any of the above with a 200-prompt pool, so every prompt is seen ~10 times and
                   SPO's per-prompt baseline is warm
=================  =================================================================================

``skpo-noup`` and ``skpo-w19`` are method overrides (``method.terms.upstream.weight=…``);
``skpo-oracle`` registers its own rollout kind (``skpo_oracle``: SKPO's with the oracle reward;
it needs the synthetic task's step checker); ``skpo-noseg`` patches the skip input for the run.

    python scripts/skpo_vs_grpo.py --run skpo-noup --seed 1 --out runs/why/skpo-noup-s1
    python scripts/skpo_vs_grpo.py --gradients      # norms of the two SKPO gradients, 3 steps
    python scripts/skpo_vs_grpo.py --run skpo-oracle --steps 1 --eval-problems 2 \
        train.prompts_per_step=2 rollout.max_new_tokens=16                          # smallest run

Runtime: ~7–8 min per 120-step run on one thread of this project's 2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

RUNS = ("grpo", "skpo", "skpo-noup", "skpo-noseg", "skpo-w19", "skpo-oracle")


def configure(run: str) -> tuple[str, list[str]]:
    """The method and config overrides of a diagnostic run (patching what a method cannot say)."""
    if run == "grpo":
        return "grpo", []
    weights = {"skpo-noup": (0.0, 1.0), "skpo-w19": (0.1, 0.9)}.get(run)
    if weights is not None:
        return "skpo", [f"method.terms.upstream.weight={weights[0]}", f"method.terms.downstream.weight={weights[1]}"]
    if run == "skpo-noseg":  # downstream input = q alone
        import skpo.rollout.skpo_rollout as rollout_mod

        rollout_mod.skip_input_ids = lambda s, q, head=0, separator_ids=(): list(q)
    if run == "skpo-oracle":
        register_oracle_rollout()
        return "skpo", ["method.rollout=skpo_oracle"]
    return "skpo", []


def register_oracle_rollout() -> None:
    """A rollout kind ``skpo_oracle``: SKPO's, with each upstream row's reward replaced by the
    truth about its segment (+1 when all its complete lines are right, −1 otherwise)."""
    from skpo.rewards.arith import check_steps
    from skpo.rollout.base import ROLLOUTS
    from skpo.rollout.skpo_rollout import skpo_rollout_kind

    real = ROLLOUTS.get("skpo")

    def oracle(ctx, items):
        result = skpo_rollout_kind(ctx, items)
        rows = result.rows
        up = rows.rows_of("upstream")  # one per prompt, in prompt order
        rewards = rows.rewards.clone()
        for b, item in zip(up, items):
            segment = rows.response_ids[b, : int(rows.response_mask[b].sum())].tolist()
            lines = ctx.engine.decode(segment).split("\n")[:-1]
            if not lines:  # no complete line yet: nothing to judge
                rewards[b] = 0.0
                continue
            check = check_steps("\n".join(lines) + "\n", item.answer.arith)
            rewards[b] = 1.0 if len(check.correct) >= len(lines) and all(check.correct[: len(lines)]) else -1.0
        result.metrics["oracle/segment_ok"] = float((rewards[up] > 0).float().mean())
        return dataclasses.replace(result, rows=rows.replace(rewards=rewards))

    if "skpo_oracle" not in ROLLOUTS:
        ROLLOUTS.register("skpo_oracle", real.params_cls, **dict(real.meta))(oracle)


def pipeline_accuracy(trainer, cfg, n: int = 200) -> float:
    """Accuracy of answers from ``[s, q]``, the segment sampled by the policy (SKPO's rollout on
    held-out problems, 8 answers each)."""
    from skpo.algorithms import LengthTracker
    from skpo.config import arith_config
    from skpo.engines import SamplingParams
    from skpo.rewards.arith import check_answer
    from skpo.rollout.skpo_rollout import SkpoPrompt, SkpoRolloutParams, skpo_rollout
    from skpo.tasks.arith import heldout_problems
    from skpo.tasks.templates import plain_input_ids

    problems = heldout_problems(arith_config(cfg), n)
    tok = trainer.tokenizer
    prompts = [SkpoPrompt(i, plain_input_ids(tok, p)) for i, p in enumerate(problems)]

    def reward(i, ids):
        return 1.0 if check_answer(tok.decode(ids, skip_special_tokens=True), problems[i]) else -1.0

    batch = skpo_rollout(trainer.engine, prompts, LengthTracker(initial=cfg.rollout.initial_length),
                         SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, stop_token_ids=list(trainer.stop_ids), seed=5),
                         reward, torch.Generator().manual_seed(5), SkpoRolloutParams(), group_size=8, step=0,
                         pad_token_id=trainer.pad_id)
    return float((batch.downstream.rewards > 0).float().mean())


def gradients(steps: int = 3, out: str = "runs/why/gradients", overrides: tuple[str, ...] = ()) -> None:
    """Norms and cosine of SKPO's two gradient terms (each at its 0.5 weight) on fresh batches."""
    from skpo.config import load_config
    from skpo.engines import SamplingParams, mix_seed
    from skpo.rollout.base import ROLLOUTS, RolloutContext, Timer
    from skpo.training.advantages import with_advantages
    from skpo.training.log_probs import with_old_and_ref_log_probs
    from skpo.training.setup import build_trainer
    from skpo.training.update import update

    cfg = load_config(None, ["train.method=skpo", f"log.out_dir={out}", "log.progress=false",
                             "log.tensorboard=false", "eval.every=0", *overrides])
    tr = build_trainer(cfg, overwrite=True)
    base = tr.method
    for step in range(steps):
        items = tr.sample_prompts(step)
        params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, stop_token_ids=list(tr.stop_ids),
                                seed=mix_seed(0, step, 1))
        ctx = RolloutContext(engine=tr.engine, params=params, rollout_params=tr.rollout_params, group_size=base.group_size,
                             step=step,
                             score=tr.score, sample_prompts=lambda draw: tr.sample_prompts(step, draw), source=tr.source,  # noqa: B023  # noqa: B023  # noqa: B023
                             pad_id=tr.pad_id, max_new_tokens=cfg.rollout.max_new_tokens, timer=Timer(),
                             generator=torch.Generator().manual_seed(mix_seed(0, step, 23)), length_tracker=tr.state.length_tracker)
        metrics: dict = {}
        rows = ROLLOUTS.get(base.rollout).fn(ctx, items).rows
        rows = with_advantages(tr.advantage_context(step, metrics), with_old_and_ref_log_probs(tr.actor, base, rows))
        grads = {}
        for role in ("upstream", "downstream"):
            one_role = dataclasses.replace(base, terms=tuple(t for t in base.terms if t.role == role))  # the other trains nothing
            captured = {}
            real_step = tr.actor.optimizer.step
            tr.actor.optimizer.step = lambda *a, **k: captured.setdefault(  # noqa: B023 - record the clipped gradient, step nothing
                "g", torch.cat([p.grad.flatten() for p in tr.policy.parameters() if p.grad is not None]))
            update(tr.actor, one_role, rows, tr.dist, tr.update_settings, step, {})
            tr.actor.optimizer.step = real_step
            grads[role] = captured["g"]
        up, down = grads["upstream"], grads["downstream"]
        cos = torch.nn.functional.cosine_similarity(up, down, dim=0).item()
        print(json.dumps({"step": step, "upstream_norm": round(up.norm().item(), 4), "downstream_norm": round(down.norm().item(), 4),
                          "ratio": round((up.norm() / down.norm()).item(), 2), "cosine": round(cos, 3)}))
    tr.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", choices=RUNS, default="skpo")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--pool", type=int, default=2000, help="training prompt pool (default 2000)")
    p.add_argument("--out", default=None)
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems of each evaluation")
    p.add_argument("--gradients", action="store_true", help="only measure the two SKPO gradient terms")
    p.add_argument("--gradient-steps", type=int, default=3, help="batches --gradients measures")
    p.add_argument("overrides", nargs="*", help="config overrides (key=value) applied after the run's own")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.gradients:
        gradients(args.gradient_steps, args.out or "runs/why/gradients", tuple(args.overrides))
        return
    from skpo.config import load_config
    from skpo.training.benchmarks import evaluate_heldout
    from skpo.training.setup import build_trainer

    method, overrides = configure(args.run)
    out = Path(args.out or f"runs/why/{args.run}-s{args.seed}")
    cfg = load_config(None, [f"train.method={method}", f"train.seed={args.seed}", f"train.steps={args.steps}",
                             f"data.arith.pool_size={args.pool}", f"log.out_dir={out}", "log.progress=false",
                             "log.tensorboard=false", "eval.every=0", *overrides, *args.overrides])
    started = time.time()
    trainer = build_trainer(cfg, overwrite=True)
    trainer.train()
    result = evaluate_heldout(trainer.policy, trainer.tokenizer, cfg, k=8, num_problems=args.eval_problems)
    summary = {"run": args.run, "seed": args.seed, "steps": args.steps, "pool": args.pool,
               "avg@8": result["metrics"]["avg@8"], "pass@8": result["metrics"]["pass@8"],
               "step_accuracy": result["step_metrics"]["step_accuracy"], "skip_input_avg@8": pipeline_accuracy(trainer, cfg, args.eval_problems),
               "decoded_tokens": trainer.state.tokens_seen, "seconds": round(time.time() - started, 1)}
    (out / "why.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

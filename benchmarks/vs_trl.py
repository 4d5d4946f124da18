"""skpo's GRPO step against TRL's ``GRPOTrainer`` on CPU, at equal work (a script, not a test).

Both trainers start from the same shipped tiny model (``tiny-arith``, float32) and draw from
the same pool of arithmetic prompts, with the same group size, completion length, batch
(prompts × G completions per optimizer step), learning rate, reward function (the arithmetic
checker) and sampling (temperature 1, no top-p / top-k). One training step = generate the
batch, score it, one optimizer step. TRL is configured for its fastest CPU float32 path
(``--trl-defaults`` keeps its bf16 and checkpointing defaults instead):
``bf16=False``, ``gradient_checkpointing=False``, plain ``model.generate``, no reference
model (``beta=0``) and on-policy (no old-log-prob pass), ``loss_type="dapo"`` (token-mean,
like skpo's GRPO preset).

Steps are interleaved: TRL runs its own loop and a callback times each TRL step and then
runs (and times) one skpo step, so both see the same machine load. The first ``--warmup``
steps of each are dropped; the table gives medians and the median of per-pair ratios.

Two modes:
- ``--mode fixed`` (default): every completion is exactly ``--length`` tokens (skpo:
  ``rollout.ignore_eos``; TRL: ``min_new_tokens``), so the work is identical token for token.
- ``--mode natural``: both stop at EOS; completion lengths then differ by sampling, so
  compare tokens/s as well as s/step.

    pip install -e ".[bench]"          # TRL is pinned there
    python benchmarks/vs_trl.py --reps 6
    python benchmarks/vs_trl.py --mode natural --reps 6
    python benchmarks/vs_trl.py --trl-micro-batch 16     # TRL with gradient accumulation
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings

import _bench
import torch


def skpo_side(args, out_dir):
    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    cfg = load_config(None, [
        "train.method=grpo", f"rollout.group_size={args.group}", f"train.prompts_per_step={args.prompts}",
        f"rollout.max_new_tokens={args.length}", f"rollout.ignore_eos={args.mode == 'fixed'}",
        "train.mini_batches=1", "train.ppo_epochs=1", f"train.lr={args.lr}", "model.device=cpu",
        "eval.every=0", "log.progress=false", "log.tensorboard=false", f"log.out_dir={out_dir}",
        *args.skpo_overrides,
    ])
    return build_trainer(cfg)


def trl_side(args, skpo_trainer, out_dir):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from skpo.models.loading import load_policy, tiny_arith_dir

    tok = skpo_trainer.tokenizer
    items = skpo_trainer.source.items
    texts = [tok.decode(list(it.prompt_ids)) for it in items]
    # TRL re-tokenises the prompt text: it must give back the very same ids.
    for it, text in zip(items[:50], texts):
        assert tok(text, add_special_tokens=False)["input_ids"] == list(it.prompt_ids), text
    dataset = Dataset.from_dict({"prompt": texts, "item": list(range(len(items)))})

    def arith_reward(completions, item, **_):
        return [float(skpo_trainer.source.is_correct(items[i], c)) for c, i in zip(completions, item)]

    gen_kwargs = {"min_new_tokens": args.length} if args.mode == "fixed" else None
    # A micro-batch smaller than the batch: gradient accumulation over one generation of
    # the whole batch (steps_per_generation = accumulation steps), still one optimizer step.
    micro = args.trl_micro_batch or args.prompts * args.group
    if (args.prompts * args.group) % micro:
        raise SystemExit(f"--trl-micro-batch {micro} must divide the batch of {args.prompts * args.group} completions")
    accumulation = args.prompts * args.group // micro
    # TRL's own defaults are bf16 autocast and gradient checkpointing; both are slower here
    # (bf16 autocast on this CPU: conversions outweigh the faster matmuls at hidden size 128)
    speed = {} if args.trl_defaults else {"bf16": False, "gradient_checkpointing": False}
    config = GRPOConfig(
        output_dir=out_dir, use_cpu=True, fp16=False, **speed,
        per_device_train_batch_size=micro, num_generations=args.group,
        gradient_accumulation_steps=accumulation, steps_per_generation=accumulation, num_iterations=1,
        max_completion_length=args.length, temperature=1.0, top_p=1.0, top_k=0, generation_kwargs=gen_kwargs,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.1, max_grad_norm=1.0,
        beta=0.0, loss_type="dapo", max_steps=args.warmup + args.reps, logging_steps=1, save_strategy="no",
        report_to="none", dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    model = load_policy(tiny_arith_dir(), device="cpu")
    return GRPOTrainer(model=model, reward_funcs=arith_reward, args=config, train_dataset=dataset, processing_class=tok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["fixed", "natural"], default="fixed")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--length", type=int, default=64, help="completion length (max; exact in fixed mode)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--reps", type=int, default=6, help="timed steps of each")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--trl-defaults", action="store_true",
                    help="keep TRL's default bf16 autocast and gradient checkpointing (skpo stays float32)")
    ap.add_argument("--trl-micro-batch", type=int, default=0,
                    help="completions per TRL forward/backward (gradient accumulation); 0 = the whole batch")
    ap.add_argument("skpo_overrides", nargs="*", help="extra skpo config overrides (key=value)")
    args = ap.parse_args()
    _bench.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    try:
        import trl
    except ImportError:
        raise SystemExit('benchmarks/vs_trl.py needs TRL: pip install -e ".[bench]" (pins trl==1.16.0)') from None
    from transformers import TrainerCallback

    tmp = tempfile.mkdtemp(prefix="skpo-vs-trl-")
    ours = skpo_side(args, f"{tmp}/skpo")
    theirs = trl_side(args, ours, f"{tmp}/trl")
    rec = {"trl": [], "skpo": [], "trl_tokens": [], "skpo_tokens": [], "skpo_phases": []}
    batch = args.prompts * args.group

    class Interleave(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            rec["trl"].append(time.perf_counter() - self.t0)
            t0 = time.perf_counter()
            m = ours.train_step(ours.step)
            rec["skpo"].append(time.perf_counter() - t0)
            ours.step += 1
            rec["skpo_tokens"].append(m["tokens/decoded"] + m["tokens/trained"])
            rec["skpo_phases"].append({k[5:]: v for k, v in m.items() if k.startswith("time/")})

        def on_log(self, _args, _state, _control, logs=None, **_k):
            if logs and "completions/mean_length" in logs:
                rec["trl_tokens"].append(2 * logs["completions/mean_length"] * batch)  # generated + trained

    theirs.add_callback(Interleave())
    theirs.train()

    w = args.warmup
    trl_s, skpo_s = rec["trl"][w:], rec["skpo"][w:]
    trl_tps = [n / s for n, s in zip(rec["trl_tokens"][w:], trl_s)]
    skpo_tps = [n / s for n, s in zip(rec["skpo_tokens"][w:], skpo_s)]
    print(f"# {_bench.machine_line()}; TRL {trl.__version__} "
          f"(micro-batch {args.trl_micro_batch or batch} completions{', its defaults: bf16 + gradient checkpointing' if args.trl_defaults else ', float32'}), skpo micro-batch ≤ {ours.cfg.train.micro_batch_tokens} tokens")
    print(f"# tiny-arith (1.02M params, float32), {args.prompts} prompts × G={args.group}, completions "
          f"{'exactly' if args.mode == 'fixed' else 'at most'} {args.length} tokens, one optimizer step per step; "
          f"median of {len(trl_s)} interleaved steps after {w} warm-up")
    print(_bench.table(
        ["trainer", "s/step", "generated+trained tokens/s", "tokens/step"],
        [["TRL GRPOTrainer", f"{_bench.median(trl_s):.2f}", f"{_bench.median(trl_tps):.0f}", f"{_bench.median(rec['trl_tokens'][w:]):.0f}"],
         ["skpo GRPO", f"{_bench.median(skpo_s):.2f}", f"{_bench.median(skpo_tps):.0f}", f"{_bench.median(rec['skpo_tokens'][w:]):.0f}"]],
    ))
    print(f"\nspeed-up (TRL s/step ÷ skpo s/step, paired): {_bench.paired_ratio(trl_s, skpo_s):.2f}×; "
          f"tokens/s ratio: {_bench.paired_ratio(skpo_tps, trl_tps):.2f}×")
    phases = rec["skpo_phases"][w:]
    print("skpo phases (median s): " + ", ".join(
        f"{k} {_bench.median(p[k] for p in phases):.3f}" for k in phases[0] if k != "step"))


if __name__ == "__main__":
    main()

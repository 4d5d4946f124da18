"""skpo's GRPO step against TRL's ``GRPOTrainer`` on CPU, at equal work (a script, not a test).

Both trainers start from the same model (the one skpo's config names, ``tiny-arith`` by
default, float32, loaded fresh for TRL and checked equal to skpo's), draw from the same pool
of prompts (skpo's :class:`~skpo.tasks.sources.PromptSource` items, decoded to text for TRL
and checked to tokenise back to the same ids) and are scored by the same reward: skpo's own
``Trainer.score`` (the source's registered verifier, mapped onto the method's reward range),
handed to TRL as its reward function. Group size, completion length, batch (prompts × G
completions per optimizer step), sampling (temperature, top-p, no top-k) and the optimizer
(``torch.optim.AdamW``: learning rate, betas, weight decay, gradient clipping, schedule) are
read from skpo's config, so they agree by construction. One training step = generate the batch,
score it, one optimizer step. TRL runs its fastest CPU float32 path (``--trl-defaults`` keeps
its bf16 and checkpointing defaults instead): ``bf16=False``, ``gradient_checkpointing=False``,
plain ``model.generate``, no reference model (``beta=0``), on-policy (no old-log-prob pass),
``loss_type="grpo"`` (a token mean per answer, then a mean over answers: skpo's GRPO
``seq-mean-token-mean``).

Steps alternate: TRL runs its own loop and a callback times each TRL step, then runs (and
times) one skpo step, so both see the same machine load. The first ``--warmup`` steps of each
are dropped; the tables give medians and the median of per-pair ratios, in wall time and in
this process's CPU time (steadier on a shared machine), and each side's phases: generation,
scoring, update (forward + backward + optimizer step) and the rest. The phases are timed by
wrapping public methods: TRL's model's ``generate``, its ``compute_loss``, its accelerator's
``backward`` and its optimizer's ``step``; skpo's engine's ``generate`` and its actor's
``train_forward``, ``backward`` and ``optimizer_step``; scoring is skpo's ``Trainer.score``
on both sides. (skpo's "other" holds its policy-drift measure, a no-grad forward of one
micro-batch that the KL-paced trackers read.)

Two modes:
- ``--mode fixed`` (default): every completion is exactly ``--length`` tokens (skpo:
  ``rollout.ignore_eos``; TRL: ``min_new_tokens``), so the work is identical token for token.
- ``--mode natural``: both stop at EOS; completion lengths then differ by sampling, so
  compare tokens/s as well as s/step.

    pip install -c requirements/cpu-lock.txt -e ".[bench]"    # TRL is pinned there (make bench)
    python benchmarks/vs_trl.py --reps 8
    python benchmarks/vs_trl.py --mode natural --reps 8
    python benchmarks/vs_trl.py --mode natural --reps 8 --threads 1   # docs/performance.md §1 (shared machine)
    python benchmarks/vs_trl.py --trl-micro-batch 16     # TRL with gradient accumulation
    python benchmarks/vs_trl.py --reps 1 --warmup 0 --prompts 2 --group 2 --length 8   # smallest
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from collections import defaultdict

import _bench
import torch

PHASES = ("generation", "scoring", "update", "other")


def skpo_side(args, out_dir):
    import skpo

    return skpo.build(out_dir=out_dir, method="grpo", overrides=[
        f"method.group_size={args.group}", f"train.prompts_per_step={args.prompts}",
        f"rollout.max_new_tokens={args.length}", f"rollout.ignore_eos={args.mode == 'fixed'}",
        "train.mini_batches=1", "train.ppo_epochs=1", f"train.lr={args.lr}", "model.device=cpu", "model.dtype=float32",
        "eval.every=0", "log.progress=false", "log.tensorboard=false", *args.skpo_overrides,
    ])


class PhaseClock:
    """Wall and CPU seconds per phase of the step being timed (one side's step at a time).

    CPU time is this process's (``time.process_time``): on a shared machine it moves much less
    than wall time with the load; with one torch thread it is the work done."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._t0 = (0.0, 0.0)

    def start(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self._t0 = (time.perf_counter(), time.process_time())

    def stop(self) -> dict[str, tuple[float, float]]:
        """``{phase: (wall s, CPU s)}`` of the step since :meth:`start`, ``"step"`` the whole
        step and ``"other"`` what no phase timed."""
        wall, cpu = time.perf_counter() - self._t0[0], time.process_time() - self._t0[1]
        out = {k: (self.wall[k], self.cpu[k]) for k in PHASES[:3]}
        out["other"] = (wall - sum(w for w, _ in out.values()), cpu - sum(c for _, c in out.values()))
        out["step"] = (wall, cpu)
        return out

    def timed(self, fn, phase: str):
        """``fn``, its time added to ``phase`` on every call."""
        def wrapper(*a, **k):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.wall[phase] += time.perf_counter() - w0
                self.cpu[phase] += time.process_time() - c0
        return wrapper


def time_skpo(ours, clock: PhaseClock) -> None:
    """Time skpo's phases through its public parts: the engine's ``generate``, the trainer's
    ``score`` (TRL's reward calls it too) and the actor's forward, backward and optimizer step."""
    ours.engine.generate = clock.timed(ours.engine.generate, "generation")
    ours.score = clock.timed(ours.score, "scoring")
    for name in ("train_forward", "backward", "optimizer_step"):
        setattr(ours.actor, name, clock.timed(getattr(ours.actor, name), "update"))


def prompt_texts(ours) -> list[str]:
    """skpo's prompts as the text TRL tokenises again (checked to give back the same ids)."""
    tok, items = ours.tokenizer, ours.source.items
    texts = [tok.decode(list(it.prompt_ids)) for it in items]
    for it, text in zip(items[:50], texts):
        if tok(text, add_special_tokens=False)["input_ids"] != list(it.prompt_ids):
            raise SystemExit(f"prompt {it.key!r} does not tokenise back to its ids: TRL would see other prompts")
    return texts


def trl_reward(ours):
    """TRL's reward function: skpo's own reward of the completions' token ids (the source's
    verifier, mapped onto the method's reward range). The dataset's ``item`` column indexes
    ``ours.source.items``."""
    items = ours.source.items

    def arith_reward(completions, completion_ids, item, **_):
        return ours.score([items[i] for i in item], [list(ids) for ids in completion_ids]).rewards

    return arith_reward


def trl_side(args, ours, out_dir, clock: PhaseClock):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from skpo.models.loading import load_policy, resolve_model_path

    tok, cfg = ours.tokenizer, ours.cfg
    texts = prompt_texts(ours)
    dataset = Dataset.from_dict({"prompt": texts, "item": list(range(len(texts)))})
    arith_reward = trl_reward(ours)
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
    t, r = cfg.train, cfg.rollout
    config = GRPOConfig(
        output_dir=out_dir, use_cpu=True, fp16=False, **speed,
        per_device_train_batch_size=micro, num_generations=args.group,
        gradient_accumulation_steps=accumulation, steps_per_generation=accumulation, num_iterations=1,
        max_completion_length=args.length, temperature=r.temperature, top_p=r.top_p, top_k=0,
        generation_kwargs=gen_kwargs,
        optim="adamw_torch", learning_rate=t.lr, adam_beta1=t.betas[0], adam_beta2=t.betas[1],
        weight_decay=t.weight_decay, max_grad_norm=t.grad_clip, lr_scheduler_type=t.lr_schedule,
        warmup_steps=t.warmup_steps,
        beta=0.0, loss_type="grpo", max_steps=args.warmup + args.reps, logging_steps=1, save_strategy="no",
        report_to="none", dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    model = load_policy(resolve_model_path(cfg.model.path), device="cpu", dtype=torch.float32)
    theirs_state, ours_state = model.state_dict(), ours.policy.state_dict()
    if theirs_state.keys() != ours_state.keys() or any(not torch.equal(v, ours_state[k]) for k, v in theirs_state.items()):
        raise SystemExit("TRL's model and skpo's policy differ before the first step")
    model.generate = clock.timed(model.generate, "generation")
    trainer = GRPOTrainer(model=model, reward_funcs=arith_reward, args=config, train_dataset=dataset, processing_class=tok)
    trainer.compute_loss = clock.timed(trainer.compute_loss, "update")
    trainer.accelerator.backward = clock.timed(trainer.accelerator.backward, "update")
    return trainer  # (its optimizer, made in train(), is timed from the callback's on_train_begin)


def main(argv: list[str] | None = None) -> None:
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
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    _bench.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    try:
        from trl import __version__ as trl_version
    except ImportError:
        raise SystemExit('benchmarks/vs_trl.py needs TRL: pip install -c requirements/cpu-lock.txt -e ".[bench]" '
                         '(pins trl==1.16.0)') from None
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # (weight-loading bars)

    tmp = tempfile.mkdtemp(prefix="skpo-vs-trl-")
    ours = skpo_side(args, f"{tmp}/skpo")
    clock = PhaseClock()
    time_skpo(ours, clock)
    theirs = trl_side(args, ours, f"{tmp}/trl", clock)
    rec = {"trl": [], "skpo": [], "trl_tokens": [], "skpo_tokens": []}
    batch = args.prompts * args.group

    class Interleave(TrainerCallback):
        def on_train_begin(self, _args, _state, _control, optimizer=None, **_k):
            optimizer.step = clock.timed(optimizer.step, "update")

        def on_step_begin(self, *_a, **_k):
            clock.start()

        def on_step_end(self, *_a, **_k):
            rec["trl"].append(clock.stop())
            clock.start()
            m = ours.train_step(ours.state.step)
            rec["skpo"].append(clock.stop())
            ours.state.step += 1
            rec["skpo_tokens"].append(m["tokens/decoded"] + m["tokens/trained"])

        def on_log(self, _args, _state, _control, logs=None, **_k):
            if logs and "completions/mean_length" in logs:
                rec["trl_tokens"].append(2 * logs["completions/mean_length"] * batch)  # generated + trained

    theirs.remove_callback(PrinterCallback)  # (TRL's metrics dict every step)
    theirs.add_callback(Interleave())
    theirs.train()
    ours.close()

    w = args.warmup
    trl, skpo = rec["trl"][w:], rec["skpo"][w:]
    trl_tokens, skpo_tokens = rec["trl_tokens"][w:], rec["skpo_tokens"][w:]
    if not (len(trl) == len(skpo) == len(trl_tokens) == args.reps):
        raise SystemExit(f"expected {args.reps} timed steps of each, got TRL {len(trl)} (tokens {len(trl_tokens)}), "
                         f"skpo {len(skpo)}")
    wall = {"trl": [p["step"][0] for p in trl], "skpo": [p["step"][0] for p in skpo]}
    cpu = {"trl": [p["step"][1] for p in trl], "skpo": [p["step"][1] for p in skpo]}
    trl_tps = [n / s for n, s in zip(trl_tokens, wall["trl"])]
    skpo_tps = [n / s for n, s in zip(skpo_tokens, wall["skpo"])]
    print(f"# {_bench.machine_line()}; TRL {trl_version} "
          f"(micro-batch {args.trl_micro_batch or batch} completions{', its defaults: bf16 + gradient checkpointing' if args.trl_defaults else ', float32'}), skpo micro-batch ≤ {ours.cfg.train.micro_batch_tokens} tokens")
    print(f"# {ours.cfg.model.path} (float32), {args.prompts} prompts × G={args.group}, completions "
          f"{'exactly' if args.mode == 'fixed' else 'at most'} {args.length} tokens, one optimizer step per step; "
          f"median of {len(trl)} alternated steps after {w} warm-up")
    med = _bench.median
    print(_bench.table(
        ["trainer", "s/step", "CPU s/step", "generated+trained tokens/s", "tokens/step"],
        [["TRL GRPOTrainer", f"{med(wall['trl']):.2f}", f"{med(cpu['trl']):.2f}", f"{med(trl_tps):.0f}", f"{med(trl_tokens):.0f}"],
         ["skpo GRPO", f"{med(wall['skpo']):.2f}", f"{med(cpu['skpo']):.2f}", f"{med(skpo_tps):.0f}", f"{med(skpo_tokens):.0f}"]],
    ))
    print(f"\nspeed-up (TRL s/step ÷ skpo s/step, paired): {_bench.paired_ratio(wall['trl'], wall['skpo']):.2f}×; "
          f"in CPU time: {_bench.paired_ratio(cpu['trl'], cpu['skpo']):.2f}×; "
          f"tokens/s ratio: {_bench.paired_ratio(skpo_tps, trl_tps):.2f}×\n")
    rows = []
    for k in PHASES:
        row = [k]
        for i in (0, 1):  # wall, CPU
            a, b = [p[k][i] for p in trl], [p[k][i] for p in skpo]
            ratio = f"{_bench.paired_ratio(a, b):.2f}×" if min(b) > 1e-3 else "–"
            row += [f"{med(a):.3f}", f"{med(b):.3f}", ratio]
        rows.append(row)
    print(_bench.table(["phase (median s)", "TRL", "skpo", "TRL/skpo (paired)", "TRL CPU", "skpo CPU",
                        "TRL/skpo CPU (paired)"], rows))

if __name__ == "__main__":
    main()

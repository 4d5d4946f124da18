"""Achieved training throughput against the machine's measured float32 matmul rate, and where
the time goes (a script, not a test).

In one run: (1) the FLOP/s of a large float32 matmul (2048³) and of the matmul shapes the
tiny model actually runs (training: ``[tokens, 128] × [128, 512]`` and friends; decoding:
128 rows at a time); (2) ``--steps`` skpo training steps (GRPO or any method, embedded
recipe) with phase times; (3) a ``torch.profiler`` pass over one more step, with CPU time
grouped into matmul, attention, elementwise/normalisation, memory movement and the rest.

FLOPs are counted the usual way for matmuls: ``2·N`` per token forward and ``6·N`` per token
forward + backward, with ``N`` the weights of all linear layers (the tied output projection
included); attention score/value products are left out (they are <10 % at these lengths), so
the percentages are, if anything, slight underestimates. Training tokens are the real
tokens the update's forward runs over (prompt once per packed group, no padding).

    python benchmarks/roofline.py                          # GRPO, natural lengths
    python benchmarks/roofline.py --steps 6 rollout.ignore_eos=true train.method=skpo
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import _bench
import torch


def linear_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def profile_categories(trainer) -> list[tuple[str, float]]:
    """One training step under torch.profiler; self CPU time by kind of op (seconds)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step(trainer.state.step)
    trainer.state.step += 1
    kinds = {
        "matmul (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
        "attention kernels (sdpa)": ("scaled_dot_product", "_flash_attention"),
        "memory movement (cat, copy, index, gather)": ("aten::cat", "aten::copy_", "aten::index", "aten::gather",
                                                        "aten::index_select", "aten::_to_copy", "aten::scatter",
                                                        "aten::index_put", "aten::fill_", "aten::zero_", "aten::clone"),
        "elementwise and normalisation": ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::silu", "aten::pow",
                                          "aten::rsqrt", "aten::mean", "aten::neg", "aten::exp", "aten::log", "aten::sum",
                                          "aten::where", "aten::softmax", "aten::_softmax", "aten::_log_softmax",
                                          "aten::logsumexp", "Backward", "aten::threshold", "aten::sigmoid"),
    }
    totals = dict.fromkeys(kinds, 0.0)
    other = 0.0
    for evt in prof.key_averages():
        t = evt.self_cpu_time_total / 1e6
        for k, keys in kinds.items():
            if any(x in evt.key for x in keys):
                totals[k] += t
                break
        else:
            other += t
    totals["other ops and Python (dispatch, sampling loop, bookkeeping)"] = other
    return sorted(totals.items(), key=lambda kv: -kv[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.method=skpo")
    args = ap.parse_args()
    _bench.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    cfg = load_config(None, ["train.method=grpo", "model.device=cpu", "eval.every=0", "log.progress=false",
                             "log.tensorboard=false", f"log.out_dir={tempfile.mkdtemp(prefix='skpo-roofline-')}",
                             *args.overrides])
    trainer = build_trainer(cfg)
    n = linear_weights(trainer.policy)
    d, ff = trainer.policy.config.hidden_size, trainer.policy.config.intermediate_size
    peak = _bench.matmul_flops(2048)
    train_rate = _bench.median([_bench.matmul_flops(shape=(1024, d, ff)), _bench.matmul_flops(shape=(1024, ff, d))])
    decode_rate = _bench.median([_bench.matmul_flops(shape=(128, d, ff)), _bench.matmul_flops(shape=(128, ff, d))])

    trainer.train_step(trainer.state.step)  # warm-up
    trainer.state.step += 1
    steps = []
    for _ in range(args.steps):
        steps.append(trainer.train_step(trainer.state.step))
        trainer.state.step += 1
    med = lambda key: _bench.median(m.get(key, 0.0) for m in steps)  # noqa: E731
    t_roll, t_upd = med("time/rollout"), med("time/update") + med("time/old_log_probs")
    t_step = med("time/step")
    decoded, prefill = med("tokens/decoded"), med("tokens/prefill")
    real, padded = med("tokens/update_real"), med("tokens/update_padded")
    flops_roll = 2 * n * (decoded + prefill)
    flops_upd = 6 * n * real
    print(f"# {_bench.machine_line()}")
    print(f"# {cfg.train.method}, tiny-arith ({n / 1e6:.2f}M weights in linear layers), "
          f"{cfg.train.prompts_per_step} prompts × G, answers ≤ {cfg.rollout.max_new_tokens}"
          f"{' (exactly)' if cfg.rollout.ignore_eos else ''}, micro-batch ≤ {cfg.train.micro_batch_tokens} tokens; "
          f"median of {args.steps} steps")
    print(f"\nmeasured float32 matmul rate: {peak / 1e9:.0f} GFLOP/s at 2048³; {train_rate / 1e9:.0f} GFLOP/s at the "
          f"training shapes [1024,{d}]×[{d},{ff}]; {decode_rate / 1e9:.0f} GFLOP/s at the decode shapes [128,{d}]×[{d},{ff}]\n")
    rows = []
    for name, t, flops, tokens, shape_rate in [
        ("rollout (decode + prefill)", t_roll, flops_roll, f"{decoded:.0f} decoded + {prefill:.0f} prefill", decode_rate),
        ("update (forward + backward + AdamW)", t_upd, flops_upd, f"{real:.0f} real ({padded:.0f} with padding)", train_rate),
        ("whole step", t_step, flops_roll + flops_upd, "", peak),
    ]:
        rate = flops / t
        rows.append([name, f"{t:.3f}", tokens, f"{flops / 1e9:.1f}", f"{rate / 1e9:.1f}", f"{100 * rate / peak:.0f}%",
                     f"{100 * rate / shape_rate:.0f}%" if name != "whole step" else "–"])
    print(_bench.table(["phase", "s", "tokens", "GFLOP", "GFLOP/s", "% of 2048³ rate", "% of rate at its shapes"], rows))
    if not args.no_profile:
        cats = profile_categories(trainer)
        total = sum(v for _, v in cats)
        print(f"\nwhere one step's CPU time goes (torch.profiler, self time, {total:.2f} s incl. profiler overhead):")
        print(_bench.table(["kind of op", "s", "share"], [[k, f"{v:.3f}", f"{100 * v / total:.0f}%"] for k, v in cats]))


if __name__ == "__main__":
    main()

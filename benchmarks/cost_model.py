"""Token and FLOP cost of one SKPO step against one GRPO step, from a few lengths
(arithmetic, not a measurement; ``docs/performance.md`` checks it against measured counts).

Per step, B prompts of mean length q̄, G answers each, mean answer length ō, answer budget
L_max. SKPO's split point is t_q ~ U[L_q/6, L_q/2] with L_q ≈ ō (the length tracker follows
the mean answer length), so a segment is on average ~ō/3 tokens (a candidate that stops
earlier is shorter; ``--segment-frac`` sets the mean segment length as a fraction of ō).

    GRPO  decoded  B·G·ō                         SKPO  decoded   B·G·s̄ (G candidates) + B·G·ō
          prefill  B·q̄ (shared per prompt)             prefill   B·q̄ + B·(s̄ + q̄)
          forward  B·G·(q̄ + ō)    rows                 forward   B·G·(s̄ + q̄ + ō) + B·(q̄ + s̄)   rows
                   B·(q̄ + G·ō)    packed                         B·(s̄ + q̄ + G·ō) + B·(q̄ + s̄)   packed

"rows" is one padded-free sequence per answer (verl, TRL); "packed" encodes a prompt (SKPO:
``[s, q]``) once per group, as skpo's tree packing or a prefix-sharing attention kernel does.
FLOPs: 2·N per decoded or prefilled token, 6·N per trained token (forward + backward) plus
2·N more when old log-probs need their own pass (more than one mini-batch or epoch);
attention products are left out. Sequential decode steps: GRPO ≈ L_max when any answer is
truncated; SKPO adds its segment phase, max t_q ≈ L_q/2, in a two-call rollout (a
single-pass engine overlaps it with other prompts' answers).

    python benchmarks/cost_model.py                       # the paper's setting, 7B model
    python benchmarks/cost_model.py --prompts 16 --prompt-len 17 --answer-len 33 --max-len 64 --params 1.02e6
"""

from __future__ import annotations

import argparse

import _bench


def costs(b: int, g: int, q: float, o: float, s: float, n: float, old_pass: bool) -> dict[str, dict[str, float]]:
    grpo = {
        "decoded": b * g * o,
        "prefill": b * q,
        "forward (rows)": b * g * (q + o),
        "forward (packed)": b * (q + g * o),
    }
    skpo = {
        "decoded": b * g * s + b * g * o,
        "prefill": b * q + b * (s + q),
        "forward (rows)": b * g * (s + q + o) + b * (q + s),
        "forward (packed)": b * (s + q + g * o) + b * (q + s),
    }
    train_per_token = 6 * n + (2 * n if old_pass else 0)
    for d in (grpo, skpo):
        for layout in ("rows", "packed"):
            d[f"FLOP ({layout})"] = 2 * n * (d["decoded"] + d["prefill"]) + train_per_token * d[f"forward ({layout})"]
    return {"GRPO": grpo, "SKPO": skpo}


def _si(v: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=float, default=200, help="mean prompt length q̄ (chat-templated)")
    ap.add_argument("--answer-len", type=float, default=1500, help="mean answer length ō")
    ap.add_argument("--max-len", type=int, default=3072, help="answer budget")
    ap.add_argument("--segment-frac", type=float, default=1 / 3, help="mean segment length / ō")
    ap.add_argument("--params", type=float, default=7.6e9, help="weights N")
    ap.add_argument("--mini-batches", type=int, default=4, help=">1 means old log-probs need their own pass")
    args = ap.parse_args()
    s = args.segment_frac * args.answer_len
    c = costs(args.prompts, args.group, args.prompt_len, args.answer_len, s, args.params, args.mini_batches > 1)
    print(f"# B={args.prompts} prompts × G={args.group}, q̄={args.prompt_len:g}, ō={args.answer_len:g}, "
          f"s̄={s:.0f}, L_max={args.max_len}, N={args.params:.3g}, mini-batches {args.mini_batches}")
    rows = []
    for k in c["GRPO"]:
        gr, sk = c["GRPO"][k], c["SKPO"][k]
        rows.append([k if k.startswith("FLOP") else f"{k} tokens", _si(gr), _si(sk), f"{sk / gr:.2f}×"])
    lq = args.answer_len
    steps_grpo, steps_skpo = args.max_len, args.max_len + lq / 2
    rows.append(["sequential decode steps (two-call, worst case)", f"{steps_grpo:.0f}", f"{steps_skpo:.0f}",
                 f"{steps_skpo / steps_grpo:.2f}×"])
    print(_bench.table(["per step", "GRPO", "SKPO", "SKPO/GRPO"], rows))


if __name__ == "__main__":
    main()

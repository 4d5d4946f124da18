"""Do SKPO's segments carry an implicit advantage? The paper's §4.3 question, measured exactly.

The whole story (sources, readings, how each step runs): ``docs/analyses.md``, section "Notes from skpo.analysis.implicit_advantage"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from skpo.algorithms.advantages import batch_normalized
from skpo.algorithms.trackers import LengthTracker
from skpo.analysis.mc_accuracy import ArithSampler, Log, bootstrap_ci, sign3, stopwatch
from skpo.analysis.shortcut import segment_check
from skpo.engines.engine import SamplingParams, mix_seed
from skpo.rollout.skpo_rollout import SkpoPrompt, SkpoRolloutParams, skpo_rollout
from skpo.tasks.arith import ArithProblem
from skpo.tasks.templates import continual_input_ids, skip_input_ids

__all__ = [
    "ImplicitAdvantageSettings",
    "analyse",
    "auc",
    "collect_model",
    "pearson",
    "plot",
    "rankdata",
    "run",
    "sign_agreement",
    "spearman",
]

STATUSES = ("error_free", "wrong_partial", "wrong_line")


# ---------------------------------------------------------------------- pure functions


def pearson(x: Tensor, y: Tensor) -> float | None:
    """Pearson correlation of ``[N]`` and ``[N]``; ``None`` when either is constant or ``N < 2``."""
    x, y = x.double(), y.double()
    if x.numel() < 2:
        return None
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc**2).sum()) * float((yc**2).sum()))
    return None if denom == 0 else float((xc * yc).sum()) / denom


def rankdata(x: Tensor) -> Tensor:
    """``[N]`` float64 ranks 1…N of ``x`` ``[N]``, ties given their average rank."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    sorted_x = x[order]
    n, i = x.numel(), 0
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Tensor, y: Tensor) -> float | None:
    """Spearman rank correlation (Pearson of average ranks); ``None`` as :func:`pearson`."""
    return pearson(rankdata(x), rankdata(y))


def sign_agreement(est: Tensor, true: Tensor) -> dict[str, Any]:
    """Sign agreement of ``[N]`` estimates with ``[N]`` truths (signs ``−1, 0, +1``, ``|x| < 1e-9``
    is 0): ``nonzero`` over entries with a non-zero truth (an exact-0 estimate is wrong there),
    ``three_way`` over all, and ``n_nonzero``."""
    se, st = sign3(est), sign3(true)
    match = (se == st).double()
    nz = st != 0
    return {
        "nonzero": float(match[nz].mean()) if bool(nz.any()) else None,
        "three_way": float(match.mean()) if match.numel() else None,
        "n_nonzero": int(nz.sum()),
    }


def auc(positive: Tensor, negative: Tensor) -> float | None:
    """``P(x > y) + ½ P(x = y)`` for ``x`` from ``positive`` ``[N_p]`` and ``y`` from ``negative``
    ``[N_n]`` (all pairs; the Mann–Whitney AUC); ``None`` when either is empty. 1 = every
    positive above every negative, 0.5 = no separation."""
    if positive.numel() == 0 or negative.numel() == 0:
        return None
    diff = positive.double()[:, None] - negative.double()[None, :]  # [N_p, N_n]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def _mean(x: Tensor) -> float | None:
    return float(x.double().mean()) if x.numel() else None


# ---------------------------------------------------------------------- settings + generation


@dataclass(frozen=True)
class ImplicitAdvantageSettings:
    """Settings of ``skpo analyze implicit-advantage`` (defaults: ~2–3 min per model on 2 cores)."""

    segments: int = 100
    group_size: int = 8
    k_true: int = 128
    length: Literal["measured", "prior"] = "measured"
    length_prior: float = 32.0
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.segments < 2:
            raise ValueError("need at least 2 segments (the advantage is batch-normalised)")
        if self.group_size < 1 or self.k_true < 1:
            raise ValueError("group_size and k_true must be >= 1")
        if self.length not in ("measured", "prior"):
            raise ValueError(f"length must be 'measured' or 'prior', got {self.length!r}")

    @classmethod
    def quick(cls, seed: int = 0) -> ImplicitAdvantageSettings:
        return cls(segments=3, group_size=4, k_true=8, seed=seed)


def collect_model(
    model: Any,
    tokenizer: Any,
    problems: Sequence[ArithProblem],
    settings: ImplicitAdvantageSettings,
    log: Log | None = None,
) -> dict[str, Any]:
    """One model's segments, SKPO rewards and large-K truths (see module doc), as tensors ``[N]``
    and per-segment lists."""
    log = log or (lambda _msg: None)
    s = settings
    sampler = ArithSampler.build(model, tokenizer, s.batch_size)
    N, G = len(problems), s.group_size
    prompts = [sampler.prompt(p) for p in problems]
    budget = max(sampler.budget(p) for p in problems)  # one answer budget, as skpo_rollout takes
    timings: dict[str, float] = {}

    clock = stopwatch()
    plain = sampler.generate(prompts, G, [budget] * N, [mix_seed(s.seed, 1, n) for n in range(N)], s.temperature)
    plain_r = torch.tensor([[float(sampler.correct(problems[n], c.token_ids)) for c in plain[n]] for n in range(N)],
                           dtype=torch.float64).reshape(N, G)
    v_hat = plain_r.mean(-1)  # [N]
    lengths = [sum(len(c) for c in row) / G for row in plain]
    tracker = LengthTracker(initial=s.length_prior)
    if s.length == "measured":
        tracker.update(list(range(N)), lengths, kls=[0.0] * N)  # first observation: L_q := it
    timings["plain"] = clock()

    clock = stopwatch()
    batch = skpo_rollout(
        sampler.engine, [SkpoPrompt(n, prompts[n]) for n in range(N)], tracker,
        SamplingParams(temperature=s.temperature, max_new_tokens=budget, seed=mix_seed(s.seed, 2)),
        lambda i, ids: float(sampler.correct(problems[i], ids)),
        torch.Generator().manual_seed(s.seed), SkpoRolloutParams(), group_size=G,
    )
    up = batch.upstream
    segs = [row[m.bool()].tolist() for row, m in zip(up.response_ids, up.response_mask)]
    r_i = up.mc_rewards.double()  # [N]
    timings["skpo_rollout"] = clock()
    log(f"skpo rollout: {N} segments, mean R_I {float(r_i.mean()):.3f} ({timings['skpo_rollout']:.1f} s)")

    clock = stopwatch()
    inputs = (
        [list(q) for q in prompts]
        + [continual_input_ids(prompts[n], segs[n]) for n in range(N)]
        + [skip_input_ids(segs[n], prompts[n]) for n in range(N)]
    )
    budgets = [budget] * N + [budget - len(sg) for sg in segs] + [budget] * N
    seeds = [mix_seed(s.seed, 3, kind, n) for kind in range(3) for n in range(N)]
    outs = sampler.generate(inputs, s.k_true, budgets, seeds, s.temperature)
    prefix = [[]] * N + segs + [[]] * N
    probs = list(problems) * 3
    truth = torch.tensor(
        [[float(sampler.correct(probs[m], list(prefix[m]) + c.token_ids)) for c in row] for m, row in enumerate(outs)],
        dtype=torch.float64,
    ).reshape(3, N, s.k_true).mean(-1)  # [3, N]
    timings["truth"] = clock()
    log(f"truth: {3 * N} prefixes × {s.k_true} continuations ({timings['truth']:.1f} s)")

    checks = [segment_check(sampler.text(sg), problems[n]) for n, sg in enumerate(segs)]
    decoded = (sum(len(c) for row in plain for c in row) + batch.counters.decoded_tokens
               + sum(len(c) for row in outs for c in row))
    return {
        "v_hat_q": v_hat, "r_i": r_i, "v_q": truth[0], "v_qs": truth[1], "v_skip": truth[2],
        "segments": segs, "texts": [sampler.text(sg) for sg in segs], "checks": checks,
        "split_points": up.split_points.tolist(), "cut_early": up.cut_early.tolist(), "lengths": lengths,
        "timings": timings, "decoded_tokens": decoded,
    }


def analyse(
    data: dict[str, Any], problems: Sequence[ArithProblem], settings: ImplicitAdvantageSettings
) -> dict[str, Any]:
    """Relations and quality numbers of one model from :func:`collect_model`'s data."""
    adv = data["r_i"] - data["v_hat_q"]  # [N] SKPO's raw upstream advantage
    adv_n = batch_normalized(adv)  # [N] SPO batch normalisation
    dv = data["v_qs"] - data["v_q"]  # [N] true value change of the segment
    dv_skip = data["v_skip"] - data["v_q"]  # [N] what adv estimates
    status = [c.status for c in data["checks"]]
    by_status = {}
    for st in STATUSES:
        idx = torch.tensor([k for k, x in enumerate(status) if x == st], dtype=torch.long)
        by_status[st] = {
            "n": int(idx.numel()),
            "mean_advantage": _mean(adv[idx]),
            "mean_normalized_advantage": _mean(adv_n[idx]),
            "mean_true_value_change": _mean(dv[idx]),
            "mean_skip_value_change": _mean(dv_skip[idx]),
            "mean_r_i": _mean(data["r_i"][idx]),
            "mean_v_qs": _mean(data["v_qs"][idx]),
        }
    good = torch.tensor([x == "error_free" for x in status])
    bad = torch.tensor([x == "wrong_line" for x in status])
    pairs = (("advantage", adv), ("skip_value_change", dv_skip), ("true_value_change", dv))
    separation = {name: auc(values[good], values[bad]) for name, values in pairs}
    # 95% intervals: percentile bootstrap over segments (the advantage is re-normalised per resample
    # only through its ranks/correlations, which batch normalisation does not change).
    n = len(status)
    intervals = {
        "pearson_advantage_vs_true_value_change": bootstrap_ci(lambda i: pearson(adv[i], dv[i]), n),
        "spearman_advantage_vs_true_value_change": bootstrap_ci(lambda i: spearman(adv[i], dv[i]), n),
        "pearson_advantage_vs_skip_value_change": bootstrap_ci(lambda i: pearson(adv[i], dv_skip[i]), n),
        **{f"auc_{name}": bootstrap_ci(lambda i, v=values: auc(v[i][good[i]], v[i][bad[i]]), n)  # type: ignore[misc]  # (a bound default)
           for name, values in pairs},
    }
    with_lines = [c for c in data["checks"] if c.complete_lines > 0]
    se = 0.5 / math.sqrt(settings.k_true)
    return {
        "n_segments": len(status),
        "relation": {
            "pearson_advantage_vs_true_value_change": pearson(adv, dv),
            "spearman_advantage_vs_true_value_change": spearman(adv, dv),
            "pearson_advantage_vs_skip_value_change": pearson(adv, dv_skip),
            "spearman_advantage_vs_skip_value_change": spearman(adv, dv_skip),
            "pearson_skip_value_vs_continual_value": pearson(data["v_skip"], data["v_qs"]),
            "pearson_r_i_vs_skip_value": pearson(data["r_i"], data["v_skip"]),
            "sign_advantage_vs_true_value_change": sign_agreement(adv, dv),
            "sign_normalized_advantage_vs_centred_value_change": sign_agreement(adv_n, dv - dv.mean()),
            "sign_advantage_vs_skip_value_change": sign_agreement(adv, dv_skip),
            "true_value_change_se_bound": math.sqrt(2) * se,
            "advantage_exactly_zero_fraction": float((sign3(adv) == 0).double().mean()),
            "auc_error_free_vs_wrong_line": separation,
            "ci95": intervals,
        },
        "by_segment_status": by_status,
        "quality": {
            "error_free_fraction": sum(x == "error_free" for x in status) / len(status),
            "wrong_line_fraction": sum(x == "wrong_line" for x in status) / len(status),
            "wrong_partial_fraction": sum(x == "wrong_partial" for x in status) / len(status),
            "complete_lines_all_correct_fraction": (
                sum(c.complete_lines_correct for c in with_lines) / len(with_lines) if with_lines else None),
            "segments_without_complete_line": len(status) - len(with_lines),
            "mean_v_qs": _mean(data["v_qs"]),
            "mean_v_skip": _mean(data["v_skip"]),
            "mean_r_i": _mean(data["r_i"]),
            "mean_v_q": _mean(data["v_q"]),
            "mean_v_hat_q": _mean(data["v_hat_q"]),
            "mean_true_value_change": _mean(dv),
            "mean_segment_tokens": sum(len(sg) for sg in data["segments"]) / len(status),
            "mean_split_point": sum(data["split_points"]) / len(status),
            "mean_answer_tokens": sum(data["lengths"]) / len(status),
        },
        "segments": [
            {"question": problems[n].question, "segment": data["texts"][n], "status": status[n],
             "split_point": data["split_points"][n], "r_i": round(float(data["r_i"][n]), 4),
             "v_hat_q": round(float(data["v_hat_q"][n]), 4), "v_q": round(float(data["v_q"][n]), 4),
             "v_qs": round(float(data["v_qs"][n]), 4), "v_skip": round(float(data["v_skip"][n]), 4),
             "advantage": round(float(adv[n]), 4), "normalized_advantage": round(float(adv_n[n]), 4)}
            for n in range(len(status))
        ],
    }


def run(
    models: Sequence[tuple[str, Any, Any]], problems: Sequence[ArithProblem], settings: ImplicitAdvantageSettings,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run every ``(label, model, tokenizer)`` on the same problems and seeds."""
    log = log or (lambda _msg: None)
    per_model = []
    for label, model, tokenizer in models:
        log(f"model {label}")
        data = collect_model(model, tokenizer, problems, settings, log)
        res = analyse(data, problems, settings)
        res["model"] = label
        res["timings"] = {k: round(v, 2) for k, v in data["timings"].items()}
        res["decoded_tokens"] = data["decoded_tokens"]
        per_model.append(res)
    return {"settings": asdict(settings), "n_problems": len(problems), "models": per_model}


_STATUS_STYLE = {"error_free": ("C2", "error-free so far"), "wrong_partial": ("C1", "unfinished line off"),
                 "wrong_line": ("C3", "a wrong complete line")}


def _scatter(ax, res: dict[str, Any]) -> None:
    for st in STATUSES:
        pts = [r for r in res["segments"] if r["status"] == st]
        if pts:
            colour, label = _STATUS_STYLE[st]
            ax.scatter([r["v_qs"] - r["v_q"] for r in pts], [r["normalized_advantage"] for r in pts], s=18,
                       color=colour, alpha=0.75, label=f"{label} ({len(pts)})")
    rel = res["relation"]
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("true value change  V(q + s) − V(q)")
    ax.set_ylabel("SKPO upstream advantage (batch-normalised)")
    rho, r = rel["spearman_advantage_vs_true_value_change"], rel["pearson_advantage_vs_true_value_change"]
    ax.set_title(f"{res['model']}: Pearson {r:.2f}, Spearman {rho:.2f}" if None not in (r, rho) else res["model"],
                 fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def plot(result: dict[str, Any], path: str | Path, dpi: int = 120) -> Path:
    """SKPO's normalised advantage vs the true value change, coloured by segment class (first and
    last model); per model, the AUC with which the advantage (and ``ΔV_skip``, ``ΔV``) ranks
    error-free segments above those with a wrong line; per model, segment quality. Saved as PNG."""
    import matplotlib  # heavy: loaded when a figure is drawn

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    models = result["models"]
    scatters = [models[0]] if len(models) == 1 else [models[0], models[-1]]
    fig = Figure(figsize=(5.0 * (len(scatters) + 2), 4.8), layout="constrained")
    axes = fig.subplots(1, len(scatters) + 2)
    for ax, res in zip(axes, scatters):
        _scatter(ax, res)

    labels = [m["model"] for m in models]
    xs = list(range(len(models)))
    ax = axes[len(scatters)]
    for key, label, style in (("advantage", "SKPO advantage A = R_I − V̂(q)", "-"),
                              ("skip_value_change", "V([s, q]) − V(q) (what A estimates)", "--"),
                              ("true_value_change", "V(q + s) − V(q)", ":")):
        ys = [m["relation"]["auc_error_free_vs_wrong_line"][key] for m in models]
        ys = [math.nan if y is None else y for y in ys]
        cis = [m["relation"]["ci95"][f"auc_{key}"] or [y, y] for m, y in zip(models, ys)]
        ax.errorbar(xs, ys, yerr=[[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]],
                    marker="o", linestyle=style, capsize=3, label=label)
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_xticks(xs, labels, rotation=15, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_title("AUC: error-free segments above wrong-line ones (95% CI)", fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")

    ax2 = axes[len(scatters) + 1]
    series = [
        ("error_free_fraction", "segments error-free"),
        ("complete_lines_all_correct_fraction", "complete lines all right"),
        ("mean_v_qs", "mean V(q + s)"),
        ("mean_r_i", "mean R_I (8 answers from [s, q])"),
        ("mean_v_q", "mean V(q)"),
    ]
    for key, label in series:
        ys = [m["quality"][key] if m["quality"][key] is not None else math.nan for m in models]
        ax2.plot(xs, ys, marker="o", label=label)
    ax2.set_xticks(xs, labels, rotation=15, fontsize="small")
    ax2.set_ylim(0, 1)
    ax2.set_title("segment quality per model", fontsize="medium")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize="small")
    fig.suptitle(f"Implicit advantage of SKPO segments: {models[0]['n_segments']} segments per model, "
                 f"K_true={result['settings']['k_true']}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

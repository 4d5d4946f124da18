"""``skpo analyze``: the pure functions of the three analyses with hand-computed values, and each
command end to end with ``--quick`` on the shipped tiny model."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from skpo.analysis.implicit_advantage import auc, pearson, rankdata, sign_agreement, spearman
from skpo.analysis.mc_accuracy import (
    block_means,
    bootstrap_ci,
    bootstrap_ratio_ci,
    centred_standard_error,
    group_normalize,
    position_bins,
    score_entries,
    sign3,
    step_advantages,
    step_positions,
    token_position,
    value_standard_error,
)
from skpo.analysis.segment_variance import pooled_share, share_summary, variance_components
from skpo.analysis.shortcut import (
    cut_fractions,
    cut_length,
    distinct_answers,
    group_summary,
    paired_difference,
    segment_check,
    zero_advantage,
)
from skpo.tasks.arith import ArithProblem

# ---------------------------------------------------------------------- mc-accuracy: pure


def test_block_means_are_disjoint_block_averages():
    pool = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]])  # M = 9
    # K = 2: blocks (1,0) (1,1) (0,0) (1,0); the ninth sample is unused.
    assert block_means(pool, 2).tolist() == [[0.5, 1.0, 0.0, 0.5]]
    assert block_means(pool, 4).tolist() == [[0.75, 0.25]]
    assert block_means(pool, 9).tolist() == [[5 / 9]]
    with pytest.raises(ValueError):
        block_means(pool, 10)


def test_subsampled_k_estimator_is_unbiased_for_a_known_pool():
    # A pool of 12 rewards with 5 successes: value 5/12.
    pool = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0], dtype=torch.float64)
    for k in (1, 2, 3, 4, 6, 12):
        # Blocks that tile the pool average exactly to its mean …
        assert block_means(pool[None], k).mean().item() == pytest.approx(5 / 12, abs=1e-12)
        # … and a block holding any K of the pool's samples is unbiased: averaged over every
        # K-subset, the estimate is the pool's value (the samples are exchangeable).
        subsets = [block_means(pool[list(c)][None], k).item() for c in itertools.combinations(range(12), k)]
        assert sum(subsets) / len(subsets) == pytest.approx(5 / 12, abs=1e-12)


def test_sign_accuracy_with_a_true_zero():
    est = torch.tensor([[0.2, -0.1, 0.0], [0.0, 0.3, 0.0]])  # [E=2, R=3]
    true = torch.tensor([0.5, 0.0])
    s = score_entries(est, true)
    # Entry 0 (truth +): signs +, −, 0 → 1 of 3 right (an exact-zero estimate is wrong).
    assert s["sign_accuracy"] == pytest.approx(1 / 3)
    # Entry 1 (truth 0): estimates 0, +, 0 → 2 of 3 exactly zero.
    assert s["zero_agreement"] == pytest.approx(2 / 3)
    # Three-way over all six: 1 + 0 + 0 + 1 + 0 + 1 = 3.
    assert s["sign_accuracy_3way"] == pytest.approx(0.5)
    # |0.2−0.5| + |−0.1−0.5| + |0−0.5| + 0 + 0.3 + 0 = 1.7 over 6.
    assert s["mae"] == pytest.approx(1.7 / 6)
    assert s["mae_resolved"] == pytest.approx(1.4 / 3)
    assert (s["true_zero_fraction"], s["n_entries"], s["n_resolved"], s["replicates"]) == (0.5, 2, 1, 3)
    # With the truth's own errors: 0.5 is within 2 × 0.3 of zero, so its sign is not resolved.
    u = score_entries(est, true, true_se=torch.tensor([0.3, 0.1]))
    assert u["sign_accuracy"] is None and u["resolved_fraction"] == 0.0
    assert u["sign_accuracy_nonzero"] == pytest.approx(1 / 3) and u["zero_agreement"] == pytest.approx(2 / 3)
    r = score_entries(est, true, true_se=torch.tensor([0.2, 0.1]))  # 0.5 >= 0.4: resolved
    assert r["sign_accuracy"] == pytest.approx(1 / 3) and r["resolved_fraction"] == 0.5
    assert sign3(torch.tensor([1e-12, -3.0, 0.0, 2.0])).tolist() == [0, -1, 0, 1]
    empty = score_entries(est, true, torch.tensor([False, False]))
    assert empty["sign_accuracy"] is None and empty["n_entries"] == 0


def test_group_normalize_and_step_advantages():
    # mean 0.25, Bessel std sqrt((0.5625 + 3·0.0625)/3) = 0.5
    got = group_normalize(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert got.tolist() == pytest.approx([x / (0.5 + 1e-6) for x in (0.75, -0.25, -0.25, -0.25)])
    assert group_normalize(torch.full((2, 8), 0.3)).abs().max().item() == 0.0  # all-equal group → 0
    assert step_advantages(torch.tensor([0.5, 0.75, 0.0, 0.0])).tolist() == [0.25, -0.75, 0.0]
    assert step_advantages(torch.tensor([[0.5, 1.0], [0.25, 0.0]])).tolist() == [[0.5], [-0.25]]


def test_centred_standard_error_counts_shared_pools_once():
    # G = 4 answers on pools 0, 0, 1, 2 with errors 0.1, 0.2, 0.3.
    got = centred_standard_error([0, 0, 1, 2], torch.tensor([0.1, 0.2, 0.3]))
    # answer 0: coefficients 1 − 2/4, −1/4, −1/4 → 0.25·0.01 + 0.0625·0.04 + 0.0625·0.09
    # answer 2: −2/4, 1 − 1/4, −1/4 → 0.25·0.01 + 0.5625·0.04 + 0.0625·0.09
    want = [math.sqrt(0.010625)] * 2 + [math.sqrt(0.030625), math.sqrt(0.0025 + 0.0025 + 0.050625)]
    assert got.tolist() == pytest.approx(want)
    assert centred_standard_error([3, 3], torch.tensor([0.0, 0.0, 0.0, 0.5])).tolist() == [0.0, 0.0]  # same prefix


def test_bootstrap_intervals():
    # Every unit has ratio 1/2: every resample too.
    assert bootstrap_ratio_ci(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])) == [0.5, 0.5]
    lo, hi = bootstrap_ratio_ci(torch.tensor([0.0, 1.0] * 20), torch.ones(40))
    assert 0.3 < lo < 0.5 < hi < 0.7
    assert bootstrap_ratio_ci(torch.zeros(3), torch.zeros(3)) is None
    d = paired_difference(torch.tensor([1.0, 2.0, 1.5, 1.5]), torch.zeros(4))
    assert d["mean"] == 1.5 and 1.0 <= d["ci95"][0] <= 1.5 <= d["ci95"][1] <= 2.0
    assert bootstrap_ci(lambda i: float(i.double().mean()), 1) is None
    lo, hi = bootstrap_ci(lambda i: float(torch.tensor([0.0, 1.0] * 20)[i].mean()), 40, reps=500)
    assert 0.3 < lo < 0.5 < hi < 0.7


def test_positions_bins_and_standard_error():
    assert step_positions(4).tolist() == [0.125, 0.375, 0.625, 0.875]
    assert position_bins(step_positions(4)).tolist() == [0, 1, 3, 4]
    assert position_bins(torch.tensor([0.0, 0.2, 0.999, 1.0])).tolist() == [0, 1, 4, 4]
    got = [token_position(0.1, 33), token_position(0.9, 33), token_position(0.9, 2), token_position(0.5, 1)]
    assert got == [3, 30, 1, 0]
    assert value_standard_error(torch.tensor([0.5, 0.0]), 256).tolist() == [pytest.approx(1 / 32), 0.0]
    # Laplace-smoothed: 0/256 → Ṽ = 1/258
    smoothed = value_standard_error(torch.tensor([0.0]), 256, smoothed=True).item()
    assert smoothed == pytest.approx(math.sqrt((1 / 258) * (257 / 258) / 256))


# ---------------------------------------------------------------------- shortcut: pure


def test_cut_positions():
    assert cut_fractions(6) == pytest.approx([1 / 6, 7 / 30, 3 / 10, 11 / 30, 13 / 30, 1 / 2])
    assert cut_length(1 / 6, 33) == 6  # 5.5 rounds up
    assert cut_length(0.5, 33) == 17
    assert cut_length(0.01, 10) == 1  # at least one token
    assert cut_length(0.5, 2) == 1 and cut_length(0.5, 1) == 0  # never the EOS


def test_diversity_and_zero_advantage():
    assert distinct_answers([5, 5, None, 7, None]) == 3  # "no answer" is one value
    assert zero_advantage([True] * 8) and zero_advantage([False] * 8) and not zero_advantage([True, False])
    correct = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    answers = [[5, 5, 5, 5], [5, 3, None, None]]
    lengths = torch.tensor([[10, 10, 10, 10], [12, 8, 6, 4]])
    s = group_summary(correct, answers, lengths)
    assert s == {"diversity": 2.0, "zero_advantage_rate": 0.5, "mean_length": 8.75, "accuracy": 5 / 8, "n_groups": 2}


def test_segment_check_is_exact():
    problem = ArithProblem.from_question("37+48-12")  # 37+48=85, 85-12=73, Answer: 73
    cases = {
        "37+48=85\n85-1": ("error_free", 1, 1),
        "37+48=85\n85-12=7": ("error_free", 1, 1),
        "37+48=84\n84-": ("wrong_line", 1, 0),
        "37+48=9": ("wrong_partial", 0, 0),
        "37+48=85\n85-12=73\nAnswer: 7": ("error_free", 2, 2),
        # All three lines right, but a newline where the reference ends (EOS): off the reference.
        "37+48=85\n85-12=73\nAnswer: 73\n": ("wrong_partial", 3, 3),
        "37+48=85\n85-12=73\nAnswer: 72\n": ("wrong_line", 3, 2),
        "37+48=85\n\n": ("wrong_line", 2, 1),
        "": ("error_free", 0, 0),
    }
    for text, (status, complete, correct) in cases.items():
        c = segment_check(text, problem)
        assert (c.status, c.complete_lines, c.correct_lines) == (status, complete, correct), text


# ---------------------------------------------------------------------- implicit advantage: pure


def test_correlations_and_sign_agreement():
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])) == pytest.approx(1.0)
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])) is None
    assert rankdata(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    # ranks x: 1,2,3,4; y: 1.5,1.5,3,4 → Pearson of ranks
    xr, yr = torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.5, 1.5, 3, 4])
    rho = spearman(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.0, 0.0, 1.0, 2.0]))
    assert rho == pytest.approx(pearson(xr, yr))
    s = sign_agreement(torch.tensor([0.5, -0.2, 0.0, 0.1]), torch.tensor([0.3, 0.1, 0.0, 0.0]))
    # non-zero truths: entries 0 (+,+ right) and 1 (−,+ wrong); three-way adds 2 (0,0 right), 3 (+,0 wrong)
    assert s == {"nonzero": 0.5, "three_way": 0.5, "n_nonzero": 2}
    # pairs (positive, negative): (0.5, 0.1) >, (0.5, 0.5) =, (0.2, 0.1) >, (0.2, 0.5) < → (2 + 0.5) / 4
    assert auc(torch.tensor([0.5, 0.2]), torch.tensor([0.1, 0.5])) == pytest.approx(0.625)
    assert auc(torch.tensor([1.0]), torch.tensor([])) is None


# ---------------------------------------------------------------------- segment-variance: pure


def test_variance_components_by_hand():
    # problem 0: segment A always right, segment B always wrong -> all variance between segments
    # problem 1: both segments half right -> all variance within
    r = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [P=2, M=2, K=2]
    between, within, spread = variance_components(r)
    # p0: within 0, spread var([1, 0]) = 0.5, between 0.5; p1: within var([1,0]) = 0.5, spread 0, between -0.25
    assert between.tolist() == [0.5, -0.25] and within.tolist() == [0.0, 0.5] and spread.tolist() == [0.5, 0.0]
    assert pooled_share(between, within) == pytest.approx(0.25 / 0.75)
    s = share_summary(r, reps=200)
    assert s["share"] == pytest.approx(1 / 3) and s["share_uncorrected"] == pytest.approx(0.5)
    assert s["mean_problem_share"] == pytest.approx((1.0 + -1.0) / 2) and s["problems_with_variance"] == 2
    lo, hi = s["share_ci95"]
    assert lo <= s["share"] <= hi
    # all right or all wrong adds nothing; an undefined share is None
    assert pooled_share(*variance_components(torch.ones(3, 2, 4))[:2]) is None
    with pytest.raises(ValueError):
        variance_components(torch.ones(2, 1, 4))


def test_segment_share_recovers_a_known_split_of_the_variance():
    # V(s) ~ Bernoulli(0.5) over segments in {0.2, 0.8}; rewards ~ Bernoulli(V(s)).
    # Var of the value = 0.09, mean within variance = 0.16: true share 0.09 / 0.25 = 0.36.
    g = torch.Generator().manual_seed(0)
    value = torch.where(torch.rand(400, 16, 1, generator=g) < 0.5, 0.2, 0.8)
    r = (torch.rand(400, 16, 32, generator=g) < value).double()
    s = share_summary(r, reps=200)
    assert s["share"] == pytest.approx(0.36, abs=0.03)
    assert s["share_uncorrected"] > s["share"]  # the segment means carry within-noise / K


# ---------------------------------------------------------------------- commands end to end


def _run(analysis: str, out, *extra: str) -> dict:
    from skpo.cli import main

    assert main(["analyze", analysis, "--quick", "--out", str(out), "--threads", "1", *extra]) == 0
    name = analysis.replace("-", "_")
    assert (out / f"{name}.png").stat().st_size > 10_000
    record = json.loads((out / f"{name}.json").read_text())
    assert record["command"] == ["skpo", "analyze", analysis, "--quick", "--out", str(out), "--threads", "1", *extra]
    assert record["quick"] is True and record["runtime_s"] > 0 and record["model_args"][0] == "tiny-arith"
    return record


def _in(x, lo: float, hi: float) -> bool:
    return x is not None and math.isfinite(x) and lo <= x <= hi


def test_mc_accuracy_quick(tmp_path):
    rec = _run("mc-accuracy", tmp_path)
    s, r = rec["settings"], rec["results"]
    assert (s["problems"], s["group_size"], s["k_true"], s["k_est"]) == (2, 4, 16, 8)
    assert r["n_answers"] == 8 and sum(r["problems_by_n_correct"]) == 2
    assert _in(r["truth"]["max_se"], 0, 0.5 / math.sqrt(16) + 1e-12)
    for reading in ("vineppo", "group_relative"):
        t = r[reading]
        assert set(t["by_k"]) == {"1", "2", "4", "8"}
        for k, row in t["by_k"].items():
            assert row["replicates"] == 8 // int(k)
            assert _in(row["sign_accuracy_3way"], 0, 1) and _in(row["mae"], 0, 10)
            assert row["sign_accuracy"] is None or _in(row["sign_accuracy"], 0, 1)
            assert sum(b["n_entries"] for b in t["by_k_bin"][k]) == row["n_entries"]
        assert _in(t["grpo"]["all"]["sign_accuracy_3way"], 0, 1)
        row = t["by_k"]["4"]
        lo, hi = row["mae_ci95"]
        assert lo - 1e-9 <= row["mae"] <= hi + 1e-9
    assert r["group_relative"]["n_entries"] == 2 * 4 * 5  # problems × G × token positions
    # VinePPO entries: one per step of every answer.
    assert r["vineppo"]["n_entries"] == sum(len(a["step_prefix_lengths"]) for a in r["answers"])
    assert all(_in(v, 0, 1) for a in r["answers"] for v in a["step_values_true"])


def test_shortcut_quick(tmp_path):
    rec = _run("shortcut", tmp_path)
    r = rec["results"]
    assert len(r["fractions"]) == 6 and r["n_problems"] == 3
    for name in ("unconditional", "continual", "skip"):
        for row in r["conditionings"][name]["by_position"]:
            assert _in(row["diversity"], 1, 4) and _in(row["zero_advantage_rate"], 0, 1)
            assert _in(row["accuracy"], 0, 1) and _in(row["mean_length"], 0, 100) and row["n_groups"] == 3
    assert _in(r["conditionings"]["skip"]["starts_with_segment"]["all"], 0, 1)
    # A continual answer excludes the prefix it continues: shorter than a fresh one on average.
    lengths = {name: r["conditionings"][name]["all"]["mean_length"] for name in ("continual", "unconditional")}
    assert lengths["continual"] < lengths["unconditional"]


def test_implicit_advantage_quick_two_models(tmp_path):
    from skpo.models.loading import tiny_arith_dir

    rec = _run("implicit-advantage", tmp_path, "--models", f"tiny-arith,{tiny_arith_dir()}")
    r = rec["results"]
    assert len(r["models"]) == 2 and rec["settings"]["segments"] == 3
    for m in r["models"]:
        q = m["quality"]
        assert all(_in(q[k], 0, 1) for k in ("error_free_fraction", "mean_v_qs", "mean_r_i", "mean_v_q", "mean_v_skip"))
        assert m["n_segments"] == 3 and len(m["segments"]) == 3
        assert sum(v["n"] for v in m["by_segment_status"].values()) == 3
        for seg in m["segments"]:
            assert _in(seg["advantage"], -1, 1) and seg["status"] in ("error_free", "wrong_partial", "wrong_line")
    # Same model, same seeds: the same numbers.
    assert r["models"][0]["segments"] == r["models"][1]["segments"]


def test_segment_variance_quick_arith_and_countdown_side_by_side(tmp_path):
    rec = _run("segment-variance", tmp_path, "--models", "tiny-arith,tiny-countdown")
    r = rec["results"]["models"]
    assert list(r) == ["tiny-arith", "tiny-countdown"]
    assert [t["task_name"] for t in rec["tasks"]] == ["arith", "countdown"]
    for m in r.values():
        assert m["n_problems"] == 3 and _in(m["plain_accuracy"], 0, 1)
        assert 0 < m["mean_segment_tokens"] < m["mean_answer_tokens"]
        for kind in ("continual", "skip"):
            row = m[kind]
            assert _in(row["accuracy"], 0, 1) and _in(row["within"], 0, 0.5)
            assert row["share"] is None or _in(row["share"], -10, 1)


def test_mc_accuracy_quick_on_countdown(tmp_path):
    from skpo.cli import main

    assert main(["analyze", "mc-accuracy", "--quick", "--model", "tiny-countdown", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "mc_accuracy.json").read_text())
    assert record["task_name"] == "countdown" and record["task"]["max_numbers"] == 4
    r = record["results"]
    assert r["n_answers"] == 8 and sum(r["problems_by_n_correct"]) == 2
    # VinePPO entries: one per move line (newline-ended step) of every answer
    assert r["vineppo"]["n_entries"] == sum(len(a["step_prefix_lengths"]) for a in r["answers"])


def test_arith_only_analyses_refuse_a_countdown_model(tmp_path, capsys):
    from skpo.cli import main

    assert main(["analyze", "shortcut", "--quick", "--model", "tiny-countdown", "--out", str(tmp_path)]) == 2
    assert "countdown model" in capsys.readouterr().err


def test_analyze_rejects_a_missing_model(tmp_path, capsys):
    from skpo.cli import main

    assert main(["analyze", "shortcut", "--quick", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err

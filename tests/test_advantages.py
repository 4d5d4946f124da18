"""Advantage estimators: hand-computed values and properties."""

from __future__ import annotations

import math

import pytest
import torch

from skpo.algorithms import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    batch_normalized,
    dapo_group_filter,
    group_normalized_scores,
    mc_step_advantages,
    oar_bilevel_weights,
)


def run(name, batch, **params):
    entry = ADVANTAGE_ESTIMATORS.get(name)
    return entry.fn(batch, entry.make_params(params))


def outcome_batch(scores, index, t=4, lengths=None):
    scores = torch.tensor(scores, dtype=torch.float32)
    b = len(scores)
    lengths = torch.tensor(lengths or [t] * b)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    rewards = torch.zeros(b, t)
    rewards[torch.arange(b), lengths - 1] = scores
    return AdvantageInputs(rewards, mask, index)


def test_grpo_hand_computed():
    # group a: [1, 0, 0, 1] → mean .5, Bessel std sqrt(1/3); group b: [1, 1] → all equal
    batch = outcome_batch([1, 0, 0, 1, 1, 1], ["a"] * 4 + ["b"] * 2, lengths=[4, 2, 3, 1, 4, 4])
    adv = run("grpo", batch)
    z = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    expected_rows = torch.tensor([z, -z, -z, z, 0, 0])
    torch.testing.assert_close(adv[:, 0], expected_rows)
    # broadcast to the valid tokens only
    assert adv[1, 2:].abs().sum() == 0 and adv[1, :2].eq(-z).all()
    assert torch.equal(adv != 0, batch.response_mask.bool() & (expected_rows != 0)[:, None])


def test_dr_grpo_no_std():
    batch = outcome_batch([1, 0, 0, 0], ["a"] * 4)
    torch.testing.assert_close(run("grpo", batch, norm_by_std=False)[:, 0], torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_group_advantages_sum_to_zero_and_all_equal_groups_are_zero():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 2, (64,), generator=g).float()
    index = [i // 8 for i in range(64)]
    scores[:8] = 1.0
    scores[8:16] = 0.0
    for norm in (True, False):
        adv = group_normalized_scores(scores, index, norm_by_std=norm)
        assert torch.isfinite(adv).all()
        sums = torch.zeros(8).index_add_(0, torch.tensor(index), adv)
        torch.testing.assert_close(sums, torch.zeros(8), atol=1e-5, rtol=0)
        assert adv[:16].eq(0).all()


def test_grpo_singleton_is_raw_reward_like_verl():
    adv = group_normalized_scores(torch.tensor([0.7, 1.0, 0.0]), ["solo", "g", "g"])
    assert adv[0].item() == pytest.approx(0.7 / (1 + 1e-6))


def test_grpo_index_types_equivalent():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0])
    a = group_normalized_scores(scores, ["x", "x", "y", "y"])
    b = group_normalized_scores(scores, torch.tensor([3, 3, 7, 7]))
    c = group_normalized_scores(scores, [(0, "s"), (0, "s"), (1, "s"), (1, "s")])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_rloo_hand_computed():
    batch = outcome_batch([1, 0, 0, 1], ["a"] * 4)
    # r_i − mean of the other three
    torch.testing.assert_close(run("rloo", batch)[:, 0], torch.tensor([1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3]))


def test_bnpo_reduces_to_density_scaled_baseline():
    # two groups with p̂ = .25 and .75 in [0,1]: μ = .5, σ² = 1/16 → a = b = (4 − 1)·.5 = 1.5
    # α = β = 1 + 1.5/3 = 1.5 → f(p) = sqrt(p(1−p)) / B(1.5, 1.5), B(1.5, 1.5) = π/8
    batch = outcome_batch([1, 0, 0, 0, 1, 1, 1, 0], ["a"] * 4 + ["b"] * 4)
    adv = run("bnpo", batch, reward_min=0.0, reward_max=1.0)[:, 0]
    f = math.sqrt(0.25 * 0.75) / (math.pi / 8)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75]) / f
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-6)


def test_skpo_downstream_groups_by_prompt_and_segment():
    # same prompt, two different segments → two groups of two
    batch = outcome_batch([1, -1, 1, 1], ["q"] * 4)
    batch.segment_index = ["s0", "s0", "s1", "s1"]
    adv = run("skpo_downstream", batch)[:, 0]
    z = 1 / (math.sqrt(2) + 1e-6)
    torch.testing.assert_close(adv, torch.tensor([z, -z, 0.0, 0.0]))
    # the trainer passes the rollout's group ids in index: (prompt, segment) pairs, the same groups
    paired = outcome_batch([1, -1, 1, 1], [("q", "s0"), ("q", "s0"), ("q", "s1"), ("q", "s1")])
    torch.testing.assert_close(run("skpo_downstream", paired)[:, 0], adv)


def test_skpo_upstream_uses_pre_update_baseline_and_batch_norm():
    batch = outcome_batch([0.5, -0.25, 1.0], ["a", "b", "c"])
    batch.baseline = torch.tensor([0.0, 0.25, 0.5])
    raw = torch.tensor([0.5, -0.5, 0.5])
    expected = (raw - raw.mean()) / (raw.std() + 1e-6)
    torch.testing.assert_close(run("skpo_upstream", batch)[:, 0], expected)
    torch.testing.assert_close(run("skpo_upstream", batch, normalize=False)[:, 0], raw)
    assert batch_normalized(torch.tensor([3.0])).item() == 0.0


def test_mc_step_advantages_hand_computed():
    # row 0: V(s0)=.5, V(s1)=.8, V(s2)=.6, outcome 1 → A = [.3, −.2, .4]
    # row 1: two steps V=.4, .0, outcome 0 → A = [−.4, 0]
    values = torch.tensor([[0.5, 0.8, 0.6], [0.4, 0.0, 9.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = mc_step_advantages(values, mask, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(adv, torch.tensor([[0.3, -0.2, 0.4], [-0.4, 0.0, 0.0]]))


def test_mc_step_estimator_broadcasts_to_step_tokens():
    batch = outcome_batch([1.0], ["a"], t=5)
    batch.step_values = torch.tensor([[0.5, 0.8, 0.6]])
    batch.step_mask = torch.ones(1, 3)
    batch.token_step_index = torch.tensor([[0, 0, 1, 2, 2]])
    torch.testing.assert_close(run("mc_step", batch), torch.tensor([[0.3, 0.3, -0.2, 0.4, 0.4]]))


def test_oar_weights_hand_computed():
    imp = torch.tensor([[math.e - 1, 0.0, math.e**2 - 1, math.e**4 - 1, 0.0]])  # log1p → 1, 0, 2, 4
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    w = oar_bilevel_weights(imp, mask, mass_preserving=False)
    # n = [.25, 0, .5, 1]; τ = quantile_.25 = .1875
    tau = 0.1875
    expected = [1 + (0.25 - tau) / (1 - tau), 0.1, 1 + (0.5 - tau) / (1 - tau), 2.0, 1.0]
    torch.testing.assert_close(w, torch.tensor([expected]), rtol=1e-5, atol=1e-6)


def test_oar_weights_mass_preserving_and_bounds():
    g = torch.Generator().manual_seed(1)
    imp = torch.rand(6, 20, generator=g) ** 3 * 10
    lengths = torch.tensor([20, 13, 5, 1, 0, 8])
    mask = (torch.arange(20)[None] < lengths[:, None]).float()
    w = oar_bilevel_weights(imp, mask, mass_preserving=True)
    torch.testing.assert_close((w * mask).sum(-1), lengths.float(), rtol=1e-5, atol=1e-5)
    assert (w[mask == 0] == 1).all()
    raw = oar_bilevel_weights(imp, mask, mass_preserving=False)
    assert raw[mask.bool()].min() >= 0.1 - 1e-6 and raw[mask.bool()].max() <= 2.0 + 1e-6


def test_oar_advantage_is_grpo_times_weights():
    batch = outcome_batch([1, 0], ["a", "a"], t=3)
    batch.token_weights = torch.tensor([[0.5, 1.0, 2.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(run("oar", batch), run("grpo", batch) * batch.token_weights)


def test_dapo_filter_drops_all_equal_groups():
    keep = dapo_group_filter(torch.tensor([1.0, 1, 0, 1, 0, 0, 1]), ["a", "a", "b", "b", "c", "c", "d"])
    assert keep.tolist() == [False, False, True, True, False, False, False]


def test_unknown_estimator_and_params_named():
    with pytest.raises(KeyError, match="nope"):
        ADVANTAGE_ESTIMATORS.get("nope")
    with pytest.raises(ValueError, match="epsilonn"):
        ADVANTAGE_ESTIMATORS.get("grpo").make_params({"epsilonn": 1})
    with pytest.raises(ValueError, match="baseline"):
        run("spo", outcome_batch([1.0], ["a"]))

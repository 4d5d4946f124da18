"""Per-prompt trackers: hand-computed updates, readings as switches, exact save/restore."""

from __future__ import annotations

import json
import math

import pytest
import torch

from skpo.algorithms import LengthTracker, ValueTracker, prioritized_sample, prioritized_weights


def test_value_tracker_first_observation_overwrites_prior():
    tr = ValueTracker()
    assert tr.baseline(["q"]).item() == 0.0  # 0 in reward space = 0.5 in [0, 1]
    tr.update(["q"], [-0.5], kls=[0.0])
    assert tr.baseline(["q"]).item() == pytest.approx(-0.5)
    assert tr.count("q") == 1.0


def test_value_tracker_hand_computed_kl_adaptive_update():
    tr = ValueTracker()
    tr.update(["q"], [1.0], kls=[0.0])  # v = 1.0 (unit), N = 1
    # KL = 0 → 2^0 = 1 → clipped to ρ_max = 0.96; η = 1/(0.96·1 + 1)
    tr.update(["q"], [-1.0], kls=[0.0])
    eta = 1 / (0.96 + 1)
    v = 1.0 + eta * (0.0 - 1.0)
    assert tr.get("q") == pytest.approx(v)
    assert tr.count("q") == pytest.approx(0.96 + 1)
    assert tr.baseline(["q"]).item() == pytest.approx(2 * v - 1, rel=1e-6)
    # a large KL → 2^(−KL/8) small → clipped at ρ_min
    assert tr.rho("q", kl=100.0) == 0.875
    assert tr.rho("q", kl=8 * math.log2(1 / 0.9)) == pytest.approx(0.9)


def test_steps_reading_of_half_life():
    tr = ValueTracker(rho_mode="steps")
    tr.update(["q"], [1.0], step=0)
    assert tr.rho("q", step=1) == pytest.approx(2 ** (-1 / 8))
    assert tr.rho("q", step=100) == 0.875
    with pytest.raises(ValueError, match="step"):
        tr.rho("q")
    with pytest.raises(ValueError, match="KL"):
        ValueTracker().update(["q"], [1.0])


def test_prior_as_pseudo_observation_switch():
    tr = ValueTracker(overwrite_first=False)
    tr.update(["q"], [1.0], kls=[0.0])  # N0 = 1: η = 1/(0.96 + 1), from 0.5 toward 1
    assert tr.get("q") == pytest.approx(0.5 + 0.5 / 1.96)


def test_tracker_converges_to_mean_reward():
    tr = ValueTracker()
    g = torch.Generator().manual_seed(0)
    rewards = (torch.rand(4000, generator=g) < 0.3).float() * 2 - 1
    for r in rewards.tolist():
        tr.update(["q"], [r], kls=[0.0])
    assert abs(tr.baseline(["q"]).item() - (-0.4)) < 0.25  # window of ~25 observations


def test_state_round_trip_is_exact_through_json():
    tr = ValueTracker(rho_mode="steps")
    ln = LengthTracker(initial=40)
    g = torch.Generator().manual_seed(1)
    keys = ["a", 3, ("p", 7), "b"]
    for step in range(30):
        k = [keys[i] for i in torch.randint(0, 4, (3,), generator=g).tolist()]
        tr.update(k, (torch.rand(3, generator=g) * 2 - 1).tolist(), step=step)
        ln.update(k, (torch.rand(3, generator=g) * 60).tolist(), kls=torch.rand(3, generator=g).tolist())
    tr2, ln2 = ValueTracker(rho_mode="steps"), LengthTracker(initial=40)
    tr2.load_state_dict(json.loads(json.dumps(tr.state_dict())))
    ln2.load_state_dict(json.loads(json.dumps(ln.state_dict())))
    assert tr2.state_dict() == tr.state_dict() and ln2.state_dict() == ln.state_dict()
    # identical future behaviour
    for a, b in ((tr, tr2),):
        a.update(keys, [0.1, 0.2, 0.3, 0.4], step=31)
        b.update(keys, [0.1, 0.2, 0.3, 0.4], step=31)
        assert a.baseline(keys).tolist() == b.baseline(keys).tolist()
    with pytest.raises(ValueError, match="config"):
        ValueTracker(rho_max=0.9).load_state_dict(tr.state_dict())


def test_length_tracker_split_range_and_sampling():
    ln = LengthTracker(initial=1024)
    assert ln.split_range("q") == (171, 512)  # ⌈1024/6⌉, ⌊1024/2⌋
    ln.update(["q"], [60], kls=[0.0])  # first observation overwrites
    assert ln.split_range("q") == (10, 30)
    g = torch.Generator().manual_seed(0)
    draws = [ln.sample_split(["q"], g)[0] for _ in range(2000)]
    assert min(draws) == 10 and max(draws) == 30
    ln.update(["tiny"], [1], kls=[0.0])
    assert ln.split_range("tiny") == (1, 1)


def test_prioritized_weights_and_sampling():
    w = prioritized_weights(torch.tensor([0.0, 0.5, 1.0, 0.1]))
    torch.testing.assert_close(w, torch.tensor([0.05, 0.55, 0.05, 0.3 + 0.05], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    idx = prioritized_sample(w, 2000, generator=g, replacement=True)
    freq = torch.bincount(idx, minlength=4).double() / 2000
    torch.testing.assert_close(freq, w / w.sum(), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="distinct"):
        prioritized_sample(w, 5)

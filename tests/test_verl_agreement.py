"""Agreement with verl 0.9.1 ``core_algos`` on random inputs, for every estimator and loss
both implement. verl is installed as a test-only oracle (``make install``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# No importorskip: a missing oracle must fail the suite, not silently skip it.
from verl.trainer.ppo import core_algos
from verl.utils import torch_functional as verl_F
from verl.workers.config.actor import ActorConfig, PolicyLossConfig

from skpo.algorithms import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, PolicyLossInputs, agg_loss, kl_penalty
from skpo.algorithms.stats import entropy_from_logits

pytestmark = pytest.mark.verl

SEEDS = range(5)


def verl_actor_config(**kw) -> ActorConfig:
    policy_loss = PolicyLossConfig(**kw.pop("policy_loss", {}))
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss, **kw)


def random_batch(seed: int, groups: int = 6, group_size: int = 5, t: int = 9):
    g = torch.Generator().manual_seed(seed)
    b = groups * group_size
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    scores = torch.randint(0, 2, (b,), generator=g).float() * 2 - 1
    scores[:group_size] = 1.0  # one all-equal group
    rewards = torch.zeros(b, t)
    rewards[torch.arange(b), lengths - 1] = scores
    index = np.array([f"p{i // group_size}" for i in range(b)], dtype=object)
    index[-1] = "singleton"
    old = -torch.rand(b, t, generator=g) * 3
    cur = old + torch.randn(b, t, generator=g) * 0.3
    adv = torch.randn(b, t, generator=g) * mask
    return rewards, mask, index, old, cur, adv


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_matches_verl(seed, norm_by_std):
    rewards, mask, index, *_ = random_batch(seed)
    ours = ADVANTAGE_ESTIMATORS.get("grpo")
    mine = ours.fn(AdvantageInputs(rewards, mask, index), ours.make_params({"norm_by_std": norm_by_std}))
    theirs, _ = core_algos.compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm_by_std)
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_rloo_matches_verl(seed):
    rewards, mask, index, *_ = random_batch(seed)
    ours = ADVANTAGE_ESTIMATORS.get("rloo")
    mine = ours.fn(AdvantageInputs(rewards, mask, index), ours.make_params())
    theirs, _ = core_algos.compute_rloo_outcome_advantage(rewards, mask, index)
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_agg_loss_matches_verl(seed, mode):
    _, mask, _, _, cur, _ = random_batch(seed)
    mask[3] = 0  # a fully masked row is excluded from the sequence count in both
    torch.testing.assert_close(agg_loss(cur, mask, mode), core_algos.agg_loss(cur, mask, mode), rtol=1e-6, atol=1e-6)


def _compare_loss(name, params, verl_name, verl_config, seed, agg="token-mean"):
    _, mask, _, old, cur, adv = random_batch(seed)
    cur_a = cur.clone().requires_grad_(True)
    cur_b = cur.clone().requires_grad_(True)
    entry = POLICY_LOSSES.get(name)
    out = entry.fn(PolicyLossInputs(cur_a, old, adv, mask), entry.make_params(params))
    mine = agg_loss(out.loss_mat, mask, agg)
    theirs, metrics = core_algos.get_policy_loss_fn(verl_name)(old, cur_b, adv, mask, agg, verl_config)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    mine.backward()
    theirs.backward()
    torch.testing.assert_close(cur_a.grad, cur_b.grad, rtol=1e-5, atol=1e-7)
    return out.metrics, metrics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_ppo_clip_dual_clip_matches_verl_vanilla(seed, agg):
    cfg = verl_actor_config(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    mine, theirs = _compare_loss("ppo_clip", {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0}, "vanilla", cfg, seed, agg)
    assert mine["clipfrac"].item() == pytest.approx(theirs["actor/pg_clipfrac"], abs=1e-6)
    assert mine["clipfrac_dual"].item() == pytest.approx(theirs["actor/pg_clipfrac_lower"], abs=1e-6)
    assert mine["approx_kl"].item() == pytest.approx(theirs["actor/ppo_kl"], abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_cispo_matches_verl(seed):
    cfg = verl_actor_config(clip_ratio_low=0.2, clip_ratio_high=0.28)
    _compare_loss("cispo", {"clip_low": 0.2, "clip_high": 0.28}, "cispo", cfg, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_gspo_matches_verl(seed):
    cfg = verl_actor_config(clip_ratio_low=3e-4, clip_ratio_high=4e-4)
    _compare_loss("gspo", {}, "gspo", cfg, seed, agg="seq-mean-token-mean")


@pytest.mark.parametrize("seed", SEEDS)
def test_sapo_matches_verl(seed):
    cfg = verl_actor_config(tau_pos=1.0, tau_neg=1.05)
    # verl forces seq-mean-token-mean for SAPO whatever mode it is given
    _compare_loss("sapo", {}, "sapo", cfg, seed, agg="seq-mean-token-mean")


@pytest.mark.parametrize("seed", SEEDS)
def test_clip_cov_matches_verl(seed):
    # a large ratio and a wide covariance window so that many tokens are cut; same RNG stream
    cfg = verl_actor_config(clip_ratio_low=0.2, clip_ratio_high=0.2,
                            policy_loss={"clip_cov_ratio": 0.1, "clip_cov_lb": -5.0, "clip_cov_ub": 5.0})
    _, mask, _, old, cur, adv = random_batch(seed)
    params = {"ratio": 0.1, "cov_low": -5.0, "cov_high": 5.0, "seed": 1234 + seed}
    entry = POLICY_LOSSES.get("clip_cov")
    out = entry.fn(PolicyLossInputs(cur, old, adv, mask), entry.make_params(params))
    torch.manual_seed(1234 + seed)
    theirs, metrics = core_algos.get_policy_loss_fn("clip_cov")(old, cur, adv, mask, "token-mean", cfg)
    torch.testing.assert_close(agg_loss(out.loss_mat, mask, "token-mean"), theirs, rtol=1e-5, atol=1e-6)
    assert out.metrics["clipfrac"].item() == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-6)
    assert out.metrics["clipfrac"].item() > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_cov_matches_verl(seed):
    cfg = verl_actor_config(policy_loss={"kl_cov_ratio": 0.1, "ppo_kl_coef": 1.0})
    _compare_loss("kl_cov", {"ratio": 0.1, "kl_coef": 1.0}, "kl_cov", cfg, seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind,verl_kind", [("k1", "k1"), ("k2", "k2"), ("k3", "low_var_kl"), ("abs", "abs"), ("k3+", "k3+"), ("k1+", "k1+")])
def test_kl_estimators_match_verl(seed, kind, verl_kind):
    _, _, _, old, cur, _ = random_batch(seed)
    a = cur.clone().requires_grad_(True)
    b = cur.clone().requires_grad_(True)
    mine, theirs = kl_penalty(a, old, kind), core_algos.kl_penalty(b, old, verl_kind)
    torch.testing.assert_close(mine, theirs)
    mine.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_entropy_matches_verl():
    logits = torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=4), verl_F.entropy_from_logits(logits), rtol=1e-5, atol=1e-6)


def test_reinforce_matches_verl():
    _, mask, _, old, cur, adv = random_batch(0)
    cfg = verl_actor_config()
    a = cur.clone().requires_grad_(True)
    b = cur.clone().requires_grad_(True)
    entry = POLICY_LOSSES.get("reinforce")
    mine = agg_loss(entry.fn(PolicyLossInputs(a, old, adv, mask), entry.make_params()).loss_mat, mask, "seq-mean-token-sum")
    theirs, _ = core_algos.compute_policy_loss_reinforce(old, b, adv, mask, "seq-mean-token-sum", cfg)
    torch.testing.assert_close(mine, theirs)
    mine.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad)

"""Policy losses, aggregation, KL and entropy: hand values, gradients, masking, micro-batching."""

from __future__ import annotations

import math

import pytest
import torch

from skpo.algorithms import (
    POLICY_LOSSES,
    AggDenominators,
    PolicyLossInputs,
    agg_loss,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
)


def loss_of(name, inputs, **params):
    entry = POLICY_LOSSES.get(name)
    return entry.fn(inputs, entry.make_params(params))


def one_token(log_ratio: float, adv: float):
    old = torch.tensor([[-1.0]])
    cur = (old + log_ratio).requires_grad_(True)
    return PolicyLossInputs(cur, old, torch.tensor([[adv]]), torch.ones(1, 1)), cur


@pytest.mark.parametrize(
    "ratio,adv,expected,grad_flows",
    [
        (1.1, 1.0, -1.1, True),  # inside the clip range
        (1.5, 1.0, -1.28, False),  # A > 0 above 1 + ε_high: clipped, no gradient
        (0.5, 1.0, -0.5, True),  # A > 0 below 1 − ε: min picks the unclipped term
        (0.5, -1.0, 0.8, False),  # A < 0 below 1 − ε: clipped at 0.8
        (2.0, -1.0, 2.0, True),  # A < 0 above: unclipped (pessimistic)
        (5.0, -1.0, 3.0, False),  # dual clip caps −A·r at −A·c = 3
    ],
)
def test_ppo_clip_hand_values(ratio, adv, expected, grad_flows):
    inputs, cur = one_token(math.log(ratio), adv)
    out = loss_of("ppo_clip", inputs, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert out.loss_mat.item() == pytest.approx(expected, rel=1e-5)
    out.loss_mat.sum().backward()
    assert (cur.grad.abs().item() > 0) == grad_flows


def test_ppo_without_dual_clip_is_unbounded():
    inputs, _ = one_token(math.log(5.0), -1.0)
    assert loss_of("ppo_clip", inputs, dual_clip=None).loss_mat.item() == pytest.approx(5.0, rel=1e-5)
    with pytest.raises(ValueError, match="dual_clip"):
        POLICY_LOSSES.get("ppo_clip").make_params({"dual_clip": 0.5})


def test_cispo_gradient_is_clipped_ratio_times_advantage_times_grad_logp():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=g) * 2
    cur = (old + torch.randn(4, 6, generator=g) * 0.4).requires_grad_(True)
    adv = torch.randn(4, 6, generator=g)
    mask = torch.ones(4, 6)
    out = loss_of("cispo", PolicyLossInputs(cur, old, adv, mask), clip_low=0.2, clip_high=0.28)
    out.loss_mat.sum().backward()
    ratio = torch.exp(cur.detach() - old)
    # d/dθ of −sg(clip r)·A·log π with log π as the parameter: −clip(r)·A
    torch.testing.assert_close(cur.grad, -ratio.clamp(0.8, 1.28) * adv)
    assert 0 < out.metrics["clipfrac"].item() < 1


def test_cispo_upper_clamp_variant():
    inputs, cur = one_token(math.log(0.3), 1.0)
    two = loss_of("cispo", inputs, clip_low=0.2, clip_high=0.28)
    upper = loss_of("cispo", inputs, clip_high=5.0, clamp="upper")
    assert two.loss_mat.item() == pytest.approx(-0.8 * cur.item(), rel=1e-5)  # floor at 1 − 0.2
    assert upper.loss_mat.item() == pytest.approx(-0.3 * cur.item(), rel=1e-5)


def test_masked_tokens_never_contribute_even_with_nan():
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(3, 5, generator=g)
    cur = (old + 0.1 * torch.randn(3, 5, generator=g)).requires_grad_(True)
    adv = torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]).float()
    adv_poisoned = torch.where(mask.bool(), adv, torch.full_like(adv, float("nan")))
    old = torch.where(mask.bool(), old, torch.full_like(old, -float("inf")))
    for name in ("ppo_clip", "cispo", "gspo", "sapo", "reinforce"):
        for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
            cur.grad = None
            out = loss_of(name, PolicyLossInputs(cur, old, adv_poisoned, mask))
            loss = agg_loss(out.loss_mat, mask, mode)
            assert torch.isfinite(loss), (name, mode)
            loss.backward()
            assert torch.isfinite(cur.grad).all(), (name, mode)
            assert cur.grad[mask == 0].abs().sum() == 0, (name, mode)


def test_agg_modes_hand_computed():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).float()
    assert agg_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert agg_loss(loss, mask, "token-sum").item() == pytest.approx(10)
    assert agg_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert agg_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(5 / 3)
    den = AggDenominators.from_mask(mask, scale_factor=10)
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm", den).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="token-avg"):
        agg_loss(loss, mask, "token-avg")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_micro_batches_with_global_denominators_equal_full_batch(mode):
    g = torch.Generator().manual_seed(2)
    b, t = 8, 7
    lengths = torch.tensor([7, 1, 3, 5, 2, 7, 4, 6])
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    old = -torch.rand(b, t, generator=g)
    theta = (old + 0.2 * torch.randn(b, t, generator=g)).requires_grad_(True)
    adv = torch.randn(b, t, generator=g)
    den = AggDenominators.from_mask(mask, scale_factor=t)

    full = agg_loss(loss_of("ppo_clip", PolicyLossInputs(theta, old, adv, mask)).loss_mat, mask, mode, den)
    full_grad, = torch.autograd.grad(full, theta)
    total = 0.0
    for rows in (slice(0, 3), slice(3, 4), slice(4, 8)):  # uneven micro-batches
        part = loss_of("ppo_clip", PolicyLossInputs(theta[rows], old[rows], adv[rows], mask[rows])).loss_mat
        total = total + agg_loss(part, mask[rows], mode, den)
    micro_grad, = torch.autograd.grad(total, theta)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(micro_grad, full_grad)
    if mode == "token-mean":  # per-micro-batch counts would NOT match: the bug class guarded here
        naive = sum(
            agg_loss(loss_of("ppo_clip", PolicyLossInputs(theta[r], old[r], adv[r], mask[r])).loss_mat, mask[r], mode)
            for r in (slice(0, 3), slice(3, 4), slice(4, 8))
        ) / 3
        assert not torch.allclose(naive, full)


def test_gspo_ratio_is_sequence_level():
    old = torch.zeros(1, 3)
    cur = torch.tensor([[0.1, -0.1, 0.3]], requires_grad=True)
    out = loss_of("gspo", PolicyLossInputs(cur, old, torch.ones(1, 3), torch.ones(1, 3)), clip_low=1.0, clip_high=1.0)
    s = math.exp(0.1)  # exp(mean log-ratio)
    torch.testing.assert_close(out.loss_mat, torch.full((1, 3), -s))
    out.loss_mat.mean().backward()
    torch.testing.assert_close(cur.grad, torch.full((1, 3), -s / 3))


def test_sapo_gate_hand_value():
    inputs, _ = one_token(math.log(1.5), 2.0)
    gate = 1 / (1 + math.exp(-0.5)) * 4
    assert loss_of("sapo", inputs).loss_mat.item() == pytest.approx(-gate * 2.0, rel=1e-5)
    inputs, _ = one_token(0.0, -1.0)
    assert loss_of("sapo", inputs).loss_mat.item() == pytest.approx(0.5 * 4 / 1.05, rel=1e-5)


def test_reinforce_is_minus_adv_logp():
    inputs, _ = one_token(0.3, 2.0)
    assert loss_of("reinforce", inputs).loss_mat.item() == pytest.approx(-2.0 * (-0.7), rel=1e-5)


def test_sft_is_token_mean_nll_and_ignores_advantages_and_old_logprobs():
    from skpo.methods.record import LossTerm, term_loss

    log_prob = torch.tensor([[-0.5, -1.0, -2.0], [-0.25, -9.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # row 2 has one token, then padding
    inputs = PolicyLossInputs(log_prob, torch.zeros(2, 3), torch.zeros(2, 3), mask)
    out = loss_of("sft", inputs)
    torch.testing.assert_close(out.loss_mat, torch.tensor([[0.5, 1.0, 2.0], [0.25, 0.0, 0.0]]))
    # the same with any old log-probs and advantages (even NaN on padding)
    other = PolicyLossInputs(log_prob, torch.randn(2, 3), torch.full((2, 3), float("nan")), mask)
    torch.testing.assert_close(loss_of("sft", other).loss_mat, out.loss_mat)
    term = LossTerm(role="response", advantage="grpo", loss="sft", agg="token-mean")
    loss, metrics = term_loss(term, inputs)
    # token-mean: (0.5 + 1 + 2 + 0.25) / 4 tokens = 0.9375 (seq-mean would be (3.5/3 + 0.25) / 2)
    assert loss.item() == pytest.approx(0.9375)
    assert metrics["nll"].item() == pytest.approx(0.9375)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, -mask / 4)  # d/dlogπ of −Σ logπ / 4, none on padding


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    assert kl_penalty(ref, ref, "k3").item() == 0
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(logp, ref, "k4")


def test_k3_is_unbiased_kl_estimate():
    # E_{x~p}[k3] = KL(p‖q) for two categorical distributions
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    exact = (p * (p / q).log()).sum()
    est = (p * kl_penalty(p.log(), q.log(), "k3")).sum()
    torch.testing.assert_close(est, exact)


@pytest.mark.parametrize("chunk", [None, 1, 5, 1024, "auto"])
def test_chunked_entropy_and_logprobs_equal_dense_with_gradients(chunk):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 6, 33, generator=g) * 2).requires_grad_(True)
    labels = torch.randint(0, 33, (2, 6), generator=g)
    ref_h = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    ref_lp = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    h = entropy_from_logits(logits, chunk_size=chunk)
    lp = logprobs_from_logits(logits, labels, chunk_size=chunk)
    torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lp, ref_lp, rtol=1e-5, atol=1e-5)
    grad, = torch.autograd.grad((h.sum() + lp.sum()), logits)
    ref_grad, = torch.autograd.grad((ref_h.sum() + ref_lp.sum()), logits)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


def test_auto_chunks_bound_the_float32_block(monkeypatch):
    """"auto" picks rows per chunk from the vocabulary: ~2^25 elements per chunk."""
    from skpo.algorithms import stats

    seen = []
    monkeypatch.setattr(stats, "_entropy", lambda z: seen.append(z.shape) or torch.zeros(z.shape[0]))
    entropy_from_logits(torch.zeros(40_000, 263))  # small vocabulary: one pass
    entropy_from_logits(torch.zeros(500, 150_000))
    assert seen[0] == (40_000, 263)
    assert [s[0] for s in seen[1:]] == [223, 223, 54] and all(s[1] == 150_000 for s in seen[1:])


def test_entropy_of_uniform_and_bf16_input():
    logits = torch.zeros(4, 150_000, dtype=torch.bfloat16)
    h = entropy_from_logits(logits, chunk_size=2)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, torch.full((4,), math.log(150_000)))


def test_masked_mean_all_masked_is_zero():
    assert masked_mean(torch.tensor([float("inf")]), torch.tensor([0.0])).item() == 0.0

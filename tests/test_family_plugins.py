"""GRPO-family plug-ins: PAPO (derived), Lp-Reg, GTPO, RiskPO, COPO — hand-computed values on
small tensors, properties (each reduces to GRPO / PPO-clip when its knob is off), the token
statistics the trainer computes for them, and their state across a checkpoint.

The arithmetic behind every expected number is in the comments next to it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from skpo.algorithms import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, PolicyLossInputs
from skpo.algorithms.advantages import group_normalized_scores
from skpo.algorithms.copo import COPOParams, answer_entropy, copo_advantage
from skpo.algorithms.gtpo import GTPOParams, conflict_weights, gtpo_advantage
from skpo.algorithms.losses import PPOClipParams, ppo_clip_loss
from skpo.algorithms.lp_reg import lowest_log_prob_tokens
from skpo.algorithms.papo import EntropyController, PAPOParams, controller_shift, papo_advantage, polarity_weights
from skpo.algorithms.riskpo import QuantileTracker, RiskPOParams, riskpo_advantage
from skpo.algorithms.token_stats import entropy_gain, minp_proxy_log_prob, reducer, token_entropy
from skpo.methods import MethodError, resolve_method
from skpo.rollout import Scores

E = math.e


def per_answer(reward):
    """``Trainer.score`` from a one-answer ``reward(trainer, item, response_ids) -> (reward, correct)``."""
    def score(self, items, responses):
        pairs = [reward(self, item, list(r)) for item, r in zip(items, responses)]
        return Scores([float(r) for r, _ in pairs], [bool(c) for _, c in pairs])
    return score


def rows_batch(scores, index, width=1, **fields) -> AdvantageInputs:
    """Outcome rewards ``[B]`` on the last of ``width`` tokens, every token in the mask."""
    scores = torch.tensor(scores, dtype=torch.float32)
    rewards = torch.zeros(len(scores), width)
    rewards[:, -1] = scores
    return AdvantageInputs(rewards, torch.ones(len(scores), width), list(index), **fields)


def loss_of(name: str, params: dict, inputs: PolicyLossInputs) -> torch.Tensor:
    entry = POLICY_LOSSES.get(name)
    return entry.fn(inputs, entry.make_params(params)).loss_mat


# ----------------------------------------------------------------------------- token statistics

P3 = torch.tensor([0.5, 0.25, 0.25])  # π over a 3-token vocabulary
LOGITS = torch.log(P3).unsqueeze(0).repeat(3, 1)  # [3, V]; labels 0, 1, 2
LABELS = torch.tensor([0, 1, 2])
H3 = 0.5 * math.log(2) + 0.5 * math.log(4)  # −Σ π log π = 0.5 ln 2 + 2·0.25 ln 4 = 1.0397


def test_token_entropy_and_entropy_gain_by_hand():
    torch.testing.assert_close(token_entropy(LOGITS, LABELS), torch.full((3,), H3))
    # S_b = π_b (ln π_b + H): S_0 = 0.5 (−ln 2 + H), S_1 = S_2 = 0.25 (−ln 4 + H)
    s0, s1 = 0.5 * (H3 - math.log(2)), 0.25 * (H3 - math.log(4))
    expected_s = 0.5 * s0 + 0.25 * s1 + 0.25 * s1  # E_π[S] = Σ π_b S_b
    # gain = E_π[S] − S_a: sampling the frequent token contracts entropy (gain < 0), a rare one expands it
    torch.testing.assert_close(entropy_gain(LOGITS, LABELS), torch.tensor([expected_s - s0, expected_s - s1, expected_s - s1]))
    assert entropy_gain(LOGITS, LABELS)[0] < 0 < entropy_gain(LOGITS, LABELS)[1]


def test_entropy_gain_is_the_first_order_entropy_change():
    """ΔH of the step Δz = η·A·(e_a − π) ≈ η·A·gain, checked on random logits."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 6, 2])
    eta_a = 1e-5
    step = eta_a * (torch.nn.functional.one_hot(labels, 7) - torch.softmax(logits, -1))

    def entropy64(z):  # in float64: the statistics themselves are float32
        log_p = torch.log_softmax(z, -1)
        return -(log_p.exp() * log_p).sum(-1)

    delta_h = entropy64(logits + step) - entropy64(logits)
    torch.testing.assert_close(delta_h / eta_a, entropy_gain(logits, labels).double(), atol=1e-4, rtol=1e-3)
    assert entropy_gain(logits, labels).abs().min() > 1e-3  # not a vacuous comparison of zeros


def test_minp_proxy_log_prob_by_hand():
    class P:
        min_p = 0.4  # threshold 0.4·0.5 = 0.2: every token kept, the proxy is π itself

    torch.testing.assert_close(minp_proxy_log_prob(LOGITS, LABELS, P), torch.log(P3))
    P.min_p = 0.6  # threshold 0.3: only token 0 kept → proxy(0) = 1, the others ≈ −1e4
    proxy = minp_proxy_log_prob(LOGITS, LABELS, P)
    assert abs(proxy[0].item()) < 1e-6 and (proxy[1:] < -9000).all()


def test_reducer_chunks_like_one_pass():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(2, 5, 11, generator=g), torch.randint(0, 11, (2, 5), generator=g)
    one = reducer([("entropy", None), ("entropy_gain", None)], chunk_size=None)(logits, labels)
    chunked = reducer([("entropy", None), ("entropy_gain", None)], chunk_size=3)(logits, labels)
    assert set(one) == {"entropy", "entropy_gain"} and one["entropy"].shape == (2, 5)
    for k in one:
        torch.testing.assert_close(chunked[k], one[k])


def test_policy_forward_reductions_match_its_entropy():
    """The trainer's old-policy pass: token statistics from the same logits as the log-probs,
    padded rows and packed prompt groups alike, 0 past each response."""
    from skpo.models.forward import group_by_prompt, policy_forward
    from skpo.models.loading import load_policy, tiny_arith_dir
    from skpo.rows import pad_responses

    model = load_policy(tiny_arith_dir(), device="cpu")
    prompts = [[5, 6, 7], [5, 6, 7], [9, 10]]
    ids, mask, _ = pad_responses([[11, 12, 13], [14], [15, 16]], [[0.0] * 3, [0.0], [0.0] * 2], pad_id=262)
    reduce = reducer([("entropy", None)])
    with torch.no_grad():
        for packs in (None, group_by_prompt(prompts)):
            _lp, h, stats = policy_forward(model, prompts, ids, mask, 262, 0.7, with_entropy=True, packs=packs,
                                          reductions=reduce)
            torch.testing.assert_close(stats["entropy"], h)
            assert (stats["entropy"][mask == 0] == 0).all() and (stats["entropy"][mask == 1] > 0).all()


# ----------------------------------------------------------------------------- Lp-Reg

def lp_inputs(**extra) -> PolicyLossInputs:
    log_prob = torch.tensor([[-1.0, -2.0, -3.0, -4.0]], requires_grad=True)
    return PolicyLossInputs(log_prob, log_prob.detach().clone(), torch.full((1, 4), -1.0), torch.ones(1, 4),
                            extras={"minp_proxy_log_prob": torch.tensor([[-0.5, -2.5, -2.0, -9.0]])}, **extra)


def test_lp_reg_regularises_the_lowest_negative_tokens_below_the_proxy():
    inputs = lp_inputs()
    loss = loss_of("lp_reg", {"neg_fraction": 0.5}, inputs)
    # 4 negative tokens, k = ⌊0.5·4⌋ = 2 lowest log π: t=3 (−4) and t=2 (−3).
    # t=2: −3 < proxy −2 → −A·r + β·k3, Δ = −2 − (−3) = 1, k3 = e − 1 − 1; t=3: −4 > −9, not below the proxy.
    # every other token: max(−A·r, −A·clip(r)) = 1 at ratio 1
    torch.testing.assert_close(loss, torch.tensor([[1.0, 1.0, 1.0 + (E - 2), 1.0]]))
    loss.sum().backward()
    # d/dlogπ of −A·r is −A·r = 1; of k3 = e^Δ − Δ − 1 with Δ = proxy − log π: 1 − e^Δ = 1 − e
    torch.testing.assert_close(inputs.log_prob.grad, torch.tensor([[1.0, 1.0, 1.0 + 1 - E, 1.0]]))


def test_lp_reg_needs_more_than_one_selected_token():
    """The authors' code regularises only when k = max(1, ⌊ρ·n⌋) > 1."""
    loss = loss_of("lp_reg", {"neg_fraction": 0.25}, lp_inputs())  # k = 1
    torch.testing.assert_close(loss, torch.ones(1, 4))
    chosen = lowest_log_prob_tokens(torch.tensor([[-1.0, -5.0, -3.0]]), torch.tensor([[True, True, False]]), 1.0)
    assert chosen.tolist() == [[True, True, False]]  # k = 2 of the 2 candidates


def test_lp_reg_without_selection_is_ppo_clip_without_dual_clip():
    g = torch.Generator().manual_seed(2)
    old = -torch.rand(3, 6, generator=g) * 3
    cur = old + 0.3 * torch.randn(3, 6, generator=g)
    adv = torch.randn(3, 6, generator=g)
    mask = (torch.rand(3, 6, generator=g) > 0.2).float()
    extras = {"minp_proxy_log_prob": torch.zeros(3, 6)}  # every token below the proxy: only the selection limits
    inputs = PolicyLossInputs(cur, old, adv, mask, extras=extras)
    params = {"clip_low": 0.2, "clip_high": 0.28}
    off = loss_of("lp_reg", {**params, "neg_fraction": 0.0}, inputs)
    plain = loss_of("ppo_clip", {**params, "dual_clip": None}, inputs)
    # the lp_reg ratio is not clamped (authors' code); ppo_clip clamps log r at ±20, far away here
    torch.testing.assert_close(off * mask, plain * mask)
    on = loss_of("lp_reg", {**params, "neg_fraction": 1.0, "kl_coef": 0.0}, inputs)
    # every negative token is selected and, below the proxy 0, loses the clip: −A·r (β = 0: no KL)
    regularised = (adv < 0) & (mask > 0) & (cur < 0)
    assert regularised.sum() >= 3
    torch.testing.assert_close(on[regularised], (-adv * torch.exp(cur - old))[regularised])
    torch.testing.assert_close(on[~regularised] * mask[~regularised], plain[~regularised] * mask[~regularised])


# ----------------------------------------------------------------------------- PAPO (derived)

def test_papo_controller_and_polarity_weights_by_hand():
    assert controller_shift(running=0.95, target=1.0, gain=1.0, max_shift=0.5) == pytest.approx(0.05)
    assert controller_shift(running=0.2, target=1.0, gain=1.0, max_shift=0.5) == 0.5  # κ·0.8 clipped at λ_max
    assert controller_shift(running=1.3, target=1.0, gain=1.0, max_shift=0.5) == pytest.approx(-0.3)
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    gain = torch.tensor([[0.2, -0.1], [0.3, -0.4]])
    # expanding where A·g > 0: (0,0) and (1,1) → 1 + λ; the others 1 − λ
    torch.testing.assert_close(polarity_weights(adv, gain, 0.1), torch.tensor([[1.1, 0.9], [0.9, 1.1]]))


def test_papo_advantage_two_steps_by_hand():
    params = PAPOParams(epsilon=0.0)
    controller = EntropyController(params)
    gain = torch.tensor([[0.2, -0.1], [0.3, -0.4]])

    def step(entropy: float) -> torch.Tensor:
        batch = rows_batch([1.0, 0.0], ["q", "q"], width=2, state=controller,
                           token_stats={"entropy": torch.full((2, 2), entropy), "entropy_gain": gain})
        return papo_advantage(batch, params)

    a = 0.5 / math.sqrt(0.5)  # GRPO: (1 − 0.5) / std([1, 0]) with Bessel std √0.5
    # step 1: the target is this step's entropy 1.0, H̄ = 1.0 → λ = 0: plain GRPO
    torch.testing.assert_close(step(1.0), torch.tensor([[a, a], [-a, -a]]))
    # step 2: H̄ = 0.9·1.0 + 0.1·0.5 = 0.95 → λ = (1 − 0.95)/1 = 0.05, expanding tokens ×1.05
    torch.testing.assert_close(step(0.5), torch.tensor([[1.05 * a, 0.95 * a], [-0.95 * a, -1.05 * a]]))
    assert controller.metrics()["papo_shift"] == pytest.approx(0.05)
    assert controller.metrics()["papo_expanding_share"] == 0.5


def test_papo_with_zero_gain_is_grpo():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 2, (8,), generator=g).float().tolist()
    stats = {"entropy": torch.rand(8, 4, generator=g), "entropy_gain": torch.randn(8, 4, generator=g)}
    batch = rows_batch(scores, list("aabbccdd"), width=4, token_stats=stats, state=EntropyController(PAPOParams(gain=0.0)))
    grpo = ADVANTAGE_ESTIMATORS.get("grpo")
    expected = grpo.fn(rows_batch(scores, list("aabbccdd"), width=4), grpo.make_params({}))
    for _ in range(2):  # any step, any entropy
        torch.testing.assert_close(papo_advantage(batch, PAPOParams(gain=0.0)), expected)


def test_papo_controller_state_round_trips():
    params = PAPOParams(target_entropy=2.0, momentum=0.5)
    a = EntropyController(params)
    a.observe(1.0)  # H̄ = 1.0
    b = EntropyController(params)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    # both: H̄ = 0.5·1.0 + 0.5·3.0 = 2.0 → λ = 0
    assert a.observe(3.0) == b.observe(3.0) == 0.0
    with pytest.raises(ValueError, match="PAPO controller state was saved with"):
        EntropyController(PAPOParams(momentum=0.8)).load_state_dict(a.state_dict())


# ----------------------------------------------------------------------------- GTPO

def gtpo_group():
    """One prompt, three answers: a positive one and two negative ones (the last one is 3 tokens)."""
    ids = torch.tensor([[5, 6, 7, 9], [5, 6, 8, 9], [5, 3, 9, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]])
    return ids, mask


def test_gtpo_conflict_weights_by_hand():
    ids, mask = gtpo_group()
    weights, counts = conflict_weights(ids, mask, ["q"] * 3, torch.tensor([1.0, -0.5, -0.5]))
    # leading run (same token at the same position in a positive and a negative answer): t=0 (5) for all,
    # t=1 (6) for rows 0 and 1; t=2 breaks it (7 vs 8, 9). Trailing run (counted from each end): the last
    # token 9 of every row; one step earlier 7 vs 8, 3 breaks it.
    # positive row: conflict tokens ×2 → [2, 2, 1, 2]; negative rows: conflict tokens ×0
    assert weights.tolist() == [[2, 2, 1, 2], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert counts.tolist() == [3, 3, 2]  # conflict tokens (leading ∪ trailing) per row


def test_gtpo_token_in_both_runs_weighs_w_squared():
    ids, mask = torch.tensor([[4], [4]]), torch.ones(2, 1)
    weights, counts = conflict_weights(ids, mask, ["q", "q"], torch.tensor([1.0, -1.0]))
    assert weights.tolist() == [[4.0], [0.0]] and counts.tolist() == [1, 1]  # 2·2 (leading and trailing run)


def test_gtpo_advantage_by_hand():
    ids, mask = gtpo_group()
    entropy = torch.tensor([[0.2] * 4, [0.5] * 4, [0.9, 0.9, 0.9, 0.0]])  # row means 0.2, 0.5, 0.9
    batch = rows_batch([1.0, 0.0, 0.0], ["q"] * 3, width=4, response_ids=ids, token_stats={"entropy": entropy})
    batch.response_mask = mask
    adv = gtpo_advantage(batch, GTPOParams(epsilon=0.0))
    a_pos, a_neg = (2 / 3) / math.sqrt(1 / 3), (-1 / 3) / math.sqrt(1 / 3)  # GRPO: mean 1/3, Bessel std √(1/3)
    # Â = A − 0.1·⟨H⟩ below the 0.7 threshold, 0 above; then ·δ / n
    pos = (a_pos - 0.1 * 0.2) / 3
    neg = (a_neg - 0.1 * 0.5) / 3
    expected = torch.tensor([[2 * pos, 2 * pos, pos, 2 * pos], [0.0, 0.0, neg, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_gtpo_without_conflicts_or_entropy_terms_is_grpo():
    g = torch.Generator().manual_seed(4)
    ids = torch.arange(6 * 5).reshape(6, 5)  # every token distinct: no conflicts
    scores = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    batch = rows_batch(scores, list("aaabbb"), width=5, response_ids=ids,
                       token_stats={"entropy": torch.rand(6, 5, generator=g)})
    adv = gtpo_advantage(batch, GTPOParams(entropy_penalty=0.0, entropy_threshold=1e9))
    expected = group_normalized_scores(torch.tensor(scores), list("aaabbb")).unsqueeze(-1).expand(6, 5)
    torch.testing.assert_close(adv, expected)


# ----------------------------------------------------------------------------- RiskPO

# two prompts of one bundle, three answers each: a = [1, 0, 1], b = [0, 0, 1]
# papers (j-th answers): S = [1 + 0, 0 + 0, 1 + 1] = [1, 0, 2]
RISK_SCORES, RISK_INDEX = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0], ["a", "a", "a", "b", "b", "b"]
SIGMA_Q = math.sqrt(1 / 3)  # Bessel std of [1, 0, 1] and of [0, 0, 1]


def risk(params: RiskPOParams, tracker: QuantileTracker | None = None, scores=RISK_SCORES, index=RISK_INDEX):
    tracker = tracker or QuantileTracker(params)
    return riskpo_advantage(rows_batch(scores, index, state=tracker), params).squeeze(-1), tracker


def test_riskpo_bundle_quantiles_by_hand():
    params = RiskPOParams(bundle_size=2, epsilon=0.0)
    adv, tracker = risk(params)
    # quantiles of [0, 1, 2] (linear): q_0.2 = 0.4, q_0.9 = 1.8
    # A_RV = [(S − 0.4)₊ − (S − 1.8)₊ + (0.4 − 1.8)] / 0.7 → S=1: −0.8/0.7, S=0: −2, S=2: 0
    # A_CV = −(0.4 − S)₊ / 0.2 → S=0: −2, else 0;  A = (1.5·A_CV + A_RV)/2.5
    # ÷ bundle std (std of [1, 0, 2] = 1), credit ÷ σ_q
    paper = torch.tensor([(-0.8 / 0.7) / 2.5, (1.5 * -2 - 2) / 2.5, 0.0]) / SIGMA_Q
    torch.testing.assert_close(adv, torch.cat([paper, paper]).float())
    assert tracker.at(0.2) == pytest.approx(0.4) and tracker.at(0.9) == pytest.approx(1.8)  # first step: batch quantiles


def test_riskpo_tracker_step_and_tracked_quantiles():
    params = RiskPOParams(bundle_size=2, epsilon=0.0)
    first, tracker = risk(params)
    second, _ = risk(params, tracker)  # tracked (0.4, 1.8) equal this batch's: same advantages
    torch.testing.assert_close(second, first)
    # SGD on the pinball loss: q ← q + 0.1·(level − mean 1[S < q]); level 0.2: 0.4 + 0.1·(0.2 − 1/3)
    assert tracker.at(0.2) == pytest.approx(0.4 + 0.1 * (0.2 - 1 / 3))
    assert tracker.at(0.9) == pytest.approx(1.8 + 0.1 * (0.9 - 2 / 3))


@pytest.mark.parametrize("source,low,high", [("track", 0.0, 2.0), ("mix", 0.2, 1.9), ("batch", 0.4, 1.8)])
def test_riskpo_quantile_sources(source, low, high):
    params = RiskPOParams(bundle_size=2, epsilon=0.0, quantiles=source, mix_cvar=False, normalize=False,
                          credit="uniform")
    tracker = QuantileTracker(params)
    tracker.values = torch.zeros(19, dtype=torch.float64)
    tracker.values[17] = 2.0  # tracked: level 0.2 (index 3) → 0.0, level 0.9 (index 17) → 2.0
    adv, _ = risk(params, tracker)
    # A_RV(S) = [(S − low)₊ − (S − high)₊ + (low − high)] / 0.7 for S = 1, 0, 2
    expected = torch.tensor([((1 - low) + low - high) / 0.7, (low - high) / 0.7,
                             ((2 - low) - max(2 - high, 0) + low - high) / 0.7])
    torch.testing.assert_close(adv[:3], expected.float())


def test_riskpo_credit_modes_by_hand():
    base = dict(bundle_size=2, epsilon=0.0, mix_cvar=False, normalize=False, quantiles="batch")
    uniform, _ = risk(RiskPOParams(**base, credit="uniform"))
    paper = torch.tensor([-0.8 / 0.7, -2.0, 0.0])  # A_RV of S = 1, 0, 2 (see above)
    torch.testing.assert_close(uniform, torch.cat([paper, paper]).float())
    paper = paper.tolist()
    summed, _ = risk(RiskPOParams(**base, credit="sum-mean"))
    # paper 0: r − μ = 1 − 2/3 and 0 − 1/3 sum to 0 → equal halves; paper 1: −2/3 and −1/3 sum to −1 → shares 2/3, 1/3
    assert summed[[0, 3]].tolist() == pytest.approx([paper[0] / 2] * 2)
    assert summed[[1, 4]].tolist() == pytest.approx([paper[1] * 2 / 3, paper[1] / 3])
    scored, _ = risk(RiskPOParams(**base, credit="score"))
    assert scored[[0, 1, 3]].tolist() == pytest.approx([0.5 * paper[0], 1.5 * paper[1], 1.5 * paper[0]])
    no_baseline, _ = risk(RiskPOParams(**base, credit="uniform", natural_baseline=False))
    assert (no_baseline >= 0).all()  # (S − q_α)₊ − (S − q_β)₊ ≥ 0


def test_riskpo_answers_beyond_the_smallest_group_get_nothing():
    params = RiskPOParams(bundle_size=2, epsilon=0.0, credit="uniform", mix_cvar=False, normalize=False)
    adv, _ = risk(params, scores=[1.0, 0.0, 1.0, 0.0, 1.0], index=["a", "a", "a", "b", "b"])
    # 2 papers (b has 2 answers): S = [1, 1] → quantiles 1, 1 → A_RV = 0; a's third answer is in no paper
    assert adv.tolist() == [0.0] * 5


def test_riskpo_tracker_state_round_trips():
    params = RiskPOParams()
    a = QuantileTracker(params)
    a.update(torch.tensor([0.0, 1.0, 3.0, 5.0]))
    a.update(torch.tensor([2.0, 2.0]))
    b = QuantileTracker(params)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    with pytest.raises(ValueError, match="RiskPO tracker state was saved with"):
        QuantileTracker(RiskPOParams(alpha=0.1)).load_state_dict(a.state_dict())


# ----------------------------------------------------------------------------- COPO

COPO_SCORES = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
COPO_ANSWERS = ["3", "3", "3", "3", "4", "5"]  # a: all agree (H = 0); b: three answers (H = log₂ 3)


def test_copo_answer_entropy_by_hand():
    assert answer_entropy(["3", "3", "3"]) == pytest.approx(0.0, abs=1e-7)
    assert answer_entropy(["3", "4", "5"]) == pytest.approx(math.log2(3), abs=1e-6)
    assert answer_entropy([None, None, "1", "1"]) == pytest.approx(1.0, abs=1e-6)  # no answer counts as one class


def test_copo_advantages_and_weights_by_hand():
    batch = rows_batch(COPO_SCORES, list("aaabbb"), answers=COPO_ANSWERS)
    local = copo_advantage(batch, COPOParams())  # (ε = 1e-6 in the std: within the tolerance below)
    # local = GRPO: a all correct → 0; b: mean 1/3, Bessel std √(1/3)
    b = 1 / math.sqrt(3)
    torch.testing.assert_close(local.squeeze(-1), torch.tensor([0, 0, 0, 2 / 3 / b, -1 / 3 / b, -1 / 3 / b]).float())
    # global: p̂ = [1, 1/3] standardised over the 2 prompts: ±(1/3)/(√2/3) = ±1/√2
    glob = batch.outputs["copo_global_advantage"].squeeze(-1)
    torch.testing.assert_close(glob, torch.tensor([1, 1, 1, -1, -1, -1]).float() / math.sqrt(2))
    # w = sigmoid(5·(H − 1)) times 1[r ≠ 0]: a: sigmoid(−5); b: sigmoid(5·(log₂3 − 1)) for the correct answer only
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    w = batch.outputs["copo_local_weight"].squeeze(-1)
    torch.testing.assert_close(w, torch.tensor([sig(-5)] * 3 + [sig(5 * (math.log2(3) - 1)), 0, 0]).float())


def test_copo_consistency_coefficient_by_hand():
    batch = rows_batch(COPO_SCORES, list("aaabbb"), answers=COPO_ANSWERS)
    copo_advantage(batch, COPOParams(consistency_coef=True))
    # λ = (1 − 1/3)/log₂3, so g_b = 1/3·(1 − λ·log₂3) = 1/3·(1/3) = 1/9; g_a = 1 (H = 0)
    # standardised: (1 − 5/9)/std([1, 1/9]) with std = (8/9)/√2 → ±1/√2 again (two prompts)
    glob = batch.outputs["copo_global_advantage"].squeeze(-1)
    torch.testing.assert_close(glob, torch.tensor([1, 1, 1, -1, -1, -1]).float() / math.sqrt(2))


def test_copo_loss_blends_two_ppo_surrogates():
    g = torch.Generator().manual_seed(5)
    old = -torch.rand(2, 3, generator=g)
    cur = old + 0.4 * torch.randn(2, 3, generator=g)
    local, glob = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    weight = torch.tensor([[0.25] * 3, [1.0] * 3])
    mask = torch.ones(2, 3)
    inputs = PolicyLossInputs(cur, old, local, mask, extras={"copo_global_advantage": glob, "copo_local_weight": weight})
    loss = loss_of("copo", {}, inputs)
    params = PPOClipParams()
    ppo_local = ppo_clip_loss(PolicyLossInputs(cur, old, local, mask), params).loss_mat
    ppo_glob = ppo_clip_loss(PolicyLossInputs(cur, old, glob, mask), params).loss_mat
    torch.testing.assert_close(loss, 0.75 * ppo_glob * torch.tensor([[1.0], [0.0]]) + weight * ppo_local)


@pytest.mark.parametrize("mode,expected", [
    ("no_global", [1.0] * 6), ("only_global", [0.0] * 6), ("only_zero", [1, 1, 1, 1, 0, 0]),
    ("only_forced", [0, 0, 0, 1, 1, 1]),  # A_loc ≠ 0 only in the mixed group b
])
def test_copo_modes(mode, expected):
    batch = rows_batch(COPO_SCORES, list("aaabbb"), answers=COPO_ANSWERS)
    copo_advantage(batch, COPOParams(mode=mode))
    assert batch.outputs["copo_local_weight"].squeeze(-1).tolist() == pytest.approx(expected)


# ----------------------------------------------------------------------------- documents and validation

@pytest.mark.parametrize("method,overrides,match", [
    ("riskpo", {"advantage_params": {"credit": "best"}}, r"advantage_params: credit must be one of"),
    ("riskpo", {"advantage_params": {"alpha": 0.95}}, r"advantage_params: need 0 < alpha < beta < 1"),
    ("papo", {"advantage_params": {"max_shift": 1.0}}, r"advantage_params: max_shift must be in \[0, 1\)"),
    ("lp_reg", {"loss_params": {"min_p": 0.0}}, r"loss_params: min_p must be in \(0, 1\]"),
    ("copo", {"advantage_params": {"mode": "soft-with-zero"}}, r"advantage_params: mode must be one of"),
    ("gtpo", {"advantage_params": {"entropy_thresh": 1.0}}, r"advantage_params: gtpo: unknown parameter"),
])
def test_bad_parameters_name_the_key(method, overrides, match):
    with pytest.raises(MethodError, match=r"method\.terms\.response\." + match):
        resolve_method(method, {"terms": {"response": overrides}})


def test_presets_declare_their_inputs():
    from skpo.methods import get_method

    assert [n for n, _ in get_method("papo").terms[0].token_stat_requests()] == ["entropy", "entropy_gain"]
    assert [n for n, _ in get_method("lp_reg").terms[0].token_stat_requests()] == ["minp_proxy_log_prob"]
    assert get_method("lp_reg").terms[0].token_stat_requests()[0][1].min_p == 0.02
    assert isinstance(get_method("riskpo").terms[0].make_state(), QuantileTracker)
    assert get_method("riskpo").reward_range == get_method("copo").reward_range == (0.0, 1.0)
    assert get_method("grpo").terms[0].make_state() is None and not get_method("grpo").terms[0].token_stat_requests()


# ----------------------------------------------------------------------------- state across a checkpoint

@pytest.mark.parametrize("method", ["riskpo", "papo"])
def test_estimator_state_is_checkpointed_and_resumed(tmp_path, method, monkeypatch):
    """Two steps straight, or one step, a checkpoint and a resumed step: the same estimator
    state and the same weights."""
    from skpo.config import load_config
    from skpo.models.loading import tiny_arith_dir
    from skpo.training.setup import build_trainer
    from skpo.training.trainer import Trainer

    def reward(self, item, response_ids):  # mixed groups whatever the model: the estimator has signal
        correct = sum((i + 1) * t for i, t in enumerate(response_ids)) % 2 == 1
        lo, hi = self.method.reward_range
        return (hi if correct else lo), correct

    monkeypatch.setattr(Trainer, "score", per_answer(reward))

    def cfg(out, steps):
        return load_config(None, [
            f"model.path={tiny_arith_dir()}", f"train.method={method}", f"train.steps={steps}", "train.prompts_per_step=4",
            "method.group_size=3", "rollout.max_new_tokens=24", "rollout.temperature=1.5", "train.lr=1e-3",
            f"log.out_dir={out}", "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=30",
            "eval.every=0", *(["method.terms.response.advantage_params.bundle_size=2"] if method == "riskpo" else []),
        ])

    full = build_trainer(cfg(tmp_path / "full", 2))
    full.train()
    first = build_trainer(cfg(tmp_path / "split", 1))
    first.train()
    saved = json.loads((tmp_path / "split" / "checkpoints" / "step_000001" / "state.json").read_text())
    assert saved["term_states"]["response"] == first.state.term_states["response"].state_dict()
    resumed = build_trainer(cfg(tmp_path / "split", 2), resume=True)
    assert resumed.state.term_states["response"].state_dict() == saved["term_states"]["response"]
    resumed.train()
    assert resumed.state.term_states["response"].state_dict() == full.state.term_states["response"].state_dict()
    a, b = full.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

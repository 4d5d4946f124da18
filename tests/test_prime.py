"""PRIME: the implicit-PRM formulas against hand-computed values, the reward-model plug-in on the
tiny model (scores, update, update order), the method's validation, and an exact resume of the
PRM's weights and AdamW state. (The 2-step run is tests/test_trainer.py::test_every_preset_trains.)"""

from __future__ import annotations

import json
import math

import pytest
import torch

from skpo.algorithms import ADVANTAGE_ESTIMATORS, AdvantageInputs
from skpo.algorithms.prime import (
    PrimeParams,
    implicit_log_ratio,
    implicit_token_rewards,
    leave_one_out_token_scores,
    normalize_by_max_return,
    prm_cross_entropy,
    reverse_cumsum,
)
from skpo.methods import MethodError, resolve_method

# ----------------------------------------------------------------------------- formulas

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
PRM_LP = torch.tensor([[-1.0, -2.0, -0.3, -5.0], [-0.2, -0.1, -4.0, -4.0]])
REF_LP = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-0.7, -0.4, -3.0, -3.0]])
# q = PRM - ref on the mask: row 0 [0.5, -1.0, 0.2], row 1 [0.5, 0.3]
Q = torch.tensor([[0.5, -1.0, 0.2, 0.0], [0.5, 0.3, 0.0, 0.0]])


def test_implicit_log_ratio_and_token_rewards():
    q = implicit_log_ratio(PRM_LP, REF_LP, MASK)
    torch.testing.assert_close(q, Q)
    # β = 0.1; verl's token granularity: the last response token (row 0: t=2, row 1: t=1) gets none
    torch.testing.assert_close(implicit_token_rewards(q, MASK, 0.1),
                               torch.tensor([[0.05, -0.1, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0]]))
    # the paper's reading scores it too
    torch.testing.assert_close(implicit_token_rewards(q, MASK, 0.1, score_last_token=True),
                               torch.tensor([[0.05, -0.1, 0.02, 0.0], [0.05, 0.03, 0.0, 0.0]]))


def test_reverse_cumsum_and_batch_norm_by_the_largest_return():
    rewards = torch.tensor([[0.05, -0.1, 0.02, 7.0], [0.05, 0.03, 0.0, 0.0]])  # 7.0 is padding: ignored
    # returns-to-go: row 0 [0.05-0.1+0.02, -0.1+0.02, 0.02, 0] = [-0.03, -0.08, 0.02, 0]; row 1 [0.08, 0.03, 0, 0]
    torch.testing.assert_close(reverse_cumsum(rewards, MASK),
                               torch.tensor([[-0.03, -0.08, 0.02, 0.0], [0.08, 0.03, 0.0, 0.0]]))
    # the largest |return| is 0.08 (row 0 t=1 and row 1 t=0): every score is divided by 0.08 + 1e-6
    torch.testing.assert_close(normalize_by_max_return(rewards, MASK), rewards / (0.08 + 1e-6))


def test_prm_cross_entropy_is_the_bce_of_the_sequence_implicit_reward():
    q = Q.clone().requires_grad_(True)
    # Σ q: row 0 -0.3, row 1 0.8; β = 2 → logits -0.6 and 1.6; labels 1 and 0
    loss = prm_cross_entropy(q, torch.tensor([1.0, 0.0]), MASK, beta=2.0)
    expected = [math.log(1 + math.exp(0.6)),  # -log σ(-0.6)
                math.log(1 + math.exp(1.6))]  # -log(1 - σ(1.6))
    torch.testing.assert_close(loss, torch.tensor(expected))
    # verl's form: binary_cross_entropy(σ(β Σ q), acc) — the same numbers
    verl = torch.nn.functional.binary_cross_entropy(torch.sigmoid(torch.tensor([-0.6, 1.6])), torch.tensor([1.0, 0.0]),
                                                    reduction="none")
    torch.testing.assert_close(loss, verl)
    loss.sum().backward()
    # d/dq_t = β (σ(logit) − label) on the mask: row 0 2(σ(-0.6) − 1) < 0 (raise π_φ on a correct answer)
    torch.testing.assert_close(q.grad[0, :3], torch.full((3,), 2 * (1 / (1 + math.exp(0.6)) - 1)))
    torch.testing.assert_close(q.grad[1, :2], torch.full((2,), 2 / (1 + math.exp(-1.6))))
    assert q.grad[0, 3] == 0 and (q.grad[1, 2:] == 0).all()


def test_leave_one_out_is_verls_masked_rloo():
    scores = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 6.0], [4.0, 5.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    out = leave_one_out_token_scores(scores, mask, ["a", "a", "a", "b"])
    # group a (G = 3): row means 1.5, 3, 2 → Σ = 6.5; a token gets r·3/2 − 6.5/2 = 1.5 r − 3.25
    expected = torch.tensor([[-1.75, -0.25, 0.0], [1.25, 0.0, 0.0], [-3.25, -3.25, 5.75],
                             [4.0, 5.0, 0.0]])  # group b is a singleton: raw scores (verl would divide by 0)
    torch.testing.assert_close(out, expected)
    # masked to one token per row it is plain RLOO: acc_i − mean_{j≠i} acc_j
    last = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=torch.bool)
    acc = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(leave_one_out_token_scores(acc, last, [0, 0, 0])[:, 2], torch.tensor([0.5, -1.0, 0.5]))


def test_prime_advantage_combines_rloo_sources_then_whitens_the_returns():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    implicit = torch.tensor([[0.1, 0.3, 0.0], [0.2, 0.0, 0.0]])
    outcome = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # scores 1 and 0, verl's layout
    batch = AdvantageInputs(outcome, mask, ["q", "q"], token_rewards=implicit)
    entry = ADVANTAGE_ESTIMATORS.get("prime")
    assert entry.meta["needs"] == ("token_rewards",) and entry.meta["group_key"] == "prompt"
    adv = entry.fn(batch, PrimeParams(reward_dpo_coef=1.0, reward_gt_coef=2.0))
    # implicit RLOO, G = 2: row means 0.4/3 and 0.2/2 → Σ = 7/30; token → 2 r − 7/30
    s = 7 / 30
    # outcome RLOO at the last token: 1 − 0 = +1 (row 0, t=2), 0 − 1 = −1 (row 1, t=1); × 2
    combined = [[0.2 - s, 0.6 - s, 0.0 - s + 2.0], [0.4 - s, 0.0 - s - 2.0]]
    returns = [[sum(combined[0][t:]) for t in range(3)], [sum(combined[1][t:]) for t in range(2)]]
    flat = returns[0] + returns[1]  # [2.1, 2.1333, 1.7667, -2.0667, -2.2333]
    assert flat[0] == pytest.approx(2.8 - 3 * s) == pytest.approx(2.1) and flat[3] == pytest.approx(-1.6 - 2 * s)
    mean = sum(flat) / 5  # 0.34
    var = sum((x - mean) ** 2 for x in flat) / 4  # Bessel, as verl's masked_whiten
    whitened = [(x - mean) / math.sqrt(var + 1e-8) for x in flat]
    expected = torch.tensor([whitened[:3], whitened[3:] + [0.0]])
    torch.testing.assert_close(adv, expected)
    # a zero coefficient drops its source (verl): outcome only = whitened returns of ±1 at the last token
    only_gt = entry.fn(batch, PrimeParams(reward_dpo_coef=0.0, reward_gt_coef=1.0))
    flat = [1.0, 1.0, 1.0, -1.0, -1.0]
    mean, var = 0.2, sum((x - 0.2) ** 2 for x in flat) / 4
    torch.testing.assert_close(only_gt[0], torch.full((3,), (1 - mean) / math.sqrt(var + 1e-8)))
    torch.testing.assert_close(only_gt[1, :2], torch.full((2,), (-1 - mean) / math.sqrt(var + 1e-8)))
    assert only_gt[1, 2] == 0


# ----------------------------------------------------------------------------- the method document


def test_prime_preset_follows_the_recipe():
    from skpo.methods import get_method

    p = get_method("prime")
    (term,) = p.terms
    assert (term.advantage, term.loss, term.agg) == ("prime", "ppo_clip", "token-mean")
    assert dict(term.advantage_params) == {"reward_dpo_coef": 5.0, "reward_gt_coef": 5.0}
    assert p.reward_model == "implicit_prm" and p.reward_range == (0.0, 1.0) and p.group_size == 4
    params = dict(p.reward_model_params)
    assert params["beta_train"] == 0.05 and params["lr"] == 1e-6 and params["update"] == "before"
    assert params["grad_clip"] == 10.0 and params["prime_norm"] == "batch_norm"
    assert p.entropy_coef == 0.001 and p.kl_coef == 0.0


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"reward_model_params": {"lrr": 1.0}}, r"reward_model_params: implicit_prm: unknown parameter\(s\) \['lrr'\]"),
        ({"reward_model_params": {"update": "later"}}, r"reward_model_params: update must be one of"),
        ({"reward_model_params": {"lr": "fast"}}, r"reward_model_params: implicit_prm: lr must be a number"),
        ({"reward_model": "pmr"}, r"reward_model: unknown reward model 'pmr'"),
        ({"reward_model": None}, r"estimator 'prime' needs per-token rewards: set reward_model"),
    ],
)
def test_bad_reward_model_settings_name_the_key(overrides, match):
    with pytest.raises(MethodError, match=match):
        resolve_method("prime", overrides)


def test_reward_model_params_alone_are_refused():
    with pytest.raises(MethodError, match="reward_model_params given without a reward_model"):
        resolve_method("grpo", {"reward_model_params": {"lr": 1.0}})


# ----------------------------------------------------------------------------- the plug-in on the tiny model


def _rows():
    from skpo.rows import Rows, pad_responses

    prompts = [[5, 6, 7], [5, 6, 7], [9, 10], [9, 10]]
    responses = [[11, 12, 13, 14], [15, 16], [17, 18, 19], [20, 21, 22, 23, 24]]
    ids, mask, old = pad_responses(responses, [[0.0] * len(r) for r in responses], 0)
    return Rows(prompts, ids, mask, old, torch.tensor([1.0, 0.0, 0.0, 1.0]), ["p", "p", "q", "q"])


def _prm(token_budget=10_000, **params):
    from skpo.models.forward import length_buckets
    from skpo.models.loading import load_policy, tiny_arith_dir
    from skpo.models.reward_models import REWARD_MODELS, RewardModelContext

    torch.manual_seed(0)
    policy = load_policy(tiny_arith_dir())

    def micro_batches(rows):
        lengths = [len(p) + int(n) for p, n in zip(rows.prompt_ids, rows.lengths())]
        return [(bucket, None) for bucket in length_buckets(lengths, token_budget)]

    ctx = RewardModelContext(policy=policy, ref_model=None, device=torch.device("cpu"), micro_batches=micro_batches,
                             pad_id=0, reward_range=(0.0, 1.0), mini_batches=1)
    entry = REWARD_MODELS.get("implicit_prm")
    return policy, entry.fn(ctx, entry.make_params({"lr": 1e-3, **params}))


def test_implicit_prm_starts_at_zero_reward_and_learns_the_labels():
    rows = _rows()
    policy, prm = _prm()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    scores, _ = prm.score(rows)
    assert torch.equal(scores, torch.zeros_like(scores))  # π_φ = π_ref at the start: q = 0 exactly
    ce = lambda: prm_cross_entropy(implicit_log_ratio(prm._log_probs(prm.prm, rows), prm._log_probs(prm.ref, rows),  # noqa: E731
                                                      rows.response_mask), prm.labels(rows), rows.response_mask, 0.05).mean()
    assert ce().item() == pytest.approx(math.log(2))
    metrics = prm.update(rows)
    assert metrics["reward_model/ce_loss"] == pytest.approx(math.log(2))  # the loss the step was taken on
    assert ce().item() < math.log(2) - 1e-4  # one AdamW step on the cross-entropy lowers it
    scores, _ = prm.score(rows)
    # the sequence implicit reward now ranks the correct answers (rows 0, 3) above the wrong ones
    total = (scores * rows.response_mask).sum(-1)
    assert total[0] > total[1] and total[3] > total[2]
    # the policy and the reference are untouched
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in prm.ref.state_dict().items())


def test_update_order_before_and_after():
    rows = _rows()
    _, before = _prm(update="before")
    outputs, _ = before.step(rows)
    torch.testing.assert_close(outputs["token_rewards"], before.score(rows)[0], rtol=0, atol=0)  # the updated PRM's
    _, after = _prm(update="after")
    outputs, _ = after.step(rows)
    assert torch.equal(outputs["token_rewards"], torch.zeros_like(outputs["token_rewards"]))  # the PRM before its step
    assert not torch.equal(after.score(rows)[0], outputs["token_rewards"])  # ... and it did step


def test_micro_batches_share_the_mini_batch_denominator():
    rows = _rows()
    _, whole = _prm(token_budget=10_000)
    _, split = _prm(token_budget=1)  # one row per forward
    a, b = whole.update(rows), split.update(rows)
    assert a["reward_model/ce_loss"] == pytest.approx(b["reward_model/ce_loss"], abs=1e-6)
    assert a["reward_model/grad_norm"] == pytest.approx(b["reward_model/grad_norm"], rel=1e-4)


# ----------------------------------------------------------------------------- resume


def test_resume_gives_the_same_policy_and_prm(tmp_path):
    from skpo.config import load_config
    from skpo.models.loading import tiny_arith_dir
    from skpo.training.setup import build_trainer

    def config(out, steps):
        return load_config(None, [
            f"model.path={tiny_arith_dir()}", "train.method=prime", f"train.steps={steps}", "train.prompts_per_step=2",
            "rollout.max_new_tokens=32", "rollout.temperature=1.5", "train.lr=1e-3", f"log.out_dir={out}",
            "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=30", "eval.every=0",
            "method.reward_model_params.lr=1.0e-3",
        ])

    full = build_trainer(config(tmp_path / "full", 2))
    prm_start = {k: v.clone() for k, v in full.reward_model.plugin.prm.state_dict().items()}
    full.train()
    first = build_trainer(config(tmp_path / "split", 1))
    first.train()
    assert (tmp_path / "split" / "checkpoints" / "step_000001" / "reward_model.pt").is_file()
    resumed = build_trainer(config(tmp_path / "split", 2), resume=True)
    assert resumed.state.step == 1
    resumed.train()
    a, b = full.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    prm_a, prm_b = full.reward_model.plugin, resumed.reward_model.plugin
    assert any(not torch.equal(prm_start[k], v) for k, v in prm_a.prm.state_dict().items())  # the PRM trained
    assert all(torch.equal(v, prm_b.prm.state_dict()[k]) for k, v in prm_a.prm.state_dict().items())
    opt_a, opt_b = prm_a.optimizer.state_dict()["state"], prm_b.optimizer.state_dict()["state"]
    assert opt_a.keys() == opt_b.keys() and all(
        torch.equal(opt_a[i][name], opt_b[i][name]) for i in opt_a for name in ("exp_avg", "exp_avg_sq", "step"))
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all("reward_model/ce_loss" in x for x in lines)


def test_prm_from_a_path_and_a_missing_path_named(tmp_path):
    from skpo.models.loading import tiny_arith_dir

    rows = _rows()
    policy, prm = _prm(prm_path=str(tiny_arith_dir()))
    assert prm.prm is not policy and prm.ref is not prm.prm
    assert all(not p.requires_grad for p in prm.ref.parameters()) and all(p.requires_grad for p in prm.prm.parameters())
    prm.update(rows)
    # the reference is the PRM's starting point (verl: ref_path = the PRM's path), not moved by its update
    ref = dict(prm.ref.state_dict().items())
    assert all(torch.equal(ref[k], v) for k, v in policy.state_dict().items())
    with pytest.raises(MethodError, match=r"method\.reward_model_params\.prm_path: .*does not exist"):
        _prm(prm_path=str(tmp_path / "nowhere"))

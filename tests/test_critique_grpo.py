"""Critique-GRPO: critiques, refinement prompts, the policy-shaping loss, the joint group.

Hand values: critiques of known flawed arithmetic solutions; the shaping loss and its gradient
``−A·γπ/(π+γ)²`` on three tokens; advantages ``R − mean`` over answers and refinements
together; loss terms that share the joint group's denominators. Runs: the rollout kind on the
embedded tiny model (every decoded token counted, refinements are rows of ``q``), with the
tiny model as critic, and on the math-data layout with a chat stand-in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from skpo.algorithms import POLICY_LOSSES, PolicyLossInputs
from skpo.algorithms.policy_shaping import PolicyShapingParams
from skpo.config import load_config
from skpo.engines import HFEngine
from skpo.methods import MethodError, resolve_method
from skpo.models.forward import policy_forward
from skpo.models.loading import load_tokenizer, tiny_arith_dir
from skpo.rollout.critique import select_refinements
from skpo.rows import Rows, pad_responses
from skpo.tasks.arith import ArithProblem
from skpo.tasks.critiques import refinement_draft, refinement_prompt_ids, step_critique, verdict_critique
from skpo.tasks.templates import plain_input_ids
from skpo.training.advantages import with_advantages
from skpo.training.setup import build_trainer
from skpo.training.update import update

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ArithProblem.from_question("6+7+5+15")  # 6+7=13, 13+5=18, 18+15=33


# ----------------------------------------------------------------------------- critiques


@pytest.mark.parametrize("completion,critique", [
    ("6+7=13\n13+5=18\n18+15=33\nAnswer: 33", "all steps are correct; the answer 33 is right"),
    ("6+7=13\n13+5=17\n17+15=32\nAnswer: 32", "line 2 is wrong: 13 + 5 is 18, not 17"),
    ("6+7=13\n13-5=8\n8+15=23\nAnswer: 23", "line 2 is wrong: step 2 of the problem is 13 + 5, not 13 - 5"),
    ("6+7=13\n12+5=17\n17+15=32\nAnswer: 32", "line 2 is wrong: it should start from 13, the previous result, not 12"),
    ("6+7=13\nso 18\n18+15=33\nAnswer: 33", "line 2 is not an equation: it should compute 13 + 5"),
    ("6+7=13\nAnswer: 13", "line 2 is missing: it should compute 13 + 5"),
    ("6+7=13\n13+5=18\n18+15=33\nAnswer: 30", "all steps are correct, but the answer 30 is wrong: the last step gives 33"),
    ("6+7=13\n13+5=18\n18+15=33", "all steps are correct, but the answer line is missing: it should read Answer: 33"),
    ("6+7=13\n13+5=18\n18+15=33\n33+1=34\nAnswer: 34",
     "lines 1 to 3 are correct, but line 4 is one step too many: the problem has 3 steps"),
])
def test_step_critique_names_the_first_wrong_line(completion, critique):
    assert step_critique(completion, PROBLEM) == critique


def test_verdict_critiques_are_the_source_templates():
    assert verdict_critique(False, "42") == "The generated solution is incorrect, the ground truth is 42."  # simple_gt
    assert verdict_critique(True, "\\frac{1}{2}") == "The generated solution is correct, the ground truth is \\frac{1}{2}."
    assert verdict_critique(False) == "The generated solution is incorrect."  # simple (indicative)


def test_plain_refinement_prompt_is_the_skip_layout():
    tokenizer = load_tokenizer(tiny_arith_dir())
    q = plain_input_ids(tokenizer, PROBLEM)
    previous, critique = "6+7=13\n13+5=17\n17+15=32\nAnswer: 32", "line 2 is wrong: 13 + 5 is 18, not 17"
    ids = refinement_prompt_ids(tokenizer, q, 0, previous, critique)
    assert ids[len(ids) - len(q):] == q  # [s, q]: the task prompt last, the model answers it afresh
    assert tokenizer.decode(ids) == ("6+7=13\n13+5=17\n17+15=32\nAnswer: 32\nCritique: line 2 is wrong: 13 + 5 is 18, "
                                     "not 17\nQ: 6+7+5+15\nA:\n")
    assert refinement_draft(previous + "\n", critique) == refinement_draft(previous, critique)


@pytest.mark.parametrize("rewards,k,kept", [
    ([0.0, 1.0, 0.0, 1.0], 1, [1]),  # the first correct one
    ([0.0, 0.0, 0.0], 1, [0]),  # none correct: the first of the best
    ([0.2, 0.7, 0.7, 0.1], 1, [1]),
    ([0.0, 1.0, 0.0, 1.0], 2, [1, 3]),
    ([0.0, 1.0, 0.5], 3, [1, 2, 0]),
])
def test_select_refinements_keeps_correct_ones_first(rewards, k, kept):
    assert select_refinements(rewards, k) == kept


# ----------------------------------------------------------------------------- the shaping loss


def test_policy_shaping_loss_hand_values_and_gradient():
    entry = POLICY_LOSSES.get("policy_shaping")
    params = entry.make_params({"gamma": 0.1})
    probs = torch.tensor([[0.5, 0.1, 0.9, 0.3]])
    log_prob = probs.log().requires_grad_(True)
    adv = torch.tensor([[1.0, -2.0, 0.5, float("nan")]])  # NaN and -inf on the padded token: no leak
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    old = torch.tensor([[-9.0, 3.0, 0.0, float("-inf")]])  # not read: no ratio, no clip
    out = entry.fn(PolicyLossInputs(log_prob, old, adv, mask), params)
    # f(π) = π/(π+0.1): 0.5/0.6, 0.1/0.2, 0.9/1.0; loss = −A·f
    expected = torch.tensor([[-0.5 / 0.6, 2.0 * 0.5, -0.5 * 0.9, 0.0]])
    assert torch.allclose(out.loss_mat * mask, expected, atol=1e-6)
    (out.loss_mat * mask).sum().backward()
    # d(−A·f)/d log π = −A·γπ/(π+γ)²: −1·0.05/0.36, 2·0.01/0.04, −0.5·0.09/1.0
    grad = torch.tensor([[-0.05 / 0.36, 0.02 / 0.04, -0.5 * 0.09, 0.0]])
    assert torch.allclose(log_prob.grad, grad, atol=1e-6)
    assert out.metrics["shaped_prob"].item() == pytest.approx((0.5 / 0.6 + 0.5 + 0.9) / 3, abs=1e-6)
    assert out.metrics["token_prob"].item() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        entry.make_params({"gamma": 0.0})
    assert PolicyShapingParams().gamma == 0.1


# ----------------------------------------------------------------------------- the method


@pytest.mark.parametrize("overrides,match", [
    ({"rollout_params": {"critique": "model"}}, r"rollout_params: critique 'model' needs critic_model"),
    ({"rollout_params": {"critic_model": "policy"}}, r"rollout_params: critic_model is only read with critique 'model'"),
    ({"rollout_params": {"num_refinements": 8}}, r"rollout_params: num_refinements=8 must be <= group_size=7"),
    ({"rollout_params": {"critique": "gpt4"}}, r"rollout_params: critique_refine: critique must be one of"),
    ({"terms": {"refinement": {"agg": "token-mean"}}},
     r"terms\.refinement\.agg: roles \['response', 'refinement'\] form one group"),
    ({"terms": {"refinement": {"loss_params": {"gamma": -1}}}}, r"method\.terms\.refinement\.loss_params: gamma must be > 0"),
])
def test_bad_parameters_name_the_key(overrides, match):
    with pytest.raises(MethodError, match=match):
        resolve_method("critique_grpo", overrides)


def _config(out: Path, *extra: str):
    return load_config(None, [
        "model.path=tiny-arith", "train.method=critique_grpo", "train.steps=1", "train.prompts_per_step=2",
        "method.group_size=3", "rollout.max_new_tokens=24", "train.lr=1e-3", f"log.out_dir={out}",
        "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=20", *extra,
    ])


def _hand_rows(tokenizer) -> Rows:
    """Two prompts; prompt a: answers with rewards 1, 0, 0 and a refinement with 1; prompt b:
    answers 0, 0, 0 and a refinement with 1. Roles interleaved on purpose."""
    roles = ["response", "refinement", "response", "response", "response", "response", "refinement", "response"]
    keys = ["a", "a", "a", "a", "b", "b", "b", "b"]
    rewards = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    texts = ["1+2=3\nAnswer: 3", "1+2=3\nAnswer: 3", "1+2=4\nAnswer: 4", "Answer: 5", "3+4=7", "3+4=8\nAnswer: 8",
             "3+4=7\nAnswer: 7", "Answer: 1"]
    responses = [tokenizer.encode(t) + [tokenizer.eos_token_id] for t in texts]
    ids, mask, lps = pad_responses(responses, [[0.0] * len(r) for r in responses], tokenizer.pad_token_id)
    prompts = {k: tokenizer.encode(f"Q: {q}\nA:\n") for k, q in (("a", "1+2"), ("b", "3+4"))}
    return Rows([prompts[k] for k in keys], ids, mask, lps, torch.tensor(rewards), keys, role=roles)


def test_advantages_are_computed_over_the_joint_group(tmp_path):
    trainer = build_trainer(_config(tmp_path / "run"))
    rows = _hand_rows(trainer.tokenizer)
    metrics: dict[str, float] = {}
    out = with_advantages(trainer.advantage_context(0, metrics), rows)
    # group a: mean of 1, 1, 0, 0 = 0.5; group b: mean of 0, 0, 1, 0 = 0.25 (no std division)
    expected = torch.tensor([0.5, 0.5, -0.5, -0.5, -0.25, -0.25, 0.75, -0.25])
    # (per role alone: a's answers 2/3, −1/3, −1/3, b's all 0, the refinements r/(1+ε) = 1)
    for b in range(len(rows)):
        n = int(rows.response_mask[b].sum())
        assert torch.allclose(out.advantages[b, :n], expected[b].expand(n), atol=1e-6), b
        assert torch.all(out.advantages[b, n:] == 0)
    assert metrics["response/zero_adv_group_share"] == 0.0 and metrics["refinement/zero_adv_group_share"] == 0.0
    trainer.close()


def test_the_two_terms_share_the_joint_groups_denominators(tmp_path):
    trainer = build_trainer(_config(tmp_path / "run"))
    rows = with_advantages(trainer.advantage_context(0, {}), _hand_rows(trainer.tokenizer))
    with torch.no_grad():
        trainer.policy.eval()
        log_prob, _ = policy_forward(trainer.policy, rows.prompt_ids, rows.response_ids, rows.response_mask,
                                     trainer.pad_id)
    mask, adv = rows.response_mask, rows.advantages
    is_ref = torch.tensor([r == "refinement" for r in rows.roles()])
    # on-policy: ratio 1, the answers' loss is −A; the refinements' −A·π/(π+0.1)
    answer_sum = float((-adv * mask)[~is_ref].sum())
    refine_sum = float((-adv * torch.sigmoid(log_prob - math.log(0.1)) * mask)[is_ref].sum())
    scale = len(rows) * trainer.cfg.rollout.max_new_tokens  # 8 rows of the joint group × the constant length
    metrics: dict[str, float] = {}
    update(trainer.actor, trainer.method, rows, trainer.dist, trainer.update_settings, 0, metrics)
    assert metrics["response/pg_loss"] == pytest.approx(answer_sum / scale, rel=1e-4)
    assert metrics["refinement/pg_loss"] == pytest.approx(refine_sum / scale, rel=1e-4)
    assert metrics["actor/pg_loss"] == pytest.approx((answer_sum + refine_sum) / scale, rel=1e-4)
    trainer.close()


class _Recorder:
    """Every ``HFEngine.generate`` call: the engine, its prompts and its completions."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[object, list[list[int]], list]] = []
        real = HFEngine.generate

        def generate(engine, prompts, n, params, max_new_tokens=None):
            out = real(engine, prompts, n, params, max_new_tokens=max_new_tokens)
            self.calls.append((engine, prompts, out))
            return out

        monkeypatch.setattr(HFEngine, "generate", generate)

    def decoded(self, engine=None, other=False) -> int:
        return sum(len(c.token_ids) for e, _, out in self.calls if (engine is None or (e is engine) != other)
                   for row in out for c in row)


def _rows_of_step(trainer, monkeypatch) -> dict:
    from skpo.training import trainer as trainer_mod

    seen = {}
    real = trainer_mod.with_advantages

    def capture(ctx, rows):
        seen["rows"] = rows
        seen["out"] = real(ctx, rows)
        return seen["out"]

    monkeypatch.setattr(trainer_mod, "with_advantages", capture)
    seen["metrics"] = trainer.train_step(0)
    return seen


def test_rollout_joins_refinements_of_q_to_the_group_and_counts_every_token(tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    trainer = build_trainer(_config(tmp_path / "run"))
    seen = _rows_of_step(trainer, monkeypatch)
    rows, metrics, tok = seen["rows"], seen["metrics"], trainer.tokenizer
    roles = rows.roles()
    assert roles.count("response") == 2 * 3 and roles.count("refinement") == 2 * 1
    # every decoded token is counted: 6 answers + 6 refinements (all sampled, 2 kept)
    (_, q_prompts, answers), (_, refine_prompts, refined) = recorder.calls
    assert len(answers) == 2 and len(refine_prompts) == 6
    parts = metrics["tokens/decoded_answers"] + metrics["tokens/decoded_refinements"]
    assert metrics["tokens/decoded"] == recorder.decoded() == parts
    assert metrics["tokens/decoded_critic"] == 0
    item_of = {tuple(it.prompt_ids): it for it in trainer.source.items}
    for j, prompt in enumerate(refine_prompts):  # [answer + its step critique, q] for answer j
        text = tok.decode(answers[j // 3][j % 3].token_ids, skip_special_tokens=True)
        problem = item_of[tuple(q_prompts[j // 3])].answer.arith
        assert prompt == refinement_prompt_ids(tok, q_prompts[j // 3], 0, text, step_critique(text, problem))
    for b in rows.rows_of("refinement"):  # a row of q, its tokens as sampled, the best refinement of its group
        g = q_prompts.index(rows.prompt_ids[b])
        candidates = [list(refined[g * 3 + j][0].token_ids) for j in range(3)]
        assert rows.response_ids[b, : int(rows.response_mask[b].sum())].tolist() in candidates
        rewards = trainer.score([item_of[tuple(q_prompts[g])]] * 3, candidates).rewards
        assert float(rows.rewards[b]) == max(rewards)
    adv = seen["out"].advantages[:, 0]
    for key in set(rows.prompt_keys):  # A = R − mean over the G + k rows of the prompt
        group = [b for b, k in enumerate(rows.prompt_keys) if k == key]
        mean = rows.rewards[group].mean()
        assert torch.allclose(adv[group], rows.rewards[group] - mean, atol=1e-6)
    trainer.close()


@pytest.mark.parametrize("critic", ["tiny-arith", "policy"])
def test_a_critic_model_writes_the_critiques_of_wrong_answers(tmp_path, monkeypatch, critic):
    recorder = _Recorder(monkeypatch)
    trainer = build_trainer(_config(tmp_path / "run", "method.rollout_params.critique=model",
                                    f"method.rollout_params.critic_model={critic}",
                                    "method.rollout_params.critic_max_new_tokens=16"))
    metrics = trainer.train_step(0)
    _answers_call, critic_call, refine_call = recorder.calls
    assert (critic_call[0] is trainer.engine.engine) == (critic == "policy")  # (the engine inside the context limit)
    tok = trainer.tokenizer
    n_wrong = round((1 - metrics["accuracy/mean"]) * 6)
    assert n_wrong > 0 and len(critic_call[1]) == n_wrong  # the critic sees the wrong answers only
    assert "Student's answer:" in tok.decode(critic_call[1][0])
    critiques = [tok.decode(c[0].token_ids, skip_special_tokens=True).strip() for c in critic_call[2]]
    drafts = [tok.decode(p) for p in refine_call[1]]
    assert sum(any(f"\nCritique: {c}\n" in d for d in drafts) for c in critiques) == n_wrong
    assert sum("Critique: The generated solution is correct, the ground truth is" in d for d in drafts) == 6 - n_wrong
    critic_tokens = sum(len(c[0].token_ids) for c in critic_call[2])
    assert metrics["tokens/decoded_critic"] == critic_tokens > 0
    assert metrics["tokens/decoded"] == recorder.decoded()  # answers + refinements + critic
    trainer.close()


def test_math_data_layout_with_a_chat_standin(standin, tmp_path, monkeypatch):
    """Chat-templated math data (the dapo-math layout): ground-truth critiques, refinement
    prompts through the chat template, one training step."""
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {b}? Put the answer within \\boxed{{}}."}],
             "reward_model": {"ground_truth": str(a + b)}} for a, b in ((2, 3), (4, 5))]
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recorder = _Recorder(monkeypatch)
    cfg = load_config(None, [
        f"model.path={standin('qwen2.5-math-7b')}", "data.task=jsonl", f"data.path={data}", "data.reward=math",
        "train.method=critique_grpo",
        f"reward.function={ROOT / 'tests' / 'data' / 'rewards_for_tests.py'}:parity", "train.steps=1",
        "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=8", "eval.every=0",
        f"log.out_dir={tmp_path / 'run'}", "log.progress=false", "log.tensorboard=false",
    ])
    trainer = build_trainer(cfg)
    metrics = trainer.train_step(0)
    (_, q_prompts, _), (_, refine_prompts, _) = recorder.calls
    tok = trainer.tokenizer
    for j, prompt in enumerate(refine_prompts):
        text = tok.decode(prompt)
        q = tok.decode(q_prompts[j // 2])
        gold = "5" if "2 + 3" in q else "9"
        assert text.startswith(q.split("<|im_start|>user")[0] + "<|im_start|>user\nWhat is ")  # the task's conversation
        assert "Your previous solution:" in text and text.endswith("<|im_start|>assistant\n")
        assert (f"The generated solution is correct, the ground truth is {gold}." in text
                or f"The generated solution is incorrect, the ground truth is {gold}." in text)
    assert metrics["tokens/decoded"] == recorder.decoded()
    assert all(math.isfinite(v) for v in metrics.values()) and metrics["actor/grad_norm"] > 0
    trainer.close()

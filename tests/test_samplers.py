"""Prompt samplers and rollout allocation: Knapsack RL, MMR1 VAS, Scaf-GRPO's hinted groups.

Hand values for the pure parts (the knapsack value and DP on a 3-prompt example, the allocation
rules, the pass-rate history, VAS weights and batches, GRPO on groups of unequal size, the
hint prompts), then the trainer: per-prompt group sizes reach the engine, every decoded token
is counted, and the samplers' statistics survive a checkpoint.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from skpo.algorithms import PROMPT_SAMPLERS, PlanRequest, build_prompt_sampler
from skpo.algorithms.advantages import AdvantageInputs, GRPOClipParams, grpo_advantage
from skpo.algorithms.prompt_samplers import (
    KnapsackParams,
    PassRateHistory,
    knapsack_allocation,
    knapsack_extra_rollouts,
    knapsack_value,
    rollouts_for_signal,
    uniform_indices,
    variance_promotion_weights,
    vas_batch_indices,
)
from skpo.engines import Completion, SamplingParams
from skpo.engines.engine import mix_seed
from skpo.methods import MethodError, resolve_method
from skpo.rollout import Scores
from skpo.rollout.group import generate_groups

# ----------------------------------------------------------------------------- Knapsack RL


def test_knapsack_value_hand_values():
    # Value(N, p) = (1 − p^N − (1 − p)^N) · p(1 − p)²
    assert float(knapsack_value(2, 0.5)) == 0.5 * 0.125  # (1 − .25 − .25) · .5·.25
    assert float(knapsack_value(3, 0.5)) == 0.75 * 0.125
    assert float(knapsack_value(2, 0.25)) == pytest.approx(0.375 * 0.140625)  # (1 − .0625 − .5625) · .25·.75²
    assert float(knapsack_value(10, 0.0)) == 0.0 and float(knapsack_value(10, 1.0)) == 0.0
    # rollouts for a mixed group with probability 0.9: log(0.1)/log(max(p, 1 − p))
    assert rollouts_for_signal(torch.tensor([0.5]))[0].item() == pytest.approx(math.log(0.1) / math.log(0.5))  # 3.32
    assert rollouts_for_signal(torch.tensor([0.25]), cost="expectation")[0].item() == pytest.approx(1 / 0.1875 - 1)


def test_knapsack_dp_three_prompts_by_hand():
    """p = (0.5, 0.25, 0.75), 2 rollouts each already, 3 extra to place, at most 2 per prompt.

    gain(k) = Value(2 + k, p):          k=1                k=2
        p = 0.50   0.75·0.125   = 0.09375      0.875·0.125    = 0.109375
        p = 0.25   0.5625·.140625 = 0.0791016  0.6796875·.140625 = 0.0955811
        p = 0.75   0.5625·.046875 = 0.0263672  0.6796875·.046875 = 0.0318604
    The authors' DP scores k = 0 as 0: (1,1,1) = 0.19921875 beats (1,2,0) = 0.1893311 and
    (2,1,0) = 0.1884766. Valuing k = 0 as Value(2, p) (0.0625, 0.0527344, 0.0175781), the
    objective as written: (1,2,0) = 0.2069092 beats (2,1,0) = 0.2060547 and (1,1,1) = 0.1992188.
    """
    p = torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64)
    assert knapsack_extra_rollouts(p, 3, min_n=2, max_extra=2).tolist() == [1, 1, 1]
    assert knapsack_extra_rollouts(p, 3, min_n=2, max_extra=2, count_base_value=True).tolist() == [1, 2, 0]
    # the caps hold 6 at most: a budget of 8 gives every prompt its cap, the 2 left over go first-first
    assert knapsack_extra_rollouts(p, 8, min_n=2, max_extra=2).tolist() == [3, 3, 2]
    # ties: two equal prompts and one extra — the earlier prompt gets it (the source's strict >)
    assert knapsack_extra_rollouts(torch.tensor([0.5, 0.5]), 1, min_n=2, max_extra=4).tolist() == [1, 0]


def test_knapsack_allocation_rules_by_hand():
    params = KnapsackParams(min_n=2, max_n=128, negative_n=2, positive_n=2)
    # A frontier p=.5, B trusted p=0, C trusted p=1, D untrusted; G=4, budget 16.
    # floors 2+2+2+4 = 10, 6 left; A's cost ⌊log .1/log .5⌋ = 3 < 6: the excess 3 goes to the
    # unsolved prompts B and D (an untrusted prompt counts as p = 0, as in the source): B +2, D +1;
    # the DP places 3 extras on A alone: A = 5.
    sizes, info = knapsack_allocation(torch.tensor([0.5, 0.0, 1.0, 0.3]), torch.tensor([True, True, True, False]), 4, 16, params)
    assert sizes.tolist() == [5, 4, 2, 5] and info["fallback"] == 1.0
    # no frontier prompt: the left-over goes to the unsolved ones
    sizes, _ = knapsack_allocation(torch.tensor([0.0, 1.0]), torch.tensor([True, True]), 4, 8, params)
    assert sizes.tolist() == [6, 2]
    # nothing unsolved and no frontier: the nominal G for everyone
    sizes, _ = knapsack_allocation(torch.tensor([1.0, 1.0]), torch.tensor([True, True]), 4, 8, params)
    assert sizes.tolist() == [4, 4]
    # without the fallback the DP takes it all: 6 extras on A
    sizes, info = knapsack_allocation(torch.tensor([0.5, 0.0, 1.0, 0.3]), torch.tensor([True, True, True, False]), 4, 16,
                                      KnapsackParams(fallback=False))
    assert sizes.tolist() == [8, 2, 2, 4] and info["fallback"] == 0.0
    # two frontier prompts, costs 3 + 5 = 8 ≥ 4 left: the DP gets the 4, no fallback
    sizes, info = knapsack_allocation(torch.tensor([0.5, 0.25]), torch.tensor([True, True]), 4, 8, params)
    assert int(sizes.sum()) == 8 and info["fallback"] == 0.0 and sizes.tolist() == [4, 4]


def test_pass_rate_history_by_hand_and_state():
    h = PassRateHistory(buffer_length=4, min_observations=3)
    assert h.estimate("q") == (False, 0.0)
    h.observe("q", [1, 0])
    assert h.estimate("q") == (False, 0.5)  # 2 < 3 observations
    h.observe("q", [1, 1])
    assert h.estimate("q") == (True, 0.75)  # last 4 of 1,0,1,1
    h.observe("q", [0, 0, 0, 0, 0])
    assert h.estimate("q") == (True, 0.0)  # a visit of ≥ 4 answers is its own estimate
    h.observe("q", [1])
    assert h.estimate("q") == (True, 0.25)  # last 4 of …,0,0,0,0,1
    again = PassRateHistory(buffer_length=4, min_observations=3)
    again.load_state_dict(json.loads(json.dumps(h.state_dict())))
    again.observe("q", [1]), h.observe("q", [1])
    assert again.estimate("q") == h.estimate("q") == (True, 0.5) and again.count("q") == 11  # 2+2+5+1+1
    with pytest.raises(ValueError, match="buffer_length"):
        PassRateHistory(buffer_length=8).load_state_dict(h.state_dict())


def test_knapsack_sampler_plans_uniform_prompts_and_spends_the_whole_budget():
    keys = [f"q{i}" for i in range(10)]
    sampler = build_prompt_sampler("knapsack", {"min_observations": 4})
    for i, key in enumerate(keys):  # p = 0, .25, .5, .75, 1, 0, …
        sampler.observe([key] * 4, [1.0] * (i % 5) + [0.0] * (4 - i % 5), step=0)
    request = lambda: PlanRequest(keys, 6, 8, step=3, generator=torch.Generator().manual_seed(5))  # noqa: E731
    plan = sampler.plan(request())
    assert plan.indices == uniform_indices(10, 6, torch.Generator().manual_seed(5)).tolist()
    assert sum(plan.group_sizes) == 6 * 8 and all(n > 0 for n in plan.group_sizes)
    rates = [(plan.indices[b] % 5) / 4 for b in range(6)]
    frontier = [n for n, p in zip(plan.group_sizes, rates) if 0 < p < 1]
    solved = [n for n, p in zip(plan.group_sizes, rates) if p == 1]
    assert solved and all(n == 2 for n in solved) and max(frontier) > 2  # rollouts move off solved prompts
    # the plan is a function of the state: a copy loaded from the checkpoint plans the same
    copy = build_prompt_sampler("knapsack", {"min_observations": 4})
    copy.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    assert copy.plan(request()).group_sizes == plan.group_sizes


# ----------------------------------------------------------------------------- MMR1 VAS


def test_variance_promotion_weights_by_hand():
    # OVS = p(1−p): 0, .25, .1875, 0; min-max over the pool: 0, 1, .75, 0 (÷ (.25 + 1e-8))
    w = variance_promotion_weights(torch.tensor([0.0, 0.5, 0.25, 1.0]))
    torch.testing.assert_close(w, torch.tensor([0.0, 0.25, 0.1875, 0.0], dtype=torch.float64) / (0.25 + 1e-8))
    # momentum: w = m·w_old + (1 − m)·VPS
    w2 = variance_promotion_weights(torch.tensor([0.0, 0.5, 0.25, 1.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]), 0.5)
    torch.testing.assert_close(w2, 0.5 * torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64) + 0.5 * w)


def test_vas_batch_mixes_weighted_draws_with_a_walk_over_one_permutation():
    weights = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0], dtype=torch.float64)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(11)).tolist()
    batches = [vas_batch_indices(weights, 5, 0.5, step, 11, torch.Generator().manual_seed(step)) for step in range(3)]
    for step, (idx, n_w) in enumerate(batches):
        assert n_w == 2 and len(idx) == 5
        weighted, uniform = idx[0:4:2], idx[1:4:2] + idx[4:]  # interleaved: w, u, w, u, u
        assert set(weighted) <= {2, 5}  # only prompts with weight
        start = [0, 3, 0][step]  # (t·3) mod 7, back to 0 when fewer than 3 are left
        assert uniform == perm[start : start + 3]
    # every weight 0 (all prompts scored alike): the weighted part is drawn uniformly, no error
    idx, _ = vas_batch_indices(torch.zeros(7, dtype=torch.float64), 4, 1.0, 0, 11, torch.Generator().manual_seed(0))
    assert len(idx) == 4


def test_vas_sampler_scores_the_pool_every_t_steps_and_keeps_its_weights():
    sampler = build_prompt_sampler("vas", {"update_every": 4, "scoring_rollouts": 2})
    assert sampler.scoring_due(0) == 2  # before the first step (no weights yet)
    keys = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="no scores"):
        sampler.plan(PlanRequest(keys, 2, 8, step=0, generator=torch.Generator()))
    sampler.observe_scoring(keys, [[True, False], [True, True], [False, False], [True, False]], step=0)
    assert sampler.weights == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.0, "d": 1.0}, abs=1e-7)
    assert [sampler.scoring_due(t) for t in range(1, 9)] == [0, 0, 0, 2, 0, 0, 0, 2]
    plan = sampler.plan(PlanRequest(keys, 4, 8, step=1, generator=torch.Generator().manual_seed(0)))
    assert plan.group_sizes is None and set(plan.indices[0:4:2]) <= {0, 3}
    copy = build_prompt_sampler("vas", {"update_every": 4, "scoring_rollouts": 2})
    copy.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    assert copy.weights == sampler.weights and copy.scoring_due(1) == 0


# ----------------------------------------------------------------------------- registry, validation


def test_registry_metadata_and_bad_settings_name_the_key():
    assert {"uniform", "prioritized", "knapsack", "vas"} <= set(PROMPT_SAMPLERS.names())
    assert PROMPT_SAMPLERS.get("knapsack").meta["allocates"] is True
    assert PROMPT_SAMPLERS.get("prioritized").meta["needs"] == ("value_tracker",)
    with pytest.raises(MethodError, match=r"prompt_sampling_params: knapsack: unknown parameter\(s\) \['max_nn'\]"):
        resolve_method("knapsack", {"prompt_sampling_params": {"max_nn": 3}})
    with pytest.raises(MethodError, match=r"prompt_sampling: unknown prompt sampler 'knap'"):
        resolve_method("grpo", {"prompt_sampling": "knap"})
    with pytest.raises(MethodError, match=r"group_size: knapsack prompt sampling needs group_size >= 2"):
        resolve_method("knapsack", {"group_size": 1})
    with pytest.raises(MethodError, match=r"which rollout 'skpo' does not take"):
        resolve_method("skpo", {"prompt_sampling": "knapsack"})
    with pytest.raises(MethodError, match=r"DAPO's refill would draw more: set filter_groups: false"):
        resolve_method("dapo", {"prompt_sampling": "knapsack"})
    with pytest.raises(MethodError, match=r"mixture_ratio must be in \[0, 1\]"):
        resolve_method("vas", {"prompt_sampling_params": {"mixture_ratio": 1.5}})
    with pytest.raises(MethodError, match=r"rollout_params: scaffold: unknown parameter\(s\) \['warmup'\]"):
        resolve_method("scaf_grpo", {"rollout_params": {"warmup": 3}})
    # documents without prompt_sampling_params keep their old form (a resumed run compares them)
    from skpo.methods import method_to_document

    assert "prompt_sampling_params" not in method_to_document(resolve_method("grpo"))


# ----------------------------------------------------------------------------- groups of unequal size


class FakeEngine:
    """Sample ``j`` of a prompt with prompt seed ``s``: ``[s % 97 + 3, j + 3]`` (the seed contract)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def generate(self, prompts, n, params, max_new_tokens=None):
        from skpo.engines.engine import prompt_seeds

        self.calls.append((len(prompts), n))
        return [[Completion([s % 97 + 3, j + 3], [-0.5, -0.25], "stop") for j in range(n)]
                for s in prompt_seeds(params.seed, len(prompts))]


def test_generate_groups_keeps_each_prompts_samples():
    engine = FakeEngine()
    prompts = [[1, 2], [3], [4, 5, 6], [7]]
    params = SamplingParams(seed=123)
    sized = generate_groups(engine, prompts, [3, 0, 5, 3], params)
    uniform = engine.generate(prompts, 5, params)
    assert [len(g) for g in sized] == [3, 0, 5, 3]
    for got, full in zip(sized, uniform):
        assert [c.token_ids for c in got] == [c.token_ids for c in full[: len(got)]]
    assert engine.calls[:2] == [(2, 3), (1, 5)]  # one call per distinct size, none for size 0


def test_grpo_on_groups_of_unequal_size_and_the_advantage_clip():
    # group a = (1, 0, 0): mean 1/3, Bessel std √(1/3): A = (2/3)/√(1/3) = 1.1547, −(1/3)/√(1/3) = −0.5774
    # group b = (1, 0):    mean 1/2, std √(1/2):     A = ±0.7071
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    batch = AdvantageInputs(rewards.unsqueeze(-1), torch.ones(5, 1), ["a", "a", "a", "b", "b"])
    adv = grpo_advantage(batch, GRPOClipParams(epsilon=0.0))[:, 0]
    s3, s2 = math.sqrt(1 / 3), math.sqrt(1 / 2)
    torch.testing.assert_close(adv, torch.tensor([(2 / 3) / s3, -(1 / 3) / s3, -(1 / 3) / s3, 0.5 / s2, -0.5 / s2]))
    clipped = grpo_advantage(batch, GRPOClipParams(epsilon=0.0, clip=1.0))[:, 0]
    torch.testing.assert_close(clipped, torch.tensor([1.0, -(1 / 3) / s3, -(1 / 3) / s3, 0.5 / s2, -0.5 / s2]))


# ----------------------------------------------------------------------------- Scaf-GRPO hints


@pytest.fixture(scope="module")
def tokenizer():
    from skpo.models.loading import load_tokenizer, tiny_arith_dir

    return load_tokenizer(tiny_arith_dir())


def _arith_item(tokenizer, question="37+48-12"):
    from skpo.tasks.arith import ArithProblem
    from skpo.tasks.dataset import Problem
    from skpo.tasks.sources import PromptItem
    from skpo.tasks.templates import plain_input_ids

    problem = ArithProblem.from_question(question)
    record = Problem(index=0, id=question, question=question, gold=str(problem.answer), arith=problem)
    return PromptItem(question, tuple(plain_input_ids(tokenizer, problem)), record)


def test_arith_hints_are_the_first_solution_lines_as_a_skip_input(tokenizer):
    from skpo.rollout.scaffold import ScaffoldParams, hint_prompt_ids

    class Source:
        pass

    source = Source()
    source.tokenizer = tokenizer
    levels = hint_prompt_ids(source, _arith_item(tokenizer), ScaffoldParams())
    texts = [tokenizer.decode(ids) for ids in levels]
    # 37+48=85, 85-12=73; levels past the last line repeat it (as the source repeats a short tier)
    assert texts == ["37+48=85\nQ: 37+48-12\nA:\n"] + ["37+48=85\n85-12=73\nQ: 37+48-12\nA:\n"] * 3


def test_data_hints_come_from_the_hint_columns(tmp_path, tokenizer):
    from skpo.rollout.scaffold import ScaffoldParams, _check_hints, hint_prompt_ids
    from skpo.tasks.dataset import DatasetSpec
    from skpo.tasks.sources import DatasetSource

    row = {"question": "What is 2+3?", "answer": "5", "know": ["Add the numbers.", "Count up."], "sol": "2+3=5"}
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(row) + "\n")
    source = DatasetSource(tokenizer, DatasetSpec(path=str(path), prompt_column="question", answer_column="answer",
                                                   template="{question}\nAnswer:"), use_chat_template=False)
    params = ScaffoldParams(levels_per_tier=2, hint_columns={"know": "Knowledge Hints", "sol": "Solution Hints"})
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in hint_prompt_ids(source, source.items[0], params)]
    assert texts == [
        "Question: What is 2+3?\nKnowledge Hints: Add the numbers.\nAnswer:",
        "Question: What is 2+3?\nKnowledge Hints: Add the numbers. Count up.\nAnswer:",
        "Question: What is 2+3?\nSolution Hints: 2+3=5\nAnswer:",
        "Question: What is 2+3?\nSolution Hints: 2+3=5\nAnswer:",
    ]
    with pytest.raises(ValueError, match=r"set rollout_params.hint_columns"):
        _check_hints(source, source.items[0], ScaffoldParams())
    with pytest.raises(ValueError, match=r"hint_columns: prompt .* has no column\(s\) \['plan'\]"):
        _check_hints(source, source.items[0], ScaffoldParams(hint_columns={"plan": "Planning Hints"}))


def test_an_all_wrong_group_gets_its_lowest_solving_hint_in_place_of_its_first_answer(tokenizer):
    from skpo.rollout.base import RolloutContext, Timer
    from skpo.rollout.group import SampledGroup
    from skpo.rollout.scaffold import ScaffoldParams, _hint_failed_groups, hint_prompt_ids

    class Source:
        pass

    source = Source()
    source.tokenizer = tokenizer
    a, b, c = (_arith_item(tokenizer, q) for q in ("37+48-12", "5+6-1", "9+9+9"))
    engine = FakeEngine()

    def score(items, responses):  # hinted answers: level 1 wrong, level ≥ 2 right for a; c never
        ok = [it is a and k % 4 != 0 for k, it in enumerate(items)]
        return Scores([1.0 if o else -1.0 for o in ok], ok)

    def group(item, correct):
        n = len(correct)
        return SampledGroup(item, [[9, 9]] * n, [[-1.0, -1.0]] * n, [1.0 if x else -1.0 for x in correct],
                            list(correct), informative=len(set(correct)) > 1, kept=True)

    groups = [group(a, [False] * 3), group(b, [True, False, False]), group(c, [False] * 2)]
    ctx = RolloutContext(engine=engine, params=SamplingParams(seed=7), rollout_params=ScaffoldParams(warmup_steps=2), group_size=4,
                         step=1, score=score, sample_prompts=None, source=source, pad_id=0, max_new_tokens=8, timer=Timer(),
                         generator=torch.Generator())
    assert _hint_failed_groups(ctx, groups)[:2] == (0, 0)  # step 1 < warm-up 2: no hints
    ctx.step = 2
    decoded, prefill, metrics, _verdicts = _hint_failed_groups(ctx, groups)
    levels = hint_prompt_ids(source, a, ScaffoldParams())
    assert groups[0].prompts[0] == levels[1] and groups[0].prompts[1:] == [list(a.prompt_ids)] * 2  # level 2
    assert groups[0].rewards == [1.0, -1.0, -1.0] and groups[0].correct[0] is True
    hinted = engine.generate([levels[1]], 1, SamplingParams(seed=[mix_seed(mix_seed(7, 83), 1)]))[0][0]
    assert groups[0].responses[0] == hinted.token_ids and groups[0].logprobs[0] == hinted.logprobs
    assert groups[1].prompts is None and groups[2].prompts is None  # mixed group untouched; c unsolved
    assert groups[2].rewards == [-1.0, -1.0]
    # 2 all-wrong groups × 4 levels, one answer each, 2 tokens: all decoded tokens counted
    assert decoded == 8 * 2 and metrics["scaffold/hint_answers"] == 8 and metrics["scaffold/solved_with_hint"] == 1
    assert metrics["scaffold/solved_level_mean"] == 2 and prefill == sum(len(x) for x in levels) + sum(
        len(x) for x in hint_prompt_ids(source, c, ScaffoldParams()))


def test_the_rollout_returns_the_verdicts_of_every_answer_it_scored(tokenizer):
    """The reward's verdicts come back in the rollout's result (what the step's sample records
    say of each row), from each of its scorings: a Scaf-GRPO step scores its group answers, then
    the hinted answers of the all-wrong group; an answer scored twice keeps its later verdict."""
    from skpo.rewards.base import Verdict
    from skpo.rollout.base import RolloutContext, Timer
    from skpo.rollout.scaffold import ScaffoldParams, scaffold_rollout

    class Source:
        pass

    source = Source()
    source.tokenizer = tokenizer
    items = [_arith_item(tokenizer, q) for q in ("37+48-12", "5+6-1")]
    calls: list[dict] = []

    def score(items, responses):  # the group answers all wrong; every hinted answer right
        ok = bool(calls)
        verdicts = {(it.key, tuple(r)): Verdict(float(ok), ok, f"scoring {len(calls) + 1}")
                    for it, r in zip(items, responses)}
        calls.append(verdicts)
        return Scores([1.0 if ok else -1.0] * len(items), [ok] * len(items), verdicts)

    ctx = RolloutContext(engine=FakeEngine(), params=SamplingParams(seed=7), rollout_params=ScaffoldParams(warmup_steps=0),
                         group_size=3, step=0, score=score, sample_prompts=None, source=source, pad_id=0,
                         max_new_tokens=8, timer=Timer(), generator=torch.Generator())
    result = scaffold_rollout(ctx, items)
    assert len(calls) == 2 and result.verdicts == {**calls[0], **calls[1]}
    rows = result.rows
    said = [result.verdicts[(key, tuple(rows.response_ids[b, : int(rows.response_mask[b].sum())].tolist()))]
            for b, key in enumerate(rows.prompt_keys)]
    assert [v.correct for v in said] == [r > 0 for r in rows.rewards.tolist()]
    assert [v.reason for v in said] == ["scoring 2", "scoring 1", "scoring 1"] * 2  # the first answer: hinted


# ----------------------------------------------------------------------------- in the trainer


class CountingEngine:
    """Wraps the trainer's engine: records every call's prompts, n and decoded tokens."""

    def __init__(self, engine) -> None:
        self.engine, self.calls, self.decoded = engine, [], 0

    def __getattr__(self, name):  # everything else (cuts, sleep, sync) is the wrapped engine's
        return getattr(self.engine, name)

    def generate(self, prompts, n, params, max_new_tokens=None):
        out = self.engine.generate(prompts, n, params, max_new_tokens=max_new_tokens)
        self.calls.append(([tuple(p) for p in prompts], n))
        self.decoded += sum(len(c.token_ids) for row in out for c in row)
        return out


def _config(out, method, *extra):
    from skpo.config import load_config
    from skpo.models.loading import tiny_arith_dir

    return load_config(None, [
        f"model.path={tiny_arith_dir()}", f"train.method={method}", "train.steps=1", "train.prompts_per_step=4",
        "rollout.max_new_tokens=16", "rollout.temperature=1.5", "train.lr=1e-3", f"log.out_dir={out}",
        "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=12", "eval.every=0", *extra,
    ])


def test_knapsack_group_sizes_reach_the_engine_and_every_token_counts(tmp_path):
    from skpo.training.setup import build_trainer

    cfg = _config(tmp_path / "run", "knapsack", "method.group_size=4")
    trainer = build_trainer(cfg)
    for i, item in enumerate(trainer.source.items):  # trusted histories: p = 0, 1/4, 1/2, 3/4, 1, …
        trainer.state.prompt_sampler.observe([item.key] * 8, [1.0] * (2 * (i % 5)) + [0.0] * (8 - 2 * (i % 5)), step=0)
    plan = trainer.plan_prompts(0)
    assert sum(plan.group_sizes) == 4 * 4 and len(set(plan.group_sizes)) > 1
    engine = trainer.engine = CountingEngine(trainer.engine)
    metrics = trainer.train_step(0)
    sampled = {p: n for prompts, n in engine.calls for p in prompts}
    assert [sampled[tuple(it.prompt_ids)] for it in plan.items] == plan.group_sizes
    assert metrics["tokens/decoded"] == engine.decoded and metrics["sampler/frontier_prompts"] > 0
    trainer.state.step += 1
    trainer.save()
    state = trainer.state.prompt_sampler.state_dict()
    trainer.close()
    assert sum(state["history"]["counts"]) == 12 * 8 + 16  # the step's 16 rewards joined the history
    resumed = build_trainer(_config(tmp_path / "run", "knapsack", "method.group_size=4", "train.steps=2"), resume=True)
    assert resumed.state.prompt_sampler.state_dict() == state
    resumed.close()


def test_vas_scoring_rollouts_are_counted_and_their_weights_resume(tmp_path):
    from skpo.training.setup import build_trainer

    extra = ("method.group_size=2", "method.prompt_sampling_params.scoring_rollouts=2", "method.kl_coef=0")
    trainer = build_trainer(_config(tmp_path / "run", "vas", *extra))
    engine = trainer.engine = CountingEngine(trainer.engine)
    metrics = trainer.train_step(0)
    pool = len(trainer.source.items)
    assert engine.calls[0][1] == 2 and len(engine.calls[0][0]) == pool  # 2 answers for every pool prompt first
    assert metrics["sampler/scoring_answers"] == 2 * pool and metrics["tokens/decoded"] == engine.decoded
    assert metrics["sampler/scoring_decoded_tokens"] < engine.decoded  # plus the step's own rollout
    assert len(trainer.state.prompt_sampler.weights) == pool
    trainer.state.step += 1
    trainer.save()
    weights = dict(trainer.state.prompt_sampler.weights)
    trainer.close()
    resumed = build_trainer(_config(tmp_path / "run", "vas", *extra, "train.steps=2"), resume=True)
    assert resumed.state.prompt_sampler.weights == weights and resumed.state.prompt_sampler.scoring_due(1) == 0
    resumed.close()


def test_scaffold_hinted_rows_train_and_count(tmp_path, monkeypatch):
    from skpo.training.setup import build_trainer
    from skpo.training.trainer import Trainer

    calls = []

    def score(self, items, responses):  # the group answers all wrong, every hinted answer right
        calls.append(len(items))
        ok = len(calls) > 1
        return Scores([1.0 if ok else -1.0] * len(items), [ok] * len(items))

    monkeypatch.setattr(Trainer, "score", score)
    trainer = build_trainer(_config(tmp_path / "run", "scaf_grpo", "method.group_size=3",
                                    "method.rollout_params.warmup_steps=0", "method.rollout_params.levels_per_tier=2"))
    engine = trainer.engine = CountingEngine(trainer.engine)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    metrics = trainer.train_step(0)
    trainer.close()
    assert calls == [4 * 3, 4 * 2]  # 4 all-wrong groups of 3, then 2 hint levels each
    assert metrics["scaffold/solved_with_hint"] == 4 and metrics["scaffold/solved_level_mean"] == 1
    assert metrics["tokens/decoded"] == engine.decoded and metrics["response/zero_adv_group_share"] == 0.0
    assert metrics["actor/grad_norm"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())

"""Monte Carlo prefix values and VinePPO step values."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from skpo.engines import HFEngine, SamplingParams, mix_seed
from skpo.rollout import (
    mc_values,
    mc_values_batch,
    step_boundaries,
    token_step_index,
    vineppo_values,
    vineppo_values_batch,
)

VOCAB, PAD, EOS, TARGET = 50, 0, 1, 7


def contains_target(prompt: list[int], response: list[int]) -> float:
    return float(TARGET in response)


def tiny_qwen(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        initializer_range=0.2, tie_word_embeddings=False, pad_token_id=PAD, eos_token_id=EOS,
    )
    return Qwen2ForCausalLM(cfg).float().eval()


P_TARGET, P_EOS = 0.04, 0.06


def fixed_distribution_model() -> Qwen2ForCausalLM:
    """A Qwen2 whose next-token distribution ignores the input: P(7) = 0.04, P(EOS) = 0.06,
    the rest uniform. Done by replacing lm_head with a zero-weight layer whose bias is log p."""
    m = tiny_qwen()
    probs = torch.full((VOCAB,), (1 - P_TARGET - P_EOS) / (VOCAB - 2))
    probs[TARGET], probs[EOS] = P_TARGET, P_EOS
    head = torch.nn.Linear(m.config.hidden_size, VOCAB, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(probs.log())
    m.lm_head = head
    return m


def p_target_before_eos(budget: int) -> float:
    """P(a continuation of at most `budget` tokens emits 7 before EOS) under the fixed model."""
    other = 1 - P_TARGET - P_EOS
    return P_TARGET * (1 - other**budget) / (P_TARGET + P_EOS)


class Recorder:
    """Wraps an engine and records its calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def generate(self, prompts, n, params, max_new_tokens=None):
        self.calls.append((prompts, n, params, max_new_tokens))
        return self.inner.generate(prompts, n, params, max_new_tokens)


@pytest.fixture(scope="module")
def engine() -> HFEngine:
    return HFEngine(tiny_qwen(), pad_token_id=PAD, eos_token_id=EOS, batch_size=32)


def reward_any_low(prompt, response) -> float:
    # deterministic in the tokens, and true for roughly a third of short continuations
    return float(any(10 <= t < 13 for t in response))


def test_mc_values_equal_brute_force_per_prefix(engine):
    params = SamplingParams(max_new_tokens=6, seed=42)
    prompts = [[3, 4, 5], [9, 8]]
    responses = [[20, 21, 22, 23, 24, 25, 26], [30, 11, 31]]
    positions = [[0, 2, 7, 5], [1, 3, 0]]  # 7 and 3 are terminal
    rec = Recorder(engine)
    got = mc_values_batch(rec, prompts, responses, positions, 8, params, reward_any_low)
    assert len(rec.calls) == 1  # one engine call for everything
    assert len(rec.calls[0][0]) == 5  # the two terminal positions are not sampled

    m = 0
    nontrivial = 0
    for r, (prompt, response, pos_list) in enumerate(zip(prompts, responses, positions)):
        for v, pos in enumerate(pos_list):
            prefix = response[:pos]
            if pos == len(response):
                expect = reward_any_low(prompt, response)
            else:
                one = replace(params, seed=[mix_seed(42, m)])
                conts = engine.generate([prompt + prefix], 8, one)[0]
                expect = sum(reward_any_low(prompt, prefix + c.token_ids) for c in conts) / 8
                nontrivial += 0 < expect < 1
            assert got[r][v].item() == pytest.approx(expect, abs=1e-7)
            m += 1
    assert nontrivial >= 2  # the comparison is not all zeros / ones

    # the single-response form is the batch form with one response
    single = mc_values(engine, prompts[0], responses[0], positions[0], 8, params, reward_any_low)
    torch.testing.assert_close(single, got[0])


def test_terminal_position_uses_own_reward_without_sampling(engine):
    rec = Recorder(engine)
    calls = []

    def reward(prompt, response):
        calls.append(list(response))
        return 0.25

    vals = mc_values(rec, [3, 4], [5, 6, 7], [3], 4, SamplingParams(seed=0), reward)
    assert vals.tolist() == [0.25] and calls == [[5, 6, 7]] and rec.calls == []
    vals = mc_values(rec, [3, 4], [5, 6, 7], [3, 3], 4, SamplingParams(seed=0), reward, terminal_reward=-1.0)
    assert vals.tolist() == [-1.0, -1.0] and rec.calls == []


def test_values_match_known_probability_k400():
    eng = HFEngine(fixed_distribution_model(), pad_token_id=PAD, eos_token_id=EOS, batch_size=400)
    k, budget = 400, 20
    params = SamplingParams(max_new_tokens=budget, seed=2024)
    response = [20, 21, TARGET, 22, 23]
    vals = mc_values(eng, [3, 4], response, [0, 2, 3, 5], k, params, contains_target)
    p = p_target_before_eos(budget)  # ≈ 0.38
    tol = 4 * math.sqrt(p * (1 - p) / k)  # 4 binomial standard deviations ≈ 0.097
    assert abs(vals[0].item() - p) < tol and abs(vals[1].item() - p) < tol
    assert vals[2].item() == 1.0 and vals[3].item() == 1.0  # 7 already in the prefix


def test_max_response_tokens_and_truncated_reward():
    eng = HFEngine(fixed_distribution_model(), pad_token_id=PAD, eos_token_id=EOS, batch_size=64)
    rec = Recorder(eng)
    response = [20, 21, 22, 23, 24, 25]
    params = SamplingParams(max_new_tokens=99, seed=1)
    mc_values(rec, [3], response, [0, 4, 6], 16, params, contains_target, max_response_tokens=8)
    assert rec.calls[0][3] == [8, 4]  # the continued response stays within 8 tokens
    # with a 1-token budget the only ways to end are EOS, 7 (reward 1 then length) or length;
    # truncated_reward overrides every length-ended continuation
    vals = mc_values(eng, [3], response, [0], 200, replace(params, max_new_tokens=1),
                     contains_target, truncated_reward=-5.0)
    # EOS (p = 0.06) gives reward 0, everything else ends on length and gets -5
    assert vals.item() == pytest.approx(-5.0 * (1 - P_EOS), abs=4 * 5 * math.sqrt(0.06 * 0.94 / 200))


def test_step_boundaries_and_token_step_index():
    nl = 9
    ids = [2, 3, nl, 4, nl, nl, 5, 6, nl]
    b = step_boundaries(ids, {nl})
    assert b == [3, 6]  # a run of newlines is one delimiter; a final newline opens no step
    assert step_boundaries(ids, lambda t: t == nl) == b
    assert token_step_index(len(ids), b).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert token_step_index(4, []).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        token_step_index(5, [3, 2])


def test_vineppo_values_positions_terminal_and_backfill():
    eng = HFEngine(fixed_distribution_model(), pad_token_id=PAD, eos_token_id=EOS, batch_size=256)
    nl = 9
    response = [20, nl, 21, TARGET, nl, 22, nl, 23]  # 7 appears in step 1
    params = SamplingParams(max_new_tokens=10, seed=5)
    sv = vineppo_values(eng, [3], response, {nl}, 256, params, contains_target)
    assert sv.positions == [0, 2, 5, 7, 8] and sv.num_steps == 4
    assert sv.token_step.tolist() == [0, 0, 1, 1, 1, 2, 2, 3]
    p = p_target_before_eos(10)
    tol = 4 * math.sqrt(p * (1 - p) / 256)
    assert abs(sv.values[0].item() - p) < tol and abs(sv.values[1].item() - p) < tol
    assert sv.values[2:].tolist() == [1.0, 1.0, 1.0]  # 7 in the prefix; terminal = own reward

    # max_steps = 1: only s_0 is estimated, later states take the terminal value
    rec = Recorder(eng)
    [short] = vineppo_values_batch(rec, [[3]], [response], {nl}, 16, params, contains_target, max_steps=1,
                                   terminal_rewards=[0.5])
    assert len(rec.calls[0][0]) == 1
    assert short.values[1:].tolist() == [0.5, 0.5, 0.5, 0.5]

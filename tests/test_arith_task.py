"""The chained-arithmetic task: generator, reference and flawed solutions, checker, templates."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from skpo.models.tokenizer import build_tokenizer
from skpo.rewards.arith import check_answer, check_steps, parse_answer
from skpo.tasks.arith import (
    ArithConfig,
    ArithProblem,
    Step,
    flawed_solution,
    generate_problems,
    heldout_problems,
    solution_text,
    split_of,
)
from skpo.tasks.templates import (
    SKIP_SEPARATOR_IDS,
    continual_input_ids,
    plain_input_ids,
    plain_prompt_text,
    response_ids,
    skip_input_ids,
)

CONFIGS = [
    ArithConfig(),
    ArithConfig(min_ops=1, max_ops=6, max_operand=99, allow_negative=True),
    ArithConfig(operators=("+", "-", "*"), max_abs_result=500, allow_negative=True),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_problem_from_question_left_to_right():
    p = ArithProblem.from_question("37+48-12")
    assert p.answer == 73
    assert p.steps == (Step(37, "+", 48, 85), Step(85, "-", 12, 73))
    assert solution_text(p) == "37+48=85\n85-12=73\nAnswer: 73"
    # left to right, no precedence
    assert ArithProblem.from_question("3+4*2").answer == 14
    with pytest.raises(ValueError):
        ArithProblem.from_question("3+")
    with pytest.raises(ValueError):
        ArithProblem.from_question("3/4")


@pytest.mark.parametrize("config", CONFIGS)
def test_generator_deterministic_and_within_knobs(config):
    a = generate_problems(config, 300, seed=7)
    b = generate_problems(config, 300, seed=7)
    c = generate_problems(config, 300, seed=8)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    for p in a:
        assert config.min_ops <= p.n_ops <= config.max_ops
        assert config.min_operand <= p.steps[0].left <= config.max_operand
        for s in p.steps:
            assert s.op in config.operators
            assert config.min_operand <= s.right <= config.max_operand
            if not config.allow_negative:
                assert s.result >= 0
            if config.max_abs_result is not None:
                assert abs(s.result) <= config.max_abs_result
        assert ArithProblem.from_question(p.question) == p


def test_train_and_eval_sides_are_disjoint():
    config = ArithConfig()
    train = {p.question for p in generate_problems(config, 3000, seed=0, split="train")}
    held = heldout_problems(config, 200)
    assert len({p.question for p in held}) == 200  # distinct
    assert not train & {p.question for p in held}
    assert all(split_of(p.question) == "eval" for p in held)
    assert heldout_problems(config, 200) == held  # fixed


@pytest.mark.parametrize("config", CONFIGS)
def test_reference_solutions_pass_the_checker(config):
    for p in generate_problems(config, 500, seed=1, split=None):
        text = solution_text(p)
        assert check_answer(text, p)
        verdict = check_steps(text, p)
        assert verdict.first_error is None and verdict.all_correct
        assert verdict.correct == (True,) * p.n_ops
        assert verdict.n_correct_prefix == p.n_ops


@pytest.mark.parametrize("config", CONFIGS)
def test_flawed_solutions_fail_at_the_corrupted_step(config):
    rng = random.Random(3)
    for p in generate_problems(config, 300, seed=2, split=None):
        flawed = flawed_solution(p, rng)
        assert flawed.error_step <= (p.n_ops - 1) // 2  # early by default
        verdict = check_steps(flawed.text, p)
        assert verdict.first_error == flawed.error_step
        assert verdict.n_correct_prefix == flawed.error_step
        assert not check_answer(flawed.text, p)
        assert verdict.answer == flawed.answer != p.answer
        # the error is carried forward: later lines redo the arithmetic from the wrong value
        assert verdict.locally_valid[flawed.error_step] is False
        assert all(verdict.locally_valid[flawed.error_step + 1 :])
        for i in range(p.n_ops):
            forced = flawed_solution(p, rng, error_step=i)
            assert check_steps(forced.text, p).first_error == i


def test_step_checker_hand_cases():
    p = ArithProblem.from_question("37+48-12")  # 37+48=85, 85-12=73
    # wrong arithmetic in line 1
    v = check_steps("37+48=85\n85-12=74\nAnswer: 74", p)
    assert v.correct == (True, False) and v.first_error == 1 and not v.answer_correct
    # right arithmetic but off the chain (left operand is not the previous result)
    v = check_steps("37+48=85\n86-12=74\nAnswer: 74", p)
    assert v.correct == (True, False) and v.first_error == 1
    assert v.locally_valid == (True, False)
    # right arithmetic, right left operand, wrong operation
    v = check_steps("37+48=85\n85+12=97\nAnswer: 97", p)
    assert v.correct == (True, False) and v.first_error == 1
    # error carried forward: line 1 is locally valid but not correct
    v = check_steps("37+48=86\n86-12=74\nAnswer: 74", p)
    assert v.correct == (False, False) and v.locally_valid == (False, True) and v.first_error == 0
    # all steps right, answer missing / wrong / unparseable
    for text in ("37+48=85\n85-12=73", "37+48=85\n85-12=73\nAnswer: 72", "37+48=85\n85-12=73\nAnswer: seventy"):
        v = check_steps(text, p)
        assert v.correct == (True, True) and v.first_error == 2 and not check_answer(text, p)
    assert parse_answer("37+48=85\n85-12=73\nAnswer: seventy") is None
    # a missing step
    v = check_steps("37+48=85\nAnswer: 73", p)
    assert v.first_error == 1 and v.answer_correct  # the answer alone is still right
    assert check_answer("Answer: 73", p)  # outcome reward looks at the answer only
    # an extra line after the chain
    assert check_steps("37+48=85\n85-12=73\n73+0=73\nAnswer: 73", p).first_error == 2
    # garbage and blank lines are wrong lines
    v = check_steps("hello\n85-12=73\nAnswer: 73", p)
    assert v.correct == (False, True) and v.first_error == 0
    assert check_steps("\n37+48=85\n85-12=73\nAnswer: 73", p).first_error == 0
    assert check_steps("", p).first_error == 0 and parse_answer("") is None
    # spaces are tolerated; the first Answer line counts and the rest is ignored
    v = check_steps(" 37 + 48 = 85\n85 - 12 = 73\nAnswer:73\nAnswer: 5\nblah", p)
    assert v.first_error is None and v.answer == 73
    assert check_answer("Answer: -73", p) is False
    # negative intermediate values parse
    q = ArithProblem.from_question("5-12+3")
    assert check_steps("5-12=-7\n-7+3=-4\nAnswer: -4", q).first_error is None


def test_checker_needs_only_steps_and_answer():
    fake = SimpleNamespace(answer=3, steps=[SimpleNamespace(left=1, op="+", right=2, result=3)])
    assert check_steps("1+2=3\nAnswer: 3", fake).all_correct


def test_templates_round_trip(tokenizer):
    p = ArithProblem.from_question("37+48-12")
    q_ids = plain_input_ids(tokenizer, p)
    assert plain_prompt_text(p) == "Q: 37+48-12\nA:\n"
    assert tokenizer.decode(q_ids) == "Q: 37+48-12\nA:\n"
    r_ids = response_ids(tokenizer, p)
    assert r_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(r_ids, skip_special_tokens=True) == solution_text(p)
    assert tokenizer.decode(q_ids + r_ids) == "Q: 37+48-12\nA:\n37+48=85\n85-12=73\nAnswer: 73<|endoftext|>"

    segment = r_ids[:13]  # cut mid-number, as SKPO does
    assert tokenizer.decode(segment) == "37+48=85\n85-1"
    assert SKIP_SEPARATOR_IDS == ()
    skip = skip_input_ids(segment, q_ids)
    assert skip == segment + q_ids  # exactly, no separator
    assert tokenizer.decode(skip) == "37+48=85\n85-1Q: 37+48-12\nA:\n"
    cont = continual_input_ids(q_ids, segment)
    assert cont == q_ids + segment
    assert tokenizer.decode(cont) == "Q: 37+48-12\nA:\n37+48=85\n85-1"
    # the prompt starts with one word token that never occurs in a response
    first = tokenizer.convert_ids_to_tokens(q_ids[:1])
    assert first == ["Q"]
    for problem in generate_problems(ArithConfig(), 100, seed=0):
        assert q_ids[0] not in response_ids(tokenizer, problem)

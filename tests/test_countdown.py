"""The countdown task and its reward: generator, solver, reference and flawed solutions, the
bounded expression parser, first moves, and TinyZero's data layout."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from types import SimpleNamespace

import pytest

from skpo.models.tokenizer import build_tokenizer
from skpo.rewards import countdown as reward
from skpo.rewards.countdown import (
    MAX_COMPLETION_CHARS,
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_TOKENS,
    CountdownParseError,
    check_countdown,
    evaluate_expression,
    extract_expression,
    numbers_and_target,
    parse_expression,
)
from skpo.rewards.registry import get_reward
from skpo.tasks.countdown import (
    CountdownConfig,
    CountdownProblem,
    Move,
    dead_end_moves,
    first_move_kind,
    flawed_solution,
    generate_problems,
    heldout_problems,
    reachable,
    solution_text,
    solve,
    split_of,
)
from skpo.tasks.dataset import countdown_records
from skpo.tasks.templates import plain_prompt_text, response_ids

CONFIGS = [
    CountdownConfig(),
    CountdownConfig(min_numbers=2, max_numbers=5, max_number=50, max_target=500, max_intermediate=1000),
    CountdownConfig(min_numbers=4, max_numbers=4, operators=("+", "-"), max_number=9, min_target=1, max_target=30),
]


# ----------------------------------------------------------------------------- the reward


@pytest.mark.parametrize("answer, numbers, target, correct, reason", [
    ("Answer: ((44-19)*3)+8", [44, 19, 3, 8], 83, True, "correct"),
    ("Answer: (44-19)*3+8", [44, 19, 3, 8], 83, True, "correct"),  # precedence: * before +
    ("Answer: 44-19*3+8", [44, 19, 3, 8], -5, True, "correct"),  # 44 - 57 + 8
    ("Answer: 8 + 3 * (44 - 19)", [44, 19, 3, 8], 83, True, "correct"),  # spaces, any order
    ("Answer: 6/(1-3/4)", [6, 1, 3, 4], 24, True, "correct"),  # exact rationals: 6 / (1/4)
    ("Answer: 12-4-3", [12, 4, 3], 5, True, "correct"),  # left to right: (12-4)-3
    ("Answer: 12/4/3", [12, 4, 3], 1, True, "correct"),  # (12/4)/3
    ("Answer: 8/3*3", [8, 3, 3], 8, True, "correct"),  # (8/3)*3 = 8 exactly, no float drift
    ("Answer: 44-19=25", [44, 19], 25, True, "correct"),  # the equation written out: right side = the target
    ("Answer: 44-19=24", [44, 19], 25, False, "right side is 24, not the target 25"),
    ("<answer>25=44-19</answer>", [44, 19], 25, False, "'=' in the answer"),
    ("<answer>1+2=3=3</answer>", [1, 2], 3, False, "'=' in the answer"),
    ("<answer>\n (44 - 19)\t* 3\n</answer>", [44, 19, 3], 75, True, "correct"),  # tags on lines of their own
    ("<answer>(44-19)×3</answer>", [44, 19, 3], 75, True, "correct"),
    ("<answer>12÷4</answer>", [12, 4], 3, True, "correct"),
    ("Answer: 44+19+3", [44, 19, 3, 8], 66, False, "unused: 8"),
    ("Answer: 44+19+3+8+8", [44, 19, 3, 8], 82, False, "not given or used too often: 8"),
    ("Answer: 44+19+3+7", [44, 19, 3, 8], 73, False, "not given or used too often: 7; unused: 8"),
    ("Answer: 8/(3-3)+44", [44, 3, 3, 8], 1, False, "division by zero"),
    ("Answer: -44+19+3+8", [44, 19, 3, 8], -14, False, "unary '-'"),
    ("Answer: +44", [44], 44, False, "unary '+'"),
    ("Answer: 2**3", [2, 3], 8, False, "'**' (power)"),
    ("Answer: 2^3", [2, 3], 1, False, "unexpected character '^'"),
    ("Answer: abs(3-5)", [3, 5], 2, False, "names are not allowed"),
    ("Answer: __import__('os')", [1], 1, False, "names are not allowed"),
    ("Answer: 1.5*2", [1, 5, 2], 3, False, "decimal numbers"),
    ("Answer: (3+4", [3, 4], 7, False, "'(' without ')'"),
    ("Answer: 3+4)", [3, 4], 7, False, "')' without '('"),
    ("Answer: 3 4", [3, 4], 7, False, "unexpected '4' after a complete expression"),
    ("Answer: 3+", [3], 3, False, "ends where a number was expected"),
    ("Answer: ", [3], 3, False, "empty answer"),
    ("Answer: 3+()", [3], 3, False, "')' where a number was expected"),
    ("44-19=25\n25*3=75", [44, 19, 3], 75, False, "no answer found"),
    ("Answer: 7", [3, 4], 7, False, "unused: 3, 4"),
    ("Answer: 3+4", [3, 4], 8, False, "reaches 7, not 8"),
    ("Answer: 7/2", [7, 2], 3, False, "reaches 7/2, not 3"),
])
def test_reward_against_hand_written_cases(answer, numbers, target, correct, reason):
    verdict = check_countdown(answer, numbers, target)
    assert verdict.correct is correct and verdict.reward == float(correct)
    assert reason in verdict.reason


def test_where_the_final_equation_is_read():
    # TinyZero / verl: the last complete <answer>...</answer>, anywhere in the completion
    text = "<think>try <answer>3*4</answer> no</think>\n<answer> (3 + 4) </answer>"
    assert extract_expression(text) == (" (3 + 4) ", "answer tag")
    assert check_countdown(text, [3, 4], 7).correct
    assert check_countdown(text, [3, 4], 12).reason == "reaches 7, not 12"
    assert extract_expression("<answer> 3+4")[0] is None
    assert "closing" in check_countdown("<answer> 3+4", [3, 4], 7).reason
    # the tag wins over an Answer: line
    assert check_countdown("Answer: 3*4\n<answer>3+4</answer>", [3, 4], 7).correct
    # the embedded layout: the first line that starts with Answer:, the rest of that line
    assert extract_expression("3+4=7\nAnswer: 3+4\nAnswer: 3*4") == (" 3+4", "answer line")
    assert check_countdown("3+4=7\n  Answer: 3+4\n", [3, 4], 7).correct
    assert not check_countdown("Final Answer: 3+4", [3, 4], 7).correct  # must start the line


def test_hostile_answers_stop_at_a_bound_before_any_parsing():
    numbers, target = [1, 2, 3], 6
    # 10 MB of text: refused before it is searched (the cap's reason, nothing extracted)
    ten_mb = "Answer: " + "1+" * 5_000_000 + "1"
    verdict = check_countdown(ten_mb, numbers, target)
    assert not verdict.correct and verdict.extracted is None
    assert verdict.reason == f"completion over {MAX_COMPLETION_CHARS:,} characters"
    # an answer just under the completion cap but over the expression cap: refused untokenized
    long_answer = "<answer>" + "(" * (MAX_COMPLETION_CHARS - 100) + "</answer>"
    assert "answer over 256 characters" in check_countdown(long_answer, numbers, target).reason
    # nesting: one level past the cap stops the tokenizer (well inside the character cap)
    deep = "(" * (MAX_DEPTH + 1) + "1+2+3" + ")" * (MAX_DEPTH + 1)
    assert len(deep) < MAX_EXPRESSION_CHARS
    assert f"nested deeper than {MAX_DEPTH}" in check_countdown("Answer: " + deep, numbers, target).reason
    ok = "(" * MAX_DEPTH + "1+2+3" + ")" * MAX_DEPTH  # at the cap: parsed and right
    assert check_countdown("Answer: " + ok, numbers, target).correct
    # tokens: a short but long-winded answer
    many = "+".join(["1"] * (MAX_TOKENS // 2 + 1))
    assert len(many) < MAX_EXPRESSION_CHARS
    assert f"over {MAX_TOKENS} tokens" in check_countdown("Answer: " + many, numbers, target).reason
    # digits: no number literal longer than the cap (so no value grows past the caps' product)
    assert "more than 9 digits" in check_countdown("Answer: 1234567890*2", numbers, target).reason
    with pytest.raises(CountdownParseError):
        parse_expression("9" * 10)


def test_parser_precedence_and_associativity_against_python_on_safe_expressions():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(1, 6)
        parts = [str(rng.randint(1, 30))]
        for _ in range(n - 1):
            parts += [rng.choice("+-*/"), str(rng.randint(1, 30))]
        text = "".join(parts)
        if rng.random() < 0.5 and n >= 3:  # parenthesise a random middle operand pair
            i = 2 * rng.randint(0, n - 2)
            parts[i] = "(" + parts[i]
            parts[i + 2] = parts[i + 2] + ")"
            text = "".join(parts)
        # the expected value: Python's own rules with Fraction literals (a test oracle, not the reward)
        expected = eval(re.sub(r"(\d+)", r"Fraction(\1)", text), {"Fraction": Fraction})  # noqa: S307
        assert evaluate_expression(text) == expected, text


# ----------------------------------------------------------------------------- the solver


def _mutations(expression: str) -> list[str]:
    """Every expression with one number literal changed by ±1 or one operator swapped."""
    tokens = re.findall(r"\d+|[-+*/()]", expression)
    out = []
    for i, tok in enumerate(tokens):
        if tok.isdigit():
            subs = [str(int(tok) + 1)] + ([str(int(tok) - 1)] if int(tok) > 0 else [])
        elif tok in "+-*/":
            subs = [o for o in "+-*/" if o != tok]
        else:
            continue
        out += ["".join(tokens[:i] + [s] + tokens[i + 1 :]) for s in subs]
    return out


def test_every_solver_equation_scores_one_and_every_mutation_zero():
    rng = random.Random(0)
    checked = skipped = 0
    for _ in range(24):
        numbers = [rng.randint(1, 12) for _ in range(rng.randint(2, 4))]
        target = rng.randint(1, 60)
        solutions = solve(numbers, target, limit=6)
        assert bool(solutions) == reachable(numbers, target)
        for expr in solutions:
            assert check_countdown(f"Answer: {expr}", numbers, target).correct, (numbers, target, expr)
            assert check_countdown(f"<answer>{expr}</answer>", numbers, target).correct
            for mutated in _mutations(expr):
                try:  # a mutation may still reach the target (e.g. 2*2 -> 2+2): the exact evaluator says
                    still = evaluate_expression(mutated) == target and sorted(
                        int(t) for t in re.findall(r"\d+", mutated)) == sorted(numbers)
                except ZeroDivisionError:
                    still = False
                if still:
                    skipped += 1
                    continue
                verdict = check_countdown(f"Answer: {mutated}", numbers, target)
                assert not verdict.correct and verdict.reward == 0.0, (numbers, target, mutated)
                checked += 1
    assert checked > 300 and skipped < checked // 10


def test_solver_and_reachability_by_hand():
    assert reachable([4, 6], 24) and reachable([4, 6], 10) and reachable([4, 6], Fraction(2, 3))
    assert not reachable([4, 6], 25)
    assert reachable([1, 3, 4, 6], 24)  # 6 / (1 - 3/4): only through fractions
    assert solve([1, 3, 4, 6], 24) == ["6/(1-(3/4))"]
    assert not reachable([1, 1, 1], 10)
    assert solve([2, 3], 5) == ["2+3"]


# ----------------------------------------------------------------------------- the task


def test_problem_text_and_reference_solution():
    p = CountdownProblem((44, 19, 3, 8), 83, (Move(44, "-", 19, 25), Move(25, "*", 3, 75), Move(75, "+", 8, 83)),
                         "((44-19)*3)+8")
    assert p.question == "44 19 3 8 -> 83"
    assert plain_prompt_text(p) == "Q: 44 19 3 8 -> 83\nA:\n"
    assert solution_text(p) == "44-19=25\n25*3=75\n75+8=83\nAnswer: ((44-19)*3)+8"
    assert CountdownProblem.from_question(" 44 19  3 8->83") == CountdownProblem((44, 19, 3, 8), 83)
    with pytest.raises(ValueError):
        CountdownProblem.from_question("44 + 19 -> 63")
    tok = build_tokenizer()
    ids = response_ids(tok, p)
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1]) == solution_text(p)


@pytest.mark.parametrize("config", CONFIGS)
def test_generated_problems_are_reachable_by_construction_and_within_the_knobs(config):
    a = generate_problems(config, 150, seed=7)
    assert a == generate_problems(config, 150, seed=7)
    assert a != generate_problems(config, 150, seed=8)
    sizes = set()
    for p in a:
        sizes.add(len(p.numbers))
        assert config.min_numbers <= len(p.numbers) <= config.max_numbers
        assert all(config.min_number <= n <= config.max_number for n in p.numbers)
        assert config.min_target <= p.target <= config.max_target
        # the moves: N - 1 of them, larger number first, exact, positive, within the cap, using
        # each number or earlier result once, ending at the target
        pool = list(p.numbers)
        assert len(p.moves) == len(p.numbers) - 1
        for m in p.moves:
            assert m.op in config.operators and m.left >= m.right
            assert Fraction(m.result) == {"+": m.left + m.right, "-": m.left - m.right, "*": m.left * m.right,
                                          "/": Fraction(m.left, m.right)}[m.op]
            assert 0 < m.result <= config.max_intermediate
            pool.remove(m.left)
            pool.remove(m.right)
            pool.append(m.result)
        assert pool == [p.target]
        assert check_countdown(solution_text(p), p.numbers, p.target).correct
        assert split_of(p.question, config.eval_buckets) == "train"
    assert sizes == set(range(config.min_numbers, config.max_numbers + 1))


def test_heldout_set_is_distinct_eval_side_and_disjoint_from_training():
    config = CountdownConfig()
    held = heldout_problems(config, 40)
    assert len({p.question for p in held}) == 40
    assert all(split_of(p.question, config.eval_buckets) == "eval" for p in held)
    train = {p.question for p in generate_problems(config, 800, seed=0)}
    assert not train & {p.question for p in held}
    assert held == heldout_problems(config, 40)


def test_config_refuses_bad_knobs():
    with pytest.raises(ValueError, match="min_numbers"):
        CountdownConfig(min_numbers=1)
    with pytest.raises(ValueError, match="operators"):
        CountdownConfig(operators=("+", "%"))
    with pytest.raises(ValueError, match="max_intermediate"):
        CountdownConfig(max_target=500, max_intermediate=200)


def test_flawed_solution_opens_with_a_dead_end_and_ends_wrong():
    config = CountdownConfig()
    rng = random.Random(1)
    made = 0
    for p in generate_problems(config, 30, seed=3):
        flawed = flawed_solution(p, config, rng)
        if flawed is None:
            assert not dead_end_moves(p.numbers, p.target, config)
            continue
        made += 1
        first = flawed.moves[0]
        pool = list(p.numbers)
        pool.remove(first.left)
        pool.remove(first.right)
        assert not reachable([*pool, first.result], p.target)
        assert flawed.value != p.target
        assert flawed.text.split("\n")[0] == first.text
        verdict = check_countdown(flawed.text, p.numbers, p.target)
        assert not verdict.correct and verdict.reason.startswith("reaches")  # well formed, wrong value
        assert first_move_kind(flawed.text, p.numbers, p.target) == "dead_end"
        assert first_move_kind(solution_text(p), p.numbers, p.target) == "reachable"
    assert made > 15


def test_first_move_kinds_by_hand():
    numbers, target = (44, 19, 3, 8), 83
    assert first_move_kind("44-19=25\n...", numbers, target) == "reachable"
    assert first_move_kind("44+19=63\n", numbers, target) == "dead_end"  # 63, 3, 8 cannot make 83
    assert not reachable([63, 3, 8], 83)
    assert first_move_kind("44-19=26\n", numbers, target) == "invalid"  # wrong result
    assert first_move_kind("44-20=24\n", numbers, target) == "invalid"  # 20 not given
    assert first_move_kind("3-3=0\n", numbers, target) == "invalid"  # 3 given once
    assert first_move_kind("Answer: ((44-19)*3)+8", numbers, target) == "no_move"


# ----------------------------------------------------------------------------- the registry and data rows


def test_registry_reads_the_synthetic_problem_and_tinyzero_rows():
    entry = get_reward("countdown")
    p = generate_problems(CountdownConfig(), 1, seed=0)[0]
    record = countdown_records([p])[0]
    tinyzero = SimpleNamespace(row={"nums": [3, 4], "target": 7, "reward_model": {
        "style": "rule", "ground_truth": {"target": 12, "numbers": [3, 4]}}})  # ground_truth first
    plain = SimpleNamespace(row={"nums": [3.0, 4], "target": "7"})
    verdicts = entry.score([solution_text(p), "<answer>3*4</answer>", "Answer: 3+4"], [record, tinyzero, plain])
    assert [v.correct for v in verdicts] == [True, True, True]
    assert numbers_and_target(tinyzero) == ((3, 4), 12)
    for bad, match in [({"question": "x"}, "needs 'nums' and 'target'"), ({"nums": "3 4", "target": 7}, "list of integers"),
                       ({"nums": [3, -4], "target": 7}, "non-negative"), ({"nums": [3, 4], "target": 7.5}, "integer")]:
        with pytest.raises(ValueError, match=match):
            numbers_and_target(SimpleNamespace(row=bad))
    assert entry.check_problem is reward.numbers_and_target


"""Tests of the math answer verifier (``skpo.rewards.math``).

The benchmark tests score every gold answer of MATH-500 and GSM8K, written the way a model
would write it, and expect (nearly) all of them to be accepted; perturbed golds must all be
rejected. The timeout tests use an input that really makes sympy spin
(``\\boxed{10^{10^{10}}}``) and a deliberately slow function, and check that the call returns
within its bound and the pool keeps working.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import pytest

from skpo.paths import benchmark_dir
from skpo.rewards.base import Verdict
from skpo.rewards.math import (
    MathVerifierPool,
    extract_answer,
    gold_from_gsm8k,
    verify_math,
    verify_math_batch,
)

# Gold answers that math-verify is known not to accept in their own \boxed{} form. Measured:
# none on MATH-500 (500/500) and none on GSM8K (1319/1319 in both answer styles). A future
# math-verify release that regresses on a row makes the tests name the row.
KNOWN_MATH500_MISSES: frozenset[int] = frozenset()
KNOWN_GSM8K_MISSES: frozenset[int] = frozenset()

# Timeouts are checked by their mechanism (the job was cut and its worker replaced, the others
# completed), never by a stopwatch a busy machine breaks; a job that sleeps this long and comes
# back sooner was cut, not waited for.
NEVER_S = 60.0


def _read_jsonl(name: str) -> list[dict]:
    path: Path = benchmark_dir() / name
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def pool() -> Iterator[MathVerifierPool]:
    with MathVerifierPool(workers=2, timeout_s=10.0) as shared:
        yield shared


@pytest.fixture(scope="module")
def math500() -> list[dict]:
    rows = _read_jsonl("math500.jsonl")
    assert len(rows) == 500
    return rows


@pytest.fixture(scope="module")
def gsm8k_golds() -> list[str]:
    rows = _read_jsonl("gsm8k.jsonl")
    assert len(rows) == 1319
    return [gold_from_gsm8k(row["answer"]) for row in rows]


def _report(name: str, golds: list[str], verdicts: list[Verdict], known: frozenset[int]) -> float:
    misses = [(i, golds[i % len(golds)], v.reason) for i, v in enumerate(verdicts) if not v.correct]
    for index, gold, reason in misses:
        print(f"{name} miss: row {index % len(golds)} gold={gold!r} reason={reason!r}")
    rate = 1 - len(misses) / len(verdicts)
    print(f"{name}: {len(verdicts) - len(misses)}/{len(verdicts)} gold answers accepted ({rate:.4f})")
    unexpected = sorted({i % len(golds) for i, _, _ in misses} - known)
    assert unexpected == [], f"{name}: rows not in the known-miss list: {unexpected}"
    return rate


# ---------------------------------------------------------------------------------------------
# Gold answers are accepted.
# ---------------------------------------------------------------------------------------------


def test_math500_gold_answers_are_correct(pool: MathVerifierPool, math500: list[dict]) -> None:
    golds = [row["answer"] for row in math500]
    completions = [f"Putting everything together, the answer is $\\boxed{{{g}}}$." for g in golds]
    verdicts = pool.verify_batch(completions, golds)
    rate = _report("MATH-500", golds, verdicts, KNOWN_MATH500_MISSES)
    assert rate >= 0.99
    assert all(v.reward == 1.0 and v.reason == "correct" for v in verdicts if v.correct)


def test_gsm8k_gold_answers_are_correct(pool: MathVerifierPool, gsm8k_golds: list[str]) -> None:
    # Every row in both styles: a sentence, and the dataset's own "#### N" line.
    completions = [f"She has 3 bags left, so the answer is {g}." for g in gsm8k_golds]
    completions += [f"16 - 3 - 4 = 9 eggs, so...\n#### {g}" for g in gsm8k_golds]
    verdicts = pool.verify_batch(completions, gsm8k_golds + gsm8k_golds)
    rate = _report("GSM8K", gsm8k_golds, verdicts, KNOWN_GSM8K_MISSES)
    assert rate >= 0.99


def test_aime_and_amc_numeric_golds(pool: MathVerifierPool) -> None:
    aime = _read_jsonl("aime24.jsonl")
    amc = _read_jsonl("amc23.jsonl")
    golds: list[str | float] = [row["answer"] for row in aime] + [row["answer"] for row in amc]
    # Models write AIME answers without the leading zeros of "025", AMC ones without ".0".
    written = [str(int(float(g))) for g in golds]
    verdicts = pool.verify_batch([f"\\boxed{{{w}}}" for w in written], golds)
    assert [v.correct for v in verdicts] == [True] * 70
    off_by_one = pool.verify_batch([f"\\boxed{{{int(float(g)) + 1}}}" for g in golds], golds)
    assert not any(v.correct for v in off_by_one)


# ---------------------------------------------------------------------------------------------
# Perturbed answers are rejected.
# ---------------------------------------------------------------------------------------------


def _perturb(latex: str) -> str:
    """A wrong answer near the gold.

    The first integer goes up by one (``\\frac{3}{4}`` -> ``\\frac{4}{4}``, ``(3, \\pi)`` ->
    ``(4, \\pi)``, ``x^2+7x+10`` -> ``x^3+7x+10``); without a digit, a text answer becomes
    another text and an expression gets ``+1`` (``\\cot x`` -> ``\\cot x+1``).
    """
    match = re.search(r"\d+", latex)
    if match is not None:
        return f"{latex[: match.start()]}{int(match.group()) + 1}{latex[match.end():]}"
    if latex.startswith("\\text{"):
        return "\\text{Zebediah}"
    return f"{latex}+1"


def test_math500_perturbed_answers_are_wrong(pool: MathVerifierPool, math500: list[dict]) -> None:
    pairs = [(row["answer"], _perturb(row["answer"])) for row in math500]
    assert sum(not re.search(r"\d", gold) for gold, _ in pairs) == 11  # \text{Evelyn}, \pi, ...
    verdicts = pool.verify_batch([f"The answer is $\\boxed{{{w}}}$." for _, w in pairs], [g for g, _ in pairs])
    accepted = [(g, w) for (g, w), v in zip(pairs, verdicts) if v.correct]
    assert accepted == []
    assert all(v.reason == "wrong answer" for v in verdicts)


def test_gsm8k_perturbed_answers_are_wrong(pool: MathVerifierPool, gsm8k_golds: list[str]) -> None:
    plus_one = [str(Fraction(g) + 1) for g in gsm8k_golds]
    doubled = [str(Fraction(g) * 2) for g in gsm8k_golds if Fraction(g) != 0]
    golds = gsm8k_golds + [g for g in gsm8k_golds if Fraction(g) != 0]
    completions = [f"The answer is {w}." for w in plus_one] + [f"#### {w}" for w in doubled]
    verdicts = pool.verify_batch(completions, golds)
    assert len(verdicts) == 2638  # no GSM8K gold is 0
    assert [g for g, v in zip(golds, verdicts) if v.correct] == []


# ---------------------------------------------------------------------------------------------
# Hand cases.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "0.5", True),
        ("The answer is $\\boxed{0.5}$", "\\frac{1}{2}", True),
        ("Hence $\\boxed{2\\sqrt{2}}$.", "\\sqrt{8}", True),
        ("Hence $\\boxed{2\\sqrt{3}}$.", "\\sqrt{8}", False),
        ("So $\\boxed{\\frac{1}{3}}$.", "\\frac{1}{2}", False),
        ("So $\\boxed{x^2+1}$.", "x^2-1", False),
        ("So $\\boxed{(x-1)(x+1)}$.", "x^2-1", True),
        ("First $\\boxed{3}$, corrected: $\\boxed{4}$.", "4", True),
        ("First $\\boxed{4}$, corrected: $\\boxed{3}$.", "4", False),
        ("The roots are $\\boxed{1}$ and $\\boxed{2}$.", "1, 2", True),
        ("The roots are \\boxed{1} and \\boxed{2}.", "2", False),
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "2", False),  # listing guesses does not pay
        ("The answer is 1, 2, 3, 4", "2", False),
        ("The answer is 42.", "42", True),
        ("#### 1,234", "1234", True),
        ("Answer: 42", "42", True),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "0.75", True),
        ("$\\boxed{\\text{Evelyn}}$", "\\text{Evelyn}", True),
        ("$\\boxed{\\text{Bob}}$", "\\text{Evelyn}", False),
        ("$\\boxed{(3, \\frac{\\pi}{2})}$", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("The answer is 25", "025", True),
        ("The answer is 27", 27.0, True),
        ("The answer is \\boxed{204}", 204, True),
    ],
)
def test_hand_cases(pool: MathVerifierPool, completion: str, gold: str | float, correct: bool) -> None:
    (verdict,) = pool.verify_batch([completion], [gold])
    assert verdict.correct is correct, verdict
    assert verdict.reward == (1.0 if correct else 0.0)
    assert verdict.reason == ("correct" if correct else "wrong answer")


def test_missing_answer(pool: MathVerifierPool) -> None:
    verdicts = pool.verify_batch(["I am not sure how to solve this.", ""], ["7", "7"])
    assert verdicts == [Verdict(0.0, False, "no answer found", None)] * 2


def test_require_anchor_ignores_stray_numbers(pool: MathVerifierPool) -> None:
    text = "We tried 3 approaches and gave up at step 7"
    assert pool.verify_batch([text], ["7"])[0].correct is True  # last number, by default
    strict = pool.verify_batch([text, "Answer: 7"], ["7", "7"], require_anchor=True)
    assert [v.reason for v in strict] == ["no answer found", "correct"]


def test_extract_answer(pool: MathVerifierPool) -> None:
    texts = [
        "So $\\boxed{\\frac{1}{2}}$.",
        "#### 1,234",
        "Answer: 42",
        "I first thought \\boxed{1}. After checking the algebra again I get \\boxed{2}.",
        # math-verify reads boxes joined by a comma/"and"/"or" (or < 10 characters apart)
        # as one multi-part answer.
        "The roots are \\boxed{1} and \\boxed{2}.",
        "nothing here",
    ]
    assert pool.extract_batch(texts) == ["\\frac{1}{2}", "1234", "42", "2", "1,2", None]
    # The module-level function uses the shared default pool.
    assert extract_answer("The answer is $\\boxed{x^2}$") == "x^2"


def test_gold_from_gsm8k() -> None:
    assert gold_from_gsm8k("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gold_from_gsm8k("...\n#### 1,000") == "1000"
    assert gold_from_gsm8k("#### -3.5") == "-3.5"
    with pytest.raises(ValueError, match="####"):
        gold_from_gsm8k("no final line")


def test_module_functions_and_length_check() -> None:
    assert verify_math("The answer is $\\boxed{\\frac{1}{2}}$", "0.5").correct is True
    assert [v.correct for v in verify_math_batch(["\\boxed{1}", "\\boxed{2}"], ["1", "1"])] == [True, False]
    with pytest.raises(ValueError, match="2 completions but 1 golds"):
        verify_math_batch(["a", "b"], ["1"])


def test_works_from_threads(pool: MathVerifierPool) -> None:
    # math-verify's own SIGALRM timeout raises outside the main thread; ours does not.
    def check(i: int) -> bool:
        assert threading.current_thread() is not threading.main_thread()
        return pool.verify_batch([f"\\boxed{{{i}}}"], [str(i)])[0].correct

    with ThreadPoolExecutor(max_workers=3) as executor:
        assert list(executor.map(check, range(6))) == [True] * 6


# ---------------------------------------------------------------------------------------------
# Bounded time.
# ---------------------------------------------------------------------------------------------


def _sleep_then_return(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def _raise_value_error() -> None:
    raise ValueError("boom")


def _die() -> None:
    os._exit(3)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_adversarial_answer_times_out_and_pool_recovers(pool: MathVerifierPool) -> None:
    # sympy tries to build 10^(10^10) exactly: it would run for a very long time.
    hostile = "The answer is $\\boxed{10^{10^{10}}}$."
    pool.verify_batch(["\\boxed{1}"], ["1"])  # make sure the workers are up
    pids_before = set(pool.worker_pids())
    restarts_before = pool.restarts
    verdicts = pool.verify_batch([hostile, "The answer is 5", "\\boxed{6}"], ["5", "5", "5"], timeout_s=1.5)
    assert verdicts[0] == Verdict(0.0, False, "timeout after 1.5s", None)
    assert [v.reason for v in verdicts[1:]] == ["correct", "wrong answer"]
    assert pool.restarts == restarts_before + 1
    killed = pids_before - set(pool.worker_pids())
    assert len(killed) == 1
    assert not any(_pid_alive(pid) for pid in killed)
    # The pool keeps working afterwards, with both workers.
    after = pool.verify_batch([f"\\boxed{{{i}}}" for i in range(10)], [str(i) for i in range(10)])
    assert all(v.correct for v in after)
    assert len(pool.worker_pids()) == 2


def test_slow_jobs_are_cut_off_others_complete(pool: MathVerifierPool) -> None:
    started = time.monotonic()
    outcomes = pool.run(_sleep_then_return, [(NEVER_S,), (0.0,), (NEVER_S,), (0.1,)], timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == ["timeout", "ok", "timeout", "ok"]
    assert [o.value for o in outcomes] == [None, "finished", None, "finished"]
    assert elapsed < NEVER_S  # the slow jobs were cut, not waited for
    assert pool.run(_sleep_then_return, [(0.0,)])[0].value == "finished"


def test_errors_and_crashes_are_reported(pool: MathVerifierPool) -> None:
    outcomes = pool.run(_raise_value_error, [()])
    assert (outcomes[0].status, outcomes[0].value) == ("error", "ValueError: boom")
    crashed = pool.run(_die, [()])
    assert (crashed[0].status, crashed[0].value) == ("crashed", "exit code 3")
    assert pool.run(_sleep_then_return, [(0.0,)])[0].value == "finished"


def test_closed_pool_refuses_work() -> None:
    own = MathVerifierPool(workers=1)
    assert own.verify_batch(["\\boxed{2}"], ["2"])[0].correct is True
    pids = own.worker_pids()
    own.close()
    assert not any(_pid_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        own.verify_batch(["\\boxed{2}"], ["2"])


# ------------------------------------------------------------------------------------------
# Equivalent forms users' data and models write.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("completion, gold", [
    # scientific notation against e-notation golds (Minerva-Math writes 58 of its 272 golds so)
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33"),
    ("\\boxed{4.5\\cdot10^{33}}", "4.5e33"),
    ("\\boxed{4.5e33}", "4.5 \\times 10^{33}"),
    ("\\boxed{4.5 \\times 10^{-3}}", "4.5e-3"),
    ("The answer is $3.0E+2$.", "300"),
    # a percent sign after the number a "what percent" question asks for
    ("\\boxed{60\\%}", "60"),
    ("so 60% of the students. \\boxed{60}", "60\\%"),
    # thousands separators, units in \text{}, \dfrac, degrees, dollars
    ("\\boxed{58500}", "58,500"),
    ("\\boxed{12\\text{ cm}}", "12"),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}"),
    ("\\boxed{30}", "30^\\circ"),
    ("\\boxed{\\frac{270}{7}}", "\\frac{270}7\\text{ degrees}"),
    ("\\boxed{\\$18.90}", "18.90"),
])
def test_equivalent_forms_are_correct(pool: MathVerifierPool, completion: str, gold: str) -> None:
    [verdict] = pool.verify_batch([completion], [gold])
    assert verdict.correct, (completion, gold, verdict)


@pytest.mark.parametrize("completion, gold", [
    ("\\boxed{4.5 \\times 10^{32}}", "4.5e33"),
    ("\\boxed{4.6e33}", "4.5 \\times 10^{33}"),
    ("\\boxed{0.6}", "60\\%"),  # a fraction is not the percent the gold states
    ("\\boxed{61\\%}", "60"),
    ("\\boxed{2e3}", "2001"),
])
def test_near_forms_stay_wrong(pool: MathVerifierPool, completion: str, gold: str) -> None:
    [verdict] = pool.verify_batch([completion], [gold])
    assert not verdict.correct, (completion, gold, verdict)


def test_other_forms_of_the_shipped_math500_golds(pool: MathVerifierPool, math500: list[dict]) -> None:
    """Every MATH-500 gold written with a thousands separator, a unit in ``\\text{}``, degrees or
    ``\\frac``, answered in another common form of the same value."""
    import re

    rewrites = [
        (lambda g: re.fullmatch(r"\d{1,3}(,\d{3})+", g), lambda g: g.replace(",", "")),
        (lambda g: re.search(r"\^\\circ$", g), lambda g: g[: g.rindex("^")]),
        (lambda g: re.fullmatch(r"[^\\]*\d[^\\]*\\text\{ ?[a-z]+\}", g), lambda g: g[: g.index("\\text")]),
        (lambda g: g.startswith("\\frac{") and g.count("\\frac") == 1, lambda g: g.replace("\\frac", "\\dfrac")),
    ]
    cases = [(row["answer"], rewrite(row["answer"])) for row in math500 for match, rewrite in rewrites if match(row["answer"])]
    assert len(cases) >= 20
    verdicts = pool.verify_batch([f"The answer is $\\boxed{{{other}}}$." for _, other in cases], [g for g, _ in cases])
    wrong = [(g, o) for (g, o), v in zip(cases, verdicts) if not v.correct]
    assert wrong == []


def test_percent_answers_to_the_shipped_gsm8k_percent_questions(pool: MathVerifierPool) -> None:
    rows = [r for r in _read_jsonl("gsm8k.jsonl") if "what percent" in r["question"].lower()]
    golds = [gold_from_gsm8k(r["answer"]) for r in rows]
    assert len(rows) >= 5
    verdicts = pool.verify_batch([f"So the answer is \\boxed{{{g}\\%}}." for g in golds], golds)
    assert all(v.correct for v in verdicts), [(g, v) for g, v in zip(golds, verdicts) if not v.correct]


# ------------------------------------------------------------------------------------------
# Numbers compared as numbers: every magnitude, every form, signs kept (docs/rewards.md, "Numbers").
# ------------------------------------------------------------------------------------------


def _forms(mantissa: str, exponent: int) -> list[str]:
    """One value, ``mantissa × 10^exponent``, in the forms data and models write it."""
    from decimal import Decimal

    value = Decimal(mantissa).scaleb(exponent)
    plain = format(value, "f")
    return [f"{mantissa} \\times 10^{{{exponent}}}", f"{mantissa}\\cdot10^{{{exponent}}}", f"{mantissa}e{exponent}",
            f"{mantissa}E{exponent:+d}", plain]


def test_one_value_in_every_form_and_magnitude_agrees_and_near_values_do_not(pool: MathVerifierPool) -> None:
    completions, golds, want = [], [], []
    for exponent in range(-30, 31):
        for mantissa in ("2.88", "-6.02", "1"):
            forms = _forms(mantissa, exponent)
            for gold in (forms[0], forms[2]):  # golds in scientific and e-notation
                for answer in forms:
                    completions.append(f"So the value is $\\boxed{{{answer}}}$.")
                    golds.append(gold)
                    want.append(True)
                value = float(mantissa) * 10.0 ** exponent
                for wrong in (value * 1.001, value / 1.001, -value, value * 10):
                    completions.append(f"\\boxed{{{wrong!r}}}")
                    golds.append(gold)
                    want.append(False)
    verdicts = pool.verify_batch(completions, golds)
    bad = [(c, g, w) for c, g, w, v in zip(completions, golds, want, verdicts) if v.correct is not w]
    assert bad == [], bad[:10]
    assert len(completions) == 61 * 3 * 2 * 9


@pytest.mark.parametrize("completion, gold, correct", [
    ("\\boxed{2.88 \\times 10^{-25}}", "2.88e-19", False),  # each was paid before: values below 5e-7 were all 0
    ("\\boxed{10^{-20}}", "2.88e-19", False),
    ("\\boxed{9.9 \\times 10^{-19}}", "2.88e-19", False),
    ("\\boxed{-2.88 \\times 10^{-19}}", "2.88e-19", False),
    ("\\boxed{0.0000004}", "2.88e-19", False),
    ("\\boxed{6.626 \\times 10^{-34}}", "1.055 \\times 10^{-34}", False),
    ("\\boxed{0.0}", "2.88e-19", False),
    ("\\boxed{\\le 7}", "7", False),  # a bound is not the value
    ("\\boxed{< 7}", "7", False),
    ("\\boxed{7}", "\\le 7", False),
    ("\\boxed{\\leq 7}", "\\le 7", True),
    ("\\boxed{\\approx 7}", "7", True),
    ("\\boxed{602000000000000000000000}", "6.02e23", True),  # was refused: large values agree to the last digit
    ("\\boxed{0}", "0.0", True),
    ("\\boxed{10^{-30}}", "0", False),  # zero matches only zero
    ("\\boxed{0.142857}", "\\frac{1}{7}", True),  # six significant digits of an exact value
    ("\\boxed{0.1428}", "\\frac{1}{7}", False),
    ("\\boxed{\\frac{1}{10^{25}}}", "\\frac{2}{10^{25}}", False),  # fractions: exactly
    ("\\boxed{1000000000000000000000000000001}", "10^{30}", False),
    ("\\boxed{\\sqrt{2} \\times 10^{-20}}", "\\sqrt{3} \\times 10^{-20}", False),
    ("\\boxed{2\\sqrt{2} \\times 10^{-20}}", "\\sqrt{8} \\times 10^{-20}", True),
    ("\\boxed{.35626}", ".35625", False),  # why the tolerance is 1e-5, not 1e-4 (MATH-500's gold)
])
def test_numbers_are_compared_as_numbers(pool: MathVerifierPool, completion: str, gold: str, correct: bool) -> None:
    [verdict] = pool.verify_batch([completion], [gold])
    assert verdict.correct is correct, (completion, gold, verdict)


def _shipped_golds() -> dict[str, list[str]]:
    """Every answer gold of every shipped benchmark, as its reward reads it (MMLU-STEM: the
    option letter; HumanEval has tests, no answer gold)."""
    from skpo.rewards.choice import LETTERS

    out = {
        "math500": [r["answer"] for r in _read_jsonl("math500.jsonl")],
        "gsm8k": [gold_from_gsm8k(r["answer"]) for r in _read_jsonl("gsm8k.jsonl")],
        "gsm8k_train": [gold_from_gsm8k(r["answer"]) for r in _read_jsonl("gsm8k_train.jsonl")],
        "aime24": [str(r["answer"]) for r in _read_jsonl("aime24.jsonl")],
        "amc23": [repr(r["answer"]) if isinstance(r["answer"], float) else str(r["answer"]) for r in _read_jsonl("amc23.jsonl")],
        "mmlu_stem": [LETTERS[int(r["answer"])] for r in _read_jsonl("mmlu_stem.jsonl")],
    }
    assert sorted(p.name.split(".")[0] for p in benchmark_dir().glob("*.jsonl*")) == sorted([*out, "humaneval"])
    return out


def _times_ten(gold: str) -> str | None:
    """``gold`` × 10 written as a number (a fraction when the gold is one), ``"zero"`` for a gold
    of 0, or None when the gold is not one finite real number (text, a set, an expression with a
    variable, an option letter). Runs in the verifier's workers (sympy)."""
    import sympy

    from skpo.rewards.math import _number, _parse_gold

    number = _number(_parse_gold(gold))
    if number is None:
        return None
    expr, value, exact = number
    if value == 0:
        return "zero"
    if exact and expr.is_rational:
        q = sympy.Rational(expr.doit()) * 10
        return str(q.p) if q.q == 1 else f"\\frac{{{q.p}}}{{{q.q}}}"
    return repr(float(value) * 10)


# Measured: golds per benchmark that are not one number, and golds of 0 (ten times 0 is 0).
EXPECTED_SKIPPED = {
    "math500": {"non-numeric": 66, "zero": 7}, "gsm8k": {"non-numeric": 0, "zero": 0},
    "gsm8k_train": {"non-numeric": 0, "zero": 1}, "aime24": {"non-numeric": 0, "zero": 0},
    "amc23": {"non-numeric": 0, "zero": 0}, "mmlu_stem": {"non-numeric": 3018, "zero": 0},
}


def _check_golds_against_themselves_and_ten_times(pool: MathVerifierPool, names: list[str]) -> None:
    completions, golds, want, skipped = [], [], [], {}
    shipped = _shipped_golds()
    for name in names:
        values = shipped[name]
        if name == "mmlu_stem":  # option letters (the choice reward's), no number among them
            assert set(values) <= set("ABCDEFGHIJ")
            wrongs = [None] * len(values)
        else:
            wrongs = [o.value for o in pool.run(_times_ten, [(g,) for g in values])]
        skipped[name] = {"non-numeric": sum(w is None for w in wrongs), "zero": sum(w == "zero" for w in wrongs)}
        for gold, wrong in zip(values, wrongs):
            if wrong is None:
                continue
            completions.append(f"The answer is $\\boxed{{{gold}}}$.")
            golds.append(gold)
            want.append(True)
            if wrong != "zero":
                completions.append(f"The answer is $\\boxed{{{wrong}}}$.")
                golds.append(gold)
                want.append(False)
    print(f"{names}: {want.count(True)} numeric golds accepted as themselves, {want.count(False)} times ten refused; "
          f"skipped: {skipped}")
    verdicts = pool.verify_batch(completions, golds)
    bad = [(c, g) for c, g, w, v in zip(completions, golds, want, verdicts) if v.correct is not w]
    assert bad == []
    assert skipped == {name: EXPECTED_SKIPPED[name] for name in names}


def test_every_shipped_gold_matches_itself_and_not_ten_times_itself(pool: MathVerifierPool) -> None:
    """Each numeric gold of every shipped benchmark is accepted as its own answer, and the same
    value times 10 is refused; golds that are not one number (text, sets, expressions, option
    letters) are counted and left to the tests above. GSM8K's training split: the next test."""
    _check_golds_against_themselves_and_ten_times(pool, ["math500", "gsm8k", "aime24", "amc23", "mmlu_stem"])


@pytest.mark.slow(reason="7473 golds of the form the quick tests/test_rewards_math.py::"
                         "test_every_shipped_gold_matches_itself_and_not_ten_times_itself checks on GSM8K's test split")
def test_gsm8k_training_golds_match_themselves_and_not_ten_times_themselves(pool: MathVerifierPool) -> None:
    _check_golds_against_themselves_and_ten_times(pool, ["gsm8k_train"])

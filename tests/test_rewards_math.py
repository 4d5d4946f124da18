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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

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

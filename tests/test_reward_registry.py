"""One reward registry for training and evaluation: built-ins, user functions, batching."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from skpo.rewards.base import Verdict
from skpo.rewards.registry import REWARDS, RewardError, get_reward, to_verdict
from skpo.tasks.dataset import Problem

HELPERS = Path(__file__).resolve().parent / "data" / "rewards_for_tests.py"


def problem(gold="5", golds=(), **kw) -> Problem:
    return Problem(index=0, id="p0", question="q", gold=gold, all_golds=tuple(golds), **kw)


def test_builtins_are_registered_with_what_they_need():
    builtins = ("math", "gsm8k", "choice", "code", "arith")
    assert set(builtins) <= set(REWARDS)
    assert REWARDS["choice"].needs_choices and not REWARDS["code"].needs_answer and REWARDS["math"].needs_answer
    assert not any(REWARDS[name].partial_credit for name in builtins)


def test_math_counts_any_acceptable_answer():
    math = get_reward("math")
    p = problem(gold="1/2", golds=("1/2", "0.5", "\\text{half}"))
    verdicts = math.score(["so \\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}"], [p, p, p])
    assert [v.correct for v in verdicts] == [True, True, False]
    assert [v.reward for v in verdicts] == [1.0, 1.0, 0.0]


def test_choice_and_arith():
    choice = get_reward("choice")
    p = problem(gold="C", choices=("a", "b", "c", "d"))
    assert [v.correct for v in choice.score(["Answer: C", "Answer: A"], [p, p])] == [True, False]
    from skpo.tasks.arith import ArithConfig, heldout_problems

    a = heldout_problems(ArithConfig(), 1)[0]
    arith_p = problem(gold=str(a.answer), arith=a)
    v_ok, v_bad = get_reward("arith").score([f"Answer: {a.answer}", f"Answer: {a.answer + 1}"], [arith_p, arith_p])
    assert v_ok.correct and not v_bad.correct


@pytest.mark.parametrize(
    "result,expected",
    [
        (True, Verdict(1.0, True, "function")),
        (False, Verdict(0.0, False, "function")),
        (0.25, Verdict(0.25, False, "function")),
        (1, Verdict(1.0, True, "function")),
        ((0.5, True), Verdict(0.5, True, "function")),
        ({"reward": 1.0, "correct": False, "reason": "r", "extracted": 3}, Verdict(1.0, False, "r", "3")),
        (Verdict.wrong("x"), Verdict.wrong("x")),
    ],
)
def test_user_results_become_verdicts(result, expected):
    assert to_verdict(result, "f") == expected


@pytest.mark.parametrize("bad,match", [(1.5, r"in \[0, 1\], got 1.5"), (float("nan"), "got nan"), ("yes", "returned str"),
                                       ({"correct": True}, "without 'reward'"), ((0.5, "no"), "must be a bool")])
def test_bad_user_results_name_the_function(bad, match):
    with pytest.raises(RewardError, match=match):
        to_verdict(bad, "reward function 'm:f' (sample 0)")


def test_user_function_from_a_file_a_module_and_batched(monkeypatch, tmp_path):
    by_file = get_reward(f"{HELPERS}:parity")
    texts = ["abc", "abd", "xyz", "hello"]
    import zlib

    want = [zlib.crc32(t.encode()) % 2 == 1 for t in texts]
    assert [v.correct for v in by_file.score(texts, [problem()] * 4)] == want
    batched = get_reward(f"{HELPERS}:parity_batched")
    assert [v.correct for v in batched.score(texts, [problem()] * 4)] == want
    assert all(v.reason == "crc" for v in batched.score(texts, [problem()] * 4))
    # module form, imported with the working directory on sys.path
    (tmp_path / "my_scores.py").write_text("def score(completion, example):\n    return example.gold in completion\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    by_module = get_reward("my_scores:score")
    assert [v.correct for v in by_module.score(["it is 5", "it is 6"], [problem(), problem()])] == [True, False]
    assert by_module.partial_credit


def test_user_function_errors_are_named():
    with pytest.raises(RewardError, match=r"reward function .*:out_of_range.* reward must be a number in \[0, 1\], got 2.0"):
        get_reward(f"{HELPERS}:out_of_range").score(["x"], [problem()])
    with pytest.raises(RewardError, match=r":raises' raised KeyError on problem 'p0'"):
        get_reward(f"{HELPERS}:raises").score(["x"], [problem()])
    with pytest.raises(RewardError, match="unknown reward 'nope'; registered: arith, choice, code"):
        get_reward("nope")
    with pytest.raises(RewardError, match="cannot import module 'no_such_module_xyz'"):
        get_reward("no_such_module_xyz:f")
    with pytest.raises(RewardError, match="has no callable 'missing'"):
        get_reward(f"{HELPERS}:missing")
    with pytest.raises(RewardError, match="does not exist"):
        get_reward("/nowhere/file.py:f")


def test_training_logs_accuracy_from_the_verdict_not_the_reward(tmp_path):
    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    cfg = load_config(None, [
        "train.method=grpo", "train.steps=1", "train.prompts_per_step=2", "method.group_size=2",
        "rollout.max_new_tokens=8", f"reward.function={HELPERS}:always_full_reward_never_correct",
        f"log.out_dir={tmp_path}", "log.progress=false", "log.tensorboard=false", "eval.every=0",
    ])
    trainer = build_trainer(cfg)
    m = trainer.train_step(0)
    assert m["reward/mean"] == 1.0 and m["accuracy/mean"] == 0.0
    assert json.loads((tmp_path / "run.json").read_text())["reward"].endswith(":always_full_reward_never_correct")


def test_training_scores_each_round_in_one_batch(tmp_path, monkeypatch):
    """Math answers of a whole rollout go to the verifier as one batch (its pool runs them in
    parallel), not one call per answer."""
    import skpo.rewards.registry as registry
    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    calls = []
    entry = registry.REWARDS["arith"]
    monkeypatch.setitem(registry.REWARDS, "arith", entry.__class__(
        "arith", lambda c, p, ctx: calls.append(len(c)) or entry.fn(c, p, ctx), needs_answer=False))
    for method, want in (("grpo", [4 * 3]), ("skpo", [4 * 3])):
        calls.clear()
        cfg = load_config(None, [
            f"train.method={method}", "train.steps=1", "train.prompts_per_step=4", "method.group_size=3",
            "rollout.max_new_tokens=16", f"log.out_dir={tmp_path / method}", "log.progress=false",
            "log.tensorboard=false", "eval.every=0",
        ])
        build_trainer(cfg).train_step(0)
        assert calls == want, (method, calls)


@pytest.mark.parametrize("source, needle", [
    ("def score(c, e)\n    return 1.0\n", "syntax error at"),
    ("import sys\nsys.exit(3)\n", "failed to import: SystemExit: 3"),
    ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
])
def test_a_reward_module_that_cannot_import_is_one_line(tmp_path, source, needle):
    path = tmp_path / f"rewards_{abs(hash(source))}.py"
    path.write_text(source)
    with pytest.raises(RewardError) as err:
        get_reward(f"{path}:score")
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)

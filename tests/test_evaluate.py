"""Benchmarks (specs, loader, verifiers), the evaluation runner and ``skpo eval``.

Models: a freshly initialised tiny Qwen2 (random weights, so accuracy is ~0 — used for keys,
ranges, determinism and the CLI), a fake engine that returns scripted completions (exact
metric bookkeeping), and the shipped warm-started tiny model when it is present.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from skpo.engines.engine import Completion
from skpo.evaluation import runner as runner_module
from skpo.evaluation.benchmarks import (
    BUILTIN_BENCHMARKS,
    BenchmarkDataError,
    BenchmarkSpec,
    Problem,
    code_for_humaneval,
    extract_choice,
    get_spec,
    load_problems,
    load_spec_file,
    read_jsonl,
    score_completions,
)
from skpo.evaluation.runner import EvalSettings, arith_step_metrics, build_prompts, evaluate
from skpo.models.loading import tiny_arith_dir
from skpo.models.tiny import build_tiny_model
from skpo.models.tokenizer import build_tokenizer
from skpo.tasks.arith import ArithProblem, solution_text

torch.set_num_threads(1)  # this machine is shared; one thread is fastest for the tiny model


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(tokenizer, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model, tokenizer) -> Path:
    """A training-checkpoint layout: RUN/checkpoints/step_000050/model/ holds the HF model."""
    run = tmp_path_factory.mktemp("run")
    out = run / "checkpoints" / "step_000050" / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return run


def _strip_times(result: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(result)
    result.pop("seconds", None)
    return result


# ----------------------------------------------------------------------------- specs


def test_builtin_specs_load_every_row() -> None:
    """Nothing is lost: each built-in gives exactly as many problems as its file has rows."""
    expected = {"math500": 500, "aime24": 30, "amc23": 40, "gsm8k": 1319, "mmlu_stem": 3018, "humaneval": 164}
    for name, n in expected.items():
        spec = get_spec(name)
        problems = load_problems(spec)
        assert len(problems) == n == len(read_jsonl(spec.resolved_path())), name
        assert [p.index for p in problems] == list(range(n))
        assert all(p.question.strip() for p in problems)
        if spec.verifier != "code":
            assert all(p.gold for p in problems), name
    assert len(load_problems(get_spec("arith"))) == BUILTIN_BENCHMARKS["arith"].n_problems


def test_builtin_gold_answers() -> None:
    gsm = load_problems(get_spec("gsm8k"), limit=1)[0]
    assert gsm.gold == "18" and gsm.id == "0"
    amc = load_problems(get_spec("amc23"), limit=1)[0]
    assert amc.gold == "27"  # the file holds 27.0
    mmlu = load_problems(get_spec("mmlu_stem"), limit=1)[0]
    assert mmlu.gold == "C" and mmlu.choices is not None and len(mmlu.choices) == 4
    assert "\nA. maintain the population" in mmlu.question and "\nD. increase the mortality rate" in mmlu.question
    he = load_problems(get_spec("humaneval"), limit=1)[0]
    assert he.id == "HumanEval/0" and he.row["entry_point"] == "has_close_elements"
    math500 = load_problems(get_spec("math500"), limit=3)
    assert math500[0].id == "test/precalculus/807.json" and len(math500) == 3


def test_template_substitutes_question_only() -> None:
    spec = get_spec("math500")
    text = spec.render("What is $1+1$?")
    assert text.startswith("What is $1+1$?\n") and text.endswith("within \\boxed{}.")
    he = get_spec("humaneval")
    assert he.render("def f():\n") == "def f():\n"
    assert "```python\ndef f():\n```" in he.render("def f():\n", chat=True)


def test_spec_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        BenchmarkSpec(name="x", verifier="math", path="x.jsonl", template="no placeholder")
    with pytest.raises(ValueError, match="needs a path"):
        BenchmarkSpec(name="x", verifier="math")
    with pytest.raises(ValueError, match="choices_column"):
        BenchmarkSpec(name="x", verifier="choice", path="x.jsonl")
    with pytest.raises(ValueError, match="promt_column"):  # unknown keys are errors naming the key
        BenchmarkSpec.model_validate({"name": "x", "verifier": "math", "path": "x.jsonl", "promt_column": "q"})
    with pytest.raises(KeyError, match="known: aime24"):
        get_spec("aime25")


def test_spec_file_resolves_relative_paths(tmp_path: Path) -> None:
    data = tmp_path / "aime25.jsonl"
    data.write_text('{"q": "Find 2+2.", "a": "4"}\n{"q": "Find 3.", "a": 3}\n')
    spec_file = tmp_path / "extra.yaml"
    spec_file.write_text("name: aime25\nverifier: math\npath: aime25.jsonl\nprompt_column: q\nanswer_column: a\n")
    (spec,) = load_spec_file(spec_file)
    assert Path(spec.path) == data.resolve()
    problems = load_problems(spec)
    assert [(p.question, p.gold, p.id) for p in problems] == [("Find 2+2.", "4", "0"), ("Find 3.", "3", "1")]


# ----------------------------------------------------------------------------- loader errors


def _spec(path: Path, **kw: Any) -> BenchmarkSpec:
    base = {"name": "t", "verifier": "math", "path": str(path), "prompt_column": "question", "answer_column": "answer"}
    return BenchmarkSpec(**{**base, **kw})


def test_loader_error_names_file_row_and_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b", "answer": "2"}\n{"question": "c"}\n')
    with pytest.raises(BenchmarkDataError) as info:
        load_problems(_spec(path))
    msg = str(info.value)
    # the blank line is not a row, but line numbers stay exact
    assert str(path) in msg and "row 3 (line 4)" in msg and "missing key 'answer'" in msg
    # a limit does not hide a bad row further down
    with pytest.raises(BenchmarkDataError, match="row 3"):
        load_problems(_spec(path), limit=1)


@pytest.mark.parametrize(
    ("lines", "where", "what"),
    [
        (['{"question": "a", "answer": "1"}', '{"question": "b", "answer": '], "row 2 (line 2)", "invalid JSON"),
        (['["question", "answer"]'], "row 1 (line 1)", "expected a JSON object"),
        (['{"question": 5, "answer": "1"}'], "row 1", "'question' must be a non-empty string"),
        (['{"question": "a", "answer": null}'], "row 1", "'answer' must be a string or a number"),
        (['{"question": "a", "answer": "  "}'], "row 1", "'answer' is empty"),
    ],
)
def test_loader_rejects_bad_rows(tmp_path: Path, lines: list[str], where: str, what: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkDataError) as info:
        load_problems(_spec(path))
    assert str(path) in str(info.value) and where in str(info.value) and what in str(info.value)


def test_loader_checks_choice_and_gsm8k_columns(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text(
        '{"question": "q1", "choices": ["x", "y", "z"], "answer": 2}\n'
        '{"question": "q2", "choices": ["x", "y"], "answer": "b"}\n'
        '{"question": "q3", "choices": ["x", "y"], "answer": 2}\n'
    )
    spec = _spec(path, verifier="choice", choices_column="choices")
    with pytest.raises(BenchmarkDataError, match=r"row 3 \(line 3\).*'answer' must be an option index in \[0, 1\]"):
        load_problems(spec)
    with pytest.raises(BenchmarkDataError, match="row 3"):  # a limit still validates every row
        load_problems(spec, limit=1)
    path.write_text('{"question": "q1", "choices": ["x", "y", "z"], "answer": 2}\n'
                    '{"question": "q2", "choices": ["x", "y"], "answer": "b"}\n')
    assert [p.gold for p in load_problems(spec)] == ["C", "B"]
    path.write_text('{"question": "q", "choices": "xyz", "answer": 0}\n')
    with pytest.raises(BenchmarkDataError, match="'choices' must be a list"):
        load_problems(spec)

    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text('{"question": "q", "answer": "so 1,000\\n#### 1,000"}\n{"question": "q", "answer": "many"}\n')
    with pytest.raises(BenchmarkDataError, match=r"row 2 \(line 2\).*no '#### N'"):
        load_problems(_spec(gsm, verifier="gsm8k"))


def test_loader_reads_gzip_and_reports_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"question": "a", "answer": 1.5}\n{"question": "b", "answer": 2}\n')
    assert [p.gold for p in load_problems(_spec(path))] == ["1.5", "2"]
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_problems(_spec(tmp_path / "nope.jsonl"))
    notgz = tmp_path / "c.jsonl.gz"
    notgz.write_text("plain text")
    with pytest.raises(BenchmarkDataError, match="cannot read"):
        load_problems(_spec(notgz))


# ----------------------------------------------------------------------------- verifiers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B).", "B"),
        ("Reasoning...\nAnswer: C", "C"),
        ("so \\boxed{D}", "D"),
        ("\\boxed{\\text{A}}", "A"),
        ("I think it's\n(B)\n", "B"),
        ("C. because of X", "C"),
        ("A cell divides. Answer: D", "D"),  # the article "A" is not an answer
        ("A cell divides twice.", None),
        ("Answer: E", None),  # only 4 options
        ("answer is b", None),  # lower case letters are words, not options
        ("Option A fails, the answer is B", "B"),  # the last anchored match wins
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text, 4) == expected


def test_code_for_humaneval() -> None:
    problem = Problem(index=0, id="x", question="def add(a, b):\n", gold="", row={"entry_point": "add"})
    stop = get_spec("humaneval").stop
    assert code_for_humaneval("    return a + b\n\ndef other():\n    pass", problem, stop) == "    return a + b\n"
    fenced = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert code_for_humaneval(fenced, problem, stop) == "\ndef add(a, b):\n    return a + b\n"
    body_only = "```python\n    return a + b\n```"
    assert code_for_humaneval(body_only, problem, stop) == "    return a + b\n"


def test_score_completions_per_verifier(tmp_path: Path) -> None:
    gsm = load_problems(get_spec("gsm8k"), limit=2)  # golds 18 and 3
    verdicts = score_completions(
        get_spec("gsm8k"), gsm, [["so \\boxed{18}", "#### 17", "nothing"], ["The answer is 3."]]
    )
    assert [[v.correct for v in row] for row in verdicts] == [[True, False, False], [True]]
    assert verdicts[0][0].extracted == "18"

    mmlu = load_problems(get_spec("mmlu_stem"), limit=1)  # gold C
    verdicts = score_completions(get_spec("mmlu_stem"), mmlu, [["Answer: C", "Answer: A", "hmm"]])
    assert [v.correct for v in verdicts[0]] == [True, False, False]
    assert [v.extracted for v in verdicts[0]] == ["C", "A", None]

    arith = load_problems(get_spec("arith"), limit=1)
    p = arith[0].arith
    good = solution_text(p)
    bad = good.replace(f"Answer: {p.answer}", f"Answer: {p.answer + 1}")
    verdicts = score_completions(get_spec("arith"), arith, [[good, bad, "no answer"]])
    assert [v.correct for v in verdicts[0]] == [True, False, False]
    assert [v.extracted for v in verdicts[0]] == [str(p.answer), str(p.answer + 1), None]


def test_score_humaneval_in_the_sandbox() -> None:
    spec = get_spec("humaneval")
    problems = load_problems(spec, limit=2)
    right = [p.row["canonical_solution"] for p in problems]
    verdicts = score_completions(spec, problems, [[right[0], "    return None\n"], [right[1]]])
    assert [[v.correct for v in row] for row in verdicts] == [[True, False], [True]]


# ----------------------------------------------------------------------------- arith step metrics


def test_arith_step_metrics_hand_computed() -> None:
    p = ArithProblem.from_question("1+2+3")  # 1+2=3, 3+3=6, Answer: 6
    problems = [Problem(index=0, id="1+2+3", question="1+2+3", gold="6", arith=p)]
    texts = [[
        "1+2=3\n3+3=6\nAnswer: 6",  # all right
        "1+2=4\n4+3=7\nAnswer: 7",  # first line wrong, carried forward: second locally valid
        "1+2=3\n3+3=6\n6+1=7\nAnswer: 7",  # an extra line: only the ending is wrong
        "1+2=3",  # second step missing
    ]]
    m = arith_step_metrics(problems, texts)
    # correct lines / max(lines, 2): 2/2, 0/2, 2/3, 1/2
    assert m["step_accuracy"] == pytest.approx((1 + 0 + 2 / 3 + 0.5) / 4)
    # locally valid: 2/2, 1/2, 2/3 (the extra line is beyond the problem), 1/2
    assert m["local_step_accuracy"] == pytest.approx((1 + 0.5 + 2 / 3 + 0.5) / 4)
    assert m["step_accuracy_by_position"] == pytest.approx([3 / 4, 2 / 4])
    assert m["first_error_counts"] == {"0": 1, "1": 1, "2": 1, "none": 1}
    assert m["mean_first_error_fraction"] == pytest.approx((0 / 2 + 2 / 2 + 1 / 2) / 3)


# ----------------------------------------------------------------------------- runner


class ScriptedEngine:
    """Stands in for HFEngine: sample j of a problem is the reference solution iff j < right[question],
    else the same wrong answer."""

    right: ClassVar[dict[str, int]] = {}

    def __init__(self, model, *, pad_token_id, eos_token_id=None, decode=None, batch_size=64, **_: Any) -> None:
        self.tokenizer = build_tokenizer()

    def generate(self, prompts, n, params, max_new_tokens=None):
        out = []
        for ids in prompts:
            question = self.tokenizer.decode(ids)[len("Q: ") : -len("\nA:\n")]
            problem = ArithProblem.from_question(question)
            eos = [self.tokenizer.eos_token_id]
            good = self.tokenizer.encode(solution_text(problem)) + eos
            wrong = self.tokenizer.encode(f"Answer: {problem.answer + 1}") + eos
            row = []
            for j in range(n):
                toks = good if j < ScriptedEngine.right[question] else wrong
                row.append(Completion(list(toks), [0.0] * len(toks), "stop", eos[0]))
            out.append(row)
        return out


def test_runner_metric_bookkeeping_with_scripted_samples(monkeypatch, model, tokenizer) -> None:
    monkeypatch.setattr(runner_module, "HFEngine", ScriptedEngine)
    counts = [0, 1, 2, 4, 3, 4]
    problems = load_problems(get_spec("arith"), limit=6)
    monkeypatch.setattr(ScriptedEngine, "right", {p.question: c for p, c in zip(problems, counts)})
    k = 4
    res = evaluate(model, tokenizer, "arith", EvalSettings(k=k, limit=6, seed=0))
    m = res["metrics"]
    assert [p["n_correct"] for p in res["problems"]] == counts
    assert m["avg@4"] == pytest.approx(sum(counts) / (6 * k))
    assert m["pass@1"] == pytest.approx(m["avg@4"])
    # pass@2 per problem: 0, 1/2, 5/6, 1, 1, 1
    assert m["pass@2"] == pytest.approx((0 + 0.5 + 5 / 6 + 1 + 1 + 1) / 6)
    assert m["pass@4"] == pytest.approx(5 / 6)
    # maj@4: right answers win with 3 or 4 votes; the 2-2 tie goes to the first sample (right)
    assert m["maj@4"] == pytest.approx(4 / 6)
    assert res["success_histogram"] == [1, 1, 1, 1, 2]
    assert m["frac_truncated"] == 0.0
    assert res["step_metrics"]["first_error_counts"]["none"] == sum(counts)


def test_evaluate_arith_random_model_keys_ranges_determinism(model, tokenizer) -> None:
    settings = EvalSettings(k=3, limit=4, seed=7, max_new_tokens=12, save_samples=True)
    a = evaluate(model, tokenizer, "arith", settings)
    json.dumps(a)  # serialisable
    assert a["benchmark"] == "arith" and a["n_problems"] == 4 and a["k"] == 3 and a["prompt_format"] == "arith"
    assert set(a["metrics"]) == {"avg@3", "pass@1", "pass@2", "pass@3", "maj@3", "mean_response_tokens",
                                 "frac_truncated"}
    for key in ("avg@3", "pass@1", "pass@2", "pass@3", "maj@3", "frac_truncated"):
        assert 0.0 <= a["metrics"][key] <= 1.0
    assert a["metrics"]["pass@1"] <= a["metrics"]["pass@2"] <= a["metrics"]["pass@3"]
    assert 0 < a["metrics"]["mean_response_tokens"] <= 12
    assert sum(a["success_histogram"]) == 4 and len(a["success_histogram"]) == 4
    assert 0.0 <= a["step_metrics"]["step_accuracy"] <= 1.0
    assert sum(a["step_metrics"]["first_error_counts"].values()) == 12
    assert all(len(p["samples"]) == 3 for p in a["problems"])
    # same seed -> same result; a problem's samples do not depend on the limit
    assert _strip_times(evaluate(model, tokenizer, "arith", settings)) == _strip_times(a)
    b = evaluate(model, tokenizer, "arith", dataclasses.replace(settings, limit=2))
    assert b["problems"] == a["problems"][:2]
    c = evaluate(model, tokenizer, "arith", dataclasses.replace(settings, seed=8))
    assert [p["samples"] for p in c["problems"]] != [p["samples"] for p in a["problems"]]


def test_evaluate_takes_given_problems_and_prompt_ids(model, tokenizer) -> None:
    """A caller's own problems and prompt ids (the warm start's validation set, skip inputs):
    the plain prompts given as ids sample exactly what the template gives; other ids change the
    samples, not the bookkeeping."""
    from skpo.tasks.dataset import arith_records
    from skpo.tasks.templates import plain_input_ids, skip_input_ids

    arith = [ArithProblem.from_question(q) for q in ("3+4", "12+30-7", "41-15+22+8")]
    problems = arith_records(arith)
    settings = EvalSettings(k=2, seed=3, max_new_tokens=10, save_samples=True)
    own = evaluate(model, tokenizer, "arith", settings, problems=problems)
    assert [p["id"] for p in own["problems"]] == ["3+4", "12+30-7", "41-15+22+8"] and own["n_problems"] == 3
    plain = [plain_input_ids(tokenizer, p) for p in arith]
    given = evaluate(model, tokenizer, "arith", settings, problems=problems, prompt_ids=plain)
    assert given["prompt_format"] == "arith" and given["problems"] == own["problems"]
    drafts = [skip_input_ids(tokenizer.encode("1+1=2\n"), q) for q in plain]
    skip = evaluate(model, tokenizer, "arith", settings, problems=problems, prompt_ids=drafts)
    assert skip["n_problems"] == 3 and [p["id"] for p in skip["problems"]] == [p["id"] for p in own["problems"]]
    assert [p["samples"] for p in skip["problems"]] != [p["samples"] for p in own["problems"]]
    assert evaluate(model, tokenizer, "arith", dataclasses.replace(settings, limit=2), problems=problems,
                    prompt_ids=plain)["problems"] == own["problems"][:2]
    with pytest.raises(ValueError, match="2 prompts for 3 problems"):
        evaluate(model, tokenizer, "arith", settings, problems=problems, prompt_ids=plain[:2])


def test_evaluate_text_benchmark_plain_and_chat(model, tokenizer) -> None:
    res = evaluate(model, tokenizer, "mmlu_stem", EvalSettings(k=2, limit=2, max_new_tokens=8, seed=0))
    assert res["prompt_format"] == "plain" and res["n_problems"] == 2 and "step_metrics" not in res
    assert set(res["metrics"]) >= {"avg@2", "pass@1", "pass@2", "maj@2"}

    chat_tok = copy.deepcopy(tokenizer)
    chat_tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    problems = load_problems(get_spec("gsm8k"), limit=1)
    ids, fmt = build_prompts(get_spec("gsm8k"), chat_tok, problems)
    assert fmt == "chat"
    text = chat_tok.decode(ids[0])
    assert text.startswith("<user>Janet") and text.endswith("\\boxed{}.\n<assistant>")
    ids, fmt = build_prompts(get_spec("gsm8k"), chat_tok, problems, use_chat_template=False)
    assert fmt == "plain" and tokenizer.decode(ids[0]).startswith("Janet")
    with pytest.raises(ValueError, match="no chat template"):
        build_prompts(get_spec("gsm8k"), tokenizer, problems, use_chat_template=True)


def test_evaluate_clamps_budget_to_context(tokenizer) -> None:
    from skpo.models.tiny import TinyConfig

    small = build_tiny_model(tokenizer, TinyConfig(max_position_embeddings=24, num_hidden_layers=1), seed=0)
    res = evaluate(small, tokenizer, "arith", EvalSettings(k=1, limit=3, max_new_tokens=40, seed=0, save_samples=True))
    assert res["prompts_over_context"] == 3
    assert all(s["tokens"] <= 24 for p in res["problems"] for s in p["samples"])


# ----------------------------------------------------------------------------- shipped tiny model


def test_shipped_tiny_model_on_arith() -> None:
    from skpo.commands.evaluate import arith_config_for
    from skpo.models.loading import load_policy, load_tokenizer

    path = tiny_arith_dir()
    model, tok = load_policy(path), load_tokenizer(path)
    spec = get_spec("arith")
    config = arith_config_for(path)
    if config is not None:
        spec = spec.model_copy(update={"arith": config})
    a = evaluate(model, tok, spec, EvalSettings(k=4, limit=20, seed=0))
    m = a["metrics"]
    assert a["n_problems"] == 20 and sum(a["success_histogram"]) == 20
    assert 0.0 < m["avg@4"] < 1.0  # warm-started: solves some, not all
    assert m["pass@1"] == pytest.approx(m["avg@4"]) and m["pass@1"] <= m["pass@2"] <= m["pass@4"]
    assert 0.0 <= m["maj@4"] <= 1.0
    steps = a["step_metrics"]
    # every fully right sample has all its lines right, so step accuracy is at least their share
    assert steps["first_error_counts"].get("none", 0) / 80 <= steps["step_accuracy"] <= 1.0
    assert _strip_times(evaluate(model, tok, spec, EvalSettings(k=4, limit=20, seed=0))) == _strip_times(a)


# ----------------------------------------------------------------------------- CLI


def test_resolve_model_dir_layouts(model_dir: Path, tmp_path: Path) -> None:
    from skpo.commands.evaluate import resolve_model_dir

    model = model_dir / "checkpoints" / "step_000050" / "model"
    assert resolve_model_dir(str(model)) == model
    assert resolve_model_dir(str(model.parent)) == model  # checkpoint dir with model/ inside
    assert resolve_model_dir(str(model_dir)) == model  # run dir: latest checkpoint
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        resolve_model_dir(str(tmp_path / "does-not-exist"))
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        resolve_model_dir(str(tmp_path))


def test_cli_eval_writes_json_and_table(model_dir: Path, tmp_path: Path, capsys) -> None:
    from skpo.commands.evaluate import main

    out = tmp_path / "res" / "results.json"
    rc = main(["--model", str(model_dir / "checkpoints" / "step_000050"), "--benchmarks", "arith,mmlu_stem",
               "--k", "2", "--limit", "2", "--max-new-tokens", "6", "--out", str(out), "--no-progress",
               "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    for word in ("benchmark", "avg@k", "pass@1", "pass@k", "maj@k", "arith", "mmlu_stem"):
        assert word in printed
    report = json.loads(out.read_text())
    assert set(report["benchmarks"]) == {"arith", "mmlu_stem"}
    assert report["model"].endswith("step_000050/model")
    assert report["benchmarks"]["arith"]["metrics"]["pass@2"] >= 0.0


def test_cli_eval_with_spec_file(model_dir: Path, tmp_path: Path) -> None:
    from skpo.commands.evaluate import main

    (tmp_path / "tiny.jsonl").write_text('{"q": "1+1?", "a": 2}\n{"q": "2+2?", "a": 4}\n{"q": "3+3?", "a": 6}\n')
    (tmp_path / "tiny.json").write_text(json.dumps(
        {"name": "tinymath", "verifier": "math", "path": "tiny.jsonl", "prompt_column": "q", "answer_column": "a"}
    ))
    out = tmp_path / "r.json"
    rc = main(["--model", str(model_dir), "--spec", str(tmp_path / "tiny.json"), "--k", "2",
               "--max-new-tokens", "4", "--out", str(out), "--no-progress", "--threads", "1"])
    assert rc == 0
    report = json.loads(out.read_text())["benchmarks"]
    assert list(report) == ["tinymath"] and report["tinymath"]["n_problems"] == 3


def test_cli_eval_errors_name_the_path(tmp_path: Path, capsys) -> None:
    from skpo.commands.evaluate import main

    missing = tmp_path / "no-such-model"
    assert main(["--model", str(missing)]) == 2
    assert "no-such-model" in capsys.readouterr().err.replace("\n", "")
    assert main(["--model", str(tmp_path), "--benchmarks", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err.replace("\n", "")


def test_cli_eval_code_spec_without_the_code_columns_is_refused_before_generating(tmp_path: Path, capsys,
                                                                                monkeypatch) -> None:
    """``reward: code`` reads each row's prompt, test and entry point: the same column check as
    training's, at load — one line naming the file, row and columns, no model loaded, nothing
    generated (it was a ``KeyError: 'prompt'`` after generating)."""
    from skpo.commands import evaluate as command

    (tmp_path / "code.jsonl").write_text('{"question": "write add", "answer": "x"}\n')
    (tmp_path / "code.yaml").write_text("name: mycode\nverifier: code\npath: code.jsonl\nprompt_column: question\n"
                                        "answer_column: null\n")
    monkeypatch.setattr(command, "load_policy", lambda *a, **k: pytest.fail("the model was loaded"))
    assert command.main(["--model", "tiny-arith", "--spec", str(tmp_path / "code.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "code.jsonl: line 1: reward 'code' needs the column(s) ['prompt', 'test', 'entry_point']" \
        in err[0], err
    with pytest.raises(Exception, match="needs the column"):  # and the runner itself, for the in-training path
        evaluate(None, None, BenchmarkSpec(name="mycode", verifier="code", path=str(tmp_path / "code.jsonl"),
                                           prompt_column="question", answer_column=None))

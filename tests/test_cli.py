"""Every verb of the command line, through ``skpo.cli.main`` as ``skpo VERB …`` runs it, at the
smallest sizes that still reach its real code path: the quick tier's proof that each command
starts, does its work and writes what it promises. The long versions (the full main job, a
killed ``compare`` sweep, CLI subprocesses with one-line errors) live beside each command's own
tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from skpo.cli import COMMANDS, main

# A training run in a few seconds on the shipped tiny model.
TINY = ["train.steps=2", "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=16",
        "data.arith.pool_size=20", "log.tensorboard=false", "log.progress=false", "eval.every=0"]

# verb -> the test that runs it (``analyze``: its three analyses in tests/test_analyze.py)
COVERED = {"main": "test_main", "train": "test_train_eval_and_plot", "eval": "test_train_eval_and_plot",
           "plot": "test_train_eval_and_plot", "methods": "test_methods", "warmstart": "test_warmstart",
           "standin": "test_standin", "compare": "test_compare_scores_the_benchmarks_asked_for", "analyze": "tests/test_analyze.py::test_*_quick"}


def test_every_verb_has_a_test_here():
    assert set(COVERED) == set(COMMANDS)


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_help_of_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    assert "usage: skpo" in capsys.readouterr().out
    assert main(["--help"]) == 0 and verb in capsys.readouterr().out


def test_help_does_not_load_the_training_stack():
    """``skpo <verb> --help`` answers from the light parsers: torch is never imported."""
    code = ("import sys; from skpo.cli import main\n"
            "for verb in sys.argv[1:]:\n"
            "    try:\n        main([verb, '--help'])\n    except SystemExit:\n        pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'transformers', 'skpo.training') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *sorted(COMMANDS)], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "LOADED []"


def test_unknown_verb_is_exit_2(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_main(tmp_path, capsys):
    out = tmp_path / "main"
    assert main(["main", "--eval-problems", "4", "--k", "2", *TINY, f"log.out_dir={out}"]) == 0
    summary = json.loads((out / "main_summary.json").read_text())
    assert summary["method"] == "skpo" and summary["steps"] == 2
    for when in ("before", "after"):
        assert 0 <= summary[when]["avg@2"] <= 1 and 0 <= summary[when]["pass@2"] <= 1
    assert (out / "curves.png").stat().st_size > 0 and (out / "main_before.json").is_file()
    assert "avg@2" in capsys.readouterr().out


def test_train_eval_and_plot(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "train.method=grpo", *TINY, f"log.out_dir={run}"]) == 0
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    results = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--benchmarks", "arith", "--k", "2", "--limit", "3",
                 "--no-progress", "--out", str(results)]) == 0
    report = json.loads(results.read_text())
    assert json.dumps(report).count("avg@2") >= 1
    png = tmp_path / "curves.png"
    assert main(["plot", str(run), "--out", str(png)]) == 0 and png.stat().st_size > 0


def test_methods(capsys):
    assert main(["methods"]) == 0
    table = capsys.readouterr().out
    assert "skpo" in table and "grpo" in table
    assert main(["methods", "--show", "skpo"]) == 0
    assert "upstream" in capsys.readouterr().out


def test_warmstart(tmp_path):
    out = tmp_path / "ws"
    assert main(["warmstart", "--out", str(out), "--steps", "3", "--batch-size", "4", "--eval-problems", "0",
                 "--val-problems", "4", "--check-every", "0", "--log-every", "0", "--threads", "1"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "warmstart.json").is_file()


def test_standin(tmp_path, capsys):
    out = tmp_path / "standin"
    assert main(["standin", "--like", "llama-3.2-3b-instruct", "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.slow(reason="the sweep, its runs and report run in the quick test_compare_scores_the_benchmarks_asked_for; "
                         "this adds the default benchmarks (the config's) and two methods")
@pytest.mark.xdist_group("processes")  # each run of the sweep is a process of its own
def test_compare(tmp_path):
    out = tmp_path / "compare"
    assert main(["compare", "--methods", "grpo,skpo", "--seeds", "1", "--budget", "200", "--eval-problems", "4",
                 "--k", "2", "--points", "1", "--curve-problems", "4", "--curve-k", "2", "--jobs", "1",
                 "--out", str(out), "rollout.max_new_tokens=16", "train.prompts_per_step=2",
                 "data.arith.pool_size=20"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert set(report["summary"]) == {"grpo", "skpo"} and len(report["runs"]) == 2
    assert report["settings"]["benchmarks"] == ["arith"]  # the config's eval.benchmarks
    for run in report["runs"]:
        assert run["tokens"] >= 200 and 0 <= run["avg@k"] <= 1 and set(run["per_benchmark"]) == {"arith"}
    assert (out / "compare.md").is_file()


@pytest.mark.xdist_group("processes")
def test_compare_scores_the_benchmarks_asked_for(tmp_path):
    """``--benchmarks``: the runs' curves and final scores are on those benchmarks (their mean), not
    on the synthetic task."""
    out = tmp_path / "compare"
    assert main(["compare", "--methods", "grpo", "--seeds", "1", "--budget", "100", "--eval-problems", "2",
                 "--k", "1", "--points", "1", "--curve-problems", "2", "--curve-k", "1", "--jobs", "1",
                 "--benchmarks", "gsm8k,arith", "--out", str(out), "rollout.max_new_tokens=16",
                 "train.prompts_per_step=2", "data.arith.pool_size=20", "eval.max_new_tokens=8"]) == 0
    [run] = json.loads((out / "compare.json").read_text())["runs"]
    assert set(run["per_benchmark"]) == {"gsm8k", "arith"}
    assert run["avg@k"] == pytest.approx((run["per_benchmark"]["gsm8k"]["avg@1"] + run["per_benchmark"]["arith"]["avg@1"]) / 2)
    assert "Held-out gsm8k, arith" in (out / "compare.md").read_text()

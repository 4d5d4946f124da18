"""Defaults that follow the user's data: a run given only a model and a data file writes to a
directory named from the method, model and data, and its in-training evaluation scores rows held
out of that data — never the synthetic task's directory or benchmark."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from skpo.config import ARITH_RUN_DIR, ConfigError, RunConfig, default_out_dir, load_config
from skpo.tasks.dataset import Problem, heldout_size, load_problems, split_heldout

SMALL = ["train.steps=1", "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=6",
         "log.progress=false", "log.tensorboard=false", "train.method=grpo", "eval.k=1", "eval.every=1"]


def _rows(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": f"Q: {i}+{i}", "answer": str(2 * i)}) + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("method, model, data, expected", [
    ("grpo", "/models/Qwen2.5-0.5B-Instruct", "/data/gsm8k/train.parquet", "runs/grpo-Qwen2.5-0.5B-Instruct-gsm8k-train"),
    ("skpo", "tiny-arith", "mine/problems.jsonl.gz", "runs/skpo-tiny-arith-problems"),
    ("dapo", "runs/a/checkpoints/step_000050", "d/rows.jsonl", "runs/dapo-a-step_000050-rows"),
    ("dapo", "runs/a/checkpoints/step_000050/model/", "d/saved/", "runs/dapo-a-step_000050-saved"),
    ("my/method.yaml", "/m/Llama 3", "x/my data.parquet", "runs/method-Llama_3-my_data"),
    ("grpo", "tiny-arith", None, ARITH_RUN_DIR),
])
def test_the_run_directory_is_named_from_method_model_and_data(method, model, data, expected):
    assert default_out_dir(method, model, data) == expected


def test_a_data_file_changes_the_defaults_and_the_synthetic_task_keeps_its_own():
    arith = RunConfig()
    assert arith.log.out_dir == "runs/skpo-arith" and arith.eval.benchmarks == ["arith"] and arith.data.heldout is None
    cfg = load_config(None, ["data.path=/data/gsm8k/train.parquet", "model.path=/m/Qwen2.5-0.5B", "train.method=grpo"])
    assert cfg.log.out_dir == "runs/grpo-Qwen2.5-0.5B-gsm8k-train"
    assert cfg.eval.benchmarks == ["heldout"] and cfg.data.heldout is None  # None: a tenth, at most 100
    given = load_config(None, ["data.path=d/t.jsonl", "log.out_dir=here", "eval.benchmarks=[math500]"])
    assert given.log.out_dir == "here" and given.eval.benchmarks == ["math500"]
    assert given.data.heldout == 0  # nothing scores held-out rows: none are held out
    assert load_config(None, ["data.path=d/t.jsonl", "data.heldout=0"]).eval.benchmarks == []  # off, with a note
    both = load_config(None, ["data.path=d/t.jsonl", "data.heldout=30", "eval.benchmarks=[heldout,math500]"])
    assert both.data.heldout == 30 and both.eval.benchmarks == ["heldout", "math500"]
    # the saved config says what was resolved, and loads back to the same
    again = RunConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.model_dump() == cfg.model_dump()
    with pytest.raises(ConfigError, match=r"eval\.benchmarks: 'heldout' is a slice of data\.path, but data\.task is 'arith'"):
        load_config(None, ["eval.benchmarks=[heldout]"])
    with pytest.raises(ConfigError, match=r"data\.heldout=5 holds rows of a data file out of training"):
        load_config(None, ["data.heldout=5"])


@pytest.mark.parametrize("setting, rows, size", [(None, 5, 0), (None, 10, 1), (None, 999, 99), (None, 5000, 100),
                                                 (7, 50, 7), (0, 50, 0), (80, 50, 49)])
def test_heldout_size(setting, rows, size):
    assert heldout_size(setting, rows) == size


def _problems(questions: list[str]) -> list[Problem]:
    return [Problem(index=i, id=str(i), question=q, gold="1") for i, q in enumerate(questions)]


def test_the_heldout_slice_is_a_function_of_the_prompts_only():
    """The same slice whatever the row order (so whatever the process, the seed or a reshuffled
    file), disjoint from training, in file order, and a copy of a held-out prompt never trains."""
    questions = [f"question {i}" for i in range(60)]
    train, held = split_heldout(_problems(questions), 6)
    assert len(held) == 6 and len(train) == 54 and not {p.question for p in held} & {p.question for p in train}
    assert [p.index for p in held] == sorted(p.index for p in held)
    shuffled = questions[:]
    random.Random(3).shuffle(shuffled)
    assert {p.question for p in split_heldout(_problems(shuffled), 6)[1]} == {p.question for p in held}
    assert {p.question for p in split_heldout(_problems(questions), 7)[1]} > {p.question for p in held}  # grows stably
    copies = questions + [held[0].question, held[0].question]  # a held-out question twice more, at the end
    train2, held2 = split_heldout(_problems(copies), 6)
    assert held[0].question not in {p.question for p in train2} and len(train2) == 54
    assert [p.question for p in held2] == [p.question for p in held]  # each held-out prompt once
    assert split_heldout(_problems(questions), 0) == (_problems(questions), [])


def test_a_data_run_evaluates_its_heldout_rows_and_says_so(tmp_path, caplog):
    from skpo.training.setup import build_trainer, check_run

    data = _rows(tmp_path / "sums" / "train.jsonl", 40)
    args = [*SMALL, f"data.path={data}", "eval.max_new_tokens=4"]
    cfg = load_config(None, [*args, f"log.out_dir={tmp_path / 'run'}"])
    with caplog.at_level(logging.INFO, logger="skpo"):
        trainer = build_trainer(cfg)
    assert "4 of 40 rows of" in caplog.text and "held out of training" in caplog.text and "eval/heldout" in caplog.text
    held = {p.question for p in trainer.source.heldout}
    assert len(held) == 4 and not held & {it.answer.question for it in trainer.source.items}
    assert len(trainer.source.items) == 36
    assert held == {p.question for p in split_heldout(load_problems(cfg.data), 4)[1]}
    trainer.train()
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "eval/heldout/avg@1" in metrics and not any(k.startswith("eval/arith") for k in metrics)
    notes = check_run(load_config(None, [*args, f"log.out_dir={tmp_path / 'other'}"]))
    assert any("4 of 40 rows" in n for n in notes)
    # the held-out rows are part of what the run computes: a resume may not change them
    with pytest.raises(Exception, match=r"data\.heldout: None → 5"):
        build_trainer(load_config(None, [*args, "data.heldout=5", "train.steps=2", f"log.out_dir={tmp_path / 'run'}"]),
                      resume=True)


def test_a_small_file_has_no_heldout_rows_and_the_evaluation_is_off_with_a_note(tmp_path):
    from skpo.tasks.sources import DatasetSource
    from skpo.training.setup import data_notes

    data = _rows(tmp_path / "few.jsonl", 6)
    cfg = load_config(None, [f"data.path={data}"])

    class Source:  # what data_notes reads of a source: 6 rows, none held out
        items, heldout, rows = [object()] * 6, [], 6

    notes = data_notes(cfg, Source())
    assert any("no rows held out" in n and "there is no 'heldout' evaluation" in n for n in notes)
    assert any("in-training evaluation is off" in n for n in notes)
    assert DatasetSource.__init__.__defaults__[-1] == 0  # a source built elsewhere holds nothing out

"""What a user coming from TRL or verl meets on day one: their data file is trained on as given,
their reward in its own range, and the run says what it is (start line, run.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skpo.config import ConfigError, load_config
from skpo.training.setup import build_trainer

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ROOT / "tests" / "data" / "rewards_for_tests.py"
SMALL = ["train.steps=2", "train.prompts_per_step=2", "method.group_size=4", "rollout.max_new_tokens=8",
         "eval.every=0", "log.progress=false", "log.tensorboard=false", "train.method=grpo"]


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+{i}=", "final": str(2 * i)}) + "\n" for i in range(6)))
    return path


def test_a_data_path_is_trained_on(tmp_path):
    cfg = load_config(None, [f"data.path={_data(tmp_path)}", "data.answer_column=final"])
    assert cfg.data.task == "jsonl" and cfg.data.reward == "math"
    with pytest.raises(ConfigError, match=r"data\.task is 'arith'.*set data\.task=jsonl"):
        load_config(None, [f"data.path={_data(tmp_path)}", "data.task=arith"])
    assert load_config(None, []).data.task == "arith"  # no file: the synthetic default


def test_rewards_in_the_users_range_and_the_run_record(tmp_path):
    data = _data(tmp_path)
    cfg = load_config(None, [*SMALL, f"data.path={data}", "data.answer_column=final", "reward.range=[-1, 1]",
                             f"reward.function={REWARDS}:plus_minus", f"log.out_dir={tmp_path / 'run'}"])
    trainer = build_trainer(cfg)
    metrics = trainer.train_step(0)
    lo, hi = trainer.method.reward_range
    assert -1 <= metrics["reward/user_mean"] <= 1 and metrics["reward/mean"] == pytest.approx(
        lo + (hi - lo) * (metrics["reward/user_mean"] + 1) / 2)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["world_size"] == 1 and run["skpo_version"] and run["device"] == "cpu"
    assert run["data_columns"] == {"prompt": "question", "answer": "final"}
    assert "train.jsonl (6 prompts) | 1 process on cpu" in trainer._start_line()
    trainer.close()
    out_of_range = load_config(None, [*SMALL, f"data.path={data}", "data.answer_column=final", "reward.range=[-1, 1]",
                                      f"reward.function={REWARDS}:two", f"log.out_dir={tmp_path / 'run2'}"])
    trainer = build_trainer(out_of_range)
    with pytest.raises(Exception, match=r"rewards_for_tests.py:two.*in \[-1, 1\], got 2.0"):
        trainer.train_step(0)
    trainer.close()
    default = load_config(None, [*SMALL, f"data.path={data}", "data.answer_column=final",
                                 f"reward.function={REWARDS}:plus_minus", f"log.out_dir={tmp_path / 'run3'}"])
    trainer = build_trainer(default)
    with pytest.raises(Exception, match=r"in \[0, 1\], got -1.0; declare another range with reward.range"):
        trainer.train_step(0)
    trainer.close()


def test_python_m_skpo_and_version():
    out = subprocess.run([sys.executable, "-m", "skpo", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("skpo ")
    typo = subprocess.run([sys.executable, "-m", "skpo", "trian"], capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2 and "did you mean 'train'?" in typo.stderr


def test_sample_completions_are_logged_with_their_verdicts(tmp_path):
    """At the first step and every ``log.samples_every`` steps a few prompts with all their rows — SKPO: the segment
    and the answers written from ``[s, q]`` — their rewards (user's range) and the reward's
    verdicts go to ``samples.jsonl`` and TensorBoard."""
    cfg = load_config(None, ["train.method=skpo", "train.steps=2", "train.prompts_per_step=2", "method.group_size=3",
                             "rollout.max_new_tokens=40", "data.arith.pool_size=20", "eval.every=0", "log.progress=false",
                             "log.samples_every=2", "log.samples=1", f"log.out_dir={tmp_path / 'run'}"])
    trainer = build_trainer(cfg)
    trainer.train()
    records = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records} == {1, 2}
    records = [r for r in records if r["step"] == 2]
    assert len({r["prompt_key"] for r in records}) == 1
    assert [r["role"] for r in records] == ["upstream", "downstream", "downstream", "downstream"]
    segment = records[0]["completion"]
    for r in records[1:]:
        assert r["prompt"].startswith(segment) and r["verdict"] and isinstance(r["correct"], bool)
        assert 0.0 <= r["reward"] <= 1.0 and r["tokens"] > 0
    assert records[0]["reward"] == pytest.approx(sum(r["reward"] for r in records[1:]) / 3)  # the MC value of s
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "samples/text_summary" in events.Tags()["tensors"]


def test_a_failed_start_leaves_nothing_that_blocks_the_rerun(tmp_path, capsys, monkeypatch):
    from skpo.commands.train import main as train_main

    out = tmp_path / "run"
    args = ["train.steps=2", "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=8",
            "data.arith.pool_size=20", "eval.every=0", "log.progress=false", f"log.out_dir={out}"]
    for _ in range(2):  # the same command twice: the same error, not "holds another run"
        assert train_main([*args, f"reward.function={REWARDS}:broken"]) == 2
        err = capsys.readouterr().err
        assert "a bug in the reward" in err and "holds another run" not in err
    assert not any(p.name in ("run.json", "metrics.jsonl", "config.yaml", "tensorboard") for p in out.iterdir())
    assert train_main(args) == 0  # fixed: it trains in the same directory
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert train_main(["--check", *args, "log.wandb=true", f"log.out_dir={tmp_path / 'w'}"]) == 2
    assert "pip install wandb" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["save_to_disk", "dataset_dict", "parquet_shards", "arrow_file"])
def test_datasets_saved_by_hugging_face_load_as_given(tmp_path, layout):
    """A folder written by ``datasets`` (``save_to_disk`` of a Dataset or a DatasetDict: its
    ``train`` split), a folder of Parquet shards as in a dataset repository (``data/train-*``;
    the ``test`` shard is not trained on), or one Arrow file: the rows, in order, with their
    columns found by name."""
    import datasets

    rows = [{"problem": f"{i}+{i}", "solution": f"\\boxed{{{2 * i}}}"} for i in range(7)]
    train, test = datasets.Dataset.from_list(rows), datasets.Dataset.from_list([{"problem": "x", "solution": "y"}])
    if layout == "save_to_disk":
        path = tmp_path / "ds"
        train.save_to_disk(str(path), num_shards=2)
    elif layout == "dataset_dict":
        path = tmp_path / "dd"
        datasets.DatasetDict({"test": test, "train": train}).save_to_disk(str(path))
    elif layout == "parquet_shards":
        path = tmp_path / "repo"
        (path / "data").mkdir(parents=True)
        train.select(range(4)).to_parquet(str(path / "data" / "train-00000-of-00002.parquet"))
        train.select(range(4, 7)).to_parquet(str(path / "data" / "train-00001-of-00002.parquet"))
        test.to_parquet(str(path / "data" / "test-00000-of-00001.parquet"))
    else:
        train.save_to_disk(str(tmp_path / "one"))
        path = tmp_path / "one" / "data-00000-of-00001.arrow"
    cfg = load_config(None, [*SMALL, f"data.path={path}", f"log.out_dir={tmp_path / 'run'}"])
    from skpo.models.loading import tiny_arith_dir
    from skpo.training.setup import build_source, load_tokenizer

    source = build_source(cfg, load_tokenizer(tiny_arith_dir()))
    assert [it.answer.gold for it in source.items] == [str(2 * i) for i in range(7)]
    assert source.columns == {"prompt": "problem", "answer": "solution"}


def test_a_hub_id_says_how_to_download(tmp_path, capsys):
    from skpo.commands.train import main as train_main

    assert train_main(["model.path=Qwen/Qwen2.5-Math-7B", f"log.out_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "Hugging Face Hub id" in err and "hf download Qwen/Qwen2.5-Math-7B --local-dir" in err


@pytest.mark.parametrize("text, suffix, needle", [
    ("name: x\npath: f.jsonl\nbogus: 1\n", ".yaml", "spec 'x': bogus: Extra inputs"),
    ("name: [x\n", ".yaml", "not valid YAML"),
    ('{"name": "x",}', ".json", "line 1 column 14: not valid JSON"),
    ("- name: x\n  path: f.jsonl\n- name: x\n  path: g.jsonl\n", ".yaml", "two specs named 'x'"),
])
def test_a_bad_spec_file_is_one_line_naming_it(tmp_path, capsys, text, suffix, needle):
    from skpo.cli import main

    spec = tmp_path / f"spec{suffix}"
    spec.write_text(text)
    assert main(["eval", "--model", "tiny-arith", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(spec) in err[0] and needle in err[0], err


def test_a_reward_and_data_that_do_not_match_are_one_line_at_check(tmp_path, capsys):
    """``data.reward=code`` reads each row's prompt, test and entry point: data without them is
    refused by --check (and at load), naming the columns and the row — not a KeyError mid-run."""
    from skpo.commands.train import main as train_main

    data = _data(tmp_path)
    assert train_main(["--check", *SMALL, f"data.path={data}", "data.answer_column=final", "data.reward=code",
                       f"log.out_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.jsonl: line 1: reward 'code' needs the column(s) ['prompt', 'test', 'entry_point']" in err[0]


@pytest.mark.parametrize("name, timeout, needle", [
    ("hangs", "0.5", "did not return within reward.timeout_s=0.5 s"),
    ("exits", "120", "raised SystemExit"),
    ("broken", "120", "raised ZeroDivisionError"),
])
def test_a_reward_function_that_hangs_or_exits_ends_the_run_with_one_line(tmp_path, capsys, name, timeout, needle):
    """Training and evaluation: exit 2, one line naming the function — never exit 0, never a hang."""
    from skpo.cli import main

    args = ["train.steps=1", "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=8",
            "data.arith.pool_size=20", "eval.every=0", "log.progress=false", f"reward.timeout_s={timeout}",
            f"reward.function={REWARDS}:{name}", f"log.out_dir={tmp_path / 'run'}"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"rewards_for_tests.py:{name}" in err[0] and needle in err[0], err


def test_prompts_longer_than_the_model_are_dropped_without_tokenizing_them(tmp_path, capsys, monkeypatch):
    """The tiny model has 512 positions: with no data.max_prompt_tokens, a prompt that fills them is
    dropped with a count (at load and in --check), and a huge row is judged by its length in
    characters, never tokenized whole."""
    from skpo.commands.train import main as train_main
    from skpo.tasks import prompts

    path = tmp_path / "train.jsonl"
    rows = [{"question": f"{i}+{i}=", "answer": str(2 * i)} for i in range(3)]
    rows.insert(1, {"question": "7+" * 1_000_000 + "7", "answer": "x"})  # 2 MB
    rows.insert(2, {"question": "1+" * 400 + "1", "answer": "401"})      # 801 characters: tokenized, too long
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    real = prompts.prompt_ids

    def guarded(tokenizer, messages, chat):
        assert sum(len(m["content"]) for m in messages) < 100_000, "a huge prompt was tokenized"
        return real(tokenizer, messages, chat=chat)

    monkeypatch.setattr(prompts, "prompt_ids", guarded)
    args = [*SMALL, f"data.path={path}", f"log.out_dir={tmp_path / 'run'}"]
    assert train_main(["--check", *args]) == 0
    assert "data: 2 prompts longer than 511 tokens (the model's context (positions − 1)) are dropped (3 remain)" in \
        capsys.readouterr().out
    trainer = build_trainer(load_config(None, args))
    assert len(trainer.source.items) == 3 and len(trainer.source.dropped) == 2
    trainer.close()


def test_skpo_eval_with_a_reward_that_exits_is_one_line_exit_2(tmp_path, capsys):
    from skpo.cli import main

    data = tmp_path / "x.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "x", "path": str(data), "reward": f"{REWARDS}:exits"}))
    assert main(["eval", "--model", "tiny-arith", "--spec", str(spec), "--k", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rewards_for_tests.py:exits' raised SystemExit" in err[0]

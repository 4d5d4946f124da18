"""``skpo train --check`` runs every check a run makes before its first step: a config that
passes trains; each kind of start-up failure is caught by ``--check`` with the same message."""

from __future__ import annotations

import json

import pytest

from skpo.commands.train import main as train_main
from skpo.config import load_config
from skpo.models.loading import tiny_arith_dir
from skpo.training.setup import build_trainer

BASE = ["log.progress=false", "log.tensorboard=false", "train.steps=1", "train.prompts_per_step=2",
        "method.group_size=2", "rollout.max_new_tokens=8", "eval.every=0"]


def _data(tmp_path, rows) -> str:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_config_that_passes_check_trains(tmp_path, capsys):
    args = [*BASE, f"log.out_dir={tmp_path / 'run'}", "data.arith.pool_size=20", "train.method=grpo",
            "rollout.skpo.skip=false"]  # an earlier spelling, of a setting grpo does not have
    assert train_main(["--check", *args]) == 0
    out = capsys.readouterr().out
    assert "rollout.skpo.skip does not apply to method 'grpo'" in out and "is valid" in out
    assert "rollout.skpo.skip=false is read as method.rollout_params.skip=false" in out
    # the one resolved record, as skpo methods --show prints it
    assert "name: grpo\n" in out and "group_size: 2\n" in out
    trainer = build_trainer(load_config(None, args))
    trainer.train()
    assert trainer.state.step == 1


@pytest.mark.parametrize("extra, message", [
    (["data.arith.min_operand=9", "data.arith.max_operand=3"], "data.arith: need 0 <= min_operand <= max_operand"),
    (["method.rollout_params.split_low=0.7"], "need 0 < split_low <= split_high <= 1 (got 0.7, 0.5)"),
    (["method.terms.downstream.loss_params.clip_hgh=0.3"], "cispo: unknown parameter(s) ['clip_hgh']"),
    (["model.path=/nonexistent/model"], "/nonexistent/model"),
    (["eval.every=5", "eval.benchmarks=[math500,nope]"], "eval.benchmarks"),
    (["model.device=cuda:0"], "no CUDA device is available"),
])
def test_check_catches_what_start_up_would(tmp_path, capsys, extra, message):
    import torch

    if "model.device=cuda:0" in extra and torch.cuda.is_available():  # the device exists: the check passes
        assert train_main(["--check", *BASE, f"log.out_dir={tmp_path / 'run'}", *extra]) == 0
        return
    assert train_main(["--check", *BASE, f"log.out_dir={tmp_path / 'run'}", *extra]) == 2
    assert message in capsys.readouterr().err


def test_check_reads_the_data_rows_and_columns(tmp_path, capsys):
    model = tiny_arith_dir()
    ok = _data(tmp_path, [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}])
    args = [*BASE, f"model.path={model}", "data.task=jsonl", f"data.path={ok}", "data.reward=math",
            f"log.out_dir={tmp_path / 'run'}"]
    assert train_main(["--check", *args]) == 0
    # a missing answer column, named with the file and row
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n" + json.dumps({"question": "3+3?"}) + "\n")
    assert train_main(["--check", *args[:-3], f"data.path={bad}", "data.reward=math", f"log.out_dir={tmp_path / 'r2'}"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "answer" in err


def test_check_refuses_a_used_run_directory_like_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*BASE, f"log.out_dir={out}", "data.arith.pool_size=20", "train.method=grpo"]
    build_trainer(load_config(None, args)).train()
    assert train_main(["--check", *args]) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_main(["--check", "--overwrite", *args]) == 0
    assert (out / "run.json").is_file()  # --check writes and removes nothing
    assert train_main(["--check", "--resume", *args, "train.lr=0.5"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_resume_refuses_an_edited_method_file(tmp_path):
    import yaml

    from skpo.config import ConfigError
    from skpo.methods import method_document
    from skpo.training.run_dir import ResumeConfigError

    method_file = tmp_path / "mine.yaml"
    doc = method_document("grpo")
    method_file.write_text(yaml.safe_dump(doc))
    args = [*BASE, f"log.out_dir={tmp_path / 'run'}", "data.arith.pool_size=20", f"train.method={method_file}"]
    build_trainer(load_config(None, args)).train()
    assert yaml.safe_load((tmp_path / "run" / "method.yaml").read_text())["terms"]["response"]["loss_params"]["clip_high"] == 0.2
    doc["terms"]["response"]["loss_params"]["clip_high"] = 0.3
    method_file.write_text(yaml.safe_dump(doc))
    resumed_args = [*args[:2], "train.steps=2", *args[3:]]
    with pytest.raises((ResumeConfigError, ConfigError), match=r"method\.terms\.response\.loss_params\.clip_high: 0\.2 → 0\.3"):
        build_trainer(load_config(None, resumed_args), resume=True)


def test_check_sizes_the_context_against_the_model(tmp_path, capsys):
    """The tiny model has 512 positions: SKPO with 400-token answers needs prompt + ⌊L/2⌋ + 400
    with L = max(prior, 300) — more than it has. ``--check`` names the settings; a context set
    to the model's passes with a note that answers reaching it are cut (and counted)."""
    args = [*BASE, f"log.out_dir={tmp_path / 'run'}", "data.arith.pool_size=20", "train.method=skpo",
            "rollout.max_new_tokens=400"]
    assert train_main(["--check", *args]) == 2
    err = capsys.readouterr().err
    assert "512 positions" in err and "rollout.max_new_tokens" in err and "rollout.max_context_tokens=512" in err
    assert train_main(["--check", *args, "rollout.max_context_tokens=512"]) == 0
    assert "cut, counted as rollout/cut_by_context" in capsys.readouterr().out
    assert train_main(["--check", *args, "rollout.max_context_tokens=600"]) == 2
    assert "exceeds the model's 512 positions" in capsys.readouterr().err


def test_check_needs_vllm_and_a_gpu_for_the_vllm_engine(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert train_main(["--check", *BASE, f"log.out_dir={tmp_path / 'run'}", "rollout.engine=vllm"]) == 2
    assert "pip install -r requirements/gpu.txt" in capsys.readouterr().err
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    import torch

    if not torch.cuda.is_available():
        assert train_main(["--check", *BASE, f"log.out_dir={tmp_path / 'run2'}", "rollout.engine=vllm"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err

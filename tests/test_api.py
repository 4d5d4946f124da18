"""The Python API (``skpo.train`` / ``skpo.build``, docs/python-api.md): the example file runs as
a user would run it, and each way of handing over data, reward and method reaches the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import skpo

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(autouse=True)
def _own_rewards_removed_afterwards():
    """Rewards these tests register in-process leave the registry as it was."""
    from skpo.rewards.registry import REWARDS

    before = set(REWARDS)
    yield
    for name in set(REWARDS) - before:
        del REWARDS[name]


SMALL = ["train.steps=1", "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=8",
         "eval.every=0", "log.progress=false", "log.tensorboard=false"]


@pytest.mark.slow(reason="the same API path (rows, function, method document) runs in-process in the quick "
                         "test_rows_function_and_method_reach_the_run; this runs the example file as a user would")
def test_the_example_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trained 3 steps with grpo_sign" in out.stdout
    run = tmp_path / "run"
    assert yaml.safe_load((run / "method.yaml").read_text())["terms"]["response"]["advantage"] == "sign_of_centered"
    assert json.loads((run / "run.json").read_text())["data_columns"] == {"prompt": "question", "answer": "answer"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all(-1 <= x["reward/user_mean"] <= 1 for x in lines)


def test_rows_function_and_method_reach_the_run(tmp_path):
    seen = tmp_path / "seen.txt"  # the function runs in a worker process: what it writes to a file is seen here

    def reward(completion: str, example) -> bool:
        with seen.open("a") as f:
            f.write(example.gold + "\n")
        return len(completion) % 2 == 0

    rows = [{"problem": "1+1", "solution": "2"}, {"problem": "2+5", "solution": "7"}]
    trainer = skpo.train(model="tiny-arith", data=rows, reward=reward, method="grpo", out_dir=tmp_path / "run",
                         overrides=SMALL)
    golds = seen.read_text().split()
    assert trainer.state.step == 1 and set(golds) <= {"2", "7"} and len(golds) == 4  # 2 prompts x 2 answers
    assert (tmp_path / "run" / "inputs" / "rows.jsonl").is_file()
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["data"]["task"] == "jsonl" and cfg["reward"]["function"].startswith("python.")
    # the same again from its saved config: a resumed run finds rows, reward (registered) and method
    resumed = skpo.build(tmp_path / "run" / "config.yaml", overrides=["train.steps=2"], resume=True)
    assert resumed.state.step == 1
    resumed.close()


def test_a_reward_name_that_is_built_in_cannot_be_taken():
    with pytest.raises(ValueError, match="built-in"):
        skpo.register_reward("math", lambda c, e: 1.0)

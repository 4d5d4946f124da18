"""scripts/gpu_check.sh as a CPU dry run (``--allow-cpu``): the script a lent GPU machine runs
must still start, run its phases through the current package and write its report — a
refactor that breaks it would otherwise only show on the next GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.xdist_group("processes")  # it starts a pytest run and a training of its own
def test_gpu_check_dry_run_writes_a_whole_report(tmp_path):
    report = tmp_path / "gpu_check.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(scratch)}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(report),
         "--allow-cpu", "--engine", "hf", "--steps", "1", "--prompts", "2", "--answer-mean", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(report.read_text())
    assert found["ok"] is True
    packages = found["environment"]["packages"]
    assert packages["transformers"] not in ("?", "") and not packages["transformers"].startswith("absent")
    assert packages["math_verify"] != "?"  # read from the distribution's metadata
    assert found["contract_suite"]["ok"] and "passed" in found["contract_suite"]["summary"]
    training = found["training"]
    assert training["recipe"].endswith("qwen2.5-math-7b-skpo.yaml")
    assert training["engine"] == "hf" and training["context"] == 4096
    steps = training["steps"]
    assert len(steps) == 1 and steps[0]["decoded_tokens"] > 0 and steps[0]["trained_tokens"] > 0
    if torch.cuda.device_count() < 2:  # the 2-rank run is said to be skipped, not faked
        assert "skipped" in found["fsdp"]
    else:
        assert found["fsdp"]["ok"] is True
    assert not list(scratch.glob("skpo-gpu-check-*"))  # with --report elsewhere, its work folder goes

"""scripts/gpu_check.sh as a CPU dry run (``--allow-cpu``): the script a lent GPU machine runs
must still start, run its phases through the current package and write its report — a
refactor that breaks it would otherwise only show on the next GPU.

It runs as on a bare GPU image: the packages such an image is not known to have (its report
lists torch, transformers, accelerate, peft, safetensors, pytest; pydantic is carried) are
blocked (``tests/data/blocked_imports``: importing them raises ``ModuleNotFoundError``, in the
check and in every process it starts), so an import of one of them on the check's path fails
here first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# not on a bare GPU image; skpo imports each only where it is used (scripts/gpu_check.py: OPTIONAL)
ABSENT = ("rich", "tensorboard", "torch.utils.tensorboard", "matplotlib", "math_verify", "pyarrow", "datasets", "wandb",
          "vllm")


@pytest.mark.xdist_group("processes")  # it starts a pytest run and a training of its own
def test_gpu_check_dry_run_writes_a_whole_report_without_the_optional_packages(tmp_path):
    report = tmp_path / "gpu_check.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    blocker = str(ROOT / "tests" / "data" / "blocked_imports")
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(scratch), "SKPO_BLOCKED_IMPORTS": ",".join(ABSENT),
           "PYTHONPATH": os.pathsep.join(p for p in (blocker, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(report),
         "--allow-cpu", "--engine", "hf", "--steps", "1", "--prompts", "2", "--answer-mean", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,  # (a loaded 2-core machine)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(report.read_text())
    assert found["ok"] is True
    environment = found["environment"]
    packages = environment["packages"]
    assert packages["transformers"] not in ("?", "") and not packages["transformers"].startswith("absent")
    absent = {"vllm", "math_verify", "rich", "tensorboard", "matplotlib", "pyarrow", "datasets", "wandb"}
    assert all(packages[name] == "absent (ModuleNotFoundError)" for name in absent)
    assert set(environment["skipped"]) == absent and "parity" in environment["skipped"]["math_verify"]
    assert isinstance(environment["carried"], list)  # (pydantic is installed here: nothing carried)
    assert found["contract_suite"]["ok"] and "passed" in found["contract_suite"]["summary"]
    assert found["contract_suite"]["engines"] == ["hf", "vllm-fake"]  # (the fake stands in for the blocked vLLM)
    assert found["vllm_smoke"] == {"skipped": "vLLM does not import here"}
    sampler = found["sampler_decode"]  # both samplers side by side (on a GPU: tokens/s on the stand-in)
    assert set(sampler["decode_tokens_per_s"]) == {"float64_reference", "blocked"}
    assert all(v > 0 for v in sampler["decode_tokens_per_s"].values()) and sampler["speedup"] > 0
    training = found["training"]
    assert training["recipe"].endswith("qwen2.5-math-7b-skpo.yaml") and training["sampler"] == "float64_reference"
    assert training["engine"] == "hf" and training["context"] == 4096
    steps = training["steps"]
    assert len(steps) == 1 and steps[0]["decoded_tokens"] > 0 and steps[0]["trained_tokens"] > 0
    if torch.cuda.device_count() < 2:  # the 2-rank run is said to be skipped, not faked
        assert "skipped" in found["fsdp"]
    else:
        assert found["fsdp"]["ok"] is True
    assert not list(scratch.glob("skpo-gpu-check-*"))  # with --report elsewhere, its work folder goes

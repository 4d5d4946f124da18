"""``skpo compare``: equal-budget runs over seeds, mean ± 95 % CI, curves, and a killed sweep
that continues where it stopped."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skpo.analysis.compare import curve_on_grid, mean_ci, summarize, t_quantile
from skpo.commands.compare import main as compare_main
from skpo.commands.compare import resolve_methods


def test_mean_ci_hand_values():
    mean, half = mean_ci([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert mean_ci([0.5]) == (0.5, None)
    mean, half = mean_ci([0.40, 0.42, 0.44, 0.46, 0.48])  # sd 0.0316, t(4) = 2.776
    assert mean == pytest.approx(0.44) and half == pytest.approx(2.776 * math.sqrt(0.001) / math.sqrt(5))
    assert t_quantile(30) == 2.042 and t_quantile(200) == 1.96
    with pytest.raises(ValueError):
        mean_ci([])


def test_curve_on_grid_interpolates_inside_only():
    assert curve_on_grid([0, 10, 20], [0.0, 1.0, 0.0], [0, 5, 10, 15, 20, 25]) == [0.0, 0.5, 1.0, 0.5, 0.0, None]
    assert curve_on_grid([10, 0], [1.0, 0.0], [5]) == [0.5]  # unsorted input


def test_summarize_groups_by_method():
    rows = [{"method": "a", "seed": 2, "avg@k": 0.5}, {"method": "b", "seed": 1, "avg@k": 0.1}, {"method": "a", "seed": 1, "avg@k": 0.7}]
    s = summarize(rows, ["avg@k", "missing"])
    assert list(s) == ["a", "b"] and s["a"]["n"] == 2 and s["a"]["seeds"] == [1, 2]
    assert s["a"]["avg@k"]["mean"] == pytest.approx(0.6) and s["b"]["avg@k"]["ci95"] is None and "missing" not in s["a"]


def test_methods_and_variants():
    got = resolve_methods("grpo,skpo-noskip,mine", ["mine=skpo:method.rollout_params.selection=extreme,train.lr=1e-4"])
    assert got == {"grpo": ("grpo", []), "skpo-noskip": ("skpo", ["method.rollout_params.skip=false"]),
                   "mine": ("skpo", ["method.rollout_params.selection=extreme", "train.lr=1e-4"])}
    with pytest.raises(ValueError, match="unknown method 'grpp'"):
        resolve_methods("grpp", [])
    with pytest.raises(ValueError, match="expected NAME=METHOD"):
        resolve_methods("x", ["x"])


def test_bad_override_fails_before_any_run(tmp_path, capsys):
    assert compare_main(["--methods", "grpo", "--quick", "--out", str(tmp_path), "train.lrr=1"]) == 2
    assert "train.lrr" in capsys.readouterr().err and not list(tmp_path.glob("grpo"))


def _compare(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "skpo.cli", "compare", "--methods", "grpo,skpo", "--quick", "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow(reason="skpo compare trains, evaluates and summarizes in the quick tests/test_cli.py::test_compare")
@pytest.mark.xdist_group("processes")
def test_quick_sweep_and_a_killed_sweep_continues(tmp_path):
    """Both methods reach the token budget on both seeds; the report has CIs and curves. A
    sweep killed in the middle of a run continues from that run's checkpoint, and its result
    equals the result of a sweep that was never interrupted."""
    full = tmp_path / "full"
    proc = _compare(full)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    report = json.loads((full / "compare.json").read_text())
    assert set(report["summary"]) == {"grpo", "skpo"} and len(report["runs"]) == 4
    for run in report["runs"]:
        assert run["tokens"] >= report["settings"]["budget"] and 0 <= run["avg@k"] <= 1
        assert run["curve"][0]["tokens"] == 0 and run["curve"][-1]["tokens"] == run["tokens"]
    assert report["summary"]["skpo"]["avg@k"]["ci95"] is not None
    assert (full / "compare.png").is_file() and "| skpo | 2 |" in (full / "compare.md").read_text()

    killed = tmp_path / "killed"
    proc = _compare(killed, "--jobs", "1")
    target = killed / "grpo" / "seed1" / "checkpoints"
    deadline = time.time() + 300
    while not (target.is_dir() and any(p.name.startswith("step_") for p in target.iterdir())):
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before a checkpoint was written"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep, children included
    proc.wait()
    assert not (killed / "grpo" / "seed1" / "result.json").exists()
    proc = _compare(killed, "--jobs", "1")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    for method in ("grpo", "skpo"):
        for seed in (1, 2):
            a = json.loads((full / method / f"seed{seed}" / "result.json").read_text())
            b = json.loads((killed / method / f"seed{seed}" / "result.json").read_text())
            for key in ("avg@k", "pass@k", "tokens", "steps"):
                assert a[key] == b[key], (method, seed, key)

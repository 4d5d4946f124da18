"""Every script in ``benchmarks/`` and ``scripts/`` runs with its smallest arguments, so a refactor
that breaks one fails the suite (a benchmark is otherwise run only when someone measures).

The cheap scripts run here in the quick tier, in-process; the benchmarks that train (and the
diagnostic runs of ``scripts/skpo_vs_grpo.py``) have their own code exercised in-process on a
tiny step in the quick tier and run whole, as a user starts them, in the complete suite.
``benchmarks/vs_trl.py`` needs the ``[bench]`` extra (TRL), which ``make test-all`` installs;
without it that run is skipped. A script that needs a GPU or vLLM runs its CPU part elsewhere
(:data:`ELSEWHERE`); a new script with neither a run here nor an entry there fails
:func:`test_every_script_is_run_or_said_where`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import runpy
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
# a run of the embedded default small enough for seconds: 2 prompts × 2 answers of ≤ 16 tokens
TINY = ["train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=16", "data.arith.pool_size=20",
        "log.tensorboard=false", "log.progress=false", "eval.every=0"]

# script -> the test of this module that runs it
RUN_BY = {
    "benchmarks/cost_model.py": "test_cost_model_counts_tokens_and_flops_as_its_formulas_say",
    "benchmarks/shared_prefix.py": "test_shared_prefix_gives_the_same_samples_shared_or_not",
    "scripts/memory_table.py": "test_memory_table_says_fits_where_every_phase_fits",
    "benchmarks/user_reward_worker.py": "test_user_reward_worker_scores_alike_in_the_worker_and_in_process",
    "benchmarks/roofline.py": "test_script_runs_with_its_smallest_arguments",
    "benchmarks/skpo_vs_grpo.py": "test_script_runs_with_its_smallest_arguments",
    "benchmarks/before_after.py": "test_script_runs_with_its_smallest_arguments",
    "benchmarks/vs_trl.py": "test_script_runs_with_its_smallest_arguments",
    "scripts/preset_table.py": "test_script_runs_with_its_smallest_arguments",
    "scripts/skpo_vs_grpo.py": "test_script_runs_with_its_smallest_arguments",
    "scripts/check_gpu_env.sh": "test_check_gpu_env_resolves_the_gpu_set",
}
# script -> where else it runs, or why it cannot run here (an entry may name a script not yet present)
ELSEWHERE = {
    "benchmarks/_bench.py": "a module every benchmark imports, not a script; each benchmark run here runs it",
    "scripts/gpu_check.sh": "its CPU dry run (--allow-cpu) is tests/test_gpu_check_script.py",
    "scripts/gpu_check.py": "started by scripts/gpu_check.sh; its CPU dry run is tests/test_gpu_check_script.py",
    "scripts/vllm_smoke.py": "needs vLLM on a GPU; its one-line skip and its whole flow on the fake vLLM are "
                             "tests/test_vllm_engine.py (the GPU check runs it where vLLM imports)",
}


def _scripts() -> set[str]:
    return {f"{d}/{p.name}" for d in ("benchmarks", "scripts") for p in (ROOT / d).iterdir() if p.is_file()}


def test_every_script_is_run_or_said_where():
    scripts = _scripts()
    missing = sorted(scripts - RUN_BY.keys() - ELSEWHERE.keys())
    assert not missing, (f"no test runs {missing}: add its smallest run to tests/test_bench_scripts.py (RUN_BY) "
                         "or say where it runs (ELSEWHERE)")
    assert not RUN_BY.keys() & ELSEWHERE.keys()
    assert sorted(RUN_BY.keys() - scripts) == [], "RUN_BY names a script that is gone"
    tests = {name for name, fn in globals().items() if name.startswith("test_") and callable(fn)}
    assert set(RUN_BY.values()) <= tests
    runs = {p.values[0] for p in SLOW_RUNS}
    assert runs == {s for s, t in RUN_BY.items() if t == "test_script_runs_with_its_smallest_arguments"}
    for reason in ELSEWHERE.values():  # a test file named as the place must exist
        for path in re.findall(r"tests/\S+\.py", reason):
            assert (ROOT / path).is_file(), path


# ----------------------------------------------------------------------------- quick, in-process


def _run_script(path: Path, argv: list[str], monkeypatch) -> None:
    """``python path *argv`` in this process (the script's folder first on sys.path, as python does)."""
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    runpy.run_path(str(path), run_name="__main__")


def _load(path: Path, name: str):
    """A benchmark or script as a module (``import _bench`` resolves from its folder)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def _table(out: str) -> dict[str, list[str]]:
    """Rows of the markdown tables in ``out``: first cell -> the other cells."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_cost_model_counts_tokens_and_flops_as_its_formulas_say(monkeypatch, capsys):
    _run_script(BENCH / "cost_model.py", ["--prompts", "2", "--group", "3", "--prompt-len", "5", "--answer-len", "10",
                                          "--max-len", "16", "--segment-frac", "0.5", "--params", "100",
                                          "--mini-batches", "1"], monkeypatch)
    rows = _table(capsys.readouterr().out)
    # B=2, G=3, q=5, o=10, s=5, N=100, no old-log-prob pass (one mini-batch)
    assert rows["decoded tokens"] == ["60", "90", "1.50×"]  # B·G·o | B·G·s + B·G·o
    assert rows["prefill tokens"] == ["10", "30", "3.00×"]  # B·q | B·q + B·(s + q)
    assert rows["forward (rows) tokens"] == ["90", "140", "1.56×"]  # B·G·(q+o) | B·G·(s+q+o) + B·(q+s)
    assert rows["forward (packed) tokens"] == ["70", "100", "1.43×"]  # B·(q+G·o) | B·(s+q+G·o) + B·(q+s)
    # 2N per decoded/prefilled token + 6N per trained token: 200·70 + 600·90 | 200·120 + 600·140
    assert rows["FLOP (rows)"] == ["68k", "108k", "1.59×"]
    assert rows["sequential decode steps (two-call, worst case)"] == ["16", "21", "1.31×"]  # L_max | L_max + o/2


def test_memory_table_says_fits_where_every_phase_fits(monkeypatch, capsys):
    _run_script(ROOT / "scripts" / "memory_table.py", ["--micro-batch-tokens", "4096"], monkeypatch)
    rows = {k: v for k, v in _table(capsys.readouterr().out).items() if k != "set-up"}
    assert len(rows) == 5
    for name, cells in rows.items():
        gpu_gb = float(re.search(r"(\d+) GB$", name).group(1))
        phases = [float(c.removesuffix(" GB")) for c in cells[:4]]
        assert all(p > 0 for p in phases)
        assert cells[4] == ("yes" if max(phases) < 0.95 * gpu_gb else "no"), name


def test_user_reward_worker_scores_alike_in_the_worker_and_in_process(monkeypatch, capsys):
    # the script asserts itself that the worker and the in-process call give the same rewards
    _run_script(BENCH / "user_reward_worker.py", ["--batch", "2", "--chars", "40", "--reps", "1"], monkeypatch)
    rows = _table(capsys.readouterr().out)
    assert rows["batch"][:2] == ["worker ms", "in-process ms"] and len(rows["2"]) == 4


def test_shared_prefix_gives_the_same_samples_shared_or_not(monkeypatch, capsys):
    # the script asserts itself that the shared and unshared engines draw the same samples
    _run_script(BENCH / "shared_prefix.py", ["--prefix", "8", "--n", "2", "--new", "4", "--reps", "1"], monkeypatch)
    row = _table(capsys.readouterr().out)["8"]
    assert len(row) == 5 and all(float(c.removesuffix("×")) > 0 for c in row)


def test_training_benchmarks_on_a_tiny_step(tmp_path):
    """The code of benchmarks/vs_trl.py, skpo_vs_grpo.py and roofline.py (and the step metrics
    before_after.py reads) on tiny steps: what their whole runs in the complete suite rest on."""
    vs_trl = _load(BENCH / "vs_trl.py", "bench_vs_trl")
    args = argparse.Namespace(group=2, prompts=2, length=16, mode="natural", lr=5e-5, skpo_overrides=TINY)
    ours = vs_trl.skpo_side(args, tmp_path / "grpo")
    assert ours.cfg.train.method == "grpo" and ours.cfg.model.dtype == "float32"
    # TRL's prompts tokenise back to skpo's, and its reward is skpo's own (GRPO's range: -1 wrong, +1 right)
    texts = vs_trl.prompt_texts(ours)
    assert len(texts) == 20
    clock = vs_trl.PhaseClock()
    vs_trl.time_skpo(ours, clock)
    reward = vs_trl.trl_reward(ours)
    gold = int(ours.source.items[1].answer.gold)
    answers = [f"Answer: {gold}\n", f"Answer: {gold + 1}\n"]
    ids = [ours.tokenizer.encode(a, add_special_tokens=False) for a in answers]
    clock.start()
    assert reward(completions=answers, completion_ids=ids, item=[1, 1], prompts=texts[:2]) == [1.0, -1.0]
    assert clock.stop()["scoring"][0] > 0
    # one skpo step, its phases timed through the public methods vs_trl wraps; the metrics
    # vs_trl and before_after read
    clock.start()
    m = ours.train_step(ours.state.step)
    split = clock.stop()
    assert set(split) == {*vs_trl.PHASES, "step"}
    for phase in ("generation", "scoring", "update"):
        assert 0 < split[phase][0] < split["step"][0], phase
    assert m["tokens/decoded"] > 0 and m["tokens/trained"] > 0
    assert {"time/step", "time/rollout", "time/update"} <= m.keys()
    ours.state.step += 1

    roofline = _load(BENCH / "roofline.py", "bench_roofline")
    assert round(roofline.linear_weights(ours.policy) / 1e4) == 102  # docs/performance.md: 1.02 M linear weights
    kinds = dict(roofline.profile_categories(ours))
    assert kinds["matmul (mm, addmm, bmm)"] > 0 and sum(kinds.values()) > 0 and ours.state.step == 2
    ours.close()

    skpo_vs_grpo = _load(BENCH / "skpo_vs_grpo.py", "bench_skpo_vs_grpo")
    trainer, calls = skpo_vs_grpo.build("skpo", str(tmp_path / "skpo"), TINY)
    row = skpo_vs_grpo.one_step(trainer, calls)
    assert len(calls) == 2  # SKPO: segments, then answers from [s, q]
    assert row["upstream gen"] > 0 and row["answer gen"] > 0 and row["update"] > 0
    assert 1 <= row["upstream decode steps"] <= 16 and 1 <= row["answer decode steps"] <= 16
    assert row["trained upstream"] > 0 and row["update forward"] > row["trained"] > 0
    assert row["prefill"] > 0 and row["decoded"] >= row["trained"]
    trainer.close()


def test_why_diagnostics_on_a_tiny_step(tmp_path, capsys):
    """scripts/skpo_vs_grpo.py's own parts on tiny steps: the oracle rollout kind, the accuracy of
    SKPO's pipeline and the two gradient terms (its whole runs: the complete suite)."""
    from skpo.config import load_config
    from skpo.rollout.base import ROLLOUTS
    from skpo.training.setup import build_trainer

    why = _load(ROOT / "scripts" / "skpo_vs_grpo.py", "why_skpo_vs_grpo")
    method, overrides = why.configure("skpo-oracle")
    try:
        cfg = load_config(None, [f"train.method={method}", *overrides, *TINY, f"log.out_dir={tmp_path / 'oracle'}"])
        trainer = build_trainer(cfg)
        m = trainer.train_step(0)
        assert m["oracle/segment_ok"] in (0.0, 0.5, 1.0)  # two prompts, one upstream row each
        accuracy = why.pipeline_accuracy(trainer, cfg, n=2)
        assert 0.0 <= accuracy <= 1.0 and (accuracy * 16).is_integer()  # 2 problems × 8 answers
        trainer.close()
    finally:
        ROLLOUTS.unregister("skpo_oracle")
    torch.manual_seed(0)
    why.gradients(1, str(tmp_path / "gradients"), tuple(TINY))
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 0 and -1.0 <= line["cosine"] <= 1.0
    assert line["upstream_norm"] >= 0 and line["downstream_norm"] >= 0  # (0 where every group agrees)
    if line["downstream_norm"] > 0:
        assert math.isclose(line["ratio"], line["upstream_norm"] / line["downstream_norm"], abs_tol=0.01)


def test_committed_gpu_lock_meets_the_pyproject_ranges():
    """What scripts/check_gpu_env.sh checks after resolving, on the lock it wrote: every range of
    pyproject.toml (dependencies and the vllm extra) holds, and every pin of gpu.txt is kept."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib: Python 3.11+")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def pins(path: Path) -> dict[str, str]:
        lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
        return {canonicalize_name(n): v for n, v in (ln.split("==") for ln in lines if ln)}

    lock, wanted = pins(ROOT / "requirements" / "gpu-lock.txt"), pins(ROOT / "requirements" / "gpu.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["vllm"]):
        assert req.specifier.contains(lock[canonicalize_name(req.name)], prereleases=True), (req, lock.get(req.name))
    assert {n: lock.get(n) for n in wanted} == wanted


# ----------------------------------------------------------------------------- whole runs, complete suite

_STEP_CODE = ("the same code on a tiny step runs in the quick tests/test_bench_scripts.py::"
              "test_training_benchmarks_on_a_tiny_step")
_WHY_CODE = "its oracle rollout, pipeline accuracy and gradient split run in the quick test_why_diagnostics_on_a_tiny_step"
SLOW_RUNS = [
    pytest.param("benchmarks/roofline.py", ["--steps", "1", "--threads", "1", *TINY], "| whole step |",
                 marks=pytest.mark.slow(reason="matmul rates and steps; " + _STEP_CODE), id="roofline"),
    pytest.param("benchmarks/skpo_vs_grpo.py", ["--reps", "1", "--warmup", "0", "--threads", "1", *TINY],
                 "SKPO step / GRPO step", marks=pytest.mark.slow(reason=_STEP_CODE), id="skpo_vs_grpo"),
    pytest.param("benchmarks/before_after.py", ["--ref", "HEAD", "--methods", "grpo", "--rounds", "1", "--steps", "1",
                                                "--threads", "1", *TINY], "| step |",
                 marks=pytest.mark.slow(reason="a git worktree and two processes; the step metrics it reads: " + _STEP_CODE),
                 id="before_after"),
    pytest.param("benchmarks/vs_trl.py", ["--mode", "fixed", "--reps", "1", "--warmup", "0", "--prompts", "2",
                                          "--group", "2", "--length", "8", "--threads", "1"], "speed-up (TRL",
                 marks=pytest.mark.slow(reason="TRL's side is TRL; skpo's side, prompts and reward: " + _STEP_CODE),
                 id="vs_trl-fixed"),
    pytest.param("benchmarks/vs_trl.py", ["--mode", "natural", "--reps", "1", "--warmup", "0", "--prompts", "2",
                                          "--group", "2", "--length", "8", "--threads", "1"], "speed-up (TRL",
                 marks=pytest.mark.slow(reason="the fixed-mode run's path with EOS kept; " + _STEP_CODE),
                 id="vs_trl-natural"),
    pytest.param("scripts/preset_table.py", ["--steps", "1", "--eval-problems", "2", "--k", "1", "--methods", "grpo",
                                             "--out", "{tmp}/table", *TINY], "| grpo |",
                 marks=pytest.mark.slow(reason="build, held-out evaluation before and after, train and metrics.jsonl "
                                        "run in the quick tests/test_cli.py::test_main"), id="preset_table"),
    pytest.param("scripts/skpo_vs_grpo.py", ["--run", "skpo-oracle", "--steps", "1", "--eval-problems", "2",
                                             "--out", "{tmp}/why", *TINY], '"skip_input_avg@8"',
                 marks=pytest.mark.slow(reason=_WHY_CODE), id="why-oracle"),
    pytest.param("scripts/skpo_vs_grpo.py", ["--gradients", "--gradient-steps", "1", "--out", "{tmp}/gradients", *TINY],
                 '"cosine"', marks=pytest.mark.slow(reason=_WHY_CODE), id="why-gradients"),
]


@pytest.mark.xdist_group("processes")
@pytest.mark.parametrize(("script", "argv", "expect"), SLOW_RUNS)
def test_script_runs_with_its_smallest_arguments(script, argv, expect, tmp_path):
    if script == "benchmarks/vs_trl.py" and importlib.util.find_spec("trl") is None:
        pytest.skip('TRL is not installed: the [bench] extra (make test-all installs it)')
    if script == "benchmarks/before_after.py" and subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout: before_after.py checks out an earlier revision")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / script), *(a.replace("{tmp}", str(tmp_path)) for a in argv)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert expect in done.stdout, done.stdout[-3000:]


def _index_answers(url: str = "https://pypi.org/simple/vllm/") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.slow(reason="resolves the GPU set against the package index (minutes); the ranges it checks are checked "
                  "on the committed lock in the quick test_committed_gpu_lock_meets_the_pyproject_ranges")
@pytest.mark.xdist_group("processes")
def test_check_gpu_env_resolves_the_gpu_set(tmp_path):
    if sys.version_info < (3, 11):
        pytest.skip("scripts/check_gpu_env.sh reads pyproject.toml with tomllib (Python 3.11+)")
    if not _index_answers():
        pytest.skip("the package index does not answer: scripts/check_gpu_env.sh resolves against it")
    lock = tmp_path / "gpu-lock.txt"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "check_gpu_env.sh"), "3.12", str(tmp_path / "report.json"),
                           str(lock)], env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every pyproject.toml range holds" in done.stdout
    pins = lock.read_text()
    for pin in ("vllm==0.30.0", "torch==2.13.0", "transformers==5.23.0"):  # requirements/gpu.txt's pins, kept
        assert f"\n{pin}\n" in pins

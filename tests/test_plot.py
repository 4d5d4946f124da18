"""Learning-curve plots (``skpo.analysis.plots``, ``skpo plot``) on synthetic metrics files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from skpo.analysis.plots import MetricsFileError, build_figure, load_run, plot_runs, read_metrics, run_label


def _write_run(path: Path, records: list[dict], method: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if method is not None:
        (path / "run.json").write_text(json.dumps({"method": method, "seed": 0}))
    return path


def _records(steps: int, scale: float, entropy: bool = True, eval_every: int = 5) -> list[dict]:
    out = []
    for s in range(steps):
        rec = {
            "step": s,
            "time": 1.5 * s,
            "reward/mean": scale * (1 - math.exp(-s / 10)),
            "accuracy/mean": 0.5 * scale * (1 - math.exp(-s / 10)),
            "upstream/reward": 0.4 * scale,
            "downstream/reward": 0.6 * scale,
            "response_length/mean": 40 + s,
        }
        if entropy:
            rec["actor/entropy"] = 1.0 / (1 + s)
        if s % eval_every == 0:
            rec["eval/arith/avg@8"] = 0.3 + 0.01 * s
        out.append(rec)
    return out


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        _write_run(tmp_path / "run_a", _records(20, 1.0), method="skpo"),
        _write_run(tmp_path / "run_b", _records(15, 0.8, entropy=False), method="grpo"),
        _write_run(tmp_path / "seed1", _records(20, 0.9), method="skpo"),  # same method, second seed
        _write_run(tmp_path / "plain_dir", _records(10, 0.5)),  # no run.json: label = dir name
    ]


def test_labels_from_run_json_or_dir_name(runs: list[Path]) -> None:
    assert [run_label(r) for r in runs] == ["skpo", "grpo", "skpo", "plain_dir"]


def test_build_figure_panels_and_lines(runs: list[Path]) -> None:
    loaded = [load_run(r) for r in runs]
    fig = build_figure(loaded)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["accuracy", "reward", "entropy", "response length"]
    n_lines = [len(ax.get_lines()) for ax in axes]
    # accuracy: accuracy/mean + eval/arith/avg@8 for 4 runs; reward: 3 metrics x 4 runs;
    # entropy: 3 runs log it; length: 4 runs
    assert n_lines == [8, 12, 3, 4]
    entropy = axes[2]
    # every run its own colour and legend entry; two runs of one method are told apart by directory
    colours = [line.get_color() for line in entropy.get_lines()]
    assert len(set(colours)) == 3
    legend = [t.get_text() for t in entropy.get_legend().get_texts()]
    assert legend[2] == "plain_dir" and legend[0].startswith("skpo · ") and legend[1].startswith("skpo · ")
    assert legend[0] != legend[1]
    # runs given one label share a colour and a legend entry (seeds of a method as one family)
    grouped = build_figure(loaded, labels=["skpo", "grpo", "skpo", "plain"]).get_axes()[2]
    colors = [ln.get_color() for ln in grouped.get_lines()]
    assert colors[0] == colors[1]
    assert [t.get_text() for t in grouped.get_legend().get_texts()] == ["skpo", "plain"]
    # eval points only every 5 steps
    eval_line = next(ln for ln in axes[0].get_lines() if ln.get_label().startswith("skpo · ") and "eval/arith/avg@8" in ln.get_label())
    assert list(eval_line.get_xdata()) == [0, 5, 10, 15]


def test_explicit_metrics_and_smoothing(runs: list[Path]) -> None:
    loaded = [load_run(r) for r in runs[:2]]
    fig = build_figure(loaded, ["actor/entropy", "reward/mean"], smooth=0.5, x="time")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["actor/entropy", "reward/mean"]
    assert [len(ax.get_lines()) for ax in axes] == [1, 2]
    assert axes[0].get_xlabel() == "time (s)"
    xs, ys = loaded[0].series("actor/entropy", "time")
    line = axes[0].get_lines()[0]
    assert list(line.get_xdata()) == xs
    assert line.get_ydata()[0] == ys[0] and line.get_ydata()[1] == pytest.approx(0.5 * ys[0] + 0.5 * ys[1])
    with pytest.raises(MetricsFileError, match="no run logs 'kl/mean'"):
        build_figure(loaded, ["kl/mean"])


def test_plot_runs_writes_a_png(runs: list[Path], tmp_path: Path) -> None:
    import matplotlib.image

    out = plot_runs(runs, tmp_path / "figs" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 500 and image.shape[1] > 1000  # 2 x 2 panels at 120 dpi
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_missing_metrics_file_and_malformed_lines(tmp_path: Path) -> None:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty_run.*has no metrics\.jsonl"):
        load_run(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")

    bad = _write_run(tmp_path / "bad", _records(3, 1.0))
    with (bad / "metrics.jsonl").open("a") as f:
        f.write("\n")  # a blank line is fine
        f.write('{"step": 3, "reward/mean": 0.5\n')
    with pytest.raises(MetricsFileError) as info:
        read_metrics(bad / "metrics.jsonl")
    assert str(bad / "metrics.jsonl") in str(info.value) and "line 5" in str(info.value)

    (bad / "metrics.jsonl").write_text('{"step": 0, "reward/mean": 1}\n{"time": 2.0, "reward/mean": 1}\n')
    with pytest.raises(MetricsFileError, match="line 2: missing or non-integer 'step'"):
        read_metrics(bad / "metrics.jsonl")
    (bad / "metrics.jsonl").write_text('{"step": 0, "reward/mean": 1}\n[1, 2]\n')
    with pytest.raises(MetricsFileError, match=r"line 2\): expected a JSON object"):
        read_metrics(bad / "metrics.jsonl")

    (bad / "metrics.jsonl").write_text('{"step": 0, "reward/mean": 1}\n{"step": 1, "reward/mean": "high"}\n'
                                       '{"step": 2, "reward/mean": null}\n')
    with pytest.raises(MetricsFileError, match="line 2: 'reward/mean' is not a number"):
        build_figure([load_run(bad)])

    (bad / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    with pytest.raises(MetricsFileError, match="plottable"):
        build_figure([load_run(bad)])


def test_cli_plot(runs: list[Path], tmp_path: Path, capsys) -> None:
    from skpo.commands.plot import main

    out = tmp_path / "cmp.png"
    assert main([str(r) for r in runs] + ["--out", str(out), "--metrics", "accuracy/mean,actor/entropy"]) == 0
    assert out.is_file() and out.stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out

    assert main([str(tmp_path / "missing_run"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing_run" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_labels_give_runs_of_one_method_distinct_colours(runs: list[Path], tmp_path: Path) -> None:
    loaded = [load_run(r) for r in runs[:3]]  # skpo, grpo, skpo (second seed)
    fig = build_figure(loaded, ["reward/mean"], labels=["skpo seed 0", "grpo", "skpo seed 1"])
    lines = fig.get_axes()[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["skpo seed 0", "grpo", "skpo seed 1"]
    assert len({ln.get_color() for ln in lines}) == 3
    with pytest.raises(ValueError, match="2 labels for 3 runs"):
        build_figure(loaded, labels=["a", "b"])
    out = plot_runs(runs[:3], tmp_path / "dirs.png", ["actor/entropy"], labels=["dir"])
    assert out.is_file()


def test_panels_by_name_and_tokens_axis(tmp_path: Path) -> None:
    recs = [{"step": s, "tokens/seen": 1000 * (s + 1), "actor/pg_loss": 0.1 * s, "upstream/pg_loss": 0.2 * s,
             "downstream/pg_loss": 0.05 * s, "actor/grad_norm": 1.0 + s, "accuracy/mean": 0.1} for s in range(6)]
    run = load_run(_write_run(tmp_path / "r", recs, method="skpo"))
    fig = build_figure([run], panels=["loss", "grad_norm"], x="tokens")
    loss, grad = fig.get_axes()
    assert loss.get_title() == "policy loss" and grad.get_title() == "gradient norm"
    assert sorted(ln.get_label() for ln in loss.get_lines()) == [
        "skpo · actor/pg_loss", "skpo · downstream/pg_loss", "skpo · upstream/pg_loss"]
    assert list(grad.get_lines()[0].get_xdata()) == [1000.0 * (s + 1) for s in range(6)]
    assert grad.get_xlabel() == "decoded rollout tokens"
    with pytest.raises(MetricsFileError, match="unknown panel"):
        build_figure([run], panels=["nope"])
    with pytest.raises(MetricsFileError, match="panel 'kl'"):
        build_figure([run], panels=["kl"])


def test_progress_lines_for_a_log_file(monkeypatch) -> None:
    """Off a terminal: the start line, the first step, then a line once 30 s (``seconds``) have
    passed — a line per step when steps are slower — plus evaluation steps and the last; the
    reward shown is the user's; a slow step says where its time went."""
    import io

    from skpo.training import logging as progress_module
    from skpo.training.logging import Progress

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    header = "skpo train: grpo on M | data D (10 prompts) | 1 process on cpu | from step 0, 10 steps | OUT"
    with Progress(True, total=10, start=0, seconds=30, token_budget=None, stream=stream, header=header) as update:
        for step in range(1, 11):
            clock[0] += 10.0  # 10 s per step
            metrics = {"accuracy/mean": 0.5, "reward/mean": -0.5, "reward/user_mean": 0.25, "time/step": 10.0,
                       "time/rollout": 7.0, "time/update": 3.0, "tokens/seen": 900 * step}
            if step == 5:
                metrics["eval/arith/avg@4"] = 0.375
            update(step, metrics)
    lines = stream.getvalue().splitlines()
    assert lines[0] == header
    assert [ln.split()[1] for ln in lines[1:]] == ["1/10", "4/10", "5/10", "8/10", "10/10"]
    assert "acc 0.5" in lines[1] and "reward 0.25" in lines[1] and "10.00 s/step" in lines[1] and "tokens 900" in lines[1]
    assert "(rollout 7.0s update 3.0s)" in lines[2] and "eval/arith/avg@4 0.375" in lines[3]
    assert "eta" in lines[1] and "eta" not in lines[-1]
    clock[0], stream = 0.0, io.StringIO()
    with Progress(True, total=100, start=0, seconds=30, stream=stream) as update:  # fast steps: a line per 30 s
        for step in range(1, 101):
            clock[0] += 1.0
            update(step, {"time/step": 1.0})
    assert [ln.split()[1] for ln in stream.getvalue().splitlines()] == ["1/100", "31/100", "61/100", "91/100", "100/100"]

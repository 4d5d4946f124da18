"""Sample completions a person can read while a run trains: written at the first step (so a
short run has some) and every ``log.samples_every`` steps, with the special tokens the model saw
and wrote, and a few of them on the console at the same steps (TRL's ``log_completions``)."""

from __future__ import annotations

import io
import json

import pytest

from skpo.config import load_config
from skpo.training.logging import Progress, _clip
from skpo.training.setup import build_trainer

TINY = ["train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=12", "eval.every=0",
        "log.tensorboard=false", "train.method=grpo"]


def _steps(run) -> list[int]:
    return sorted({json.loads(x)["step"] for x in (run / "samples.jsonl").read_text().splitlines()})


@pytest.mark.parametrize("every, steps, written", [(10, 3, [1]), (2, 4, [1, 2, 4]), (1, 2, [1, 2]), (3, 7, [1, 3, 6])])
def test_samples_are_written_at_the_first_step_and_every_n(every, steps, written):
    cfg = load_config(None, [f"log.samples_every={every}"])
    assert [s + 1 for s in range(steps) if cfg.log.samples_due(s)] == written
    assert not any(load_config(None, ["log.samples_every=0"]).log.samples_due(s) for s in range(steps))


def test_a_short_run_on_a_chat_model_shows_its_samples_with_the_template(standin, tmp_path, capsys):
    """A 3-step run with the defaults writes samples at step 1; prompts keep the chat template's
    turn markers and answers their end-of-turn token; the console shows a few of them."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(8)))
    model = standin("qwen2.5-math-7b")
    run = tmp_path / "run"
    cfg = load_config(None, [*TINY, "train.steps=3", f"model.path={model}", f"data.path={data}", f"log.out_dir={run}",
                             "log.console_samples=3"])
    build_trainer(cfg).train()
    assert _steps(run) == [1]
    records = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    for r in records:
        assert r["prompt"].startswith("<|im_start|>system") and r["prompt"].endswith("<|im_start|>assistant\n")
        assert "<|im_start|>user\nWhat is" in r["prompt"]
    out = capsys.readouterr().out
    assert "samples after step 1" in out and out.count("    completion ") == 3
    assert "<|im_start|>assistant⏎" in out  # the prompt's end, newlines shown as ⏎
    quiet = tmp_path / "quiet"
    cfg = load_config(None, [*TINY, "train.steps=1", f"model.path={model}", f"data.path={data}", f"log.out_dir={quiet}",
                             "log.console_samples=false"])
    build_trainer(cfg).train()
    assert _steps(quiet) == [1] and "samples after step" not in capsys.readouterr().out


def test_skpo_shows_the_segment_and_its_answers_on_the_console(tmp_path, capsys):
    """Two prompts' rows are written, segments first; the console shows one prompt's segment and
    the answers written from it (``[s, q]``)."""
    run = tmp_path / "run"
    cfg = load_config(None, ["train.method=skpo", "train.steps=1", "train.prompts_per_step=2", "method.group_size=3",
                             "rollout.max_new_tokens=40", "data.arith.pool_size=20", "eval.every=0",
                             "log.tensorboard=false", "log.samples=2", f"log.out_dir={run}"])
    build_trainer(cfg).train()
    out = capsys.readouterr().out
    lines = out.splitlines()
    roles = [line.split("]")[0].strip(" [") for line in lines if line.startswith("  [")]
    assert roles == ["upstream", "downstream", "downstream", "downstream"]  # log.console_samples: 4
    shown = [line.removeprefix("    prompt     ") for line in lines if line.startswith("    prompt     ")]
    segment = next(line.removeprefix("    completion ") for line in lines if line.startswith("    completion "))
    assert all(p.startswith(segment) for p in shown[1:])  # the answers to [s, q] of the segment shown
    records = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert [r["role"] for r in records][:2] == ["upstream", "upstream"] and len(records) == 8


def test_an_answer_keeps_the_end_of_sequence_token_it_stopped_on(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = load_config(None, [*TINY, "train.steps=1", "rollout.max_new_tokens=48", "data.arith.pool_size=20",
                             "log.samples=1", f"log.out_dir={run}"])
    build_trainer(cfg).train()
    records = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    stopped = [r for r in records if r["completion"].endswith("<|endoftext|>")]
    assert stopped and "<|endoftext|>" in capsys.readouterr().out


def test_on_a_terminal_the_samples_are_a_table(capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    record = {"step": 4, "role": "response", "prompt": "Q: 1+1\nA:\n", "completion": "[2] is it\n<|endoftext|>",
              "reward": 1.0, "correct": True}
    progress = Progress(True, total=5, start=0, stream=Terminal())
    with progress:
        progress.samples([record])
    out = capsys.readouterr().out
    assert "samples after step 4" in out and "[2] is it⏎<|endoftext|>" in out  # brackets are text, not markup
    assert "correct" in out and "yes" in out


def test_clip_keeps_the_start_or_the_end_on_one_line():
    assert _clip("a\nb", 10) == "a⏎b"
    assert _clip("abcdefghij", 5) == "abcd…" and _clip("abcdefghij", 5, tail=True) == "…ghij"

"""Countdown end to end: the config and its defaults, TinyZero's parquet with ``data.path``
alone, one training step per rollout kind from the shipped warm start, evaluation, and a short
learning run (complete suite)."""

from __future__ import annotations

import json

import pytest
import torch

from skpo.commands.train import main as train_main
from skpo.config import ConfigError, load_config
from skpo.evaluation.benchmarks import get_spec
from skpo.evaluation.runner import EvalSettings, evaluate
from skpo.methods import sizes_that_apply
from skpo.models.loading import load_policy, load_tokenizer, shipped_model_dir
from skpo.models.tokenizer import build_tokenizer
from skpo.rewards.countdown import check_countdown
from skpo.tasks.countdown import CountdownConfig, heldout_problems, solution_text
from skpo.tasks.dataset import DatasetError, Problem, countdown_records
from skpo.tasks.sources import CountdownSource, DatasetSource
from skpo.training.reward_check import gold_completion
from skpo.training.setup import build_source, build_trainer

TINYZERO_PROMPT = ("A conversation between User and Assistant. ... User: Using the numbers {nums}, create an "
                   "equation that equals {target}. ... Assistant: Let me solve this step by step.\n<think>")


def tinyzero_rows(n: int = 6) -> list[dict]:
    """Rows in the layout TinyZero's examples/data_preprocess/countdown.py writes: the raw
    dataset's ``target`` and ``nums``, a chat ``prompt``, and verl's ``reward_model``."""
    rows = []
    for i, p in enumerate(heldout_problems(CountdownConfig(), n)):
        rows.append({
            "target": p.target, "nums": list(p.numbers), "data_source": "countdown",
            "prompt": [{"role": "user", "content": TINYZERO_PROMPT.format(nums=list(p.numbers), target=p.target)}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": {"target": p.target, "numbers": list(p.numbers)}},
            "extra_info": {"split": "train", "index": i},
        })
    return rows


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_countdown_task_config_defaults_and_checks():
    cfg = load_config(None, ["data.task=countdown"])
    assert cfg.data.reward == "countdown" and cfg.model.path == "tiny-countdown"
    assert cfg.eval.benchmarks == ["countdown"]
    # what the user sets stays set
    cfg = load_config(None, ["data.task=countdown", "model.path=/some/model", "eval.benchmarks=[arith]"])
    assert cfg.model.path == "/some/model" and cfg.eval.benchmarks == ["arith"]
    with pytest.raises(ConfigError, match=r"data\.countdown"):
        load_config(None, ["data.task=countdown", "data.countdown.min_numbers=5", "data.countdown.max_numbers=4"])
    with pytest.raises(ConfigError, match="synthetic task"):
        load_config(None, ["data.task=countdown", "data.path=x.parquet"])
    # the arithmetic default is untouched
    cfg = load_config(None, [])
    assert (cfg.data.task, cfg.data.reward, cfg.model.path, cfg.eval.benchmarks) == ("arith", "arith", "tiny-arith", ["arith"])


def test_countdown_source_draws_train_side_problems_with_their_reward():
    cfg = load_config(None, ["data.task=countdown", "data.countdown.pool_size=30", "data.countdown.max_numbers=3"])
    source = build_source(cfg, build_tokenizer())
    assert isinstance(source, CountdownSource) and len(source.items) == 30
    held = {p.question for p in heldout_problems(CountdownConfig(max_numbers=3), 50)}
    assert not held & {it.key for it in source.items}
    item = source.items[0]
    assert build_tokenizer().decode(list(item.prompt_ids)) == f"Q: {item.key}\nA:\n"
    right = solution_text(item.answer.countdown)
    verdicts = source.score([item, item], [right, "Answer: 1+1"])
    assert [v.correct for v in verdicts] == [True, False]


def test_tinyzero_parquet_loads_with_data_path_alone_and_is_scored_by_countdown(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", tinyzero_rows())
    cfg = load_config(None, [f"data.path={path}"])
    assert (cfg.data.task, cfg.data.reward) == ("jsonl", "countdown")
    source = build_source(cfg, build_tokenizer())
    assert isinstance(source, DatasetSource) and len(source.items) == 6
    row = source.items[0].answer.row
    good = solution_text(heldout_problems(CountdownConfig(), 1)[0]).split("Answer: ")[1]
    texts = [f" 3 and 4...</think>\n<answer>{good}</answer>", "<answer>1+1</answer>"]
    verdicts = source.score(source.items[:1] * 2, texts)
    assert [v.correct for v in verdicts] == [True, False]
    assert check_countdown(texts[0], row["nums"], row["target"]).correct
    # a JSONL file in the same layout is sniffed too; a named reward is never overridden
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in tinyzero_rows(2)) + "\n")
    assert load_config(None, [f"data.path={jsonl}"]).data.reward == "countdown"
    assert load_config(None, [f"data.path={jsonl}", "data.reward=math"]).data.reward == "math"


def test_a_countdown_row_without_numbers_is_refused_naming_the_row(tmp_path):
    rows = tinyzero_rows(3)
    rows[1] = {**rows[1], "reward_model": {"style": "rule", "ground_truth": {"target": 5, "numbers": "1 2"}}}
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = load_config(None, [f"data.path={jsonl}"])
    with pytest.raises(DatasetError, match=r"bad.jsonl: row 2 \(line 2\): reward 'countdown': .*list of integers"):
        build_source(cfg, build_tokenizer())


@pytest.fixture(scope="module")
def countdown_dir():
    path = shipped_model_dir("tiny-countdown")
    assert path is not None and (path / "model.safetensors").is_file()
    return str(path)


def small_config(model, out, method, *extra):
    return load_config(None, [
        "data.task=countdown", f"model.path={model}", f"train.method={method}", "train.steps=1",
        "train.prompts_per_step=3", *sizes_that_apply(method, 3, k=2, max_steps=2), "rollout.max_new_tokens=48",
        "train.lr=1e-3", f"log.out_dir={out}", "log.progress=false",
        "log.tensorboard=false", "log.samples_every=1", "data.countdown.pool_size=30", "eval.every=0", *extra,
    ])


# one method per rollout kind: group, single, mc_steps, skpo, critique_refine, scaffold
@pytest.mark.parametrize("method", ["grpo", "spo", "mc_dense", "skpo", "critique_grpo", "scaf_grpo"])
def test_countdown_trains_one_step_per_rollout_kind(countdown_dir, tmp_path, method):
    extra = ["train.prompts_per_step=6"] if method == "spo" else []
    extra += ["method.rollout_params.warmup_steps=0"] if method == "scaf_grpo" else []
    cfg = small_config(countdown_dir, tmp_path / method, method, "rollout.temperature=1.5", *extra)
    trainer = build_trainer(cfg)
    assert isinstance(trainer.source, CountdownSource)
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1]
    assert lines[0]["tokens/decoded"] > 0 and all(v == v for v in lines[0].values())
    samples = [json.loads(x) for x in (tmp_path / method / "samples.jsonl").read_text().splitlines()]
    reasons = {s.get("verdict") for s in samples}
    # the countdown reward scored them: its reasons, not the arithmetic reward's
    assert reasons and all(r is None or r == "correct" or r.startswith(("reaches", "unparseable", "numbers must",
                                                                         "no answer", "division")) for r in reasons)


def test_countdown_evaluation_reports_first_moves(countdown_dir):
    model, tok = load_policy(countdown_dir, dtype="float32"), load_tokenizer(countdown_dir)
    spec = get_spec("countdown")
    problems = countdown_records(heldout_problems(CountdownConfig(), 8))
    out = evaluate(model, tok, spec, EvalSettings(k=4), problems=problems)
    moves = out["move_metrics"]
    assert moves["samples"] == 32 and abs(sum(moves["first_move_shares"].values()) - 1) < 1e-9
    # a dead end is never correct: the reward and the solver agree
    assert moves["accuracy_by_first_move"]["dead_end"] in (None, 0.0)
    assert out["prompt_format"] == "countdown"


@pytest.mark.slow(reason="one step of each rollout kind on countdown is covered quickly by "
                         "tests/test_countdown_training.py::test_countdown_trains_one_step_per_rollout_kind")
def test_countdown_grpo_learns_from_the_warm_start(countdown_dir, tmp_path):
    """Fixed seeds: 20 GRPO steps on a pool of 32 problems (16 prompts × 8 answers per step, lr
    3e-4) lift the pool's avg@8 from the warm start's well past a lower bound (measured on this
    machine: 0.199 → 0.512)."""
    torch.set_num_threads(1)
    cfg = small_config(countdown_dir, tmp_path / "learn", "grpo", "train.steps=20", "train.prompts_per_step=16",
                       "method.group_size=8", "train.lr=3e-4", "train.seed=1", "log.samples_every=0",
                       "data.countdown.pool_size=32")
    trainer = build_trainer(cfg)
    spec = get_spec("countdown")
    problems = [item.answer for item in trainer.source.items]

    def accuracy() -> float:
        return evaluate(trainer.policy, trainer.tokenizer, spec, EvalSettings(k=8, seed=7),
                        problems=problems)["metrics"]["avg@8"]

    before = accuracy()
    trainer.train()
    after = accuracy()
    assert before < 0.3 and after >= 0.4 and after >= before + 0.15, (before, after)


def test_countdown_warmstart_examples_show_dead_end_drafts_and_target_the_reference():
    import random

    from skpo.commands.warmstart_training import example_stream, make_countdown_example
    from skpo.tasks.countdown import first_move_kind, generate_problems

    tok, task = build_tokenizer(), CountdownConfig()
    rng = random.Random(0)
    q = "Q: {}\nA:\n"
    seen_flawed = 0
    for p in generate_problems(task, 30, seed=5):
        target = tok.encode(solution_text(p), add_special_tokens=False) + [tok.eos_token_id]
        plain = make_countdown_example(p, "plain", tok, rng, task)
        assert tok.decode(plain.prompt_ids) == q.format(p.question) and plain.response_ids == target
        assert plain.loss_mask == [0] * len(plain.prompt_ids) + [1] * len(target)  # loss on the solution only
        good = make_countdown_example(p, "skip_correct", tok, rng, task)
        draft = tok.decode(good.prompt_ids)
        assert draft.endswith(q.format(p.question)) and solution_text(p).startswith(draft[: -len(q.format(p.question))])
        bad = make_countdown_example(p, "skip_flawed", tok, rng, task)
        text = tok.decode(bad.prompt_ids)[: -len(q.format(p.question))]
        assert bad.response_ids == target
        if "\n" in text and first_move_kind(text, p.numbers, p.target) == "dead_end":
            seen_flawed += 1
    assert seen_flawed > 20  # nearly every problem has a dead-end first move to show
    kinds = [e.kind for _, e in zip(range(200), example_stream(task, tok, seed=0, mix=(0.5, 0.25, 0.25)))]
    assert 70 < kinds.count("plain") < 130 and set(kinds) == {"plain", "skip_correct", "skip_flawed"}


def test_the_shipped_countdown_warm_start_names_its_task(countdown_dir, tmp_path):
    from pathlib import Path

    from skpo.cli import main
    from skpo.commands.evaluate import task_config_for
    from skpo.models.loading import tiny_arith_dir
    from skpo.tasks.arith import ArithConfig

    assert task_config_for(Path(countdown_dir)) == CountdownConfig()
    assert isinstance(task_config_for(tiny_arith_dir()), ArithConfig)
    out = tmp_path / "eval.json"  # skpo eval on a countdown model: the countdown held-out set by default
    assert main(["eval", "--model", "tiny-countdown", "--limit", "3", "--k", "2", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert list(result["benchmarks"]) == ["countdown"] and result["benchmarks"]["countdown"]["n_problems"] == 3


def test_check_runs_the_countdown_reward_on_the_task_and_on_tinyzero_data(tmp_path, capsys):
    """``--check`` pays countdown's gold: the reference moves on the synthetic task, an equation the
    solver finds (in TinyZero's ``<answer>`` form) on a TinyZero parquet; and says where the run goes."""
    assert train_main(["--check", "data.task=countdown", f"log.out_dir={tmp_path / 'a'}"]) == 0
    assert "reward (run on a few rows)" in capsys.readouterr().out
    path = write_parquet(tmp_path / "train.parquet", tinyzero_rows(8))
    assert train_main(["--check", f"data.path={path}", "model.path=tiny-countdown"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "tiny-countdown" in out and "refuse" not in out


def test_reward_check_writes_countdown_golds_the_reward_pays():
    for p in heldout_problems(CountdownConfig(), 20):
        synthetic, = countdown_records([p])
        assert check_countdown(gold_completion("countdown", synthetic), p.numbers, p.target).correct
        problem = Problem(index=0, id="x", question="q", gold=str(p.target),
                          row={"nums": list(p.numbers), "target": p.target})  # a data file's row
        text = gold_completion("countdown", problem)
        assert text.startswith("<answer>") and check_countdown(text, p.numbers, p.target).correct

"""End-to-end trainer tests on a tiny Qwen2: every preset trains, resume is exact,
checkpoints survive a crash mid-save, bad configs name the key."""

from __future__ import annotations

import json

import pytest
import torch

from skpo.config import ConfigError, load_config
from skpo.methods import METHODS, sizes_that_apply
from skpo.rollout import Scores
from skpo.training import checkpoint as ckpt
from skpo.training.setup import build_trainer


@pytest.fixture(scope="module")
def tiny_dir():
    """The shipped warm-started tiny model: it solves a fair share of problems, so groups
    have mixed rewards and every method gets a learning signal."""
    import os

    from skpo.models.loading import tiny_arith_dir

    return os.environ.get("SKPO_TEST_MODEL") or str(tiny_arith_dir())


def per_answer(reward):
    """``Trainer.score`` from a one-answer ``reward(trainer, item, response_ids) -> (reward, correct)``."""
    def score(self, items, responses):
        pairs = [reward(self, item, list(r)) for item, r in zip(items, responses)]
        return Scores([float(r) for r, _ in pairs], [bool(c) for _, c in pairs])
    return score


def small_config(tiny_dir, out, method="skpo", *extra):
    return load_config(None, [
        f"model.path={tiny_dir}", f"train.method={method}", "train.steps=2", "train.prompts_per_step=3",
        *sizes_that_apply(method, 3, k=2, max_steps=3), "rollout.max_new_tokens=48", "train.lr=1e-3", f"log.out_dir={out}", "log.progress=false", "log.tensorboard=false",
        "data.arith.pool_size=50", *extra,
    ])


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def mixed_rewards(monkeypatch):
    """Score answers by a hash of their tokens: every group gets mixed rewards whatever the
    model's accuracy, so each method's gradient path is exercised deterministically."""
    from skpo.training.trainer import Trainer

    def reward(self, item, response_ids):
        correct = sum((i + 1) * t for i, t in enumerate(response_ids)) % 2 == 1
        lo, hi = self.method.reward_range
        return (hi if correct else lo), correct

    monkeypatch.setattr(Trainer, "score", per_answer(reward))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("steps", [1, pytest.param(2, marks=pytest.mark.slow(
    reason="the quick one-step run of the same preset covers the path; a second step adds trackers' and "
           "samplers' updates from a trained policy"))])
def test_every_preset_trains(tiny_dir, tmp_path, method, steps, monkeypatch):
    mixed_rewards(monkeypatch)
    # SPO has one answer per prompt: more prompts so the batch has contrast
    extra = ["train.prompts_per_step=8"] if METHODS[method].group_size == 1 else []
    cfg = small_config(tiny_dir, tmp_path / method, method, "rollout.temperature=1.5", f"train.steps={steps}", *extra)
    trainer = build_trainer(cfg)
    before = weights(trainer.policy)
    trainer.train()
    after = weights(trainer.policy)
    changed = sum(not torch.equal(before[k], after[k]) for k in before)
    lines = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, steps + 1))
    for line in lines:
        assert all(v == v and abs(v) != float("inf") for v in line.values())  # finite
        assert line["tokens/decoded"] > 0 and "time/rollout" in line and "actor/entropy" in line
    # weight decay alone moves weights; the policy-gradient term must have produced a gradient
    assert changed > 0
    assert any(x["actor/grad_norm"] > 0 for x in lines), method
    if method == "skpo":
        assert {"upstream/reward", "downstream/reward", "upstream/pg_loss", "downstream/pg_loss"} <= set(lines[-1])
    assert (tmp_path / method / "checkpoints" / f"step_{steps:06d}" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("method", ["skpo", "grpo"])
def test_resume_gives_the_same_weights(tiny_dir, tmp_path, method):
    full = build_trainer(small_config(tiny_dir, tmp_path / "full", method, "train.steps=4"))
    full.train()
    first = build_trainer(small_config(tiny_dir, tmp_path / "split", method, "train.steps=2"))
    first.train()
    resumed = build_trainer(small_config(tiny_dir, tmp_path / "split", method, "train.steps=4"), resume=True)
    assert resumed.state.step == 2
    resumed.train()
    a, b = weights(full.policy), weights(resumed.policy)
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa, ob = full.actor.optimizer.state_dict()["state"], resumed.actor.optimizer.state_dict()["state"]
    assert all(torch.equal(oa[p][m], ob[p][m]) for p in oa for m in ("exp_avg", "exp_avg_sq", "step"))  # AdamW too
    if method == "skpo":
        assert full.state.value_tracker.state_dict() == resumed.state.value_tracker.state_dict()
        assert full.state.length_tracker.state_dict() == resumed.state.length_tracker.state_dict()
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("crash_at", ["optimizer.pt", "state.json", "rename"])
def test_crash_during_save_leaves_previous_checkpoint_loadable(tiny_dir, tmp_path, monkeypatch, crash_at):
    trainer = build_trainer(small_config(tiny_dir, tmp_path, "grpo", "train.steps=1"))
    trainer.train()  # complete checkpoint at step 1
    good = ckpt.latest_checkpoint(tmp_path)
    trainer.state.step = 2

    class Crash(RuntimeError):
        pass

    if crash_at == "rename":
        monkeypatch.setattr(ckpt.os, "rename", lambda *a: (_ for _ in ()).throw(Crash()))
    elif crash_at == "optimizer.pt":
        real = torch.save
        monkeypatch.setattr(ckpt.torch, "save", lambda obj, f, *a, **k: (_ for _ in ()).throw(Crash()) if str(f).endswith(crash_at) else real(obj, f, *a, **k))
    else:
        real_write = ckpt.Path.write_text
        monkeypatch.setattr(ckpt.Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(Crash()) if self.name == crash_at else real_write(self, *a, **k))
    with pytest.raises(Crash):
        trainer.save()
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(tmp_path) == good
    ckpt.verify_checkpoint(good)
    resumed = build_trainer(small_config(tiny_dir, tmp_path, "grpo", "train.steps=1"), resume=True)
    assert resumed.state.step == 1
    # the next save cleans the leftovers of the crashed one
    resumed.state.step = 3
    resumed.save()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_damaged_checkpoint_is_refused(tiny_dir, tmp_path):
    trainer = build_trainer(small_config(tiny_dir, tmp_path, "grpo", "train.steps=1"))
    trainer.train()
    path = ckpt.latest_checkpoint(tmp_path)
    with (path / "optimizer.pt").open("ab") as f:
        f.write(b"x")
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer\.pt"):
        build_trainer(small_config(tiny_dir, tmp_path, "grpo", "train.steps=1"), resume=True)


def test_resume_without_checkpoint_names_the_directory(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        build_trainer(small_config(tiny_dir, tmp_path, "grpo"), resume=True)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.stepz=3", "train.stepz"),
        ("train.lr=fast", "train.lr"),
        ("train.method=grpp", "grpp"),
        ("rollout.top_p=1.5", "rollout.top_p"),
        ("method.rollout_params.selection=best", "selection must be one of 'median', 'extreme', 'first'"),
        ("data.task=jsonl", "data.path"),
        ("train", "key.sub=value"),
    ],
)
def test_bad_config_names_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_missing_model_path_is_named(tmp_path):
    cfg = load_config(None, [f"model.path={tmp_path / 'nope'}", f"log.out_dir={tmp_path / 'run'}"])
    with pytest.raises(FileNotFoundError, match="nope"):
        build_trainer(cfg)


def test_bad_jsonl_row_is_named(tiny_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    cfg = load_config(None, [f"model.path={tiny_dir}", "data.task=jsonl", f"data.path={data}", f"log.out_dir={tmp_path}/r"])
    with pytest.raises(ValueError, match=r"train.jsonl: row 2 \(line 2\): missing key 'answer'"):
        build_trainer(cfg)


def test_shipped_recipes_validate(tmp_path):
    from pathlib import Path

    from skpo.commands.train import main as train_main

    root = Path(__file__).resolve().parents[1] / "configs"
    arith = sorted((root / "arith").glob("*.yaml"))
    assert {p.stem for p in arith} == set(METHODS)
    for path in arith:
        assert load_config(path).train.method == path.stem
    paper = sorted((root / "paper").glob("*.yaml"))
    assert len(paper) >= 10
    for path in paper:
        cfg = load_config(path)
        assert cfg.train.lr == 1e-6 and cfg.rollout.max_new_tokens == 3072 and cfg.train.steps == 500
        assert cfg.train.mini_batches == 4 and cfg.resolved().method.group_size == (1 if cfg.train.method == "spo" else 8)
        # the model is not on this machine: the command fails clearly, naming the key and path
        assert train_main(["--config", str(path), "--check"]) == 2


@pytest.mark.slow(reason="the atomic save is checked at each of its stages by the quick test_crash_during_save_leaves_previous_checkpoint_loadable")
def test_sigkill_during_save_leaves_previous_checkpoint(tiny_dir, tmp_path):
    """A real kill -9 of a training process in the middle of writing a checkpoint."""
    import signal
    import subprocess
    import sys
    import textwrap

    overrides = [f"model.path={tiny_dir}", "train.method=grpo", "train.steps=2", "train.prompts_per_step=2",
                 "method.group_size=2", "rollout.max_new_tokens=16", f"log.out_dir={tmp_path}",
                 "log.progress=false", "log.tensorboard=false", "log.save_every=1", "data.arith.pool_size=20"]
    script = textwrap.dedent(f"""
        import sys, time, torch
        from skpo.config import load_config
        from skpo.training import checkpoint as ckpt
        from skpo.training.setup import build_trainer
        cfg = load_config(None, {overrides!r})
        real_save = torch.save
        def slow_save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            if "step_000002" in str(f) and str(f).endswith("optimizer.pt"):
                print("SAVING", flush=True)
                time.sleep(120)
        ckpt.torch.save = slow_save
        build_trainer(cfg).train()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == "SAVING":
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert list((tmp_path / "checkpoints").glob(".tmp-step_000002-*"))  # the half-written one
    good = ckpt.latest_checkpoint(tmp_path)
    assert good.name == "step_000001"
    ckpt.verify_checkpoint(good)
    resumed = build_trainer(load_config(None, overrides), resume=True)  # the run's own config
    assert resumed.state.step == 1


@pytest.mark.parametrize("method", ["grpo", "skpo"])
def test_on_policy_shortcut_equals_recomputed_old_log_probs(tiny_dir, tmp_path, method, monkeypatch):
    """One mini-batch, one epoch: using the detached log-probs of the update's own forward as
    π_old must give the same update as a separate old-log-prob pass (ratio 1 either way)."""
    from skpo.training import log_probs as log_probs_mod
    from skpo.training import update as update_mod
    from skpo.training.actor import Actor

    mixed_rewards(monkeypatch)
    extra_passes = []
    real_log_probs = Actor.log_probs
    monkeypatch.setattr(Actor, "log_probs", lambda self, *a: extra_passes.append(1) or real_log_probs(self, *a))
    fast = build_trainer(small_config(tiny_dir, tmp_path / "fast", method, "train.steps=1"))
    start = weights(fast.policy)
    assert fast.update_settings.on_policy
    fast.train_step(0)
    assert extra_passes == []  # no old-log-prob forward
    for module in (log_probs_mod, update_mod):  # as if off-policy: a separate pass, π_old from it in the loss
        monkeypatch.setattr(module, "is_on_policy", lambda *counts: False)
    slow = build_trainer(small_config(tiny_dir, tmp_path / "slow", method, "train.steps=1"))
    slow.train_step(0)
    assert extra_passes  # the separate pass ran
    a, b = weights(fast.policy), weights(slow.policy)
    assert any(not torch.equal(a[k], start[k]) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-6)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # optimizer.step is stubbed
@pytest.mark.parametrize("method", ["skpo", "grpo"])
def test_micro_batching_and_packing_do_not_change_the_update(tiny_dir, tmp_path, method, monkeypatch):
    """One row per forward (padded rows) vs everything in one forward (SKPO's upstream and
    downstream rows together, answers packed per prompt): same step, to float rounding."""
    mixed_rewards(monkeypatch)
    alone = build_trainer(small_config(tiny_dir, tmp_path / "alone", method, "train.micro_batch_tokens=1",
                                       "train.pack_max_tokens=0"))
    together = build_trainer(small_config(tiny_dir, tmp_path / "together", method, "train.micro_batch_tokens=100000",
                                          "train.pack_max_tokens=100000"))
    grads = {}
    for name, trainer in (("alone", alone), ("together", together)):
        # compare the clipped gradients the optimizer receives: after AdamW, float rounding
        # in near-zero gradients would be magnified to lr-sized weight differences
        trainer.actor.optimizer.step = lambda *a, _t=trainer, _n=name, **k: grads.__setitem__(
            _n, {n: p.grad.clone() for n, p in _t.policy.named_parameters() if p.grad is not None})
    m_alone, m_together = alone.train_step(0), together.train_step(0)
    assert m_alone["tokens/update_real"] > m_together["tokens/update_real"]  # packing shared the prompts
    a, b = grads["alone"], grads["together"]
    assert a.keys() == b.keys() and any(g.abs().sum() > 0 for g in a.values())
    scale = max(g.abs().max().item() for g in a.values())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5 * scale)
    for key in ("upstream/pg_loss", "downstream/pg_loss", "actor/pg_loss"):
        if key in m_alone:
            assert m_alone[key] == pytest.approx(m_together[key], abs=1e-5)


@pytest.mark.parametrize("method", ["skpo", "grpo"])
def test_off_policy_mini_batches_start_from_ratio_one(tiny_dir, tmp_path, method, monkeypatch):
    """Two mini-batches × two epochs: old log-probs come from their own (packed) pass, and the
    first mini-batch, taken before any optimizer step, sees π_θ = π_old (approx_kl ≈ 0)."""
    from skpo.training import update as update_mod

    mixed_rewards(monkeypatch)
    kls: list[tuple[int, float]] = []  # (optimizer steps taken so far, approx_kl of a micro-batch)
    steps = [0]
    real_term_loss = update_mod.term_loss_value

    def spy(*args):
        loss, metrics = real_term_loss(*args)
        if "approx_kl" in metrics:
            kls.append((steps[0], float(metrics["approx_kl"])))
        return loss, metrics

    monkeypatch.setattr(update_mod, "term_loss_value", spy)
    trainer = build_trainer(small_config(tiny_dir, tmp_path / method, method, "train.mini_batches=2", "train.ppo_epochs=2",
                                         "train.prompts_per_step=4"))
    real_step = trainer.actor.optimizer.step
    trainer.actor.optimizer.step = lambda *a, **k: (steps.__setitem__(0, steps[0] + 1), real_step(*a, **k))[1]
    assert not trainer.update_settings.on_policy
    m = trainer.train_step(0)
    assert steps[0] == 4
    assert all(v == v and abs(v) != float("inf") for v in m.values())
    assert m["actor/grad_norm"] > 0
    first = [k for s, k in kls if s == 0]
    later = [k for s, k in kls if s > 0]
    assert first and max(abs(k) for k in first) < 1e-5
    assert later and max(abs(k) for k in later) > 1e-5  # the policy has moved


def test_dapo_dynamic_sampling_refills_the_batch(tiny_dir, tmp_path, monkeypatch):
    """DAPO draws more prompts until the batch holds prompts_per_step groups whose rewards
    are not all equal; prompts whose answers all score the same never reach the loss."""
    import zlib

    from skpo.training.trainer import Trainer

    def flat(key: str) -> bool:  # half the prompts: every answer gets the same reward
        return zlib.crc32(key.encode()) % 2 == 0

    def reward(self, item, response_ids):
        correct = False if flat(item.key) else sum((i + 1) * t for i, t in enumerate(response_ids)) % 2 == 1
        lo, hi = self.method.reward_range
        return (hi if correct else lo), correct

    monkeypatch.setattr(Trainer, "score", per_answer(reward))
    from skpo.training import trainer as trainer_mod

    seen = {}
    real_update = trainer_mod.update

    def spy(actor, method, rows, *a):
        seen["rows"] = rows
        return real_update(actor, method, rows, *a)

    monkeypatch.setattr(trainer_mod, "update", spy)
    trainer = build_trainer(small_config(tiny_dir, tmp_path / "dapo", "dapo", "train.prompts_per_step=4",
                                         "method.group_size=4", "method.max_gen_batches=8"))
    m = trainer.train_step(0)
    rows = seen["rows"]
    keys = list(dict.fromkeys(rows.prompt_keys))
    assert len(keys) == 4 and len(rows) == 16
    assert not any(flat(k) for k in keys)
    for k in keys:  # every trained group has mixed rewards
        assert len({float(r) for r, i in zip(rows.rewards, rows.prompt_keys) if i == k}) > 1
    assert m["filter/gen_batches"] >= 2 and m["filter/underfilled"] == 0
    assert m["filter/informative_fraction"] < 1
    assert m["tokens/decoded"] > rows.response_mask.sum()  # the dropped groups were decoded too
    assert m["actor/grad_norm"] > 0


def test_dapo_gives_up_after_its_rounds_and_trains_nothing(tiny_dir, tmp_path, monkeypatch):
    from skpo.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "score", per_answer(lambda self, item, ids: (self.method.reward_range[0], False)))
    trainer = build_trainer(small_config(tiny_dir, tmp_path / "dapo", "dapo", "method.max_gen_batches=2"))
    m = trainer.train_step(0)
    assert m["filter/gen_batches"] == 2 and m["filter/underfilled"] == 1 and m["filter/informative_fraction"] == 0
    assert m["actor/grad_norm"] == 0


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow(
    reason="the same runs as the quick one-thread case; two threads beside another test process spin-wait (slow)"))])
def test_two_identical_runs_are_bit_identical_optimizer_state_included(tiny_dir, tmp_path, threads):
    """The same config twice in one process gives the same weights *and* AdamW moments, to the
    bit, with one thread or two — so "resume is exact" (the resume tests) is a statement about
    resuming, not hidden in run-to-run noise."""
    runs = []
    for name in ("a", "b"):
        trainer = build_trainer(small_config(tiny_dir, tmp_path / name, "skpo", "train.steps=4", f"train.threads={threads}"))
        trainer.train()
        runs.append((weights(trainer.policy), trainer.actor.optimizer.state_dict()["state"]))
    (wa, oa), (wb, ob) = runs
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert oa.keys() == ob.keys() and all(
        torch.equal(oa[p][m], ob[p][m]) for p in oa for m in ("exp_avg", "exp_avg_sq", "step"))

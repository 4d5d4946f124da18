"""The example files run as a newcomer would run them."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grpo_minimal_trains_from_the_algorithm_and_engine_layers(monkeypatch):
    """Three GRPO steps of examples/grpo_minimal.py: answers are sampled and checked, the
    group-relative advantages are centred per prompt, and the update moves the weights."""
    example = _load("grpo_minimal")
    seen = {}
    real_adv = example.ADVANTAGE_ESTIMATORS.get("grpo").fn

    def advantages(batch, params):
        out = real_adv(batch, params)
        seen["adv"], seen["index"] = out, list(batch.index)
        return out

    entry = example.ADVANTAGE_ESTIMATORS.get("grpo")
    monkeypatch.setitem(example.ADVANTAGE_ESTIMATORS._entries, "grpo", dataclasses.replace(entry, fn=advantages))
    moved = {}
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        before = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        out = real_step(self, *a, **k)
        moved["any"] = any(not torch.equal(b, p) for b, p in zip(before, (p for g in self.param_groups for p in g["params"])))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    history = example.main(["--steps", "3", "--prompts", "4", "--group", "4", "--max-new-tokens", "48"])
    assert history["step"] == 3 and 0.0 <= history["accuracy"] <= 1.0 and math.isfinite(history["loss"])
    adv, index = seen["adv"][:, 0], seen["index"]
    for key in set(index):  # per prompt, the advantages sum to zero (centred on the group mean)
        assert abs(float(sum(adv[i] for i, k in enumerate(index) if k == key))) < 1e-5
    assert moved["any"]


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # optimizer.step is stubbed
def test_the_trainers_grpo_update_equals_the_examples_on_the_same_batch(tmp_path, monkeypatch):
    """One batch rolled out by the trainer (``train.method=grpo``, on-policy, one mini-batch),
    then updated twice from the same weights: by the trainer's step and by
    ``examples/grpo_minimal.py``'s :func:`grpo_update`. The example's checker agrees with the
    trainer's rewards, the losses agree (≈ 0 at ratio 1: the advantages are centred per group),
    and the optimizer receives the same clipped gradients with the same AdamW settings — so
    the same weights follow. Equal to float rounding only (here ~1e-6 of the largest
    gradient): the trainer left-pads rows and computes only the answers' logits, the example
    right-pads and computes all of them, so matrix products run over other shapes; the
    tolerance is tests/test_trainer.py::test_micro_batching_and_packing_do_not_change_the_update's.
    An aggregation or reward mapping that differs fails it (``token-mean``: off by 1e-1 of it)."""
    from skpo.config import load_config
    from skpo.models.loading import tiny_arith_dir
    from skpo.rollout import ROLLOUTS
    from skpo.training.setup import build_trainer

    example = _load("grpo_minimal")
    entry, batch = ROLLOUTS.get("group"), {}

    def captured(ctx, items):
        batch["result"], batch["items"] = entry.fn(ctx, items), list(items)
        return batch["result"]

    monkeypatch.setitem(ROLLOUTS._entries, "group", dataclasses.replace(entry, fn=captured))
    trainer = build_trainer(load_config(None, [
        f"model.path={tiny_arith_dir()}", "train.method=grpo", "method.group_size=4", "train.prompts_per_step=3",
        "train.steps=1", "train.lr=1e-4", "train.weight_decay=0", "rollout.max_new_tokens=32",
        "data.arith.pool_size=50", f"log.out_dir={tmp_path / 'run'}", "log.progress=false", "log.tensorboard=false",
    ]))
    assert trainer.update_settings.on_policy and trainer.method.reward_range == (-1.0, 1.0)
    start = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}
    grads: dict[str, dict[str, torch.Tensor]] = {}

    def capture(name, model):  # the gradients the optimizer would apply
        return lambda *a, **k: grads.__setitem__(name, {n: p.grad.clone() for n, p in model.named_parameters()})

    trainer.actor.optimizer.step = capture("trainer", trainer.policy)
    metrics = trainer.train_step(0)
    trainer.close()

    rows, items = batch["result"].rows, batch["items"]
    g = trainer.method.group_size
    assert rows.prompt_keys == [it.key for it in items for _ in range(g)]  # prompt-major, G answers each
    answers = [[rows.response_ids[b, : int(rows.response_mask[b].sum())].tolist() for b in range(q * g, (q + 1) * g)]
               for q in range(len(items))]
    correct = [example.check_answer(trainer.tokenizer.decode(a, skip_special_tokens=True), it.answer.arith)
               for it, group in zip(items, answers) for a in group]
    assert rows.rewards.tolist() == [1.0 if ok else -1.0 for ok in correct]  # the same rewards
    assert 0 < sum(correct) < len(correct)  # some groups carry a gradient

    model = example.load_policy(tiny_arith_dir())
    model.load_state_dict(start)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    optimizer.step = capture("example", model)
    loss = example.grpo_update(model, optimizer, [list(it.prompt_ids) for it in items], answers, correct,
                               trainer.pad_id)

    assert loss == pytest.approx(metrics["actor/pg_loss"], abs=1e-6)
    ours, theirs = trainer.actor.optimizer.param_groups[0], optimizer.param_groups[0]
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert ours[key] == theirs[key], key
    a, b = grads["trainer"], grads["example"]
    assert a.keys() == b.keys() and any(v.abs().sum() > 0 for v in a.values())
    scale = max(v.abs().max().item() for v in a.values())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5 * scale)

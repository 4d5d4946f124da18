"""The example files run as a newcomer would run them."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

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

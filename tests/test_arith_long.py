"""The longer-chain setting (``configs/arith-long/base.yaml``, shipped warm start
``tiny-arith-long``): the model is found by name, it was made for chains of 5-8 operations with a
mixed success rate, and SKPO and GRPO train on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skpo.config import load_config
from skpo.models.loading import SHIPPED_MODELS, shipped_model_dir
from skpo.training.setup import build_trainer, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "arith-long" / "base.yaml"


def test_shipped_names_resolve_and_nothing_else_does(tmp_path):
    for name in SHIPPED_MODELS:
        assert resolve_model_path(name) == shipped_model_dir(name)
        assert (shipped_model_dir(name) / "model.safetensors").is_file()
    assert shipped_model_dir("tiny-arith-longer") is None
    assert resolve_model_path(str(tmp_path)) == tmp_path


def test_the_long_warm_start_is_what_the_setting_says():
    record = json.loads((shipped_model_dir("tiny-arith-long") / "warmstart.json").read_text())
    assert record["config"]["init"] == "tiny-arith"
    assert (record["config"]["task"]["min_ops"], record["config"]["task"]["max_ops"]) == (5, 8)
    cfg = load_config(BASE)
    assert (cfg.data.arith.min_ops, cfg.data.arith.max_ops) == (5, 8) and cfg.model.path == "tiny-arith-long"
    plain = record["metrics"]["plain"]  # held-out: a mixed success rate, where RL has signal
    assert 0.2 < plain["avg_at_k"] < 0.6 and plain["frac_mixed"] > 0.5


@pytest.mark.parametrize("method", ["skpo", "grpo"])
def test_methods_train_on_the_long_setting(tmp_path, method):
    cfg = load_config(BASE, [f"train.method={method}", "train.steps=2", "train.prompts_per_step=2",
                             "method.group_size=3", "eval.every=0", "log.progress=false", "log.tensorboard=false",
                             f"log.out_dir={tmp_path}", "data.arith.pool_size=20", "train.lr=1e-3"])
    trainer = build_trainer(cfg)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and all(x["tokens/decoded"] > 0 for x in lines)

"""LoRA through peft: adapters train, the frozen base is the KL reference, checkpoints hold the
merged model (loadable by any HF tool) and the adapters (which --resume loads), and a separate
engine receives the merged weights. On the tiny model and on a stand-in, on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from skpo.config import load_config
from skpo.training.setup import build_trainer

# mixed rewards in every group whatever the model answers, so every step has a gradient
PARITY = f"reward.function={Path(__file__).resolve().parent / 'data' / 'rewards_for_tests.py'}:parity"
BASE = [PARITY, "model.lora.enabled=true", "model.lora.r=4", "train.steps=2", "train.prompts_per_step=3", "method.group_size=3",
        "rollout.max_new_tokens=16", "rollout.temperature=1.3", "train.lr=1e-2", "eval.every=0", "log.progress=false",
        "log.tensorboard=false", "data.arith.pool_size=20", "log.save_every=1"]


def test_lora_trains_adapters_only_with_the_base_as_reference(tmp_path):
    cfg = load_config(None, [*BASE, "train.method=grpo", "method.kl_coef=0.1", f"log.out_dir={tmp_path}"])
    trainer = build_trainer(cfg)
    assert trainer.actor.ref_model is None  # no copy of the weights
    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base_before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if not p.requires_grad}
    trainer.train()
    # the base did not move; the adapters did (lora_B starts at zero)
    for n, p in trainer.policy.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n
    assert any(float(p.detach().abs().sum()) > 0 for n, p in trainer.policy.named_parameters() if "lora_B" in n)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    import json

    kl = [json.loads(x)["response/kl_ref"] for x in lines]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0  # policy = base at step 1, then apart
    # the checkpoint: a merged model any HF tool loads, equal to the adapted policy's outputs
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoints" / "step_000002" / "model"))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    trainer.policy.eval()
    with torch.no_grad():
        a = trainer.policy(input_ids=ids).logits
        b = merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_lora_resume_is_exact(tmp_path):
    straight = build_trainer(load_config(None, [*BASE, "train.method=grpo", f"log.out_dir={tmp_path / 'a'}",
                                                "train.steps=3"]))
    straight.train()
    first = build_trainer(load_config(None, [*BASE, "train.method=grpo", f"log.out_dir={tmp_path / 'b'}",
                                             "train.steps=3"]))
    first.train_step(0)
    first.state.step = 1
    first.save()
    first.close()
    resumed = build_trainer(load_config(None, [*BASE, "train.method=grpo", f"log.out_dir={tmp_path / 'b'}",
                                               "train.steps=3"]), resume=True)
    assert resumed.state.step == 1
    resumed.train()
    for (n, p), (_, q) in zip(straight.policy.named_parameters(), resumed.policy.named_parameters()):
        assert torch.equal(p, q), n


def test_lora_on_a_standin_with_bf16_compute(standin, tmp_path):
    cfg = load_config(None, [*BASE, "train.method=skpo", f"model.path={standin('llama-3.2-3b-instruct')}",
                             "model.dtype=bfloat16", "train.steps=1", "rollout.initial_length=8",
                             f"log.out_dir={tmp_path}", "train.lr=1e-3"])
    trainer = build_trainer(cfg)
    lora_b = [p for n, p in trainer.policy.named_parameters() if "lora_B" in n]
    assert all(p.dtype == torch.float32 for p in lora_b)
    metrics = trainer.train_step(0)
    assert math.isfinite(metrics["actor/pg_loss"])
    trainer.close()


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_update(tmp_path, lora):
    """``train.gradient_checkpointing`` trades memory for time only: the weights after a step
    equal those without it (float32, 1e-6)."""
    runs = []
    for gc in (False, True):
        extra = ["model.lora.enabled=true", "model.lora.r=4"] if lora else []
        cfg = load_config(None, [PARITY, "train.method=grpo", "train.steps=1", "train.prompts_per_step=3",
                                 "method.group_size=3", "rollout.max_new_tokens=16", "rollout.temperature=1.3",
                                 "train.lr=1e-3", "eval.every=0", "log.progress=false", "log.tensorboard=false",
                                 "data.arith.pool_size=20", f"train.gradient_checkpointing={str(gc).lower()}",
                                 f"log.out_dir={tmp_path / str(gc)}", *extra])
        trainer = build_trainer(cfg)
        trainer.train_step(0)
        runs.append({n: p.detach().clone() for n, p in trainer.policy.named_parameters()})
        trainer.close()
    assert max(float((runs[0][n] - runs[1][n]).abs().max()) for n in runs[0]) <= 1e-6

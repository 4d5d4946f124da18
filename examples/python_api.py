"""Train from Python: your own reward, data rows, advantage estimator and method document.

    python examples/python_api.py [OUT_DIR]

Runs on a CPU in seconds with the shipped tiny model (any local Hugging Face model works the
same way: ``model="/models/Qwen2.5-Math-7B"``). ``tests/test_api.py`` runs this file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

import skpo
from skpo.algorithms import ADVANTAGE_ESTIMATORS
from skpo.algorithms.advantages import AdvantageInputs


# 1. Your own advantage estimator: the sign of the reward minus its group's mean.
@dataclass(frozen=True)
class SignParams:
    scale: float = 1.0


@ADVANTAGE_ESTIMATORS.register("sign_of_centered", SignParams, group_key="prompt")  # group-relative, by prompt
def sign_of_centered(batch: AdvantageInputs, params: SignParams) -> torch.Tensor:
    keys = list(batch.index)
    adv = torch.zeros_like(batch.scores)
    for key in set(keys):
        rows = [i for i, k in enumerate(keys) if k == key]
        adv[rows] = torch.sign(batch.scores[rows] - batch.scores[rows].mean())
    return params.scale * adv[:, None] * batch.response_mask  # [B, T]


# 2. Your own reward: +1 for the right final answer, -1 otherwise (declared as reward_range).
def reward(completion: str, example) -> float:
    last = completion.strip().splitlines()[-1] if completion.strip() else ""
    return 1.0 if last.replace(" ", "").endswith(str(example.gold)) else -1.0


# 3. Your data: rows with a question and an answer (any of the common column names).
rows = [{"question": f"{a}+{b}-{c}", "answer": str(a + b - c)} for a, b, c in [(3, 4, 2), (10, 5, 7), (8, 8, 1), (20, 3, 9)]]

# 4. Your method: GRPO's group-relative loss with your estimator.
method = {
    "name": "grpo_sign", "rollout": "group", "group_size": 4,
    "terms": {"response": {"advantage": "sign_of_centered", "advantage_params": {"scale": 0.5},
                           "loss": "ppo_clip", "agg": "token-mean"}},
}

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/python-api"
    trainer = skpo.train(model="tiny-arith", data=rows, reward=reward, reward_range=(-1, 1), method=method,
                         out_dir=out, overwrite=True,
                         overrides=["train.steps=3", "train.prompts_per_step=2", "rollout.max_new_tokens=40",
                                    "eval.every=0", "log.tensorboard=false"])
    print(f"trained {trainer.state.step} steps with {trainer.method.name}; run directory {trainer.run_dir}")

"""The trainer (a thin loop over rollout → rewards → advantages → PPO updates), checkpoints
and metrics. All maths lives in :mod:`skpo.algorithms`."""

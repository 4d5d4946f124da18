"""skpo: reinforcement learning from verifiable rewards, built around SKPO.

Layers (bottom up): ``algorithms`` (pure tensor math) → ``rollout`` → ``rewards`` / ``tasks``
→ ``training`` → ``evaluation`` / ``analysis`` → ``cli``. See ``docs/`` for the map.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``skpo.train`` / ``skpo.build`` / ``skpo.register_reward`` (:mod:`skpo.api`), imported on
    first use so that ``import skpo`` stays light."""
    if name in ("train", "build", "register_reward"):
        from skpo import api

        return getattr(api, name)
    raise AttributeError(f"module 'skpo' has no attribute {name!r}")

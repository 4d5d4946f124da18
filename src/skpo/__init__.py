"""skpo: reinforcement learning from verifiable rewards, built around SKPO.

Layers (bottom up): ``algorithms`` (pure tensor math) → ``rollout`` → ``rewards`` / ``tasks``
→ ``training`` → ``evaluation`` / ``analysis`` → ``cli``. See ``docs/`` for the map.
"""

__version__ = "0.1.0"

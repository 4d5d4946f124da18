"""skpo: reinforcement learning from verifiable rewards, built around SKPO.

Packages form layers, each importing only from below; ``docs/architecture.md`` has the map.
"""

from skpo.version import __version__ as __version__


def __getattr__(name: str):
    """``skpo.train`` / ``skpo.build`` / ``skpo.register_reward`` (:mod:`skpo.api`), imported on
    first use so that ``import skpo`` stays light."""
    if name in ("train", "build", "register_reward"):
        from skpo import api  # heavy: the training stack, loaded on first use

        return getattr(api, name)
    raise AttributeError(f"module 'skpo' has no attribute {name!r}")

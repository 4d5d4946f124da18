"""Moved to :mod:`skpo.training.warmstart` (``skpo warmstart`` runs it from there). This name
stays importable for old imports; patch functions in the new module, not here."""

from skpo.training.warmstart import *  # noqa: F401,F403

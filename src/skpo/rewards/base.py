"""The result every verifier in ``skpo.rewards`` returns.

A verifier answers two questions about one completion: how much reward it earns and why.
Keeping the "why" next to the number makes reward curves debuggable (a run whose rewards
collapse to 0 because every answer times out looks very different from one that is simply
wrong), so each verifier fills ``reason`` with a few words and, where it makes sense, the
answer it extracted from the text.

Rewards lie in ``[0, 1]`` at this layer — 0 or 1 for every built-in verifier, anything in
between for a user's partial-credit function — and ``correct`` is a separate fact, so accuracy
is never read off the reward. The trainer maps ``[0, 1]`` linearly onto its method's reward
range (``[-1, 1]`` for the paper's methods).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one completion.

    Attributes:
        reward: in ``[0, 1]``; the built-in verifiers give 1.0 exactly when correct.
        correct: whether the completion solves the problem (what accuracy counts).
        reason: a few words on why, e.g. ``"correct"``, ``"no answer found"``,
            ``"timeout after 5.0s"``, ``"test failed: AssertionError"``.
        extracted: the answer the verifier read from the completion, if any.
    """

    reward: float
    correct: bool
    reason: str
    extracted: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reward, bool) or not isinstance(self.reward, (int, float)) or not 0.0 <= self.reward <= 1.0:
            raise ValueError(f"reward must be a number in [0, 1] at the verifier layer, got {self.reward!r}")
        if not isinstance(self.correct, bool):
            raise ValueError(f"correct must be a bool, got {self.correct!r}")

    @classmethod
    def right(cls, reason: str = "correct", extracted: str | None = None) -> Verdict:
        """A passing verdict (reward 1)."""
        return cls(1.0, True, reason, extracted)

    @classmethod
    def wrong(cls, reason: str, extracted: str | None = None) -> Verdict:
        """A failing verdict (reward 0)."""
        return cls(0.0, False, reason, extracted)
